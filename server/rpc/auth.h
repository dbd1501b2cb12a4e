// Who may call what on the coordinator (issue 16, DESIGN §9).
//
// Tokens: a bearer token travels as gRPC metadata `authorization: Bearer TOKEN`. The
// tokens file holds no secret, only each token's SHA-256: one line per token,
//
//   ROLE NAME SHA256_HEX        # role worker, reader or admin; NAME [A-Za-z0-9._@-]+
//
// where SHA256_HEX is the lowercase hex SHA-256 of the token text exactly as sent. Blank
// lines and `#` comments are ignored. A token is compared against every line in constant
// time (no early exit, no length-dependent branch on secret data).
//
// Roles: `worker` may call WorkerService only; `reader` the EvalService queries; `admin`
// the queries and every change (runs, jobs, pins, backups). No role may call both APIs.
//
// Without a tokens file every caller is allowed (a loopback server behaves as before).
// The health service (grpc.health.v1) never asks for a token: it is not routed here.
#ifndef STEADYEVAL_SERVER_RPC_AUTH_H_
#define STEADYEVAL_SERVER_RPC_AUTH_H_

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace steadyeval {

enum class Role { kWorker, kReader, kAdmin };

// "worker", "reader", "admin".
const char* RoleName(Role role);
absl::StatusOr<Role> ParseRole(absl::string_view text);

// What a call needs: WorkerService calls need kWorkerCall; EvalService queries kQuery;
// EvalService changes kAdminCall.
enum class Permission { kWorkerCall, kQuery, kAdminCall };

// Whether `role` grants `permission`.
bool Allows(Role role, Permission permission);

// The authenticated caller. Without a tokens file: name "anonymous", role admin, and
// `authenticated` false (every permission is granted).
struct Identity {
  std::string name;
  Role role = Role::kAdmin;
  bool authenticated = false;
};

// A parsed tokens file. Immutable; thread-safe.
class TokenTable {
 public:
  // Parses the file's text; `filename` names it in errors ("FILE:LINE: reason").
  static absl::StatusOr<TokenTable> Parse(absl::string_view content, const std::string& filename);
  // Reads and parses `path` (at most 1 MiB, a regular file).
  static absl::StatusOr<TokenTable> Load(const std::string& path);

  // The identity of `token`, or nullopt. Constant time in the token's content.
  std::optional<Identity> Lookup(absl::string_view token) const;
  size_t size() const { return entries_.size(); }

  // One line of the file for a new token: "ROLE NAME SHA256_HEX".
  static std::string Line(Role role, absl::string_view name, absl::string_view token);
  // A new random token (256 bits from the OS CSPRNG, base64url without padding, prefixed
  // "se_" so it is recognisable in a leaked log).
  static absl::StatusOr<std::string> NewToken();

 private:
  struct Entry {
    Role role;
    std::string name;
    std::array<uint8_t, 32> digest;
  };
  std::vector<Entry> entries_;
};

// Appends a new token of `role` and `name` to `path` (created 0600 if missing; the file
// is checked to parse first, and a name already used for that role is refused) and
// returns the token text: the only time it is shown.
absl::StatusOr<std::string> AddToken(const std::string& path, Role role, const std::string& name);

// The tokens file a server checks calls against, re-readable on SIGHUP. Thread-safe.
class Authenticator {
 public:
  // Disabled: every call is allowed as an anonymous admin.
  Authenticator() = default;
  // Loads `tokens_file`; an empty path gives a disabled authenticator.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(const std::string& tokens_file);

  bool enabled() const { return !path_.empty(); }

  // Re-reads the tokens file. On error the previous table stays in force and the error is
  // returned (the caller logs it). No-op when disabled.
  absl::Status Reload();

  // Checks the `authorization` metadata value (the whole header value, "Bearer TOKEN";
  // nullopt when absent) against the table and `permission`. UNAUTHENTICATED for a
  // missing, malformed or unknown token; PERMISSION_DENIED naming the role and what it may
  // call for a token whose role does not grant `permission`.
  absl::StatusOr<Identity> Check(std::optional<absl::string_view> authorization,
                                 Permission permission) const;

 private:
  std::string path_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const TokenTable> table_ ABSL_GUARDED_BY(mu_);
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_RPC_AUTH_H_
