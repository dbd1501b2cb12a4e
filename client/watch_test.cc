#include "client/watch.h"

#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli.h"
#include "testing/cli_runner.h"
#include "testing/grpc_fakes.h"
#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace steadyeval::client {
namespace {

using ::testing::_;
using ::testing::DoAll;
using ::testing::HasSubstr;
using ::testing::Invoke;
using ::testing::Not;
using ::testing::Return;
using ::testing::SaveArg;
using ::testing::SetArgPointee;
using ::steadyeval::testing::CliResult;
using ::steadyeval::testing::FakeReader;
using ::steadyeval::testing::MockStub;
using ::steadyeval::testing::RunWith;
using ::steadyeval::testing::StatusIs;

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n');
}

// The snapshot most render tests use: two tasks (one with a wide-character name), three
// variants each.
WatchSnapshot HandBuiltSnapshot() {
  WatchSnapshot s;
  s.run = "demo";
  s.source = "/data/demo";
  s.admitted = 17;
  s.evaluated = 15;
  s.failed = 1;
  s.newest_admitted_step = 510;
  s.newest_evaluated_step = 450;
  s.eval_lag_steps = 60;
  s.jobs_pending = 2;
  s.jobs_leased = 1;
  s.jobs_done = 30;
  s.workers = 2;
  s.workers_busy = 1;
  WatchSeries raw{"toy_facts", "raw", {{390, 0.0}, {420, 0.5}, {450, 1.0}}, 0.5, 0.25};
  WatchSeries avg{"toy_facts", "avg@3", {{450, 0.45}}, std::nullopt, std::nullopt};
  WatchSeries ens{"toy_facts", "ens@3", {{450, 0.43}}, std::nullopt, std::nullopt};
  WatchSeries qa_raw{"日本語qa", "raw", {{450, 0.125}}, std::nullopt, std::nullopt};
  WatchSeries qa_avg{"日本語qa", "avg@3", {}, std::nullopt, std::nullopt};
  WatchSeries qa_ens{"日本語qa", "ens@3", {{450, 0.75}}, 0.0, 0.0};
  s.series = {raw, avg, ens, qa_raw, qa_avg, qa_ens};
  return s;
}

// ---- Sparkline ----

TEST(SparklineTest, UnitScoresUseTheFixedScale) {
  EXPECT_EQ(Sparkline({0, 0.5, 1}, 20), "▁▅█");
  EXPECT_EQ(Sparkline({0, 1.0 / 7, 2.0 / 7, 3.0 / 7, 4.0 / 7, 5.0 / 7, 6.0 / 7, 1}, 20),
            "▁▂▃▄▅▆▇█");
  // Fixed, not per-series: a flat 1.0 series is full height, a flat 0 one the lowest.
  EXPECT_EQ(Sparkline({1, 1}, 20), "██");
  EXPECT_EQ(Sparkline({0, 0}, 20), "▁▁");
  EXPECT_EQ(Sparkline({}, 20), "");
}

TEST(SparklineTest, KeepsOnlyTheLastPoints) {
  EXPECT_EQ(Sparkline({1, 1, 1, 0, 0.5}, 2), "▁▅");
}

TEST(SparklineTest, OtherRangesScaleToTheirOwnMinAndMax) {
  EXPECT_EQ(Sparkline({10, 20, 30}, 20), "▁▅█");  // BLEU-like values
  EXPECT_EQ(Sparkline({-1, 1}, 20), "▁█");        // correlations
  EXPECT_EQ(Sparkline({5, 5}, 20), "▄▄");
  EXPECT_EQ(Sparkline({0, std::nan(""), 1}, 20), "▁ █");
}

TEST(WatchDisplayWidthTest, CountsColumnsNotBytes) {
  EXPECT_EQ(WatchDisplayWidth("▁▅█"), 3u);
  EXPECT_EQ(WatchDisplayWidth("日本語qa"), 8u);
  EXPECT_EQ(WatchDisplayWidth("\033[36m▁▅\033[0m"), 2u);
}

// ---- RenderWatch ----

TEST(RenderWatchTest, ShowsProgressLagAndEveryRow) {
  RenderOptions options;
  options.now = absl::FromUnixSeconds(1'795'000'000);
  const std::string frame = RenderWatch(HandBuiltSnapshot(), options);
  EXPECT_THAT(frame, HasSubstr("steadyeval watch demo  2026-11-18 "));  // the time, in UTC
  EXPECT_THAT(frame, HasSubstr("/data/demo"));
  EXPECT_THAT(frame, HasSubstr("17 admitted, 15 evaluated, 1 failed"));
  EXPECT_THAT(frame, HasSubstr("newest step 510, evaluated through 450"));
  EXPECT_THAT(frame, HasSubstr("eval lag     60 steps"));
  EXPECT_THAT(frame, HasSubstr("2 pending, 1 leased, 30 done, 0 failed"));
  EXPECT_THAT(frame, HasSubstr("2 (1 busy)"));
  EXPECT_THAT(frame, Not(HasSubstr("\033")));
  EXPECT_THAT(frame, Not(HasSubstr("error")));

  // One table row per task × variant, with its latest score.
  auto row_with = [&](const std::string& variant, const std::string& score) {
    for (const std::string& line : Lines(frame)) {
      if (absl::StrContains(line, " " + variant + " ") && absl::StrContains(line, score)) {
        return line;
      }
    }
    return std::string();
  };
  EXPECT_THAT(row_with("raw", "1.0000"), HasSubstr("toy_facts"));
  EXPECT_THAT(row_with("raw", "1.0000"), HasSubstr("0.5000  0.2500  ▁▅█"));
  EXPECT_NE(row_with("avg@3", "0.4500"), "");
  EXPECT_NE(row_with("ens@3", "0.4300"), "");
  EXPECT_THAT(row_with("raw", "0.1250"), HasSubstr("日本語qa"));
  EXPECT_THAT(row_with("ens@3", "0.7500"), HasSubstr("0.0000  0.0000  ▆"));  // round(7·0.75) = 5
  EXPECT_NE(row_with("avg@3", "-"), "");  // a variant without scores yet still has its row
}

TEST(RenderWatchTest, TableColumnsAlignInDisplayColumns) {
  const WatchSnapshot snapshot = HandBuiltSnapshot();
  const std::string frame = RenderWatch(snapshot, RenderOptions());
  std::vector<std::string> lines = Lines(frame);
  auto header = std::find_if(lines.begin(), lines.end(),
                             [](const std::string& l) { return absl::StartsWith(l, "TASK"); });
  ASSERT_NE(header, lines.end()) << frame;
  const std::string& h = *header;
  const size_t variant_col = WatchDisplayWidth(h.substr(0, h.find("VARIANT")));
  const size_t latest_end = WatchDisplayWidth(h.substr(0, h.find("LATEST") + 6));
  const size_t history_col = WatchDisplayWidth(h.substr(0, h.find("HISTORY")));
  ASSERT_EQ(lines.end() - header, 1 + 6 + 1) << frame;  // header, 6 rows, final ""
  int sparklines = 0;
  for (size_t i = 0; i < snapshot.series.size(); ++i) {
    const std::string& line = *(header + 1 + static_cast<std::ptrdiff_t>(i));
    const WatchSeries& series = snapshot.series[i];
    // VARIANT starts at the same column whatever the task name's width (日本語 is 6 wide).
    const size_t v = line.find(" " + series.variant + " ") + 1;
    EXPECT_EQ(WatchDisplayWidth(line.substr(0, v)), variant_col) << line;
    // LATEST is right-aligned under its header.
    const std::string latest =
        series.points.empty() ? "-" : absl::StrFormat("%.4f", series.points.back().second);
    // (a row without scores has "-" under STEP too: LATEST's is the second)
    const size_t from = series.points.empty() ? line.find(" - ", v) + 1 : v;
    const size_t l = line.find(" " + latest + " ", from) + 1;
    EXPECT_EQ(WatchDisplayWidth(line.substr(0, l + latest.size())), latest_end) << line;
    // The sparkline starts at the HISTORY column.
    const size_t p = line.find_first_of("\xe2", l + latest.size());
    if (series.points.empty()) {
      EXPECT_EQ(p, std::string::npos) << line;
      continue;
    }
    ASSERT_NE(p, std::string::npos) << line;
    EXPECT_EQ(WatchDisplayWidth(line.substr(0, p)), history_col) << line;
    ++sparklines;
  }
  EXPECT_EQ(sparklines, 5);  // all but the avg@3 row without scores
}

TEST(RenderWatchTest, ColourOnlyWhenAsked) {
  RenderOptions options;
  options.color = true;
  const std::string frame = RenderWatch(HandBuiltSnapshot(), options);
  EXPECT_THAT(frame, HasSubstr("\033[33m60 steps\033[0m"));  // lag > 0: yellow
  EXPECT_THAT(frame, HasSubstr("\033[31m1 failed\033[0m"));
}

TEST(RenderWatchTest, ShowsTheErrorAboveTheLastData) {
  WatchSnapshot s = HandBuiltSnapshot();
  s.error = "cannot reach steadyeval-server at h:1";
  const std::string frame = RenderWatch(s, RenderOptions());
  EXPECT_THAT(Lines(frame)[1], "error: cannot reach steadyeval-server at h:1");
  EXPECT_THAT(frame, HasSubstr("17 admitted"));
}

TEST(RenderWatchLineTest, CompactLine) {
  RenderOptions options;
  options.now = absl::FromUnixSeconds(12 * 3600 + 3);
  EXPECT_EQ(RenderWatchLine(HandBuiltSnapshot(), options),
            "12:00:03 demo: 17 checkpoints, 15 evaluated, 1 failed, lag 60 steps, jobs 2 "
            "pending 1 leased | toy_facts raw 1.00 avg@3 0.45 ens@3 0.43 | 日本語qa raw 0.12 "
            "avg@3 - ens@3 0.75");
  EXPECT_EQ(RenderWatchLine(HandBuiltSnapshot(), RenderOptions()).substr(0, 6), "demo: ");
}

// ---- BuildWatchSnapshot against the generated mock ----

v1::Checkpoint MakeCheckpoint(uint64_t step, v1::CheckpointState state) {
  v1::Checkpoint c;
  c.set_run("demo");
  c.set_step(step);
  c.set_state(state);
  return c;
}

v1::Job MakeJob(v1::JobState state) {
  v1::Job j;
  j.set_run("demo");
  j.set_state(state);
  return j;
}

v1::Score MakeScore(const std::string& task, const std::string& variant, uint64_t step,
                    double score) {
  v1::Score s;
  s.set_run("demo");
  s.set_task(task);
  s.set_variant(variant);
  s.set_step(step);
  s.set_score(score);
  return s;
}

// Expects every request of one refresh, answered with the given data, any number of times.
void ExpectRun(MockStub& stub, std::vector<v1::Checkpoint> checkpoints,
               std::vector<v1::Job> jobs) {
  v1::GetRunResponse run;
  run.mutable_run()->mutable_config()->set_name("demo");
  run.mutable_run()->mutable_config()->set_source("/data/demo");
  run.mutable_run()->mutable_config()->add_tasks()->set_name("toy_facts");
  run.mutable_run()->mutable_config()->add_tasks()->set_name("arith");
  run.mutable_run()->mutable_config()->add_average_windows(3);
  run.mutable_run()->mutable_config()->add_ensemble_windows(3);
  EXPECT_CALL(stub, GetRun(_, _, _))
      .WillRepeatedly(DoAll(SetArgPointee<2>(run), Return(grpc::Status::OK)));
  EXPECT_CALL(stub, ListCheckpointsRaw(_, _)).WillRepeatedly(Invoke([checkpoints](auto, auto) {
    return new FakeReader<v1::Checkpoint>(checkpoints, grpc::Status::OK);
  }));
  EXPECT_CALL(stub, ListJobsRaw(_, _)).WillRepeatedly(Invoke([jobs](auto, auto) {
    return new FakeReader<v1::Job>(jobs, grpc::Status::OK);
  }));
  v1::ListWorkersResponse workers;
  workers.add_workers()->set_state(v1::WORKER_BUSY);
  workers.add_workers()->set_state(v1::WORKER_IDLE);
  workers.add_workers()->set_state(v1::WORKER_LOST);
  EXPECT_CALL(stub, ListWorkers(_, _, _))
      .WillRepeatedly(DoAll(SetArgPointee<2>(workers), Return(grpc::Status::OK)));
  std::vector<v1::Score> scores = {
      MakeScore("toy_facts", "raw", 200, 1.0), MakeScore("toy_facts", "raw", 100, 0.0),
      MakeScore("toy_facts", "avg@3", 200, 0.5), MakeScore("arith", "ens-soft@3", 200, 0.25)};
  EXPECT_CALL(stub, GetScoresRaw(_, _)).WillRepeatedly(Invoke([scores](auto, auto) {
    return new FakeReader<v1::Score>(scores, grpc::Status::OK);
  }));
  v1::GetStabilityResponse stability;
  v1::StabilityRow* row = stability.add_rows();
  row->set_task("toy_facts");
  row->set_kind("task");
  row->set_variant("raw");
  row->set_mtv(1.0);
  row->set_instability(0.5);
  v1::StabilityRow* avg = stability.add_rows();  // an AVG row is not a task row
  avg->set_task("AVG");
  avg->set_kind("avg");
  avg->set_variant("raw");
  avg->set_mtv(9);
  EXPECT_CALL(stub, GetStability(_, _, _))
      .WillRepeatedly(DoAll(SetArgPointee<2>(stability), Return(grpc::Status::OK)));
}

std::vector<v1::Checkpoint> SomeCheckpoints() {
  return {MakeCheckpoint(100, v1::CHECKPOINT_EVALUATED),
          MakeCheckpoint(200, v1::CHECKPOINT_EVALUATED),
          MakeCheckpoint(250, v1::CHECKPOINT_FAILED),
          MakeCheckpoint(300, v1::CHECKPOINT_EVALUATING),
          MakeCheckpoint(400, v1::CHECKPOINT_PENDING)};
}

std::vector<v1::Job> SomeJobs() {
  return {MakeJob(v1::JOB_PENDING), MakeJob(v1::JOB_PENDING),   MakeJob(v1::JOB_LEASED),
          MakeJob(v1::JOB_DONE),    MakeJob(v1::JOB_DONE),      MakeJob(v1::JOB_DONE),
          MakeJob(v1::JOB_FAILED),  MakeJob(v1::JOB_SUPERSEDED)};
}

TEST(BuildWatchSnapshotTest, CountsAndEvalLag) {
  MockStub stub;
  ExpectRun(stub, SomeCheckpoints(), SomeJobs());
  auto snapshot = BuildWatchSnapshot(&stub, "demo", 5);
  ASSERT_OK(snapshot);
  EXPECT_EQ(snapshot->source, "/data/demo");
  EXPECT_EQ(snapshot->admitted, 5u);
  EXPECT_EQ(snapshot->evaluated, 2u);
  EXPECT_EQ(snapshot->failed, 1u);
  EXPECT_EQ(snapshot->newest_admitted_step, 400u);
  EXPECT_EQ(snapshot->newest_evaluated_step, 200u);
  EXPECT_EQ(snapshot->eval_lag_steps, 200u);  // 400 - 200, as steadyeval_eval_lag_steps
  EXPECT_EQ(snapshot->jobs_pending, 2u);
  EXPECT_EQ(snapshot->jobs_leased, 1u);
  EXPECT_EQ(snapshot->jobs_done, 3u);
  EXPECT_EQ(snapshot->jobs_failed, 1u);
  EXPECT_EQ(snapshot->workers, 3u);
  EXPECT_EQ(snapshot->workers_busy, 1u);
  EXPECT_EQ(snapshot->workers_lost, 1u);

  // Tasks in the run's order; configured variants plus the ones scores name.
  std::vector<std::string> rows;
  for (const WatchSeries& s : snapshot->series) rows.push_back(s.task + " " + s.variant);
  EXPECT_EQ(rows, (std::vector<std::string>{"toy_facts raw", "toy_facts avg@3", "toy_facts ens@3",
                                            "arith raw", "arith avg@3", "arith ens@3",
                                            "arith ens-soft@3"}));
  const WatchSeries& raw = snapshot->series[0];
  EXPECT_EQ(raw.points, (std::vector<std::pair<uint64_t, double>>{{100, 0.0}, {200, 1.0}}));
  EXPECT_EQ(raw.mtv, 1.0);
  EXPECT_EQ(raw.instability, 0.5);
  EXPECT_FALSE(snapshot->series[1].mtv.has_value());
  EXPECT_EQ(snapshot->series[6].points.back().second, 0.25);
}

TEST(BuildWatchSnapshotTest, NothingEvaluatedYetLagsByTheNewestStep) {
  MockStub stub;
  ExpectRun(stub, {MakeCheckpoint(30, v1::CHECKPOINT_PENDING)}, {});
  auto snapshot = BuildWatchSnapshot(&stub, "demo", 5);
  ASSERT_OK(snapshot);
  EXPECT_EQ(snapshot->eval_lag_steps, 30u);
  MockStub empty;
  ExpectRun(empty, {}, {});
  auto none = BuildWatchSnapshot(&empty, "demo", 5);
  ASSERT_OK(none);
  EXPECT_EQ(none->eval_lag_steps, 0u);
}

TEST(BuildWatchSnapshotTest, UnknownRunIsNotFoundNamingIt) {
  MockStub stub;
  EXPECT_CALL(stub, GetRun(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::NOT_FOUND, "no such run")));
  auto snapshot = BuildWatchSnapshot(&stub, "nope", 5);
  EXPECT_THAT(snapshot, StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
}

// ---- The refresh loop, with a fake terminal ----

// A terminal whose clock advances by the interval on each wait and which stops after
// `refreshes` frames.
WatchTerminal FakeTerminal(int refreshes, bool tty) {
  WatchTerminal t;
  auto now = std::make_shared<absl::Time>(absl::FromUnixSeconds(1'795'000'000));
  auto left = std::make_shared<int>(refreshes);
  t.now = [now] { return *now; };
  t.wait = [now, left](absl::Duration d) {
    *now += d;
    return --*left > 0;
  };
  t.tty = tty;
  return t;
}

TEST(RunWatchTest, NotATtyPrintsOnlyChangedFramesAndSurvivesALostServer) {
  MockStub stub;
  ExpectRun(stub, SomeCheckpoints(), SomeJobs());
  // Refresh 1 and 2 see the same data; refresh 3 loses the server; refresh 4 sees it back.
  int call = 0;
  v1::GetRunResponse run;
  run.mutable_run()->mutable_config()->set_name("demo");
  EXPECT_CALL(stub, GetRun(_, _, _)).WillRepeatedly(Invoke([&](auto, auto, v1::GetRunResponse* r) {
    ++call;
    if (call == 3) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused");
    *r = run;
    return grpc::Status::OK;
  }));
  WatchTerminal terminal = FakeTerminal(4, /*tty=*/false);
  WatchOptions options;
  options.run = "demo";
  options.server = "h:1";
  std::ostringstream out;
  ASSERT_OK(RunWatch(options, &stub, terminal, out));
  EXPECT_EQ(call, 4);
  const std::string text = out.str();
  EXPECT_THAT(text, Not(HasSubstr("\033")));
  // Frames 1, 3 (the error) and 4 (back to normal); frame 2 was unchanged.
  size_t titles = 0;
  for (size_t p = 0; (p = text.find("steadyeval watch demo", p)) != std::string::npos; ++p) {
    ++titles;
  }
  EXPECT_EQ(titles, 3u) << text;
  EXPECT_THAT(text, HasSubstr("\n\nsteadyeval watch demo"));  // frames separated by a blank line
  EXPECT_THAT(text, HasSubstr("error: cannot reach steadyeval-server at h:1"));
  EXPECT_THAT(text, HasSubstr("(retrying every 2s)"));
  // The error frame keeps the last good data.
  const std::string error_frame = text.substr(text.find("error: "));
  EXPECT_THAT(error_frame.substr(0, error_frame.find("\n\n")), HasSubstr("5 admitted"));
}

TEST(RunWatchTest, LineModePrintsALineOnlyWhenItChanges) {
  MockStub stub;
  ExpectRun(stub, SomeCheckpoints(), SomeJobs());
  WatchTerminal terminal = FakeTerminal(3, /*tty=*/false);
  WatchOptions options;
  options.run = "demo";
  options.line = true;
  std::ostringstream out;
  ASSERT_OK(RunWatch(options, &stub, terminal, out));
  std::vector<std::string> lines = Lines(out.str());
  ASSERT_EQ(lines.size(), 2u) << out.str();  // one line and the final ""
  EXPECT_THAT(lines[0], HasSubstr("demo: 5 checkpoints, 2 evaluated, 1 failed, lag 200 steps, "
                                  "jobs 2 pending 1 leased 1 failed | toy_facts raw 1.00"));
}

TEST(RunWatchTest, TtyRedrawsInPlaceAndRestoresTheCursor) {
  MockStub stub;
  ExpectRun(stub, SomeCheckpoints(), SomeJobs());
  WatchTerminal terminal = FakeTerminal(2, /*tty=*/true);
  WatchOptions options;
  options.run = "demo";
  std::ostringstream out;
  ASSERT_OK(RunWatch(options, &stub, terminal, out));
  const std::string text = out.str();
  EXPECT_TRUE(absl::StartsWith(text, "\033[?25l\033[H\033[2J")) << text;
  EXPECT_TRUE(absl::EndsWith(text, "\033[?25h"));
  size_t clears = 0;
  for (size_t p = 0; (p = text.find("\033[H\033[2J", p)) != std::string::npos; ++p) ++clears;
  EXPECT_EQ(clears, 2u);  // every refresh redraws, changed or not
}

TEST(RunWatchTest, UnknownRunAtStartIsAnError) {
  MockStub stub;
  EXPECT_CALL(stub, GetRun(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::NOT_FOUND, "run 'nope' not found")));
  WatchTerminal terminal = FakeTerminal(5, /*tty=*/true);
  WatchOptions options;
  options.run = "nope";
  std::ostringstream out;
  EXPECT_THAT(RunWatch(options, &stub, terminal, out),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  EXPECT_TRUE(absl::EndsWith(out.str(), "\033[?25h"));  // the cursor comes back
}

// ---- Through the CLI entry point ----

TEST(WatchCliTest, OncePrintsOneFrame) {
  auto stub = std::make_unique<MockStub>();
  ExpectRun(*stub, SomeCheckpoints(), SomeJobs());
  CliResult r = RunWith({"watch", "demo", "--once"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_TRUE(absl::StartsWith(r.out, "steadyeval watch demo  ")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("5 admitted, 2 evaluated, 1 failed; newest step 400, evaluated "
                               "through 200\neval lag     200 steps\n"));
  EXPECT_THAT(r.out, HasSubstr("toy_facts  raw"));
  EXPECT_THAT(r.out, HasSubstr("▁█"));
  EXPECT_THAT(r.out, Not(HasSubstr("\033")));  // not a terminal: no colour, no redraw
  // title, source, checkpoints, lag, jobs, workers, blank, header, 7 rows
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 15) << r.out;
}

TEST(WatchCliTest, LineOncePrintsOneLine) {
  auto stub = std::make_unique<MockStub>();
  ExpectRun(*stub, SomeCheckpoints(), SomeJobs());
  CliResult r = RunWith({"--line", "watch", "--once", "demo"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  ASSERT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  // "HH:MM:SS demo: ..." in local time.
  EXPECT_EQ(r.out.substr(8),
            " demo: 5 checkpoints, 2 evaluated, 1 failed, lag 200 steps, jobs 2 pending 1 "
            "leased 1 failed | toy_facts raw 1.00 avg@3 0.50 ens@3 - | arith raw - avg@3 - "
            "ens@3 - ens-soft@3 0.25\n");
  EXPECT_EQ(r.out[2], ':');
}

TEST(WatchCliTest, JsonOncePrintsOneObject) {
  auto stub = std::make_unique<MockStub>();
  ExpectRun(*stub, SomeCheckpoints(), SomeJobs());
  CliResult r = RunWith({"watch", "demo", "--once", "--json"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  ASSERT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  nlohmann::json doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["run"], "demo");
  EXPECT_EQ(doc["eval_lag_steps"], 200);
  EXPECT_EQ(doc["checkpoints"]["admitted"], 5);
  EXPECT_EQ(doc["jobs"]["pending"], 2);
  EXPECT_EQ(doc["series"][0]["latest_score"], 1.0);
  EXPECT_EQ(doc["series"][0]["points"], nlohmann::json::parse("[[100,0.0],[200,1.0]]"));
  EXPECT_TRUE(doc["series"][1]["mtv"].is_null());
  EXPECT_TRUE(doc["error"].is_null());
}

TEST(WatchCliTest, UnknownRunExitsWithOneErrorLine) {
  auto stub = std::make_unique<MockStub>();
  EXPECT_CALL(*stub, GetRun(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::NOT_FOUND, "no such run")));
  CliResult r = RunWith({"watch", "nope"}, std::move(stub));
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(r.err, HasSubstr("steadyeval: run 'nope' not found"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1);
}

TEST(WatchCliTest, OnceWithTheServerDownFails) {
  auto stub = std::make_unique<MockStub>();
  EXPECT_CALL(*stub, GetRun(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused")));
  CliResult r = RunWith({"watch", "demo", "--once", "--server", "h:9"}, std::move(stub));
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(r.err, HasSubstr("cannot reach steadyeval-server at h:9"));
}

TEST(RunWatchTest, AServerClosingTheConnectionIsNamed) {
  MockStub stub;
  ExpectRun(stub, SomeCheckpoints(), SomeJobs());
  EXPECT_CALL(stub, GetRun(_, _, _)).WillRepeatedly(Return(grpc::Status::CANCELLED));
  WatchTerminal terminal = FakeTerminal(1, /*tty=*/false);
  WatchOptions options;
  options.run = "demo";
  options.server = "h:1";
  options.line = true;
  std::ostringstream out;
  ASSERT_OK(RunWatch(options, &stub, terminal, out));  // not at startup's NOT_FOUND: retried
  EXPECT_THAT(out.str(), HasSubstr("demo: 0 checkpoints, 0 evaluated, lag 0 steps, jobs 0 "
                                   "pending 0 leased | error: steadyeval-server at h:1 closed "
                                   "the connection (shutting down?) (retrying every 2s)\n"));
}

TEST(WatchCliTest, BadIntervalIsUsageAndHelpHasExamples) {
  CliResult bad = RunWith({"watch", "demo", "--interval_s", "0"}, std::make_unique<MockStub>());
  EXPECT_EQ(bad.code, kExitUsage);
  EXPECT_THAT(bad.err, HasSubstr("--interval_s"));
  CliResult help = RunWith({"watch", "--help"}, std::make_unique<MockStub>());
  EXPECT_EQ(help.code, kExitOk);
  EXPECT_THAT(help.out,
              HasSubstr("Usage: steadyeval watch NAME [--interval_s S] [--once] [--line]"));
  EXPECT_THAT(help.out, HasSubstr("steadyeval watch demo --line --once"));
  CliResult all = RunWith({"--help"}, std::make_unique<MockStub>());
  EXPECT_THAT(all.out, HasSubstr("watch"));
}

}  // namespace
}  // namespace steadyeval::client
