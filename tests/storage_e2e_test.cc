// Storage faults with the real steadyeval-server binary (issue 16 item 4):
//   - the data dir on a small tmpfs that fills up while a worker reports: the server stays
//     up, the report fails retryably and commits nothing, and the same report lands once a
//     filler file is deleted, without a restart. Once with the default free-space reserve
//     (the write is refused before RocksDB sees it), once with the reserve off so RocksDB
//     itself hits ENOSPC (the path that aborted Debian's librocksdb before);
//   - a write-ahead log with bytes flipped in its middle: the server refuses to start,
//     naming the file;
//   - `steadyeval backup` on a live server and `steadyeval-server restore` offline.
// The test plays the worker over gRPC (no model needed). Mounting a tmpfs needs root (CI
// runs as root); without it those tests are skipped, saying why.
#include <signal.h>
#include <sys/statvfs.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "server/health_probe.h"
#include "testing/files.h"
#include "testing/http.h"
#include "testing/temp_dir.h"
#include "testing/wait.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "steadyeval/v1/eval_service.grpc.pb.h"
#include "api/protocol.h"
#include "steadyeval/v1/worker_service.grpc.pb.h"
#include "testing/process.h"

namespace steadyeval::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;

constexpr int kExamples = 4;
constexpr size_t kOutputBytes = 16 << 10;  // per example: a report of 64 KiB

// A generation task of kExamples samples (exact_match; the outputs the test reports are
// long garbage, so every score is 0).
std::string TaskJson() {
  json task = {{"instruction", "repeat"},
               {"output_length", 8},
               {"metrics", {"exact_match"}},
               {"few_shots", json::array({{{"input", "a"}, {"output", "a"}}})},
               {"samples", json::array()}};
  for (int i = 0; i < kExamples; ++i) {
    task["samples"].push_back({{"input", absl::StrCat("q", i)}, {"output", absl::StrCat(i)}});
  }
  return task.dump();
}

// A complete checkpoint as the completeness check sees it: config.json and a
// model.safetensors whose one tensor ends at the end of the file.
void WriteCheckpoint(const fs::path& dir) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"model_type": "llama"})";
  std::string header = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string file(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  file += header;
  file.append(4, '\0');
  std::ofstream(dir / "model.safetensors", std::ios::binary) << file;
}

uint64_t FreeBytes(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

// Appends to `path` until only `leave` bytes are free on its filesystem (0: until the
// write fails with ENOSPC).
void Fill(const std::string& path, uint64_t leave) {
  FILE* f = fopen(path.c_str(), "ab");
  ASSERT_NE(f, nullptr) << path;
  std::string chunk(4096, 'f');
  while (true) {
    const uint64_t free = FreeBytes(fs::path(path).parent_path().string());
    if (leave > 0 && free <= leave + chunk.size()) break;
    if (fwrite(chunk.data(), 1, chunk.size(), f) != chunk.size() || fflush(f) != 0) break;
  }
  fclose(f);
}

class StorageEndToEndTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (server_.pid() > 0 && server_.running()) server_.Stop(SIGTERM);
    if (mounted_) {
      CommandResult r = RunCommand({"/bin/umount", "-l", mount_});
      EXPECT_EQ(r.exit_code, 0) << r.err;
    }
  }

  // Mounts a tmpfs of `size` at tmp_/tmpfs; false when that is not permitted.
  bool MountTmpfs(const std::string& size, std::string* why) {
    mount_ = tmp_ / "tmpfs";
    fs::create_directories(mount_);
    CommandResult r =
        RunCommand({"/bin/mount", "-t", "tmpfs", "-o", absl::StrCat("size=", size), "tmpfs", mount_});
    if (r.exit_code != 0) {
      *why = absl::StrCat("cannot mount a ", size, " tmpfs at ", mount_,
                          " (needs root or CAP_SYS_ADMIN; CI runs as root): ", r.err);
      return false;
    }
    mounted_ = true;
    return true;
  }

  void StartServer(const std::string& data_dir, std::vector<std::string> extra = {}) {
    const std::string ready = tmp_ / "ready.json";
    fs::remove(ready);
    std::vector<std::string> argv = {BinDir() + "/steadyeval-server", "--data_dir", data_dir,
                                     "--listen", "127.0.0.1:0", "--metrics_listen",
                                     "127.0.0.1:0", "--ready_file", ready,
                                     "--poll_interval_ms", "100", "--lease_ttl_ms", "60000"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto server = ChildProcess::Start(argv, tmp_ / absl::StrCat("server", ++starts_));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_TRUE(WaitFor([&] { return fs::exists(ready) && fs::file_size(ready) > 0; }, seconds(30)))
        << server_.Logs();
    json info = json::parse(ReadFileOrEmpty(ready));
    addr_ = info["grpc"].get<std::string>();
    metrics_ = info["metrics"].get<std::string>();
    channel_ = grpc::CreateChannel(addr_, grpc::InsecureChannelCredentials());
    worker_ = v1::WorkerService::NewStub(channel_);
  }

  CommandResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {BinDir() + "/steadyeval", "--server", addr_});
    return RunCommand(args);
  }

  // Creates run "r" watching tmp_/ckpt (one checkpoint, step 100) and leases its job as
  // worker "w1".
  void CreateRunAndLease() {
    WriteCheckpoint(tmp_ / "ckpt/step_000100");
    const std::string task = tmp_ / "gen.json";
    std::ofstream(task) << TaskJson();
    CommandResult created = Cli({"runs", "add", "r", "--source", tmp_ / "ckpt", "--tasks", task,
                                 "--settle_seconds", "0.1"});
    ASSERT_EQ(created.exit_code, 0) << created.err;
    grpc::ClientContext register_ctx;
    v1::RegisterWorkerRequest worker;
    worker.set_worker_id("w1");
    worker.set_protocol_version(kProtocolVersion);
    v1::RegisterWorkerResponse registered;
    ASSERT_TRUE(worker_->RegisterWorker(&register_ctx, worker, &registered).ok());
    ASSERT_TRUE(WaitFor(
        [&] {
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + seconds(10));
          v1::AcquireJobRequest request;
          request.set_worker_id("w1");
          request.set_wait_ms(1000);
          v1::AcquireJobResponse response;
          if (!worker_->AcquireJob(&ctx, request, &response).ok()) return false;
          if (response.has_job()) lease_ = response.lease();
          return response.has_job();
        },
        seconds(30), milliseconds(10)))
        << server_.Logs();
  }

  grpc::Status Report(v1::ReportResultsResponse* response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(30));
    auto writer = worker_->ReportResults(&ctx, response);
    v1::ReportResultsRequest r;
    r.set_worker_id("w1");
    r.set_job_id(lease_.job().id());
    r.set_epoch(lease_.job().epoch());
    r.set_lease_secret(lease_.lease_secret());
    r.set_step(lease_.job().steps(0));
    *r.mutable_task() = lease_.task_headers(0).ref();
    for (int i = 0; i < kExamples; ++i) {
      v1::ExampleOutput* o = r.add_outputs();
      o->set_index(i);
      o->set_output(std::string(kOutputBytes, static_cast<char>('a' + i)));
    }
    r.set_task_complete(true);
    writer->Write(r);
    writer->WritesDone();
    return writer->Finish();
  }

  json Jobs() {
    CommandResult r = Cli({"jobs", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out, nullptr, false);
  }

  std::string Metrics() {
    return HttpGet(std::stoi(metrics_.substr(metrics_.rfind(':') + 1)), "/metrics");
  }

  // The disk fills during the report; `fill_to` bytes are left free. Checks the refusal,
  // then frees the space and checks the same report lands.
  void ReportDuringDiskFull(uint64_t fill_to, grpc::StatusCode expected_code,
                            const std::string& expected_reason) {
    ASSERT_NO_FATAL_FAILURE(CreateRunAndLease());
    const std::string filler = mount_ + "/filler";
    ASSERT_NO_FATAL_FAILURE(Fill(filler, fill_to));

    v1::ReportResultsResponse response;
    grpc::Status refused = Report(&response);
    EXPECT_EQ(refused.error_code(), expected_code) << refused.error_message();
    EXPECT_THAT(refused.error_message(), HasSubstr("storage: "));
    ASSERT_TRUE(server_.running()) << "the server died on a full disk:\n" << server_.Logs();
    // Reads answer; nothing of the report is visible; the job is still leased, attempt 1.
    json jobs = Jobs();
    ASSERT_EQ(jobs["jobs"].size(), 1u) << jobs.dump(2);
    EXPECT_EQ(jobs["jobs"][0]["state"], "leased") << jobs.dump(2);
    EXPECT_EQ(jobs["jobs"][0]["attempts"], 1) << jobs.dump(2);
    CommandResult scores = Cli({"scores", "r", "--json"});
    EXPECT_EQ(scores.exit_code, 0) << scores.err;
    EXPECT_THAT(scores.out, ::testing::Not(HasSubstr("\"step\"")));
    EXPECT_EQ(CheckServing(channel_, 10).value_or(ServingStatus::kUnknown),
              ServingStatus::kNotServing);
    const std::string metrics = HttpOkBody(Metrics());
    EXPECT_EQ(SampleValue(metrics, "steadyeval_storage_healthy"), 0.0) << metrics;
    EXPECT_THAT(SampleValue(metrics, absl::StrCat("steadyeval_storage_writes_refused_total{reason=\"",
                                                  expected_reason, "\"}")),
                ::testing::Optional(::testing::Ge(1.0)))
        << metrics;

    // Space returns: the same report lands, on the same server process.
    ASSERT_TRUE(fs::remove(filler));
    grpc::Status accepted = Report(&response);
    ASSERT_TRUE(accepted.ok()) << accepted.error_message() << "\n" << server_.Logs();
    EXPECT_EQ(response.predictions_written(), static_cast<uint32_t>(kExamples));
    jobs = Jobs();
    EXPECT_EQ(jobs["jobs"][0]["state"], "done") << jobs.dump(2);
    EXPECT_EQ(jobs["jobs"][0]["attempts"], 1) << jobs.dump(2);
    EXPECT_TRUE(WaitFor(
        [&] {
          return CheckServing(channel_, 10).value_or(ServingStatus::kUnknown) ==
                 ServingStatus::kServing;
        },
        seconds(10)));
    EXPECT_EQ(SampleValue(HttpOkBody(Metrics()), "steadyeval_storage_healthy"), 1.0);
    EXPECT_THAT(server_.Logs(), HasSubstr("storage healthy again"));
  }

  TempDir tmp_;
  std::string mount_;
  bool mounted_ = false;
  int starts_ = 0;
  ChildProcess server_;
  std::string addr_;
  std::string metrics_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkerService::Stub> worker_;
  v1::LeasedJob lease_;
};

TEST_F(StorageEndToEndTest, DiskFillsBelowTheReserveDuringAReport) {
  std::string why;
  if (!MountTmpfs("4m", &why)) GTEST_SKIP() << why;
  ASSERT_NO_FATAL_FAILURE(StartServer(mount_ + "/data"));
  // 512 KiB left: under the default 1 MiB reserve, so the store refuses the write itself.
  ReportDuringDiskFull(512 << 10, grpc::StatusCode::RESOURCE_EXHAUSTED, "reserve");
}

TEST_F(StorageEndToEndTest, DiskFullInsideRocksDbDuringAReport) {
  std::string why;
  if (!MountTmpfs("4m", &why)) GTEST_SKIP() << why;
  // No reserve: the report's write reaches RocksDB and its write-ahead log hits ENOSPC.
  ASSERT_NO_FATAL_FAILURE(StartServer(mount_ + "/data", {"--storage_reserve_bytes", "0"}));
  ReportDuringDiskFull(0, grpc::StatusCode::RESOURCE_EXHAUSTED, "no_space");
}

TEST_F(StorageEndToEndTest, DamagedLogRefusesToStartNamingIt) {
  const std::string data = tmp_ / "data";
  ASSERT_NO_FATAL_FAILURE(StartServer(data));
  ASSERT_NO_FATAL_FAILURE(CreateRunAndLease());
  ASSERT_EQ(server_.Stop(SIGTERM), 0) << server_.Logs();
  std::vector<fs::path> logs;
  for (const auto& entry : fs::directory_iterator(data)) {
    if (entry.path().extension() == ".log") logs.push_back(entry.path());
  }
  ASSERT_FALSE(logs.empty());
  std::sort(logs.begin(), logs.end());
  const fs::path newest = logs.back();
  {
    std::fstream f(newest, std::ios::in | std::ios::out | std::ios::binary);
    const auto middle = static_cast<std::streamoff>(fs::file_size(newest) / 2);
    f.seekp(middle);
    f.write("\xde\xad\xbe\xef", 4);
    ASSERT_TRUE(f);
  }
  CommandResult start = RunCommand({BinDir() + "/steadyeval-server", "--data_dir", data,
                                    "--listen", "127.0.0.1:0", "--metrics_listen", "127.0.0.1:0"},
                                   60);
  EXPECT_EQ(start.exit_code, 1) << start.out << start.err;
  EXPECT_THAT(start.err, HasSubstr(newest.string()));
  EXPECT_THAT(start.err, HasSubstr("steadyeval-server restore --from"));
}

TEST_F(StorageEndToEndTest, BackupOnALiveServerRestoresOffline) {
  ASSERT_NO_FATAL_FAILURE(StartServer(tmp_ / "data"));
  ASSERT_NO_FATAL_FAILURE(CreateRunAndLease());
  v1::ReportResultsResponse reported;
  ASSERT_TRUE(Report(&reported).ok());
  const std::string scores_before = Cli({"scores", "r", "--json"}).out;
  ASSERT_THAT(scores_before, HasSubstr("\"step\""));

  CommandResult backup = Cli({"backup", "--to", tmp_ / "backup"});
  ASSERT_EQ(backup.exit_code, 0) << backup.err;
  EXPECT_THAT(backup.out, HasSubstr("backup 1 written to " + std::string(tmp_ / "backup")));
  ASSERT_EQ(server_.Stop(SIGTERM), 0) << server_.Logs();

  const std::vector<std::string> restore = {BinDir() + "/steadyeval-server", "restore", "--from",
                                            tmp_ / "backup", "--data_dir", tmp_ / "restored"};
  CommandResult restored = RunCommand(restore, 120);
  ASSERT_EQ(restored.exit_code, 0) << restored.out << restored.err;
  EXPECT_THAT(restored.out, HasSubstr("restored backup 1"));
  CommandResult again = RunCommand(restore, 120);
  EXPECT_NE(again.exit_code, 0);
  EXPECT_THAT(again.err, HasSubstr("is not empty"));

  ASSERT_NO_FATAL_FAILURE(StartServer(tmp_ / "restored"));
  EXPECT_EQ(Cli({"scores", "r", "--json"}).out, scores_before);
  json jobs = Jobs();
  ASSERT_EQ(jobs["jobs"].size(), 1u);
  EXPECT_EQ(jobs["jobs"][0]["state"], "done");
}

}  // namespace
}  // namespace steadyeval::testing
