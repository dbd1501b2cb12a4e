#include "server/coordinator.h"

#include <filesystem>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "server/checkpoint_test_util.h"
#include "server/coordinator_test_util.h"

namespace steadyeval {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kTtlMs = 10'000;

class CoordinatorTest : public CoordinatorFixture {
 protected:
  void SetUp() override {
    options_.scheduler.lease_ttl_ms = kTtlMs;
    options_.scheduler.backoff_initial_ms = 1000;
    StartFresh("coordinator_test_");
  }
  v1::RunConfig Config(const std::string& name) {
    v1::RunConfig config;
    config.set_name(name);
    config.set_source((root_ / "ckpt").string());
    config.set_few_shots(1);
    return config;
  }
  void CreateRun(const std::string& name) {
    ASSERT_OK(coordinator_->CreateRun(Config(name), {McTaskFile(), QaTaskFile()}));
  }
  void Register(const std::string& worker) {
    v1::RegisterWorkerRequest r;
    r.set_worker_id(worker);
    r.set_device("cpu");
    ASSERT_OK(coordinator_->RegisterWorker(r));
  }
  absl::StatusOr<v1::AcquireJobResponse> Acquire(const std::string& worker) {
    v1::AcquireJobRequest r;
    r.set_worker_id(worker);
    r.set_wait_ms(0);
    return coordinator_->AcquireJob(r, nullptr);
  }
  // A full report for `lease`: mc outputs in two chunks, qa in one.
  std::vector<v1::ReportResultsRequest> Report(const v1::LeasedJob& lease,
                                               const std::string& worker) {
    std::vector<v1::ReportResultsRequest> chunks;
    auto chunk = [&](int task, std::vector<std::pair<uint32_t, std::string>> outs, bool done) {
      v1::ReportResultsRequest r;
      r.set_worker_id(worker);
      r.set_job_id(lease.job().id());
      r.set_epoch(lease.job().epoch());
      r.set_step(lease.job().steps(0));
      *r.mutable_task() = lease.task_headers(task).ref();
      for (auto& [i, text] : outs) {
        v1::ExampleOutput* o = r.add_outputs();
        o->set_index(i);
        o->set_output(text);
        if (task == 0) {
          o->add_option_logliks(-1.5);
          o->add_option_logliks(-0.5);
        }
      }
      r.set_task_complete(done);
      chunks.push_back(r);
    };
    chunk(0, {{0, "1"}, {1, "0"}}, false);
    chunk(1, {{1, "5\n\nmore"}, {0, " 2 "}}, true);
    chunk(0, {{2, "0"}}, true);
    return chunks;
  }
  v1::LeasedJob AdmitAndLease(const std::string& run, uint64_t step, const std::string& worker) {
    checkpoints_.Add(run, step);
    EXPECT_OK(coordinator_->PollRunsOnce());
    auto acquired = Acquire(worker);
    EXPECT_OK(acquired);
    EXPECT_TRUE(acquired.ok() && acquired->has_job());
    return acquired.ok() ? acquired->lease() : v1::LeasedJob();
  }
  std::string MetricsText() {
    return prometheus::TextSerializer().Serialize(coordinator_->metrics()->registry()->Collect());
  }
  int PredictionCount(const std::string& run, uint64_t step) {
    int n = 0;
    for (const char* task : {"mc", "qa"}) {
      EXPECT_OK(store_->ScanPredictions(run, task, "raw", step, [&](uint32_t, const v1::Prediction&) {
        ++n;
        return true;
      }));
    }
    return n;
  }
};

TEST_F(CoordinatorTest, LeasedJobCarriesPathsTaskHeadersAndRunSettings) {
  CreateRun("r");
  Register("w1");
  v1::LeasedJob lease = AdmitAndLease("r", 100, "w1");
  EXPECT_EQ(lease.job().kind(), "raw");
  EXPECT_THAT(lease.checkpoint_paths(), ::testing::ElementsAre("/ckpt/r/step_100"));
  ASSERT_EQ(lease.task_headers_size(), 2);
  EXPECT_EQ(lease.task_headers(0).ref().name(), "mc");
  EXPECT_EQ(lease.task_headers(0).kind(), v1::TASK_KIND_MULTIPLE_CHOICE);
  EXPECT_EQ(lease.task_headers(0).filename(), "mc.jsonl");
  EXPECT_TRUE(lease.task_headers(0).content().empty());
  EXPECT_EQ(lease.task_headers(1).kind(), v1::TASK_KIND_GENERATION);
  EXPECT_EQ(lease.few_shots(), 1);
  EXPECT_EQ(lease.lease_ttl_ms(), kTtlMs);
  auto task = coordinator_->GetTask(lease.task_headers(0).ref().sha256());
  ASSERT_OK(task);
  EXPECT_EQ(task->content(), McTaskFile().content());
  EXPECT_THAT(MetricsText(), HasSubstr("steadyeval_checkpoints_discovered_total{run=\"r\"} 1"));
}

TEST_F(CoordinatorTest, ReportScoresAndCommitsEverythingThenReplays) {
  CreateRun("r");
  Register("w1");
  v1::LeasedJob lease = AdmitAndLease("r", 100, "w1");
  auto chunks = Report(lease, "w1");
  ASSERT_OK(coordinator_->CheckReportStart(chunks[0]));
  auto response = coordinator_->ReportResults(chunks);
  ASSERT_OK(response);
  EXPECT_EQ(response->predictions_written(), 5u);
  EXPECT_FALSE(response->replay());

  std::map<std::string, double> scores;
  v1::GetScoresRequest request;
  request.set_run("r");
  ASSERT_OK(coordinator_->GetScores(request, [&](const v1::Score& s) {
    EXPECT_EQ(s.variant(), "raw");
    EXPECT_EQ(s.step(), 100u);
    scores[s.task()] = s.score();
    return true;
  }));
  EXPECT_DOUBLE_EQ(scores["mc"], 2.0 / 3);  // outputs 1, 0, 0 against golds 1, 0, 1
  EXPECT_DOUBLE_EQ(scores["qa"], 0.5);      // "2" right, "5" wrong
  auto p = store_->GetPrediction("r", "qa", "raw", 100, 1);
  ASSERT_OK(p);
  EXPECT_EQ(p->output(), "5\n\nmore");
  EXPECT_EQ(p->normalized(), "5");
  EXPECT_EQ(store_->GetPrediction("r", "mc", "raw", 100, 0)->option_logliks_size(), 2);
  EXPECT_EQ(store_->GetJob(lease.job().id())->state(), v1::JOB_DONE);
  EXPECT_EQ(store_->GetCheckpoint("r", 100)->state(), v1::CHECKPOINT_EVALUATED);

  auto replay = coordinator_->ReportResults(chunks);
  ASSERT_OK(replay);
  EXPECT_TRUE(replay->replay());
  EXPECT_EQ(replay->predictions_written(), 0u);

  auto run = coordinator_->GetRun("r");
  ASSERT_OK(run);
  EXPECT_EQ(run->checkpoints(), 1u);
  EXPECT_EQ(run->evaluated(), 1u);
  EXPECT_EQ(run->newest_evaluated_step(), 100u);
  EXPECT_EQ(run->jobs_by_state().at("done"), 1u);

  std::string metrics = MetricsText();
  EXPECT_THAT(metrics, HasSubstr("steadyeval_predictions_ingested_total 5"));
  EXPECT_THAT(metrics, HasSubstr("steadyeval_score{run=\"r\",task=\"qa\",variant=\"raw\"} 0.5"));
  EXPECT_THAT(metrics, HasSubstr("steadyeval_jobs{kind=\"raw\",run=\"r\",state=\"done\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("steadyeval_eval_lag_steps{run=\"r\"} 0"));
  EXPECT_THAT(metrics, HasSubstr("steadyeval_job_duration_seconds_count{kind=\"raw\"} 1"));
}

TEST_F(CoordinatorTest, BadReportsAreInvalidArgumentAndWriteNothing) {
  CreateRun("r");
  Register("w1");
  v1::LeasedJob lease = AdmitAndLease("r", 100, "w1");
  const auto good = Report(lease, "w1");

  auto missing_example = good;
  missing_example[2].clear_outputs();  // mc has 2 of 3 outputs
  EXPECT_THAT(coordinator_->ReportResults(missing_example),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("task mc has 3 examples but the report holds 2")));

  auto missing_task = good;
  missing_task.erase(missing_task.begin() + 1);  // no qa
  EXPECT_THAT(coordinator_->ReportResults(missing_task),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("task qa has no outputs")));

  auto incomplete = good;
  incomplete[2].set_task_complete(false);
  EXPECT_THAT(coordinator_->ReportResults(incomplete),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not marked task_complete")));

  auto duplicate = good;
  duplicate[2].mutable_outputs(0)->set_index(1);
  EXPECT_THAT(coordinator_->ReportResults(duplicate),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("example 1 reported twice")));

  auto out_of_range = good;
  out_of_range[2].mutable_outputs(0)->set_index(7);
  EXPECT_THAT(coordinator_->ReportResults(out_of_range),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("3 examples")));

  auto bad_option = good;
  bad_option[2].mutable_outputs(0)->set_output("9");
  EXPECT_THAT(coordinator_->ReportResults(bad_option),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an option index")));

  auto wrong_step = good;
  wrong_step[0].set_step(999);
  EXPECT_THAT(coordinator_->ReportResults(wrong_step),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("step 999")));

  auto foreign_task = good;
  foreign_task[0].mutable_task()->set_sha256(std::string(64, 'f'));
  EXPECT_THAT(coordinator_->ReportResults(foreign_task),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not one of this job's tasks")));

  EXPECT_THAT(coordinator_->ReportResults({}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no messages")));

  EXPECT_EQ(PredictionCount("r", 100), 0);
  EXPECT_EQ(store_->GetJob(lease.job().id())->state(), v1::JOB_LEASED);
  EXPECT_EQ(store_->GetCheckpoint("r", 100)->state(), v1::CHECKPOINT_EVALUATING);
  // The good report still commits afterwards.
  EXPECT_OK(coordinator_->ReportResults(good));
}

TEST_F(CoordinatorTest, ReportForAJobTheWorkerDoesNotHoldIsAborted) {
  CreateRun("r");
  Register("w1");
  Register("w2");
  v1::LeasedJob lease = AdmitAndLease("r", 100, "w1");
  auto chunks = Report(lease, "w2");
  EXPECT_THAT(coordinator_->CheckReportStart(chunks[0]),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("worker w2")));
  EXPECT_THAT(coordinator_->ReportResults(chunks),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("does not hold the lease")));
  EXPECT_EQ(PredictionCount("r", 100), 0);

  // A stale epoch after expiry and re-lease: aborted, nothing written.
  clock_.AdvanceNanos(kTtlMs * 1'000'000);
  ASSERT_OK(coordinator_->Tick());
  EXPECT_EQ(store_->GetCheckpoint("r", 100)->state(), v1::CHECKPOINT_PENDING);
  clock_.AdvanceSeconds(1);
  auto again = Acquire("w2");
  ASSERT_OK(again);
  ASSERT_TRUE(again->has_job());
  EXPECT_EQ(again->lease().job().epoch(), 2u);
  EXPECT_THAT(coordinator_->ReportResults(Report(lease, "w1")),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("epoch 2 held by worker w2")));
  EXPECT_EQ(PredictionCount("r", 100), 0);
  v1::HeartbeatRequest hb;
  hb.set_worker_id("w1");
  hb.set_job_id(lease.job().id());
  hb.set_epoch(1);
  EXPECT_THAT(coordinator_->Heartbeat(hb), StatusIs(absl::StatusCode::kAborted, HasSubstr("")));
  EXPECT_OK(coordinator_->ReportResults(Report(again->lease(), "w2")));
}

TEST_F(CoordinatorTest, UnregisteredWorkersAreToldToRegister) {
  v1::AcquireJobRequest acquire;
  acquire.set_worker_id("ghost");
  EXPECT_THAT(coordinator_->AcquireJob(acquire, nullptr),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("worker ghost is not registered (register again)")));
  v1::HeartbeatRequest hb;
  hb.set_worker_id("ghost");
  EXPECT_THAT(coordinator_->Heartbeat(hb),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("register again")));
  v1::RegisterWorkerRequest empty;
  EXPECT_THAT(coordinator_->RegisterWorker(empty),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("worker_id")));
}

TEST_F(CoordinatorTest, NoJobMeansHasJobFalse) {
  Register("w1");
  auto acquired = Acquire("w1");
  ASSERT_OK(acquired);
  EXPECT_FALSE(acquired->has_job());
}

TEST_F(CoordinatorTest, WorkersAreIdleBusyOrLost) {
  CreateRun("r");
  Register("w1");
  Register("w2");
  v1::LeasedJob lease = AdmitAndLease("r", 100, "w1");
  std::map<std::string, v1::WorkerInfo> workers;
  const v1::ListWorkersResponse listed = coordinator_->ListWorkers();
  for (const auto& w : listed.workers()) workers[w.id()] = w;
  EXPECT_EQ(workers["w1"].state(), v1::WORKER_BUSY);
  EXPECT_EQ(workers["w1"].current_job(), lease.job().id());
  EXPECT_EQ(workers["w2"].state(), v1::WORKER_IDLE);
  clock_.AdvanceNanos(3 * kTtlMs * 1'000'000 + 1);
  const v1::ListWorkersResponse later = coordinator_->ListWorkers();
  for (const auto& w : later.workers()) {
    EXPECT_EQ(w.state(), v1::WORKER_LOST) << w.id();
  }
  ASSERT_OK(coordinator_->Tick());
  EXPECT_THAT(MetricsText(), HasSubstr("steadyeval_workers{state=\"lost\"} 2"));
}

TEST_F(CoordinatorTest, RestartKeepsLeasesForWorkersThatRegisterAgain) {
  CreateRun("r");
  Register("w1");
  v1::LeasedJob lease = AdmitAndLease("r", 100, "w1");
  clock_.AdvanceSeconds(600);  // down for longer than the TTL
  Restart();

  v1::HeartbeatRequest hb;
  hb.set_worker_id("w1");
  hb.set_job_id(lease.job().id());
  hb.set_epoch(lease.job().epoch());
  EXPECT_THAT(coordinator_->Heartbeat(hb), StatusIs(absl::StatusCode::kNotFound, HasSubstr("register again")));
  Register("w1");
  EXPECT_OK(coordinator_->Heartbeat(hb));
  ASSERT_OK(coordinator_->Tick());  // the lease got a fresh expiry: nothing expires
  EXPECT_EQ(store_->GetJob(lease.job().id())->state(), v1::JOB_LEASED);

  // The run's discovery restarts knowing the stored steps; re-reported steps are ignored.
  checkpoints_.Add("r", 100);
  ASSERT_OK(coordinator_->PollRunsOnce());
  EXPECT_THAT(checkpoints_.known("r"), ::testing::ElementsAre(100));
  EXPECT_EQ(coordinator_->scheduler()->Jobs().size(), 1u);

  auto response = coordinator_->ReportResults(Report(lease, "w1"));
  ASSERT_OK(response);
  EXPECT_EQ(response->predictions_written(), 5u);
}

TEST_F(CoordinatorTest, FailJobRetriesThenFails) {
  CreateRun("r");
  Register("w1");
  v1::LeasedJob lease = AdmitAndLease("r", 100, "w1");
  v1::FailJobRequest fail;
  fail.set_worker_id("w1");
  fail.set_job_id(lease.job().id());
  fail.set_epoch(1);
  fail.set_reason("config.json: unknown model_type 'mamba'");
  fail.set_retryable(false);
  auto state = coordinator_->FailJob(fail);
  ASSERT_OK(state);
  EXPECT_EQ(state->state(), v1::JOB_FAILED);
  auto run = coordinator_->GetRun("r");
  ASSERT_OK(run);
  EXPECT_EQ(run->failed(), 1u);
  std::vector<v1::Checkpoint> listed;
  ASSERT_OK(coordinator_->ListCheckpoints("r", [&](const v1::Checkpoint& c) {
    listed.push_back(c);
    return true;
  }));
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].state(), v1::CHECKPOINT_FAILED);
  EXPECT_THAT(listed[0].error(), HasSubstr("mamba"));
}

TEST_F(CoordinatorTest, CreateRunValidatesAndStoresTasks) {
  auto bad_name = Config("bad name!");
  EXPECT_THAT(coordinator_->CreateRun(bad_name, {McTaskFile()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[A-Za-z0-9._-]")));
  auto relative = Config("r");
  relative.set_source("relative/dir");
  EXPECT_THAT(coordinator_->CreateRun(relative, {McTaskFile()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an existing directory")));
  auto pattern = Config("r");
  pattern.set_pattern("step_\\d+");
  EXPECT_THAT(coordinator_->CreateRun(pattern, {McTaskFile()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("capture group")));
  EXPECT_THAT(coordinator_->CreateRun(Config("r"), {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no task files")));
  EXPECT_THAT(coordinator_->CreateRun(Config("r"), {McTaskFile(), McTaskFile()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unique")));
  v1::TaskContent unsupported = QaTaskFile();
  unsupported.set_content(R"({"instruction": "x", "output_length": 4, "metrics": ["nonsense"],
                              "samples": [{"input": "a", "output": "b"}]})");
  EXPECT_THAT(coordinator_->CreateRun(Config("r"), {unsupported}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nonsense")));

  auto created = coordinator_->CreateRun(Config("r"), {McTaskFile()});
  ASSERT_OK(created);
  EXPECT_EQ(created->config().tasks_size(), 1);
  EXPECT_EQ(created->config().settle_seconds(), options_.default_settle_seconds);
  EXPECT_OK(store_->GetTask(created->config().tasks(0).sha256()));
  EXPECT_THAT(coordinator_->CreateRun(Config("r"), {McTaskFile()}),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("run 'r' already exists")));
}

TEST_F(CoordinatorTest, ListRunsPages) {
  for (const char* name : {"c", "a", "b"}) CreateRun(name);
  auto page = coordinator_->ListRuns(2, "");
  ASSERT_OK(page);
  ASSERT_EQ(page->runs_size(), 2);
  EXPECT_EQ(page->runs(0).config().name(), "a");
  EXPECT_EQ(page->next_page_token(), "b");
  page = coordinator_->ListRuns(2, page->next_page_token());
  ASSERT_OK(page);
  ASSERT_EQ(page->runs_size(), 1);
  EXPECT_EQ(page->runs(0).config().name(), "c");
  EXPECT_EQ(page->next_page_token(), "");
}

TEST_F(CoordinatorTest, UnknownRunIsNotFound) {
  const auto not_found = StatusIs(absl::StatusCode::kNotFound,
                                  HasSubstr("run 'nope' not found (see `steadyeval runs list`)"));
  EXPECT_THAT(coordinator_->GetRun("nope"), not_found);
  EXPECT_THAT(coordinator_->ListCheckpoints("nope", [](const v1::Checkpoint&) { return true; }),
              not_found);
  EXPECT_THAT(coordinator_->ListJobs("nope", [](const v1::Job&) { return true; }), not_found);
  v1::GetScoresRequest scores;
  scores.set_run("nope");
  EXPECT_THAT(coordinator_->GetScores(scores, [](const v1::Score&) { return true; }), not_found);
}

// The production discovery: a real CheckpointWatcher on the run's folder.
TEST(CoordinatorWatcherTest, AdmitsCompleteQuiescentCheckpointsOnce) {
  const std::filesystem::path root =
      std::filesystem::path(::testing::TempDir()) / "coordinator_watcher_test";
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root / "ckpt");
  FakeClock clock;
  auto store = Store::Open((root / "db").string());
  ASSERT_OK(store);
  auto coordinator = Coordinator::Create(store->get(), &clock, WatcherDiscoveryFactory(&clock),
                                         CoordinatorOptions());
  ASSERT_OK(coordinator);
  Coordinator& c = **coordinator;
  v1::RunConfig config;
  config.set_name("r");
  config.set_source((root / "ckpt").string());
  config.set_settle_seconds(5);
  ASSERT_OK(c.CreateRun(config, {McTaskFile()}));

  testing_util::WriteSafetensorsCheckpoint((root / "ckpt" / "step_000100").string());
  testing_util::WriteSafetensorsCheckpoint((root / "ckpt" / "step_000200.tmp").string());
  ASSERT_OK(c.PollRunsOnce());  // first sighting
  EXPECT_TRUE(c.scheduler()->Jobs().empty());
  clock.AdvanceSeconds(5);
  ASSERT_OK(c.PollRunsOnce());  // unchanged for settle_seconds: admitted
  ASSERT_EQ(c.scheduler()->Jobs().size(), 1u);
  EXPECT_EQ(c.scheduler()->Jobs()[0].steps(0), 100u);
  auto checkpoint = (*store)->GetCheckpoint("r", 100);
  ASSERT_OK(checkpoint);
  EXPECT_EQ(checkpoint->path(), (root / "ckpt" / "step_000100").string());
  clock.AdvanceSeconds(5);
  ASSERT_OK(c.PollRunsOnce());
  EXPECT_EQ(c.scheduler()->Jobs().size(), 1u);
  coordinator->reset();
  store->reset();
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace steadyeval
