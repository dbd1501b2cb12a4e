// Crash test: the coordinator is SIGKILLed at random moments (at least kMinKills times,
// some right after a commit reached the write-ahead log, some while it starts up) and
// restarted on the same data dir and port, while two workers evaluate and a writer keeps
// adding checkpoints. After every restart, every report a worker had acknowledged must be
// in the store; at the end every checkpoint and window is evaluated exactly once and the
// predictions and scores equal those of an uninterrupted run of the same checkpoints.
//
// The kill schedule and the writer's pauses come from a seeded generator; the seed is
// printed, and STEADYEVAL_CRASH_SEED=N replays a schedule's choices.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "testing/crash.h"
#include "testing/files.h"
#include "testing/temp_dir.h"
#include "testing/wait.h"
#include "testing/process.h"
#include "testing/service_processes.h"

namespace steadyeval::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kMinKills = 20;
constexpr int kCheckpoints = 12;        // steps 100, 200, ..., written in order
constexpr int kWrittenBeforeRun = 2;    // the rest arrive while the coordinator is killed
constexpr uint32_t kMaxAttempts = 3;    // SchedulerOptions::max_attempts
const char* const kRun = "crash";

uint64_t StepOf(int i) { return static_cast<uint64_t>(i + 1) * 100; }

uint64_t Seed() {
  const char* env = std::getenv("STEADYEVAL_CRASH_SEED");
  uint64_t seed = 0;
  if (env != nullptr && absl::SimpleAtoi(env, &seed)) return seed;
  return std::random_device{}();
}

// One coordinator, its workers and CLI access, on one data dir.
class Deployment {
 public:
  Deployment(std::string bin, std::string dir, std::string name)
      : bin_(std::move(bin)), dir_(std::move(dir)), name_(std::move(name)) {
    fs::create_directories(dir_);
  }

  std::string data_dir() const { return dir_ + "/data"; }
  const std::string& address() const { return addr_; }

  // Spawns steadyeval-server on `listen` without waiting for it to serve.
  void Spawn(const std::string& listen) {
    ready_ = absl::StrCat(dir_, "/ready.json");
    fs::remove(ready_);
    auto server = ChildProcess::Start(
        {bin_ + "/steadyeval-server", "--data_dir", data_dir(), "--listen", listen,
         "--metrics_listen", "127.0.0.1:0", "--ready_file", ready_, "--poll_interval_ms", "200",
         "--lease_ttl_ms", "5000"},
        absl::StrCat(dir_, "/server", ++server_starts_));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  // Waits until the spawned server wrote its ready file; fails the test with its logs when
  // it exits or does not get there.
  void AwaitReady() {
    bool exited = false;
    ASSERT_TRUE(WaitFor(
        [&] {
          if (fs::exists(ready_) && fs::file_size(ready_) > 0) return true;
          exited = !server_.running();
          return exited;
        },
        seconds(60), milliseconds(20)) &&
                !exited)
        << name_ << ": coordinator start " << server_starts_
        << (exited ? " exited before serving" : " did not serve within 60 s") << "\n"
        << server_.Logs();
    const std::string grpc = json::parse(ReadFileOrEmpty(ready_))["grpc"].get<std::string>();
    if (!addr_.empty()) {
      ASSERT_EQ(grpc, addr_) << name_ << ": the restarted coordinator serves elsewhere";
    }
    addr_ = grpc;
  }

  void Start(const std::string& listen) {
    Spawn(listen);
    AwaitReady();
  }

  // SIGKILLs the coordinator; returns false if it had already exited on its own.
  bool Kill() {
    const bool was_running = server_.running();
    server_.Stop(SIGKILL);
    return was_running;
  }

  void StartWorker(const std::string& name) {
    auto worker = ChildProcess::Start(
        {bin_ + "/steadyeval-worker", "--coordinator", addr_, "--name", name, "--threads", "1",
         "--acquire_wait_ms", "500"},
        absl::StrCat(dir_, "/", name));
    ASSERT_TRUE(worker.ok()) << worker.status();
    workers_.push_back(std::move(*worker));
  }

  // Runs the CLI; stdout parsed as JSON (null on failure, with a test failure).
  json Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {bin_ + "/steadyeval", "--server", addr_, "--json"});
    CommandResult r = RunCommand(args, 60);
    EXPECT_EQ(r.exit_code, 0) << name_ << ": " << r.err;
    json doc = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(doc.is_discarded()) << r.out;
    return doc.is_discarded() ? json() : doc;
  }

  // Every stored prediction, one JSON object per line of `steadyeval export`.
  std::vector<json> Export() {
    CommandResult r = RunCommand(
        {bin_ + "/steadyeval", "--server", addr_, "export", kRun, "--format", "jsonl"}, 60);
    EXPECT_EQ(r.exit_code, 0) << name_ << ": " << r.err;
    std::vector<json> rows;
    for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
      rows.push_back(json::parse(line, nullptr, false));
      EXPECT_FALSE(rows.back().is_discarded()) << line;
    }
    return rows;
  }

  // The workers' logs merged: which leases they got and which reports were acknowledged.
  WorkerJobLog JobLog() const {
    WorkerJobLog merged;
    for (const ChildProcess& w : workers_) {
      WorkerJobLog one = ParseWorkerJobLog(w.Logs());
      for (auto& [job, epochs] : one.leased_epochs) {
        auto& all = merged.leased_epochs[job];
        all.insert(all.end(), epochs.begin(), epochs.end());
      }
      for (const auto& [job, n] : one.acknowledged) merged.acknowledged[job] += n;
    }
    return merged;
  }

  std::vector<ChildProcess>& workers() { return workers_; }

  std::string Logs() {
    std::string all = server_.Logs();
    for (const ChildProcess& w : workers_) all += w.Logs();
    return all;
  }

 private:
  std::string bin_;
  std::string dir_;
  std::string name_;
  std::string ready_;
  std::string addr_;
  int server_starts_ = 0;
  ChildProcess server_;
  std::vector<ChildProcess> workers_;
};

// (variant, step, task) -> example -> the exported prediction.
using PredictionIndex =
    std::map<std::tuple<std::string, uint64_t, std::string>, std::map<uint32_t, json>>;

// Indexes `rows`; a second row for one (variant, step, task, example) is a test failure.
PredictionIndex IndexPredictions(const std::vector<json>& rows) {
  PredictionIndex index;
  for (const json& row : rows) {
    auto key = std::make_tuple(row["variant"].get<std::string>(), row["step"].get<uint64_t>(),
                               row["task"].get<std::string>());
    const uint32_t example = row["example"].get<uint32_t>();
    EXPECT_TRUE(index[key].emplace(example, row).second)
        << "duplicate prediction: " << row.dump();
  }
  return index;
}

// An avg@n job replaced because a checkpoint was admitted inside its window after it was
// created: the watcher returns the checkpoints one poll admits newest first, so two
// checkpoints that become ready in the same poll (e.g. after a restart) admit the newer
// one's window with the older one missing. Such a job is superseded by design.
bool IsSupersededWindow(const json& job) {
  return job["state"] == "superseded" && job["kind"] != "raw" &&
         job["superseded_by"].get<uint64_t>() != 0;
}

// Scores as (variant, step, task) -> the whole score record.
std::map<std::tuple<std::string, uint64_t, std::string>, json> IndexScores(const json& scores) {
  std::map<std::tuple<std::string, uint64_t, std::string>, json> index;
  for (const json& s : scores["scores"]) {
    auto key = std::make_tuple(s["variant"].get<std::string>(), s["step"].get<uint64_t>(),
                               s["task"].get<std::string>());
    EXPECT_TRUE(index.emplace(key, s).second) << "duplicate score: " << s.dump();
  }
  return index;
}

class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bin_ = BinDir();
    ckpts_ = tmp_ / "checkpoints";
    fs::create_directories(ckpts_);
    CommandResult tok = RunFixtures({"tokenizer", "--out", tmp_ / "tok"});
    ASSERT_EQ(tok.exit_code, 0) << tok.err;
    CommandResult tasks = RunFixtures({"tasks", "--out", tmp_ / "tasks"});
    ASSERT_EQ(tasks.exit_code, 0) << tasks.err;
    task_files_ = {tmp_ / "tasks/arith_mc.jsonl", tmp_ / "tasks/qa_gen.json"};
    // Examples per task (a report must hold an output for each).
    const std::string mc = ReadFileOrEmpty(task_files_[0]);
    task_sizes_["arith_mc"] = static_cast<size_t>(std::count(mc.begin(), mc.end(), '\n'));
    task_sizes_["qa_gen"] = json::parse(ReadFileOrEmpty(task_files_[1]))["samples"].size();
    ASSERT_GT(task_sizes_["arith_mc"], 0u);
    ASSERT_GT(task_sizes_["qa_gen"], 0u);
  }

  std::string CheckpointDir(uint64_t step) {
    return ckpts_ + "/" + StepFolderName(step);
  }

  // Written atomically (a temporary folder renamed into place), as a trainer would.
  void WriteCheckpoint(uint64_t step) {
    CommandResult r = RunFixtures({"checkpoint", "--out", CheckpointDir(step), "--step",
                                   std::to_string(step), "--tokenizer", tmp_ / "tok/tokenizer.model"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  void AddRun(Deployment& d) {
    json created = d.Cli({"runs", "add", kRun, "--source", ckpts_, "--tasks",
                          absl::StrCat(task_files_[0], ",", task_files_[1]), "--few_shots", "2",
                          "--settle_seconds", "0.3", "--average", "2", "--ensemble", "2"});
    ASSERT_FALSE(created.is_null());
  }

  // The jobs every checkpoint of the series ends up with: a raw job per step and an avg@2
  // job per adjacent pair, keyed by (kind, steps).
  std::set<std::pair<std::string, std::vector<uint64_t>>> ExpectedJobs() {
    std::set<std::pair<std::string, std::vector<uint64_t>>> jobs;
    for (int i = 0; i < kCheckpoints; ++i) {
      jobs.insert({"raw", {StepOf(i)}});
      if (i > 0) jobs.insert({"avg@2", {StepOf(i - 1), StepOf(i)}});
    }
    return jobs;
  }

  // Waits until every expected job is done (fails at once if one fails for good).
  void AwaitAllDone(Deployment& d, json* jobs) {
    const size_t expected = ExpectedJobs().size();
    bool failed = false;
    ASSERT_TRUE(WaitFor(
        [&] {
          *jobs = d.Cli({"jobs", "--run", kRun});
          size_t done = 0;
          for (const json& j : (*jobs)["jobs"]) {
            done += j["state"] == "done";
            failed |= j["state"] == "failed";
          }
          return failed || done == expected;
        },
        seconds(240), milliseconds(300)) &&
                !failed)
        << "not every job done" << (failed ? " (one failed for good)" : "") << ":\n"
        << jobs->dump(1) << d.Logs();
  }

  // After a restart: every report a worker saw acknowledged is in the store, complete.
  void CheckAcknowledgedReportsStored(Deployment& d, int kill) {
    // Logs first, store second: an acknowledgement logged by now was given by a coordinator
    // that committed before answering, so the store must already hold it.
    const WorkerJobLog log = d.JobLog();
    const json jobs = d.Cli({"jobs", "--run", kRun});
    std::map<uint64_t, json> by_id;
    for (const json& j : jobs["jobs"]) by_id[j["id"].get<uint64_t>()] = j;
    const PredictionIndex predictions = IndexPredictions(d.Export());
    for (const auto& [job_id, times] : log.acknowledged) {
      EXPECT_EQ(times, 1) << "after kill " << kill << ": job " << job_id
                          << " was acknowledged " << times << " times";
      auto it = by_id.find(job_id);
      ASSERT_TRUE(it != by_id.end()) << "after kill " << kill << ": acknowledged job " << job_id
                                     << " is not in the store\n" << jobs.dump(1);
      const json& job = it->second;
      // A window job done and then superseded by a late admission keeps no values (as
      // designed); every other acknowledged job is done with all its predictions.
      if (IsSupersededWindow(job)) continue;
      ASSERT_EQ(job["state"], "done") << "after kill " << kill << ": acknowledged job " << job_id
                                      << " is not done in the store: " << job.dump();
      const uint64_t step = job["steps"].back().get<uint64_t>();
      for (const auto& [task, size] : task_sizes_) {
        auto p = predictions.find({job["kind"].get<std::string>(), step, task});
        EXPECT_TRUE(p != predictions.end() && p->second.size() == size)
            << "after kill " << kill << ": acknowledged job " << job_id << " ("
            << job["kind"] << " step " << step << ") lacks predictions of " << task;
      }
    }
  }

  TempDir tmp_;
  std::string bin_;
  std::string ckpts_;
  std::vector<std::string> task_files_;
  std::map<std::string, size_t> task_sizes_;
};

TEST_F(CrashTest, CoordinatorKilledAtRandomLosesNothingAndEvaluatesEachCheckpointOnce) {
  const uint64_t seed = Seed();
  std::mt19937_64 rng(seed);
  printf("crash test seed %llu (replay with STEADYEVAL_CRASH_SEED=%llu)\n",
         static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  RecordProperty("seed", std::to_string(seed));
  SCOPED_TRACE(absl::StrCat("STEADYEVAL_CRASH_SEED=", seed));
  auto uniform_us = [&](int64_t lo, int64_t hi) {
    return microseconds(std::uniform_int_distribution<int64_t>(lo, hi)(rng));
  };

  for (int i = 0; i < kWrittenBeforeRun; ++i) WriteCheckpoint(StepOf(i));
  Deployment crashed(bin_, tmp_ / "crashed", "crashed");
  crashed.Start("127.0.0.1:0");
  AddRun(crashed);
  crashed.StartWorker("wa");
  crashed.StartWorker("wb");

  // The writer adds the rest of the series at random moments (its own generator, so the
  // kill schedule does not depend on thread interleaving).
  std::vector<microseconds> writer_pauses;
  for (int i = kWrittenBeforeRun; i < kCheckpoints; ++i) writer_pauses.push_back(uniform_us(300'000, 1'800'000));
  std::atomic<bool> writer_done{false};
  std::atomic<bool> writer_stop{false};
  std::thread writer([&] {
    for (int i = kWrittenBeforeRun; i < kCheckpoints && !writer_stop; ++i) {
      PauseFor(writer_pauses[i - kWrittenBeforeRun]);
      WriteCheckpoint(StepOf(i));
    }
    writer_done = true;
  });
  struct StopAndJoin {
    std::atomic<bool>& stop;
    std::thread& thread;
    ~StopAndJoin() {
      stop = true;
      if (thread.joinable()) thread.join();
    }
  } stop_writer_on_exit{writer_stop, writer};

  // Kills: after a random pause; right after a commit reached the write-ahead log (within
  // a lease, admission or report commit, or between the commit and its answer); right
  // after a report commit (several KB) reached it; or while the coordinator starts up
  // (recovering its log). Report streams are cut by all of them.
  int kills = 0;
  int commit_kills = 0;
  int report_kills = 0;
  int startup_kills = 0;
  while (kills < kMinKills || !writer_done) {
    const int mode = std::uniform_int_distribution<int>(0, 99)(rng);
    const bool after_pause = mode < 35;
    const bool after_commit = mode >= 35 && mode < 50;
    const bool after_report = mode >= 50 && mode < 85;
    const bool at_startup = mode >= 85;
    const microseconds pause = after_pause ? uniform_us(0, 2'500'000) : uniform_us(0, 1'000);
    if (after_pause) {
      PauseFor(pause);
    } else if (after_commit || after_report) {
      if (WaitForWalGrowth(crashed.data_dir(), after_report ? 2048 : 1, milliseconds(5000))) {
        PauseFor(pause);
        ++(after_report ? report_kills : commit_kills);
      }
    }
    ASSERT_TRUE(crashed.Kill()) << "the coordinator exited by itself before kill " << kills + 1
                                << "\n" << crashed.Logs();
    ++kills;
    if (at_startup) {
      crashed.Spawn(crashed.address());
      PauseFor(uniform_us(0, 400'000));
      ASSERT_TRUE(crashed.Kill()) << "the coordinator exited by itself while starting\n"
                                  << crashed.Logs();
      ++kills;
      ++startup_kills;
    }
    crashed.Start(crashed.address());
    if (HasFatalFailure()) break;
    CheckAcknowledgedReportsStored(crashed, kills);
    if (HasFatalFailure()) break;
  }
  writer.join();
  ASSERT_FALSE(HasFatalFailure());
  printf("%d kills: %d right after a commit reached the log, %d right after a report commit "
         "did, %d during start-up\n", kills, commit_kills, report_kills, startup_kills);

  // Everything admitted and evaluated, without further kills.
  json jobs;
  AwaitAllDone(crashed, &jobs);
  CheckAcknowledgedReportsStored(crashed, kills);
  for (ChildProcess& w : crashed.workers()) {
    EXPECT_TRUE(w.running()) << "a worker died\n" << w.Logs();
  }
  // Both workers found the last coordinator by themselves (its registry is in memory).
  json workers;
  EXPECT_TRUE(WaitFor(
      [&] {
        workers = crashed.Cli({"workers"});
        return workers["workers"].size() == 2u;
      },
      seconds(30), milliseconds(200)))
      << workers.dump(1) << crashed.Logs();

  // A worker whose report was committed but whose answer a kill cut off learns of it when
  // its retry is answered as a replay: wait for every done job's acknowledgement.
  WorkerJobLog log;
  EXPECT_TRUE(WaitFor(
      [&] {
        log = crashed.JobLog();
        for (const json& j : jobs["jobs"]) {
          if (j["state"] == "done" && !log.acknowledged.count(j["id"].get<uint64_t>())) return false;
        }
        return true;
      },
      seconds(60), milliseconds(200)))
      << "a committed report was never acknowledged to its worker\n" << crashed.Logs();

  // Every checkpoint and window evaluated exactly once: one DONE job per (kind, steps),
  // nothing failed or still pending (avg@2 jobs superseded as designed aside); each
  // acknowledged exactly once.
  std::set<std::pair<std::string, std::vector<uint64_t>>> seen;
  uint32_t extra_attempts = 0;
  int report_retries = 0;
  int jobs_failed_by_workers = 0;
  int unheard_leases = 0;  // committed, but the answer never reached a worker
  for (const ChildProcess& w : crashed.workers()) {
    const std::string logs = w.Logs();
    for (size_t at = logs.find("report failed"); at != std::string::npos;
         at = logs.find("report failed", at + 1)) {
      ++report_retries;
    }
    for (const char* failed : {"failed (retryable)", "failed (permanent)"}) {
      for (size_t at = logs.find(failed); at != std::string::npos; at = logs.find(failed, at + 1)) {
        ++jobs_failed_by_workers;
      }
    }
  }
  int superseded = 0;
  for (const json& j : jobs["jobs"]) {
    const uint64_t id = j["id"].get<uint64_t>();
    if (IsSupersededWindow(j)) {
      ++superseded;
      EXPECT_LE(log.acknowledged.count(id) ? log.acknowledged.at(id) : 0, 1) << j.dump();
      continue;
    }
    EXPECT_EQ(j["state"], "done") << j.dump();
    auto key = std::make_pair(j["kind"].get<std::string>(), j["steps"].get<std::vector<uint64_t>>());
    EXPECT_TRUE(seen.insert(key).second) << "a second job for the same checkpoints: " << j.dump();
    const uint32_t attempts = j["attempts"].get<uint32_t>();
    EXPECT_GE(attempts, 1u) << j.dump();
    EXPECT_LE(attempts, kMaxAttempts) << j.dump();
    extra_attempts += attempts - 1;
    // One epoch per lease; a lease restored after a kill that expired before its worker
    // was heard of took an epoch but no attempt (Scheduler::ExpireLeases).
    EXPECT_GE(j["epoch"].get<uint64_t>(), attempts) << "one epoch per lease: " << j.dump();
    EXPECT_EQ(log.acknowledged.count(id) ? log.acknowledged.at(id) : 0, 1)
        << "job " << id << " must be acknowledged exactly once: " << j.dump();
    // The lease that was acknowledged is the job's last one; no worker was leased an
    // epoch the store does not know.
    const std::vector<uint64_t> heard =
        log.leased_epochs.count(id) ? log.leased_epochs.at(id) : std::vector<uint64_t>{};
    for (uint64_t epoch : heard) EXPECT_LE(epoch, j["epoch"].get<uint64_t>()) << j.dump();
    EXPECT_EQ(std::count(heard.begin(), heard.end(), j["epoch"].get<uint64_t>()), 1)
        << "the job's last lease reached exactly one worker: " << j.dump();
    unheard_leases += static_cast<int>(attempts) - static_cast<int>(std::set<uint64_t>(heard.begin(), heard.end()).size());
  }
  EXPECT_EQ(seen, ExpectedJobs()) << jobs.dump(1);
  // A lease is lost (and leased again) only when a kill hits between its commit and the
  // worker hearing of it, or keeps the worker from reporting within the TTL.
  EXPECT_LE(extra_attempts, static_cast<uint32_t>(2 * kills)) << jobs.dump(1);
  printf("%u extra attempts over %zu jobs (%d more superseded): %d leases never reached a "
         "worker, workers failed %d; workers retried a report %d times\n",
         extra_attempts, seen.size(), superseded, unheard_leases, jobs_failed_by_workers,
         report_retries);

  const json checkpoints = crashed.Cli({"checkpoints", kRun});
  ASSERT_EQ(checkpoints["checkpoints"].size(), static_cast<size_t>(kCheckpoints)) << checkpoints.dump(1);
  for (const json& c : checkpoints["checkpoints"]) EXPECT_EQ(c["state"], "evaluated") << c.dump();
  const PredictionIndex crashed_predictions = IndexPredictions(crashed.Export());
  const json crashed_scores = crashed.Cli({"scores", kRun});
  for (ChildProcess& w : crashed.workers()) w.Stop(SIGKILL);
  ASSERT_TRUE(crashed.Kill());

  // The reference: the same checkpoints and tasks on a fresh data dir, never interrupted.
  Deployment reference(bin_, tmp_ / "reference", "reference");
  reference.Start("127.0.0.1:0");
  AddRun(reference);
  reference.StartWorker("ra");
  reference.StartWorker("rb");
  json reference_jobs;
  AwaitAllDone(reference, &reference_jobs);
  const PredictionIndex reference_predictions = IndexPredictions(reference.Export());
  const json reference_scores = reference.Cli({"scores", kRun});

  // Equal, exactly: the models are deterministic on the CPU with one thread.
  ASSERT_EQ(reference_predictions.size(), crashed_predictions.size());
  for (const auto& [key, examples] : reference_predictions) {
    auto it = crashed_predictions.find(key);
    ASSERT_TRUE(it != crashed_predictions.end())
        << "no predictions for " << std::get<0>(key) << " step " << std::get<1>(key) << " "
        << std::get<2>(key);
    EXPECT_EQ(it->second, examples) << std::get<0>(key) << " step " << std::get<1>(key) << " "
                                    << std::get<2>(key);
  }
  const auto crashed_score_index = IndexScores(crashed_scores);
  const auto reference_score_index = IndexScores(reference_scores);
  std::set<std::string> variants;
  for (const auto& [key, score] : reference_score_index) variants.insert(std::get<0>(key));
  for (const char* variant : {"raw", "avg@2", "ens@2"}) {
    EXPECT_TRUE(variants.count(variant)) << "the reference has no " << variant << " scores";
  }
  EXPECT_EQ(crashed_score_index, reference_score_index)
      << "crashed:\n" << crashed_scores.dump(1) << "\nreference:\n" << reference_scores.dump(1);
}

}  // namespace
}  // namespace steadyeval::testing
