// End to end: coordinator + two workers + a checkpoint folder that gains checkpoints while
// the test runs (one written slowly, shard by shard), driven through the real binaries and
// the CLI. Checks: every checkpoint evaluated exactly once and never before it was
// complete; GetScores == `steadyeval-worker eval` on the same checkpoint; everything
// survives a coordinator restart and the workers carry on by themselves.
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
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

class EndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bin_ = BinDir();
    ckpts_ = tmp_ / "checkpoints";
    fs::create_directories(ckpts_);
    CommandResult tok = RunFixtures({"tokenizer", "--out", tmp_ / "tok"});
    ASSERT_EQ(tok.exit_code, 0) << tok.err;
    CommandResult tasks = RunFixtures({"tasks", "--out", tmp_ / "tasks"});
    ASSERT_EQ(tasks.exit_code, 0) << tasks.err;
    StartServer();
  }

  std::vector<std::string> WriteCheckpointArgs(uint64_t step) {
    return {bin_ + "/steadyeval-fixtures", "checkpoint", "--out", CheckpointDir(step), "--step",
            std::to_string(step), "--tokenizer", tmp_ / "tok/tokenizer.model"};
  }

  std::string CheckpointDir(uint64_t step) { return ckpts_ + "/" + StepFolderName(step); }

  // `listen` "127.0.0.1:0" picks a free port; a restart passes the old address so the
  // running workers find the new coordinator there.
  void StartServer(const std::string& listen = "127.0.0.1:0",
                   const std::string& lease_ttl_ms = "4000") {
    std::string ready = tmp_ / "ready.json";
    fs::remove(ready);
    auto server = ChildProcess::Start(
        {bin_ + "/steadyeval-server", "--data_dir", tmp_ / "data", "--listen", listen,
         "--metrics_listen", "127.0.0.1:0", "--ready_file", ready, "--poll_interval_ms", "200",
         "--lease_ttl_ms", lease_ttl_ms},
        tmp_ / absl::StrCat("server", ++server_starts_));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_TRUE(WaitFor([&] { return fs::exists(ready) && fs::file_size(ready) > 0; }, seconds(30)))
        << server_.Logs();
    json info = json::parse(ReadFileOrEmpty(ready));
    addr_ = info["grpc"].get<std::string>();
  }

  void StartWorker(const std::string& name, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {bin_ + "/steadyeval-worker", "--coordinator", addr_,
                                     "--name", name, "--threads", "1", "--acquire_wait_ms", "500"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto worker = ChildProcess::Start(argv, tmp_ / name);
    ASSERT_TRUE(worker.ok()) << worker.status();
    workers_.push_back(std::move(*worker));
  }

  // Runs the CLI against the current server; returns stdout parsed as JSON.
  json Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {bin_ + "/steadyeval", "--server", addr_, "--json"});
    CommandResult r = RunCommand(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    json doc = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(doc.is_discarded()) << r.out;
    return doc;
  }

  size_t CountState(const json& checkpoints, const std::string& state) {
    size_t n = 0;
    for (const auto& c : checkpoints["checkpoints"]) n += c["state"] == state;
    return n;
  }

  std::string Logs() {
    std::string all = server_.Logs();
    for (auto& w : workers_) all += w.Logs();
    return all;
  }

  TempDir tmp_;
  std::string bin_;
  std::string ckpts_;
  std::string addr_;
  int server_starts_ = 0;
  ChildProcess server_;
  std::vector<ChildProcess> workers_;
};

TEST_F(EndToEndTest, CheckpointsInScoresOutSurvivesRestart) {
  const std::string mc_task = tmp_ / "tasks/arith_mc.jsonl";
  const std::string gen_task = tmp_ / "tasks/qa_gen.json";

  // Two checkpoints exist before the run is registered; a temp-named folder is ignored.
  ASSERT_EQ(RunCommand(WriteCheckpointArgs(100)).exit_code, 0);
  ASSERT_EQ(RunCommand(WriteCheckpointArgs(200)).exit_code, 0);
  fs::create_directories(ckpts_ + "/step_000250.tmp");

  StartWorker("wa");
  StartWorker("wb");
  // A generation task whose gold answers are what step 100 generates offline: its served
  // score at step 100 must be exactly 1, which proves the generated text that travels
  // through the service equals the offline output (a random model rarely hits real golds).
  const std::string self_task = tmp_ / "tasks/qa_self.json";
  {
    CommandResult offline = RunCommand({bin_ + "/steadyeval-worker", "eval", "--checkpoint",
                                        CheckpointDir(100), "--task", gen_task, "--few_shots", "2",
                                        "--threads", "1", "--json"});
    ASSERT_EQ(offline.exit_code, 0) << offline.err;
    json outputs = json::parse(offline.out)["examples"];
    json task = json::parse(ReadFileOrEmpty(gen_task));
    ASSERT_EQ(task["samples"].size(), outputs.size());
    for (size_t i = 0; i < outputs.size(); ++i) {
      std::string out = outputs[i]["output"].get<std::string>();
      out = out.substr(0, out.find("\n\n"));
      task["samples"][i]["output"] = out;
    }
    std::ofstream(self_task) << task.dump();
  }
  // A sample task scored by char_f1 (and exact_match) whose shots come from a train split.
  const std::string ja_qa_task = SourceDir() + "/examples/tasks/ja_qa.json";
  const std::string train_dir = SourceDir() + "/examples/tasks/train";
  json created = Cli({"runs", "add", "e2e", "--source", ckpts_, "--tasks",
                      absl::StrCat(mc_task, ",", gen_task, ",", self_task, ",", ja_qa_task),
                      "--few_shots", "2", "--few_shots_from", train_dir, "--settle_seconds",
                      "0.3"});
  ASSERT_FALSE(created.is_null());

  // Step 300 is written slowly, shard by shard, while the coordinator polls; then 400.
  std::vector<std::string> slow = WriteCheckpointArgs(300);
  slow.insert(slow.end(), {"--shards", "3", "--slow_ms", "250"});
  CommandResult slow_write = RunCommand(slow);
  ASSERT_EQ(slow_write.exit_code, 0) << slow_write.err;
  int64_t slow_done_ms = 0;
  for (const auto& entry : fs::directory_iterator(CheckpointDir(300))) {
    struct stat st;
    ASSERT_EQ(stat(entry.path().c_str(), &st), 0);
    slow_done_ms = std::max<int64_t>(slow_done_ms, st.st_mtim.tv_sec * 1000LL + st.st_mtim.tv_nsec / 1000000);
  }
  ASSERT_EQ(RunCommand(WriteCheckpointArgs(400)).exit_code, 0);

  json checkpoints;
  ASSERT_TRUE(WaitFor(
      [&] {
        checkpoints = Cli({"checkpoints", "e2e"});
        return CountState(checkpoints, "evaluated") == 4;
      },
      seconds(300), milliseconds(500)))
      << checkpoints.dump(2) << Logs();
  EXPECT_EQ(checkpoints["checkpoints"].size(), 4u) << checkpoints.dump(2);
  for (const auto& c : checkpoints["checkpoints"]) {
    if (c["step"] == 300) {
      // Admitted only after its last byte was written.
      EXPECT_GE(c["admitted_unix_ms"].get<int64_t>(), slow_done_ms) << c.dump();
    }
  }

  // Exactly one raw job per checkpoint, each done on its first lease.
  json jobs = Cli({"jobs", "--run", "e2e"});
  std::multiset<uint64_t> job_steps;
  for (const auto& j : jobs["jobs"]) {
    EXPECT_EQ(j["kind"], "raw");
    EXPECT_EQ(j["state"], "done") << j.dump();
    EXPECT_EQ(j["attempts"], 1) << j.dump();
    ASSERT_EQ(j["steps"].size(), 1u);
    job_steps.insert(j["steps"][0].get<uint64_t>());
  }
  EXPECT_EQ(job_steps, (std::multiset<uint64_t>{100, 200, 300, 400})) << jobs.dump(2);

  // Coordinator scores == offline eval of the same checkpoint and task file.
  json scores = Cli({"scores", "e2e"});
  std::map<std::pair<uint64_t, std::string>, double> served;
  for (const auto& s : scores["scores"]) {
    EXPECT_EQ(s["variant"], "raw");
    served[{s["step"].get<uint64_t>(), s["task"].get<std::string>()}] = s["score"].get<double>();
  }
  ASSERT_EQ(served.size(), 16u) << scores.dump(2);
  EXPECT_EQ((served[{100, "qa_self"}]), 1.0) << scores.dump(2);
  for (uint64_t step : {100, 200, 300, 400}) {
    for (const std::string& task : {mc_task, gen_task, self_task, ja_qa_task}) {
      std::vector<std::string> args = {bin_ + "/steadyeval-worker", "eval", "--checkpoint",
                                       CheckpointDir(step), "--task", task, "--few_shots", "2",
                                       "--threads", "1", "--json"};
      if (task == ja_qa_task) args.insert(args.end(), {"--few_shots_from", train_dir + "/ja_qa.json"});
      CommandResult offline = RunCommand(args);
      ASSERT_EQ(offline.exit_code, 0) << offline.err;
      json result = json::parse(offline.out);
      auto key = std::make_pair(step, result["task"].get<std::string>());
      ASSERT_TRUE(served.count(key)) << "no served score for step " << step << " " << key.second;
      EXPECT_NEAR(served[key], result["score"].get<double>(), 1e-12) << "step " << step << " " << key.second;
    }
  }

  // The run is pinned to the checkpoints' tokenizer (the fixture tool writes the same
  // tokenizer.model into every checkpoint), by the first accepted result.
  const json shown = Cli({"runs", "show", "e2e"});
  EXPECT_EQ(shown["run"]["tokenizer_sha256"].get<std::string>().size(), 64u) << shown.dump(2);
  EXPECT_GE(shown["run"]["tokenizer_pinned_step"].get<uint64_t>(), 100u) << shown.dump(2);

  // Restart the coordinator: runs, checkpoints, jobs and scores are all still there.
  json runs_before = Cli({"runs", "list"});
  ASSERT_EQ(server_.Stop(SIGTERM), 0) << server_.Logs();
  StartServer(addr_);
  EXPECT_EQ(Cli({"runs", "list"}), runs_before);
  EXPECT_EQ(Cli({"checkpoints", "e2e"}), checkpoints);
  EXPECT_EQ(Cli({"scores", "e2e"}), scores);
  EXPECT_EQ(Cli({"jobs", "--run", "e2e"}), jobs);
  // Re-scoring the stored outputs (no worker involved) reproduces every score.
  json rescored = Cli({"rescore", "e2e"});
  EXPECT_EQ(rescored["values"], 16) << rescored.dump();
  EXPECT_EQ(rescored["scores_changed"], 0) << rescored.dump();
  EXPECT_EQ(Cli({"scores", "e2e"}), scores);

  // The running workers register again by themselves and evaluate a new checkpoint.
  ASSERT_EQ(RunCommand(WriteCheckpointArgs(500)).exit_code, 0);
  ASSERT_TRUE(WaitFor(
      [&] {
        checkpoints = Cli({"checkpoints", "e2e"});
        return CountState(checkpoints, "evaluated") == 5;
      },
      seconds(180), milliseconds(500)))
      << checkpoints.dump(2) << Logs();
  json workers;
  EXPECT_TRUE(WaitFor([&] {
    workers = Cli({"workers"});
    return workers["workers"].size() == 2u;
  }, seconds(60))) << workers.dump(2) << Logs();
  for (auto& w : workers_) EXPECT_TRUE(w.running()) << w.Logs();
}

TEST_F(EndToEndTest, CheckpointLosingAShardAfterAdmissionFailsWithTheReason) {
  std::vector<std::string> sharded = WriteCheckpointArgs(100);
  sharded.insert(sharded.end(), {"--shards", "2"});
  ASSERT_EQ(RunCommand(sharded).exit_code, 0);
  ASSERT_EQ(RunCommand(WriteCheckpointArgs(200)).exit_code, 0);
  Cli({"runs", "add", "broken", "--source", ckpts_, "--tasks", tmp_ / "tasks/arith_mc.jsonl",
       "--settle_seconds", "0.1"});
  // No worker yet: both checkpoints are admitted and wait as pending.
  json checkpoints;
  ASSERT_TRUE(WaitFor([&] {
    checkpoints = Cli({"checkpoints", "broken"});
    return CountState(checkpoints, "pending") == 2;
  }, seconds(60)))
      << checkpoints.dump(2) << Logs();
  // The trainer rotates a shard away before any worker loads it.
  const std::string shard = CheckpointDir(100) + "/model-00002-of-00002.safetensors";
  ASSERT_TRUE(fs::remove(shard)) << shard;
  StartWorker("wa");
  ASSERT_TRUE(WaitFor([&] {
    checkpoints = Cli({"checkpoints", "broken"});
    return CountState(checkpoints, "failed") == 1 && CountState(checkpoints, "evaluated") == 1;
  }, seconds(120)))
      << checkpoints.dump(2) << Logs();
  for (const auto& c : checkpoints["checkpoints"]) {
    if (c["step"] == 100) {
      EXPECT_THAT(c["error"].get<std::string>(), ::testing::HasSubstr("model-00002-of-00002.safetensors"));
    }
  }
  // A permanent load error is not retried.
  const json broken_jobs = Cli({"jobs", "--run", "broken"});
  for (const auto& j : broken_jobs["jobs"]) {
    if (j["steps"][0] == 100) {
      EXPECT_EQ(j["state"], "failed");
      EXPECT_EQ(j["attempts"], 1);
    }
  }
}

TEST_F(EndToEndTest, BadInputGetsClearErrorsAndLosesNothing) {
  // Unknown run.
  CommandResult unknown = RunCommand({bin_ + "/steadyeval", "--server", addr_, "scores", "nope"});
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_THAT(unknown.err, ::testing::HasSubstr("nope"));

  // Malformed task file: the error names the file and the line; no run is created.
  std::string bad = tmp_ / "bad.jsonl";
  {
    std::ofstream out(bad);
    out << R"({"id": 1, "query": "1+1=", "choices": ["2", "3"], "gold": 0})" << "\n"
        << R"({"id": 2, "query": "2+2=", "choices": ["4"], "gold": 0})" << "\n";
  }
  CommandResult bad_task = RunCommand({bin_ + "/steadyeval", "--server", addr_, "runs", "add", "x",
                                       "--source", ckpts_, "--tasks", bad});
  EXPECT_NE(bad_task.exit_code, 0);
  EXPECT_THAT(bad_task.err, ::testing::HasSubstr("bad.jsonl:2"));
  EXPECT_TRUE(Cli({"runs", "list"})["runs"].empty());

  // Bad flag.
  CommandResult flag = RunCommand({bin_ + "/steadyeval", "--server", addr_, "runs", "list", "--bogus"});
  EXPECT_NE(flag.exit_code, 0);
  EXPECT_THAT(flag.err, ::testing::HasSubstr("--bogus"));

  // Server down.
  CommandResult down = RunCommand({bin_ + "/steadyeval", "--server", "127.0.0.1:1", "runs", "list"});
  EXPECT_NE(down.exit_code, 0);
  EXPECT_THAT(down.err, ::testing::HasSubstr("127.0.0.1:1"));
}

// SIGTERM while a worker evaluates: it says it is stopping, hands the job back at once
// (the lease TTL is ten minutes here, so nothing else could bring it back) without using
// up an attempt, and exits 0. A second signal ends a draining worker at once.
TEST_F(EndToEndTest, SigtermDrainsAWorkerAndHandsItsJobBack) {
  ASSERT_EQ(server_.Stop(SIGTERM), 0) << server_.Logs();
  StartServer("127.0.0.1:0", /*lease_ttl_ms=*/"600000");
  // Far more examples than can be evaluated before the signal arrives (about 20 s of
  // work for one thread on an idle machine).
  const std::string big = tmp_ / "big.jsonl";
  {
    std::ofstream out(big);
    for (int i = 0; i < 20000; ++i) {
      out << json{{"id", i},
                  {"query", absl::StrCat("What is ", i, " plus ", i % 13, "? Answer:")},
                  {"choices", {"a", "b", "c", "d"}},
                  {"gold", i % 4}}
                 .dump()
          << "\n";
    }
  }
  ASSERT_EQ(RunCommand(WriteCheckpointArgs(100)).exit_code, 0);
  Cli({"runs", "add", "drain", "--source", ckpts_, "--tasks", big, "--settle_seconds", "0.1"});

  StartWorker("wa", {"--drain_grace_s", "0"});
  ChildProcess& wa = workers_.back();
  ASSERT_TRUE(WaitFor([&] { return wa.Logs().find("leased") != std::string::npos; }, seconds(120)))
      << Logs();
  EXPECT_EQ(wa.Stop(SIGTERM), 0) << wa.Logs();
  EXPECT_THAT(wa.Logs(), ::testing::HasSubstr("stopping"));
  EXPECT_THAT(wa.Logs(), ::testing::HasSubstr("handed back"));
  json jobs = Cli({"jobs", "--run", "drain"});
  ASSERT_EQ(jobs["jobs"].size(), 1u) << jobs.dump(2);
  EXPECT_EQ(jobs["jobs"][0]["state"], "pending") << jobs.dump(2);
  EXPECT_EQ(jobs["jobs"][0]["attempts"], 0) << jobs.dump(2);
  EXPECT_EQ(jobs["jobs"][0]["epoch"], 1) << jobs.dump(2);

  // The default grace keeps evaluating; the second signal does not wait for it.
  StartWorker("wb");
  ChildProcess& wb = workers_.back();
  ASSERT_TRUE(WaitFor([&] { return wb.Logs().find("leased") != std::string::npos; }, seconds(120)))
      << Logs();
  ASSERT_EQ(kill(wb.pid(), SIGTERM), 0);
  ASSERT_TRUE(WaitFor([&] { return wb.Logs().find("stopping") != std::string::npos; }, seconds(60)))
      << wb.Logs();
  EXPECT_EQ(wb.Stop(SIGTERM), 128 + SIGTERM) << wb.Logs();
  EXPECT_THAT(wb.Logs(), ::testing::HasSubstr("exiting now"));
}

// The admin commands and the pending reasons through the real CLI and server.
TEST_F(EndToEndTest, AdminCommandsAndPendingReasonsThroughTheCli) {
  ASSERT_EQ(RunCommand(WriteCheckpointArgs(100)).exit_code, 0);
  ASSERT_EQ(RunCommand(WriteCheckpointArgs(200)).exit_code, 0);
  std::ofstream(CheckpointDir(200) + "/config.json") << "{\"model_type\": ";  // garbage
  Cli({"runs", "add", "adm", "--source", ckpts_, "--tasks", tmp_ / "tasks/arith_mc.jsonl",
       "--settle_seconds", "0.1"});
  json checkpoints;
  ASSERT_TRUE(WaitFor([&] {
    checkpoints = Cli({"checkpoints", "adm"});
    return checkpoints["checkpoints"].size() == 1 && checkpoints["pending"].size() == 1;
  }, seconds(60))) << checkpoints.dump(2) << Logs();
  EXPECT_EQ(checkpoints["pending"][0]["step"], 200);
  EXPECT_EQ(checkpoints["pending"][0]["state"], "incomplete");
  EXPECT_THAT(checkpoints["pending"][0]["reason"].get<std::string>(),
              ::testing::HasSubstr("config.json"));
  CommandResult table = RunCommand({bin_ + "/steadyeval", "--server", addr_, "checkpoints", "adm"});
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, ::testing::HasSubstr("incomplete"));
  EXPECT_THAT(server_.Logs(), ::testing::HasSubstr("not admitted yet"));

  EXPECT_EQ(Cli({"runs", "pause", "adm"})["paused"], true);
  EXPECT_EQ(Cli({"runs", "show", "adm"})["run"]["paused"], true);
  EXPECT_EQ(Cli({"runs", "resume", "adm"})["paused"], false);
  EXPECT_EQ(Cli({"jobs", "requeue", "--run", "adm", "--state", "failed"})["requeued"], json::array());
  EXPECT_EQ(Cli({"runs", "clear-tokenizer", "adm"})["tokenizer_sha256"], "");

  CommandResult no = RunCommand({bin_ + "/steadyeval", "--server", addr_, "runs", "delete", "adm"});
  EXPECT_EQ(no.exit_code, 2);
  EXPECT_THAT(no.err, ::testing::HasSubstr("--yes"));
  EXPECT_GT(Cli({"runs", "delete", "adm", "--yes"})["keys_deleted"].get<uint64_t>(), 0u);
  EXPECT_TRUE(Cli({"runs", "list"})["runs"].empty());
  CommandResult gone = RunCommand({bin_ + "/steadyeval", "--server", addr_, "checkpoints", "adm"});
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_THAT(gone.err, ::testing::HasSubstr("'adm' not found"));
}

}  // namespace
}  // namespace steadyeval::testing
