#include "server/rpc/rpc_metrics.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "steadyeval/v1/eval_service.pb.h"
#include "steadyeval/v1/worker_service.pb.h"

namespace steadyeval {
namespace {

using ::grpc::experimental::InterceptionHookPoints;

// Full method name ("/package.Service/Method") -> `method` label, for every method of
// steadyeval's services and the health service. Built once; never changes.
const std::map<std::string, std::string, std::less<>>& KnownMethods() {
  static const auto* known = [] {
    auto* methods = new std::map<std::string, std::string, std::less<>>;
    // One message of each service's .proto file reaches its descriptor.
    for (const google::protobuf::FileDescriptor* file :
         {v1::CreateRunRequest::descriptor()->file(),
          v1::AcquireJobRequest::descriptor()->file()}) {
      for (int s = 0; s < file->service_count(); ++s) {
        const google::protobuf::ServiceDescriptor* service = file->service(s);
        for (int m = 0; m < service->method_count(); ++m) {
          const std::string& method = service->method(m)->name();
          (*methods)[absl::StrCat("/", service->full_name(), "/", method)] =
              absl::StrCat(service->name(), "/", method);
        }
      }
    }
    for (const char* method : {"Check", "Watch"}) {
      std::string label = absl::StrCat("grpc.health.v1.Health/", method);
      (*methods)[absl::StrCat("/", label)] = label;
    }
    return methods;
  }();
  return *known;
}

class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(RpcMetrics* metrics, const std::string* method_label)
      : metrics_(metrics),
        method_label_(method_label),
        start_nanos_(metrics->clock()->MonotonicNanos()) {}

  ~MetricsInterceptor() override {
    if (!recorded_) Record(grpc::StatusCode::CANCELLED);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (!recorded_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      Record(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Record(grpc::StatusCode code) {
    recorded_ = true;
    double seconds = (metrics_->clock()->MonotonicNanos() - start_nanos_) / 1e9;
    metrics_->Record(*method_label_, code, seconds);
  }

  RpcMetrics* metrics_;
  const std::string* method_label_;
  int64_t start_nanos_;
  bool recorded_ = false;  // gRPC runs one call's interception points one at a time
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(RpcMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    const char* method = info->method();
    return new MetricsInterceptor(metrics_,
                                  &RpcMetrics::MethodLabel(method == nullptr ? "" : method));
  }

 private:
  RpcMetrics* metrics_;
};

}  // namespace

RpcMetrics::RpcMetrics(std::shared_ptr<prometheus::Registry> registry, Clock* clock)
    : registry_(std::move(registry)),
      clock_(clock),
      calls_(prometheus::BuildCounter()
                 .Name("steadyeval_rpcs_total")
                 .Help("gRPC calls served, by method and final status")
                 .Register(*registry_)),
      durations_(prometheus::BuildHistogram()
                     .Name("steadyeval_rpc_duration_seconds")
                     .Help("Time from a gRPC call's start to its status (AcquireJob includes "
                           "its long poll)")
                     .Register(*registry_)) {}

const std::string& RpcMetrics::MethodLabel(absl::string_view full_method) {
  static const std::string* other = new std::string("other");
  const auto& known = KnownMethods();
  auto it = known.find(full_method);
  return it == known.end() ? *other : it->second;
}

const char* RpcMetrics::CodeName(grpc::StatusCode code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  int index = static_cast<int>(code);
  if (index < 0 || index >= static_cast<int>(std::size(kNames))) return "UNKNOWN";
  return kNames[index];
}

void RpcMetrics::Record(const std::string& method_label, grpc::StatusCode code, double seconds) {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
  calls_.Add({{"method", method_label}, {"code", CodeName(code)}}).Increment();
  durations_.Add({{"method", method_label}}, *buckets).Observe(seconds);
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
RpcMetrics::NewInterceptorFactory() {
  return std::make_unique<MetricsInterceptorFactory>(this);
}

}  // namespace steadyeval
