// Checkpoint averaging jobs, ensembles, incremental stability figures, drift and the
// stability queries, driven through the Coordinator with a FakeClock (DESIGN §3, §5).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/stability.h"
#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "rocksdb/db.h"
#include "server/coordinator.h"
#include "testing/coordinator_fixture.h"
#include "api/protocol.h"

namespace steadyeval {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::steadyeval::testing::CoordinatorFixture;
using ::steadyeval::testing::McTaskFile;
using ::steadyeval::testing::QaTaskFile;
using ::steadyeval::testing::StatusIs;

constexpr int64_t kTtlMs = 10'000;

v1::TaskContent Qa2TaskFile() {
  v1::TaskContent t;
  t.set_filename("qa2.json");
  t.set_content(
      R"({"instruction": "add", "output_length": 8, "metrics": ["exact_match"],
          "samples": [{"input": "3+3", "output": "6"}, {"input": "1+2", "output": "3"}]})");
  return t;
}

// Outputs of one job: per task name, one output (and for mc, option log-likelihoods) per
// example.
struct Outputs {
  std::map<std::string, std::vector<std::string>> text;
  std::map<std::string, std::vector<std::vector<double>>> logliks;
};

class WindowsTest : public CoordinatorFixture {
 protected:
  void SetUp() override {
    options_.scheduler.lease_ttl_ms = kTtlMs;
    StartFresh("windows_test_");
  }
  void Restart() override {
    CoordinatorFixture::Restart();
    if (HasFatalFailure()) return;
    Register("w");
  }
  v1::RunConfig Config(std::vector<uint32_t> average, std::vector<uint32_t> ensemble) {
    v1::RunConfig config;
    config.set_name("r");
    config.set_source((root_ / "ckpt").string());
    for (uint32_t n : average) config.add_average_windows(n);
    for (uint32_t n : ensemble) config.add_ensemble_windows(n);
    return config;
  }
  void CreateRun(std::vector<uint32_t> average, std::vector<uint32_t> ensemble) {
    ASSERT_OK(coordinator_->CreateRun(Config(average, ensemble), {McTaskFile(), QaTaskFile()}));
  }
  void Register(const std::string& worker) {
    v1::RegisterWorkerRequest r;
    r.set_worker_id(worker);
    r.set_protocol_version(kProtocolVersion);
    ASSERT_OK(coordinator_->RegisterWorker(r));
  }
  void Admit(uint64_t step) {
    checkpoints_.Add("r", step);
    ASSERT_OK(coordinator_->PollRunsOnce());
  }
  absl::StatusOr<v1::AcquireJobResponse> Acquire(const std::string& worker,
                                                 std::vector<v1::WindowSumHeld> sums = {}) {
    v1::AcquireJobRequest r;
    r.set_worker_id(worker);
    for (auto& s : sums) *r.add_window_sums() = s;
    return coordinator_->AcquireJob(r, nullptr);
  }
  // Leases every leasable job to `worker`, keyed "kind@end_step".
  std::map<std::string, v1::LeasedJob> LeaseAll(const std::string& worker = "w") {
    std::map<std::string, v1::LeasedJob> out;
    while (true) {
      auto acquired = Acquire(worker);
      EXPECT_OK(acquired);
      if (!acquired.ok() || !acquired->has_job()) break;
      const v1::Job& job = acquired->lease().job();
      out[job.kind() + "@" + std::to_string(job.steps(job.steps_size() - 1))] = acquired->lease();
    }
    return out;
  }
  std::vector<v1::ReportResultsRequest> Report(const v1::LeasedJob& lease, const Outputs& outputs,
                                               const std::string& worker = "w") {
    std::vector<v1::ReportResultsRequest> chunks;
    for (const v1::TaskContent& header : lease.task_headers()) {
      v1::ReportResultsRequest r;
      r.set_worker_id(worker);
      r.set_job_id(lease.job().id());
      r.set_epoch(lease.job().epoch());
      r.set_lease_secret(lease.lease_secret());
      r.set_step(lease.job().steps(lease.job().steps_size() - 1));
      *r.mutable_task() = header.ref();
      const auto& texts = outputs.text.at(header.ref().name());
      for (size_t i = 0; i < texts.size(); ++i) {
        v1::ExampleOutput* o = r.add_outputs();
        o->set_index(static_cast<uint32_t>(i));
        o->set_output(texts[i]);
        auto ll = outputs.logliks.find(header.ref().name());
        if (ll != outputs.logliks.end()) {
          for (double v : ll->second[i]) o->add_option_logliks(v);
        }
      }
      r.set_task_complete(true);
      chunks.push_back(std::move(r));
    }
    return chunks;
  }
  void ReportOk(const v1::LeasedJob& lease, const Outputs& outputs) {
    ASSERT_OK(coordinator_->ReportResults(Report(lease, outputs)));
  }
  // Every stored score of `variant`, as "task@step" -> score.
  std::map<std::string, double> Scores(const std::string& variant) {
    std::map<std::string, double> out;
    v1::GetScoresRequest r;
    r.set_run("r");
    r.set_variant(variant);
    EXPECT_OK(coordinator_->GetScores(r, [&](const v1::Score& s) {
      out[s.task() + "@" + std::to_string(s.step())] = s.score();
      return true;
    }));
    return out;
  }
  std::vector<v1::ExportedPrediction> Export(const std::string& variant = "") {
    std::vector<v1::ExportedPrediction> out;
    v1::ExportPredictionsRequest r;
    r.set_run("r");
    r.set_variant(variant);
    EXPECT_OK(coordinator_->ExportPredictions(r, [&](const v1::ExportedPrediction& p) {
      out.push_back(p);
      return true;
    }));
    return out;
  }
  std::string MetricsText() {
    return prometheus::TextSerializer().Serialize(coordinator_->metrics()->registry()->Collect());
  }
  v1::GetStabilityResponse Stability(uint64_t from, uint64_t to) {
    v1::GetStabilityRequest r;
    r.set_run("r");
    r.mutable_steps()->set_from_step(from);
    r.mutable_steps()->set_to_step(to);
    auto response = coordinator_->GetStability(r);
    EXPECT_OK(response);
    return response.ok() ? *response : v1::GetStabilityResponse();
  }
};

Outputs McQa(std::vector<std::string> mc, std::vector<std::string> qa,
             std::vector<std::vector<double>> logliks = {}) {
  Outputs o;
  if (logliks.empty()) {
    const size_t options[] = {2, 2, 3};
    for (size_t i = 0; i < mc.size(); ++i) {
      std::vector<double> ll(options[i], -2.0);
      ll[std::stoi(mc[i])] = -1.0;
      logliks.push_back(ll);
    }
  }
  o.text["mc"] = std::move(mc);
  o.text["qa"] = std::move(qa);
  o.logliks["mc"] = std::move(logliks);
  return o;
}

// Same rows, figures equal up to summation order.
void ExpectSameTable(const v1::GetStabilityResponse& a, const v1::GetStabilityResponse& b) {
  ASSERT_EQ(a.rows_size(), b.rows_size());
  for (int i = 0; i < a.rows_size(); ++i) {
    const v1::StabilityRow& x = a.rows(i);
    const v1::StabilityRow& y = b.rows(i);
    const std::string where = x.task() + "/" + x.variant();
    EXPECT_EQ(x.task(), y.task());
    EXPECT_EQ(x.variant(), y.variant());
    EXPECT_EQ(x.checkpoints(), y.checkpoints()) << where;
    EXPECT_EQ(x.has_mtv(), y.has_mtv()) << where;
    EXPECT_EQ(x.has_instability(), y.has_instability()) << where;
    EXPECT_EQ(x.has_example_mtv(), y.has_example_mtv()) << where;
    EXPECT_NEAR(x.mean(), y.mean(), 1e-12) << where;
    EXPECT_NEAR(x.mtv(), y.mtv(), 1e-12) << where;
    EXPECT_NEAR(x.example_mtv(), y.example_mtv(), 1e-12) << where;
    EXPECT_NEAR(x.instability(), y.instability(), 1e-12) << where;
  }
}

// ---- averaging jobs ----

TEST_F(WindowsTest, AvgJobCarriesItsWindowAndResultsLandAtTheWindowEnd) {
  CreateRun({2}, {});
  Admit(100);
  Admit(200);
  auto leases = LeaseAll();
  ASSERT_EQ(leases.count("avg@2@200"), 1u);
  const v1::LeasedJob& avg = leases["avg@2@200"];
  EXPECT_EQ(avg.window(), 2u);
  EXPECT_THAT(avg.job().steps(), ElementsAre(100, 200));
  EXPECT_THAT(avg.checkpoint_paths(), ElementsAre("/ckpt/r/step_100", "/ckpt/r/step_200"));
  EXPECT_EQ(leases["raw@200"].window(), 0u);
  ReportOk(avg, McQa({"1", "0", "1"}, {"2", "4"}));
  EXPECT_THAT(Scores("avg@2"), (std::map<std::string, double>{{"mc@200", 1.0}, {"qa@200", 1.0}}));
  EXPECT_TRUE(Scores("raw").empty());
  EXPECT_THAT(MetricsText(),
              HasSubstr("steadyeval_score{run=\"r\",task=\"mc\",variant=\"avg@2\"} 1"));
}

TEST_F(WindowsTest, LateAdmissionSupersedesWindowsErasesTheirValuesAndAbortsTheirReports) {
  CreateRun({2}, {});
  Admit(100);
  Admit(300);
  auto leases = LeaseAll();
  ReportOk(leases["avg@2@300"], McQa({"1", "0", "1"}, {"2", "4"}));
  ASSERT_EQ(Scores("avg@2").size(), 2u);
  Admit(400);
  auto more = LeaseAll();
  ASSERT_EQ(more.count("avg@2@400"), 1u);

  Admit(200);  // late: windows ending at 200 (new) and 300 (changed) — not 400
  EXPECT_TRUE(Scores("avg@2").empty());  // the old window ending at 300 is gone
  auto old300 = store_->GetJob(leases["avg@2@300"].job().id());
  ASSERT_OK(old300);
  EXPECT_EQ(old300->state(), v1::JOB_SUPERSEDED);
  auto fresh = LeaseAll();
  ASSERT_EQ(fresh.count("avg@2@300"), 1u);
  EXPECT_EQ(old300->superseded_by(), fresh["avg@2@300"].job().id());
  EXPECT_THAT(fresh["avg@2@300"].job().steps(), ElementsAre(200, 300));
  EXPECT_THAT(fresh["avg@2@200"].job().steps(), ElementsAre(100, 200));
  EXPECT_EQ(fresh.count("avg@2@400"), 0u);  // [300, 400] is unchanged and still leased
  EXPECT_EQ(store_->GetJob(more["avg@2@400"].job().id())->state(), v1::JOB_LEASED);
  // A report for a superseded job is refused.
  EXPECT_THAT(coordinator_->ReportResults(Report(leases["avg@2@300"], McQa({"1", "0", "1"},
                                                                           {"2", "4"}))),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("superseded")));
  ReportOk(fresh["avg@2@300"], McQa({"0", "0", "0"}, {"2", "x"}));
  EXPECT_DOUBLE_EQ(Scores("avg@2")["qa@300"], 0.5);
}

TEST_F(WindowsTest, MembersGoneFailsTheWindowForGood) {
  CreateRun({2}, {});
  Admit(100);
  Admit(200);
  Admit(300);
  auto leases = LeaseAll();
  auto fail = [&](const v1::LeasedJob& lease, const std::string& reason, v1::JobFailure failure) {
    v1::FailJobRequest request;
    request.set_worker_id("w");
    request.set_job_id(lease.job().id());
    request.set_epoch(lease.job().epoch());
    request.set_lease_secret(lease.lease_secret());
    request.set_reason(reason);
    request.set_retryable(true);  // contradicted by the reason: the reason wins
    request.set_failure(failure);
    return coordinator_->FailJob(request);
  };
  // A worker before the typed reason says it in the text alone.
  auto old_worker = fail(leases["avg@2@200"], "members_gone: /ckpt/r/step_100 no longer exists",
                         v1::JOB_FAILURE_UNSPECIFIED);
  ASSERT_OK(old_worker);
  EXPECT_EQ(old_worker->state(), v1::JOB_FAILED);
  EXPECT_THAT(store_->GetJob(leases["avg@2@200"].job().id())->error(), HasSubstr("members_gone"));
  // A new worker says it in `failure`; the coordinator does not read the text.
  auto typed = fail(leases["avg@2@300"], "window member /ckpt/r/step_200 no longer exists",
                    v1::JOB_FAILURE_MEMBERS_GONE);
  ASSERT_OK(typed);
  EXPECT_EQ(typed->state(), v1::JOB_FAILED);
}

TEST_F(WindowsTest, AvgJobsWaitForTheIdleHolderOfTheirWindowSum) {
  CreateRun({2}, {});
  Register("holder");
  Register("other");
  for (uint64_t step : {100, 200, 300}) Admit(step);
  // Raw jobs go to anyone; the holder announces its sum of [100, 200].
  v1::WindowSumHeld held;
  held.set_run("r");
  held.set_window(2);
  held.add_steps(100);
  held.add_steps(200);
  auto first = Acquire("holder", {held});
  ASSERT_OK(first);
  ASSERT_TRUE(first->has_job());
  EXPECT_EQ(first->lease().job().kind(), "avg@2");  // affinity beats raw@300
  EXPECT_THAT(first->lease().job().steps(), ElementsAre(100, 200));
  ASSERT_OK(coordinator_->ReportResults(
      Report(first->lease(), McQa({"1", "0", "1"}, {"2", "4"}), "holder")));
  // Its next sum slides by one checkpoint.
  auto holder_next = Acquire("holder", {held});  // takes [200, 300] at once
  ASSERT_OK(holder_next);
  ASSERT_TRUE(holder_next->has_job());
  EXPECT_THAT(holder_next->lease().job().steps(), ElementsAre(200, 300));
}

TEST_F(WindowsTest, AvgJobsGoToOthersWhenTheHolderIsBusy) {
  CreateRun({2}, {});
  Register("holder");
  Register("other");
  for (uint64_t step : {100, 200}) Admit(step);
  v1::WindowSumHeld held;
  held.set_run("r");
  held.set_window(2);
  held.add_steps(50);  // an older window: [100, 200] slides from it
  held.add_steps(100);
  auto holder = Acquire("holder", {held});
  ASSERT_OK(holder);
  EXPECT_EQ(holder->lease().job().kind(), "avg@2");
  // A third checkpoint: the holder is busy, so the other worker may take its new window.
  Admit(300);
  std::vector<std::string> kinds;
  while (true) {
    auto next = Acquire("other");
    ASSERT_OK(next);
    if (!next->has_job()) break;
    const v1::Job& job = next->lease().job();
    kinds.push_back(job.kind() + "@" + std::to_string(job.steps(job.steps_size() - 1)));
  }
  EXPECT_THAT(kinds, ElementsAre("raw@300", "avg@2@300", "raw@200", "raw@100"));
}

TEST_F(WindowsTest, IdleHolderReservesItsWindowsUntilItGoesQuiet) {
  CreateRun({2}, {});
  Register("holder");
  Register("other");
  v1::WindowSumHeld held;
  held.set_run("r");
  held.set_window(2);
  held.add_steps(100);
  held.add_steps(200);
  auto idle = Acquire("holder", {held});  // nothing to do yet: idle, polling
  ASSERT_OK(idle);
  EXPECT_FALSE(idle->has_job());
  for (uint64_t step : {100, 200, 300}) Admit(step);
  std::vector<std::string> kinds;
  while (true) {
    auto next = Acquire("other");
    ASSERT_OK(next);
    if (!next->has_job()) break;
    kinds.push_back(next->lease().job().kind());
  }
  EXPECT_THAT(kinds, ElementsAre("raw", "raw", "raw"));  // avg@2 jobs wait for the holder
  // The holder goes quiet past the lease TTL: its windows are released to others.
  clock_.AdvanceNanos(kTtlMs * 1'000'000 + 1);
  auto next = Acquire("other");
  ASSERT_OK(next);
  ASSERT_TRUE(next->has_job());
  EXPECT_EQ(next->lease().job().kind(), "avg@2");
}

// ---- ensembles ----

TEST_F(WindowsTest, EnsembleValuesMatchAHandComputationIncludingTiesToTheNewest) {
  CreateRun({}, {2, 3});
  for (uint64_t step : {100, 200, 300}) Admit(step);
  auto leases = LeaseAll();
  // mc golds 1, 0, 1; qa golds "2", "4".
  // Option log-likelihoods agree with the reported options (scoring picks by them).
  ReportOk(leases["raw@100"], McQa({"1", "0", "0"}, {"2", "3"},
                                   {{-0.5, 0}, {0, -1}, {0, -5, -5}}));
  EXPECT_TRUE(Scores("ens@2").empty());  // no window is complete yet
  ReportOk(leases["raw@300"], McQa({"1", "1", "2"}, {"5", "3"},
                                   {{-0.5, 0}, {-1, 0}, {-1, -1, 0}}));
  EXPECT_TRUE(Scores("ens@2").empty());  // [200, 300] lacks 200
  ReportOk(leases["raw@200"], McQa({"0", "0", "1"}, {"5", "4"},
                                   {{0, -1}, {0, -1}, {-1, 0, -1}}));
  auto ens2 = Scores("ens@2");
  auto ens3 = Scores("ens@3");
  // ens@2@200: mc votes (1,0) (0,0) (0,1) -> ties to newest: 0, 0, 1 -> 0+1+1
  //            qa (2,5) (3,4) -> 5, 4 -> 0.5
  EXPECT_DOUBLE_EQ(ens2["mc@200"], 2.0 / 3);
  EXPECT_DOUBLE_EQ(ens2["qa@200"], 0.5);
  // ens@2@300: mc (0,1) (0,1) (1,2) -> 1, 1, 2 -> 1+0+0; qa (5,5) (4,3) -> 5, 3 -> 0
  EXPECT_DOUBLE_EQ(ens2["mc@300"], 1.0 / 3);
  EXPECT_DOUBLE_EQ(ens2["qa@300"], 0.0);
  // ens@3@300: mc (1,0,1) (0,0,1) (0,1,2) -> 1, 0, 2 (three-way tie: newest) -> 1+1+0
  //            qa (2,5,5) (3,4,3) -> 5, 3 -> 0
  EXPECT_DOUBLE_EQ(ens3["mc@300"], 2.0 / 3);
  EXPECT_DOUBLE_EQ(ens3["qa@300"], 0.0);
  EXPECT_EQ(ens3.size(), 2u);
  auto p = store_->GetPrediction("r", "mc", "ens@3", 300, 2);
  ASSERT_OK(p);
  EXPECT_EQ(p->normalized(), "2");
  // ens-soft@3@300 (mc only): e0 mean p(0) = (.378 + .731 + .378) / 3 < .5 -> 1 (right);
  // e1 mean p(0) = (.731 + .731 + .269) / 3 > .5 -> 0 (right); e2 mean p = (.468, .265,
  // .265): step 100's confident 0 wins -> 0 (wrong).
  auto soft = Scores("ens-soft@3");
  EXPECT_EQ(soft.size(), 1u);
  EXPECT_DOUBLE_EQ(soft["mc@300"], 2.0 / 3);
  EXPECT_EQ(store_->GetPrediction("r", "mc", "ens-soft@3", 300, 0)->normalized(), "1");
  EXPECT_EQ(store_->GetPrediction("r", "mc", "ens-soft@3", 300, 2)->normalized(), "0");
  // A late checkpoint inside the windows erases the values it invalidates.
  Admit(250);
  EXPECT_THAT(Scores("ens@3"), ::testing::IsEmpty());          // [200, 250, 300]
  EXPECT_THAT(Scores("ens@2"), ElementsAre(::testing::Key("mc@200"), ::testing::Key("qa@200")));
}

// ---- order independence: incremental == brute force ----

// Deterministic outputs for (kind, step, task, example), independent of arrival order.
Outputs RandomOutputs(const std::string& kind, uint64_t step) {
  std::mt19937 rng(static_cast<uint32_t>(step * 31 + kind.size() * 7 + (kind == "raw" ? 0 : 1)));
  Outputs o;
  const size_t options[] = {2, 2, 3};
  for (size_t e = 0; e < 3; ++e) {
    std::vector<double> ll;
    for (size_t k = 0; k < options[e]; ++k) ll.push_back(-std::uniform_real_distribution<>(0, 3)(rng));
    const int chosen = static_cast<int>(std::max_element(ll.begin(), ll.end()) - ll.begin());
    o.text["mc"].push_back(std::to_string(chosen));
    o.logliks["mc"].push_back(ll);
  }
  const char* answers[] = {"2", "4", "5"};
  for (size_t e = 0; e < 2; ++e) o.text["qa"].push_back(answers[rng() % 3]);
  return o;
}

struct Snapshot {
  std::map<std::string, std::string> predictions;  // variant/task@step#e -> normalized:score
  std::map<std::string, std::vector<double>> figures;  // task/variant -> mean, mtv, emtv, is, m
};

TEST_F(WindowsTest, ArrivalOrderDoesNotChangeEnsemblesOrFiguresWhichEqualBruteForce) {
  const std::vector<uint64_t> steps = {100, 200, 300, 400, 500, 600, 700};
  std::optional<Snapshot> baseline;
  for (int trial = 0; trial < 6; ++trial) {
    TearDown();
    SetUp();
    CreateRun({2}, {2, 3});
    std::mt19937 rng(1234 + trial);
    std::vector<uint64_t> admit = steps;
    if (trial > 0) std::shuffle(admit.begin(), admit.end(), rng);
    // Admit in order, reporting a random subset of pending jobs as we go.
    std::map<std::string, v1::LeasedJob> open;
    auto report_some = [&](bool all) {
      for (auto& [key, lease] : LeaseAll()) open[key] = lease;
      std::vector<std::string> keys;
      for (const auto& [key, lease] : open) keys.push_back(key);
      std::shuffle(keys.begin(), keys.end(), rng);
      for (const std::string& key : keys) {
        if (!all && rng() % 2 == 0) continue;
        const v1::LeasedJob& lease = open[key];
        const uint64_t end = lease.job().steps(lease.job().steps_size() - 1);
        auto r = coordinator_->ReportResults(Report(lease, RandomOutputs(lease.job().kind(), end)));
        // A window job superseded while we held it is refused; its replacement comes later.
        if (!r.ok()) {
          EXPECT_THAT(r, StatusIs(absl::StatusCode::kAborted, HasSubstr(""))) << key;
        }
        open.erase(key);
      }
    };
    for (uint64_t step : admit) {
      Admit(step);
      if (trial > 0) report_some(false);
    }
    report_some(true);
    report_some(true);

    // Brute force from the exported predictions and stored scores.
    Snapshot snap;
    std::map<std::pair<std::string, std::string>, std::map<uint64_t, StepPoint>> points;
    for (const v1::ExportedPrediction& p : Export()) {
      snap.predictions[p.variant() + "/" + p.task() + "@" + std::to_string(p.step()) + "#" +
                       std::to_string(p.example())] =
          p.normalized_output() + ":" + std::to_string(p.score());
      EXPECT_EQ(p.metrics().at(p.task() == "mc" ? "acc" : "exact_match"), p.score());
      StepPoint& point = points[{p.task(), p.variant()}][p.step()];
      point.step = p.step();
      point.outputs.push_back(p.normalized_output());
      point.example_scores.push_back(p.score());
    }
    v1::GetScoresRequest all;
    all.set_run("r");
    ASSERT_OK(coordinator_->GetScores(all, [&](const v1::Score& s) {
      points[{s.task(), s.variant()}][s.step()].score = s.score();
      return true;
    }));
    EXPECT_EQ(points.size(), 2u * 4 + 2);  // mc, qa × raw, avg@2, ens@2, ens@3; mc ens-soft@2, @3
    for (auto [from, to] : std::vector<std::pair<uint64_t, uint64_t>>{{0, 1000}, {250, 600}}) {
      const v1::GetStabilityResponse table = Stability(from, to);
      for (const v1::StabilityRow& row : table.rows()) {
        if (row.kind() != "task") continue;
        std::vector<StepPoint> list;
        for (const auto& [step, point] : points[{row.task(), row.variant()}]) list.push_back(point);
        auto brute = ComputeStability(list, from, to);
        ASSERT_OK(brute);
        const std::string where = row.task() + "/" + row.variant();
        EXPECT_EQ(row.checkpoints(), brute->points) << where;
        auto same = [&](bool has, double value, const std::optional<double>& expected,
                        const char* what) {
          EXPECT_EQ(has, expected.has_value()) << where << " " << what;
          if (has && expected.has_value()) {
            EXPECT_NEAR(value, *expected, 1e-12) << where << " " << what;
          }
        };
        same(row.has_mean(), row.mean(), brute->mean, "mean");
        same(row.has_mtv(), row.mtv(), brute->mtv, "mtv");
        same(row.has_example_mtv(), row.example_mtv(), brute->example_mtv, "example_mtv");
        same(row.has_instability(), row.instability(), brute->instability, "IS");
        snap.figures[std::to_string(from) + ":" + where] = {
            row.mean(), row.mtv(), row.example_mtv(), row.instability(),
            static_cast<double>(row.checkpoints())};
      }
    }
    // Restart: the indexes come back from scores and pairs with the same figures.
    const v1::GetStabilityResponse before = Stability(0, 1000);
    Restart();
    ExpectSameTable(before, Stability(0, 1000));

    if (!baseline.has_value()) {
      baseline = snap;
    } else {
      EXPECT_EQ(snap.predictions, baseline->predictions) << "trial " << trial;
      for (const auto& [key, values] : baseline->figures) {
        ASSERT_EQ(snap.figures.count(key), 1u) << key;
        for (size_t i = 0; i < values.size(); ++i) {
          EXPECT_NEAR(snap.figures[key][i], values[i], 1e-12) << key << " #" << i;
        }
      }
    }
  }
}

// ---- drift ----

TEST_F(WindowsTest, DriftIsStoredPerPairAndASplitPairIsRemoved) {
  CreateRun({}, {});
  Admit(100);
  Admit(300);
  auto leases = LeaseAll();
  ASSERT_EQ(leases["raw@300"].drift_targets_size(), 1);
  const v1::DriftTarget& t = leases["raw@300"].drift_targets(0);
  EXPECT_EQ(t.from_step(), 100u);
  EXPECT_EQ(t.to_step(), 300u);
  EXPECT_EQ(t.from_path(), "/ckpt/r/step_100");
  EXPECT_EQ(leases["raw@100"].drift_targets_size(), 0);
  auto chunks = Report(leases["raw@300"], McQa({"1", "0", "1"}, {"2", "4"}));
  v1::ParameterDrift* d = chunks.back().add_drifts();
  d->set_from_step(100);
  d->set_to_step(300);
  d->set_l2(4.0);
  d->set_relative(0.4);
  ASSERT_OK(coordinator_->ReportResults(chunks));
  EXPECT_DOUBLE_EQ(store_->GetDrift("r", 300)->l2(), 4.0);

  Admit(200);  // splits (100, 300)
  EXPECT_THAT(store_->GetDrift("r", 300), StatusIs(absl::StatusCode::kNotFound, HasSubstr("")));
  auto late = LeaseAll();
  ASSERT_EQ(late["raw@200"].drift_targets_size(), 2);
  EXPECT_EQ(late["raw@200"].drift_targets(1).from_step(), 200u);
  EXPECT_EQ(late["raw@200"].drift_targets(1).to_step(), 300u);
  chunks = Report(late["raw@200"], McQa({"1", "0", "1"}, {"2", "4"}));
  for (auto [from, to, l2] : std::vector<std::tuple<uint64_t, uint64_t, double>>{
           {100, 200, 1.0}, {200, 300, 3.0}}) {
    v1::ParameterDrift* drift = chunks.front().add_drifts();
    drift->set_from_step(from);
    drift->set_to_step(to);
    drift->set_l2(l2);
    drift->set_relative(l2 / 10);
  }
  ASSERT_OK(coordinator_->ReportResults(chunks));
  EXPECT_DOUBLE_EQ(store_->GetDrift("r", 200)->l2(), 1.0);
  EXPECT_DOUBLE_EQ(store_->GetDrift("r", 300)->l2(), 3.0);
  ReportOk(leases["raw@100"], McQa({"1", "0", "1"}, {"2", "4"}));
  const v1::GetStabilityResponse table = Stability(0, 1000);
  EXPECT_EQ(table.drift_pairs(), 2u);
  EXPECT_DOUBLE_EQ(table.median_drift_l2(), 2.0);
  EXPECT_DOUBLE_EQ(table.median_drift_relative(), 0.2);
}

// ---- UpdateRun ----

TEST_F(WindowsTest, UpdateRunSchedulesMissingWindowsAndComputesEnsembles) {
  CreateRun({}, {});
  for (uint64_t step : {100, 200, 300}) Admit(step);
  auto leases = LeaseAll();
  ReportOk(leases["raw@100"], McQa({"1", "0", "0"}, {"2", "3"}));
  ReportOk(leases["raw@200"], McQa({"0", "0", "1"}, {"5", "4"}));
  ReportOk(leases["raw@300"], McQa({"1", "1", "2"}, {"5", "3"}));
  EXPECT_TRUE(Scores("ens@3").empty());

  v1::UpdateRunRequest update;
  update.set_name("r");
  update.set_set_average_windows(true);
  update.add_average_windows(2);
  update.set_set_ensemble_windows(true);
  update.add_ensemble_windows(3);
  update.add_ensemble_windows(3);
  auto run = coordinator_->UpdateRun(update);
  ASSERT_OK(run);
  EXPECT_THAT(run->config().ensemble_windows(), ElementsAre(3));
  EXPECT_THAT(coordinator_->GetRun("r")->run().config().average_windows(), ElementsAre(2));
  auto jobs = LeaseAll();
  std::vector<std::string> keys;
  for (const auto& [key, lease] : jobs) keys.push_back(key);
  EXPECT_THAT(keys, ElementsAre("avg@2@200", "avg@2@300"));
  EXPECT_DOUBLE_EQ(Scores("ens@3")["mc@300"], 2.0 / 3);  // as in the hand computation

  // Removing ens@3 stops computing it (stored values stay); a bad size is refused.
  update.clear_average_windows();
  update.set_set_average_windows(false);
  update.clear_ensemble_windows();
  ASSERT_OK(coordinator_->UpdateRun(update));
  Admit(400);
  auto fresh = LeaseAll();
  ReportOk(fresh["raw@400"], McQa({"1", "0", "1"}, {"2", "4"}));
  EXPECT_THAT(Scores("ens@3"), ElementsAre(::testing::Key("mc@300"), ::testing::Key("qa@300")));
  EXPECT_EQ(fresh.count("avg@2@400"), 1u);
  update.set_set_ensemble_windows(true);
  update.add_ensemble_windows(1);
  EXPECT_THAT(coordinator_->UpdateRun(update),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("window size 1")));
}

// ---- the stability table ----

TEST_F(WindowsTest, StabilityTableHasCategoryAndAvgRowsOnAHandComputedExample) {
  v1::RunConfig config = Config({}, {});
  for (auto [name, category] : std::vector<std::pair<std::string, std::string>>{
           {"qa", "QA"}, {"qa2", "qa"}}) {
    v1::TaskRef* ref = config.add_tasks();
    ref->set_name(name);
    ref->set_category(category);
  }
  config.add_tasks()->set_category("MC");  // unnamed: the first task file (mc)
  config.mutable_tasks()->SwapElements(0, 2);
  ASSERT_OK(coordinator_->CreateRun(config, {McTaskFile(), QaTaskFile(), Qa2TaskFile()}));
  auto created = coordinator_->GetRun("r");
  ASSERT_OK(created);
  ASSERT_EQ(created->run().config().tasks_size(), 3);
  EXPECT_EQ(created->run().config().tasks(0).category(), "MC");
  EXPECT_EQ(created->run().config().tasks(2).category(), "QA");

  // step:  100  200  300  400  500
  // mc:    1/3  2/3  1    2/3  1/3
  // qa:    0    .5   1    .5   1
  // qa2:   .5   .5   0    1    .5
  const std::map<uint64_t, std::vector<std::vector<std::string>>> outputs = {
      {100, {{"0", "0", "0"}, {"x", "x"}, {"6", "x"}}},
      {200, {{"1", "0", "0"}, {"2", "x"}, {"6", "x"}}},
      {300, {{"1", "0", "1"}, {"2", "4"}, {"x", "x"}}},
      {400, {{"1", "0", "0"}, {"2", "x"}, {"6", "3"}}},
      {500, {{"0", "0", "0"}, {"2", "4"}, {"6", "x"}}}};
  for (const auto& [step, out] : outputs) Admit(step);
  for (auto& [key, lease] : LeaseAll()) {
    const auto& out = outputs.at(lease.job().steps(0));
    Outputs o;
    o.text["mc"] = out[0];
    o.text["qa"] = out[1];
    o.text["qa2"] = out[2];
    ReportOk(lease, o);
  }

  v1::GetStabilityRequest request;
  request.set_run("r");
  auto table = coordinator_->GetStability(request);  // default: last max(2, ceil(.2·5)) = 2
  ASSERT_OK(table);
  ASSERT_TRUE(table->has_range());
  EXPECT_EQ(table->range().from_step(), 400u);
  EXPECT_EQ(table->range().to_step(), 500u);
  std::map<std::string, v1::StabilityRow> rows;
  std::vector<std::string> order;
  for (const v1::StabilityRow& row : table->rows()) {
    rows[row.task() + "/" + row.variant()] = row;
    order.push_back(row.kind() + ":" + row.task());
  }
  EXPECT_THAT(order, ElementsAre("task:mc", "task:qa", "task:qa2", "category:QA", "category:MC",
                                 "avg:AVG"));
  EXPECT_EQ(rows["mc/raw"].checkpoints(), 2u);
  EXPECT_DOUBLE_EQ(rows["mc/raw"].mean(), 0.5);
  EXPECT_DOUBLE_EQ(rows["mc/raw"].mtv(), 1.0 / 3);
  EXPECT_EQ(rows["mc/raw"].metric(), "acc");
  EXPECT_DOUBLE_EQ(rows["QA/raw"].mean(), 0.75);
  EXPECT_DOUBLE_EQ(rows["QA/raw"].mtv(), 0.0);
  EXPECT_FALSE(rows["QA/raw"].has_instability());
  EXPECT_DOUBLE_EQ(rows["MC/raw"].mtv(), 1.0 / 3);
  EXPECT_DOUBLE_EQ(rows["AVG/raw"].mean(), 0.625);
  EXPECT_NEAR(rows["AVG/raw"].mtv(), 1.0 / 6, 1e-12);
  EXPECT_EQ(rows["AVG/raw"].checkpoints(), 2u);

  const v1::GetStabilityResponse full = Stability(0, 1000);
  rows.clear();
  for (const v1::StabilityRow& row : full.rows()) rows[row.task() + "/" + row.variant()] = row;
  // QA curve .25 .5 .5 .75 .75 -> MTV (.25 + 0 + .25 + 0) / 4 — not the mean of task MTVs.
  EXPECT_DOUBLE_EQ(rows["QA/raw"].mtv(), 0.125);
  EXPECT_DOUBLE_EQ(rows["QA/raw"].mean(), 0.55);
  EXPECT_DOUBLE_EQ(rows["MC/raw"].mtv(), 1.0 / 3);
  EXPECT_EQ(rows["AVG/raw"].checkpoints(), 5u);

  // One task: only its rows.
  request.set_task("qa2");
  request.set_last_points(3);
  table = coordinator_->GetStability(request);
  ASSERT_OK(table);
  ASSERT_EQ(table->rows_size(), 1);
  EXPECT_EQ(table->range().from_step(), 300u);
  EXPECT_DOUBLE_EQ(table->rows(0).mtv(), 0.75);  // 0 -> 1 -> .5
  request.set_task("nope");
  EXPECT_THAT(coordinator_->GetStability(request),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));

  // Examples: history and the flippiest.
  v1::GetExamplesRequest examples;
  examples.set_run("r");
  examples.set_task("qa2");
  examples.set_flippiest(1);
  auto flippy = coordinator_->GetExamples(examples);
  ASSERT_OK(flippy);
  ASSERT_EQ(flippy->examples_size(), 1);
  EXPECT_EQ(flippy->examples(0).example(), 0u);  // 6 6 x 6 6: two flips
  EXPECT_EQ(flippy->examples(0).flips(), 2u);
  EXPECT_EQ(flippy->examples(0).input(), "3+3");
  EXPECT_EQ(flippy->examples(0).gold(), "6");
  EXPECT_EQ(flippy->examples(0).points_size(), 5);
  examples.set_example(1);
  auto one = coordinator_->GetExamples(examples);
  ASSERT_OK(one);
  EXPECT_EQ(one->examples(0).flips(), 2u);  // x x x 3 x
  EXPECT_EQ(one->examples(0).points(3).normalized(), "3");
  EXPECT_EQ(one->examples(0).points(3).score(), 1.0);

  std::string metrics = MetricsText();
  EXPECT_THAT(metrics, HasSubstr("steadyeval_mtv{run=\"r\",task=\"mc\",variant=\"raw\"} 0.333"));
  EXPECT_THAT(metrics,
              HasSubstr("steadyeval_instability_score{run=\"r\",task=\"qa\",variant=\"raw\"} 0.5"));
}

TEST_F(WindowsTest, CreateRunValidatesWindowsAndCategories) {
  auto bad = Config({1}, {});
  EXPECT_THAT(coordinator_->CreateRun(bad, {McTaskFile()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("window size 1")));
  auto category = Config({}, {});
  category.add_tasks()->set_category("XX");
  EXPECT_THAT(coordinator_->CreateRun(category, {McTaskFile()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NLI, QA")));
  auto unknown = Config({}, {});
  unknown.add_tasks()->set_name("other");
  EXPECT_THAT(coordinator_->CreateRun(unknown, {McTaskFile()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'other'")));
  auto created = coordinator_->CreateRun(Config({4, 2, 4}, {3, 2}), {McTaskFile()});
  ASSERT_OK(created);
  EXPECT_THAT(created->config().average_windows(), ElementsAre(2, 4));
  EXPECT_THAT(created->config().ensemble_windows(), ElementsAre(2, 3));
  v1::GetScoresRequest scores;
  scores.set_run("r");
  scores.set_variant("avg@x");
  EXPECT_THAT(coordinator_->GetScores(scores, [](const v1::Score&) { return true; }),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("avg@x")));
}

// ---- schema migration, end to end ----

TEST_F(WindowsTest, ASchemaOneDatabaseMigratesAndGetsItsPairsRecomputed) {
  CreateRun({}, {});
  for (uint64_t step : {100, 200, 300, 400}) Admit(step);
  for (auto& [key, lease] : LeaseAll()) {
    ReportOk(lease, RandomOutputs("raw", lease.job().steps(0)));
  }
  const v1::GetStabilityResponse before = Stability(0, 1000);
  coordinator_.reset();
  store_.reset();
  {
    // Turn the database into a schema-1 one: drop `pairs` and `drift`, stamp version 1.
    const std::string dir = (root_ / "db").string();
    std::vector<std::string> names;
    ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::Options(), dir, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const std::string& name : names) descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), dir, descriptors, &handles, &raw).ok());
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == "pairs" || names[i] == "drift") {
        ASSERT_TRUE(raw->DropColumnFamily(handles[i]).ok());
      }
      if (names[i] == "meta") {
        ASSERT_TRUE(raw->Put(rocksdb::WriteOptions(), handles[i], "schema_version", "1").ok());
      }
    }
    for (auto* h : handles) raw->DestroyColumnFamilyHandle(h);
    delete raw;
  }
  Restart();
  EXPECT_EQ(store_->GetMeta("schema_version")->value_or(""), "2");
  ExpectSameTable(before, Stability(0, 1000));
  int pairs = 0;
  ASSERT_OK(store_->ScanPairs("r", "", "", [&](const std::string&, const std::string&,
                                               const v1::PairStats&) {
    ++pairs;
    return true;
  }));
  EXPECT_EQ(pairs, 2 * 3);  // two tasks, four points each
}

}  // namespace
}  // namespace steadyeval
