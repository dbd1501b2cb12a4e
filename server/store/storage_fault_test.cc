// Storage faults (DESIGN §8, issue 16 item 4): a disk that fills up or fails writes, a
// damaged write-ahead log or table file, and backups. The faults are injected with
// FaultInjectingFileSystem (server/store/fault_fs.h) under the real RocksDB; a real full disk
// (tmpfs) with the real binaries is tests/storage_e2e_test.cc.
#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "server/health_probe.h"
#include "testing/status_matchers.h"
#include "testing/http.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/coordinator_fixture.h"
#include "server/store/fault_fs.h"
#include "absl/synchronization/notification.h"
#include "api/protocol.h"
#include "common/sha256.h"
#include "server/rpc/server.h"
#include "server/store/store.h"
#include "server/store/store_logger.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::CoordinatorFixture;
using ::steadyeval::testing::FakeCheckpoints;
using ::steadyeval::testing::HttpGet;
using ::steadyeval::testing::HttpOkBody;
using ::steadyeval::testing::McTaskFile;
using ::steadyeval::testing::SampleValue;
using ::steadyeval::testing::StatusIs;

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::_;

int Refused(const Store& store, Store::Refusal reason) {
  return static_cast<int>(store.GetHealth().refused[static_cast<int>(reason)]);
}

v1::Run MakeRun(const std::string& name, size_t padding = 0) {
  v1::Run run;
  run.mutable_config()->set_name(name);
  run.mutable_config()->set_source("/ckpt/" + name + std::string(padding, 'x'));
  return run;
}

std::vector<std::string> RunNames(const Store& store) {
  std::vector<std::string> names;
  absl::Status s = store.ScanRuns("", 0, [&](const v1::Run& run) {
    names.push_back(run.config().name());
    return true;
  });
  EXPECT_OK(s);
  return names;
}

std::string TestDir(const std::string& prefix) {
  const fs::path dir =
      fs::path(::testing::TempDir()) /
      (prefix + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// Files in `dir` with `extension`, by name (RocksDB numbers files in creation order).
std::vector<fs::path> FilesWithExtension(const std::string& dir, const std::string& extension) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == extension) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

void FlipBytes(const fs::path& file, uint64_t offset, int count) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f) << file;
  for (int i = 0; i < count; ++i) {
    f.seekg(static_cast<std::streamoff>(offset + i));
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(~c);
    f.seekp(static_cast<std::streamoff>(offset + i));
    f.write(&c, 1);
  }
  ASSERT_TRUE(f) << file;
}

// ---- the store under injected faults ----------------------------------------------------

class StoreFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TestDir("store_fault_");
    fault_fs_ = std::make_shared<FaultInjectingFileSystem>();
    options_.file_system = fault_fs_;
  }
  void TearDown() override {
    store_.reset();
    if (!HasFailure()) fs::remove_all(dir_);  // kept for inspection (RocksDB's LOG)
  }
  void Open() {
    store_.reset();
    auto store = Store::Open(dir_ + "/db", options_);
    ASSERT_OK(store);
    store_ = std::move(*store);
  }
  absl::Status PutRun(const std::string& name) {
    Store::Batch batch = store_->NewBatch();
    batch.PutRun(MakeRun(name));
    return store_->Commit(std::move(batch));
  }

  std::string dir_;
  std::shared_ptr<FaultInjectingFileSystem> fault_fs_;
  StoreOptions options_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreFaultTest, WritesBelowTheReserveAreRefusedWhileReadsAnswer) {
  options_.reserve_bytes = 1 << 20;
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_OK(PutRun("before"));
  ASSERT_TRUE(store_->GetHealth().healthy);

  fault_fs_->SetFreeSpace(600 << 10);  // 600 KiB free: under the 1 MiB reserve
  absl::Status refused = PutRun("during");
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kResourceExhausted,
                                AllOf(HasSubstr("storage: "), HasSubstr(dir_ + "/db"),
                                      HasSubstr("614400 bytes free"),
                                      HasSubstr("reserve of 1048576 bytes"))));
  EXPECT_EQ(Refused(*store_, Store::Refusal::kReserve), 1);
  Store::Health health = store_->GetHealth();
  EXPECT_FALSE(health.healthy);
  EXPECT_EQ(health.free_bytes, 600u << 10);
  EXPECT_THAT(health.reason, HasSubstr("reserve"));
  // Reads keep answering; the refused write left nothing.
  EXPECT_THAT(RunNames(*store_), ::testing::ElementsAre("before"));
  EXPECT_OK(store_->GetRun("before").status());

  fault_fs_->SetFreeSpace(std::nullopt);  // space is back
  ASSERT_OK(PutRun("after"));
  EXPECT_TRUE(store_->GetHealth().healthy);
  EXPECT_THAT(RunNames(*store_), ::testing::ElementsAre("after", "before"));
}

TEST_F(StoreFaultTest, ZeroReserveTurnsTheCheckOff) {
  options_.reserve_bytes = 0;
  ASSERT_NO_FATAL_FAILURE(Open());
  fault_fs_->SetFreeSpace(0);
  EXPECT_OK(PutRun("r"));
  EXPECT_TRUE(store_->GetHealth().healthy);
}

TEST_F(StoreFaultTest, TableFilesAtTheSstLimitRefuseWrites) {
  options_.max_sst_bytes = 1;  // any table file reaches it
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_OK(PutRun("before"));  // in the write-ahead log and memtable: no table file yet
  store_->Flush().IgnoreError();  // RocksDB may report the limit on the flush itself
  EXPECT_THAT(PutRun("after"), StatusIs(absl::StatusCode::kResourceExhausted,
                                        HasSubstr("--storage_max_sst_bytes")));
  EXPECT_EQ(Refused(*store_, Store::Refusal::kSstLimit), 1);
  EXPECT_FALSE(store_->GetHealth().healthy);
  EXPECT_THAT(RunNames(*store_), ::testing::ElementsAre("before"));
}

// The failure RocksDB turns into a stopped database ("hard error"), on a write or on the
// sync after it (the path of the reported abort): refused with RESOURCE_EXHAUSTED, never
// applied, and resumed by the next write once the disk works again, without a restart.
class FailedLogWriteTest : public StoreFaultTest,
                           public ::testing::WithParamInterface<FaultInjectingFileSystem::Ops> {};

TEST_P(FailedLogWriteTest, IsRefusedThenResumedWithoutRestart) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_OK(PutRun("before"));

  fault_fs_->FailWrites(rocksdb::IOStatus::NoSpace("injected: disk full"), "", GetParam());
  EXPECT_THAT(PutRun("lost"), StatusIs(absl::StatusCode::kResourceExhausted,
                                       AllOf(HasSubstr("storage: "), HasSubstr("out of space"))));
  EXPECT_GT(fault_fs_->failed_writes(), 0u);
  // RocksDB has stopped writes; the next one is refused as well, even a small one.
  EXPECT_THAT(PutRun("still"), StatusIs(absl::StatusCode::kResourceExhausted, ::testing::_));
  EXPECT_FALSE(store_->GetHealth().healthy);
  EXPECT_GE(Refused(*store_, Store::Refusal::kNoSpace), 2);
  EXPECT_THAT(RunNames(*store_), ::testing::ElementsAre("before"));

  fault_fs_->Heal();
  ASSERT_OK(PutRun("after"));  // resumes RocksDB first
  EXPECT_TRUE(store_->GetHealth().healthy);
  EXPECT_THAT(RunNames(*store_), ::testing::ElementsAre("after", "before"));

  // Everything acknowledged survives a reopen; nothing refused appears.
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_THAT(RunNames(*store_), ::testing::ElementsAre("after", "before"));
}

INSTANTIATE_TEST_SUITE_P(WriteOrSync, FailedLogWriteTest,
                         ::testing::Values(FaultInjectingFileSystem::kWrite,
                                           FaultInjectingFileSystem::kSync),
                         [](const ::testing::TestParamInfo<FaultInjectingFileSystem::Ops>& p) {
                           return p.param == FaultInjectingFileSystem::kWrite ? "Write" : "Sync";
                         });

// RocksDB 7.8 treats any other error writing its log (e.g. EIO) as fatal: it resumes from
// it only through a restart. Writes are refused with UNAVAILABLE saying so; reads answer;
// a restart loses nothing committed.
TEST_F(StoreFaultTest, OtherWriteErrorsAreUnavailableUntilRestart) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_OK(PutRun("before"));
  fault_fs_->FailWrites(rocksdb::IOStatus::IOError("injected: bad sector"));
  EXPECT_THAT(PutRun("lost"),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("storage: "), HasSubstr("injected: bad sector"))));
  EXPECT_EQ(Refused(*store_, Store::Refusal::kWriteError), 1);
  fault_fs_->Heal();
  EXPECT_THAT(PutRun("after"), StatusIs(absl::StatusCode::kUnavailable,
                                        HasSubstr("restart steadyeval-server")));
  EXPECT_THAT(RunNames(*store_), ::testing::ElementsAre("before"));

  ASSERT_NO_FATAL_FAILURE(Open());  // the restart
  ASSERT_OK(PutRun("after"));
  EXPECT_THAT(RunNames(*store_), ::testing::ElementsAre("after", "before"));
}

TEST_F(StoreFaultTest, RefreshHealthResumesWithoutAWriteAndTellsTheObserver) {
  ASSERT_NO_FATAL_FAILURE(Open());
  std::vector<bool> changes;
  store_->SetHealthObserver([&](bool healthy, const std::string&) { changes.push_back(healthy); });
  fault_fs_->FailWrites(rocksdb::IOStatus::NoSpace("injected"));
  EXPECT_FALSE(PutRun("lost").ok());
  store_->RefreshHealth();  // the fault is still there: resuming fails, still unhealthy
  EXPECT_FALSE(store_->GetHealth().healthy);

  fault_fs_->Heal();
  store_->RefreshHealth();
  EXPECT_TRUE(store_->GetHealth().healthy);
  EXPECT_THAT(changes, ::testing::ElementsAre(false, true));
  // Resumed: the next write goes straight through.
  EXPECT_OK(PutRun("after"));

  fault_fs_->SetFreeSpace(10);  // below the reserve: unhealthy before any write
  store_->RefreshHealth();
  EXPECT_FALSE(store_->GetHealth().healthy);
  EXPECT_THAT(store_->GetHealth().reason, HasSubstr("reserve"));
  store_->SetHealthObserver(nullptr);
}

// ---- RocksDB's info log ------------------------------------------------------------------

TEST(StoreLoggerTest, NamesTheFilesALineBlames) {
  EXPECT_THAT(StoreLogger::FilesNamedIn(
                  "2026/12/06-07:52:58.715006 29592 [WARN] [db/db_impl/db_impl_open.cc:982] "
                  "/data/db/000004.log: dropping 14129 bytes; Corruption: bad record length"),
              ::testing::ElementsAre("000004.log"));
  EXPECT_THAT(StoreLogger::FilesNamedIn("Corruption: block checksum mismatch: stored = 1, "
                                        "computed = 2, type = 4  in /d/000009.sst offset 0 size 7"),
              ::testing::ElementsAre("000009.sst"));
  EXPECT_THAT(StoreLogger::FilesNamedIn("MANIFEST-000005 and LOG and x.log"),
              ::testing::ElementsAre("MANIFEST-000005"));
}

TEST(StoreLoggerTest, WritesLinesAndRotatesPastItsLimit) {
  const std::string dir = TestDir("store_logger_");
  auto logger = StoreLogger::Open(dir, /*max_bytes=*/200);
  ASSERT_OK(logger);
  for (int i = 0; i < 10; ++i) {
    rocksdb::Log(rocksdb::InfoLogLevel::INFO_LEVEL, *logger, "line %d of forty characters", i);
  }
  rocksdb::Log(rocksdb::InfoLogLevel::WARN_LEVEL, *logger, "x.log: Corruption: bad");
  EXPECT_LE(fs::file_size(dir + "/LOG"), 200u);
  EXPECT_TRUE(fs::exists(dir + "/LOG.old"));
  ASSERT_EQ((*logger)->CorruptionLines().size(), 1u);
  EXPECT_THAT((*logger)->CorruptionLines()[0], HasSubstr("[WARN] x.log: Corruption: bad"));
  EXPECT_EQ((*logger)->dropped_lines(), 0u);
  fs::remove_all(dir);
}

// ---- recovery from a damaged write-ahead log or table file -------------------------------

class StoreRecoveryTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = TestDir("store_recovery_") + "/db"; }
  void TearDown() override { fs::remove_all(fs::path(dir_).parent_path()); }
  // Commits runs r000..r(n-1), one batch each, and closes the store (RocksDB does not
  // flush on close: they stay in the newest .log).
  void WriteRuns(int n, size_t padding = 0) {
    auto store = Store::Open(dir_);
    ASSERT_OK(store);
    for (int i = 0; i < n; ++i) {
      char name[16];
      snprintf(name, sizeof(name), "r%03d", i);
      Store::Batch batch = (*store)->NewBatch();
      batch.PutRun(MakeRun(name, padding));
      ASSERT_OK((*store)->Commit(std::move(batch)));
    }
  }
  std::string dir_;
};

TEST_F(StoreRecoveryTest, FlippedBytesInTheMiddleOfTheNewestLogRefuseToOpen) {
  ASSERT_NO_FATAL_FAILURE(WriteRuns(100, 200));
  const std::vector<fs::path> logs = FilesWithExtension(dir_, ".log");
  ASSERT_FALSE(logs.empty());
  const fs::path newest = logs.back();
  ASSERT_GT(fs::file_size(newest), 10'000u);
  ASSERT_NO_FATAL_FAILURE(FlipBytes(newest, fs::file_size(newest) / 2, 4));

  auto store = Store::Open(dir_);
  // Never a silent rollback to the records before the damage (RocksDB's default,
  // kPointInTimeRecovery, opens here with about half of the runs).
  EXPECT_THAT(store.status(),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(newest.string()), HasSubstr("Corruption"),
                             HasSubstr("steadyeval-server restore --from"))));
}

TEST_F(StoreRecoveryTest, TornTailOfTheNewestLogIsDropped) {
  ASSERT_NO_FATAL_FAILURE(WriteRuns(20, 200));
  const fs::path newest = FilesWithExtension(dir_, ".log").back();
  // What a crash in the middle of the last write leaves: its record cut short.
  fs::resize_file(newest, fs::file_size(newest) - 50);

  auto store = Store::Open(dir_);
  ASSERT_OK(store);
  std::vector<std::string> names = RunNames(**store);
  ASSERT_EQ(names.size(), 19u);  // every run but the torn last one
  EXPECT_EQ(names.front(), "r000");
  EXPECT_EQ(names.back(), "r018");
}

TEST_F(StoreRecoveryTest, DamagedTableBlockIsReportedNamingTheFile) {
  {
    auto store = Store::Open(dir_);
    ASSERT_OK(store);
    Store::Batch batch = (*store)->NewBatch();
    for (int i = 0; i < 50; ++i) batch.PutRun(MakeRun("run" + std::to_string(i), 500));
    ASSERT_OK((*store)->Commit(std::move(batch)));
    ASSERT_OK((*store)->Flush());
  }
  // The runs' table file is the largest; its first data block starts at offset 0.
  std::vector<fs::path> tables = FilesWithExtension(dir_, ".sst");
  ASSERT_FALSE(tables.empty());
  const fs::path runs = *std::max_element(tables.begin(), tables.end(), [](const auto& a, const auto& b) {
    return fs::file_size(a) < fs::file_size(b);
  });
  ASSERT_NO_FATAL_FAILURE(FlipBytes(runs, 10, 4));

  auto store = Store::Open(dir_);
  absl::Status status = store.status();
  if (store.ok()) {
    status = (*store)->ScanRuns("", 0, [](const v1::Run&) { return true; });
  }
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kDataLoss,
                               AllOf(HasSubstr(runs.filename().string()),
                                     HasSubstr("checksum mismatch"),
                                     HasSubstr("restore"))));
}

// ---- backup and restore ------------------------------------------------------------------

TEST(StoreBackupTest, RestoresTheLatestBackupWithEverythingCommitted) {
  const std::string root = TestDir("store_backup_");
  auto store = Store::Open(root + "/db");
  ASSERT_OK(store);
  auto put = [&](const std::string& name) {
    Store::Batch batch = (*store)->NewBatch();
    batch.PutRun(MakeRun(name));
    return (*store)->Commit(std::move(batch));
  };
  ASSERT_OK(put("a"));
  ASSERT_OK_AND_ASSIGN(Store::BackupResult first, (*store)->Backup(root + "/backups"));
  EXPECT_EQ(first.backup_id, 1u);
  EXPECT_EQ(first.path, root + "/backups");
  EXPECT_GT(first.bytes, 0u);
  ASSERT_OK(put("b"));  // in the write-ahead log only: the backup must carry it
  ASSERT_OK_AND_ASSIGN(Store::BackupResult second, (*store)->Backup(root + "/backups"));
  EXPECT_EQ(second.backup_id, 2u);
  ASSERT_OK(put("c"));  // after the backup: not in it

  EXPECT_THAT((*store)->Backup(root + "/db/inside").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("inside the data dir")));

  ASSERT_OK_AND_ASSIGN(Store::RestoreResult restored,
                       Store::Restore(root + "/backups", root + "/restored"));
  EXPECT_EQ(restored.backup_id, 2u);
  auto copy = Store::Open(root + "/restored");
  ASSERT_OK(copy);
  EXPECT_THAT(RunNames(**copy), ::testing::ElementsAre("a", "b"));

  EXPECT_THAT(Store::Restore(root + "/backups", root + "/restored").status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("is not empty")));
  fs::create_directories(root + "/empty");
  EXPECT_THAT(Store::Restore(root + "/empty", root + "/other").status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no backup in")));
  EXPECT_THAT(Store::Restore(root + "/missing", root + "/other").status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("does not exist")));
  copy->reset();
  store->reset();
  fs::remove_all(root);
}

// ---- the coordinator and its services under storage faults -------------------------------

class StorageFaultServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = TestDir("storage_fault_server_");
    fs::create_directories(fs::path(root_) / "ckpt");
    fault_fs_ = std::make_shared<FaultInjectingFileSystem>();
    ServerOptions options;
    options.data_dir = root_ + "/db";
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "127.0.0.1:0";
    options.discovery = checkpoints_.Factory();
    options.start_background = false;  // the test drives polling and health checks
    options.store.file_system = fault_fs_;
    auto server = CoordinatorServer::Start(options);
    ASSERT_OK(server);
    server_ = std::move(*server);
    channel_ = grpc::CreateChannel(server_->grpc_address(), grpc::InsecureChannelCredentials());
    eval_ = v1::EvalService::NewStub(channel_);
    worker_ = v1::WorkerService::NewStub(channel_);

    grpc::ClientContext ctx;
    v1::CreateRunRequest run;
    run.mutable_config()->set_name("r");
    run.mutable_config()->set_source(root_ + "/ckpt");
    *run.add_task_files() = McTaskFile();
    v1::Run created;
    ASSERT_TRUE(eval_->CreateRun(&ctx, run, &created).ok());
    grpc::ClientContext register_ctx;
    v1::RegisterWorkerRequest worker;
    worker.set_worker_id("w1");
    worker.set_protocol_version(kProtocolVersion);
    v1::RegisterWorkerResponse registered;
    ASSERT_TRUE(worker_->RegisterWorker(&register_ctx, worker, &registered).ok());
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(root_);
  }

  v1::LeasedJob Lease() {
    grpc::ClientContext ctx;
    v1::AcquireJobRequest request;
    request.set_worker_id("w1");
    v1::AcquireJobResponse response;
    grpc::Status s = worker_->AcquireJob(&ctx, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_TRUE(response.has_job());
    return response.lease();
  }
  grpc::Status ReportMc(const v1::LeasedJob& lease, v1::ReportResultsResponse* response) {
    grpc::ClientContext ctx;
    auto writer = worker_->ReportResults(&ctx, response);
    v1::ReportResultsRequest r;
    r.set_worker_id("w1");
    r.set_job_id(lease.job().id());
    r.set_epoch(lease.job().epoch());
    r.set_lease_secret(lease.lease_secret());
    r.set_step(lease.job().steps(0));
    *r.mutable_task() = lease.task_headers(0).ref();
    for (uint32_t i = 0; i < 3; ++i) {
      v1::ExampleOutput* o = r.add_outputs();
      o->set_index(i);
      o->set_output(i == 0 ? "1" : "0");
    }
    r.set_task_complete(true);
    writer->Write(r);
    writer->WritesDone();
    return writer->Finish();
  }
  std::vector<v1::Job> Jobs() {
    grpc::ClientContext ctx;
    auto reader = eval_->ListJobs(&ctx, v1::ListJobsRequest());
    std::vector<v1::Job> jobs;
    v1::Job job;
    while (reader->Read(&job)) jobs.push_back(job);
    EXPECT_TRUE(reader->Finish().ok());
    return jobs;
  }
  int Predictions() {
    int n = 0;
    EXPECT_OK(server_->store()->ScanAllPredictions(
        "r", "", "", [&](const Store::PredictionKeyParts&, const v1::Prediction&) {
          ++n;
          return true;
        }));
    return n;
  }
  int Scores() {
    int n = 0;
    EXPECT_OK(server_->store()->ScanScores("r", "", [&](const v1::Score&) {
      ++n;
      return true;
    }));
    return n;
  }

  std::string root_;
  FakeCheckpoints checkpoints_;
  std::shared_ptr<FaultInjectingFileSystem> fault_fs_;
  std::unique_ptr<CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::EvalService::Stub> eval_;
  std::unique_ptr<v1::WorkerService::Stub> worker_;
};

TEST_F(StorageFaultServerTest, ReportDuringDiskFullFailsRetryablyAndLandsOnceSpaceReturns) {
  checkpoints_.Add("r", 100);
  ASSERT_OK(server_->coordinator()->PollRunsOnce());
  const v1::LeasedJob lease = Lease();
  ASSERT_EQ(lease.job().attempts(), 1u);
  EXPECT_EQ(CheckServing(channel_, 10).value_or(ServingStatus::kUnknown), ServingStatus::kServing);

  fault_fs_->FailWrites(rocksdb::IOStatus::NoSpace("injected: disk full"));
  v1::ReportResultsResponse response;
  grpc::Status refused = ReportMc(lease, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_THAT(refused.error_message(), HasSubstr("storage: "));

  // The server is up and answers reads; nothing of the report is visible; the job is
  // still leased to w1 on its first attempt (the refusal used up no attempt).
  std::vector<v1::Job> jobs = Jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].state(), v1::JOB_LEASED);
  EXPECT_EQ(jobs[0].epoch(), lease.job().epoch());
  EXPECT_EQ(jobs[0].attempts(), 1u);
  EXPECT_EQ(Predictions(), 0);
  EXPECT_EQ(Scores(), 0);
  // Health: NOT_SERVING, and the metrics say why.
  EXPECT_EQ(CheckServing(channel_, 10).value_or(ServingStatus::kUnknown), ServingStatus::kNotServing);
  const std::string metrics = HttpOkBody(HttpGet(server_->metrics_port(), "/metrics"));
  EXPECT_EQ(SampleValue(metrics, "steadyeval_storage_healthy"), 0.0);
  EXPECT_EQ(SampleValue(metrics, "steadyeval_storage_writes_refused_total{reason=\"no_space\"}"),
            1.0);
  // The worker keeps its lease by heartbeating (no write needed).
  grpc::ClientContext hb_ctx;
  v1::HeartbeatRequest hb;
  hb.set_worker_id("w1");
  hb.set_job_id(lease.job().id());
  hb.set_epoch(lease.job().epoch());
  hb.set_lease_secret(lease.lease_secret());
  v1::HeartbeatResponse hb_response;
  EXPECT_TRUE(worker_->Heartbeat(&hb_ctx, hb, &hb_response).ok());

  // Space returns: the same report now lands, without a restart.
  fault_fs_->Heal();
  grpc::Status accepted = ReportMc(lease, &response);
  ASSERT_TRUE(accepted.ok()) << accepted.error_message();
  EXPECT_EQ(response.predictions_written(), 3u);
  EXPECT_FALSE(response.replay());
  jobs = Jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].state(), v1::JOB_DONE);
  EXPECT_EQ(jobs[0].attempts(), 1u);
  EXPECT_EQ(Predictions(), 3);
  EXPECT_EQ(Scores(), 1);
  EXPECT_EQ(CheckServing(channel_, 10).value_or(ServingStatus::kUnknown), ServingStatus::kServing);
  EXPECT_EQ(SampleValue(HttpOkBody(HttpGet(server_->metrics_port(), "/metrics")),
                        "steadyeval_storage_healthy"),
            1.0);
}

TEST_F(StorageFaultServerTest, AdmissionRefusedForStorageIsRetriedAtTheNextPoll) {
  fault_fs_->FailWrites(rocksdb::IOStatus::NoSpace("injected: disk full"));
  checkpoints_.Add("r", 100);  // the discovery returns it once
  EXPECT_THAT(server_->coordinator()->PollRunsOnce(),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("retried at the next poll")));
  EXPECT_TRUE(Jobs().empty());

  fault_fs_->Heal();
  ASSERT_OK(server_->coordinator()->PollRunsOnce());
  std::vector<v1::Job> jobs = Jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].state(), v1::JOB_PENDING);
  EXPECT_EQ(jobs[0].attempts(), 0u);
}

TEST_F(StorageFaultServerTest, LeaseRefusedForStorageUsesNoAttempt) {
  checkpoints_.Add("r", 100);
  ASSERT_OK(server_->coordinator()->PollRunsOnce());
  fault_fs_->FailWrites(rocksdb::IOStatus::NoSpace("injected: disk full"));
  grpc::ClientContext ctx;
  v1::AcquireJobRequest request;
  request.set_worker_id("w1");
  v1::AcquireJobResponse response;
  EXPECT_EQ(worker_->AcquireJob(&ctx, request, &response).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  std::vector<v1::Job> jobs = Jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].state(), v1::JOB_PENDING);
  EXPECT_EQ(jobs[0].attempts(), 0u);

  fault_fs_->Heal();
  EXPECT_EQ(Lease().job().attempts(), 1u);
}

TEST_F(StorageFaultServerTest, BackupRpcRoundTrip) {
  checkpoints_.Add("r", 100);
  ASSERT_OK(server_->coordinator()->PollRunsOnce());
  v1::ReportResultsResponse reported;
  ASSERT_TRUE(ReportMc(Lease(), &reported).ok());

  grpc::ClientContext ctx;
  v1::BackupRequest request;
  request.set_to_dir(root_ + "/backup");
  v1::BackupResponse response;
  grpc::Status s = eval_->Backup(&ctx, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.backup_id(), 1u);
  EXPECT_EQ(response.path(), root_ + "/backup");
  EXPECT_GT(response.bytes(), 0u);

  grpc::ClientContext bad_ctx;
  v1::BackupRequest inside;
  inside.set_to_dir(root_ + "/db/backup");
  EXPECT_EQ(eval_->Backup(&bad_ctx, inside, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  ASSERT_OK(Store::Restore(root_ + "/backup", root_ + "/restored").status());
  auto copy = Store::Open(root_ + "/restored");
  ASSERT_OK(copy);
  ASSERT_OK_AND_ASSIGN(v1::Run run, (*copy)->GetRun("r"));
  EXPECT_EQ(run.config().source(), root_ + "/ckpt");
  ASSERT_OK_AND_ASSIGN(v1::Score score, (*copy)->GetScore("r", "mc", "raw", 100));
  EXPECT_DOUBLE_EQ(score.score(), 2.0 / 3);
  int predictions = 0;
  ASSERT_OK((*copy)->ScanPredictions("r", "mc", "raw", 100, [&](uint32_t, const v1::Prediction&) {
    ++predictions;
    return true;
  }));
  EXPECT_EQ(predictions, 3);
  ASSERT_OK_AND_ASSIGN(v1::Job job, (*copy)->GetJob(1));
  EXPECT_EQ(job.state(), v1::JOB_DONE);
}

// Lease expiry while the disk is full: the expiry cannot be written, so the job stays
// leased (nothing half done); once writes work it expires normally, counted once.
class StorageFaultCoordinatorTest : public CoordinatorFixture {
 protected:
  void SetUp() override {
    fault_fs_ = std::make_shared<FaultInjectingFileSystem>();
    options_.scheduler.lease_ttl_ms = 1000;
    StartFresh("storage_fault_coordinator_");
  }
  void Restart() override {
    coordinator_.reset();
    store_.reset();
    StoreOptions store_options;
    store_options.file_system = fault_fs_;
    auto store = Store::Open((root_ / "db").string(), store_options);
    ASSERT_OK(store);
    store_ = std::move(*store);
    auto c = Coordinator::Create(store_.get(), &clock_, checkpoints_.Factory(), options_);
    ASSERT_OK(c);
    coordinator_ = std::move(*c);
  }
  void CreateRun(const std::string& name, std::vector<uint32_t> windows = {}) {
    v1::RunConfig config;
    config.set_name(name);
    config.set_source((root_ / "ckpt").string());
    for (uint32_t n : windows) {
      config.add_average_windows(n);
      config.add_ensemble_windows(n);
    }
    ASSERT_OK(coordinator_->CreateRun(config, {McTaskFile()}).status());
  }
  void Register(const std::string& worker) {
    v1::RegisterWorkerRequest r;
    r.set_worker_id(worker);
    r.set_protocol_version(kProtocolVersion);
    ASSERT_OK(coordinator_->RegisterWorker(r).status());
  }
  v1::LeasedJob Lease(const std::string& worker) {
    v1::AcquireJobRequest r;
    r.set_worker_id(worker);
    absl::StatusOr<v1::AcquireJobResponse> acquired = coordinator_->AcquireJob(r, nullptr);
    EXPECT_OK(acquired);
    EXPECT_TRUE(acquired.ok() && acquired->has_job());
    return acquired.ok() ? acquired->lease() : v1::LeasedJob();
  }
  v1::HeartbeatRequest HeartbeatFor(const v1::LeasedJob& lease, const std::string& worker) {
    v1::HeartbeatRequest r;
    r.set_worker_id(worker);
    r.set_job_id(lease.job().id());
    r.set_epoch(lease.job().epoch());
    r.set_lease_secret(lease.lease_secret());
    return r;
  }
  // A complete report of the mc task (outputs "1", "0", "0") for a raw `lease`, with its
  // drift targets and, when given, the tokenizer it names.
  std::vector<v1::ReportResultsRequest> Report(const v1::LeasedJob& lease,
                                               const std::string& worker,
                                               const std::string& tokenizer = "") {
    v1::ReportResultsRequest r;
    r.set_worker_id(worker);
    r.set_job_id(lease.job().id());
    r.set_epoch(lease.job().epoch());
    r.set_lease_secret(lease.lease_secret());
    r.set_step(lease.job().steps(0));
    r.set_tokenizer_sha256(tokenizer);
    *r.mutable_task() = lease.task_headers(0).ref();
    for (uint32_t i = 0; i < 3; ++i) {
      v1::ExampleOutput* o = r.add_outputs();
      o->set_index(i);
      o->set_output(i == 0 ? "1" : "0");
    }
    r.set_task_complete(true);
    for (const v1::DriftTarget& target : lease.drift_targets()) {
      v1::ParameterDrift* d = r.add_drifts();
      d->set_from_step(target.from_step());
      d->set_to_step(target.to_step());
      d->set_l2(1.5);
      d->set_relative(0.01);
    }
    return {r};
  }
  int StoredPredictions(const std::string& run) {
    int n = 0;
    EXPECT_OK(store_->ScanAllPredictions(
        run, "", "", [&](const Store::PredictionKeyParts&, const v1::Prediction&) {
          ++n;
          return true;
        }));
    return n;
  }
  std::string Stability(const std::string& run) {
    v1::GetStabilityRequest r;
    r.set_run(run);
    absl::StatusOr<v1::GetStabilityResponse> stability = coordinator_->GetStability(r);
    EXPECT_OK(stability);
    return stability.ok() ? stability->DebugString() : "";
  }

  std::shared_ptr<FaultInjectingFileSystem> fault_fs_;
};

TEST_F(StorageFaultCoordinatorTest, LeaseExpiryDuringAFaultWaitsForTheDisk) {
  v1::RunConfig config;
  config.set_name("r");
  config.set_source((root_ / "ckpt").string());
  ASSERT_OK(coordinator_->CreateRun(config, {McTaskFile()}).status());
  v1::RegisterWorkerRequest worker;
  worker.set_worker_id("w1");
  worker.set_protocol_version(kProtocolVersion);
  ASSERT_OK(coordinator_->RegisterWorker(worker).status());
  checkpoints_.Add("r", 100);
  ASSERT_OK(coordinator_->PollRunsOnce());
  v1::AcquireJobRequest acquire;
  acquire.set_worker_id("w1");
  ASSERT_OK_AND_ASSIGN(v1::AcquireJobResponse leased, coordinator_->AcquireJob(acquire, nullptr));
  ASSERT_TRUE(leased.has_job());

  fault_fs_->FailWrites(rocksdb::IOStatus::NoSpace("injected: disk full"));
  clock_.AdvanceSeconds(5);
  EXPECT_FALSE(coordinator_->Tick().ok());
  std::optional<v1::Job> job = coordinator_->scheduler()->GetJob(leased.lease().job().id());
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->state(), v1::JOB_LEASED);

  fault_fs_->Heal();
  ASSERT_OK(coordinator_->Tick());  // resumes the store, then expires the lease
  job = coordinator_->scheduler()->GetJob(leased.lease().job().id());
  EXPECT_EQ(job->state(), v1::JOB_PENDING);
  EXPECT_EQ(job->attempts(), 1u);
  EXPECT_TRUE(store_->GetHealth().healthy);
}

// A report whose commit fails (the disk is full) leaves nothing of itself: no prediction,
// score, ensemble, drift or tokenizer pin in the store, the job still leased (same epoch,
// same attempt) and its checkpoint still evaluating, and the in-memory scheduler, run
// record and stability indexes as they were. The same report, sent again once the disk
// works, lands whole.
TEST_F(StorageFaultCoordinatorTest, AFailedReportCommitLeavesNoHalfStateAndTheRetryLands) {
  CreateRun("r", {2});
  Register("w1");
  checkpoints_.Add("r", 100);
  ASSERT_OK(coordinator_->PollRunsOnce());
  const v1::LeasedJob first = Lease("w1");
  ASSERT_OK(coordinator_->ReportResults(Report(first, "w1")).status());
  checkpoints_.Add("r", 200);
  ASSERT_OK(coordinator_->PollRunsOnce());
  const v1::LeasedJob lease = Lease("w1");  // raw@200 (newest first), drift 100 -> 200
  ASSERT_EQ(lease.job().kind(), "raw");
  ASSERT_EQ(lease.job().steps(0), 200u);
  ASSERT_EQ(lease.drift_targets_size(), 1);
  const uint64_t id = lease.job().id();
  const std::string tokenizer = Sha256Hex("tokenizer");

  const int predictions_before = StoredPredictions("r");
  const std::string stability_before = Stability("r");
  const std::vector<v1::Job> jobs_before = coordinator_->scheduler()->Jobs();
  const std::vector<v1::Checkpoint> checkpoints_before = coordinator_->scheduler()->Checkpoints("r");

  fault_fs_->FailWrites(rocksdb::IOStatus::NoSpace("injected: disk full"));
  EXPECT_THAT(coordinator_->ReportResults(Report(lease, "w1", tokenizer)),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("storage: ")));

  // The store: nothing of the report.
  EXPECT_EQ(StoredPredictions("r"), predictions_before);
  EXPECT_THAT(store_->GetScore("r", "mc", "raw", 200), StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_THAT(store_->GetScore("r", "mc", "ens@2", 200), StatusIs(absl::StatusCode::kNotFound, _));
  EXPECT_THAT(store_->GetDrift("r", 200), StatusIs(absl::StatusCode::kNotFound, _));
  ASSERT_OK_AND_ASSIGN(v1::Job stored_job, store_->GetJob(id));
  EXPECT_EQ(stored_job.state(), v1::JOB_LEASED);
  EXPECT_EQ(stored_job.epoch(), lease.job().epoch());
  EXPECT_EQ(stored_job.attempts(), 1u);
  ASSERT_OK_AND_ASSIGN(v1::Checkpoint stored_checkpoint, store_->GetCheckpoint("r", 200));
  EXPECT_EQ(stored_checkpoint.state(), v1::CHECKPOINT_EVALUATING);
  ASSERT_OK_AND_ASSIGN(v1::Run stored_run, store_->GetRun("r"));
  EXPECT_EQ(stored_run.tokenizer_sha256(), "");
  // Memory: as before.
  const std::vector<v1::Job> jobs_after = coordinator_->scheduler()->Jobs();
  ASSERT_EQ(jobs_after.size(), jobs_before.size());
  for (size_t i = 0; i < jobs_after.size(); ++i) {
    EXPECT_EQ(jobs_after[i].DebugString(), jobs_before[i].DebugString());
  }
  const std::vector<v1::Checkpoint> checkpoints_after = coordinator_->scheduler()->Checkpoints("r");
  ASSERT_EQ(checkpoints_after.size(), checkpoints_before.size());
  for (size_t i = 0; i < checkpoints_after.size(); ++i) {
    EXPECT_EQ(checkpoints_after[i].DebugString(), checkpoints_before[i].DebugString());
  }
  ASSERT_OK_AND_ASSIGN(v1::GetRunResponse run, coordinator_->GetRun("r"));
  EXPECT_EQ(run.run().tokenizer_sha256(), "");
  EXPECT_EQ(Stability("r"), stability_before);

  // The worker keeps its lease, and its retry lands once the disk works.
  EXPECT_OK(coordinator_->Heartbeat(HeartbeatFor(lease, "w1")).status());
  fault_fs_->Heal();
  ASSERT_OK_AND_ASSIGN(v1::ReportResultsResponse landed,
                       coordinator_->ReportResults(Report(lease, "w1", tokenizer)));
  EXPECT_FALSE(landed.replay());
  EXPECT_EQ(landed.predictions_written(), 3u);
  ASSERT_OK_AND_ASSIGN(stored_job, store_->GetJob(id));
  EXPECT_EQ(stored_job.state(), v1::JOB_DONE);
  EXPECT_EQ(stored_job.attempts(), 1u);
  ASSERT_OK_AND_ASSIGN(stored_checkpoint, store_->GetCheckpoint("r", 200));
  EXPECT_EQ(stored_checkpoint.state(), v1::CHECKPOINT_EVALUATED);
  EXPECT_OK(store_->GetScore("r", "mc", "raw", 200).status());
  EXPECT_OK(store_->GetScore("r", "mc", "ens@2", 200).status());
  EXPECT_OK(store_->GetDrift("r", 200).status());
  ASSERT_OK_AND_ASSIGN(stored_run, store_->GetRun("r"));
  EXPECT_EQ(stored_run.tokenizer_sha256(), tokenizer);
  EXPECT_EQ(coordinator_->scheduler()->GetJob(id)->state(), v1::JOB_DONE);
  EXPECT_NE(Stability("r"), stability_before);
}

// The other way out of a failed report commit: the worker gives up, its lease expires
// (an ordinary failed attempt), and another worker's report of the job lands.
TEST_F(StorageFaultCoordinatorTest, AfterAFailedReportCommitTheJobGoesToAnotherWorker) {
  CreateRun("r");
  Register("w1");
  Register("w2");
  checkpoints_.Add("r", 100);
  ASSERT_OK(coordinator_->PollRunsOnce());
  const v1::LeasedJob lost = Lease("w1");
  fault_fs_->FailWrites(rocksdb::IOStatus::NoSpace("injected: disk full"));
  EXPECT_THAT(coordinator_->ReportResults(Report(lost, "w1")),
              StatusIs(absl::StatusCode::kResourceExhausted, _));
  fault_fs_->Heal();

  clock_.AdvanceSeconds(2);  // past the 1 s lease
  ASSERT_OK(coordinator_->Tick());
  EXPECT_EQ(coordinator_->scheduler()->GetJob(lost.job().id())->state(), v1::JOB_PENDING);
  clock_.AdvanceSeconds(60);  // past the retry backoff
  const v1::LeasedJob lease = Lease("w2");
  ASSERT_EQ(lease.job().id(), lost.job().id());
  EXPECT_EQ(lease.job().epoch(), lost.job().epoch() + 1);
  EXPECT_EQ(lease.job().attempts(), 2u);
  ASSERT_OK_AND_ASSIGN(v1::ReportResultsResponse landed,
                       coordinator_->ReportResults(Report(lease, "w2")));
  EXPECT_EQ(landed.predictions_written(), 3u);
  EXPECT_EQ(coordinator_->scheduler()->GetJob(lease.job().id())->state(), v1::JOB_DONE);
  EXPECT_EQ(StoredPredictions("r"), 3);
  // The first worker's late retry is refused, and writes nothing.
  EXPECT_THAT(coordinator_->ReportResults(Report(lost, "w1")),
              StatusIs(absl::StatusCode::kAborted, _));
  EXPECT_EQ(StoredPredictions("r"), 3);
}

// While a report's synced commit is under way (its write-ahead-log sync held), the locks
// leases and heartbeats need are free: another worker's heartbeat and a poll that finds
// nothing to lease are answered, and the reported job reads as still leased until the
// commit lands. With the commit under the scheduler's mutex the heartbeat would wait for
// the disk (the test gives up after 60 s and fails).
TEST_F(StorageFaultCoordinatorTest, AReportCommitHoldsNoLockThatLeasesAndHeartbeatsNeed) {
  CreateRun("r");
  Register("w1");
  Register("w2");
  Register("w3");
  checkpoints_.Add("r", 100);
  checkpoints_.Add("r", 200);
  ASSERT_OK(coordinator_->PollRunsOnce());
  const v1::LeasedJob reported = Lease("w1");
  const v1::LeasedJob other = Lease("w2");

  fault_fs_->HoldSyncs(".log");
  absl::StatusOr<v1::ReportResultsResponse> landed;
  std::thread reporter([&] { landed = coordinator_->ReportResults(Report(reported, "w1")); });
  fault_fs_->WaitForHeldSyncs(1);  // the report's batch is written, its sync held

  absl::StatusOr<v1::HeartbeatResponse> heartbeat;
  absl::StatusOr<v1::AcquireJobResponse> idle_poll;
  v1::JobState during = v1::JOB_STATE_UNSPECIFIED;
  absl::Notification answered;
  std::thread requests([&] {  // all while the sync is held
    heartbeat = coordinator_->Heartbeat(HeartbeatFor(other, "w2"));
    v1::AcquireJobRequest acquire;
    acquire.set_worker_id("w3");
    idle_poll = coordinator_->AcquireJob(acquire, nullptr);
    during = coordinator_->scheduler()->GetJob(reported.job().id())->state();
    answered.Notify();
  });
  const bool free = answered.WaitForNotificationWithTimeout(absl::Seconds(60));
  fault_fs_->ReleaseSyncs();
  requests.join();
  reporter.join();
  ASSERT_TRUE(free) << "a heartbeat or lease waited for a report's commit";
  EXPECT_OK(heartbeat.status());
  ASSERT_OK(idle_poll.status());
  EXPECT_FALSE(idle_poll->has_job());
  EXPECT_EQ(during, v1::JOB_LEASED);
  ASSERT_OK(landed.status());
  EXPECT_EQ(landed->predictions_written(), 3u);
  EXPECT_EQ(coordinator_->scheduler()->GetJob(reported.job().id())->state(), v1::JOB_DONE);
}

}  // namespace
}  // namespace steadyeval
