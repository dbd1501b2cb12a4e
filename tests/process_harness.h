// Test support for integration and end-to-end tests: starting the project's binaries as
// child processes in temp dirs, running commands to completion, and waiting on
// conditions with a deadline (never fixed sleeps as a timing assumption).
#ifndef STEADYEVAL_TESTS_PROCESS_HARNESS_H_
#define STEADYEVAL_TESTS_PROCESS_HARNESS_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace steadyeval::testing {

// Directory of the built binaries (CTest sets STEADYEVAL_BIN_DIR).
std::string BinDir();
// The source tree (CTest sets STEADYEVAL_SOURCE_DIR).
std::string SourceDir();

// A fresh directory under $TMPDIR, removed by the destructor unless the test failed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `argv` to completion (argv[0] a path), capturing stdout and stderr.
CommandResult RunCommand(const std::vector<std::string>& argv, int timeout_seconds = 600);

// A background child process; its stdout/stderr go to `log_prefix`.{out,err}. The
// destructor kills it (SIGKILL) if it is still running.
class ChildProcess {
 public:
  static absl::StatusOr<ChildProcess> Start(const std::vector<std::string>& argv,
                                            const std::string& log_prefix);
  ChildProcess() = default;
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  bool running();
  // Sends `signal` and waits up to `timeout` for the exit; returns the exit code
  // (128+signal when killed by one), or -1 on timeout (then it is SIGKILLed).
  int Stop(int signal, std::chrono::seconds timeout = std::chrono::seconds(30));
  // Waits for a natural exit.
  int Wait(std::chrono::seconds timeout);
  std::string Logs() const;  // stdout + stderr so far, for failure messages

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
  std::string log_prefix_;
};

// Polls `condition` every `poll` until it returns true or `timeout` passes; returns the
// last result. This waits for a condition; it does not assume any timing.
bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
             std::chrono::milliseconds poll = std::chrono::milliseconds(100));

std::string ReadFileOrEmpty(const std::string& path);

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTS_PROCESS_HARNESS_H_
