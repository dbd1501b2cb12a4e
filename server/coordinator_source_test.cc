// The coordinator with the production discovery (a watcher per run over RunSourceFactory)
// on s3:// runs, their bucket held in memory (testing/fake_bucket_file_system.h): what a
// run may name, what its status shows when its source cannot be listed, what leases
// carry, and the source metrics.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "api/protocol.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/coordinator.h"
#include "server/coordinator_metrics.h"
#include "server/discovery/source_factory.h"
#include "testing/checkpoint_files.h"
#include "testing/coordinator_fixture.h"
#include "testing/fake_bucket_file_system.h"
#include "testing/metric_families.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::FakeBucketFileSystem;
using ::steadyeval::testing::FakeFileSystem;
using ::steadyeval::testing::McTaskFile;
using ::steadyeval::testing::SafetensorsBytes;
using ::steadyeval::testing::SeriesValue;
using ::steadyeval::testing::StatusIs;
using ::steadyeval::testing::kConfigJson;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kEndpoint[] = "http://127.0.0.1:9000";

class CoordinatorSourceTest : public ::testing::Test {
 protected:
  void SetUp() override { Start({{"AWS_ACCESS_KEY_ID", "AKID"}, {"AWS_SECRET_ACCESS_KEY", "s"}}); }
  void TearDown() override {
    coordinator_.reset();
    store_.reset();
  }
  // A coordinator whose process environment is `env`.
  void Start(std::map<std::string, std::string> env) {
    coordinator_.reset();
    store_.reset();
    env_ = std::move(env);
    auto store = Store::Open(dir_ / "db");
    ASSERT_OK(store);
    store_ = *std::move(store);
    RunSourceOptions sources;
    sources.getenv = [this](const char* name) -> const char* {
      auto it = env_.find(name);
      return it == env_.end() ? nullptr : it->second.c_str();
    };
    sources.s3_observer = &metrics_;
    sources.make_s3_file_system =
        [this](const S3ClientOptions& client) -> absl::StatusOr<std::shared_ptr<FileSystem>> {
      clients_.push_back(client);
      return std::shared_ptr<FileSystem>(bucket_);
    };
    CoordinatorOptions options;
    options.s3_endpoints = {kEndpoint};
    options.default_s3_region = "eu-west-1";
    auto c = Coordinator::Create(
        store_.get(), &clock_,
        WatcherDiscoveryFactory(&clock_, std::make_shared<RunSourceFactory>(sources), &metrics_),
        options);
    ASSERT_OK(c);
    coordinator_ = *std::move(c);
  }
  v1::RunConfig S3Config(const std::string& source, const std::string& endpoint = kEndpoint) {
    v1::RunConfig config;
    config.set_name("r");
    config.set_source(source);
    config.set_s3_endpoint(endpoint);
    config.set_settle_seconds(1);
    return config;
  }
  void Upload(const std::string& uri, std::string bytes) { bucket_->WriteFile(uri, bytes); }

  testing::TempDir dir_;
  FakeClock clock_;
  SourceMetrics metrics_;
  std::map<std::string, std::string> env_;
  std::shared_ptr<FakeBucketFileSystem> bucket_ = std::make_shared<FakeBucketFileSystem>();
  std::vector<S3ClientOptions> clients_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Coordinator> coordinator_;
};

TEST_F(CoordinatorSourceTest, CreateRunChecksEndpointRegionAndCredentials) {
  // An endpoint the coordinator was not started with.
  EXPECT_THAT(coordinator_->CreateRun(S3Config("s3://ckpt/run", "http://10.0.0.9:9000"),
                                      {McTaskFile()}),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       AllOf(HasSubstr("http://10.0.0.9:9000"), HasSubstr("--s3_endpoints"))));
  // s3 settings on a folder.
  v1::RunConfig folder = S3Config(dir_.path());
  EXPECT_THAT(coordinator_->CreateRun(folder, {McTaskFile()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("only to s3://")));
  // A prefix with no objects yet is accepted; stored normalised with the default region.
  ASSERT_OK_AND_ASSIGN(v1::Run run,
                       coordinator_->CreateRun(S3Config("s3://ckpt/run/", "HTTP://127.0.0.1:9000/"),
                                               {McTaskFile()}));
  EXPECT_EQ(run.config().source(), "s3://ckpt/run");
  EXPECT_EQ(run.config().s3_endpoint(), kEndpoint);
  EXPECT_EQ(run.config().s3_region(), "eu-west-1");
  ASSERT_EQ(clients_.size(), 1u);
  EXPECT_EQ(clients_[0].endpoint, kEndpoint);
  EXPECT_EQ(clients_[0].region, "eu-west-1");

  // Without credentials an s3 run is refused, naming where they come from.
  Start({});
  v1::RunConfig other = S3Config("s3://ckpt/other");
  other.set_name("r2");
  EXPECT_THAT(coordinator_->CreateRun(other, {McTaskFile()}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("AWS_ACCESS_KEY_ID"), HasSubstr("AWS_SECRET_ACCESS_KEY"),
                             HasSubstr("AWS_SHARED_CREDENTIALS_FILE"))));
  // The stored run is not polled, and says why.
  EXPECT_THAT(coordinator_->PollRunsOnce(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("AWS_ACCESS_KEY_ID")));
  ASSERT_OK_AND_ASSIGN(v1::GetRunResponse shown, coordinator_->GetRun("r"));
  EXPECT_THAT(shown.source_error(), HasSubstr("AWS_ACCESS_KEY_ID"));
}

TEST_F(CoordinatorSourceTest, AListingErrorIsShownLoggedOnceAndClearsWhenTheBucketIsBack) {
  ASSERT_OK(coordinator_->CreateRun(S3Config("s3://ckpt/run"), {McTaskFile()}));
  const absl::Status denied = absl::PermissionDeniedError(
      "S3 ListObjectsV2 s3://ckpt/run/: HTTP 403 InvalidAccessKeyId (The AWS Access Key Id you "
      "provided does not exist in our records) at http://127.0.0.1:9000");
  bucket_->files().InjectError(FakeFileSystem::Op::kList, "/ckpt/run", denied);
  const int64_t first_ms = clock_.UnixMillis();
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(coordinator_->PollRunsOnce(),
                StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("HTTP 403")));
    clock_.AdvanceSeconds(10);
  }
  ASSERT_OK_AND_ASSIGN(v1::GetRunResponse shown, coordinator_->GetRun("r"));
  EXPECT_THAT(shown.source_error(), AllOf(HasSubstr("s3://ckpt/run"), HasSubstr("HTTP 403")));
  EXPECT_EQ(shown.source_error_since_unix_ms(), first_ms);  // the first poll that saw it
  ASSERT_OK_AND_ASSIGN(v1::ListPendingCheckpointsResponse pending,
                       coordinator_->ListPendingCheckpoints("r"));
  EXPECT_THAT(pending.source_error(), HasSubstr("HTTP 403"));

  // The bucket is back: the last shard is uploaded after the others.
  bucket_->files().ClearErrors();
  const std::string ckpt = "s3://ckpt/run/step_000100";
  Upload(ckpt + "/config.json", kConfigJson);
  Upload(ckpt + "/model-00001-of-00002.safetensors", SafetensorsBytes());
  Upload(ckpt + "/model.safetensors.index.json",
         R"({"weight_map": {"a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}})");
  ASSERT_OK(coordinator_->PollRunsOnce());
  clock_.AdvanceSeconds(10);
  ASSERT_OK(coordinator_->PollRunsOnce());
  EXPECT_TRUE(coordinator_->scheduler()->Checkpoints("r").empty());  // a shard is missing
  Upload(ckpt + "/model-00002-of-00002.safetensors", SafetensorsBytes());
  ASSERT_OK(coordinator_->PollRunsOnce());
  EXPECT_TRUE(coordinator_->scheduler()->Checkpoints("r").empty());  // settling
  clock_.AdvanceSeconds(10);
  ASSERT_OK(coordinator_->PollRunsOnce());
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(coordinator_->scheduler()->Checkpoints("r").size(), 1u);
  EXPECT_EQ(coordinator_->scheduler()->Checkpoints("r")[0].path(), ckpt);
  ASSERT_OK_AND_ASSIGN(shown, coordinator_->GetRun("r"));
  EXPECT_EQ(shown.source_error(), "");
  EXPECT_EQ(shown.source_error_since_unix_ms(), 0);

  // Logged once when it started and once when it cleared, not once per poll.
  size_t errors = 0;
  for (size_t pos = log.find("HTTP 403"); pos != std::string::npos;
       pos = log.find("HTTP 403", pos + 1)) {
    ++errors;
  }
  EXPECT_EQ(errors, 1u) << log;
  EXPECT_THAT(log, HasSubstr("run r: polls work again"));
  EXPECT_THAT(log, ::testing::Not(HasSubstr("AKID")));
  EXPECT_THAT(bucket_->NonUriPaths(), IsEmpty());

  // One listing per poll in the histogram, by scheme.
  const auto families = metrics_.registry()->Collect();
  EXPECT_EQ(SeriesValue(families, "steadyeval_source_list_seconds_count", {{"scheme", "s3"}}),
            7.0);
}

TEST_F(CoordinatorSourceTest, LeasesCarryTheBucketItsEndpointRegionAndConverter) {
  v1::RunConfig config = S3Config("s3://ckpt/run/");
  config.set_convert("dcp");
  ASSERT_OK(coordinator_->CreateRun(config, {McTaskFile()}));
  // A run with a converter: a PyTorch DCP checkpoint, complete once its .metadata is there.
  const std::string ckpt = "s3://ckpt/run/step_000100";
  Upload(ckpt + "/__0_0.distcp", "tensor bytes");
  Upload(ckpt + "/.metadata", "pickled metadata");
  ASSERT_OK(coordinator_->PollRunsOnce());
  clock_.AdvanceSeconds(2);
  ASSERT_OK(coordinator_->PollRunsOnce());
  v1::RegisterWorkerRequest reg;
  reg.set_worker_id("w1");
  reg.set_protocol_version(kProtocolVersion);
  ASSERT_OK(coordinator_->RegisterWorker(reg));
  v1::AcquireJobRequest acquire;
  acquire.set_worker_id("w1");
  ASSERT_OK_AND_ASSIGN(v1::AcquireJobResponse response, coordinator_->AcquireJob(acquire, nullptr));
  ASSERT_TRUE(response.has_job());
  const v1::LeasedJob& lease = response.lease();
  EXPECT_THAT(lease.checkpoint_paths(), ::testing::ElementsAre(ckpt));
  EXPECT_EQ(lease.source_root(), "s3://ckpt/run");  // not folded to "s3:/ckpt/run"
  EXPECT_EQ(lease.s3_endpoint(), kEndpoint);
  EXPECT_EQ(lease.s3_region(), "eu-west-1");
  EXPECT_EQ(lease.convert(), "dcp");
}

TEST(SourceMetricsTest, CountsRequestsErrorsByKindAndListingsByScheme) {
  SourceMetrics metrics;
  metrics.OnAttempt("list", 0.1, S3ErrorKind::kNone);
  metrics.OnAttempt("list", 0.2, S3ErrorKind::kAccessDenied);
  metrics.OnAttempt("get", 0.3, S3ErrorKind::kNone);
  metrics.OnSourceList("s3", 0.5, true);
  metrics.OnSourceList("file", 0.01, false);
  const auto families = metrics.registry()->Collect();
  EXPECT_EQ(SeriesValue(families, "steadyeval_s3_requests_total", {{"op", "list"}}), 2.0);
  EXPECT_EQ(SeriesValue(families, "steadyeval_s3_requests_total", {{"op", "get"}}), 1.0);
  EXPECT_EQ(SeriesValue(families, "steadyeval_s3_request_errors_total",
                        {{"op", "list"}, {"kind", S3ErrorKindName(S3ErrorKind::kAccessDenied)}}),
            1.0);
  EXPECT_EQ(SeriesValue(families, "steadyeval_s3_request_errors_total",
                        {{"op", "get"}, {"kind", S3ErrorKindName(S3ErrorKind::kNone)}}),
            std::nullopt);
  EXPECT_EQ(SeriesValue(families, "steadyeval_source_list_seconds_count", {{"scheme", "s3"}}), 1.0);
  EXPECT_EQ(SeriesValue(families, "steadyeval_source_list_seconds_sum", {{"scheme", "s3"}}), 0.5);
  EXPECT_EQ(SeriesValue(families, "steadyeval_source_list_seconds_count", {{"scheme", "file"}}),
            1.0);
}

}  // namespace
}  // namespace steadyeval
