// What a corrupted database does to the coordinator: the fuzz input is written as raw
// records into the store's column families (server/store/store.h), then a coordinator starts
// over it (Coordinator::Create decodes and loads every run, checkpoint, job, score, pair
// and task record) and answers every query and worker call that reads stored records
// (scans, stability, examples, export, rescoring, leases). Each must end in a status,
// never a crash. Afterwards every record is deleted again.
//
// Input: records, each [family u8][key length u16 LE][key][value length u16 LE][value];
// family is an index into Store::FamilyNames(Store::kSchemaVersion) (modulo its size).
// Seeds are dumps of small databases written through Store and Analytics
// (store_seeds.cc).
//
// One store per process in $TEST_TMPDIR or $TMPDIR (use a tmpfs for speed), opened afresh
// every 500 inputs and removed at exit: opening RocksDB starts ~160 threads, too slow for
// every input.
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
#include "server/discovery/discovery.h"
#include "server/store/store.h"
#include "api/protocol.h"

namespace steadyeval {

// Raw access to the store's column families (a friend of Store).
class StoreRawAccess {
 public:
  static rocksdb::DB* db(Store& store) { return store.db_.get(); }
  static const std::vector<rocksdb::ColumnFamilyHandle*>& families(Store& store) {
    return store.handles_;
  }
};

}  // namespace steadyeval

using namespace steadyeval;

namespace {

// A run's checkpoint discovery that never finds anything: only stored state matters.
class NoDiscovery : public CheckpointDiscovery {
 public:
  absl::StatusOr<std::vector<DiscoveredCheckpoint>> Poll() override {
    return std::vector<DiscoveredCheckpoint>();
  }
};

std::string DatabaseDir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  if (tmp == nullptr || *tmp == '\0') tmp = std::getenv("TMPDIR");
  if (tmp == nullptr || *tmp == '\0') tmp = "/tmp";
  return std::string(tmp) + "/steadyeval-store-fuzz-" + std::to_string(getpid());
}

std::unique_ptr<Store>* g_store = nullptr;

void CloseStore() {
  g_store->reset();
  std::error_code error;
  std::filesystem::remove_all(DatabaseDir(), error);
}

// The store, fresh every kInputsPerStore inputs: deleted records leave tombstones that
// every later scan steps over.
Store& OpenStore() {
  constexpr int kInputsPerStore = 500;
  static int inputs = 0;
  if (g_store != nullptr && ++inputs % kInputsPerStore == 0) CloseStore();
  if (g_store == nullptr || *g_store == nullptr) {
    std::error_code error;
    std::filesystem::remove_all(DatabaseDir(), error);
    auto store = Store::Open(DatabaseDir());
    if (!store.ok()) {
      std::fprintf(stderr, "store_fuzzer: %s\n", store.status().ToString().c_str());
      std::abort();
    }
    if (g_store == nullptr) {
      g_store = new std::unique_ptr<Store>();
      std::atexit(CloseStore);
    }
    *g_store = std::move(*store);
  }
  return **g_store;
}

void WriteRecords(Store& store, absl::string_view in) {
  const auto& families = StoreRawAccess::families(store);
  rocksdb::WriteBatch batch;
  while (!in.empty()) {
    rocksdb::ColumnFamilyHandle* family = families[fuzz::TakeLE(in, 1) % families.size()];
    const absl::string_view key = fuzz::TakeBytes(in, fuzz::TakeLE(in, 2));
    const absl::string_view value = fuzz::TakeBytes(in, fuzz::TakeLE(in, 2));
    batch.Put(family, rocksdb::Slice(key.data(), key.size()),
              rocksdb::Slice(value.data(), value.size()));
  }
  FUZZ_CHECK(StoreRawAccess::db(store)->Write(rocksdb::WriteOptions(), &batch).ok());
}

// Deletes every record but the schema version, which Store::Open checked.
void DeleteRecords(Store& store) {
  rocksdb::DB* db = StoreRawAccess::db(store);
  rocksdb::WriteBatch batch;
  bool meta = true;
  for (rocksdb::ColumnFamilyHandle* family : StoreRawAccess::families(store)) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), family));
    for (it->SeekToFirst(); it->Valid(); it->Next()) batch.Delete(family, it->key());
    FUZZ_CHECK(it->status().ok());
    if (meta) {
      batch.Put(family, "schema_version", std::to_string(Store::kSchemaVersion));
      meta = false;
    }
  }
  FUZZ_CHECK(db->Write(rocksdb::WriteOptions(), &batch).ok());
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
  Store& store = OpenStore();
  WriteRecords(store, fuzz::AsView(data, size));
  {
    FakeClock clock;
    CoordinatorOptions options;
    options.max_acquire_wait_ms = 0;
    DiscoveryFactory discovery = [](const v1::RunConfig&)
        -> absl::StatusOr<std::unique_ptr<CheckpointDiscovery>> {
      return std::unique_ptr<CheckpointDiscovery>(new NoDiscovery());
    };
    auto coordinator = Coordinator::Create(&store, &clock, discovery, options);
    if (coordinator.ok()) Exercise(**coordinator, clock);
  }
  DeleteRecords(store);
  return 0;
}
