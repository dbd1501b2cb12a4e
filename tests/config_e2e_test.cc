// End to end, the declarative config (issue #19): a real steadyeval-server started with
// --config serves the runs the file declares; SIGHUP adds a run, changes a window and
// pauses a run the file no longer declares; a broken file, and a change to a declared
// run's source, are refused with FILE:LINE in the log while the old config keeps serving;
// `runs update` on a run the file manages is refused naming the file. The shipped example
// deploy/config/steadyeval.yaml starts a coordinator serving its runs.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <map>
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
using std::chrono::seconds;
using ::testing::HasSubstr;

std::string Tasks() { return fs::absolute(SourceDir()).string() + "/examples/tasks"; }

// One run entry (5 lines, the first "  - name: NAME").
std::string RunEntry(const std::string& name, const std::string& source,
                     const std::string& average) {
  return absl::StrCat("  - name: ", name, "\n    source: ", source, "\n    average: ", average,
                      "\n    tasks:\n      - file: ", Tasks(), "/arith_mc.jsonl\n");
}

json FindRun(const json& list, const std::string& name) {
  for (const json& run : list["runs"]) {
    if (run["name"] == name) return run;
  }
  return json();
}

class ConfigEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(tmp_ / "ckpt-a");
    fs::create_directories(tmp_ / "ckpt-b");
    config_ = tmp_ / "steadyeval.yaml";
  }

  // Sends SIGHUP and waits until the coordinator's log has `count` lines with `marker`.
  bool Hup(const std::string& marker, int count) {
    kill(services_.coordinator().pid(), SIGHUP);
    return WaitFor(
        [&] {
          const std::string logs = services_.coordinator().Logs();
          int seen = 0;
          for (size_t at = logs.find(marker); at != std::string::npos;
               at = logs.find(marker, at + 1)) {
            ++seen;
          }
          return seen >= count;
        },
        std::chrono::seconds(60));
  }

  TempDir tmp_;
  std::string config_;
  ServiceProcesses services_{tmp_ / "svc"};
};

TEST_F(ConfigEndToEndTest, StartSighupRefusalsAndManagedRuns) {
  WriteFile(config_, "poll_interval_ms: 200\nruns:\n" + RunEntry("a", tmp_ / "ckpt-a", "[2]"));
  ASSERT_TRUE(services_.StartCoordinator({"--config", config_}).ok()) << services_.Logs();
  json a = FindRun(services_.Cli({"runs", "list"}), "a");
  ASSERT_FALSE(a.is_null()) << services_.Logs();
  EXPECT_EQ(a["managed_by"], config_);
  EXPECT_EQ(a["average_windows"], json::array({2}));

  // runs update on a managed run: refused, naming the file.
  CommandResult update = services_.RunCli({"runs", "update", "a", "--average", "3"});
  EXPECT_NE(update.exit_code, 0);
  EXPECT_THAT(update.err, HasSubstr(config_));

  // SIGHUP: b added, a's windows changed.
  WriteFile(config_, "poll_interval_ms: 200\nruns:\n" + RunEntry("a", tmp_ / "ckpt-a", "[2, 3]") +
                         RunEntry("b", tmp_ / "ckpt-b", "[4]"));
  ASSERT_TRUE(Hup("SIGHUP: applied", 1)) << services_.Logs();
  json list = services_.Cli({"runs", "list"});
  EXPECT_EQ(FindRun(list, "a")["average_windows"], json::array({2, 3}));
  EXPECT_EQ(FindRun(list, "b")["average_windows"], json::array({4})) << list.dump();

  // A broken file (an unknown key on line 3): refused with FILE:3, the runs stay.
  WriteFile(config_, "poll_interval_ms: 200\nruns:\n  - nmae: c\n");
  ASSERT_TRUE(Hup("SIGHUP: refused", 1)) << services_.Logs();
  EXPECT_THAT(services_.coordinator().Logs(), HasSubstr(config_ + ":3: unknown key 'nmae'"));
  list = services_.Cli({"runs", "list"});
  EXPECT_FALSE(FindRun(list, "a").is_null());
  EXPECT_FALSE(FindRun(list, "b").is_null());
  EXPECT_FALSE(FindRun(list, "b")["paused"].get<bool>());

  // A declared run's source changed (run b on line 8): refused with FILE:8.
  WriteFile(config_, "poll_interval_ms: 200\nruns:\n" + RunEntry("a", tmp_ / "ckpt-a", "[2, 3]") +
                         RunEntry("b", tmp_ / "ckpt-a", "[4]"));
  ASSERT_TRUE(Hup("SIGHUP: refused", 2)) << services_.Logs();
  EXPECT_THAT(services_.coordinator().Logs(), HasSubstr(config_ + ":8: run b: its source"));
  EXPECT_EQ(FindRun(services_.Cli({"runs", "list"}), "b")["source"], tmp_ / "ckpt-b");

  // b no longer declared: paused, not deleted; a runs add run is never touched.
  services_.Cli({"runs", "add", "manual", "--source", tmp_ / "ckpt-b", "--tasks",
                 Tasks() + "/arith_mc.jsonl"});
  WriteFile(config_, "poll_interval_ms: 200\nruns:\n" + RunEntry("a", tmp_ / "ckpt-a", "[2, 3]"));
  ASSERT_TRUE(Hup("SIGHUP: applied", 2)) << services_.Logs();
  list = services_.Cli({"runs", "list"});
  EXPECT_TRUE(FindRun(list, "b")["paused"].get<bool>()) << list.dump();
  EXPECT_FALSE(FindRun(list, "a")["paused"].get<bool>());
  EXPECT_FALSE(FindRun(list, "manual")["paused"].get<bool>());
  EXPECT_EQ(FindRun(list, "manual")["managed_by"], "");

  // b declared again: a config never resumes a run; the log says how to.
  WriteFile(config_, "poll_interval_ms: 200\nruns:\n" + RunEntry("a", tmp_ / "ckpt-a", "[2, 3]") +
                         RunEntry("b", tmp_ / "ckpt-b", "[4]"));
  ASSERT_TRUE(Hup("SIGHUP: applied", 3)) << services_.Logs();
  EXPECT_THAT(services_.coordinator().Logs(),
              HasSubstr("declared but paused: b (`steadyeval runs resume b` resumes it)"));
  EXPECT_TRUE(FindRun(services_.Cli({"runs", "list"}), "b")["paused"].get<bool>());

  // runs show --yaml round-trips through the loader: as the whole file, nothing changes.
  // (Its task files are named by file name, relative to the config: copy it beside.)
  fs::copy_file(Tasks() + "/arith_mc.jsonl", tmp_ / "arith_mc.jsonl");
  CommandResult yaml = services_.RunCli({"runs", "show", "a", "--yaml"});
  ASSERT_EQ(yaml.exit_code, 0) << yaml.err;
  EXPECT_THAT(yaml.out, HasSubstr("- name: 'a'"));
  // (b, already paused, is not paused again.)
  WriteFile(config_, "poll_interval_ms: 200\nruns:\n" + yaml.out);
  ASSERT_TRUE(Hup("SIGHUP: applied", 4)) << services_.Logs();
  EXPECT_THAT(services_.coordinator().Logs(),
              HasSubstr("created none; windows changed none; paused (no longer declared) none"));
}

// A window added on SIGHUP is scheduled: its jobs appear for the checkpoints already admitted.
TEST_F(ConfigEndToEndTest, WindowAddedOnSighupIsScheduled) {
  ASSERT_EQ(RunFixtures({"tokenizer", "--out", tmp_ / "tok"}).exit_code, 0);
  for (int step : {100, 200, 300}) {
    CommandResult r = RunFixtures({"checkpoint", "--out", tmp_ / absl::StrCat("ckpt-a/step_", step),
                                   "--step", std::to_string(step), "--tokenizer",
                                   tmp_ / "tok/tokenizer.model"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  WriteFile(config_, "runs:\n" + RunEntry("a", tmp_ / "ckpt-a", "[2]"));
  ASSERT_TRUE(services_.StartCoordinator({"--config", config_, "--settle_seconds", "0.1"}).ok())
      << services_.Logs();
  // Jobs by kind ("raw", "avg@2", ...), as `steadyeval jobs` lists them.
  auto kinds = [&] {
    std::map<std::string, int> count;
    const json jobs = services_.Cli({"jobs", "--run", "a"});
    for (const json& job : jobs["jobs"]) ++count[job["kind"].get<std::string>()];
    return count;
  };
  const std::map<std::string, int> before = {{"raw", 3}, {"avg@2", 2}};
  ASSERT_TRUE(WaitFor([&] { return kinds() == before; }, seconds(60))) << services_.Logs();

  WriteFile(config_, "runs:\n" + RunEntry("a", tmp_ / "ckpt-a", "[2, 3]"));
  ASSERT_TRUE(Hup("SIGHUP: applied", 1)) << services_.Logs();
  const std::map<std::string, int> after = {{"raw", 3}, {"avg@2", 2}, {"avg@3", 1}};
  EXPECT_TRUE(WaitFor([&] { return kinds() == after; }, seconds(60))) << services_.Logs();
}

// --check: a file that does not load is refused with FILE:LINE and nothing is created; a good
// one is summarised, its data dir left unopened.
TEST_F(ConfigEndToEndTest, CheckRefusesBrokenFileAndOpensNothing) {
  const std::string server = BinDir() + "/steadyeval-server";
  const std::string data = tmp_ / "data";
  WriteFile(config_, "runs:\n" + RunEntry("a", tmp_ / "ckpt-a", "[2]") + "    windows: [3]\n");
  CommandResult bad = RunCommand({server, "--check", "--config", config_, "--data_dir", data});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr(config_ + ":7: unknown key 'windows'")) << bad.err;

  WriteFile(config_, "runs:\n" + RunEntry("a", tmp_ / "ckpt-nope", "[2]"));
  bad = RunCommand({server, "--check", "--config", config_, "--data_dir", data});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr(config_ + ":2: run a: source")) << bad.err;

  // The flag --data_dir overrides the file's data_dir.
  WriteFile(config_, "data_dir: /nonexistent/from-the-file\nlease_ttl_ms: 5000\nruns:\n" +
                         RunEntry("a", tmp_ / "ckpt-a", "[2]"));
  CommandResult good = RunCommand({server, "--check", "--config", config_, "--data_dir", data});
  EXPECT_EQ(good.exit_code, 0) << good.err;
  EXPECT_THAT(good.out, HasSubstr(config_ + " ok: 2 setting(s), 1 run(s): a; data_dir " + data +
                                  " (not opened)"));
  EXPECT_FALSE(fs::exists(data));
  // A bad value of a setting is refused at its line, as at start.
  WriteFile(config_, "data_dir: " + data + "\nlease_ttl_ms: soon\n");
  bad = RunCommand({server, "--check", "--config", config_});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr(config_ + ":2: 'lease_ttl_ms' is 'soon'")) << bad.err;
}

TEST_F(ConfigEndToEndTest, ExampleConfigServesItsRuns) {
  // The example with its checkpoint folder (/srv/checkpoints/...) here and its task paths
  // (relative to deploy/config/) made absolute.
  const std::string source = fs::absolute(SourceDir()).string();
  std::string text = ReadFileOrEmpty(source + "/deploy/config/steadyeval.yaml");
  for (size_t at; (at = text.find("/srv/checkpoints")) != std::string::npos;) {
    text.replace(at, 16, tmp_.path());
  }
  for (size_t at; (at = text.find("../../examples")) != std::string::npos;) {
    text.replace(at, 14, source + "/examples");
  }
  fs::create_directories(tmp_ / "llm-1b-ja");
  const std::string example = tmp_ / "steadyeval.yaml";
  WriteFile(example, text);
  // The flags of StartCoordinator (data dir, ports) override the file's.
  ASSERT_TRUE(services_.StartCoordinator({"--config", example}).ok()) << services_.Logs();
  json run = FindRun(services_.Cli({"runs", "list"}), "llm-1b-ja");
  ASSERT_FALSE(run.is_null()) << services_.Logs();
  EXPECT_EQ(run["tasks"].size(), 3u);
  EXPECT_EQ(run["average_windows"], json::array({2, 4}));
  EXPECT_THAT(services_.Cli({"runs", "show", "llm-1b-ja"}).dump(), HasSubstr("\"llm-1b-ja\""));
}

}  // namespace
}  // namespace steadyeval::testing
