// The README's demo command, shortened (fewer training steps, a smaller model), run end to
// end through scripts/demo.sh with the binaries of this build: a real toy pretraining run,
// the coordinator and a worker evaluating its checkpoints live, then the stability table
// and the plots. Checks what a user gets: the plot files exist and are valid SVG / PNG of
// non-trivial size, the stability JSON has a row for every task and configured variant, the
// printed tables name every variant, and the services are stopped afterwards.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "testing/files.h"
#include "testing/http.h"
#include "testing/temp_dir.h"
#include "testing/wait.h"
#include "testing/process.h"

namespace steadyeval::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::testing::HasSubstr;

uint32_t BigEndian32(const std::string& bytes, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[at + i]);
  return v;
}

// A PNG's signature and IHDR chunk; sets the image size.
void ExpectPng(const std::string& path, uint32_t* width, uint32_t* height) {
  const std::string bytes = ReadFileOrEmpty(path);
  ASSERT_GT(bytes.size(), 10000u) << path << " is too small to hold a plot";
  ASSERT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << path;
  ASSERT_EQ(bytes.substr(12, 4), "IHDR") << path;
  *width = BigEndian32(bytes, 16);
  *height = BigEndian32(bytes, 20);
  // The file ends with the IEND chunk (name + CRC), so it was written completely.
  EXPECT_EQ(bytes.substr(bytes.size() - 8, 4), "IEND") << path;
}

// Well-formed enough to be an SVG document: an XML prolog or <svg> first, </svg> last, and
// every element opened is closed (counted by name).
void ExpectSvg(const std::string& path) {
  const std::string text = ReadFileOrEmpty(path);
  ASSERT_GT(text.size(), 10000u) << path << " is too small to hold a plot";
  EXPECT_TRUE(text.rfind("<?xml", 0) == 0 || text.rfind("<svg", 0) == 0) << text.substr(0, 80);
  EXPECT_NE(text.find("<svg"), std::string::npos);
  const size_t end = text.find_last_not_of(" \n\r\t");
  ASSERT_NE(end, std::string::npos);
  EXPECT_EQ(text.substr(end + 1 - 6, 6), "</svg>");
  std::map<std::string, int> open;
  for (size_t at = text.find('<'); at != std::string::npos; at = text.find('<', at + 1)) {
    if (text.compare(at, 2, "<?") == 0 || text.compare(at, 2, "<!") == 0) continue;
    const bool closing = text.compare(at, 2, "</") == 0;
    const size_t name_start = at + (closing ? 2 : 1);
    const size_t name_end = text.find_first_of(" \t\n/>", name_start);
    ASSERT_NE(name_end, std::string::npos);
    const std::string name = text.substr(name_start, name_end - name_start);
    const size_t close = text.find('>', at);
    ASSERT_NE(close, std::string::npos) << "unterminated tag " << name;
    const bool self_closing = text[close - 1] == '/';
    if (closing) {
      --open[name];
    } else if (!self_closing) {
      ++open[name];
    }
  }
  for (const auto& [name, count] : open) EXPECT_EQ(count, 0) << "unbalanced <" << name << ">";
}

TEST(DemoTest, ShortenedDemoTrainsEvaluatesAndWritesTablesAndPlots) {
  TempDir tmp;
  const std::string demo = tmp / "demo";
  const std::string script = SourceDir() + "/scripts/demo.sh";
  // 60 steps, a checkpoint every 10: six checkpoints, windows of 3.
  CommandResult run = RunCommand(
      {"/usr/bin/env", "DEMO_SKIP_BUILD=1", "DEMO_BIN=" + BinDir(), "DEMO_DIR=" + demo,
       "DEMO_STEPS=60", "DEMO_SAVE_EVERY=10", "DEMO_AVERAGE=3", "DEMO_ENSEMBLE=3",
       "DEMO_TRAIN_ARGS=--hidden 32 --layers 1 --intermediate 64", "DEMO_TIMEOUT_S=500",
       "bash", script},
      600);
  ASSERT_EQ(run.exit_code, 0) << run.out << "\n--- stderr:\n" << run.err;

  // Live progress, then the tables.
  EXPECT_THAT(run.out, HasSubstr("trainer: done: 60 steps, 6 checkpoints"));
  EXPECT_THAT(run.out, HasSubstr("lag"));
  EXPECT_THAT(run.out, HasSubstr("all 6 checkpoints evaluated"));
  EXPECT_THAT(run.out, HasSubstr("stability over the final 20%"));
  for (const char* variant : {"raw", "avg@3", "ens@3"}) {
    EXPECT_THAT(run.out, HasSubstr(variant));
  }

  // Six checkpoints, each complete, none half-written (hidden entries are the trainer's
  // own, e.g. its tokenizer).
  std::set<std::string> checkpoints;
  for (const auto& entry : fs::directory_iterator(demo + "/checkpoints")) {
    if (entry.path().filename().string()[0] == '.') continue;
    checkpoints.insert(entry.path().filename().string());
    for (const char* file : {"config.json", "model.safetensors", "tokenizer.model"}) {
      EXPECT_TRUE(fs::exists(entry.path() / file)) << entry.path() << " lacks " << file;
    }
  }
  EXPECT_EQ(checkpoints, (std::set<std::string>{"step_000010", "step_000020", "step_000030",
                                                "step_000040", "step_000050", "step_000060"}));

  // The stability JSON: a row for every task and every configured variant.
  std::set<std::string> tasks, multiple_choice;
  for (const auto& entry : fs::directory_iterator(demo + "/tasks")) {
    const std::string ext = entry.path().extension().string();
    if (ext == ".json" || ext == ".jsonl") tasks.insert(entry.path().stem().string());
    if (ext == ".jsonl") multiple_choice.insert(entry.path().stem().string());
  }
  ASSERT_FALSE(multiple_choice.empty());
  ASSERT_GE(tasks.size(), 4u);
  const json stability = json::parse(ReadFileOrEmpty(demo + "/stability.json"));
  std::map<std::string, std::set<std::string>> variants_by_task;
  for (const json& row : stability.at("rows")) {
    if (row.at("kind") != "task") continue;
    variants_by_task[row.at("task").get<std::string>()].insert(row.at("variant").get<std::string>());
    // Two points at least in the default range, so MTV and IS are numbers.
    EXPECT_GE(row.at("checkpoints").get<int>(), 2) << row.dump();
    EXPECT_TRUE(row.at("mtv").is_number()) << row.dump();
    EXPECT_TRUE(row.at("is").is_number()) << row.dump();
  }
  for (const std::string& task : tasks) {
    // Multiple-choice tasks also get the soft ensemble of the same window.
    std::set<std::string> expected = {"raw", "avg@3", "ens@3"};
    if (multiple_choice.count(task)) expected.insert("ens-soft@3");
    EXPECT_EQ(variants_by_task[task], expected) << task;
  }

  // The plots: the whole run as SVG and PNG, and one PNG per task.
  ExpectSvg(demo + "/plots/demo.svg");
  uint32_t width = 0, height = 0;
  ExpectPng(demo + "/plots/demo.png", &width, &height);
  EXPECT_GE(width, 400u);
  EXPECT_GE(height, 300u * tasks.size()) << "one panel per task, stacked";
  for (const std::string& task : tasks) {
    uint32_t w = 0, h = 0;
    ExpectPng(demo + "/plots/" + task + ".png", &w, &h);
    EXPECT_LT(h, height) << task << ": a single-task plot is shorter than the whole run's";
  }

  // The services were stopped: the coordinator's address no longer answers.
  const json ready = json::parse(ReadFileOrEmpty(demo + "/server.json"));
  CommandResult after = RunCommand({BinDir() + "/steadyeval", "runs", "list", "--server",
                                    ready.at("grpc").get<std::string>(), "--timeout_s", "3"});
  EXPECT_NE(after.exit_code, 0) << "the coordinator still answers after the demo: " << after.out;
  EXPECT_FALSE(fs::exists(demo + "/pids"));
}

// DEMO_KEEP=1 leaves the coordinator and worker running for queries; `demo.sh stop` stops
// them.
TEST(DemoTest, KeptServicesAnswerUntilDemoStop) {
  TempDir tmp;
  const std::string demo = tmp / "demo";
  const std::string script = SourceDir() + "/scripts/demo.sh";
  const std::vector<std::string> env = {"/usr/bin/env", "DEMO_SKIP_BUILD=1", "DEMO_BIN=" + BinDir(),
                                        "DEMO_DIR=" + demo};
  std::vector<std::string> argv = env;
  for (const char* a : {"DEMO_KEEP=1", "DEMO_STEPS=20", "DEMO_SAVE_EVERY=10", "DEMO_AVERAGE=2",
                        "DEMO_ENSEMBLE=2",
                        "DEMO_TRAIN_ARGS=--hidden 32 --layers 1 --intermediate 64"}) {
    argv.push_back(a);
  }
  argv.insert(argv.end(), {"bash", script});
  CommandResult run = RunCommand(argv, 600);
  ASSERT_EQ(run.exit_code, 0) << run.out << "\n--- stderr:\n" << run.err;
  EXPECT_THAT(run.out, HasSubstr("scripts/demo.sh stop"));

  const json ready = json::parse(ReadFileOrEmpty(demo + "/server.json"));
  const std::vector<std::string> query = {BinDir() + "/steadyeval", "checkpoints", "demo",
                                          "--json", "--server",
                                          ready.at("grpc").get<std::string>(), "--timeout_s", "5"};
  CommandResult kept = RunCommand(query);
  ASSERT_EQ(kept.exit_code, 0) << kept.err;
  EXPECT_THAT(kept.out, HasSubstr("step_000020"));
  // The kept worker serves its metrics at the address the demo printed: both checkpoints'
  // raw jobs and the avg@2 job done.
  EXPECT_THAT(run.out, HasSubstr("Prometheus can scrape http://127.0.0.1:"));
  std::smatch printed;
  ASSERT_TRUE(std::regex_search(run.out, printed,
                                std::regex(R"(worker demo-worker \(metrics: http://127\.0\.0\.1:(\d+)/metrics\))")))
      << run.out;
  const std::string worker_metrics = HttpOkBody(HttpGet(std::stoi(printed[1]), "/metrics"));
  EXPECT_EQ(SampleValue(worker_metrics, "steadyeval_worker_jobs_total{outcome=\"done\",worker=\"demo-worker\"}"),
            std::optional<double>(3))
      << worker_metrics;

  std::vector<std::string> stop = env;
  stop.insert(stop.end(), {"bash", script, "stop"});
  CommandResult stopped = RunCommand(stop);
  ASSERT_EQ(stopped.exit_code, 0) << stopped.out << stopped.err;
  EXPECT_THAT(stopped.out, HasSubstr("stopped steadyeval-server"));
  EXPECT_THAT(stopped.out, HasSubstr("stopped steadyeval-worker"));
  EXPECT_TRUE(WaitFor([&] { return RunCommand(query).exit_code != 0; }, std::chrono::seconds(30)))
      << "the coordinator still answers after 'demo.sh stop'";
}

}  // namespace
}  // namespace steadyeval::testing
