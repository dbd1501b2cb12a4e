// The `steadyeval` command-line client: argument parsing, command execution against an
// EvalService stub, and the mapping of every failure to one stderr line and an exit code.
//
//   steadyeval [--server HOST:PORT] [--json] [--timeout_s N] COMMAND ...
//
// Flags may come before or after the command and its positional arguments. The command
// logic takes the generated `EvalService::StubInterface`, so tests drive it with the
// generated mock; only client/main.cc creates a real channel.
//
// Exit codes: 0 success, 1 a failed request (server down, unknown run, deadline, ...),
// 2 bad usage (unknown flag, missing argument, bad run name). Every failure prints exactly
// one line `steadyeval: <reason>` on stderr. With --json, stdout receives exactly one JSON
// object (data only) and messages go to stderr.
//
// Thread-safety: the functions are re-entrant; a stub may be shared if it is thread-safe.
#ifndef STEADYEVAL_CLIENT_CLI_H_
#define STEADYEVAL_CLIENT_CLI_H_

#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "steadyeval/v1/eval_service.grpc.pb.h"

namespace steadyeval::client {

inline constexpr char kDefaultServer[] = "127.0.0.1:50051";
inline constexpr double kDefaultTimeoutSeconds = 30;

// Exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// A parsed command line.
struct Invocation {
  std::string server;            // HOST:PORT
  bool json = false;
  double timeout_s = kDefaultTimeoutSeconds;
  bool help = false;
  std::vector<std::string> command;  // e.g. {"runs", "add"} or {"scores"}; empty with --help
  std::vector<std::string> args;     // the command's positional arguments
  // The command's flags, by name (last value wins; --tasks may repeat).
  std::map<std::string, std::vector<std::string>> flags;

  std::string Flag(const std::string& name, const std::string& fallback = "") const;
  bool HasFlag(const std::string& name) const { return flags.count(name) > 0; }
  std::string CommandName() const;  // "runs add"
};

// Parses `args` (without the program name). `env_server` is $STEADYEVAL_SERVER (empty if
// unset); --server wins over it. INVALID_ARGUMENT (exit code 2) for unknown commands or
// flags, flags that the command does not take, missing or extra positional arguments,
// malformed numbers and run names outside [A-Za-z0-9._-]+.
absl::StatusOr<Invocation> ParseInvocation(const std::vector<std::string>& args,
                                           const std::string& env_server);

// The --help text: for the whole CLI when `command` is empty, else for that command.
std::string UsageText(const std::vector<std::string>& command);

// True for [A-Za-z0-9._-]+.
bool IsValidRunName(const std::string& name);

// Executes a parsed command (not --help) against `stub`, writing results to `out`
// (tables, or one JSON object with --json) and notes to `err`. Returns the status of the
// first failed request or local step (unreadable task file, ...).
absl::Status Execute(const Invocation& inv, v1::EvalService::StubInterface* stub,
                     std::ostream& out, std::ostream& err);

// The one-line reason printed after "steadyeval: " for a failed request to `server`:
// UNAVAILABLE → "cannot reach steadyeval-server at ADDR ...", DEADLINE_EXCEEDED names the
// timeout, NOT_FOUND and other user errors pass the server's message through.
std::string DescribeError(const absl::Status& status, const std::string& server,
                          double timeout_s);

// Creates the stub for a server address; main.cc passes one that opens a gRPC channel.
using StubFactory =
    std::function<std::unique_ptr<v1::EvalService::StubInterface>(const std::string& server)>;

// The whole CLI: parse, print help, execute, map errors. Returns the process exit code.
int RunCli(const std::vector<std::string>& args, const std::string& env_server,
           const StubFactory& make_stub, std::ostream& out, std::ostream& err);

}  // namespace steadyeval::client

#endif  // STEADYEVAL_CLIENT_CLI_H_
