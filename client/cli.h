// The `steadyeval` command-line client: argument parsing, command execution against an
// EvalService stub, and the mapping of every failure to one stderr line and an exit code.
//
//   steadyeval [--server HOST:PORT] [--json] [--timeout_s N] COMMAND ...
//
// Flags may come before or after the command and its positional arguments. The command
// logic takes the generated `EvalService::StubInterface`, so tests drive it with the
// generated mock; only client/main.cc creates a real channel.
//
// `export` writes only records to stdout (JSONL lines as they arrive, or CSV rows once the
// stream has ended) whatever --json says, and runs without a deadline: --timeout_s bounds the
// other, bounded requests.
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

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "steadyeval/v1/eval_service.grpc.pb.h"

namespace steadyeval::client {

inline constexpr char kDefaultServer[] = "127.0.0.1:50051";
inline constexpr double kDefaultTimeoutSeconds = 30;

// Exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// How to reach the coordinator: the global flags --server, --token_file (or
// $STEADYEVAL_TOKEN_FILE), --ca_cert, --client_cert, --client_key.
struct Connection {
  std::string server;       // HOST:PORT
  std::string token_file;   // empty: no token
  std::string ca_cert;      // empty: plaintext
  std::string client_cert;  // mTLS
  std::string client_key;
};

// A parsed command line.
struct Invocation {
  std::string server;            // HOST:PORT (also connection.server)
  Connection connection;
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

// Every command the CLI knows, as typed ("runs add", "scores"), in --help order.
std::vector<std::string> CommandNames();

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

// A --tasks entry: FILE or FILE:CATEGORY.
struct TaskSpec {
  std::string path;
  std::string category;  // upper-case; empty when none was given
};

// Splits one --tasks entry. A path may itself contain ':', so only a final `:XYZ` whose XYZ
// is a known category (any case) is taken as the category; if `exists(spec)` names a file
// while `exists(path part)` does not, the whole entry is the path. A final `:XYZ` that
// looks like a category word (letters only) but is not one, with a path part that exists
// or ends in .json/.jsonl, is INVALID_ARGUMENT naming the known categories. Anything else
// is a plain path (a missing file is reported when it is read).
absl::StatusOr<TaskSpec> ParseTaskSpec(const std::string& spec,
                                       const std::function<bool(const std::string&)>& exists);

// Parses a window list such as "2,5,10" for `flag` ("average" or "ensemble"): each n an
// integer >= 2 (at most kMaxWindowSize, the server's bound; at most
// kMaxWindowsPerKind sizes); sorted, duplicates dropped. "none" is the empty list.
// INVALID_ARGUMENT naming --flag otherwise.
absl::StatusOr<std::vector<uint32_t>> ParseWindows(const std::string& flag,
                                                   const std::string& value);

// Sets the range oneof of a GetStabilityRequest from --last (K points, or P% → fraction
// P/100) or --steps A:B (inclusive, A <= B); neither leaves it unset (the server's
// default). INVALID_ARGUMENT naming the flag for malformed values or when both are given.
absl::Status SetStabilityRange(const Invocation& inv, v1::GetStabilityRequest& request);

// Creates the stub for a server address (tests pass mocks).
using StubFactory =
    std::function<std::unique_ptr<v1::EvalService::StubInterface>(const std::string& server)>;
// Creates the stub for a connection; main.cc passes one that opens a gRPC channel with TLS
// and the token. Errors (an unreadable token file, ...) end the CLI with exit code 1.
using ConnectionStubFactory =
    std::function<absl::StatusOr<std::unique_ptr<v1::EvalService::StubInterface>>(
        const Connection& connection)>;

// The whole CLI: parse, print help, execute, map errors. Returns the process exit code.
// `env_server` is $STEADYEVAL_SERVER; $STEADYEVAL_TOKEN_FILE is read here.
int RunCli(const std::vector<std::string>& args, const std::string& env_server,
           const ConnectionStubFactory& make_stub, std::ostream& out, std::ostream& err);
int RunCli(const std::vector<std::string>& args, const std::string& env_server,
           const StubFactory& make_stub, std::ostream& out, std::ostream& err);

// ---- Request helpers shared by the commands (cli.cc, plot.cc, watch.cc) ----

// The same code and message as an absl::Status.
absl::Status ToAbsl(const grpc::Status& status);

// Sets `ctx`'s deadline `timeout_s` seconds from now (wall clock).
void SetDeadline(double timeout_s, grpc::ClientContext& ctx);

// Appends every message of a server stream to `items`, then returns the stream's final
// status. INTERNAL when the stub returned no stream (`reader` null). Does not take
// ownership of `reader`.
template <typename T>
absl::Status ReadAll(grpc::ClientReaderInterface<T>* reader, std::vector<T>& items) {
  if (reader == nullptr) return absl::InternalError("stream could not be opened");
  T item;
  while (reader->Read(&item)) items.push_back(item);
  return ToAbsl(reader->Finish());
}

}  // namespace steadyeval::client

#endif  // STEADYEVAL_CLIENT_CLI_H_
