#include "server/rpc/auth.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_read.h"
#include "common/status.h"

namespace steadyeval {
namespace {

constexpr size_t kMaxTokensFileBytes = 1 << 20;
constexpr size_t kMaxTokenBytes = 4096;
constexpr size_t kMaxNameBytes = 128;

std::array<uint8_t, 32> Digest(absl::string_view text) {
  std::array<uint8_t, 32> digest;
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest.data());
  return digest;
}

bool IsValidTokenName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-' && c != '@') return false;
  }
  return true;
}

absl::StatusOr<std::array<uint8_t, 32>> ParseDigest(absl::string_view hex) {
  if (hex.size() != 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("SHA256_HEX must be 64 lowercase hex digits, got ", hex.size(), " characters"));
  }
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return absl::InvalidArgumentError(
          "SHA256_HEX must be lowercase hex (0-9a-f): the output of `sha256sum`");
    }
  }
  std::string bytes = absl::HexStringToBytes(hex);
  std::array<uint8_t, 32> digest;
  std::memcpy(digest.data(), bytes.data(), digest.size());
  return digest;
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kWorker: return "worker";
    case Role::kReader: return "reader";
    case Role::kAdmin: return "admin";
  }
  return "?";
}

absl::StatusOr<Role> ParseRole(absl::string_view text) {
  if (text == "worker") return Role::kWorker;
  if (text == "reader") return Role::kReader;
  if (text == "admin") return Role::kAdmin;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown role '", text.substr(0, 32), "' (roles: worker, reader, admin)"));
}

bool Allows(Role role, Permission permission) {
  switch (permission) {
    case Permission::kWorkerCall: return role == Role::kWorker;
    case Permission::kQuery: return role == Role::kReader || role == Role::kAdmin;
    case Permission::kAdminCall: return role == Role::kAdmin;
  }
  return false;
}

absl::StatusOr<TokenTable> TokenTable::Parse(absl::string_view content,
                                             const std::string& filename) {
  TokenTable table;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    ++line_number;
    size_t hash = line.find('#');
    if (hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (fields.empty()) continue;
    auto error = [&](absl::string_view reason) {
      return absl::InvalidArgumentError(absl::StrCat(filename, ":", line_number, ": ", reason));
    };
    if (fields.size() != 3) {
      return error(absl::StrCat("expected 'ROLE NAME SHA256_HEX', got ", fields.size(),
                                " fields"));
    }
    absl::StatusOr<Role> role = ParseRole(fields[0]);
    if (!role.ok()) return error(role.status().message());
    if (!IsValidTokenName(fields[1])) {
      return error("NAME must be 1-128 characters of [A-Za-z0-9._@-]");
    }
    absl::StatusOr<std::array<uint8_t, 32>> digest = ParseDigest(fields[2]);
    if (!digest.ok()) return error(digest.status().message());
    table.entries_.push_back(Entry{*role, std::string(fields[1]), *digest});
  }
  return table;
}

absl::StatusOr<TokenTable> TokenTable::Load(const std::string& path) {
  ASSIGN_OR_RETURN(std::string content, ReadRegularFile(path, kMaxTokensFileBytes, "tokens file"));
  return Parse(content, path);
}

std::optional<Identity> TokenTable::Lookup(absl::string_view token) const {
  const std::array<uint8_t, 32> digest = Digest(token);
  // Visit every entry whatever matches, so the time taken says nothing about which entry
  // (or how much of a digest) matched.
  const Entry* found = nullptr;
  for (const Entry& entry : entries_) {
    const bool equal = CRYPTO_memcmp(entry.digest.data(), digest.data(), digest.size()) == 0;
    if (equal && found == nullptr) found = &entry;
  }
  if (found == nullptr) return std::nullopt;
  return Identity{found->name, found->role, true};
}

std::string TokenTable::Line(Role role, absl::string_view name, absl::string_view token) {
  const std::array<uint8_t, 32> digest = Digest(token);
  return absl::StrCat(RoleName(role), " ", name, " ",
                      absl::BytesToHexString(absl::string_view(
                          reinterpret_cast<const char*>(digest.data()), digest.size())));
}

absl::StatusOr<std::string> TokenTable::NewToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    return absl::InternalError("the OpenSSL random generator failed; no token was made");
  }
  std::string encoded;
  absl::WebSafeBase64Escape(absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)),
                            &encoded);
  return absl::StrCat("se_", encoded);
}

absl::StatusOr<std::string> AddToken(const std::string& path, Role role,
                                     const std::string& name) {
  if (!IsValidTokenName(name)) {
    return absl::InvalidArgumentError("NAME must be 1-128 characters of [A-Za-z0-9._@-]");
  }
  std::string existing;
  if (access(path.c_str(), F_OK) == 0) {
    ASSIGN_OR_RETURN(existing, ReadRegularFile(path, kMaxTokensFileBytes, "tokens file"));
    ASSIGN_OR_RETURN(TokenTable table, TokenTable::Parse(existing, path));
    (void)table;
    for (absl::string_view line : absl::StrSplit(existing, '\n')) {
      std::vector<absl::string_view> fields =
          absl::StrSplit(line.substr(0, line.find('#')), absl::ByAnyChar(" \t\r"),
                         absl::SkipEmpty());
      if (fields.size() == 3 && fields[0] == RoleName(role) && fields[1] == name) {
        return absl::AlreadyExistsError(
            absl::StrCat(path, " already has a ", RoleName(role), " token named '", name,
                         "' (remove its line first to replace it)"));
      }
    }
  }
  ASSIGN_OR_RETURN(std::string token, TokenTable::NewToken());
  std::string line = TokenTable::Line(role, name, token) + "\n";
  if (!existing.empty() && existing.back() != '\n') line.insert(line.begin(), '\n');
  int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot open ", path, " for appending: ", std::strerror(errno)));
  }
  const bool written = write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  const bool synced = fsync(fd) == 0;
  close(fd);
  if (!written || !synced) {
    return absl::UnavailableError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  return token;
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(
    const std::string& tokens_file) {
  auto auth = std::make_unique<Authenticator>();
  if (tokens_file.empty()) return auth;
  auth->path_ = tokens_file;
  RETURN_IF_ERROR(auth->Reload());
  return auth;
}

absl::Status Authenticator::Reload() {
  if (!enabled()) return absl::OkStatus();
  ASSIGN_OR_RETURN(TokenTable table, TokenTable::Load(path_));
  auto shared = std::make_shared<const TokenTable>(std::move(table));
  absl::MutexLock lock(&mu_);
  table_ = std::move(shared);
  return absl::OkStatus();
}

absl::StatusOr<Identity> Authenticator::Check(std::optional<absl::string_view> authorization,
                                              Permission permission) const {
  if (!enabled()) return Identity{"anonymous", Role::kAdmin, false};
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError(
        "this server needs a token: pass --token_file FILE (metadata 'authorization: Bearer "
        "TOKEN')");
  }
  absl::string_view value = *authorization;
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWith(value, kBearer) || value.size() > kBearer.size() + kMaxTokenBytes) {
    return absl::UnauthenticatedError(
        "malformed authorization metadata: expected 'Bearer TOKEN'");
  }
  std::shared_ptr<const TokenTable> table;
  {
    absl::MutexLock lock(&mu_);
    table = table_;
  }
  std::optional<Identity> identity = table->Lookup(value.substr(kBearer.size()));
  if (!identity.has_value()) {
    return absl::UnauthenticatedError(
        "unknown token (not in the server's --tokens_file; was it revoked?)");
  }
  if (!Allows(identity->role, permission)) {
    const char* allowed = identity->role == Role::kWorker
                              ? "WorkerService only"
                              : "queries only; changes need an admin token";
    return absl::PermissionDeniedError(absl::StrCat("token '", identity->name, "' has role ",
                                                    RoleName(identity->role),
                                                    ", which may call ", allowed));
  }
  return *identity;
}

}  // namespace steadyeval
