// TLS for the coordinator's gRPC port (issue 16): --tls_cert / --tls_key, and --client_ca
// to require client certificates (mTLS).
//
// gRPC reads the certificates through a file-watching provider. It does not watch the
// user's files but private copies in `<data_dir>/tls/` (0700, key 0600), which Install()
// writes only after checking the PEM files: the certificate parses, the key parses and
// belongs to it, the CA parses. So a half-written or wrong file never reaches gRPC, and a
// renewal takes effect when the operator says so (SIGHUP → Install again), within
// kTlsRefreshSeconds; until then, and when the new files are refused, the old ones stay.
#ifndef STEADYEVAL_SERVER_RPC_TLS_H_
#define STEADYEVAL_SERVER_RPC_TLS_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace steadyeval {

struct TlsFiles {
  std::string cert;       // PEM certificate chain of the server
  std::string key;        // PEM private key of `cert`
  std::string client_ca;  // PEM roots client certificates must chain to; empty: no mTLS
  bool enabled() const { return !cert.empty(); }
};

inline constexpr unsigned kTlsRefreshSeconds = 1;

// Checks `files` (both of cert/key or neither; client_ca needs them). INVALID_ARGUMENT
// naming the file and flag for unreadable, unparsable or mismatched files.
absl::Status CheckTlsFiles(const TlsFiles& files);

// Checks the files and copies exactly the checked bytes into `watch_dir` (created 0700),
// each file atomically.
absl::Status InstallTlsFiles(const TlsFiles& files, const std::string& watch_dir);

// Server credentials reading the copies in `watch_dir` (InstallTlsFiles first).
std::shared_ptr<grpc::ServerCredentials> WatchedTlsCredentials(const std::string& watch_dir,
                                                               bool require_client_cert);

// Whether HOST of "HOST:PORT" is a loopback address (127.0.0.0/8, ::1, localhost).
bool IsLoopbackListen(const std::string& address);

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_RPC_TLS_H_
