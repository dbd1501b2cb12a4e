// The coordinator's Prometheus metrics of its gRPC calls (docs/metrics.md):
// steadyeval_rpcs_total{method,code} and steadyeval_rpc_duration_seconds{method}, recorded
// by a server interceptor.
//
// A call is counted once, when its status is sent (streaming calls included), with the
// time since the interceptor was created (the call's start: AcquireJob includes its long
// poll). A call that ends without sending a status is counted as CANCELLED.
//
// `method` is bounded: "EvalService/GetRun" for steadyeval's services,
// "grpc.health.v1.Health/Check" for the health service, "other" for anything else.
#ifndef STEADYEVAL_SERVER_RPC_RPC_METRICS_H_
#define STEADYEVAL_SERVER_RPC_RPC_METRICS_H_

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "common/clock.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace steadyeval {

class RpcMetrics {
 public:
  // Registers both families in `registry`. `clock` (not owned) times the calls and must
  // outlive this object.
  RpcMetrics(std::shared_ptr<prometheus::Registry> registry, Clock* clock);

  // The `method` label of a full gRPC method name as the server sees it
  // ("/steadyeval.v1.EvalService/GetRun" -> "EvalService/GetRun",
  // "/grpc.health.v1.Health/Check" -> "grpc.health.v1.Health/Check"); "other" for a
  // method that is not one of those services'. The reference stays valid forever.
  static const std::string& MethodLabel(absl::string_view full_method);
  // "OK", "NOT_FOUND", ...; "UNKNOWN" for a number outside the 17 gRPC codes.
  static const char* CodeName(grpc::StatusCode code);

  // Counts one finished call. `method_label` should come from MethodLabel. Thread-safe.
  void Record(const std::string& method_label, grpc::StatusCode code, double seconds);

  // A factory for ServerBuilder::experimental().SetInterceptorCreators. Its interceptors
  // record into this object, which must outlive the server they are installed on.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewInterceptorFactory();

  Clock* clock() const { return clock_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  Clock* clock_;
  prometheus::Family<prometheus::Counter>& calls_;
  prometheus::Family<prometheus::Histogram>& durations_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_RPC_RPC_METRICS_H_
