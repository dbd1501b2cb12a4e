#include "server/jobs/scheduler.h"

#include <filesystem>
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "api/variant_proto.h"
#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval {
namespace {

using ::testing::HasSubstr;
using ::steadyeval::testing::IsOk;
using ::steadyeval::testing::StatusIs;

constexpr int64_t kTtlMs = 10'000;
constexpr int64_t kBackoffMs = 1'000;

v1::Run MakeRun(const std::string& name) {
  v1::Run run;
  run.mutable_config()->set_name(name);
  v1::TaskRef* t = run.mutable_config()->add_tasks();
  t->set_name("task");
  t->set_sha256(std::string(64, 'a'));
  return run;
}

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::path(::testing::TempDir()) /
            ("scheduler_test_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name())))
               .string();
    std::filesystem::remove_all(dir_);
    options_.lease_ttl_ms = kTtlMs;
    options_.backoff_initial_ms = kBackoffMs;
    options_.max_attempts = 3;
    Reopen();
  }
  void TearDown() override {
    scheduler_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  // Simulates a coordinator restart: a new store handle and scheduler on the same data.
  void Reopen() {
    scheduler_.reset();
    store_.reset();
    auto store = Store::Open(dir_);
    ASSERT_OK(store);
    store_ = std::move(*store);
    auto scheduler = Scheduler::Create(store_.get(), &clock_, options_);
    ASSERT_OK(scheduler);
    scheduler_ = std::move(*scheduler);
  }
  uint64_t Admit(const std::string& run, uint64_t step) {
    auto job = scheduler_->AdmitCheckpoint(MakeRun(run), step, "/ckpt/" + std::to_string(step));
    EXPECT_OK(job);
    EXPECT_TRUE(job->has_value());
    return job.ok() && job->has_value() ? (*job)->raw_job.id() : 0;
  }
  v1::Job LeaseOrDie(const std::string& worker) {
    auto job = scheduler_->Lease(worker);
    EXPECT_OK(job);
    EXPECT_TRUE(job.ok() && job->has_value()) << "no leasable job";
    return job.ok() && job->has_value() ? **job : v1::Job();
  }
  bool NothingLeasable() {
    auto job = scheduler_->Lease("probe");
    return job.ok() && !job->has_value();
  }
  v1::Job Stored(uint64_t id) { return *store_->GetJob(id); }

  std::string dir_;
  FakeClock clock_;
  SchedulerOptions options_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(SchedulerTest, LegalTransitionsAreTheDesignedOnes) {
  EXPECT_TRUE(Scheduler::IsLegalTransition(v1::JOB_PENDING, v1::JOB_LEASED));
  EXPECT_TRUE(Scheduler::IsLegalTransition(v1::JOB_LEASED, v1::JOB_DONE));
  EXPECT_TRUE(Scheduler::IsLegalTransition(v1::JOB_LEASED, v1::JOB_FAILED));
  EXPECT_TRUE(Scheduler::IsLegalTransition(v1::JOB_LEASED, v1::JOB_PENDING));
  EXPECT_FALSE(Scheduler::IsLegalTransition(v1::JOB_PENDING, v1::JOB_DONE));
  EXPECT_FALSE(Scheduler::IsLegalTransition(v1::JOB_DONE, v1::JOB_LEASED));
  EXPECT_FALSE(Scheduler::IsLegalTransition(v1::JOB_FAILED, v1::JOB_LEASED));
}

TEST_F(SchedulerTest, AdmitsEachCheckpointOnceWithOneRawJob) {
  uint64_t id = Admit("a", 100);
  auto again = scheduler_->AdmitCheckpoint(MakeRun("a"), 100, "/elsewhere");
  ASSERT_OK(again);
  EXPECT_FALSE(again->has_value());
  v1::Job job = Stored(id);
  EXPECT_EQ(job.kind(), "raw");
  EXPECT_EQ(job.state(), v1::JOB_PENDING);
  EXPECT_EQ(job.tasks_size(), 1);
  EXPECT_EQ(store_->GetCheckpoint("a", 100)->state(), v1::CHECKPOINT_PENDING);
  EXPECT_EQ(store_->GetCheckpoint("a", 100)->path(), "/ckpt/100");
  EXPECT_EQ(*store_->GetNextJobId(), id + 1);
}

TEST_F(SchedulerTest, NewestStepFirstAndRoundRobinAcrossRuns) {
  Admit("a", 100);
  Admit("a", 300);
  Admit("a", 200);
  Admit("b", 50);
  Admit("b", 60);
  std::vector<std::string> order;
  for (int i = 0; i < 5; ++i) {
    v1::Job job = LeaseOrDie("w");
    order.push_back(job.run() + "@" + std::to_string(job.steps(0)));
  }
  EXPECT_THAT(order, ::testing::ElementsAre("a@300", "b@60", "a@200", "b@50", "a@100"));
  EXPECT_TRUE(NothingLeasable());
}

TEST_F(SchedulerTest, RawBeforeAveragingAtTheSameStep) {
  {
    // An avg@2 job with a lower id than the raw job at the same window-end step.
    Store::Batch batch = store_->NewBatch();
    v1::Job avg;
    avg.set_id(1);
    avg.set_run("a");
    avg.set_kind("avg@2");
    avg.add_steps(100);
    avg.add_steps(200);
    avg.set_state(v1::JOB_PENDING);
    batch.PutJob(avg);
    v1::Job raw = avg;
    raw.set_id(2);
    raw.set_kind("raw");
    raw.clear_steps();
    raw.add_steps(200);
    batch.PutJob(raw);
    v1::Job old = raw;
    old.set_id(3);
    old.clear_steps();
    old.add_steps(100);
    batch.PutJob(old);
    ASSERT_OK(store_->Commit(std::move(batch)));
  }
  Reopen();
  EXPECT_EQ(LeaseOrDie("w").id(), 2u);  // raw@200
  EXPECT_EQ(LeaseOrDie("w").id(), 1u);  // avg@2 ending at 200
  EXPECT_EQ(LeaseOrDie("w").id(), 3u);  // raw@100
  EXPECT_EQ(Admit("a", 300), 4u);       // next id continues after the loaded jobs
}

TEST_F(SchedulerTest, LeaseSetsEpochWorkerAndCheckpointEvaluating) {
  uint64_t id = Admit("a", 100);
  v1::Job job = LeaseOrDie("w1");
  EXPECT_EQ(job.id(), id);
  EXPECT_EQ(job.epoch(), 1u);
  EXPECT_EQ(job.attempts(), 1u);
  EXPECT_EQ(job.worker_id(), "w1");
  EXPECT_EQ(Stored(id).state(), v1::JOB_LEASED);
  EXPECT_EQ(Stored(id).epoch(), 1u);
  EXPECT_EQ(store_->GetCheckpoint("a", 100)->state(), v1::CHECKPOINT_EVALUATING);
  EXPECT_EQ(*scheduler_->LeaseExpiryNanos(id), clock_.MonotonicNanos() + kTtlMs * 1'000'000);
}

TEST_F(SchedulerTest, LeaseExpiryReturnsTheSameJobToPendingAndBumpsEpochOnReLease) {
  uint64_t id = Admit("a", 100);
  LeaseOrDie("w1");
  clock_.AdvanceNanos(kTtlMs * 1'000'000 - 1);
  EXPECT_TRUE(scheduler_->ExpireLeases()->empty());
  clock_.AdvanceNanos(1);
  EXPECT_THAT(*scheduler_->ExpireLeases(), ::testing::ElementsAre(id));
  v1::Job stored = Stored(id);
  EXPECT_EQ(stored.state(), v1::JOB_PENDING);
  EXPECT_THAT(stored.error(), HasSubstr("lease expired: worker w1"));
  EXPECT_EQ(store_->GetCheckpoint("a", 100)->state(), v1::CHECKPOINT_PENDING);

  EXPECT_TRUE(NothingLeasable());  // backoff
  clock_.AdvanceNanos(kBackoffMs * 1'000'000);
  v1::Job again = LeaseOrDie("w2");
  EXPECT_EQ(again.id(), id);
  EXPECT_EQ(again.epoch(), 2u);
  EXPECT_EQ(again.attempts(), 2u);
  EXPECT_EQ(again.worker_id(), "w2");
}

TEST_F(SchedulerTest, HeartbeatExtendsTheLease) {
  uint64_t id = Admit("a", 100);
  LeaseOrDie("w1");
  clock_.AdvanceNanos(kTtlMs * 1'000'000 / 2);
  ASSERT_OK(scheduler_->Heartbeat(id, 1, "w1"));
  clock_.AdvanceNanos(kTtlMs * 1'000'000 / 2 + 1);
  EXPECT_TRUE(scheduler_->ExpireLeases()->empty());
  EXPECT_EQ(Stored(id).state(), v1::JOB_LEASED);
}

TEST_F(SchedulerTest, StaleEpochIsAbortedAndChangesNothing) {
  uint64_t id = Admit("a", 100);
  LeaseOrDie("w1");
  clock_.AdvanceNanos(kTtlMs * 1'000'000);
  ASSERT_OK(scheduler_->ExpireLeases());
  clock_.AdvanceNanos(kBackoffMs * 1'000'000);
  LeaseOrDie("w2");  // epoch 2
  const v1::Job before = Stored(id);
  const int64_t expiry = *scheduler_->LeaseExpiryNanos(id);

  EXPECT_THAT(scheduler_->Heartbeat(id, 1, "w1"),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("epoch 2 held by worker w2")));
  EXPECT_THAT(scheduler_->Heartbeat(id, 2, "w1"), StatusIs(absl::StatusCode::kAborted, HasSubstr("w1")));
  EXPECT_THAT(scheduler_->CheckReport(id, 1, "w1"), StatusIs(absl::StatusCode::kAborted, HasSubstr("")));
  EXPECT_THAT(scheduler_->Fail(id, 1, "w1", "oops", JobFailure::kPermanent),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("")));
  Store::Batch results = store_->NewBatch();
  v1::Prediction p;
  p.set_output("x");
  results.PutPrediction("a", "task", "raw", 100, 0, p);
  EXPECT_THAT(scheduler_->Complete(id, 1, "w1", std::move(results)),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("")));

  EXPECT_EQ(Stored(id).SerializeAsString(), before.SerializeAsString());
  EXPECT_EQ(*scheduler_->LeaseExpiryNanos(id), expiry);
  EXPECT_THAT(store_->GetPrediction("a", "task", "raw", 100, 0),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("")));
  EXPECT_THAT(scheduler_->Heartbeat(999, 1, "w1"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("job 999")));
}

TEST_F(SchedulerTest, CompleteCommitsResultsJobAndCheckpointTogetherThenReplays) {
  uint64_t id = Admit("a", 100);
  LeaseOrDie("w1");
  clock_.AdvanceSeconds(7);
  Store::Batch results = store_->NewBatch();
  v1::Prediction p;
  p.set_output("x");
  results.PutPrediction("a", "task", "raw", 100, 0, p);
  auto done = scheduler_->Complete(id, 1, "w1", std::move(results));
  ASSERT_OK(done);
  EXPECT_DOUBLE_EQ(done->duration_seconds, 7);
  EXPECT_EQ(Stored(id).state(), v1::JOB_DONE);
  EXPECT_EQ(store_->GetCheckpoint("a", 100)->state(), v1::CHECKPOINT_EVALUATED);
  EXPECT_EQ(store_->GetPrediction("a", "task", "raw", 100, 0)->output(), "x");

  auto replay = scheduler_->CheckReport(id, 1, "w1");
  ASSERT_OK(replay);
  EXPECT_TRUE(replay->replay);
  EXPECT_THAT(scheduler_->CheckReport(id, 2, "w1"), StatusIs(absl::StatusCode::kAborted, HasSubstr("done")));
}

TEST_F(SchedulerTest, RetriesWithExponentialBackoffThenFails) {
  uint64_t id = Admit("a", 100);
  LeaseOrDie("w");
  ASSERT_THAT(scheduler_->Fail(id, 1, "w", "cuda oom", JobFailure::kRetryable), IsOk());
  EXPECT_EQ(Stored(id).state(), v1::JOB_PENDING);
  clock_.AdvanceNanos(kBackoffMs * 1'000'000 - 1);
  EXPECT_TRUE(NothingLeasable());
  clock_.AdvanceNanos(1);
  LeaseOrDie("w");  // attempt 2
  ASSERT_OK(scheduler_->Fail(id, 2, "w", "cuda oom", JobFailure::kRetryable));
  clock_.AdvanceNanos(2 * kBackoffMs * 1'000'000 - 1);  // doubled
  EXPECT_TRUE(NothingLeasable());
  clock_.AdvanceNanos(1);
  LeaseOrDie("w");  // attempt 3, the last
  auto state = scheduler_->Fail(id, 3, "w", "cuda oom", JobFailure::kRetryable);
  ASSERT_OK(state);
  EXPECT_EQ(*state, v1::JOB_FAILED);
  v1::Job stored = Stored(id);
  EXPECT_EQ(stored.state(), v1::JOB_FAILED);
  EXPECT_EQ(stored.error(), "gave up after 3 attempts; last error: cuda oom");
  v1::Checkpoint c = *store_->GetCheckpoint("a", 100);
  EXPECT_EQ(c.state(), v1::CHECKPOINT_FAILED);
  EXPECT_EQ(c.error(), stored.error());
  clock_.AdvanceSeconds(3600);
  EXPECT_TRUE(NothingLeasable());
}

TEST_F(SchedulerTest, PermanentFailureFailsAtOnce) {
  uint64_t id = Admit("a", 100);
  LeaseOrDie("w");
  auto state = scheduler_->Fail(id, 1, "w", "shape mismatch in layer 3", JobFailure::kPermanent);
  ASSERT_OK(state);
  EXPECT_EQ(*state, v1::JOB_FAILED);
  EXPECT_EQ(Stored(id).error(), "shape mismatch in layer 3");
  EXPECT_EQ(store_->GetCheckpoint("a", 100)->state(), v1::CHECKPOINT_FAILED);
}

TEST_F(SchedulerTest, RestartGivesLeasedJobsAFreshExpiryAndKeepsEpochAndWorker) {
  uint64_t id = Admit("a", 100);
  Admit("a", 200);
  LeaseOrDie("w1");  // step 200
  LeaseOrDie("w1");  // step 100
  ASSERT_OK(scheduler_->Fail(id + 1, 1, "w1", "x", JobFailure::kRetryable));  // leave one pending
  // The coordinator is down far longer than the TTL.
  clock_.AdvanceSeconds(3600);
  Reopen();
  v1::Job job = *scheduler_->GetJob(id);
  EXPECT_EQ(job.state(), v1::JOB_LEASED);
  EXPECT_EQ(job.epoch(), 1u);
  EXPECT_EQ(job.worker_id(), "w1");
  EXPECT_EQ(*scheduler_->LeaseExpiryNanos(id), clock_.MonotonicNanos() + kTtlMs * 1'000'000);
  EXPECT_TRUE(scheduler_->ExpireLeases()->empty());
  ASSERT_OK(scheduler_->Heartbeat(id, 1, "w1"));
  // The pending job survived the restart and is leasable at once (backoff is not kept).
  v1::Job pending = LeaseOrDie("w2");
  EXPECT_EQ(pending.id(), id + 1);
  EXPECT_EQ(pending.epoch(), 2u);
  EXPECT_EQ(Admit("a", 300), id + 2);
}

TEST_F(SchedulerTest, AnInheritedLeaseThatExpiresUnheardUsesNoAttempt) {
  const uint64_t unheard = Admit("a", 100);
  const uint64_t heard = Admit("a", 200);
  LeaseOrDie("w1");  // step 200
  LeaseOrDie("w2");  // step 100
  // The coordinator dies right after committing the leases: maybe no worker learned of them.
  Reopen();
  ASSERT_OK(scheduler_->Heartbeat(heard, 1, "w1"));  // w1 did, and says so
  clock_.AdvanceSeconds(2 * kTtlMs / 1000 + 1);
  // Only the heard lease's expiry is a failed attempt; the unheard one is refunded.
  EXPECT_THAT(*scheduler_->ExpireLeases(), ::testing::ElementsAre(heard));
  v1::Job refunded = *scheduler_->GetJob(unheard);
  EXPECT_EQ(refunded.state(), v1::JOB_PENDING);
  EXPECT_EQ(refunded.attempts(), 0u);
  EXPECT_THAT(refunded.error(), ::testing::HasSubstr("attempt not counted"));
  v1::Job counted = *scheduler_->GetJob(heard);
  EXPECT_EQ(counted.state(), v1::JOB_PENDING);
  EXPECT_EQ(counted.attempts(), 1u);
  // Refunded survives another restart (it is stored), and the job is leasable at once.
  Reopen();
  EXPECT_EQ(scheduler_->GetJob(unheard)->attempts(), 0u);
}

// ---- windows (DESIGN §3) ----

v1::Run WindowedRun(const std::string& name, std::vector<uint32_t> windows) {
  v1::Run run = MakeRun(name);
  for (uint32_t n : windows) run.mutable_config()->add_average_windows(n);
  return run;
}

std::string Describe(const v1::Job& job) {
  std::string out = job.kind() + "[";
  for (int i = 0; i < job.steps_size(); ++i) {
    out += (i ? "," : "") + std::to_string(job.steps(i));
  }
  return out + "]";
}

class WindowSchedulerTest : public SchedulerTest {
 protected:
  Admission AdmitWindowed(const v1::Run& run, uint64_t step) {
    auto a = scheduler_->AdmitCheckpoint(run, step, "/ckpt/" + std::to_string(step));
    EXPECT_OK(a);
    EXPECT_TRUE(a.ok() && a->has_value());
    return a.ok() && a->has_value() ? **a : Admission();
  }
  // Current (not superseded) jobs as "kind[steps]".
  std::vector<std::string> Current() {
    std::vector<std::string> out;
    for (const v1::Job& job : scheduler_->Jobs()) {
      if (job.state() != v1::JOB_SUPERSEDED) out.push_back(Describe(job));
    }
    std::sort(out.begin(), out.end());
    return out;
  }
};

TEST_F(WindowSchedulerTest, CreatesAWindowJobPerSizeOnceEnoughCheckpointsExist) {
  const v1::Run run = WindowedRun("a", {2, 3});
  EXPECT_TRUE(AdmitWindowed(run, 100).window_jobs.empty());
  Admission second = AdmitWindowed(run, 200);
  ASSERT_EQ(second.window_jobs.size(), 1u);
  EXPECT_EQ(Describe(second.window_jobs[0]), "avg@2[100,200]");
  Admission third = AdmitWindowed(run, 300);
  std::vector<std::string> made;
  for (const v1::Job& job : third.window_jobs) made.push_back(Describe(job));
  EXPECT_THAT(made, ::testing::ElementsAre("avg@2[200,300]", "avg@3[100,200,300]"));
  EXPECT_TRUE(third.superseded.empty());
  // Stored in the same batch as the checkpoint, with the run's tasks.
  v1::Job stored = Stored(third.window_jobs[1].id());
  EXPECT_EQ(stored.state(), v1::JOB_PENDING);
  EXPECT_EQ(stored.tasks_size(), 1);
  // Newest first, raw before avg@n (smaller n first) at the same step.
  std::vector<std::string> order;
  for (int i = 0; i < 6; ++i) order.push_back(Describe(LeaseOrDie("w")));
  EXPECT_THAT(order, ::testing::ElementsAre("raw[300]", "avg@2[200,300]", "avg@3[100,200,300]",
                                            "raw[200]", "avg@2[100,200]", "raw[100]"));
}

TEST_F(WindowSchedulerTest, LateAdmissionSupersedesExactlyTheNextNMinusOneWindows) {
  const v1::Run run = WindowedRun("a", {3});
  for (uint64_t step : {100, 200, 300, 400, 500}) AdmitWindowed(run, step);
  // The window ending at 400 is being evaluated when 250 turns up.
  uint64_t leased_id = 0;
  for (const v1::Job& job : scheduler_->Jobs()) {
    if (Describe(job) == "avg@3[200,300,400]") leased_id = job.id();
  }
  v1::Job leased;
  while (true) {
    leased = LeaseOrDie("w");
    if (leased.id() == leased_id || leased.id() == 0) break;
  }
  ASSERT_EQ(leased.id(), leased_id);

  Admission late = AdmitWindowed(run, 250);
  EXPECT_EQ(late.index, 2u);
  std::vector<std::string> made, gone;
  for (const v1::Job& job : late.window_jobs) made.push_back(Describe(job));
  for (const v1::Job& job : late.superseded) gone.push_back(Describe(job));
  EXPECT_THAT(made, ::testing::ElementsAre("avg@3[100,200,250]", "avg@3[200,250,300]",
                                           "avg@3[250,300,400]"));
  EXPECT_THAT(gone, ::testing::ElementsAre("avg@3[100,200,300]", "avg@3[200,300,400]"));
  for (size_t i = 0; i < late.superseded.size(); ++i) {
    const v1::Job stored = Stored(late.superseded[i].id());
    EXPECT_EQ(stored.state(), v1::JOB_SUPERSEDED);
    EXPECT_EQ(stored.superseded_by(), late.window_jobs[i + 1].id());
    EXPECT_THAT(stored.error(), HasSubstr("admitted late"));
  }
  EXPECT_THAT(Current(), ::testing::Contains("avg@3[300,400,500]"));  // unchanged
  // The superseded leased job's holder is told to stop: report and heartbeat are ABORTED.
  EXPECT_THAT(scheduler_->Heartbeat(leased_id, leased.epoch(), "w"),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("superseded")));
  EXPECT_THAT(scheduler_->CheckReport(leased_id, leased.epoch(), "w"),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("superseded")));
  EXPECT_THAT(scheduler_->Complete(leased_id, leased.epoch(), "w", store_->NewBatch()),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("")));
  // The memberships survive a restart; a later admission finds the current jobs.
  Reopen();
  Admission later = AdmitWindowed(run, 450);
  gone.clear();
  for (const v1::Job& job : later.superseded) gone.push_back(Describe(job));
  EXPECT_THAT(gone, ::testing::ElementsAre("avg@3[300,400,500]"));
}

// A database written before Job.kind_spec: its jobs have the text kind alone. They still
// index as windows (a late admission supersedes them), and leases and rewrites carry the
// typed kind from then on.
TEST_F(WindowSchedulerTest, JobsStoredWithoutTheTypedKindStillScheduleAndGainIt) {
  const v1::Run run = WindowedRun("a", {2});
  AdmitWindowed(run, 100);
  const uint64_t window = AdmitWindowed(run, 200).window_jobs.at(0).id();
  EXPECT_EQ(Stored(window).kind_spec().kind(), v1::VARIANT_AVERAGE);  // new records: both
  EXPECT_EQ(Stored(window).kind_spec().window(), 2u);
  {
    Store::Batch batch = store_->NewBatch();
    ASSERT_OK(store_->ScanJobs([&](const v1::Job& job) {
      v1::Job old = job;
      old.clear_kind_spec();
      batch.PutJob(old);
      return true;
    }));
    ASSERT_OK(store_->Commit(std::move(batch)));
  }
  ASSERT_FALSE(Stored(window).has_kind_spec());
  Reopen();
  // The old avg@2[100,200] is found by its text and superseded by the late 150.
  Admission late = AdmitWindowed(run, 150);
  ASSERT_EQ(late.superseded.size(), 1u);
  EXPECT_EQ(late.superseded[0].id(), window);
  EXPECT_EQ(Stored(window).state(), v1::JOB_SUPERSEDED);
  EXPECT_EQ(Stored(window).kind_spec().kind(), v1::VARIANT_AVERAGE);  // rewritten typed
  EXPECT_THAT(Current(), ::testing::ElementsAre("avg@2[100,150]", "avg@2[150,200]", "raw[100]",
                                                "raw[150]", "raw[200]"));
  // Every lease carries the typed kind, old records' included.
  for (int i = 0; i < 5; ++i) {
    v1::Job leased = LeaseOrDie("w");
    EXPECT_NE(leased.kind_spec().kind(), v1::VARIANT_KIND_UNSPECIFIED) << Describe(leased);
    EXPECT_EQ(ToString(*JobKindOf(leased)), leased.kind());
  }
}

TEST_F(WindowSchedulerTest, MembersGoneIsPermanent) {
  const v1::Run run = WindowedRun("a", {2});
  AdmitWindowed(run, 100);
  AdmitWindowed(run, 200);
  LeaseOrDie("w");                 // raw@200
  v1::Job avg = LeaseOrDie("w");   // avg@2
  ASSERT_EQ(avg.kind(), "avg@2");
  auto state = scheduler_->Fail(avg.id(), avg.epoch(), "w",
                                "members_gone: checkpoint 100 was deleted",
                                JobFailure::kMembersGone);
  ASSERT_OK(state);
  EXPECT_EQ(*state, v1::JOB_FAILED);
  EXPECT_THAT(Stored(avg.id()).error(), HasSubstr("members_gone"));
}

TEST_F(WindowSchedulerTest, AffinityPrefersTheSlidingWindowAndHonoursReservations) {
  const v1::Run run = WindowedRun("a", {2});
  for (uint64_t step : {100, 200, 300, 400}) AdmitWindowed(run, step);
  // Without affinity the newest raw job comes first.
  LeaseAffinity holder;
  holder.held.push_back(HeldWindow{"a", 2, {200, 300}});
  auto job = scheduler_->Lease("holder", holder);
  ASSERT_OK(job);
  ASSERT_TRUE(job->has_value());
  EXPECT_EQ(Describe(**job), "avg@2[200,300]");  // shares both members with the held sum
  job = scheduler_->Lease("holder", holder);
  ASSERT_OK(job);
  EXPECT_EQ(Describe(**job), "avg@2[300,400]");  // slides by one
  // Another worker skips avg@2 jobs reserved for the holder, takes the rest.
  LeaseAffinity other;
  other.reserved.insert({"a", 2});
  std::vector<std::string> taken;
  while (true) {
    auto next = scheduler_->Lease("other", other);
    ASSERT_OK(next);
    if (!next->has_value()) break;
    taken.push_back(Describe(**next));
  }
  EXPECT_THAT(taken, ::testing::ElementsAre("raw[400]", "raw[300]", "raw[200]", "raw[100]"));
  // Unreserved (the holder is busy or lost): it gets the remaining window.
  EXPECT_EQ(Describe(LeaseOrDie("other")), "avg@2[100,200]");
}

TEST_F(WindowSchedulerTest, SetAverageWindowsCreatesMissingAndSupersedesRemovedSizes) {
  v1::Run run = WindowedRun("a", {2});
  for (uint64_t step : {100, 200, 300}) AdmitWindowed(run, step);
  run = WindowedRun("a", {3});
  auto update = scheduler_->SetAverageWindows(run);
  ASSERT_OK(update);
  std::vector<std::string> made, gone;
  for (const v1::Job& job : update->created) made.push_back(Describe(job));
  for (const v1::Job& job : update->superseded) gone.push_back(Describe(job));
  EXPECT_THAT(made, ::testing::ElementsAre("avg@3[100,200,300]"));
  EXPECT_THAT(gone, ::testing::ElementsAre("avg@2[100,200]", "avg@2[200,300]"));
  EXPECT_EQ(Stored(update->superseded[0].id()).superseded_by(), 0u);
  // Idempotent.
  auto again = scheduler_->SetAverageWindows(run);
  ASSERT_OK(again);
  EXPECT_TRUE(again->created.empty());
  EXPECT_TRUE(again->superseded.empty());
  // Re-adding 2 schedules its windows again (the superseded ones had no results).
  run = WindowedRun("a", {2, 3});
  auto readd = scheduler_->SetAverageWindows(run);
  ASSERT_OK(readd);
  EXPECT_EQ(readd->created.size(), 2u);
}

TEST_F(WindowSchedulerTest, DriftPairsAreMeasuredByTheLaterAdmittedCheckpoint) {
  const v1::Run run = MakeRun("a");
  const uint64_t first = AdmitWindowed(run, 100).raw_job.id();
  const uint64_t third = AdmitWindowed(run, 300).raw_job.id();
  const uint64_t late = AdmitWindowed(run, 200).raw_job.id();
  using Pairs = std::vector<std::pair<uint64_t, uint64_t>>;
  EXPECT_EQ(scheduler_->DriftPairs(Stored(first)), Pairs{});
  EXPECT_EQ(scheduler_->DriftPairs(Stored(late)), (Pairs{{100, 200}, {200, 300}}));
  EXPECT_EQ(scheduler_->DriftPairs(Stored(third)), Pairs{});  // 200 measures (200, 300)
}

TEST_F(SchedulerTest, HandBackGivesTheAttemptBackAndIsLeasableAtOnce) {
  uint64_t id = Admit("a", 100);
  // More hand-backs than max_attempts: the job never fails for it.
  for (uint32_t i = 1; i <= options_.max_attempts + 2; ++i) {
    v1::Job job = LeaseOrDie(absl::StrCat("w", i));
    EXPECT_EQ(job.id(), id);
    EXPECT_EQ(job.epoch(), i);
    EXPECT_EQ(job.attempts(), 1u);
    ASSERT_OK(scheduler_->HandBack(id, i, absl::StrCat("w", i)));
    EXPECT_EQ(Stored(id).state(), v1::JOB_PENDING);
    EXPECT_EQ(Stored(id).attempts(), 0u);
    EXPECT_EQ(store_->GetCheckpoint("a", 100)->state(), v1::CHECKPOINT_PENDING);
  }
  // Only the holder may hand it back.
  LeaseOrDie("w9");
  EXPECT_THAT(scheduler_->HandBack(id, Stored(id).epoch(), "w8"),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("does not hold the lease")));
  EXPECT_EQ(Stored(id).state(), v1::JOB_LEASED);
}

TEST_F(SchedulerTest, RequeueTurnsFailedJobsPendingWithAFreshBudget) {
  uint64_t failed = Admit("a", 100);
  uint64_t done = Admit("a", 200);
  LeaseOrDie("w");  // 200 (newest first)
  ASSERT_OK(scheduler_->Complete(done, 1, "w", store_->NewBatch()));
  LeaseOrDie("w");  // 100
  ASSERT_OK(scheduler_->Fail(failed, 1, "w", "cuda oom", JobFailure::kPermanent));
  ASSERT_EQ(store_->GetCheckpoint("a", 100)->state(), v1::CHECKPOINT_FAILED);

  EXPECT_THAT(scheduler_->Requeue({failed, done}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr(absl::StrCat("job ", done, " is done"))));
  EXPECT_THAT(scheduler_->Requeue({failed, 999}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("job 999")));
  EXPECT_EQ(Stored(failed).state(), v1::JOB_FAILED);  // nothing changed

  auto requeued = scheduler_->Requeue({failed, failed});
  ASSERT_OK(requeued);
  ASSERT_EQ(requeued->size(), 1u);
  v1::Job stored = Stored(failed);
  EXPECT_EQ(stored.state(), v1::JOB_PENDING);
  EXPECT_EQ(stored.attempts(), 0u);
  EXPECT_EQ(stored.epoch(), 1u);  // epochs only grow: the old lease stays stale
  EXPECT_THAT(stored.error(), HasSubstr("cuda oom"));
  EXPECT_EQ(store_->GetCheckpoint("a", 100)->state(), v1::CHECKPOINT_PENDING);
  Reopen();  // persisted
  v1::Job again = LeaseOrDie("w");
  EXPECT_EQ(again.id(), failed);
  EXPECT_EQ(again.epoch(), 2u);
  EXPECT_EQ(again.attempts(), 1u);
}

TEST_F(SchedulerTest, PausedRunsHaveNoLeasableJobs) {
  Admit("a", 100);
  uint64_t b = Admit("b", 100);
  scheduler_->SetRunPaused("a", true);
  EXPECT_EQ(LeaseOrDie("w").id(), b);
  EXPECT_TRUE(NothingLeasable());
  EXPECT_FALSE(scheduler_->HasLeasableJob());
  scheduler_->SetRunPaused("a", false);
  EXPECT_TRUE(scheduler_->HasLeasableJob());
  EXPECT_EQ(LeaseOrDie("w").run(), "a");
}

TEST_F(SchedulerTest, DeleteRunForgetsItsJobsAndCheckpoints) {
  const uint64_t a100 = Admit("a", 100);
  Admit("a", 200);
  const uint64_t b100 = Admit("b", 100);
  const uint64_t a300 = Admit("a", 300);
  ASSERT_EQ(LeaseOrDie("w").id(), a300);  // run a first, newest step first
  auto deleted = scheduler_->DeleteRun("a", [](Store::Batch& batch) {
    batch.DeleteRunData("a");
    return absl::OkStatus();
  });
  ASSERT_OK(deleted);
  EXPECT_EQ(*deleted, 3u);
  EXPECT_TRUE(scheduler_->Checkpoints("a").empty());
  EXPECT_FALSE(scheduler_->GetJob(a100).has_value());
  EXPECT_THAT(store_->GetJob(a100), StatusIs(absl::StatusCode::kNotFound, HasSubstr("")));
  // A request for a deleted job is told to stop; an id never handed out is unknown.
  EXPECT_THAT(scheduler_->Heartbeat(a300, 1, "w"),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("run was deleted")));
  EXPECT_THAT(scheduler_->Heartbeat(999, 1, "w"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("")));
  EXPECT_EQ(LeaseOrDie("w").id(), b100);
  EXPECT_TRUE(NothingLeasable());
  // The run's name can be used again; ids are not reused.
  EXPECT_GT(Admit("a", 100), a300);
  Reopen();
  EXPECT_EQ(scheduler_->Checkpoints("a").size(), 1u);
  EXPECT_EQ(scheduler_->Checkpoints("b").size(), 1u);
}

}  // namespace
}  // namespace steadyeval
