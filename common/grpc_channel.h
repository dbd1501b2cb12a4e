// Opens the gRPC channel a client (CLI, worker) talks to the coordinator over: plaintext
// or TLS (optionally with a client certificate for mTLS), with a bearer token attached to
// every call as `authorization: Bearer TOKEN` metadata when a token file is given.
#ifndef STEADYEVAL_COMMON_GRPC_CHANNEL_H_
#define STEADYEVAL_COMMON_GRPC_CHANNEL_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace steadyeval {

struct ChannelOptions {
  std::string target;       // HOST:PORT
  std::string token_file;   // the token on its first line; empty: no token
  std::string ca_cert;      // PEM roots that sign the server's certificate; empty: plaintext
  std::string client_cert;  // PEM certificate chain for mTLS (needs ca_cert and client_key)
  std::string client_key;   // PEM private key of client_cert
  grpc::ChannelArguments arguments;
};

// Reads a token file: its first line with trailing whitespace stripped. INVALID_ARGUMENT
// naming the file when it is not a regular file, larger than 64 KiB or its first line is
// empty; NOT_FOUND when it cannot be opened.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// Reads a PEM file for TLS (at most 1 MiB). Errors name the file and the flag `flag`.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& flag);

// Creates the channel (connects lazily). Errors: unreadable files, a client certificate
// without a CA or key.
absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const ChannelOptions& options);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_GRPC_CHANNEL_H_
