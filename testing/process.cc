#include "testing/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "testing/files.h"

namespace steadyeval::testing {
namespace {

pid_t Spawn(const std::vector<std::string>& argv, const std::string& out_path, const std::string& err_path) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  int in = open("/dev/null", O_RDONLY);
  dup2(in, 0);
  dup2(out, 1);
  dup2(err, 2);
  setpgid(0, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  fprintf(stderr, "exec %s failed\n", args[0]);
  _exit(127);
}

int DecodeWait(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Waits for `pid` up to `timeout`; returns the exit code or -2 when still running.
int WaitPid(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return DecodeWait(status);
    if (r < 0) return -1;
    if (std::chrono::steady_clock::now() >= deadline) return -2;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

CommandResult RunCommand(const std::vector<std::string>& argv, int timeout_seconds) {
  char out_tmpl[] = "/tmp/steadyeval-cmd-out-XXXXXX";
  char err_tmpl[] = "/tmp/steadyeval-cmd-err-XXXXXX";
  int out_fd = mkstemp(out_tmpl);
  int err_fd = mkstemp(err_tmpl);
  close(out_fd);
  close(err_fd);
  CommandResult result;
  pid_t pid = Spawn(argv, out_tmpl, err_tmpl);
  result.exit_code = WaitPid(pid, std::chrono::seconds(timeout_seconds));
  if (result.exit_code == -2) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    result.exit_code = -1;
    result.err = "timed out; ";
  }
  result.out = ReadFileOrEmpty(out_tmpl);
  result.err += ReadFileOrEmpty(err_tmpl);
  unlink(out_tmpl);
  unlink(err_tmpl);
  return result;
}

absl::StatusOr<ChildProcess> ChildProcess::Start(const std::vector<std::string>& argv,
                                                 const std::string& log_prefix) {
  if (access(argv.at(0).c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(argv[0], " is not an executable (built?)"));
  }
  // The logs are opened here first, so a missing folder is an error rather than a child
  // whose output silently goes to the test's own terminal.
  for (const char* suffix : {".out", ".err"}) {
    const std::string path = log_prefix + suffix;
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot open the log file ", path, ": ", strerror(errno)));
    }
    close(fd);
  }
  ChildProcess p;
  p.log_prefix_ = log_prefix;
  p.pid_ = Spawn(argv, log_prefix + ".out", log_prefix + ".err");
  if (p.pid_ < 0) return absl::InternalError("fork failed");
  return p;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept { *this = std::move(other); }

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  std::swap(pid_, other.pid_);
  std::swap(exit_code_, other.exit_code_);
  std::swap(log_prefix_, other.log_prefix_);
  return *this;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && exit_code_ < 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

bool ChildProcess::running() {
  if (pid_ <= 0 || exit_code_ >= 0) return false;
  int code = WaitPid(pid_, std::chrono::milliseconds(0));
  if (code == -2) return true;
  exit_code_ = code;
  return false;
}

int ChildProcess::Wait(std::chrono::seconds timeout) {
  if (exit_code_ >= 0 || pid_ <= 0) return exit_code_;
  int code = WaitPid(pid_, timeout);
  if (code == -2) return -1;
  exit_code_ = code;
  return code;
}

int ChildProcess::Stop(int signal, std::chrono::seconds timeout) {
  if (!running()) return exit_code_;
  kill(pid_, signal);
  int code = WaitPid(pid_, timeout);
  if (code == -2) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    exit_code_ = 128 + SIGKILL;
    return -1;
  }
  exit_code_ = code;
  return code;
}

std::string ChildProcess::Logs() const {
  return absl::StrCat("--- ", log_prefix_, ".out ---\n", ReadFileOrEmpty(log_prefix_ + ".out"),
                      "--- ", log_prefix_, ".err ---\n", ReadFileOrEmpty(log_prefix_ + ".err"));
}

}  // namespace steadyeval::testing
