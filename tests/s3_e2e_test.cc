// End to end on a bucket (issue #18): a real S3-compatible server (s3rver, testing/s3rver.h)
// on 127.0.0.1, the real coordinator, worker and CLI. The trainer's checkpoints are written
// to a local folder by the fixture tool and uploaded one object at a time; a second run
// watches that local folder, so every score of the bucket run has a folder twin to equal.
// Checks: each bucket checkpoint is evaluated exactly once and never before its last object
// lands; its scores equal the folder run's; the worker's cache stays under a limit smaller
// than two checkpoints; an endpoint that goes down is reported on the run and the run
// recovers when it is back; a coordinator with wrong credentials says which bucket refused
// it and with what HTTP status.
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "s3/s3_client.h"
#include "testing/files.h"
#include "testing/process.h"
#include "testing/s3rver.h"
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
using ::testing::HasSubstr;

constexpr char kBucket[] = "ckpt";
constexpr char kPrefix[] = "runs/llama-tiny";

class S3EndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    local_ = tmp_ / "checkpoints";
    fs::create_directories(local_);
    ASSERT_EQ(RunFixtures({"tokenizer", "--out", tmp_ / "tok"}).exit_code, 0);
    ASSERT_EQ(RunFixtures({"tasks", "--out", tmp_ / "tasks"}).exit_code, 0);
    absl::StatusOr<std::unique_ptr<S3rver>> s3 = S3rver::Start();
    ASSERT_TRUE(s3.ok()) << s3.status();
    s3_ = std::move(*s3);
    client_ = s3_->Client();
    ASSERT_TRUE(client_->CreateBucket(kBucket).ok());
    // Coordinator and worker read their credentials from their own environment, which
    // they inherit from this process.
    const AwsCredentials creds = S3rver::Credentials();
    setenv("AWS_ACCESS_KEY_ID", creds.access_key_id.c_str(), 1);
    setenv("AWS_SECRET_ACCESS_KEY", creds.secret_access_key.c_str(), 1);
    unsetenv("AWS_SESSION_TOKEN");
    unsetenv("AWS_PROFILE");
    setenv("AWS_SHARED_CREDENTIALS_FILE", (tmp_ / "no-credentials-file").c_str(), 1);
  }

  // Writes checkpoint `step` into the local folder (`shards` safetensors files).
  std::string WriteLocal(uint64_t step, int shards = 1) {
    const std::string dir = local_ + "/" + StepFolderName(step);
    CommandResult r = RunFixtures({"checkpoint", "--out", dir, "--step", std::to_string(step),
                            "--tokenizer", tmp_ / "tok/tokenizer.model", "--shards",
                            std::to_string(shards)});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return dir;
  }

  // The checkpoint's files, in the order they are uploaded: the shard index (when there
  // is one) first, so that the checkpoint names shards that are not there yet, and the
  // shards last.
  static std::vector<fs::path> UploadOrder(const std::string& dir) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path());
    auto rank = [](const fs::path& p) {
      const std::string name = p.filename().string();
      if (name == "model.safetensors.index.json") return 0;
      if (name.find(".safetensors") != std::string::npos) return 2;
      return 1;
    };
    std::sort(files.begin(), files.end(), [&](const fs::path& a, const fs::path& b) {
      return std::make_pair(rank(a), a.filename()) < std::make_pair(rank(b), b.filename());
    });
    return files;
  }

  // Uploads the local checkpoint `step` object by object. After each object but the last,
  // `between` is called with the names of the objects not uploaded yet until it returns
  // true (the coordinator has seen the partial checkpoint); returns the wall time (Unix ms) just before the last object's upload
  // began: nothing can have seen the checkpoint whole before then.
  int64_t Upload(uint64_t step,
                 const std::function<bool(const std::vector<std::string>&)>& between = nullptr) {
    const std::string dir = local_ + "/" + StepFolderName(step);
    const std::vector<fs::path> files = UploadOrder(dir);
    int64_t last_started_ms = 0;
    for (size_t i = 0; i < files.size(); ++i) {
      if (i > 0 && between) {
        std::vector<std::string> remaining;
        for (size_t j = i; j < files.size(); ++j) remaining.push_back(files[j].filename().string());
        EXPECT_TRUE(WaitFor([&] { return between(remaining); }, seconds(60), milliseconds(100)))
            << "after " << files[i - 1].filename() << ": " << Logs();
      }
      const std::string key =
          absl::StrCat(kPrefix, "/", StepFolderName(step), "/", files[i].filename().string());
      last_started_ms = std::chrono::duration_cast<milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
      absl::Status put = client_->Put(kBucket, key, ReadFileOrEmpty(files[i].string()));
      EXPECT_TRUE(put.ok()) << put;
    }
    return last_started_ms;
  }

  void StartServer() {
    ASSERT_OK(services_.StartCoordinator({"--lease_ttl_ms", "6000", "--s3_endpoints", s3_->endpoint()}));
  }

  void StartWorker(const std::vector<std::string>& flags) {
    absl::StatusOr<ChildProcess*> worker = services_.StartWorker("w3", flags);
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_ = *worker;
  }

  CommandResult RawCli(std::vector<std::string> args) { return services_.RunCli(std::move(args)); }
  json Cli(std::vector<std::string> args) { return services_.Cli(std::move(args)); }

  std::string BucketSource() const { return absl::StrCat("s3://", kBucket, "/", kPrefix); }

  void AddBucketRun(const std::string& name) {
    Cli({"runs", "add", name, "--source", BucketSource(), "--s3_endpoint", s3_->endpoint(),
         "--tasks", tmp_ / "tasks/arith_mc.jsonl", "--settle_seconds", "0.5"});
  }

  std::map<uint64_t, std::string> States(const std::string& run) {
    std::map<uint64_t, std::string> states;
    const json checkpoints = Cli({"checkpoints", run});
    for (const auto& c : checkpoints["checkpoints"]) {
      states[c["step"].get<uint64_t>()] = c["state"].get<std::string>();
    }
    return states;
  }

  size_t Evaluated(const std::string& run) {
    size_t n = 0;
    for (const auto& [step, state] : States(run)) n += state == "evaluated";
    return n;
  }

  std::string Logs() { return services_.Logs() + s3_->Logs(); }

  TempDir tmp_;
  std::string local_;
  std::unique_ptr<S3rver> s3_;
  std::unique_ptr<S3Client> client_;
  ServiceProcesses services_{tmp_.path()};
  ChildProcess* worker_ = nullptr;
};

uint64_t FolderBytes(const std::string& dir) {
  uint64_t bytes = 0;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) bytes += e.file_size(ec);
  }
  return bytes;
}

TEST_F(S3EndToEndTest, BucketCheckpointsAreEvaluatedOnceAfterTheirLastObjectLikeAFolder) {
  WriteLocal(100, /*shards=*/2);
  WriteLocal(200);
  Upload(100);
  Upload(200);
  StartServer();
  AddBucketRun("bucket");
  Cli({"runs", "add", "folder", "--source", local_, "--tasks", tmp_ / "tasks/arith_mc.jsonl",
       "--settle_seconds", "0.5"});

  // A cache that holds one checkpoint but not two: every new checkpoint evicts the last.
  const uint64_t one_checkpoint = FolderBytes(local_ + "/" + StepFolderName(100));
  const uint64_t cache_limit = one_checkpoint * 3 / 2;
  const std::string cache_dir = tmp_ / "cache";
  StartWorker({"--cache_dir", cache_dir, "--cache_bytes", std::to_string(cache_limit)});
  ASSERT_TRUE(WaitFor([&] { return Evaluated("bucket") == 2 && Evaluated("folder") == 2; },
                      seconds(240), milliseconds(500)))
      << Cli({"checkpoints", "bucket"}).dump(2) << Logs();
  EXPECT_LE(FolderBytes(cache_dir), cache_limit);

  // Step 300 arrives one object at a time. After each, the test waits until the coordinator
  // reports it incomplete for want of an object that is indeed not uploaded yet (a reason
  // naming the object just uploaded is an earlier poll's). It must never be admitted before
  // its last shard has landed.
  WriteLocal(300, /*shards=*/3);
  bool admitted_early = false;
  const int64_t last_started_ms = Upload(300, [&](const std::vector<std::string>& remaining) {
    const json listed = Cli({"checkpoints", "bucket"});
    for (const auto& c : listed["checkpoints"]) admitted_early = admitted_early || c["step"] == 300;
    for (const auto& p : listed["pending"]) {
      if (p["step"] != 300 || p["state"] != "incomplete") continue;
      const std::string reason = p["reason"].get<std::string>();
      for (const std::string& name : remaining) {
        if (reason.find(name) != std::string::npos) return true;
      }
    }
    return admitted_early;
  });
  EXPECT_FALSE(admitted_early) << Logs();
  ASSERT_TRUE(WaitFor([&] { return Evaluated("bucket") == 3 && Evaluated("folder") == 3; },
                      seconds(240), milliseconds(500)))
      << Cli({"checkpoints", "bucket"}).dump(2) << Logs();
  const json checkpoints = Cli({"checkpoints", "bucket"});
  for (const auto& c : checkpoints["checkpoints"]) {
    if (c["step"] == 300) {
      EXPECT_GE(c["admitted_unix_ms"].get<int64_t>(), last_started_ms) << c.dump();
    }
  }
  EXPECT_LE(FolderBytes(cache_dir), cache_limit);

  // Exactly one job per checkpoint, done on its first lease.
  std::multiset<uint64_t> job_steps;
  const json jobs = Cli({"jobs", "--run", "bucket"});
  for (const auto& j : jobs["jobs"]) {
    EXPECT_EQ(j["state"], "done") << j.dump();
    EXPECT_EQ(j["attempts"], 1) << j.dump();
    job_steps.insert(j["steps"][0].get<uint64_t>());
  }
  EXPECT_EQ(job_steps, (std::multiset<uint64_t>{100, 200, 300}));

  // The bucket run's scores are the folder run's, to the last bit.
  const auto bucket_scores = services_.Scores("bucket");
  EXPECT_EQ(bucket_scores.size(), 3u);
  EXPECT_EQ(bucket_scores, services_.Scores("folder"));

  // Nothing of the credentials is kept or shown.
  const json shown = Cli({"runs", "show", "bucket"});
  EXPECT_THAT(shown.dump(), ::testing::Not(HasSubstr(S3rver::Credentials().secret_access_key)));
  EXPECT_THAT(shown.dump(), HasSubstr(s3_->endpoint()));
}

TEST_F(S3EndToEndTest, AnEndpointThatGoesDownIsReportedAndTheRunRecovers) {
  WriteLocal(100);
  WriteLocal(200);
  Upload(100);
  StartServer();
  AddBucketRun("flaky");
  StartWorker({"--cache_dir", tmp_ / "cache"});
  ASSERT_TRUE(WaitFor([&] { return Evaluated("flaky") == 1; }, seconds(240), milliseconds(500)))
      << Logs();

  s3_->Stop();
  json run;
  ASSERT_TRUE(WaitFor([&] {
    run = Cli({"runs", "show", "flaky"});
    return !run.value("source_error", std::string()).empty();
  }, seconds(60), milliseconds(300))) << run.dump(2) << Logs();
  EXPECT_THAT(run["source_error"].get<std::string>(), HasSubstr(kBucket)) << run.dump(2);
  EXPECT_THAT(run["source_error"].get<std::string>(), HasSubstr(s3_->endpoint())) << run.dump(2);

  ASSERT_TRUE(s3_->Restart().ok()) << s3_->Logs();
  Upload(200);
  ASSERT_TRUE(WaitFor([&] { return Evaluated("flaky") == 2; }, seconds(240), milliseconds(500)))
      << Cli({"runs", "show", "flaky"}).dump(2) << Logs();
  EXPECT_EQ(Cli({"runs", "show", "flaky"}).value("source_error", std::string()), "");
  EXPECT_TRUE(worker_->running()) << worker_->Logs();
}

TEST_F(S3EndToEndTest, WrongCredentialsNameTheBucketAndTheStatus) {
  WriteLocal(100);
  Upload(100);
  setenv("AWS_ACCESS_KEY_ID", "AKIDNOTKNOWNTOTHESERVER", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-either", 1);
  StartServer();
  CommandResult add = RawCli({"runs", "add", "denied", "--source", BucketSource(),
                              "--s3_endpoint", s3_->endpoint(), "--tasks",
                              tmp_ / "tasks/arith_mc.jsonl"});
  std::string error;
  if (add.exit_code != 0) {
    error = add.err;  // refused at creation
  } else {
    json run;
    EXPECT_TRUE(WaitFor([&] {
      run = Cli({"runs", "show", "denied"});
      return !run.value("source_error", std::string()).empty();
    }, seconds(60), milliseconds(300))) << run.dump(2) << Logs();
    error = run.value("source_error", std::string());
  }
  EXPECT_THAT(error, HasSubstr(kBucket));
  EXPECT_THAT(error, HasSubstr("403"));
  EXPECT_THAT(error, ::testing::Not(HasSubstr("not-the-secret-either")));
  EXPECT_THAT(services_.coordinator().Logs(), ::testing::Not(HasSubstr("not-the-secret-either")));
}

}  // namespace
}  // namespace steadyeval::testing
