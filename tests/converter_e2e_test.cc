// End to end, conversion (issue #18, DESIGN §4): a run whose checkpoint folders are real
// PyTorch DCP checkpoints (written in place by python3-torch's torch.distributed.checkpoint,
// .metadata last) is admitted by the DCP completeness rule, converted on the worker by the
// shipped converters/dcp_to_hf.py, and scored exactly as a second run over the same weights
// in HF layout. A converter that fails, and one that hangs past --converter_timeout_s, fail
// their job with the converter's stderr / the timeout named, and the worker stays up.
// Real binaries (server, worker, CLI, fixtures) and /usr/bin/python3.
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "testing/files.h"
#include "testing/process.h"
#include "testing/service_processes.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"
#include "testing/wait.h"

namespace steadyeval::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kPython[] = "/usr/bin/python3";

class ConverterEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bin_ = BinDir();
    source_dir_ = fs::absolute(SourceDir()).lexically_normal().string();
    while (source_dir_.size() > 1 && source_dir_.back() == '/') source_dir_.pop_back();
    converter_ = source_dir_ + "/converters/dcp_to_hf.py";
    ASSERT_TRUE(fs::exists(kPython)) << "python3-torch is needed (scripts/install-deps.sh)";
    CommandResult tok = RunFixtures({"tokenizer", "--out", tmp_ / "tok"});
    ASSERT_EQ(tok.exit_code, 0) << tok.err;
    CommandResult tasks = RunFixtures({"tasks", "--out", tmp_ / "tasks"});
    ASSERT_EQ(tasks.exit_code, 0) << tasks.err;
    StartServer();
  }

  // An HF checkpoint of `step` in `root`/step_NNNNNN (the fixtures' tiny Llama).
  void WriteHf(const std::string& root, uint64_t step) {
    CommandResult r = RunFixtures({"checkpoint", "--out", root + "/" + StepFolderName(step), "--step",
                            std::to_string(step), "--tokenizer", tmp_ / "tok/tokenizer.model"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  // The same weights as `hf_folder`, written in place as a DCP checkpoint (plus a
  // non-tensor train_state entry) into `root`/step_NNNNNN: what a trainer leaves.
  void WriteDcp(const std::string& hf_folder, const std::string& root, uint64_t step) {
    CommandResult r = RunCommand({kPython, source_dir_ + "/converters/testdata/hf_to_dcp.py",
                                  "--train_state", hf_folder, root + "/" + StepFolderName(step)});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  void StartServer() { ASSERT_OK(services_.StartCoordinator({"--lease_ttl_ms", "20000"})); }

  // A worker declaring `converters` (each "NAME=CMD ARGS {src} {dst}"), caching under tmp.
  ChildProcess& StartWorker(const std::string& name, const std::vector<std::string>& converters,
                            const std::vector<std::string>& extra = {}) {
    std::vector<std::string> flags = {"--cache_dir", tmp_ / ("cache-" + name)};
    for (const std::string& c : converters) flags.insert(flags.end(), {"--converter", c});
    flags.insert(flags.end(), extra.begin(), extra.end());
    absl::StatusOr<ChildProcess*> worker = services_.StartWorker(name, flags);
    if (!worker.ok()) {
      ADD_FAILURE() << worker.status();
      std::abort();  // nothing to hand back; the test cannot go on
    }
    return **worker;
  }

  json Cli(std::vector<std::string> args) { return services_.Cli(std::move(args)); }

  // Adds a run through the CLI; false (with the CLI's error recorded) when it fails.
  bool AddRun(std::vector<std::string> args) {
    args.insert(args.begin(), {"runs", "add"});
    return !Cli(args).is_null();
  }

  bool AnyWorkerRunning() {
    for (auto& w : services_.workers()) {
      if (w.running()) return true;
    }
    return false;
  }

  // Waits until run `run` has `n` checkpoints in `state` (or every worker has exited);
  // returns the last view of its checkpoints.
  json WaitForState(const std::string& run, const std::string& state, size_t n, int timeout_s) {
    json checkpoints;
    bool reached = false;
    WaitFor(
        [&] {
          checkpoints = Cli({"checkpoints", run});
          reached = CountCheckpoints(checkpoints, state) == n;
          return reached || !AnyWorkerRunning();
        },
        seconds(timeout_s), milliseconds(500));
    EXPECT_TRUE(reached) << run << ": " << checkpoints.dump(2) << Logs();
    return checkpoints;
  }

  // Every stored per-example prediction of run `run` (`steadyeval export`), keyed by task,
  // variant, step and example, with the run's name left out.
  std::map<std::string, json> Predictions(const std::string& run) {
    CommandResult r = RunCommand(
        {bin_ + "/steadyeval", "--server", services_.address(), "export", run, "--format", "jsonl"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::map<std::string, json> out;
    for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
      json row = json::parse(std::string(line), nullptr, false);
      EXPECT_FALSE(row.is_discarded()) << line;
      row.erase("run");
      const std::string key = json::array({row["task"], row["variant"], row["step"], row["example"]}).dump();
      out[key] = std::move(row);
    }
    return out;
  }

  // The first job of run `run` (null while it has none).
  json FirstJob(const std::string& run) {
    json jobs = Cli({"jobs", "--run", run});
    return jobs["jobs"].empty() ? json() : jobs["jobs"][0];
  }

  std::string Logs() { return services_.Logs(); }

  TempDir tmp_;
  std::string bin_;
  std::string source_dir_;
  std::string converter_;
  ServiceProcesses services_{tmp_.path()};
};

TEST_F(ConverterEndToEndTest, DcpRunScoresEqualTheHfRunAndBadConvertersFailTheirJob) {
  const std::string hf = tmp_ / "hf";
  const std::string dcp = tmp_ / "dcp";
  const std::string no_config = tmp_ / "dcp_without_config";
  fs::create_directories(dcp);
  fs::create_directories(no_config);
  for (uint64_t step : {100, 200}) {
    WriteHf(hf, step);
    WriteDcp(hf + "/" + StepFolderName(step), dcp, step);
    ASSERT_FALSE(fs::exists(dcp + "/" + StepFolderName(step) + "/config.json"));
  }
  // The same DCP checkpoint for the converter that fails (it lacks --config): a copy, not a
  // third conversion.
  fs::copy(dcp + "/" + StepFolderName(100), no_config + "/" + StepFolderName(100),
           fs::copy_options::recursive);
  // A folder the DCP rule holds back: shards but no .metadata (DCP writes it last).
  fs::create_directories(dcp + "/" + StepFolderName(300));
  std::ofstream(dcp + "/" + StepFolderName(300) + "/__0_0.distcp") << "partial";

  // The configuration (and tokenizer) that DCP checkpoints lack comes from --config.
  const std::string config_dir = hf + "/" + StepFolderName(100);
  ChildProcess& worker = StartWorker(
      "wa", {absl::StrCat("dcp=", kPython, " ", converter_, " --config ", config_dir, " {src} {dst}"),
             absl::StrCat("noconfig=", kPython, " ", converter_, " {src} {dst}")});

  const std::string mc_task = tmp_ / "tasks/arith_mc.jsonl";
  const std::string gen_task = tmp_ / "tasks/qa_gen.json";
  const std::string tasks = absl::StrCat(mc_task, ",", gen_task);
  ASSERT_TRUE(AddRun({"hf", "--source", hf, "--tasks", tasks, "--few_shots", "2",
                      "--settle_seconds", "0.3"}));
  ASSERT_TRUE(AddRun({"conv", "--source", dcp, "--tasks", tasks, "--few_shots", "2",
                      "--settle_seconds", "0.3", "--convert", "dcp"}));
  ASSERT_TRUE(AddRun({"broken", "--source", no_config, "--tasks", mc_task, "--settle_seconds",
                      "0.3", "--convert", "noconfig"}));

  WaitForState("hf", "evaluated", 2, 300);
  json conv = WaitForState("conv", "evaluated", 2, 300);
  // step_000300 has no .metadata: pending, with the DCP rule named.
  ASSERT_EQ(conv["pending"].size(), 1u) << conv.dump(2);
  EXPECT_EQ(conv["pending"][0]["step"], 300);
  EXPECT_THAT(conv["pending"][0]["reason"].get<std::string>(), HasSubstr(".metadata"));

  const auto hf_scores = services_.Scores("hf");
  const auto conv_scores = services_.Scores("conv");
  ASSERT_EQ(hf_scores.size(), 4u);
  ASSERT_EQ(conv_scores.size(), hf_scores.size());
  for (const auto& [key, score] : hf_scores) {
    ASSERT_TRUE(conv_scores.count(key)) << key.first << " " << key.second;
    EXPECT_EQ(conv_scores.at(key), score) << key.first << " " << key.second;
  }

  // Not only the scores: every example's stored output (per-option log-likelihoods,
  // generated text) is the same.
  const auto hf_predictions = Predictions("hf");
  const auto conv_predictions = Predictions("conv");
  ASSERT_FALSE(hf_predictions.empty());
  ASSERT_EQ(conv_predictions.size(), hf_predictions.size());
  for (const auto& [key, prediction] : hf_predictions) {
    ASSERT_TRUE(conv_predictions.count(key)) << key;
    ASSERT_EQ(conv_predictions.at(key), prediction) << key;
  }

  // The failing converter: the job fails with its stderr (dcp_to_hf.py's one line).
  json broken = WaitForState("broken", "failed", 1, 180);
  const json broken_job = FirstJob("broken");
  EXPECT_EQ(broken_job["state"], "failed") << broken_job.dump(2);
  EXPECT_THAT(broken_job["error"].get<std::string>(),
              AllOf(HasSubstr("converter 'noconfig' exited with status 1"),
                    HasSubstr("dcp_to_hf: no config.json in"), HasSubstr("--config")))
      << broken_job.dump(2);
  EXPECT_THAT(broken["checkpoints"][0]["error"].get<std::string>(), HasSubstr("no config.json"));
  EXPECT_TRUE(worker.running()) << worker.Logs();

  // A hanging converter, on a worker with a short timeout: killed, the job fails with the
  // timeout named, and the worker carries on.
  ASSERT_EQ(worker.Stop(SIGTERM), 0) << worker.Logs();
  ChildProcess& patient = StartWorker(
      "wb", {absl::StrCat("hang=", kPython, " -c 'import signal; signal.pause()' {src} {dst}")},
      {"--converter_timeout_s", "2"});
  ASSERT_TRUE(AddRun({"hang", "--source", no_config, "--tasks", mc_task, "--settle_seconds",
                      "0.3", "--convert", "hang"}));
  // Retried like any failed attempt, then failed for good, each attempt naming the timeout.
  json hang = WaitForState("hang", "failed", 1, 240);
  const json hang_job = FirstJob("hang");
  EXPECT_EQ(hang_job["state"], "failed") << hang_job.dump(2);
  EXPECT_THAT(hang_job["error"].get<std::string>(),
              AllOf(HasSubstr("converter 'hang'"), HasSubstr("timeout of 2 s"),
                    HasSubstr("--converter_timeout_s")))
      << hang_job.dump(2);
  EXPECT_THAT(hang["checkpoints"][0]["error"].get<std::string>(),
              HasSubstr("--converter_timeout_s"));
  EXPECT_TRUE(patient.running()) << patient.Logs();
  // Still serving: the HF run's next checkpoint is evaluated by the same worker.
  WriteHf(hf, 400);
  WaitForState("hf", "evaluated", 3, 300);
  EXPECT_TRUE(patient.running()) << patient.Logs();
}

}  // namespace
}  // namespace steadyeval::testing
