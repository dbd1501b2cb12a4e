#include "worker/daemon.h"

#include <grpcpp/test/mock_stream.h>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "steadyeval/v1/worker_service_mock.grpc.pb.h"
#include "worker/test_daemon.h"

namespace steadyeval {
namespace {

TEST(PathMapTest, ParsesFromEqualsTo) {
  auto m = ParsePathMapping("/mnt/ckpt=/data/ckpt");
  ASSERT_OK(m);
  EXPECT_EQ(m->from, "/mnt/ckpt");
  EXPECT_EQ(m->to, "/data/ckpt");
  EXPECT_THAT(ParsePathMapping("/mnt/ckpt"), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("FROM=TO")));
  EXPECT_THAT(ParsePathMapping("=/x"), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(PathMapTest, RewritesOnlyAtComponentBoundaries) {
  std::vector<PathMapping> maps = {{"/mnt/ckpt", "/data/ckpt"}, {"/srv/", "/local/"}};
  EXPECT_EQ(MapPath(maps, "/mnt/ckpt/run1/step_000100"), "/data/ckpt/run1/step_000100");
  EXPECT_EQ(MapPath(maps, "/mnt/ckpt"), "/data/ckpt");
  EXPECT_EQ(MapPath(maps, "/mnt/ckpt2/run1"), "/mnt/ckpt2/run1");
  EXPECT_EQ(MapPath(maps, "/srv/a"), "/local/a");
  EXPECT_EQ(MapPath(maps, "/other/a"), "/other/a");
}

TEST(JobKindTest, RawAndAvgWindows) {
  EXPECT_EQ(WindowOfJobKind("raw").value_or(99), 0u);
  EXPECT_EQ(WindowOfJobKind("avg@1").value_or(99), 1u);
  EXPECT_EQ(WindowOfJobKind("avg@16").value_or(99), 16u);
  for (const char* bad : {"avg@0", "avg@", "avg@x", "ens@4", "AVG@4", "avg@-2"}) {
    EXPECT_THAT(WindowOfJobKind(bad), StatusIs(absl::StatusCode::kUnimplemented, ::testing::HasSubstr("kind")))
        << bad;
  }
}

// A backend that records what the daemon asks of it.
class FakeBackend : public EvalBackend {
 public:
  absl::StatusOr<LoadStats> Load(const std::string& dir, const std::string& tokenizer) override {
    loaded.push_back("raw " + dir);
    return LoadStats{};
  }
  absl::StatusOr<LoadStats> LoadAverage(const std::string& run, uint32_t window,
                                        const std::vector<std::string>& dirs,
                                        const std::vector<uint64_t>& steps,
                                        const std::string& tokenizer) override {
    loaded.push_back("avg " + run + " " + std::to_string(window) + " " + dirs.front() + ".." + dirs.back());
    held.push_back({run, window, steps});
    return LoadStats{};
  }
  std::vector<WindowSumInfo> WindowSums() const override { return held; }
  absl::StatusOr<ParameterDriftResult> ComputeDrift(const std::string& from,
                                                    const std::string& to) override {
    if (from == "/ckpt/gone") return absl::NotFoundError("gone");
    return ParameterDriftResult{2.5, 0.125};
  }
  absl::StatusOr<std::vector<ExampleResult>> Evaluate(const Task& task, const EvalSettings& s,
                                                      const ProgressFn&) override {
    settings.push_back(s);
    task_sizes.push_back(task.size());
    std::vector<ExampleResult> out;
    for (uint32_t i = 0; i < task.size(); ++i) out.push_back({i, "0", {-1.0, -2.0}});
    return out;
  }
  std::string BosDescription() const override { return "bos 7"; }
  uint64_t tokens_processed() const override { return 0; }

  std::vector<std::string> loaded;
  std::vector<WindowSumInfo> held;
  std::vector<EvalSettings> settings;
  std::vector<size_t> task_sizes;
};

TEST(WorkerDaemonTest, RunsAvgJobsReportsDriftsAndAdvertisesWindowSums) {
  namespace v1 = ::steadyeval::v1;
  const std::string task_text = R"({"id": "a", "query": "q", "choices": ["x", "y"], "gold": 0})"
                                "\n"
                                R"({"id": "b", "query": "r", "choices": ["x", "y"], "gold": 1})"
                                "\n";
  auto task = ParseTask("mc.jsonl", task_text);
  ASSERT_OK(task);
  auto stub = std::make_shared<v1::MockWorkerServiceStub>();
  auto backend = std::make_unique<FakeBackend>();
  FakeBackend* fake = backend.get();
  DaemonOptions options;
  options.worker_id = "w1";
  options.acquire_wait_ms = 10;
  options.path_map = {{"/mnt", "/ckpt"}};
  WorkerDaemon daemon(options, stub, std::move(backend));

  v1::LeasedJob avg;
  avg.mutable_job()->set_id(1);
  avg.mutable_job()->set_run("r");
  avg.mutable_job()->set_kind("avg@3");
  avg.mutable_job()->set_epoch(1);
  for (int step : {100, 200, 300}) {
    avg.mutable_job()->add_steps(step);
    avg.add_checkpoint_paths("/mnt/step_" + std::to_string(step));
  }
  avg.set_window(3);
  avg.set_lease_ttl_ms(600000);
  avg.set_few_shots(2);
  avg.set_prompt_language("en");
  avg.set_bos("add");
  avg.set_max_new_tokens_delta(5);
  v1::TaskContent* header = avg.add_task_headers();
  header->mutable_ref()->set_name("mc");
  header->mutable_ref()->set_sha256(task->sha256);
  header->set_filename("mc.jsonl");
  header->set_kind(v1::TASK_KIND_MULTIPLE_CHOICE);
  v1::LeasedJob raw = avg;
  raw.mutable_job()->set_id(2);
  raw.mutable_job()->set_kind("raw");
  raw.mutable_job()->clear_steps();
  raw.mutable_job()->add_steps(400);
  raw.clear_checkpoint_paths();
  raw.add_checkpoint_paths("/mnt/step_400");
  raw.set_window(0);
  raw.set_prompt_language("");  // an older coordinator: defaults
  raw.set_bos("");
  raw.mutable_task_headers(0)->mutable_ref()->set_max_samples(1);
  v1::DriftTarget* target = raw.add_drift_targets();
  target->set_from_step(300);
  target->set_from_path("/mnt/step_300");
  target->set_to_step(400);
  target->set_to_path("/mnt/step_400");
  target = raw.add_drift_targets();  // its folder is gone: skipped, the job still succeeds
  target->set_from_step(50);
  target->set_from_path("/mnt/gone");
  target->set_to_step(100);
  target->set_to_path("/mnt/step_100");

  using ::testing::_;
  EXPECT_CALL(*stub, RegisterWorker(_, _, _)).WillRepeatedly(::testing::Return(grpc::Status::OK));
  std::vector<v1::AcquireJobRequest> acquires;
  EXPECT_CALL(*stub, AcquireJob(_, _, _))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::AcquireJobRequest& req, v1::AcquireJobResponse* resp) {
        acquires.push_back(req);
        if (acquires.size() == 1) {
          resp->set_has_job(true);
          *resp->mutable_lease() = avg;
        } else if (acquires.size() == 2) {
          resp->set_has_job(true);
          *resp->mutable_lease() = raw;
        } else {
          daemon.Stop();
        }
        return grpc::Status::OK;
      });
  EXPECT_CALL(*stub, GetTask(_, _, _))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::GetTaskRequest&, v1::TaskContent* content) {
        content->set_filename("mc.jsonl");
        content->set_content(task_text);
        content->set_kind(v1::TASK_KIND_MULTIPLE_CHOICE);
        return grpc::Status::OK;
      });
  std::vector<v1::ReportResultsRequest> reports;
  EXPECT_CALL(*stub, ReportResultsRaw(_, _))
      .Times(2)
      .WillRepeatedly([&](grpc::ClientContext*, v1::ReportResultsResponse*) {
        return testing_daemon::RecordingReportWriter(&reports);
      });

  ASSERT_OK(daemon.Run());
  EXPECT_EQ(daemon.jobs_done(), 2);
  EXPECT_THAT(fake->loaded, ::testing::ElementsAre("avg r 3 /ckpt/step_100../ckpt/step_300",
                                                   "raw /ckpt/step_400"));
  // The run's evaluation settings reach the backend; max_samples shapes the task.
  ASSERT_EQ(fake->settings.size(), 2u);
  EXPECT_EQ(fake->settings[0].prompt.few_shots, 2);
  EXPECT_EQ(fake->settings[0].prompt.language, PromptLanguage::kEnglish);
  EXPECT_EQ(fake->settings[0].bos, BosMode::kAdd);
  EXPECT_EQ(fake->settings[0].max_new_tokens_delta, 5);
  EXPECT_EQ(fake->settings[0].batch_size, options.batch_size);
  EXPECT_EQ(fake->settings[1].prompt.language, PromptLanguage::kJapanese);
  EXPECT_EQ(fake->settings[1].bos, BosMode::kAuto);
  EXPECT_THAT(fake->task_sizes, ::testing::ElementsAre(2u, 1u));
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].bos(), "bos 7");  // recorded on the job by the coordinator
  EXPECT_EQ(reports[0].step(), 300u);  // the window-end step
  EXPECT_EQ(reports[0].drifts_size(), 0);
  EXPECT_EQ(reports[1].step(), 400u);
  ASSERT_EQ(reports[1].drifts_size(), 1);
  EXPECT_EQ(reports[1].drifts(0).from_step(), 300u);
  EXPECT_EQ(reports[1].drifts(0).to_step(), 400u);
  EXPECT_EQ(reports[1].drifts(0).l2(), 2.5);
  EXPECT_EQ(reports[1].drifts(0).relative(), 0.125);
  // The window sum held after the avg job is advertised on the next AcquireJob.
  ASSERT_GE(acquires.size(), 2u);
  EXPECT_EQ(acquires[0].window_sums_size(), 0);
  ASSERT_EQ(acquires[1].window_sums_size(), 1);
  EXPECT_EQ(acquires[1].window_sums(0).run(), "r");
  EXPECT_EQ(acquires[1].window_sums(0).window(), 3u);
  EXPECT_THAT(acquires[1].window_sums(0).steps(), ::testing::ElementsAre(100u, 200u, 300u));
}

TEST(WorkerDaemonTest, SettingsForLeaseRejectsUnknownValues) {
  steadyeval::v1::LeasedJob lease;
  lease.set_prompt_language("fr");
  EXPECT_THAT(SettingsForLease(lease, 8),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("'fr'")));
  lease.set_prompt_language("ja");
  lease.set_bos("always");
  EXPECT_THAT(SettingsForLease(lease, 8),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("'always'")));
}

}  // namespace
}  // namespace steadyeval
