// Conversions between absl::Status and grpc::Status (same code numbering). Header-only so
// steadyeval_common itself does not depend on gRPC; include it only where gRPC is linked.
#ifndef STEADYEVAL_COMMON_GRPC_STATUS_H_
#define STEADYEVAL_COMMON_GRPC_STATUS_H_

#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace steadyeval {

inline absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

inline grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_GRPC_STATUS_H_
