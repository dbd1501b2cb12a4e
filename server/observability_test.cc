// The coordinator's gRPC and RocksDB metrics as Prometheus scrapes them: a real
// CoordinatorServer on 127.0.0.1:0, real calls, exact counts read back from /metrics.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <future>
#include <optional>
#include <string>

#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/coordinator_fixture.h"
#include "server/rpc/rpc_metrics.h"
#include "server/rpc/server.h"
#include "testing/in_process_server.h"
#include "server/store/store_metrics.h"
#include "api/protocol.h"
#include "testing/http.h"

namespace steadyeval {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Optional;
using ::steadyeval::testing::HttpGet;
using ::steadyeval::testing::InProcessServerTest;
using ::steadyeval::testing::McTaskFile;
using ::steadyeval::testing::SampleValue;

std::string Calls(const std::string& method, const std::string& code) {
  return "steadyeval_rpcs_total{code=\"" + code + "\",method=\"" + method + "\"}";
}
std::string DurationCount(const std::string& method) {
  return "steadyeval_rpc_duration_seconds_count{method=\"" + method + "\"}";
}
std::string DurationSum(const std::string& method) {
  return "steadyeval_rpc_duration_seconds_sum{method=\"" + method + "\"}";
}

class ObservabilityTest : public InProcessServerTest {
 protected:
  std::string Scrape() {
    std::string response = HttpGet(server_->metrics_port(), "/metrics");
    EXPECT_THAT(response, HasSubstr("200 OK"));
    return response;
  }

  grpc::Status CreateRun(const std::string& name) {
    v1::CreateRunRequest request;
    request.mutable_config()->set_name(name);
    request.mutable_config()->set_source((root_ / "ckpt").string());
    *request.add_task_files() = McTaskFile();
    grpc::ClientContext ctx;
    v1::Run run;
    return eval_->CreateRun(&ctx, request, &run);
  }
  grpc::Status GetRun(const std::string& name) {
    v1::GetRunRequest request;
    request.set_name(name);
    grpc::ClientContext ctx;
    v1::GetRunResponse response;
    return eval_->GetRun(&ctx, request, &response);
  }
  // A unary call by full method name with an empty (all-default) request message.
  grpc::Status GenericCall(const std::string& full_method) {
    grpc::GenericStub stub(channel_);
    grpc::ClientContext ctx;
    grpc::Slice empty;
    grpc::ByteBuffer request(&empty, 1);  // a default-constructed one is no message at all
    grpc::ByteBuffer response;
    std::promise<grpc::Status> done;
    stub.UnaryCall(&ctx, full_method, grpc::StubOptions(), &request, &response,
                   [&done](grpc::Status status) { done.set_value(std::move(status)); });
    return done.get_future().get();
  }
};

TEST_F(ObservabilityTest, CountsEveryCallOnceByMethodAndFinalStatus) {
  ASSERT_TRUE(CreateRun("r").ok());
  ASSERT_TRUE(GetRun("r").ok());
  ASSERT_EQ(GetRun("missing").error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_EQ(GetRun("also-missing").error_code(), grpc::StatusCode::NOT_FOUND);
  {
    grpc::ClientContext ctx;
    v1::RegisterWorkerRequest request;  // no worker_id
    v1::RegisterWorkerResponse response;
    ASSERT_EQ(worker_->RegisterWorker(&ctx, request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  // A server stream of several messages is one call.
  for (uint64_t step : {100, 200, 300}) checkpoints_.Add("r", step);
  ASSERT_OK(server_->coordinator()->PollRunsOnce());
  {
    grpc::ClientContext ctx;
    v1::ListCheckpointsRequest request;
    request.set_run("r");
    auto reader = eval_->ListCheckpoints(&ctx, request);
    v1::Checkpoint checkpoint;
    int read = 0;
    while (reader->Read(&checkpoint)) ++read;
    ASSERT_TRUE(reader->Finish().ok());
    ASSERT_EQ(read, 3);
  }
  // A client stream of several messages is one call.
  v1::LeasedJob lease;
  {
    grpc::ClientContext ctx;
    v1::RegisterWorkerRequest request;
    request.set_worker_id("w");
    request.set_protocol_version(kProtocolVersion);
    v1::RegisterWorkerResponse response;
    ASSERT_TRUE(worker_->RegisterWorker(&ctx, request, &response).ok());
  }
  {
    grpc::ClientContext ctx;
    v1::AcquireJobRequest request;
    request.set_worker_id("w");
    v1::AcquireJobResponse response;
    ASSERT_TRUE(worker_->AcquireJob(&ctx, request, &response).ok());
    ASSERT_TRUE(response.has_job());
    lease = response.lease();
  }
  {
    grpc::ClientContext ctx;
    v1::ReportResultsResponse response;
    auto writer = worker_->ReportResults(&ctx, &response);
    for (uint32_t i = 0; i < 3; ++i) {
      v1::ReportResultsRequest chunk;
      chunk.set_worker_id("w");
      chunk.set_job_id(lease.job().id());
      chunk.set_epoch(lease.job().epoch());
      chunk.set_lease_secret(lease.lease_secret());
      chunk.set_step(lease.job().steps(0));
      *chunk.mutable_task() = lease.task_headers(0).ref();
      v1::ExampleOutput* output = chunk.add_outputs();
      output->set_index(i);
      output->set_output("0");
      chunk.set_task_complete(i == 2);
      ASSERT_TRUE(writer->Write(chunk));
    }
    writer->WritesDone();
    grpc::Status status = writer->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.predictions_written(), 3u);
  }
  // A refused stream is counted with the status its client saw.
  grpc::StatusCode refused_code;
  {
    grpc::ClientContext ctx;
    v1::ReportResultsResponse response;
    auto writer = worker_->ReportResults(&ctx, &response);
    v1::ReportResultsRequest chunk;
    chunk.set_worker_id("w");
    chunk.set_job_id(999);
    chunk.set_epoch(1);
    writer->Write(chunk);
    writer->WritesDone();
    refused_code = writer->Finish().error_code();
    ASSERT_NE(refused_code, grpc::StatusCode::OK);
  }
  ASSERT_TRUE(GenericCall("/grpc.health.v1.Health/Check").ok());
  ASSERT_EQ(GenericCall("/steadyeval.v1.EvalService/NoSuchMethod").error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  ASSERT_EQ(GenericCall("/some.other.Service/Call").error_code(), grpc::StatusCode::UNIMPLEMENTED);

  // Each call's status is recorded before it is sent, so every call above is counted.
  std::string metrics = Scrape();
  EXPECT_THAT(SampleValue(metrics, Calls("EvalService/CreateRun", "OK")), Optional(1.0));
  EXPECT_THAT(SampleValue(metrics, Calls("EvalService/GetRun", "OK")), Optional(1.0));
  EXPECT_THAT(SampleValue(metrics, Calls("EvalService/GetRun", "NOT_FOUND")), Optional(2.0));
  EXPECT_THAT(SampleValue(metrics, Calls("WorkerService/RegisterWorker", "INVALID_ARGUMENT")),
              Optional(1.0));
  EXPECT_THAT(SampleValue(metrics, Calls("EvalService/ListCheckpoints", "OK")), Optional(1.0));
  EXPECT_THAT(SampleValue(metrics, Calls("WorkerService/RegisterWorker", "OK")), Optional(1.0));
  EXPECT_THAT(SampleValue(metrics, Calls("WorkerService/AcquireJob", "OK")), Optional(1.0));
  EXPECT_THAT(SampleValue(metrics, Calls("WorkerService/ReportResults", "OK")), Optional(1.0));
  EXPECT_THAT(SampleValue(metrics,
                          Calls("WorkerService/ReportResults", RpcMetrics::CodeName(refused_code))),
              Optional(1.0));
  EXPECT_THAT(SampleValue(metrics, Calls("grpc.health.v1.Health/Check", "OK")), Optional(1.0));
  EXPECT_THAT(SampleValue(metrics, Calls("other", "UNIMPLEMENTED")), Optional(2.0));
  // No series for a status a method never ended with, nor for the unknown names.
  EXPECT_EQ(SampleValue(metrics, Calls("EvalService/CreateRun", "NOT_FOUND")), std::nullopt);
  EXPECT_THAT(metrics, Not(HasSubstr("NoSuchMethod")));
  EXPECT_THAT(metrics, Not(HasSubstr("some.other")));

  // One duration sample per call, however many messages it carried.
  EXPECT_THAT(SampleValue(metrics, DurationCount("EvalService/CreateRun")), Optional(1.0));
  EXPECT_THAT(SampleValue(metrics, DurationCount("EvalService/GetRun")), Optional(3.0));
  EXPECT_THAT(SampleValue(metrics, DurationCount("WorkerService/RegisterWorker")), Optional(2.0));
  EXPECT_THAT(SampleValue(metrics, DurationCount("EvalService/ListCheckpoints")), Optional(1.0));
  EXPECT_THAT(SampleValue(metrics, DurationCount("WorkerService/ReportResults")), Optional(2.0));
  EXPECT_THAT(SampleValue(metrics, DurationCount("grpc.health.v1.Health/Check")), Optional(1.0));
  EXPECT_THAT(SampleValue(metrics, DurationCount("other")), Optional(2.0));
  // Every call ends in the +Inf bucket; durations are real (non-negative) times.
  EXPECT_THAT(SampleValue(metrics,
                          "steadyeval_rpc_duration_seconds_bucket{method=\"EvalService/GetRun\","
                          "le=\"+Inf\"}"),
              Optional(3.0));
  std::optional<double> sum = SampleValue(metrics, DurationSum("EvalService/GetRun"));
  ASSERT_TRUE(sum.has_value());
  EXPECT_GE(*sum, 0.0);
  EXPECT_LT(*sum, 60.0);
}

TEST_F(ObservabilityTest, ExposesRocksDbFiguresOfTheStore) {
  ASSERT_TRUE(CreateRun("r").ok());  // writes through the store
  std::string metrics = Scrape();
  std::optional<double> memtable =
      SampleValue(metrics, "steadyeval_rocksdb_size_bytes{kind=\"memtable\"}");
  ASSERT_TRUE(memtable.has_value());
  EXPECT_GT(*memtable, 0.0);
  EXPECT_THAT(SampleValue(metrics, "steadyeval_rocksdb_size_bytes{kind=\"sst\"}"),
              Optional(::testing::Ge(0.0)));
  EXPECT_THAT(SampleValue(metrics, "steadyeval_rocksdb_size_bytes{kind=\"live_data\"}"),
              Optional(::testing::Ge(0.0)));
  EXPECT_THAT(SampleValue(metrics, "steadyeval_rocksdb_write_stall_seconds_total"), Optional(0.0));
  EXPECT_THAT(SampleValue(metrics, "steadyeval_rocksdb_write_stalled"), Optional(0.0));
  EXPECT_THAT(metrics, HasSubstr("# TYPE steadyeval_rocksdb_size_bytes gauge"));
  EXPECT_THAT(metrics, HasSubstr("# TYPE steadyeval_rocksdb_write_stall_seconds_total counter"));
  EXPECT_THAT(metrics, HasSubstr("# TYPE steadyeval_rocksdb_write_stalled gauge"));
}

TEST(RpcMetricsTest, LabelsOnlyKnownServicesMethods) {
  EXPECT_EQ(RpcMetrics::MethodLabel("/steadyeval.v1.EvalService/GetRun"), "EvalService/GetRun");
  EXPECT_EQ(RpcMetrics::MethodLabel("/steadyeval.v1.EvalService/ExportPredictions"),
            "EvalService/ExportPredictions");
  EXPECT_EQ(RpcMetrics::MethodLabel("/steadyeval.v1.WorkerService/AcquireJob"),
            "WorkerService/AcquireJob");
  EXPECT_EQ(RpcMetrics::MethodLabel("/grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check");
  EXPECT_EQ(RpcMetrics::MethodLabel("/grpc.health.v1.Health/Watch"), "grpc.health.v1.Health/Watch");
  for (const char* unknown :
       {"", "/", "unknown", "EvalService/GetRun", "/steadyeval.v1.EvalService/getrun",
        "/steadyeval.v1.EvalService/GetRun/", "/steadyeval.v2.EvalService/GetRun",
        "/grpc.health.v1.Health/List", "/grpc.reflection.v1alpha.ServerReflection/Info"}) {
    EXPECT_EQ(RpcMetrics::MethodLabel(unknown), "other") << unknown;
  }
}

TEST(RpcMetricsTest, NamesEveryGrpcCode) {
  EXPECT_STREQ(RpcMetrics::CodeName(grpc::StatusCode::OK), "OK");
  EXPECT_STREQ(RpcMetrics::CodeName(grpc::StatusCode::CANCELLED), "CANCELLED");
  EXPECT_STREQ(RpcMetrics::CodeName(grpc::StatusCode::INVALID_ARGUMENT), "INVALID_ARGUMENT");
  EXPECT_STREQ(RpcMetrics::CodeName(grpc::StatusCode::DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
  EXPECT_STREQ(RpcMetrics::CodeName(grpc::StatusCode::NOT_FOUND), "NOT_FOUND");
  EXPECT_STREQ(RpcMetrics::CodeName(grpc::StatusCode::RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
  EXPECT_STREQ(RpcMetrics::CodeName(grpc::StatusCode::FAILED_PRECONDITION), "FAILED_PRECONDITION");
  EXPECT_STREQ(RpcMetrics::CodeName(grpc::StatusCode::ABORTED), "ABORTED");
  EXPECT_STREQ(RpcMetrics::CodeName(grpc::StatusCode::UNIMPLEMENTED), "UNIMPLEMENTED");
  EXPECT_STREQ(RpcMetrics::CodeName(grpc::StatusCode::UNAVAILABLE), "UNAVAILABLE");
  EXPECT_STREQ(RpcMetrics::CodeName(grpc::StatusCode::DATA_LOSS), "DATA_LOSS");
  EXPECT_STREQ(RpcMetrics::CodeName(grpc::StatusCode::UNAUTHENTICATED), "UNAUTHENTICATED");
  EXPECT_STREQ(RpcMetrics::CodeName(static_cast<grpc::StatusCode>(17)), "UNKNOWN");
  EXPECT_STREQ(RpcMetrics::CodeName(static_cast<grpc::StatusCode>(-1)), "UNKNOWN");
}

TEST(RpcMetricsTest, CountsByCodeAndSumsDurationsByMethod) {
  auto registry = std::make_shared<prometheus::Registry>();
  FakeClock clock;
  RpcMetrics metrics(registry, &clock);
  metrics.Record("EvalService/GetRun", grpc::StatusCode::OK, 0.25);
  metrics.Record("EvalService/GetRun", grpc::StatusCode::OK, 0.5);
  metrics.Record("EvalService/GetRun", grpc::StatusCode::NOT_FOUND, 2);
  double calls_ok = 0, calls_not_found = 0, sum = -1;
  uint64_t count = 0;
  for (const prometheus::MetricFamily& family : registry->Collect()) {
    for (const prometheus::ClientMetric& m : family.metric) {
      if (family.name == "steadyeval_rpcs_total") {
        (m.label[0].value == "OK" ? calls_ok : calls_not_found) = m.counter.value;
      } else if (family.name == "steadyeval_rpc_duration_seconds") {
        count = m.histogram.sample_count;
        sum = m.histogram.sample_sum;
      }
    }
  }
  EXPECT_EQ(calls_ok, 2);
  EXPECT_EQ(calls_not_found, 1);
  EXPECT_EQ(count, 3u);
  EXPECT_DOUBLE_EQ(sum, 2.75);
}

TEST(StoreMetricsTest, ExposesStatsInSecondsAndAsAFlag) {
  Store::Stats stats;
  stats.sst_bytes = 1000;
  stats.memtable_bytes = 200;
  stats.live_data_bytes = 900;
  stats.stall_micros = 2'500'000;
  stats.write_stalled = true;
  std::vector<prometheus::MetricFamily> families = StoreMetrics::Families(stats);
  ASSERT_EQ(families.size(), 3u);
  EXPECT_EQ(families[0].name, "steadyeval_rocksdb_size_bytes");
  ASSERT_EQ(families[0].metric.size(), 3u);
  EXPECT_EQ(families[0].metric[0].label[0].value, "sst");
  EXPECT_EQ(families[0].metric[0].gauge.value, 1000);
  EXPECT_EQ(families[0].metric[1].label[0].value, "memtable");
  EXPECT_EQ(families[0].metric[1].gauge.value, 200);
  EXPECT_EQ(families[0].metric[2].label[0].value, "live_data");
  EXPECT_EQ(families[0].metric[2].gauge.value, 900);
  EXPECT_EQ(families[1].name, "steadyeval_rocksdb_write_stall_seconds_total");
  EXPECT_EQ(families[1].type, prometheus::MetricType::Counter);
  EXPECT_DOUBLE_EQ(families[1].metric[0].counter.value, 2.5);
  EXPECT_EQ(families[2].name, "steadyeval_rocksdb_write_stalled");
  EXPECT_EQ(families[2].metric[0].gauge.value, 1);
  stats.write_stalled = false;
  EXPECT_EQ(StoreMetrics::Families(stats)[2].metric[0].gauge.value, 0);
}

}  // namespace
}  // namespace steadyeval
