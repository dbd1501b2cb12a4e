// ReadConfigFile / CheckDeclaredRuns: every shipped example loads; errors name FILE:LINE.
#include "server/config/config_file.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/files.h"
#include "testing/temp_dir.h"

namespace steadyeval {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class ConfigFileTest : public ::testing::Test {
 protected:
  // Writes `text` to a file in the temp dir and reads it as a config.
  absl::StatusOr<ConfigFile> Read(const std::string& text) {
    path_ = tmp_ / "c.yaml";
    std::ofstream(path_, std::ios::trunc) << text;
    return ReadConfigFile(path_);
  }
  absl::Status ReadAndCheck(const std::string& text) {
    absl::StatusOr<ConfigFile> file = Read(text);
    if (!file.ok()) return file.status();
    return CheckDeclaredRuns(*file, NewRunOptions()).status();
  }
  std::string Task() const {
    return fs::absolute(testing::SourceDir()).string() + "/examples/tasks/arith_mc.jsonl";
  }

  testing::TempDir tmp_;
  std::string path_;
};

TEST_F(ConfigFileTest, EveryExampleConfigLoads) {
  int seen = 0;
  for (const auto& entry : fs::directory_iterator(testing::SourceDir() + "/deploy/config")) {
    if (entry.path().extension() != ".yaml") continue;
    ++seen;
    // The examples' checkpoint folders (/srv/checkpoints/...) must exist: point them here.
    std::string text((std::istreambuf_iterator<char>(*std::make_unique<std::ifstream>(
                          entry.path()))),
                     std::istreambuf_iterator<char>());
    for (size_t at; (at = text.find("/srv/checkpoints")) != std::string::npos;) {
      text.replace(at, 16, tmp_.path());
    }
    fs::create_directories(tmp_ / "llm-1b-ja");
    absl::StatusOr<ConfigFile> file = ReadConfigText(text, entry.path().string());
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_FALSE(file->runs.empty()) << entry.path();
    NewRunOptions options;
    // The examples name their S3 endpoint in s3_endpoints, as the server would.
    if (file->settings.count("s3_endpoints")) {
      options.sources.s3_endpoints = {file->settings.at("s3_endpoints")};
    }
    absl::StatusOr<std::vector<NewRun>> runs = CheckDeclaredRuns(*file, options);
    EXPECT_TRUE(runs.ok()) << entry.path() << ": " << runs.status();
  }
  EXPECT_GE(seen, 2);
}

TEST_F(ConfigFileTest, SettingsAndRunFields) {
  fs::create_directories(tmp_ / "ckpt");
  absl::StatusOr<ConfigFile> file = Read(
      "listen: 0.0.0.0:1\nsource_roots: [/a, /b]\ninsecure: true\nruns:\n"
      "  - name: r\n    source: ckpt\n    pattern: 'step_(\\d+)'\n    average: [4, 2]\n"
      "    bos: add\n    few_shots: 2\n    tasks:\n      - file: " + Task() +
      "\n        category: mc\n        max_samples: 7\n");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->settings["listen"], "0.0.0.0:1");
  EXPECT_EQ(file->settings["source_roots"], "/a,/b");
  EXPECT_EQ(file->settings["insecure"], "true");
  ASSERT_EQ(file->runs.size(), 1u);
  const DeclaredRun& run = file->runs[0];
  EXPECT_EQ(run.line, 5);
  EXPECT_EQ(run.config.source(), (tmp_ / "ckpt"));  // relative to the file
  EXPECT_EQ(run.config.pattern(), "step_(\\d+)");
  EXPECT_EQ(run.config.few_shots(), 2);
  EXPECT_EQ(run.config.tasks(0).max_samples(), 7u);
  absl::StatusOr<std::vector<NewRun>> checked = CheckDeclaredRuns(*file, NewRunOptions());
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_EQ((*checked)[0].config.tasks(0).category(), "MC");
  EXPECT_THAT((*checked)[0].config.average_windows(), ::testing::ElementsAre(2, 4));
}

TEST_F(ConfigFileTest, ErrorsNameFileAndLine) {
  const std::string run =
      "  - name: r\n    source: " + tmp_.path() + "\n    tasks: [" + Task() + "]\n";
  EXPECT_THAT(ReadAndCheck("listen: a\nlisten_typo: b\n").message(),
              HasSubstr(path_ + ":2: unknown key 'listen_typo'"));
  EXPECT_THAT(ReadAndCheck("runs:\n  - name: r\n    source: /x\n    tasks: [a\n").message(),
              HasSubstr(path_ + ":"));
  EXPECT_THAT(ReadAndCheck("runs:\n" + run + "    bos: sometimes\n").message(),
              HasSubstr(path_ + ":2: run r: bos 'sometimes'"));
  EXPECT_THAT(ReadAndCheck("runs:\n" + run + "    average: [1]\n").message(),
              HasSubstr(path_ + ":5: 'average' window size 1"));
  EXPECT_THAT(ReadAndCheck("runs:\n" + run + run).message(),
              HasSubstr(path_ + ":5: run r is declared twice (also at " + path_ + ":2)"));
  EXPECT_THAT(ReadAndCheck("runs:\n  - name: r\n    source: /x\n    tasks: [nope.jsonl]\n")
                  .message(),
              HasSubstr(path_ + ":4: task file " + (tmp_ / "nope.jsonl")));
  EXPECT_THAT(ReadAndCheck("runs:\n  - name: r\n    tasks: [a]\n").message(),
              HasSubstr(path_ + ":2: a run needs 'source'"));
  EXPECT_THAT(ReadAndCheck("runs:\n" + run + "    few_shots: many\n").message(),
              HasSubstr(path_ + ":5: 'few_shots' is 'many'"));
  EXPECT_TRUE(absl::IsNotFound(ReadConfigFile(tmp_ / "missing.yaml").status()));
}

TEST(ConfigSettingKeysTest, AreTheServerFlagsLessThoseOfOneInvocation) {
  EXPECT_THAT(ConfigSettingKeys(),
              ::testing::ElementsAre("data_dir", "listen", "metrics_listen", "poll_interval_ms",
                                     "lease_ttl_ms", "settle_seconds", "ready_file", "tls_cert",
                                     "tls_key", "client_ca", "tokens_file", "source_roots",
                                     "s3_endpoints", "insecure", "storage_reserve_bytes",
                                     "storage_max_sst_bytes"));
}

TEST_F(ConfigFileTest, AFolderIsNeitherATaskFileNorAConfigFile) {
  fs::create_directories(tmp_ / "tasks");
  EXPECT_THAT(ReadAndCheck("runs:\n  - name: r\n    source: /x\n    tasks: [tasks]\n").message(),
              HasSubstr(path_ + ":4: task file " + (tmp_ / "tasks") + " is not a regular file"));
  EXPECT_THAT(ReadConfigFile(tmp_ / "tasks").status().message(),
              HasSubstr("config file " + (tmp_ / "tasks") + " is not a regular file"));
}

}  // namespace
}  // namespace steadyeval
