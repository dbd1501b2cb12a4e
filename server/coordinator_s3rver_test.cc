// The coordinator watching a real S3-compatible server (s3rver on 127.0.0.1, started by
// the test; testing/s3rver.h): a checkpoint uploaded one object at a time is admitted once,
// only after its last shard; wrong credentials and an endpoint that is down show in the
// run's status (naming the bucket and the HTTP status), and polling recovers.
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/coordinator.h"
#include "server/coordinator_metrics.h"
#include "server/discovery/source_factory.h"
#include "testing/checkpoint_files.h"
#include "testing/coordinator_fixture.h"
#include "testing/metric_families.h"
#include "testing/s3rver.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::McTaskFile;
using ::steadyeval::testing::S3rver;
using ::steadyeval::testing::SafetensorsBytes;
using ::steadyeval::testing::SeriesValue;
using ::steadyeval::testing::kConfigJson;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kShard1[] = "model-00001-of-00002.safetensors";
constexpr char kShard2[] = "model-00002-of-00002.safetensors";

// A coordinator (own store, FakeClock for the watchers) whose environment holds `key_id`
// and `secret`, reading s3rver's endpoint (allowed by --s3_endpoints).
class S3Coordinator {
 public:
  S3Coordinator(const S3rver& s3, const std::string& key_id, const std::string& secret)
      : env_{{"AWS_ACCESS_KEY_ID", key_id}, {"AWS_SECRET_ACCESS_KEY", secret}} {
    auto store = Store::Open(dir_ / "db");
    EXPECT_OK(store);
    store_ = *std::move(store);
    RunSourceOptions sources;
    sources.getenv = [this](const char* name) -> const char* {
      auto it = env_.find(name);
      return it == env_.end() ? nullptr : it->second.c_str();
    };
    sources.clock = Clock::Real();  // the client's backoff waits; the watchers use clock_
    sources.s3_observer = &metrics_;
    sources.client_template = s3.ClientOptions();  // short timeouts and backoff
    CoordinatorOptions options;
    options.s3_endpoints = {s3.endpoint()};
    auto c = Coordinator::Create(
        store_.get(), &clock_,
        WatcherDiscoveryFactory(&clock_, std::make_shared<RunSourceFactory>(sources), &metrics_),
        options);
    EXPECT_OK(c);
    coordinator_ = *std::move(c);
  }
  ~S3Coordinator() {
    coordinator_.reset();
    store_.reset();
  }

  Coordinator& operator*() { return *coordinator_; }
  Coordinator* operator->() { return coordinator_.get(); }
  FakeClock& clock() { return clock_; }
  SourceMetrics& metrics() { return metrics_; }

 private:
  testing::TempDir dir_;
  std::map<std::string, std::string> env_;
  FakeClock clock_;
  SourceMetrics metrics_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Coordinator> coordinator_;
};

v1::RunConfig S3Run(const std::string& name, const std::string& source,
                    const std::string& endpoint) {
  v1::RunConfig config;
  config.set_name(name);
  config.set_source(source);
  config.set_s3_endpoint(endpoint);
  config.set_settle_seconds(1);
  return config;
}

class CoordinatorS3rverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s3 = S3rver::Start();
    ASSERT_OK(s3);
    s3_ = *std::move(s3);
    client_ = s3_->Client();
    ASSERT_OK(client_->CreateBucket("ckpt"));
  }
  void Put(const std::string& key, const std::string& bytes) {
    ASSERT_OK(client_->Put("ckpt", key, bytes));
  }

  std::unique_ptr<S3rver> s3_;
  std::unique_ptr<S3Client> client_;
};

TEST_F(CoordinatorS3rverTest, ACheckpointIsAdmittedOnceAndOnlyAfterItsLastShard) {
  S3Coordinator c(*s3_, "S3RVER", "S3RVER");
  // A prefix with no objects yet.
  ASSERT_OK(c->CreateRun(S3Run("r", "s3://ckpt/run42/", s3_->endpoint()), {McTaskFile()}));
  c->PollRunsOnce().IgnoreError();  // nothing there yet: nothing to admit
  EXPECT_TRUE(c->scheduler()->Checkpoints("r").empty());

  // One object at a time; the last shard last.
  const std::string ckpt = "run42/step_000100/";
  Put(ckpt + "config.json", kConfigJson);
  Put(ckpt + "model.safetensors.index.json",
      absl::StrCat(R"({"weight_map": {"a": ")", kShard1, R"(", "b": ")", kShard2, R"("}})"));
  Put(ckpt + kShard1, SafetensorsBytes());
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK(c->PollRunsOnce());
    c.clock().AdvanceSeconds(5);
  }
  EXPECT_TRUE(c->scheduler()->Checkpoints("r").empty());
  ASSERT_OK_AND_ASSIGN(v1::ListPendingCheckpointsResponse pending, c->ListPendingCheckpoints("r"));
  ASSERT_EQ(pending.pending_size(), 1);
  EXPECT_THAT(pending.pending(0).reason(), HasSubstr(kShard2));
  EXPECT_EQ(pending.pending(0).path(), "s3://ckpt/run42/step_000100");

  Put(ckpt + kShard2, SafetensorsBytes());
  ASSERT_OK(c->PollRunsOnce());  // complete: settling
  EXPECT_TRUE(c->scheduler()->Checkpoints("r").empty());
  c.clock().AdvanceSeconds(2);
  ASSERT_OK(c->PollRunsOnce());
  ASSERT_EQ(c->scheduler()->Checkpoints("r").size(), 1u);
  EXPECT_EQ(c->scheduler()->Checkpoints("r")[0].path(), "s3://ckpt/run42/step_000100");
  for (int i = 0; i < 2; ++i) {
    c.clock().AdvanceSeconds(5);
    ASSERT_OK(c->PollRunsOnce());
  }
  EXPECT_EQ(c->scheduler()->Checkpoints("r").size(), 1u);  // once
  EXPECT_EQ(c->scheduler()->Jobs().size(), 1u);

  const auto families = c.metrics().registry()->Collect();
  EXPECT_GT(SeriesValue(families, "steadyeval_s3_requests_total", {{"op", "list"}}).value_or(0), 0);
  EXPECT_EQ(SeriesValue(families, "steadyeval_source_list_seconds_count", {{"scheme", "s3"}}),
            8.0);
}

TEST_F(CoordinatorS3rverTest, WrongCredentialsShowTheBucketAndTheStatusInTheRun) {
  S3Coordinator c(*s3_, "NOT-A-KEY", "wrong");
  ASSERT_OK(c->CreateRun(S3Run("r", "s3://ckpt/run42", s3_->endpoint()), {McTaskFile()}));
  EXPECT_THAT(c->PollRunsOnce(), ::steadyeval::testing::StatusIs(
                                     absl::StatusCode::kPermissionDenied, HasSubstr("403")));
  ASSERT_OK_AND_ASSIGN(v1::GetRunResponse shown, c->GetRun("r"));
  EXPECT_THAT(shown.source_error(), AllOf(HasSubstr("ckpt"), HasSubstr("403")));
  EXPECT_THAT(shown.source_error(), ::testing::Not(HasSubstr("wrong")));  // no secret shown
  const auto families = c.metrics().registry()->Collect();
  EXPECT_GT(SeriesValue(families, "steadyeval_s3_request_errors_total",
                        {{"op", "list"}, {"kind", "access_denied"}})
                .value_or(0),
            0);
}

TEST_F(CoordinatorS3rverTest, AnEndpointThatIsDownIsReportedAndPollingRecovers) {
  S3Coordinator c(*s3_, "S3RVER", "S3RVER");
  ASSERT_OK(c->CreateRun(S3Run("r", "s3://ckpt/run42", s3_->endpoint()), {McTaskFile()}));
  Put("run42/step_000100/config.json", kConfigJson);
  Put("run42/step_000100/model.safetensors", SafetensorsBytes());
  ASSERT_OK(c->PollRunsOnce());

  s3_->Stop();
  EXPECT_THAT(c->PollRunsOnce(), ::steadyeval::testing::StatusIs(
                                     absl::StatusCode::kUnavailable, HasSubstr("ckpt")));
  ASSERT_OK_AND_ASSIGN(v1::GetRunResponse shown, c->GetRun("r"));
  EXPECT_THAT(shown.source_error(), AllOf(HasSubstr("s3://ckpt/run42"), HasSubstr(s3_->endpoint())));
  EXPECT_TRUE(c->scheduler()->Checkpoints("r").empty());

  ASSERT_OK(s3_->Restart());
  c.clock().AdvanceSeconds(2);
  ASSERT_OK(c->PollRunsOnce());
  ASSERT_OK_AND_ASSIGN(shown, c->GetRun("r"));
  EXPECT_EQ(shown.source_error(), "");
  c.clock().AdvanceSeconds(2);
  ASSERT_OK(c->PollRunsOnce());
  ASSERT_EQ(c->scheduler()->Checkpoints("r").size(), 1u);
  EXPECT_THAT(c->scheduler()->Checkpoints("r")[0].path(), HasSubstr("s3://ckpt/run42/"));
}

}  // namespace
}  // namespace steadyeval
