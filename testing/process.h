// Running the project's binaries from tests: a command to completion, or a child process
// in the background with its output in log files. Waiting on what a child does is
// testing/wait.h's WaitFor (never a fixed sleep).
#ifndef STEADYEVAL_TESTING_PROCESS_H_
#define STEADYEVAL_TESTING_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace steadyeval::testing {

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

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_PROCESS_H_
