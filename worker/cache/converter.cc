#include "worker/cache/converter.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/status.h"

extern char** environ;

namespace steadyeval {

namespace {

constexpr char kSrc[] = "{src}";
constexpr char kDst[] = "{dst}";

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == '-';
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// The quoting rules of the header comment. `what` names the flag value for messages.
absl::StatusOr<std::vector<std::string>> SplitCommandLine(const std::string& text,
                                                          const std::string& what) {
  std::vector<std::string> args;
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (IsSpace(c)) {
      if (in_word) args.push_back(std::move(word));
      word.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\'') {
      const size_t end = text.find('\'', i + 1);
      if (end == std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": unterminated ' quote starting at character ", i + 1));
      }
      word.append(text, i + 1, end - i - 1);
      i = end;
    } else if (c == '"') {
      size_t j = i + 1;
      for (; j < text.size() && text[j] != '"'; ++j) {
        if (text[j] == '\\' && j + 1 < text.size() && (text[j + 1] == '"' || text[j + 1] == '\\')) {
          ++j;
        }
        word.push_back(text[j]);
      }
      if (j >= text.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": unterminated \" quote starting at character ", i + 1));
      }
      i = j;
    } else if (c == '\\') {
      if (i + 1 >= text.size()) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": ends with a lone backslash"));
      }
      word.push_back(text[++i]);
    } else {
      word.push_back(c);
    }
  }
  if (in_word) args.push_back(std::move(word));
  return args;
}

std::string DescribeTail(const std::string& tail) {
  if (tail.empty()) return "(it printed nothing)";
  return absl::StrCat("its output ended with:\n", tail);
}

// Keeps the last kOutputTailBytes of what the child printed.
void AppendTail(std::string& tail, const char* data, size_t n) {
  tail.append(data, n);
  if (tail.size() > kOutputTailBytes) tail.erase(0, tail.size() - kOutputTailBytes);
}

// Reads what is available on the non-blocking `fd` into `tail`. Returns false at EOF.
bool DrainPipe(int fd, std::string& tail) {
  char buf[4096];
  while (true) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      AppendTail(tail, buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;  // else an error: treat as EOF
  }
}

// Whether `pid` has exited (it is left unreaped, so its pid and process-group id stay
// reserved until WaitPid).
bool HasExited(pid_t pid) {
  siginfo_t info;
  memset(&info, 0, sizeof info);
  while (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    if (errno != EINTR) return true;  // ECHILD: nothing to wait for
  }
  return info.si_pid == pid;
}

int WaitPid(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// Runs the child of `pid` (whose output pipe is `fd`) until it exits, its deadline passes or
// `check` fails; returns why it must be stopped (OK: it exited by itself).
absl::Status Supervise(pid_t pid, int fd, bool& pipe_open, std::string& tail,
                       const ConverterSpec& spec, const ConverterRunOptions& options) {
  const int64_t deadline = options.clock->MonotonicNanos() + options.timeout_ms * 1'000'000;
  const int poll_ms = static_cast<int>(std::max<int64_t>(1, options.poll_ms));
  while (true) {
    pollfd p{fd, POLLIN, 0};
    const int ready = poll(pipe_open ? &p : nullptr, pipe_open ? 1 : 0, poll_ms);
    if (ready > 0 && pipe_open) pipe_open = DrainPipe(fd, tail);
    if (HasExited(pid)) return absl::OkStatus();
    if (options.clock->MonotonicNanos() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "converter '", spec.name, "' ran past its timeout of ", options.timeout_ms / 1000.0,
          " s (--converter_timeout_s) and was killed (SIGTERM to its process group, then "
          "SIGKILL)"));
    }
    if (options.check) {
      absl::Status checked = options.check();
      if (!checked.ok()) {
        return Annotate(checked, absl::StrCat("converter '", spec.name, "' stopped"));
      }
    }
  }
}

// SIGTERM to the process group of `pid`, SIGKILL after the grace period unless the leader
// has exited by then.
void KillGroup(pid_t pid, int fd, bool& pipe_open, std::string& tail,
               const ConverterRunOptions& options) {
  kill(-pid, SIGTERM);
  const int64_t deadline = options.clock->MonotonicNanos() + options.kill_grace_ms * 1'000'000;
  while (!HasExited(pid) && options.clock->MonotonicNanos() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(pipe_open ? &p : nullptr, pipe_open ? 1 : 0, 20) > 0 && pipe_open) {
      pipe_open = DrainPipe(fd, tail);
    }
  }
  kill(-pid, SIGKILL);
}

}  // namespace

absl::StatusOr<ConverterSpec> ParseConverterSpec(const std::string& flag_value) {
  const std::string what = absl::StrCat("--converter '", flag_value, "'");
  const size_t eq = flag_value.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": expected NAME='CMD ARGS {src} {dst}', e.g. dcp='python3 /opt/dcp_to_hf.py {src} {dst}'"));
  }
  ConverterSpec spec;
  spec.name = flag_value.substr(0, eq);
  for (char c : spec.name) {
    if (!IsNameChar(c)) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": converter name '", spec.name, "' may only hold letters, digits, '_', '.' and '-'"));
    }
  }
  spec.command_line = flag_value.substr(eq + 1);
  ASSIGN_OR_RETURN(spec.argv, SplitCommandLine(spec.command_line, what));
  if (spec.argv.empty() || spec.argv[0].empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": no command after '", spec.name, "='"));
  }
  if (absl::StrContains(spec.argv[0], kSrc) || absl::StrContains(spec.argv[0], kDst)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": the command itself may not be {src} or {dst}; name a program first"));
  }
  bool has_src = false;
  bool has_dst = false;
  for (const std::string& arg : spec.argv) {
    has_src = has_src || absl::StrContains(arg, kSrc);
    has_dst = has_dst || absl::StrContains(arg, kDst);
  }
  if (!has_src || !has_dst) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": the command must name ", !has_src ? "{src} (the checkpoint folder to read)" : "",
        !has_src && !has_dst ? " and " : "", !has_dst ? "{dst} (the folder to write)" : "",
        " among its arguments"));
  }
  return spec;
}

std::vector<std::string> ConverterArgv(const ConverterSpec& spec, const std::string& src,
                                       const std::string& dst) {
  std::vector<std::string> argv;
  for (const std::string& arg : spec.argv) {
    argv.push_back(absl::StrReplaceAll(arg, {{kSrc, src}, {kDst, dst}}));
  }
  return argv;
}

absl::Status RunConverter(const ConverterSpec& spec, const std::string& src,
                          const std::string& dst, const ConverterRunOptions& options) {
  const std::vector<std::string> argv = ConverterArgv(spec, src, dst);
  std::vector<char*> argv_c;
  for (const std::string& arg : argv) argv_c.push_back(const_cast<char*>(arg.c_str()));
  argv_c.push_back(nullptr);

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return absl::UnavailableError(absl::StrCat("converter '", spec.name, "': pipe2: ", strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);  // a group of its own, so a timeout kills it whole
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t defaults;  // what the worker ignores or handles, back to the default action
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGCHLD}) {
    sigaddset(&defaults, sig);
  }
  posix_spawnattr_setsigdefault(&attr, &defaults);
  pid_t pid = -1;
  const int spawned = posix_spawnp(&pid, argv_c[0], &actions, &attr, argv_c.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(fds[1]);
  if (spawned != 0) {
    close(fds[0]);
    return absl::FailedPreconditionError(absl::StrCat(
        "converter '", spec.name, "': cannot start '", argv[0], "': ", strerror(spawned),
        " (check the --converter command and PATH)"));
  }
  fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);

  std::string tail;
  bool pipe_open = true;
  absl::Status stopped = Supervise(pid, fds[0], pipe_open, tail, spec, options);
  if (!stopped.ok()) {
    KillGroup(pid, fds[0], pipe_open, tail, options);
  } else {
    kill(-pid, SIGKILL);  // what the converter left running in its group
  }
  if (pipe_open) DrainPipe(fds[0], tail);
  const int status = WaitPid(pid);
  close(fds[0]);

  const std::string command = absl::StrJoin(argv, " ");
  if (!stopped.ok()) {
    return absl::Status(stopped.code(), absl::StrCat(stopped.message(), "; command: ", command,
                                                     "; ", DescribeTail(tail)));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  const std::string how =
      WIFEXITED(status)
          ? absl::StrCat("exited with status ", WEXITSTATUS(status))
          : absl::StrCat("was killed by signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)), ")");
  return absl::InternalError(absl::StrCat("converter '", spec.name, "' ", how, "; command: ",
                                          command, "; ", DescribeTail(tail)));
}

}  // namespace steadyeval
