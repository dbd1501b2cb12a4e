// What a corrupted database does to the coordinator: the fuzz input is written as raw
// records into a fresh RocksDB with the store's column families (server/store.h), then
// the coordinator starts over it (Store::Open, Coordinator::Create: every run, checkpoint,
// job, score, pair and task record is decoded and loaded) and answers every query and
// worker call that reads stored records (scans, stability, examples, export, rescoring,
// leases). Each must end in a status, never a crash.
//
// Input: records, each [family u8][key length u16 LE][key][value length u16 LE][value];
// family is an index into Store::FamilyNames(Store::kSchemaVersion) (modulo its size).
// meta "schema_version" is "2" unless a record sets it. Seeds are dumps of small
// databases that the coordinator wrote (fuzz/README.md).
//
// The database lives in $TMPDIR (use a tmpfs for speed), one folder per process, removed
// and recreated for every input.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "fuzz/fuzz_util.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
#include "server/coordinator.h"
#include "server/discovery.h"
#include "server/store.h"
#include "steadyeval/v1/protocol.h"

using namespace steadyeval;

namespace {

// A run's checkpoint discovery that never finds anything: only stored state matters.
class NoDiscovery : public CheckpointDiscovery {
 public:
  absl::StatusOr<std::vector<DiscoveredCheckpoint>> Poll() override {
    return std::vector<DiscoveredCheckpoint>();
  }
};

const std::string& DatabaseDir() {
  static const std::string* dir = [] {
    const char* tmp = std::getenv("TEST_TMPDIR");
    if (tmp == nullptr || *tmp == '\0') tmp = std::getenv("TMPDIR");
    if (tmp == nullptr || *tmp == '\0') tmp = "/tmp";
    return new std::string(std::string(tmp) + "/steadyeval-store-fuzz-" +
                           std::to_string(getpid()));
  }();
  return *dir;
}

// Writes the records into a fresh database in `dir`. False when RocksDB refuses (not a
// finding: the store is never opened then).
bool WriteRawDatabase(const std::string& dir, absl::string_view in) {
  std::error_code error;
  std::filesystem::remove_all(dir, error);
  const std::vector<std::string> families = Store::FamilyNames(Store::kSchemaVersion);
  rocksdb::Options options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (const std::string& name : families) {
    descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  if (!rocksdb::DB::Open(rocksdb::DBOptions(options), dir, descriptors, &handles, &raw).ok()) {
    return false;
  }
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::WriteBatch batch;
  batch.Put(handles[1], "schema_version", std::to_string(Store::kSchemaVersion));
  while (!in.empty()) {
    const size_t family = 1 + fuzz::TakeLE(in, 1) % families.size();
    const absl::string_view key = fuzz::TakeBytes(in, fuzz::TakeLE(in, 2));
    const absl::string_view value = fuzz::TakeBytes(in, fuzz::TakeLE(in, 2));
    batch.Put(handles[family], rocksdb::Slice(key.data(), key.size()),
              rocksdb::Slice(value.data(), value.size()));
  }
  const bool written = db->Write(rocksdb::WriteOptions(), &batch).ok();
  for (rocksdb::ColumnFamilyHandle* handle : handles) db->DestroyColumnFamilyHandle(handle);
  return written && db->Close().ok();
}

void Exercise(Coordinator& c, FakeClock& clock) {
  auto all = [](const auto&) { return true; };
  (void)c.ListJobs("", all);
  auto runs = c.ListRuns(0, "");
  if (runs.ok()) {
    for (const v1::Run& run : runs->runs()) {
      const std::string& name = run.config().name();
      (void)c.GetRun(name);
      (void)c.ListCheckpoints(name, all);
      (void)c.ListJobs(name, all);
      v1::GetScoresRequest scores;
      scores.set_run(name);
      (void)c.GetScores(scores, all);
      v1::GetStabilityRequest stability;
      stability.set_run(name);
      (void)c.GetStability(stability);
      stability.set_last_points(3);
      (void)c.GetStability(stability);
      for (const v1::TaskRef& task : run.config().tasks()) {
        v1::GetExamplesRequest examples;
        examples.set_run(name);
        examples.set_task(task.name());
        examples.set_example(0);
        (void)c.GetExamples(examples);
        examples.set_flippiest(2);
        (void)c.GetExamples(examples);
        (void)c.GetTask(task.sha256());
      }
      v1::ExportPredictionsRequest export_request;
      export_request.set_run(name);
      (void)c.ExportPredictions(export_request, all);
      v1::RescoreRequest rescore;
      rescore.set_run(name);
      (void)c.Rescore(rescore);
    }
  }
  (void)c.PollRunsOnce();
  v1::RegisterWorkerRequest registration;
  registration.set_worker_id("fuzz-worker");
  registration.set_protocol_version(kProtocolVersion);
  if (c.RegisterWorker(registration).ok()) {
    v1::AcquireJobRequest acquire;
    acquire.set_worker_id("fuzz-worker");
    (void)c.AcquireJob(acquire, [] { return true; });
  }
  clock.AdvanceSeconds(3600);  // every stored lease expires
  (void)c.Tick();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = DatabaseDir();
  if (WriteRawDatabase(dir, fuzz::AsView(data, size))) {
    auto store = Store::Open(dir);
    if (store.ok()) {
      FakeClock clock;
      CoordinatorOptions options;
      options.max_acquire_wait_ms = 0;
      DiscoveryFactory discovery = [](const v1::RunConfig&)
          -> absl::StatusOr<std::unique_ptr<CheckpointDiscovery>> {
        return std::unique_ptr<CheckpointDiscovery>(new NoDiscovery());
      };
      auto coordinator = Coordinator::Create(store->get(), &clock, discovery, options);
      if (coordinator.ok()) Exercise(**coordinator, clock);
    }
  }
  std::error_code error;
  std::filesystem::remove_all(dir, error);
  return 0;
}
