#include "server/coordinator.h"

#include <cmath>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "testing/status_matchers.h"
#include "testing/wait.h"
#include "common/task.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "testing/checkpoint_files.h"
#include "testing/coordinator_fixture.h"
#include "testing/files.h"
#include "testing/temp_dir.h"
#include "api/protocol.h"

namespace steadyeval {
namespace {

using ::testing::HasSubstr;
using ::steadyeval::testing::CoordinatorFixture;
using ::steadyeval::testing::McTaskFile;
using ::steadyeval::testing::QaTaskFile;
using ::steadyeval::testing::Seen;
using ::steadyeval::testing::StatusIs;

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
    r.set_protocol_version(kProtocolVersion);
    ASSERT_OK(coordinator_->RegisterWorker(r));
  }
  absl::StatusOr<v1::AcquireJobResponse> Acquire(const std::string& worker) {
    v1::AcquireJobRequest r;
    r.set_worker_id(worker);
    r.set_wait_ms(0);
    return coordinator_->AcquireJob(r, nullptr);
  }
  static size_t McTaskOptions(uint32_t example) { return example == 2 ? 3 : 2; }
  // A full report for `lease`: mc outputs in two chunks, qa in one.
  std::vector<v1::ReportResultsRequest> Report(const v1::LeasedJob& lease,
                                               const std::string& worker) {
    std::vector<v1::ReportResultsRequest> chunks;
    auto chunk = [&](int task, std::vector<std::pair<uint32_t, std::string>> outs, bool done) {
      v1::ReportResultsRequest r;
      r.set_worker_id(worker);
      r.set_job_id(lease.job().id());
      r.set_epoch(lease.job().epoch());
      r.set_lease_secret(lease.lease_secret());
      r.set_step(lease.job().steps(0));
      *r.mutable_task() = lease.task_headers(task).ref();
      for (auto& [i, text] : outs) {
        v1::ExampleOutput* o = r.add_outputs();
        o->set_index(i);
        o->set_output(text);
        if (task == 0) {  // log-likelihoods whose argmax is the reported option
          const size_t options = McTaskOptions(i);
          for (size_t k = 0; k < options; ++k) {
            o->add_option_logliks(std::to_string(k) == text ? -0.5 : -1.5 - k);
          }
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
  // The value of one series, e.g. `steadyeval_jobs{kind="raw",run="r",state="done"}`
  // (labels in name order, as the text format writes them); nullopt when absent.
  std::optional<double> Metric(const std::string& series) {
    std::istringstream text(MetricsText());
    std::string line;
    while (std::getline(text, line)) {
      if (absl::StartsWith(line, series + " ")) return std::stod(line.substr(series.size() + 1));
    }
    return std::nullopt;
  }
  absl::StatusOr<v1::FailJobResponse> Fail(const v1::LeasedJob& lease, const std::string& worker,
                                           bool retryable) {
    v1::FailJobRequest fail;
    fail.set_worker_id(worker);
    fail.set_job_id(lease.job().id());
    fail.set_epoch(lease.job().epoch());
    fail.set_lease_secret(lease.lease_secret());
    fail.set_reason("injected failure");
    fail.set_retryable(retryable);
    return coordinator_->FailJob(fail);
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
  EXPECT_EQ(store_->GetPrediction("r", "mc", "raw", 100, 2)->option_logliks_size(), 3);
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
  // w2 sends w1's lease (and secret) under its own id: the secret is not w2's.
  auto chunks = Report(lease, "w2");
  EXPECT_THAT(coordinator_->CheckReportStart(chunks[0]),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("does not prove the lease")));
  EXPECT_THAT(coordinator_->ReportResults(chunks),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("does not prove the lease")));
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
  hb.set_lease_secret(lease.lease_secret());
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

// One AcquireJob long poll on a thread of its own.
class LongPoll {
 public:
  LongPoll(Coordinator* coordinator, const std::string& worker, int64_t wait_ms)
      : thread_([this, coordinator, worker, wait_ms] {
          v1::AcquireJobRequest r;
          r.set_worker_id(worker);
          r.set_wait_ms(wait_ms);
          result_ = coordinator->AcquireJob(r, nullptr);
          answered_.Notify();
        }) {}
  // Whether it has answered within `timeout` of real time (a bound for a failing test).
  bool Answered(absl::Duration timeout = absl::Seconds(60)) {
    return answered_.WaitForNotificationWithTimeout(timeout);
  }
  absl::StatusOr<v1::AcquireJobResponse> Join() {
    thread_.join();
    return result_;
  }

 private:
  absl::StatusOr<v1::AcquireJobResponse> result_;
  absl::Notification answered_;
  std::thread thread_;
};

// The long poll waits on the coordinator's clock, and an admission wakes it: the
// FakeClock never moves here, so without the wake-up the poll would wait until the test
// gave up on it (then the clock is moved past its deadline to end it, and the test fails).
TEST_F(CoordinatorTest, AnAdmissionWakesAWaitingLongPollWithoutTimePassing) {
  CreateRun("r");
  Register("w1");
  LongPoll poll(coordinator_.get(), "w1", options_.max_acquire_wait_ms);
  clock_.WaitForWaiters(1);  // it found nothing to lease and waits
  const int64_t waiting_since = clock_.MonotonicNanos();
  checkpoints_.Add("r", 100);
  ASSERT_OK(coordinator_->PollRunsOnce());
  const bool woken = poll.Answered();
  if (!woken) clock_.AdvanceSeconds(options_.max_acquire_wait_ms / 1e3 + 1);
  absl::StatusOr<v1::AcquireJobResponse> acquired = poll.Join();
  ASSERT_TRUE(woken) << "the admission did not wake the long poll";
  EXPECT_EQ(clock_.MonotonicNanos(), waiting_since);
  ASSERT_OK(acquired);
  ASSERT_TRUE(acquired->has_job());
  EXPECT_EQ(acquired->lease().job().steps(0), 100u);
}

// Its deadline is on the same clock: nothing to lease, the clock passes the deadline (an
// hour, which real time would not reach before the test gives up), the poll answers
// has_job=false.
TEST_F(CoordinatorTest, ALongPollEndsAtItsDeadlineOnTheClock) {
  options_.max_acquire_wait_ms = 3'600'000;
  Restart();
  Register("w1");
  LongPoll poll(coordinator_.get(), "w1", 3'600'000);
  clock_.WaitForWaiters(1);
  clock_.AdvanceSeconds(3600);
  const bool ended = poll.Answered();
  if (!ended) coordinator_->Stop();  // wakes it for good
  absl::StatusOr<v1::AcquireJobResponse> acquired = poll.Join();
  ASSERT_TRUE(ended) << "the long poll did not end at its deadline on the clock";
  ASSERT_OK(acquired);
  EXPECT_FALSE(acquired->has_job());
}

TEST_F(CoordinatorTest, AGoneCallerTakesNoLease) {
  CreateRun("r");
  Register("w1");
  checkpoints_.Add("r", 100);
  ASSERT_OK(coordinator_->PollRunsOnce());
  v1::AcquireJobRequest r;
  r.set_worker_id("w1");
  r.set_wait_ms(0);
  auto gone = coordinator_->AcquireJob(r, [] { return true; });
  ASSERT_OK(gone);
  EXPECT_FALSE(gone->has_job());
  // The job is still pending: the next caller gets it, at its first attempt.
  auto acquired = Acquire("w1");
  ASSERT_OK(acquired);
  ASSERT_TRUE(acquired->has_job());
  EXPECT_EQ(acquired->lease().job().attempts(), 1u);
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
  hb.set_lease_secret(lease.lease_secret());
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

TEST_F(CoordinatorTest, TheFirstReportedTokenizerPinsTheRunAndOthersAreRejected) {
  CreateRun("r");
  Register("w1");
  const std::string pinned(64, 'a'), other(64, 'b');
  v1::LeasedJob first = AdmitAndLease("r", 100, "w1");
  EXPECT_TRUE(first.tokenizer_sha256().empty());  // nothing pinned yet
  std::vector<v1::ReportResultsRequest> chunks = Report(first, "w1");
  for (v1::ReportResultsRequest& c : chunks) c.set_tokenizer_sha256(pinned);
  ASSERT_OK(coordinator_->ReportResults(chunks));
  auto run = coordinator_->GetRun("r");
  ASSERT_OK(run);
  EXPECT_EQ(run->run().tokenizer_sha256(), pinned);
  EXPECT_EQ(run->run().tokenizer_pinned_step(), 100u);

  // The pin survives a restart and travels with every later lease.
  Restart();
  Register("w1");
  v1::LeasedJob second = AdmitAndLease("r", 200, "w1");
  EXPECT_EQ(second.tokenizer_sha256(), pinned);
  chunks = Report(second, "w1");
  for (v1::ReportResultsRequest& c : chunks) c.set_tokenizer_sha256(other);
  EXPECT_THAT(coordinator_->ReportResults(chunks),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr(other), HasSubstr(pinned),
                                        HasSubstr("first seen at step 100"),
                                        HasSubstr("new run"))));
  EXPECT_EQ(PredictionCount("r", 200), 0);
  // The pinned tokenizer is accepted.
  for (v1::ReportResultsRequest& c : chunks) c.set_tokenizer_sha256(pinned);
  ASSERT_OK(coordinator_->ReportResults(chunks));
  EXPECT_EQ(PredictionCount("r", 200), 5);
}

TEST_F(CoordinatorTest, FailJobRetriesThenFails) {
  CreateRun("r");
  Register("w1");
  v1::LeasedJob lease = AdmitAndLease("r", 100, "w1");
  v1::FailJobRequest fail;
  fail.set_worker_id("w1");
  fail.set_job_id(lease.job().id());
  fail.set_epoch(1);
  fail.set_lease_secret(lease.lease_secret());
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

TEST_F(CoordinatorTest, TaskSettingsTravelWithTheLeaseAndShapeTheTask) {
  v1::RunConfig config = Config("r");
  config.set_prompt_language("en");
  config.set_bos("none");
  config.set_max_new_tokens_delta(3);
  v1::TaskRef* mc = config.add_tasks();
  mc->set_name("mc");
  mc->set_metric("acc_norm");
  mc->set_max_samples(2);
  v1::TaskContent qa = QaTaskFile();
  qa.set_train_filename("qa.json");
  qa.set_train_content(R"({"samples": [{"input": "3+3", "output": "6"}]})");
  ASSERT_OK_AND_ASSIGN(v1::Run run, coordinator_->CreateRun(config, {McTaskFile(), qa}));
  ASSERT_EQ(run.config().tasks_size(), 2);
  EXPECT_EQ(run.config().tasks(0).metric(), "acc_norm");
  EXPECT_EQ(run.config().tasks(0).max_samples(), 2u);
  EXPECT_EQ(run.config().tasks(1).sha256(),
            TaskContentHash(QaTaskFile().content(), qa.train_content()));
  EXPECT_EQ(run.config().prompt_language(), "en");

  Register("w1");
  v1::LeasedJob lease = AdmitAndLease("r", 100, "w1");
  EXPECT_EQ(lease.prompt_language(), "en");
  EXPECT_EQ(lease.bos(), "none");
  EXPECT_EQ(lease.max_new_tokens_delta(), 3);
  EXPECT_EQ(lease.task_headers(0).ref().metric(), "acc_norm");
  EXPECT_EQ(lease.task_headers(0).ref().max_samples(), 2u);
  EXPECT_TRUE(lease.task_headers(1).train_content().empty());  // fetched with GetTask
  ASSERT_OK_AND_ASSIGN(v1::TaskContent stored, coordinator_->GetTask(lease.task_headers(1).ref().sha256()));
  EXPECT_EQ(stored.train_content(), qa.train_content());

  // Two mc examples now; the report must match.
  v1::ReportResultsRequest r;
  r.set_worker_id("w1");
  r.set_job_id(lease.job().id());
  r.set_epoch(lease.job().epoch());
  r.set_lease_secret(lease.lease_secret());
  r.set_step(100);
  r.set_bos("no bos");
  *r.mutable_task() = lease.task_headers(0).ref();
  for (uint32_t i = 0; i < 2; ++i) {
    v1::ExampleOutput* o = r.add_outputs();
    o->set_index(i);
    o->set_output("1");
    // Option "a" and "b" are one character each: acc_norm ranks like acc here.
    o->add_option_logliks(i == 0 ? -2.0 : -0.1);
    o->add_option_logliks(i == 0 ? -0.2 : -3.0);
  }
  r.set_task_complete(true);
  v1::ReportResultsRequest q = r;
  q.clear_outputs();
  *q.mutable_task() = lease.task_headers(1).ref();
  for (uint32_t i = 0; i < 2; ++i) {
    v1::ExampleOutput* o = q.add_outputs();
    o->set_index(i);
    o->set_output(i == 0 ? "2" : "4");
  }
  ASSERT_OK(coordinator_->ReportResults({r, q}));
  ASSERT_OK_AND_ASSIGN(v1::Prediction p0, store_->GetPrediction("r", "mc", "raw", 100, 0));
  ASSERT_OK_AND_ASSIGN(v1::Prediction p1, store_->GetPrediction("r", "mc", "raw", 100, 1));
  EXPECT_EQ(p0.normalized(), "1");  // picked from the log-likelihoods
  EXPECT_EQ(p1.normalized(), "0");  // although the worker said "1"
  EXPECT_EQ(p1.metric_values().at("acc_norm"), 1.0);
  EXPECT_EQ(p1.metric_values().at("acc"), 1.0);
  ASSERT_OK_AND_ASSIGN(v1::Score score, store_->GetScore("r", "mc", "raw", 100));
  EXPECT_EQ(score.metric(), "acc_norm");
  EXPECT_EQ(score.examples(), 2u);
  EXPECT_EQ(score.metric_scores().at("acc"), 1.0);
  EXPECT_EQ(store_->GetJob(lease.job().id())->bos(), "no bos");
}

TEST_F(CoordinatorTest, CreateRunRejectsBadPromptSettings) {
  v1::RunConfig config = Config("r");
  config.set_prompt_language("fr");
  EXPECT_THAT(coordinator_->CreateRun(config, {McTaskFile()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'fr'")));
  config = Config("r");
  config.set_bos("sometimes");
  EXPECT_THAT(coordinator_->CreateRun(config, {McTaskFile()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("auto, add or none")));
  config = Config("r");
  config.add_tasks()->set_name("elsewhere");
  EXPECT_THAT(coordinator_->CreateRun(config, {McTaskFile()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'elsewhere'")));
  config = Config("r");
  v1::TaskRef* mc = config.add_tasks();
  mc->set_name("mc");
  mc->set_metric("char_f1");
  EXPECT_THAT(coordinator_->CreateRun(config, {McTaskFile()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("acc or acc_norm")));
  v1::TaskContent invalid = QaTaskFile();
  invalid.set_content("{\"instruction\": \"\xff\"}");
  EXPECT_THAT(coordinator_->CreateRun(Config("r"), {invalid}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("qa.json: invalid UTF-8")));
  int runs = 0;
  ASSERT_OK(store_->ScanRuns("", 100, [&](const v1::Run&) { return ++runs, true; }));
  EXPECT_EQ(runs, 0);  // nothing created, nothing scheduled
}

TEST_F(CoordinatorTest, RescoreRestoresScoresFromStoredOutputs) {
  v1::RunConfig config = Config("r");
  config.add_ensemble_windows(2);
  ASSERT_OK(coordinator_->CreateRun(config, {McTaskFile(), QaTaskFile()}));
  Register("w1");
  for (uint64_t step : {100, 200}) {
    v1::LeasedJob lease = AdmitAndLease("r", step, "w1");
    ASSERT_OK(coordinator_->ReportResults(Report(lease, "w1")));
  }
  auto snapshot = [&] {
    std::map<std::string, double> out;
    v1::GetScoresRequest request;
    request.set_run("r");
    EXPECT_OK(coordinator_->GetScores(request, [&](const v1::Score& s) {
      out[absl::StrCat(s.task(), "/", s.variant(), "@", s.step())] = s.score();
      return true;
    }));
    return out;
  };
  const std::map<std::string, double> before = snapshot();
  ASSERT_EQ(before.size(), 7u);  // 2 tasks x (raw@100, raw@200, ens@2@200), mc ens-soft@2@200
  v1::GetStabilityRequest stability;
  stability.set_run("r");
  stability.set_last_points(2);
  ASSERT_OK_AND_ASSIGN(v1::GetStabilityResponse table_before, coordinator_->GetStability(stability));

  // Corrupt what scoring wrote (as a metric bug would have): the qa value at 200.
  ASSERT_OK_AND_ASSIGN(v1::Score bad, store_->GetScore("r", "qa", "raw", 200));
  ASSERT_OK_AND_ASSIGN(v1::Prediction wrong, store_->GetPrediction("r", "qa", "raw", 200, 0));
  bad.set_score(0.0);
  wrong.set_score(0.0);
  wrong.set_normalized("garbage");
  Store::Batch batch = store_->NewBatch();
  batch.PutScore(bad);
  batch.PutPrediction("r", "qa", "raw", 200, 0, wrong);
  ASSERT_OK(store_->Commit(std::move(batch)));

  v1::RescoreRequest request;
  request.set_run("r");
  request.set_task("qa");
  ASSERT_OK_AND_ASSIGN(v1::RescoreResponse response, coordinator_->Rescore(request));
  EXPECT_EQ(response.values(), 2u);       // qa raw@100, raw@200
  EXPECT_EQ(response.predictions(), 4u);
  EXPECT_EQ(response.scores_changed(), 1u);
  EXPECT_EQ(snapshot(), before);
  EXPECT_EQ(store_->GetPrediction("r", "qa", "raw", 200, 0)->normalized(), "2");
  ASSERT_OK_AND_ASSIGN(v1::GetStabilityResponse table_after, coordinator_->GetStability(stability));
  EXPECT_EQ(table_after.DebugString(), table_before.DebugString());

  request.set_task("");
  ASSERT_OK_AND_ASSIGN(response, coordinator_->Rescore(request));
  EXPECT_EQ(response.values(), 4u);
  EXPECT_EQ(response.scores_changed(), 0u);
  request.set_task("nope");
  EXPECT_THAT(coordinator_->Rescore(request),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no task 'nope'")));
}

TEST_F(CoordinatorTest, CorpusLevelMetricHasTaskFiguresButNoExampleMtv) {
  v1::TaskContent sts;
  sts.set_filename("sts.json");
  sts.set_content(R"({"instruction": "rate", "output_length": 3, "metrics": ["pearson", "exact_match"],
      "samples": [{"input": "a", "output": "1.0"}, {"input": "b", "output": "2.0"},
                  {"input": "c", "output": "4.0"}]})");
  ASSERT_OK(coordinator_->CreateRun(Config("r"), {sts}));
  Register("w1");
  const std::vector<std::vector<std::string>> outputs = {{"1.0", "2.0", "4.0"},   // r = 1
                                                         {"3.0", "2.0", "1.0"}};  // r < 0
  for (size_t k = 0; k < 2; ++k) {
    v1::LeasedJob lease = AdmitAndLease("r", 100 * (k + 1), "w1");
    v1::ReportResultsRequest r;
    r.set_worker_id("w1");
    r.set_job_id(lease.job().id());
    r.set_epoch(lease.job().epoch());
    r.set_lease_secret(lease.lease_secret());
    r.set_step(100 * (k + 1));
    *r.mutable_task() = lease.task_headers(0).ref();
    for (uint32_t i = 0; i < 3; ++i) {
      v1::ExampleOutput* o = r.add_outputs();
      o->set_index(i);
      o->set_output(outputs[k][i]);
    }
    r.set_task_complete(true);
    ASSERT_OK(coordinator_->ReportResults({r}));
  }
  ASSERT_OK_AND_ASSIGN(v1::Score first, store_->GetScore("r", "sts", "raw", 100));
  ASSERT_OK_AND_ASSIGN(v1::Score second, store_->GetScore("r", "sts", "raw", 200));
  EXPECT_EQ(first.metric(), "pearson");
  EXPECT_NEAR(first.score(), 1.0, 1e-12);
  EXPECT_LT(second.score(), 0.0);
  EXPECT_NEAR(second.metric_scores().at("exact_match"), 1.0 / 3, 1e-12);
  ASSERT_OK_AND_ASSIGN(v1::Prediction p, store_->GetPrediction("r", "sts", "raw", 200, 1));
  EXPECT_FALSE(p.metric_values().contains("pearson"));  // no per-example value
  EXPECT_EQ(p.metric_values().at("exact_match"), 1.0);

  v1::GetStabilityRequest request;
  request.set_run("r");
  request.set_last_points(2);
  ASSERT_OK_AND_ASSIGN(v1::GetStabilityResponse table, coordinator_->GetStability(request));
  const v1::StabilityRow* raw = nullptr;
  for (const v1::StabilityRow& row : table.rows()) {
    if (row.kind() == "task" && row.variant() == "raw") raw = &row;
  }
  ASSERT_NE(raw, nullptr) << table.DebugString();
  EXPECT_NEAR(raw->mtv(), std::abs(second.score() - first.score()), 1e-12);
  EXPECT_FALSE(raw->has_example_mtv());          // corpus level: null, not 0
  EXPECT_NEAR(raw->instability(), 2.0 / 3, 1e-12);  // examples 0 and 2 changed output
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

TEST_F(CoordinatorTest, DiscoveredCountsEachNewFolderOnceAndAdmittedCountsAdmissions) {
  CreateRun("r");
  const std::string discovered = "steadyeval_checkpoints_discovered_total{run=\"r\"}";
  const std::string admitted = "steadyeval_checkpoints_admitted_total{run=\"r\"}";
  const std::string incomplete = "steadyeval_checkpoints_incomplete{run=\"r\"}";
  const std::string age = "steadyeval_checkpoint_incomplete_age_seconds{run=\"r\"}";
  EXPECT_EQ(Metric(discovered), 0);  // a new run's series start at 0
  EXPECT_EQ(Metric(admitted), 0);
  EXPECT_EQ(Metric(incomplete), 0);
  EXPECT_EQ(Metric(age), 0);

  // Seen, not admitted: discovered, incomplete, aging with the clock.
  const int64_t t0 = clock_.MonotonicNanos();
  checkpoints_.SetSeen("r", {Seen(100, t0)});
  ASSERT_OK(coordinator_->PollRunsOnce());
  EXPECT_EQ(Metric(discovered), 1);
  EXPECT_EQ(Metric(admitted), 0);
  EXPECT_EQ(Metric(incomplete), 1);
  EXPECT_EQ(Metric(age), 0);
  clock_.AdvanceSeconds(7);
  ASSERT_OK(coordinator_->PollRunsOnce());
  EXPECT_EQ(Metric(discovered), 1);  // still pending: not counted again
  EXPECT_EQ(Metric(age), 7);
  checkpoints_.SetSeen("r", {Seen(100, t0), Seen(200, clock_.MonotonicNanos())});
  clock_.AdvanceSeconds(3);
  ASSERT_OK(coordinator_->PollRunsOnce());
  EXPECT_EQ(Metric(discovered), 2);
  EXPECT_EQ(Metric(incomplete), 2);
  EXPECT_EQ(Metric(age), 10);  // the oldest

  // 100 admitted: the age is 200's now; then 200 too: nothing incomplete.
  checkpoints_.SetSeen("r", {Seen(200, t0 + 7'000'000'000)});
  checkpoints_.Add("r", 100);
  ASSERT_OK(coordinator_->PollRunsOnce());
  EXPECT_EQ(Metric(discovered), 2);
  EXPECT_EQ(Metric(admitted), 1);
  EXPECT_EQ(Metric(incomplete), 1);
  EXPECT_EQ(Metric(age), 3);
  checkpoints_.SetSeen("r", {});
  checkpoints_.Add("r", 200);
  ASSERT_OK(coordinator_->PollRunsOnce());
  EXPECT_EQ(Metric(discovered), 2);
  EXPECT_EQ(Metric(admitted), 2);
  EXPECT_EQ(Metric(incomplete), 0);
  EXPECT_EQ(Metric(age), 0);
  // Admitted without a pending phase: discovered and admitted at once.
  checkpoints_.Add("r", 300);
  ASSERT_OK(coordinator_->PollRunsOnce());
  EXPECT_EQ(Metric(discovered), 3);
  EXPECT_EQ(Metric(admitted), 3);

  // A restart: stored steps are not discovered again, new ones are.
  Restart();
  EXPECT_EQ(Metric(discovered), 0);
  checkpoints_.Add("r", 300);
  checkpoints_.SetSeen("r", {Seen(100, clock_.MonotonicNanos()), Seen(400, clock_.MonotonicNanos())});
  ASSERT_OK(coordinator_->PollRunsOnce());
  EXPECT_EQ(Metric(discovered), 1);  // 400 only
  EXPECT_EQ(Metric(admitted), 0);
}

TEST_F(CoordinatorTest, JobOutcomesAndAttemptFailuresAreCountedByReason) {
  CreateRun("r");
  Register("w1");
  auto series = [](const std::string& name, const std::string& label, const std::string& value) {
    return absl::StrCat(name, "{kind=\"raw\",", label, "=\"", value, "\",run=\"r\"}");
  };
  const std::string retryable =
      series("steadyeval_job_attempt_failures_total", "reason", "retryable");
  const std::string permanent =
      series("steadyeval_job_attempt_failures_total", "reason", "permanent");
  const std::string expired =
      series("steadyeval_job_attempt_failures_total", "reason", "lease_expired");
  const std::string failed = series("steadyeval_jobs_finished_total", "outcome", "failed");
  const std::string done = series("steadyeval_jobs_finished_total", "outcome", "done");
  const std::string checkpoints_failed = "steadyeval_checkpoints_failed_total{run=\"r\"}";
  auto checkpoints = [&](const std::string& state) {
    return Metric(absl::StrCat("steadyeval_checkpoints{run=\"r\",state=\"", state, "\"}"));
  };
  EXPECT_EQ(checkpoints("pending"), 0);
  EXPECT_EQ(checkpoints("failed"), 0);

  // Checkpoint 100: a retryable failure, then two expired leases exhaust its 3 attempts.
  v1::LeasedJob lease = AdmitAndLease("r", 100, "w1");
  EXPECT_EQ(checkpoints("evaluating"), 1);
  EXPECT_EQ(checkpoints("pending"), 0);
  ASSERT_OK(Fail(lease, "w1", /*retryable=*/true));
  EXPECT_EQ(Metric(retryable), 1);
  EXPECT_EQ(Metric(failed), std::nullopt);
  EXPECT_EQ(checkpoints("pending"), 1);
  EXPECT_EQ(checkpoints("evaluating"), 0);
  for (int attempt = 2; attempt <= 3; ++attempt) {
    clock_.AdvanceSeconds(10);  // past any backoff
    auto acquired = Acquire("w1");
    ASSERT_OK(acquired);
    ASSERT_TRUE(acquired->has_job());
    clock_.AdvanceNanos(kTtlMs * 1'000'000 + 1);
    ASSERT_OK(coordinator_->Tick());
    EXPECT_EQ(Metric(expired), attempt - 1);
  }
  EXPECT_EQ(store_->GetJob(lease.job().id())->state(), v1::JOB_FAILED);
  EXPECT_EQ(Metric(retryable), 1);
  EXPECT_EQ(Metric(failed), 1);
  EXPECT_EQ(Metric(checkpoints_failed), 1);
  EXPECT_EQ(checkpoints("failed"), 1);

  // Checkpoint 200: a permanent failure.
  lease = AdmitAndLease("r", 200, "w1");
  ASSERT_OK(Fail(lease, "w1", /*retryable=*/false));
  EXPECT_EQ(Metric(permanent), 1);
  EXPECT_EQ(Metric(failed), 2);
  EXPECT_EQ(Metric(checkpoints_failed), 2);
  // A stale FailJob changes nothing and counts nothing.
  EXPECT_FALSE(Fail(lease, "w1", /*retryable=*/false).ok());
  EXPECT_EQ(Metric(permanent), 1);

  // Checkpoint 300: done. Only done jobs are in the duration histogram.
  lease = AdmitAndLease("r", 300, "w1");
  clock_.AdvanceSeconds(4);
  ASSERT_OK(coordinator_->ReportResults(Report(lease, "w1")));
  EXPECT_EQ(Metric(done), 1);
  EXPECT_EQ(Metric(failed), 2);
  EXPECT_EQ(Metric(checkpoints_failed), 2);
  EXPECT_EQ(Metric("steadyeval_job_duration_seconds_count{kind=\"raw\"}"), 1);
  EXPECT_EQ(Metric("steadyeval_job_duration_seconds_sum{kind=\"raw\"}"), 4);
  EXPECT_EQ(checkpoints("pending"), 0);
  EXPECT_EQ(checkpoints("evaluating"), 0);
  EXPECT_EQ(checkpoints("evaluated"), 1);
  EXPECT_EQ(checkpoints("failed"), 2);
}

TEST_F(CoordinatorTest, QueueWaitIsObservedOnceAtTheFirstLease) {
  CreateRun("r");
  Register("w1");
  checkpoints_.Add("r", 100);
  ASSERT_OK(coordinator_->PollRunsOnce());
  clock_.AdvanceSeconds(42);
  auto acquired = Acquire("w1");
  ASSERT_OK(acquired);
  ASSERT_TRUE(acquired->has_job());
  EXPECT_EQ(Metric("steadyeval_job_queue_wait_seconds_count{kind=\"raw\"}"), 1);
  EXPECT_EQ(Metric("steadyeval_job_queue_wait_seconds_sum{kind=\"raw\"}"), 42);
  EXPECT_EQ(Metric("steadyeval_job_queue_wait_seconds_bucket{kind=\"raw\",le=\"30\"}"), 0);
  EXPECT_EQ(Metric("steadyeval_job_queue_wait_seconds_bucket{kind=\"raw\",le=\"60\"}"), 1);

  // A retry's lease is not a queue wait.
  ASSERT_OK(Fail(acquired->lease(), "w1", /*retryable=*/true));
  clock_.AdvanceSeconds(5);
  acquired = Acquire("w1");
  ASSERT_OK(acquired);
  ASSERT_TRUE(acquired->has_job());
  EXPECT_EQ(acquired->lease().job().attempts(), 2u);
  EXPECT_EQ(Metric("steadyeval_job_queue_wait_seconds_count{kind=\"raw\"}"), 1);
  EXPECT_EQ(Metric("steadyeval_job_queue_wait_seconds_sum{kind=\"raw\"}"), 42);
}

TEST_F(CoordinatorTest, EvalLagSecondsCountsFromTheOldestUnevaluatedCheckpoint) {
  CreateRun("r");
  Register("w1");
  const std::string lag = "steadyeval_eval_lag_seconds{run=\"r\"}";
  const std::string lag_steps = "steadyeval_eval_lag_steps{run=\"r\"}";
  EXPECT_EQ(Metric(lag), 0);
  checkpoints_.Add("r", 100);
  ASSERT_OK(coordinator_->PollRunsOnce());
  ASSERT_OK(coordinator_->Tick());
  EXPECT_EQ(Metric(lag), 0);  // just admitted
  clock_.AdvanceSeconds(10);
  checkpoints_.Add("r", 200);
  ASSERT_OK(coordinator_->PollRunsOnce());
  clock_.AdvanceSeconds(5);
  ASSERT_OK(coordinator_->Tick());
  EXPECT_EQ(Metric(lag), 15);  // from 100's admission: nothing is evaluated
  EXPECT_EQ(Metric(lag_steps), 200);

  // The newest (200) is leased first; once it is evaluated the run is caught up, though
  // 100 is not evaluated yet.
  auto acquired = Acquire("w1");
  ASSERT_OK(acquired);
  ASSERT_EQ(acquired->lease().job().steps(0), 200u);
  ASSERT_OK(coordinator_->ReportResults(Report(acquired->lease(), "w1")));
  EXPECT_EQ(Metric(lag), 0);
  EXPECT_EQ(Metric(lag_steps), 0);

  // 300, then a late 250: the lag counts from the older admission (300's), not the
  // smaller step.
  checkpoints_.Add("r", 300);
  ASSERT_OK(coordinator_->PollRunsOnce());
  clock_.AdvanceSeconds(4);
  checkpoints_.Add("r", 250);
  ASSERT_OK(coordinator_->PollRunsOnce());
  clock_.AdvanceSeconds(3);
  ASSERT_OK(coordinator_->Tick());
  EXPECT_EQ(Metric(lag), 7);
  EXPECT_EQ(Metric(lag_steps), 100);
  clock_.AdvanceSeconds(60);
  ASSERT_OK(coordinator_->Tick());
  EXPECT_EQ(Metric(lag), 67);  // grows while evaluation is behind
}

TEST_F(CoordinatorTest, HeartbeatAgeIsPerWorkerNameAndTheFreshestWins) {
  auto register_named = [&](const std::string& id, const std::string& name) {
    v1::RegisterWorkerRequest r;
    r.set_worker_id(id);
    r.set_name(name);
    r.set_protocol_version(kProtocolVersion);
    ASSERT_OK(coordinator_->RegisterWorker(r));
  };
  register_named("id-1", "gpu-a");
  register_named("id-2", "gpu-a");
  register_named("id-3", "gpu-b");
  clock_.AdvanceSeconds(5);
  v1::HeartbeatRequest hb;
  hb.set_worker_id("id-2");
  ASSERT_OK(coordinator_->Heartbeat(hb));
  clock_.AdvanceSeconds(2);
  ASSERT_OK(coordinator_->Tick());
  EXPECT_EQ(Metric("steadyeval_worker_heartbeat_age_seconds{worker=\"gpu-a\"}"), 2);
  EXPECT_EQ(Metric("steadyeval_worker_heartbeat_age_seconds{worker=\"gpu-b\"}"), 7);
  clock_.AdvanceSeconds(1);
  ASSERT_OK(coordinator_->Tick());
  EXPECT_EQ(Metric("steadyeval_worker_heartbeat_age_seconds{worker=\"gpu-a\"}"), 3);
  EXPECT_EQ(Metric("steadyeval_worker_heartbeat_age_seconds{worker=\"gpu-b\"}"), 8);
}

TEST_F(CoordinatorTest, ScorePreviousAndStepFollowTheNewestPoint) {
  CreateRun("r");
  Register("w1");
  const std::string labels = "{run=\"r\",task=\"qa\",variant=\"raw\"}";
  v1::LeasedJob lease = AdmitAndLease("r", 100, "w1");
  ASSERT_OK(coordinator_->ReportResults(Report(lease, "w1")));
  EXPECT_EQ(Metric("steadyeval_score" + labels), 0.5);
  EXPECT_EQ(Metric("steadyeval_score_step" + labels), 100);
  EXPECT_EQ(Metric("steadyeval_score_previous" + labels), std::nullopt);  // one point

  lease = AdmitAndLease("r", 200, "w1");
  std::vector<v1::ReportResultsRequest> chunks = Report(lease, "w1");
  ASSERT_EQ(chunks[1].task().name(), "qa");
  chunks[1].mutable_outputs(0)->set_output("4");  // both qa answers right
  ASSERT_OK(coordinator_->ReportResults(chunks));
  EXPECT_EQ(Metric("steadyeval_score" + labels), 1.0);
  EXPECT_EQ(Metric("steadyeval_score_step" + labels), 200);
  EXPECT_EQ(Metric("steadyeval_score_previous" + labels), 0.5);

  // A late point before the newest becomes the previous one.
  lease = AdmitAndLease("r", 150, "w1");
  chunks = Report(lease, "w1");
  chunks[1].mutable_outputs(0)->set_output("0");
  chunks[1].mutable_outputs(1)->set_output("0");  // both wrong
  ASSERT_OK(coordinator_->ReportResults(chunks));
  EXPECT_EQ(Metric("steadyeval_score_step" + labels), 200);
  EXPECT_EQ(Metric("steadyeval_score_previous" + labels), 0.0);
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

  testing::WriteSafetensorsCheckpoint((root / "ckpt" / "step_000100").string());
  testing::WriteSafetensorsCheckpoint((root / "ckpt" / "step_000200.tmp").string());
  auto metrics = [&] {
    return prometheus::TextSerializer().Serialize(c.metrics()->registry()->Collect());
  };
  ASSERT_OK(c.PollRunsOnce());  // first sighting
  EXPECT_TRUE(c.scheduler()->Jobs().empty());
  clock.AdvanceSeconds(2);
  ASSERT_OK(c.PollRunsOnce());  // unchanged for 2 of the 5 settle seconds
  EXPECT_THAT(metrics(), HasSubstr("steadyeval_checkpoints_discovered_total{run=\"r\"} 1\n"));
  EXPECT_THAT(metrics(), HasSubstr("steadyeval_checkpoints_admitted_total{run=\"r\"} 0\n"));
  EXPECT_THAT(metrics(), HasSubstr("steadyeval_checkpoints_incomplete{run=\"r\"} 1\n"));
  EXPECT_THAT(metrics(),
              HasSubstr("steadyeval_checkpoint_incomplete_age_seconds{run=\"r\"} 2\n"));
  clock.AdvanceSeconds(3);
  ASSERT_OK(c.PollRunsOnce());  // unchanged for settle_seconds: admitted
  ASSERT_EQ(c.scheduler()->Jobs().size(), 1u);
  EXPECT_THAT(metrics(), HasSubstr("steadyeval_checkpoints_discovered_total{run=\"r\"} 1\n"));
  EXPECT_THAT(metrics(), HasSubstr("steadyeval_checkpoints_admitted_total{run=\"r\"} 1\n"));
  EXPECT_THAT(metrics(), HasSubstr("steadyeval_checkpoints_incomplete{run=\"r\"} 0\n"));
  EXPECT_THAT(metrics(),
              HasSubstr("steadyeval_checkpoint_incomplete_age_seconds{run=\"r\"} 0\n"));
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

// ---- worker protocol: versions and lease secrets ----

TEST_F(CoordinatorTest, RegisterRefusesAnotherProtocolVersionNamingBoth) {
  v1::RegisterWorkerRequest r;
  r.set_worker_id("old");  // no version: a worker from before versions
  EXPECT_THAT(coordinator_->RegisterWorker(r),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::AllOf(HasSubstr("version 0"),
                                        HasSubstr(absl::StrCat("version ", kProtocolVersion)),
                                        HasSubstr("upgrade the worker"))));
  r.set_protocol_version(kProtocolVersion + 1);
  EXPECT_THAT(coordinator_->RegisterWorker(r),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::AllOf(HasSubstr(absl::StrCat("version ", kProtocolVersion + 1)),
                                        HasSubstr("upgrade the coordinator"))));
  // Refused means not registered.
  EXPECT_THAT(Acquire("old"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("not registered")));
  r.set_protocol_version(kProtocolVersion);
  auto registered = coordinator_->RegisterWorker(r);
  ASSERT_OK(registered);
  EXPECT_EQ(registered->protocol_version(), kProtocolVersion);
}

TEST_F(CoordinatorTest, ListJobsNeverShowsTheLeaseSecretAndForgedRequestsAreRefused) {
  CreateRun("r");
  Register("w1");
  Register("mallory");
  v1::LeasedJob lease = AdmitAndLease("r", 100, "w1");
  ASSERT_EQ(lease.lease_secret().size(), 32u) << "128 bits, hex";
  EXPECT_EQ(lease.source_root(), (root_ / "ckpt").string());

  // Everything the query side answers, as bytes: the secret is in none of it.
  std::vector<v1::Job> listed;
  ASSERT_OK(coordinator_->ListJobs("", [&](const v1::Job& j) {
    listed.push_back(j);
    return true;
  }));
  ASSERT_EQ(listed.size(), 1u);
  std::string answers = listed[0].SerializeAsString() + listed[0].DebugString();
  ASSERT_OK_AND_ASSIGN(v1::GetRunResponse run, coordinator_->GetRun("r"));
  answers += run.SerializeAsString() + coordinator_->ListWorkers().SerializeAsString();
  ASSERT_OK(coordinator_->ListCheckpoints("r", [&](const v1::Checkpoint& c) {
    answers += c.SerializeAsString();
    return true;
  }));
  EXPECT_THAT(answers, ::testing::Not(HasSubstr(lease.lease_secret())));

  // A report forged from what ListJobs shows (job id, epoch, worker id): refused, even
  // under the holder's own worker id, and nothing is written.
  v1::LeasedJob forged;
  *forged.mutable_job() = listed[0];
  *forged.mutable_task_headers() = lease.task_headers();
  const std::string holder = listed[0].worker_id();
  ASSERT_EQ(holder, "w1");
  std::string wrong = lease.lease_secret();
  wrong[0] = wrong[0] == '0' ? '1' : '0';
  for (const std::string& secret : {std::string(), wrong}) {
    forged.set_lease_secret(secret);
    for (const std::string& worker : {holder, std::string("mallory")}) {
      auto chunks = Report(forged, worker);
      EXPECT_THAT(coordinator_->CheckReportStart(chunks[0]),
                  StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("does not prove the lease")));
      EXPECT_THAT(coordinator_->ReportResults(chunks),
                  StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("does not prove the lease")));
      v1::HeartbeatRequest hb;
      hb.set_worker_id(worker);
      hb.set_job_id(listed[0].id());
      hb.set_epoch(listed[0].epoch());
      hb.set_lease_secret(secret);
      EXPECT_THAT(coordinator_->Heartbeat(hb), StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("")));
      EXPECT_THAT(Fail(forged, worker, /*retryable=*/false),
                  StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("")));
    }
  }
  EXPECT_EQ(PredictionCount("r", 100), 0);
  EXPECT_EQ(store_->GetJob(lease.job().id())->state(), v1::JOB_LEASED);

  // The holder, with the secret, commits; a replay is recognised only with the secret.
  auto chunks = Report(lease, "w1");
  ASSERT_OK(coordinator_->ReportResults(chunks));
  ASSERT_OK_AND_ASSIGN(v1::ReportResultsResponse replay, coordinator_->ReportResults(chunks));
  EXPECT_TRUE(replay.replay());
  forged.set_lease_secret("");
  EXPECT_THAT(coordinator_->ReportResults(Report(forged, "w1")),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("")));
}

TEST_F(CoordinatorTest, LeaseSecretsHoldAcrossARestartAndDifferPerLease) {
  CreateRun("r");
  Register("w1");
  v1::LeasedJob first = AdmitAndLease("r", 100, "w1");
  ASSERT_OK(Fail(first, "w1", /*retryable=*/true));
  clock_.AdvanceSeconds(60);  // past the backoff
  v1::LeasedJob second = Acquire("w1")->lease();
  ASSERT_EQ(second.job().id(), first.job().id());
  EXPECT_NE(second.lease_secret(), first.lease_secret());  // a new epoch, a new secret

  Restart();
  Register("w1");
  ASSERT_OK(coordinator_->ReportResults(Report(second, "w1")));
  EXPECT_EQ(store_->GetJob(second.job().id())->state(), v1::JOB_DONE);
}

TEST_F(CoordinatorTest, StoppingWorkerHandsTheJobBackWithoutUsingAnAttempt) {
  CreateRun("r");
  Register("w1");
  Register("w2");
  const std::string retryable_failures =
      "steadyeval_job_attempt_failures_total{kind=\"raw\",reason=\"retryable\",run=\"r\"}";
  v1::LeasedJob lease = AdmitAndLease("r", 100, "w1");
  for (int i = 0; i < 5; ++i) {  // more than max_attempts
    v1::FailJobRequest stop;
    stop.set_worker_id(lease.job().worker_id());
    stop.set_job_id(lease.job().id());
    stop.set_epoch(lease.job().epoch());
    stop.set_lease_secret(lease.lease_secret());
    stop.set_reason(kWorkerStoppingReason);
    stop.set_retryable(true);
    ASSERT_OK_AND_ASSIGN(v1::FailJobResponse response, coordinator_->FailJob(stop));
    EXPECT_EQ(response.state(), v1::JOB_PENDING);
    EXPECT_EQ(store_->GetJob(lease.job().id())->attempts(), 0u);
    EXPECT_EQ(store_->GetCheckpoint("r", 100)->state(), v1::CHECKPOINT_PENDING);
    // Leasable at once (no backoff, the clock has not moved), by another worker.
    auto next = Acquire(i % 2 == 0 ? "w2" : "w1");
    ASSERT_OK(next);
    ASSERT_TRUE(next->has_job());
    lease = next->lease();
    EXPECT_EQ(lease.job().attempts(), 1u);
  }
  EXPECT_FALSE(Metric(retryable_failures).value_or(0) > 0) << MetricsText();
  // The same reason on a permanent failure is a failure.
  ASSERT_OK_AND_ASSIGN(v1::FailJobResponse failed,
                       [&] {
                         v1::FailJobRequest r;
                         r.set_worker_id(lease.job().worker_id());
                         r.set_job_id(lease.job().id());
                         r.set_epoch(lease.job().epoch());
                         r.set_lease_secret(lease.lease_secret());
                         r.set_reason(kWorkerStoppingReason);
                         r.set_retryable(false);
                         return coordinator_->FailJob(r);
                       }());
  EXPECT_EQ(failed.state(), v1::JOB_FAILED);
}

// ---- admin ----

TEST_F(CoordinatorTest, PausedRunAdmitsAndLeasesNothingUntilResumedAcrossRestarts) {
  CreateRun("r");
  CreateRun("s");
  Register("w1");
  checkpoints_.Add("r", 100);
  ASSERT_OK(coordinator_->PollRunsOnce());
  ASSERT_OK_AND_ASSIGN(v1::Run paused, coordinator_->SetRunPaused("r", true));
  EXPECT_TRUE(paused.paused());
  ASSERT_OK(coordinator_->SetRunPaused("r", true));  // idempotent
  ASSERT_OK_AND_ASSIGN(v1::AcquireJobResponse none, Acquire("w1"));
  EXPECT_FALSE(none.has_job());
  checkpoints_.Add("r", 200);
  ASSERT_OK(coordinator_->PollRunsOnce());
  EXPECT_EQ(coordinator_->scheduler()->Checkpoints("r").size(), 1u);  // 200 not admitted
  // Other runs carry on.
  checkpoints_.Add("s", 100);
  ASSERT_OK(coordinator_->PollRunsOnce());
  ASSERT_OK_AND_ASSIGN(v1::AcquireJobResponse other, Acquire("w1"));
  ASSERT_TRUE(other.has_job());
  EXPECT_EQ(other.lease().job().run(), "s");

  Restart();
  Register("w1");
  EXPECT_TRUE(coordinator_->GetRun("r")->run().paused());
  EXPECT_TRUE(store_->GetRun("r")->paused());
  ASSERT_OK_AND_ASSIGN(none, Acquire("w1"));
  EXPECT_FALSE(none.has_job());

  ASSERT_OK_AND_ASSIGN(v1::Run resumed, coordinator_->SetRunPaused("r", false));
  EXPECT_FALSE(resumed.paused());
  ASSERT_OK(coordinator_->PollRunsOnce());
  EXPECT_EQ(coordinator_->scheduler()->Checkpoints("r").size(), 2u);
  ASSERT_OK_AND_ASSIGN(v1::AcquireJobResponse leased, Acquire("w1"));
  ASSERT_TRUE(leased.has_job());
  EXPECT_EQ(leased.lease().job().run(), "r");
  EXPECT_EQ(leased.lease().job().steps(0), 200u);
  EXPECT_THAT(coordinator_->SetRunPaused("nope", true),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
}

TEST_F(CoordinatorTest, DeleteRunRemovesEveryKeyAndSeriesAndRefusesItsLeases) {
  CreateRun("r");
  CreateRun("keep");
  Register("w1");
  v1::LeasedJob done = AdmitAndLease("r", 100, "w1");
  ASSERT_OK(coordinator_->ReportResults(Report(done, "w1")));
  v1::LeasedJob keep = AdmitAndLease("keep", 100, "w1");
  ASSERT_OK(coordinator_->ReportResults(Report(keep, "w1")));
  v1::LeasedJob held = AdmitAndLease("r", 200, "w1");
  Store::Batch drift = store_->NewBatch();
  v1::ParameterDrift d;
  d.set_from_step(100);
  d.set_to_step(200);
  drift.PutDrift("r", d);
  ASSERT_OK(store_->Commit(std::move(drift)));
  ASSERT_OK(coordinator_->Tick());
  ASSERT_THAT(MetricsText(), HasSubstr("run=\"r\""));
  ASSERT_OK_AND_ASSIGN(uint64_t run_keys, store_->CountRunKeys("r"));

  ASSERT_OK_AND_ASSIGN(v1::DeleteRunResponse deleted, coordinator_->DeleteRun("r"));
  EXPECT_EQ(deleted.keys_deleted(), run_keys + 2);  // and its two jobs
  EXPECT_GT(run_keys, 10u);

  // Nothing of r is left in any family; keep is untouched.
  EXPECT_THAT(store_->GetRun("r"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("")));
  EXPECT_EQ(*store_->CountRunKeys("r"), 0u);
  ASSERT_OK(store_->ScanJobs([](const v1::Job& j) {
    EXPECT_NE(j.run(), "r");
    return true;
  }));
  EXPECT_EQ(PredictionCount("r", 100), 0);
  EXPECT_EQ(PredictionCount("keep", 100), 5);
  EXPECT_GT(*store_->CountRunKeys("keep"), 5u);
  EXPECT_THAT(coordinator_->GetRun("r"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("'r'")));
  EXPECT_EQ(coordinator_->ListRuns(0, "")->runs_size(), 1);
  const std::string metrics = MetricsText();
  EXPECT_THAT(metrics, ::testing::Not(HasSubstr("run=\"r\""))) << metrics;
  EXPECT_THAT(metrics, HasSubstr("run=\"keep\""));

  // The worker still holding a lease of r is told to stop.
  v1::HeartbeatRequest hb;
  hb.set_worker_id("w1");
  hb.set_job_id(held.job().id());
  hb.set_epoch(held.job().epoch());
  hb.set_lease_secret(held.lease_secret());
  EXPECT_THAT(coordinator_->Heartbeat(hb), StatusIs(absl::StatusCode::kAborted, HasSubstr("deleted")));
  EXPECT_THAT(coordinator_->ReportResults(Report(held, "w1")),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("deleted")));
  EXPECT_THAT(Fail(held, "w1", true), StatusIs(absl::StatusCode::kAborted, HasSubstr("deleted")));

  // Its discovery is gone; the name can be reused; a restart does not bring it back.
  checkpoints_.Add("r", 300);
  ASSERT_OK(coordinator_->PollRunsOnce());
  EXPECT_TRUE(coordinator_->scheduler()->Checkpoints("r").empty());
  EXPECT_THAT(coordinator_->DeleteRun("r"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("")));
  Restart();
  EXPECT_THAT(coordinator_->GetRun("r"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("")));
  CreateRun("r");
  EXPECT_TRUE(coordinator_->scheduler()->Checkpoints("r").empty());
}

TEST_F(CoordinatorTest, DeleteRunStopsItsRunningPoller) {
  options_.poll_interval_ms = 1;
  Restart();
  CreateRun("r");
  CreateRun("keep");
  coordinator_->Start();
  checkpoints_.Add("r", 100);
  ASSERT_OK(coordinator_->DeleteRun("r"));  // joins r's poller
  checkpoints_.Add("keep", 100);
  ASSERT_TRUE(testing::WaitFor(
      [&] { return coordinator_->scheduler()->Checkpoints("keep").size() == 1; },
      std::chrono::seconds(60), std::chrono::milliseconds(2)));
  EXPECT_TRUE(coordinator_->scheduler()->Checkpoints("r").empty());
  coordinator_->Stop();
}

TEST_F(CoordinatorTest, RequeueGivesFailedJobsAFreshBudget) {
  CreateRun("r");
  Register("w1");
  v1::LeasedJob first = AdmitAndLease("r", 100, "w1");
  ASSERT_OK(Fail(first, "w1", /*retryable=*/false));
  v1::LeasedJob second = AdmitAndLease("r", 200, "w1");
  ASSERT_OK(Fail(second, "w1", /*retryable=*/false));
  ASSERT_EQ(store_->GetCheckpoint("r", 100)->state(), v1::CHECKPOINT_FAILED);

  v1::RequeueJobsRequest by_id;
  by_id.add_job_ids(first.job().id());
  ASSERT_OK_AND_ASSIGN(v1::RequeueJobsResponse requeued, coordinator_->RequeueJobs(by_id));
  EXPECT_THAT(requeued.requeued(), ::testing::ElementsAre(first.job().id()));
  EXPECT_EQ(store_->GetJob(first.job().id())->state(), v1::JOB_PENDING);
  EXPECT_EQ(store_->GetJob(first.job().id())->attempts(), 0u);
  EXPECT_EQ(store_->GetCheckpoint("r", 100)->state(), v1::CHECKPOINT_PENDING);
  ASSERT_OK_AND_ASSIGN(v1::AcquireJobResponse again, Acquire("w1"));
  ASSERT_TRUE(again.has_job());
  EXPECT_EQ(again.lease().job().id(), first.job().id());
  ASSERT_OK(coordinator_->ReportResults(Report(again.lease(), "w1")));
  EXPECT_EQ(store_->GetCheckpoint("r", 100)->state(), v1::CHECKPOINT_EVALUATED);
  // A done job cannot be requeued; nothing changes.
  EXPECT_THAT(coordinator_->RequeueJobs(by_id),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("only failed jobs")));

  v1::RequeueJobsRequest by_run;
  by_run.set_run("r");
  by_run.set_state(v1::JOB_FAILED);
  ASSERT_OK_AND_ASSIGN(requeued, coordinator_->RequeueJobs(by_run));
  EXPECT_THAT(requeued.requeued(), ::testing::ElementsAre(second.job().id()));
  ASSERT_OK_AND_ASSIGN(requeued, coordinator_->RequeueJobs(by_run));
  EXPECT_EQ(requeued.requeued_size(), 0);  // none left

  v1::RequeueJobsRequest both = by_run;
  both.add_job_ids(1);
  EXPECT_THAT(coordinator_->RequeueJobs(both), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("either")));
  EXPECT_THAT(coordinator_->RequeueJobs(v1::RequeueJobsRequest()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("either")));
  by_run.set_state(v1::JOB_DONE);
  EXPECT_THAT(coordinator_->RequeueJobs(by_run),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("only failed jobs")));
  by_run.set_run("nope");
  EXPECT_THAT(coordinator_->RequeueJobs(by_run), StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  v1::RequeueJobsRequest unknown;
  unknown.add_job_ids(999);
  EXPECT_THAT(coordinator_->RequeueJobs(unknown), StatusIs(absl::StatusCode::kNotFound, HasSubstr("999")));
}

TEST_F(CoordinatorTest, ClearTokenizerPinLetsTheNextResultPinAgain) {
  CreateRun("r");
  Register("w1");
  const std::string a(64, 'a'), b(64, 'b');
  auto chunks = Report(AdmitAndLease("r", 100, "w1"), "w1");
  for (auto& c : chunks) c.set_tokenizer_sha256(a);
  ASSERT_OK(coordinator_->ReportResults(chunks));
  chunks = Report(AdmitAndLease("r", 200, "w1"), "w1");
  for (auto& c : chunks) c.set_tokenizer_sha256(b);
  ASSERT_THAT(coordinator_->ReportResults(chunks),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pinned")));

  ASSERT_OK_AND_ASSIGN(v1::Run cleared, coordinator_->ClearTokenizerPin("r"));
  EXPECT_EQ(cleared.tokenizer_sha256(), "");
  EXPECT_EQ(store_->GetRun("r")->tokenizer_sha256(), "");
  ASSERT_OK(coordinator_->ReportResults(chunks));
  EXPECT_EQ(coordinator_->GetRun("r")->run().tokenizer_sha256(), b);
  EXPECT_EQ(coordinator_->GetRun("r")->run().tokenizer_pinned_step(), 200u);
  EXPECT_THAT(coordinator_->ClearTokenizerPin("nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
}

// ---- visible reasons ----

TEST_F(CoordinatorTest, PendingCheckpointsCarryTheReasonAndLogOnlyChanges) {
  CreateRun("r");
  PendingDiscovery garbage = Seen(300, clock_.MonotonicNanos(), "step_000300: config.json is not JSON");
  garbage.reason_since_unix_ms = 1'700'000'000'000;
  garbage.reason_changed = true;
  checkpoints_.SetSeen("r", {garbage});
  ::testing::internal::CaptureStderr();
  ASSERT_OK(coordinator_->PollRunsOnce());
  garbage.reason_changed = false;  // the next poll sees the same reason
  checkpoints_.SetSeen("r", {garbage});
  ASSERT_OK(coordinator_->PollRunsOnce());
  const std::string log = ::testing::internal::GetCapturedStderr();
  size_t lines = 0;
  for (size_t pos = log.find("config.json is not JSON"); pos != std::string::npos;
       pos = log.find("config.json is not JSON", pos + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << log;  // the poll that saw it first, not every poll
  EXPECT_THAT(log, HasSubstr("run r: checkpoint folder /ckpt/step_300 not admitted yet"));

  ASSERT_OK_AND_ASSIGN(v1::ListPendingCheckpointsResponse pending,
                       coordinator_->ListPendingCheckpoints("r"));
  ASSERT_EQ(pending.pending_size(), 1);
  EXPECT_EQ(pending.pending(0).step(), 300u);
  EXPECT_EQ(pending.pending(0).path(), "/ckpt/step_300");
  EXPECT_EQ(pending.pending(0).reason(), "step_000300: config.json is not JSON");
  EXPECT_EQ(pending.pending(0).since_unix_ms(), 1'700'000'000'000);
  EXPECT_TRUE(pending.pending(0).incomplete());
  EXPECT_THAT(coordinator_->ListPendingCheckpoints("nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
}

// The production discovery (a CheckpointWatcher per run) behind the coordinator.
TEST(CoordinatorWatcherTest, GarbageConfigIsShownWithItsReasonUntilFixedThenAdmitted) {
  testing::TempDir dir;
  const std::string source = dir / "ckpt";
  const std::string ckpt = source + "/step_000100";
  testing::WriteSafetensorsCheckpoint(ckpt);
  testing::WriteFile(ckpt + "/config.json", "{\"model_type\": ");  // cut off
  FakeClock clock;
  auto store = Store::Open(dir / "db");
  ASSERT_OK(store);
  auto coordinator =
      Coordinator::Create(store->get(), &clock, WatcherDiscoveryFactory(&clock), CoordinatorOptions());
  ASSERT_OK(coordinator);
  Coordinator& c = **coordinator;
  v1::RunConfig config;
  config.set_name("r");
  config.set_source(source);
  config.set_settle_seconds(5);
  ASSERT_OK(c.CreateRun(config, {McTaskFile()}));

  ::testing::internal::CaptureStderr();
  ASSERT_OK(c.PollRunsOnce());
  const int64_t seen_ms = clock.UnixMillis();
  clock.AdvanceSeconds(60);
  ASSERT_OK(c.PollRunsOnce());
  ASSERT_OK_AND_ASSIGN(v1::ListPendingCheckpointsResponse pending, c.ListPendingCheckpoints("r"));
  ASSERT_EQ(pending.pending_size(), 1);
  EXPECT_EQ(pending.pending(0).step(), 100u);
  EXPECT_EQ(pending.pending(0).path(), ckpt);
  EXPECT_THAT(pending.pending(0).reason(), HasSubstr("config.json"));
  EXPECT_TRUE(pending.pending(0).incomplete());
  EXPECT_EQ(pending.pending(0).since_unix_ms(), seen_ms);
  EXPECT_TRUE(c.scheduler()->Checkpoints("r").empty());

  testing::WriteFile(ckpt + "/config.json", testing::kConfigJson);
  ASSERT_OK(c.PollRunsOnce());
  ASSERT_OK_AND_ASSIGN(pending, c.ListPendingCheckpoints("r"));
  ASSERT_EQ(pending.pending_size(), 1);
  EXPECT_FALSE(pending.pending(0).incomplete());
  EXPECT_THAT(pending.pending(0).reason(), ::testing::StartsWith("settling"));
  clock.AdvanceSeconds(5);
  ASSERT_OK(c.PollRunsOnce());
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_OK_AND_ASSIGN(pending, c.ListPendingCheckpoints("r"));
  EXPECT_EQ(pending.pending_size(), 0);
  ASSERT_EQ(c.scheduler()->Checkpoints("r").size(), 1u);
  EXPECT_EQ(c.scheduler()->Checkpoints("r")[0].step(), 100u);
  // One line per reason (garbage, then settling), not one per poll.
  size_t lines = 0;
  for (size_t pos = log.find("not admitted yet"); pos != std::string::npos;
       pos = log.find("not admitted yet", pos + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 2u) << log;
}


// Scores and jobs stored before the typed variant fields (text alone) are served with
// them; a request may name its variant either way.
TEST_F(CoordinatorTest, RecordsStoredWithoutTypedVariantsAreServedWithThem) {
  CreateRun("r");
  Register("w1");
  v1::LeasedJob lease = AdmitAndLease("r", 100, "w1");
  EXPECT_EQ(lease.job().kind_spec().kind(), v1::VARIANT_RAW);
  ASSERT_OK(coordinator_->ReportResults(Report(lease, "w1")));
  ASSERT_OK_AND_ASSIGN(v1::Score stored, store_->GetScore("r", "qa", "raw", 100));
  EXPECT_EQ(stored.variant_spec().kind(), v1::VARIANT_RAW);  // new records carry both
  // Make every score and job an old record.
  Store::Batch batch = store_->NewBatch();
  for (const char* task : {"mc", "qa"}) {
    ASSERT_OK_AND_ASSIGN(v1::Score old, store_->GetScore("r", task, "raw", 100));
    old.clear_variant_spec();
    batch.PutScore(old);
  }
  ASSERT_OK_AND_ASSIGN(v1::Job job, store_->GetJob(lease.job().id()));
  job.clear_kind_spec();
  batch.PutJob(job);
  ASSERT_OK(store_->Commit(std::move(batch)));
  ASSERT_FALSE(store_->GetScore("r", "qa", "raw", 100)->has_variant_spec());
  Restart();

  auto scores = [&](const v1::GetScoresRequest& request) {
    std::vector<std::string> out;
    EXPECT_OK(coordinator_->GetScores(request, [&](const v1::Score& s) {
      EXPECT_EQ(s.variant(), "raw");
      EXPECT_EQ(s.variant_spec().kind(), v1::VARIANT_RAW) << s.task();
      out.push_back(s.task());
      return true;
    }));
    return out;
  };
  v1::GetScoresRequest request;
  request.set_run("r");
  EXPECT_THAT(scores(request), ::testing::ElementsAre("mc", "qa"));  // all
  request.set_variant("raw");                                        // an old client
  EXPECT_THAT(scores(request), ::testing::ElementsAre("mc", "qa"));
  request.set_variant("");                                           // typed only
  request.mutable_variant_spec()->set_kind(v1::VARIANT_RAW);
  EXPECT_THAT(scores(request), ::testing::ElementsAre("mc", "qa"));
  request.set_variant("raw");  // the typed field wins over the text
  request.mutable_variant_spec()->set_kind(v1::VARIANT_AVERAGE);
  request.mutable_variant_spec()->set_window(2);
  EXPECT_THAT(scores(request), ::testing::IsEmpty());
  request.clear_variant_spec();
  request.set_variant("avg@02");
  EXPECT_THAT(coordinator_->GetScores(request, [](const v1::Score&) { return true; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'avg@02'")));

  std::vector<v1::Job> jobs;
  ASSERT_OK(coordinator_->ListJobs("r", [&](const v1::Job& j) {
    jobs.push_back(j);
    return true;
  }));
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].kind(), "raw");
  EXPECT_EQ(jobs[0].kind_spec().kind(), v1::VARIANT_RAW);
}

}  // namespace
}  // namespace steadyeval
