// The real Slurm test: Debian's munge and slurm-wlm started here as a two-node cluster on
// 127.0.0.1 (munged, slurmctld and two slurmd in the foreground, everything in temp
// folders), deploy/slurm/steadyeval-workers.sbatch submitted with `sbatch` (CPU workers)
// against a coordinator the test starts. Checks: one worker per task, named
// slurm-JOBID-PROCID, evaluates the run; `scontrol requeue` (what preemption does) restarts
// the job and the new workers register by themselves; `scancel` makes every worker drain and
// exit, and the coordinator stops seeing them. Then deploy/slurm/train-with-eval.hetjob.sbatch
// (resources made to fit): its worker evaluates what its trainer writes and drains when
// training ends.
//
// Skipped, with what failed, only where the cluster cannot run: a missing program, or a
// daemon that does not come up (its log is printed).
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
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

// A port nothing listens on now (the kernel's pick, released again). Slurm needs fixed
// ports in its config, so a small race with other processes remains.
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

std::string Hostname() {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  return name;
}

// munged + slurmctld + two slurmd (nodes se0 and se1, both this host, each with all its
// CPUs: a heterogeneous job needs its components on different nodes to be scheduled), run
// as the test's user (root: SlurmUser). Config, state, spool and logs live in a short folder under /tmp,
// removed at the end: munged's and slurmstepd's Unix socket paths must fit in 108 bytes,
// and gtest's temp folders are longer.
class SlurmCluster {
 public:
  SlurmCluster() = default;
  ~SlurmCluster() { Stop(); }

  // FAILED_PRECONDITION naming the program or daemon that could not run.
  absl::Status Start() {
    for (const char* tool : {"/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd",
                             "/usr/bin/sbatch", "/usr/bin/scancel", "/usr/bin/squeue",
                             "/usr/bin/scontrol", "/usr/bin/sinfo"}) {
      if (!fs::exists(tool)) {
        return absl::FailedPreconditionError(
            absl::StrCat(tool, " is missing; install Debian's slurm-wlm and munge "
                               "(scripts/install-deps.sh does)"));
      }
    }
    char dir[] = "/tmp/se-slurm-XXXXXX";
    if (mkdtemp(dir) == nullptr) return absl::FailedPreconditionError("mkdtemp /tmp/se-slurm-*");
    dir_ = dir;
    munge_dir_ = dir_ + "/munge";
    fs::create_directories(munge_dir_);
    fs::permissions(munge_dir_, fs::perms::owner_all);
    const std::string key = munge_dir_ + "/munge.key";
    std::string key_bytes(1024, '\0');
    for (char& c : key_bytes) c = static_cast<char>(random());
    WriteFile(key, key_bytes);
    fs::permissions(key, fs::perms::owner_read);
    socket_ = munge_dir_ + "/socket";
    fs::create_directories(dir_ + "/state");
    absl::Status s = StartDaemon(
        "munged",
        {"/usr/sbin/munged", "-F", "-f", "--socket=" + socket_, "--key-file=" + key,
         "--pid-file=" + munge_dir_ + "/munged.pid", "--seed-file=" + munge_dir_ + "/seed",
         "--log-file=" + dir_ + "/munged.log"},
        [&] { return fs::exists(socket_); }, munged_);
    if (!s.ok()) return s;
    WriteConfig();
    s = StartDaemon("slurmctld", {"/usr/sbin/slurmctld", "-D", "-f", conf_},
                    [&] { return Run({"/usr/bin/sinfo", "-h"}).exit_code == 0; }, slurmctld_);
    if (!s.ok()) return s;
    for (int node = 0; node < 2; ++node) {
      s = StartDaemon(absl::StrCat("slurmd-se", node),
                      {"/usr/sbin/slurmd", "-D", "-f", conf_, "-N", absl::StrCat("se", node)},
                      [&] {
                        CommandResult r = Run({"/usr/bin/sinfo", "-h", "-n",
                                               absl::StrCat("se", node), "-o", "%t"});
                        return r.exit_code == 0 && absl::StartsWith(r.out, "idle");
                      },
                      slurmd_[node]);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // Runs a Slurm client (argv[0] a path) against this cluster.
  CommandResult Run(std::vector<std::string> argv,
                    const std::vector<std::string>& env = {}) const {
    std::vector<std::string> full = {"/usr/bin/env", "SLURM_CONF=" + conf_};
    full.insert(full.end(), env.begin(), env.end());
    full.insert(full.end(), argv.begin(), argv.end());
    return RunCommand(full, 60);
  }

  // The job's state as squeue shows it ("RUNNING", "PENDING", ...); "" once it is gone.
  std::string JobState(const std::string& job) const {
    CommandResult r = Run({"/usr/bin/squeue", "-h", "-j", job, "-o", "%T"});
    return std::string(absl::StripAsciiWhitespace(r.out));
  }

  std::string Logs() const {
    std::string all;
    for (const char* log : {"munged.log", "slurmctld.log", "slurmd-se0.log", "slurmd-se1.log"}) {
      absl::StrAppend(&all, "---- ", log, "\n", ReadFileOrEmpty(dir_ + "/" + log));
    }
    return all;
  }

 private:
  absl::Status StartDaemon(const std::string& name, const std::vector<std::string>& argv,
                           const std::function<bool()>& ready, ChildProcess& process) {
    absl::StatusOr<ChildProcess> started = ChildProcess::Start(argv, dir_ + "/" + name);
    if (!started.ok()) return started.status();
    process = std::move(*started);
    if (!WaitFor(ready, seconds(60), milliseconds(250))) {
      return absl::FailedPreconditionError(
          absl::StrCat(name, " did not come up within 60 s (", absl::StrJoin(argv, " "),
                       "):\n", process.Logs(), Logs()));
    }
    return absl::OkStatus();
  }

  void WriteConfig() {
    const std::string host = Hostname();
    conf_ = dir_ + "/slurm.conf";
    WriteFile(conf_, absl::StrCat(
        "ClusterName=steadyevaltest\n"
        "SlurmctldHost=", host, "(127.0.0.1)\n"
        "SlurmctldPort=", FreePort(), "\n"
        "SlurmUser=root\nSlurmdUser=root\n"
        "AuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket=", socket_, "\n"
        "StateSaveLocation=", dir_, "/state\n"
        "SlurmdSpoolDir=", dir_, "/spool-%n\n"
        "SlurmctldPidFile=", dir_, "/slurmctld.pid\n"
        "SlurmdPidFile=", dir_, "/slurmd-%n.pid\n"
        "SlurmctldLogFile=", dir_, "/slurmctld.log\n"
        "SlurmdLogFile=", dir_, "/slurmd-%n.log\n"
        // No cgroups: processes are tracked by parent pid, tasks are not pinned.
        "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
        "SelectType=select/cons_tres\nSelectTypeParameters=CR_CPU\n"
        "JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n"
        "MpiDefault=none\nSwitchType=switch/none\nReturnToService=2\nKillWait=30\n"
        "NodeName=se0 NodeHostname=", host, " NodeAddr=127.0.0.1 Port=", FreePort(),
        " CPUs=", sysconf(_SC_NPROCESSORS_ONLN), " State=UNKNOWN\n"
        "NodeName=se1 NodeHostname=", host, " NodeAddr=127.0.0.1 Port=", FreePort(),
        " CPUs=", sysconf(_SC_NPROCESSORS_ONLN), " State=UNKNOWN\n"
        "PartitionName=test Nodes=se0,se1",
        " Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES\n"));
  }

  // Cancels what is left, then stops the daemons (slurmd last of the Slurm ones would leave
  // job steps behind; their processes die with the job).
  void Stop() {
    if (slurmctld_.running()) {
      Run({"/usr/bin/scancel", "--user", "root"});
      WaitFor([&] { return Run({"/usr/bin/squeue", "-h"}).out.empty(); }, seconds(60));
    }
    for (ChildProcess& slurmd : slurmd_) {
      if (slurmd.running()) slurmd.Stop(SIGTERM);
    }
    if (slurmctld_.running()) slurmctld_.Stop(SIGTERM);
    if (munged_.running()) munged_.Stop(SIGTERM);
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }

  std::string dir_;
  std::string munge_dir_;
  std::string socket_;
  std::string conf_;
  ChildProcess munged_;
  ChildProcess slurmctld_;
  ChildProcess slurmd_[2];
};

class SlurmEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status started = cluster_.Start();
    if (!started.ok()) GTEST_SKIP() << "no Slurm cluster here: " << started;
    ASSERT_TRUE(services_.StartCoordinator({"--lease_ttl_ms", "4000"}).ok()) << services_.Logs();
    ASSERT_EQ(RunFixtures({"tokenizer", "--out", tmp_ / "tok"}).exit_code, 0);
    ASSERT_EQ(RunFixtures({"tasks", "--out", tmp_ / "tasks"}).exit_code, 0);
    fs::create_directories(tmp_ / "ckpt");
  }

  void WriteCheckpoint(int step) {
    CommandResult r = RunFixtures({"checkpoint", "--out", tmp_ / absl::StrCat("ckpt/step_00", step),
                                   "--step", std::to_string(step), "--tokenizer",
                                   tmp_ / "tok/tokenizer.model"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  size_t Evaluated() {
    last_checkpoints_ = services_.Cli({"checkpoints", "run"});
    return CountCheckpoints(last_checkpoints_, "evaluated");
  }

  // Names of the workers the coordinator sees as alive (idle or busy).
  std::vector<std::string> LiveWorkers() {
    std::vector<std::string> names;
    last_workers_ = services_.Cli({"workers"});
    for (const auto& w : last_workers_["workers"]) {
      if (w["state"] != "lost") names.push_back(w["name"].get<std::string>());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string Logs() { return last_workers_.dump(2) + "\n" + last_checkpoints_.dump(2) + "\n" + JobOutput() + services_.Logs() + cluster_.Logs(); }
  std::string JobOutput() { return ReadFileOrEmpty(tmp_ / absl::StrCat("job-", job_, ".out")); }

  TempDir tmp_;
  SlurmCluster cluster_;
  ServiceProcesses services_{tmp_.path()};
  std::string job_;
  json last_workers_;      // what LiveWorkers() saw last
  json last_checkpoints_;  // what Evaluated() saw last
};

TEST_F(SlurmEndToEndTest, SbatchWorkersEvaluateSurviveRequeueAndDrainOnScancel) {
  WriteCheckpoint(100);
  services_.Cli({"runs", "add", "run", "--source", tmp_ / "ckpt", "--tasks",
                 tmp_ / "tasks/arith_mc.jsonl", "--settle_seconds", "0.1"});

  // The repository's script, CPU workers, two tasks (the #SBATCH lines ask for GPUs).
  CommandResult submitted = cluster_.Run(
      {"/usr/bin/sbatch", "--parsable", "--gpus-per-task=0", "--ntasks-per-node=2",
       "--cpus-per-task=1", "--output=" + tmp_ / "job-%j.out",
       SourceDir() + "/deploy/slurm/steadyeval-workers.sbatch"},
      {"STEADYEVAL_COORDINATOR=" + services_.address(), "STEADYEVAL_BIN=" + BinDir(),
       "STEADYEVAL_DEVICE=cpu", "STEADYEVAL_WORKER_FLAGS=--threads 1 --acquire_wait_ms 500"});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err << cluster_.Logs();
  job_ = std::string(absl::StripAsciiWhitespace(submitted.out));
  const std::vector<std::string> names = {absl::StrCat("slurm-", job_, "-0"),
                                          absl::StrCat("slurm-", job_, "-1")};

  ASSERT_TRUE(WaitFor([&] { return LiveWorkers() == names; }, seconds(120), milliseconds(500)))
      << Logs();
  ASSERT_TRUE(WaitFor([&] { return Evaluated() == 1; }, seconds(120), milliseconds(500)))
      << Logs();

  // Requeue (what preemption with PreemptMode=REQUEUE does): the workers drain, the job
  // starts again under the same id (now, not after Slurm's requeue delay), and its new
  // workers register by themselves and evaluate a new checkpoint.
  ASSERT_EQ(cluster_.Run({"/usr/bin/scontrol", "requeue", job_}).exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return cluster_.JobState(job_) == "PENDING"; }, seconds(60)))
      << Logs();
  ASSERT_EQ(cluster_.Run({"/usr/bin/scontrol", "update", "JobId=" + job_, "StartTime=now"})
                .exit_code,
            0);
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(JobOutput(), "restart 1"); },
                      seconds(120), milliseconds(500)))
      << Logs();
  WriteCheckpoint(200);
  ASSERT_TRUE(WaitFor([&] { return Evaluated() == 2; }, seconds(120), milliseconds(500)))
      << Logs();
  // The drained workers turn "lost" (3 lease TTLs after their last call); the new ones have
  // the same names.
  EXPECT_TRUE(WaitFor([&] { return LiveWorkers() == names; }, seconds(60), milliseconds(500)))
      << Logs();

  // scancel: every worker is signalled once, drains and exits; the job goes away and the
  // coordinator stops seeing the workers.
  ASSERT_EQ(cluster_.Run({"/usr/bin/scancel", job_}).exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return cluster_.JobState(job_).empty(); }, seconds(90),
                      milliseconds(500)))
      << Logs();
  const std::string out = JobOutput();
  for (const char* task : {"0: ", "1: "}) {
    // Once at the requeue, once at the scancel.
    size_t drained = 0;
    for (absl::string_view line : absl::StrSplit(out, '\n')) {
      drained += absl::StartsWith(line, task) &&
                 absl::StrContains(line, "steadyeval-worker: drained; stopping");
    }
    EXPECT_EQ(drained, 2u) << "task " << task << "\n" << out;
  }
  EXPECT_FALSE(absl::StrContains(out, "second signal")) << out;
  EXPECT_FALSE(absl::StrContains(out, "Killed")) << out;
  EXPECT_TRUE(WaitFor([&] { return LiveWorkers().empty(); }, seconds(60), milliseconds(500)))
      << Logs();
}

// deploy/slurm/train-with-eval.hetjob.sbatch with its resource lines made to fit this
// cluster (one CPU task per component, no GPUs; the script says to adapt them): the workers
// of component 1 evaluate what the "trainer" of component 0 writes, and when training ends
// the script drains them and the job ends with the trainer's status.
TEST_F(SlurmEndToEndTest, HetjobWorkersEvaluateBesideTrainingAndDrainWhenItEnds) {
  services_.Cli({"runs", "add", "run", "--source", tmp_ / "ckpt", "--tasks",
                 tmp_ / "tasks/arith_mc.jsonl", "--settle_seconds", "0.1"});
  const std::string original =
      ReadFileOrEmpty(SourceDir() + "/deploy/slurm/train-with-eval.hetjob.sbatch");
  std::string script;
  int adapted = 0;
  for (absl::string_view line : absl::StrSplit(original, '\n')) {
    if (absl::StartsWith(line, "#SBATCH --gpus-per-task=")) {
      ++adapted;
      continue;
    }
    bool replaced = false;
    for (const char* option : {"--nodes=", "--ntasks-per-node=", "--cpus-per-task="}) {
      if (absl::StartsWith(line, absl::StrCat("#SBATCH ", option))) {
        absl::StrAppend(&script, "#SBATCH ", option, "1\n");
        ++adapted;
        replaced = true;
      }
    }
    if (!replaced) absl::StrAppend(&script, line, "\n");
  }
  // Both components name all four resource lines; a change of the script's shape fails here.
  ASSERT_EQ(adapted, 8) << script;
  const std::string copy = tmp_ / "train-with-eval.sbatch";
  WriteFile(copy, script);

  // The trainer writes a checkpoint, then trains until the test lets it finish.
  const std::string stop = tmp_ / "stop-training";
  const std::string train = absl::StrCat(
      BinDir(), "/steadyeval-fixtures checkpoint --out ", tmp_ / "ckpt/step_00100",
      " --step 100 --tokenizer ", tmp_ / "tok/tokenizer.model",
      " >/dev/null && while [ ! -e ", stop, " ]; do sleep 0.2; done");
  CommandResult submitted = cluster_.Run(
      {"/usr/bin/sbatch", "--parsable", "--output=" + tmp_ / "job-%j.out", copy},
      {"STEADYEVAL_COORDINATOR=" + services_.address(), "STEADYEVAL_BIN=" + BinDir(),
       "STEADYEVAL_DEVICE=cpu", "STEADYEVAL_WORKER_FLAGS=--threads 1 --acquire_wait_ms 500",
       "TRAIN_CMD=" + train});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err << cluster_.Logs();
  job_ = std::string(absl::StripAsciiWhitespace(submitted.out));

  const std::vector<std::string> names = {absl::StrCat("slurm-", job_, "-0")};
  ASSERT_TRUE(WaitFor([&] { return LiveWorkers() == names; }, seconds(120), milliseconds(500)))
      << Logs();
  ASSERT_TRUE(WaitFor([&] { return Evaluated() == 1; }, seconds(120), milliseconds(500)))
      << Logs();
  EXPECT_EQ(cluster_.JobState(job_), "RUNNING\nRUNNING");  // one line per component

  WriteFile(stop, "");
  ASSERT_TRUE(WaitFor([&] { return cluster_.JobState(job_).empty(); }, seconds(90),
                      milliseconds(500)))
      << Logs();
  const std::string out = JobOutput();
  EXPECT_THAT(out, ::testing::HasSubstr("training ended (status 0); draining the workers"));
  size_t drained = 0;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    drained += absl::StrContains(line, "steadyeval-worker: drained; stopping");
  }
  EXPECT_EQ(drained, 1u) << out;
  EXPECT_FALSE(absl::StrContains(out, "Killed")) << out;
  EXPECT_TRUE(WaitFor([&] { return LiveWorkers().empty(); }, seconds(60), milliseconds(500)))
      << Logs();
}

}  // namespace
}  // namespace steadyeval::testing
