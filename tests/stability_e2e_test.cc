// End to end for checkpoint integration (issue #3): checkpoints whose predictions are made
// to flip, evaluated as raw, avg@2 and ens@3 through the real binaries.
//
// The "trainer" writes weights in the repeating pattern A, A, B: A = the fixture weights of
// step 100, B = 0.75·A + 0.25·θ(3000), a nearby model whose multiple-choice answers differ
// on a few examples (and whose accuracy differs); the midpoint of A and B answers like A
// (checked once with `steadyeval-worker eval` when the mix was chosen: answers change only
// beyond a mix of 0.15, and the midpoint is at 0.125). Raw
// predictions flip at two of every three transitions; an ensemble of three always holds
// two A's and votes A; avg@2 mixes neighbours. Checks:
//   - `stability` figures equal a hand computation from the exported predictions;
//   - ens@3 and avg@2 have lower MTV and IS than raw on the multiple-choice task;
//   - ens@3 predictions equal a majority vote computed here from the raw ones;
//   - a run where one checkpoint arrives after its successors ends with the same
//     predictions and figures as the run where it arrived in order.
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "testing/files.h"
#include "testing/process.h"
#include "testing/service_processes.h"
#include "testing/temp_dir.h"
#include "testing/wait.h"

namespace steadyeval::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

const std::vector<uint64_t> kSteps = {100, 200, 300, 400, 500, 600, 700, 800, 900};

bool IsB(uint64_t step) { return (step / 100) % 3 == 0; }

// (task, variant) → step → example → (normalized output, score)
using Predictions = std::map<std::pair<std::string, std::string>,
                             std::map<uint64_t, std::map<uint32_t, std::pair<std::string, double>>>>;

struct Figures {
  double mean = 0, mtv = 0, example_mtv = 0, is = 0;
  size_t points = 0;
};

// MTV, example MTV and IS straight from DESIGN §3.
Figures HandFigures(const std::map<uint64_t, std::map<uint32_t, std::pair<std::string, double>>>& seq) {
  Figures f;
  std::vector<uint64_t> steps;
  for (const auto& [step, _] : seq) steps.push_back(step);
  f.points = steps.size();
  auto score = [&](uint64_t step) {
    double sum = 0;
    for (const auto& [e, p] : seq.at(step)) sum += p.second;
    return sum / seq.at(step).size();
  };
  for (uint64_t s : steps) f.mean += score(s) / steps.size();
  if (steps.size() < 2) return f;
  const double pairs = steps.size() - 1;
  for (size_t i = 0; i + 1 < steps.size(); ++i) {
    const auto& a = seq.at(steps[i]);
    const auto& b = seq.at(steps[i + 1]);
    f.mtv += std::abs(score(steps[i + 1]) - score(steps[i])) / pairs;
    double flips = 0, delta = 0;
    for (const auto& [e, pa] : a) {
      const auto& pb = b.at(e);
      flips += pa.first != pb.first;
      delta += std::abs(pb.second - pa.second);
    }
    f.is += flips / a.size() / pairs;
    f.example_mtv += delta / a.size() / pairs;
  }
  return f;
}

class StabilityEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bin_ = BinDir();
    ASSERT_EQ(RunFixtures({"tokenizer", "--out", tmp_ / "tok"}).exit_code, 0);
    ASSERT_EQ(RunFixtures({"tasks", "--out", tmp_ / "tasks"}).exit_code, 0);
    auto server = ChildProcess::Start(
        {bin_ + "/steadyeval-server", "--data_dir", tmp_ / "data", "--listen", "127.0.0.1:0",
         "--metrics_listen", "127.0.0.1:0", "--ready_file", tmp_ / "ready.json", "--poll_interval_ms", "200", "--lease_ttl_ms", "5000"},
        tmp_ / "server");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_TRUE(WaitFor([&] { return fs::exists(tmp_ / "ready.json") && fs::file_size(tmp_ / "ready.json") > 0; },
                        seconds(30)))
        << server_.Logs();
    addr_ = json::parse(ReadFileOrEmpty(tmp_ / "ready.json"))["grpc"].get<std::string>();
    for (const char* name : {"wa", "wb"}) {
      auto worker = ChildProcess::Start({bin_ + "/steadyeval-worker", "--coordinator", addr_, "--name", name,
                                         "--threads", "1", "--acquire_wait_ms", "500"},
                                        tmp_ / name);
      ASSERT_TRUE(worker.ok()) << worker.status();
      workers_.push_back(std::move(*worker));
    }
  }

  void WriteCheckpoint(const std::string& root, uint64_t step) {
    std::vector<std::string> args = {"checkpoint", "--out", root + "/" + StepFolderName(step),
                                     "--step", "100", "--tokenizer", tmp_ / "tok/tokenizer.model"};
    if (IsB(step)) args.insert(args.end(), {"--mix_step", "3000", "--mix", "0.25"});
    CommandResult r = RunFixtures(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  CommandResult CliRaw(std::vector<std::string> args) {
    args.insert(args.begin(), {bin_ + "/steadyeval", "--server", addr_});
    return RunCommand(args);
  }

  json Cli(std::vector<std::string> args) {
    args.push_back("--json");
    CommandResult r = CliRaw(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    json doc = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(doc.is_discarded()) << r.out;
    return doc;
  }

  void AddRun(const std::string& name, const std::string& source) {
    Cli({"runs", "add", name, "--source", source, "--tasks",
         absl::StrCat(tmp_ / "tasks/arith_mc.jsonl", ":MC,", tmp_ / "tasks/qa_gen.json", ":QA"),
         "--few_shots", "2", "--settle_seconds", "0.2", "--average", "2", "--ensemble", "3"});
  }

  // Waits until every job of `run` is done and `expected_jobs` exist.
  void WaitForJobs(const std::string& run, size_t expected_jobs) {
    json jobs;
    ASSERT_TRUE(WaitFor(
        [&] {
          jobs = Cli({"jobs", "--run", run});
          size_t done = 0;
          for (const auto& j : jobs["jobs"]) done += j["state"] == "done";
          return done == expected_jobs;
        },
        seconds(600), milliseconds(500)))
        << jobs.dump(1) << server_.Logs() << workers_[0].Logs();
  }

  Predictions Export(const std::string& run) {
    CommandResult r = CliRaw({"export", run, "--format", "jsonl"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    Predictions out;
    std::istringstream lines(r.out);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.empty()) continue;
      json row = json::parse(line);
      out[{row["task"].get<std::string>(), row["variant"].get<std::string>()}][row["step"].get<uint64_t>()]
         [row["example"].get<uint32_t>()] = {row["normalized_output"].get<std::string>(), row["score"].get<double>()};
    }
    return out;
  }

  TempDir tmp_;
  std::string bin_;
  std::string addr_;
  ChildProcess server_;
  std::vector<ChildProcess> workers_;
};

TEST_F(StabilityEndToEndTest, IntegratedVariantsAreSteadierAndMatchHandComputation) {
  const std::string in_order = tmp_ / "in_order";
  const std::string late = tmp_ / "late";
  fs::create_directories(in_order);
  fs::create_directories(late);
  for (uint64_t step : kSteps) WriteCheckpoint(in_order, step);
  for (uint64_t step : kSteps) {
    if (step != 500) WriteCheckpoint(late, step);
  }
  AddRun("flip", in_order);
  AddRun("late", late);
  // 9 raw + 8 avg@2 windows.
  WaitForJobs("flip", 17);
  WaitForJobs("late", 15);
  // Step 500 arrives after its successors: windows ending at 500 and 600 change.
  WriteCheckpoint(late, 500);
  WaitForJobs("late", 17);

  Predictions flip = Export("flip");
  // raw, avg@2, ens@3 and ens-soft@3 (multiple choice only) for both tasks.
  for (const std::string task : {"arith_mc", "qa_gen"}) {
    EXPECT_EQ((flip[{task, "raw"}].size()), 9u) << task;
    EXPECT_EQ((flip[{task, "avg@2"}].size()), 8u) << task;
    EXPECT_EQ((flip[{task, "ens@3"}].size()), 7u) << task;
  }
  EXPECT_EQ((flip[{"arith_mc", "ens-soft@3"}].size()), 7u);

  // ens@3 == majority vote of the raw members, ties to the newest.
  for (const std::string task : {"arith_mc", "qa_gen"}) {
    const auto& raw = flip[{task, "raw"}];
    for (const auto& [end, examples] : flip[{task, "ens@3"}]) {
      auto it = raw.find(end);
      ASSERT_NE(it, raw.end());
      std::vector<uint64_t> members = {std::prev(it, 2)->first, std::prev(it, 1)->first, end};
      for (const auto& [e, pred] : examples) {
        std::map<std::string, int> votes;
        for (uint64_t m : members) ++votes[raw.at(m).at(e).first];
        int best = 0;
        for (const auto& [_, n] : votes) best = std::max(best, n);
        std::string expected;
        for (uint64_t m : members) {
          if (votes[raw.at(m).at(e).first] == best) expected = raw.at(m).at(e).first;  // newest wins
        }
        EXPECT_EQ(pred.first, expected) << task << " window ending " << end << " example " << e;
      }
    }
  }

  // Served figures over all points == hand computation from the exported predictions.
  json table = Cli({"stability", "flip", "--steps", "0:1000"});
  std::map<std::pair<std::string, std::string>, json> rows;
  for (const auto& row : table["rows"]) {
    if (row["kind"] == "task") rows[{row["task"].get<std::string>(), row["variant"].get<std::string>()}] = row;
  }
  for (const auto& [key, seq] : flip) {
    ASSERT_TRUE(rows.count(key)) << key.first << " " << key.second << table.dump(1);
    const json& row = rows[key];
    Figures hand = HandFigures(seq);
    EXPECT_EQ(row["checkpoints"].get<size_t>(), hand.points) << key.second;
    EXPECT_NEAR(row["mean"].get<double>(), hand.mean, 1e-9) << key.first << " " << key.second;
    EXPECT_NEAR(row["mtv"].get<double>(), hand.mtv, 1e-9) << key.first << " " << key.second;
    EXPECT_NEAR(row["example_mtv"].get<double>(), hand.example_mtv, 1e-9) << key.first << " " << key.second;
    EXPECT_NEAR(row["is"].get<double>(), hand.is, 1e-9) << key.first << " " << key.second;
  }

  // The integrated variants are steadier than raw on the multiple-choice task: raw flips
  // at two of three transitions, its accuracy moves by the A/B difference each time.
  const json& raw = rows[{"arith_mc", "raw"}];
  EXPECT_GT(raw["is"].get<double>(), 0) << table.dump(1);
  EXPECT_GT(raw["mtv"].get<double>(), 0) << table.dump(1);
  for (const std::string variant : {"avg@2", "ens@3"}) {
    const json& row = rows[{"arith_mc", variant}];
    EXPECT_LT(row["is"].get<double>(), raw["is"].get<double>()) << variant << table.dump(1);
    EXPECT_LT(row["mtv"].get<double>(), raw["mtv"].get<double>()) << variant << table.dump(1);
  }
  // The default range (the last 20%, at least 2 raw points) has rows too.
  json default_range = Cli({"stability", "flip"});
  EXPECT_EQ(default_range["range"]["from_step"], 800);
  EXPECT_EQ(default_range["range"]["to_step"], 900);

  // Late arrival: same predictions and figures as in order, superseded windows re-run.
  Predictions late_preds = Export("late");
  EXPECT_EQ(late_preds, flip);
  json late_table = Cli({"stability", "late", "--steps", "0:1000"});
  ASSERT_EQ(late_table["rows"].size(), table["rows"].size());
  for (size_t i = 0; i < table["rows"].size(); ++i) {
    const json& a = table["rows"][i];
    const json& b = late_table["rows"][i];
    EXPECT_EQ(a["task"], b["task"]);
    EXPECT_EQ(a["variant"], b["variant"]);
    EXPECT_EQ(a["checkpoints"], b["checkpoints"]);
    // Sums accumulated in another order may differ in the last bits.
    for (const char* field : {"mean", "mtv", "example_mtv", "is"}) {
      ASSERT_EQ(a[field].is_null(), b[field].is_null()) << field;
      if (!a[field].is_null()) {
        EXPECT_NEAR(a[field].get<double>(), b[field].get<double>(), 1e-12) << field;
      }
    }
  }
  size_t superseded = 0;
  const json late_jobs = Cli({"jobs", "--run", "late"});
  for (const auto& j : late_jobs["jobs"]) superseded += j["state"] == "superseded";
  EXPECT_EQ(superseded, 1u) << "the avg@2 window ending at 600 was (400, 600) before 500 arrived";
}

}  // namespace
}  // namespace steadyeval::testing
