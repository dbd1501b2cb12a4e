// Asks a server's standard gRPC health service (grpc.health.v1.Health/Check,
// the whole server: service "") for its status, without the health proto's generated code
// (Debian ships none): the request is an empty message and the response's field 1 is the
// status enum.
#ifndef STEADYEVAL_TESTING_HEALTH_CHECK_H_
#define STEADYEVAL_TESTING_HEALTH_CHECK_H_

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace steadyeval::testing {

enum class ServingStatus { kUnknown = 0, kServing = 1, kNotServing = 2 };

inline absl::StatusOr<ServingStatus> CheckHealth(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice empty("", 0);
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status status) { done.set_value(std::move(status)); });
  grpc::Status status = done.get_future().get();
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("health check failed: ", status.error_message()));
  }
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return absl::DataLossError("unreadable health response");
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  if (bytes.empty()) return ServingStatus::kUnknown;  // proto3 default
  if (bytes.size() != 2 || bytes[0] != 0x08) {
    return absl::DataLossError("unexpected health response");
  }
  return static_cast<ServingStatus>(bytes[1]);
}

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_HEALTH_CHECK_H_
