// The worker daemon against a real S3-compatible server (s3rver, testing/s3rver.h): an
// s3:// lease's checkpoint is fetched through the S3 client (streamed with GetToFile) into
// the checkpoint cache and loaded from there; a worker with wrong credentials fails the
// job as retryable, naming the HTTP status, and counts the request errors.
#include <memory>
#include <string>
#include <vector>

#include "api/protocol.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "steadyeval/v1/worker_service_mock.grpc.pb.h"
#include "testing/files.h"
#include "testing/grpc_fakes.h"
#include "testing/metric_families.h"
#include "testing/s3rver.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"
#include "worker/daemon/daemon.h"

namespace steadyeval {
namespace {

namespace v1 = ::steadyeval::v1;
using ::testing::_;
using ::testing::HasSubstr;

// Records the folder each load reads, and what config.json and the weights held then.
class RecordingBackend : public EvalBackend {
 public:
  absl::StatusOr<LoadStats> Load(const std::string& dir, const std::string&) override {
    loaded.push_back(dir);
    weights.push_back(::steadyeval::testing::ReadFileOrEmpty(dir + "/model.safetensors"));
    nested.push_back(::steadyeval::testing::ReadFileOrEmpty(dir + "/tokenizer/vocab.json"));
    return LoadStats{};
  }
  absl::StatusOr<std::vector<ExampleResult>> Evaluate(const Task& task, const EvalSettings&,
                                                      const ProgressFn&) override {
    std::vector<ExampleResult> out;
    for (uint32_t i = 0; i < task.size(); ++i) out.push_back({i, "0", {-1.0, -2.0}});
    return out;
  }
  uint64_t tokens_processed() const override { return 0; }

  std::vector<std::string> loaded, weights, nested;
};

class WorkerDaemonS3rverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(server_, ::steadyeval::testing::S3rver::Start());
    std::unique_ptr<S3Client> client = server_->Client();
    ASSERT_OK(client->CreateBucket("ckpt"));
    weights_ = std::string(3 << 20, 'w');  // several MiB: streamed, not one buffer
    ASSERT_OK(client->Put("ckpt", "run/step_100/config.json", "{}"));
    ASSERT_OK(client->Put("ckpt", "run/step_100/model.safetensors", weights_));
    ASSERT_OK(client->Put("ckpt", "run/step_100/tokenizer/vocab.json", "{\"a\": 1}"));
    task_text_ = R"({"id": "a", "query": "q", "choices": ["x", "y"], "gold": 0})" "\n";
    auto task = ParseTask("mc.jsonl", task_text_);
    ASSERT_OK(task);
    task_sha256_ = task->sha256;
  }

  v1::LeasedJob Lease(uint64_t id) const {
    v1::LeasedJob lease;
    lease.mutable_job()->set_id(id);
    lease.mutable_job()->set_run("r");
    lease.mutable_job()->set_kind("raw");
    lease.mutable_job()->set_epoch(1);
    lease.mutable_job()->add_steps(100);
    lease.add_checkpoint_paths("s3://ckpt/run/step_100");
    lease.set_source_root("s3://ckpt/run");
    lease.set_s3_endpoint(server_->endpoint());
    lease.set_lease_ttl_ms(600000);
    lease.set_prompt_language("en");
    lease.set_bos("add");
    v1::TaskContent* header = lease.add_task_headers();
    header->mutable_ref()->set_name("mc");
    header->mutable_ref()->set_sha256(task_sha256_);
    header->set_filename("mc.jsonl");
    header->set_kind(v1::TASK_KIND_MULTIPLE_CHOICE);
    return lease;
  }

  // Runs a daemon with `credentials` through `leases`; returns it (stopped) for its metrics.
  std::unique_ptr<WorkerDaemon> Run(const AwsCredentials& credentials, std::vector<v1::LeasedJob> leases,
                                    RecordingBackend** backend_out) {
    auto stub = std::make_shared<v1::MockWorkerServiceStub>();
    auto backend = std::make_unique<RecordingBackend>();
    *backend_out = backend.get();
    DaemonOptions options;
    options.worker_id = "w1-id";
    options.name = "w1";
    options.acquire_wait_ms = 10;
    options.retry_backoff_ms = 1;
    options.cache.dir = cache_dir_.path();
    options.s3_credentials = credentials;
    auto daemon = std::make_unique<WorkerDaemon>(options, stub, std::move(backend));
    WorkerDaemon* d = daemon.get();
    size_t next = 0;
    EXPECT_CALL(*stub, RegisterWorker(_, _, _)).WillRepeatedly(::testing::Return(grpc::Status::OK));
    EXPECT_CALL(*stub, Heartbeat(_, _, _)).WillRepeatedly(::testing::Return(grpc::Status::OK));
    EXPECT_CALL(*stub, AcquireJob(_, _, _))
        .WillRepeatedly([&, d](grpc::ClientContext*, const v1::AcquireJobRequest&, v1::AcquireJobResponse* resp) {
          if (next < leases.size()) {
            resp->set_has_job(true);
            *resp->mutable_lease() = leases[next++];
          } else {
            d->Stop();
          }
          return grpc::Status::OK;
        });
    EXPECT_CALL(*stub, GetTask(_, _, _))
        .WillRepeatedly([&](grpc::ClientContext*, const v1::GetTaskRequest&, v1::TaskContent* content) {
          content->set_filename("mc.jsonl");
          content->set_content(task_text_);
          content->set_kind(v1::TASK_KIND_MULTIPLE_CHOICE);
          return grpc::Status::OK;
        });
    EXPECT_CALL(*stub, ReportResultsRaw(_, _)).WillRepeatedly([&](grpc::ClientContext*, v1::ReportResultsResponse*) {
      return ::steadyeval::testing::RecordingReportWriter(&reports_);
    });
    EXPECT_CALL(*stub, FailJob(_, _, _))
        .WillRepeatedly([&](grpc::ClientContext*, const v1::FailJobRequest& req, v1::FailJobResponse*) {
          failed_.push_back(req);
          return grpc::Status::OK;
        });
    EXPECT_OK(daemon->Run());
    ::testing::Mock::VerifyAndClearExpectations(stub.get());
    return daemon;
  }

  std::unique_ptr<::steadyeval::testing::S3rver> server_;
  ::steadyeval::testing::TempDir cache_dir_;
  std::string weights_;
  std::string task_text_;
  std::string task_sha256_;
  std::vector<v1::ReportResultsRequest> reports_;
  std::vector<v1::FailJobRequest> failed_;
};

TEST_F(WorkerDaemonS3rverTest, FetchesTheLeasedCheckpointFromTheBucketAndLoadsItLocally) {
  RecordingBackend* backend = nullptr;
  std::unique_ptr<WorkerDaemon> daemon =
      Run(::steadyeval::testing::S3rver::Credentials(), {Lease(1), Lease(2)}, &backend);
  ASSERT_TRUE(failed_.empty()) << failed_[0].reason();
  EXPECT_EQ(daemon->jobs_done(), 2);
  ASSERT_EQ(backend->loaded.size(), 2u);
  EXPECT_THAT(backend->loaded[0], ::testing::StartsWith(cache_dir_.path() + "/entries/"));
  EXPECT_EQ(backend->loaded[1], backend->loaded[0]);
  EXPECT_TRUE(backend->weights[0] == weights_) << "fetched weights differ from the uploaded ones";
  EXPECT_EQ(backend->nested[0], "{\"a\": 1}");  // one level of subfolders, as discovery lists
  const auto families = daemon->metrics().Collect();
  const double object_bytes = 2.0 + weights_.size() + 8.0;
  EXPECT_EQ(::steadyeval::testing::SeriesValue(families, "steadyeval_worker_cache_fetched_bytes_total",
                                               {{"worker", "w1"}}),
            object_bytes);  // once: the second job was a cache hit
  EXPECT_EQ(::steadyeval::testing::SeriesValue(families, "steadyeval_worker_cache_hits_total", {{"worker", "w1"}}),
            1.0);
}

TEST_F(WorkerDaemonS3rverTest, WrongCredentialsFailTheJobAsRetryableNamingTheStatus) {
  RecordingBackend* backend = nullptr;
  AwsCredentials wrong{"NOT-A-KEY", "wrong", "", "test"};
  std::unique_ptr<WorkerDaemon> daemon = Run(wrong, {Lease(1)}, &backend);
  EXPECT_TRUE(backend->loaded.empty());
  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_EQ(failed_[0].failure(), v1::JOB_FAILURE_RETRYABLE);
  EXPECT_THAT(failed_[0].reason(), ::testing::AllOf(HasSubstr("s3://ckpt/run/step_100"), HasSubstr("403")));
  EXPECT_GE(::steadyeval::testing::SeriesValue(daemon->metrics().Collect(),
                                               "steadyeval_worker_s3_request_errors_total",
                                               {{"worker", "w1"}, {"op", "list"}, {"kind", "access_denied"}})
                .value_or(0),
            1.0);
}

}  // namespace
}  // namespace steadyeval
