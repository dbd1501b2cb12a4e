// The coordinator's durable state in RocksDB (DESIGN §8).
//
// Column families and keys (KeyBuilder encodings, common/keys.h):
//   meta         "schema_version" -> decimal string; "next_job_id" -> decimal string
//   runs         name                                   -> Run
//   tasks        sha256                                 -> TaskContent
//   checkpoints  run | step(u64)                        -> Checkpoint
//   jobs         id(u64)                                -> Job
//   predictions  run | task | variant | step | example  -> Prediction
//   scores       run | task | variant | step            -> Score
//   pairs        run | task | variant | to_step         -> PairStats   (schema >= 2)
//   drift        run | to_step                          -> ParameterDrift (schema >= 2)
// `task` in keys is the task name; a run's task names are unique and fix their sha256.
// `pairs` holds the adjacent-pair figures of every (run, task, variant) sequence (DESIGN
// §3), written in the same batch as the predictions that change them; `drift` the
// parameter drift between adjacent admitted checkpoints, keyed by the later one.
//
// Schema versions: 1 (the walking skeleton) lacks `pairs` and `drift`; Open migrates a
// version-1 database in place to version 2 (creates the families, stamps the version).
// The coordinator recomputes missing pair figures at start-up (see Coordinator::Create).
//
// Every state transition is one Batch committed with sync=true. Reads see committed
// state only. Thread-safe (RocksDB is); a Batch itself is not.
//
// Storage faults (disk full, failed writes): a commit is refused, never half applied and
// never an abort. Before each write the store checks the data dir's free space (statvfs)
// against StoreOptions::reserve_bytes plus the batch's size, so RocksDB is not driven into
// ENOSPC mid-write in the first place (Debian's librocksdb asserts on some paths after a
// failed write); RocksDB's SstFileManager caps the table files when max_sst_bytes is set.
// Refused writes return RESOURCE_EXHAUSTED (space) or UNAVAILABLE (any other RocksDB write
// error, or RocksDB still recovering), with a message starting "storage: ". When RocksDB
// stops writes after a background error, the store resumes it (DB::Resume) at the next
// write or RefreshHealth() once space allows; reads keep answering meanwhile. Health()
// says whether writes currently go through.
//
// Opening: a torn last record in the newest write-ahead log (what a crash mid-write
// leaves) is dropped; a checksum error anywhere else in a log, or a damaged table file
// RocksDB reads at open, makes Open fail with DATA_LOSS naming the file and how to
// restore. Damaged table blocks found later are DATA_LOSS on the read that finds them,
// naming the file; nothing is rolled back silently.
#ifndef STEADYEVAL_SERVER_STORE_STORE_H_
#define STEADYEVAL_SERVER_STORE_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/sst_file_manager.h"
#include "rocksdb/write_batch.h"
#include "steadyeval/v1/types.pb.h"

namespace steadyeval {

class StoreLogger;

struct StoreOptions {
  static constexpr uint64_t kDefaultReserveBytes = 1 << 20;
  // A write is refused (RESOURCE_EXHAUSTED) unless the data dir's filesystem keeps at
  // least this many bytes free after it. Small enough for a data dir of a few MB.
  uint64_t reserve_bytes = kDefaultReserveBytes;
  // RocksDB's SstFileManager::SetMaxAllowedSpaceUsage: writes are refused once the table
  // files reach this size. 0 = no limit.
  uint64_t max_sst_bytes = 0;
  // The file system RocksDB reads and writes through (tests pass a fault-injecting one,
  // server/store/fault_fs.h); null = the default (POSIX). When set, free space is its
  // GetFreeSpace(); otherwise statvfs's f_bavail * f_frsize of the data dir.
  std::shared_ptr<rocksdb::FileSystem> file_system;
};

class Store {
 public:
  // The schema this binary reads and writes.
  static constexpr uint32_t kSchemaVersion = 2;

  // A set of writes applied atomically by Commit. Not thread-safe.
  class Batch {
   public:
    void PutRun(const v1::Run& run);
    void PutTask(const v1::TaskContent& task);
    void PutCheckpoint(const v1::Checkpoint& checkpoint);
    void PutJob(const v1::Job& job);
    void PutNextJobId(uint64_t next_id);
    void PutPrediction(absl::string_view run, absl::string_view task, absl::string_view variant,
                       uint64_t step, uint32_t example, const v1::Prediction& prediction);
    void PutScore(const v1::Score& score);
    void DeleteScore(absl::string_view run, absl::string_view task, absl::string_view variant,
                     uint64_t step);
    // Deletes every prediction of one (run, task, variant, step).
    void DeletePredictions(absl::string_view run, absl::string_view task,
                           absl::string_view variant, uint64_t step);
    void PutPair(absl::string_view run, absl::string_view task, absl::string_view variant,
                 const v1::PairStats& pair);
    void DeletePair(absl::string_view run, absl::string_view task, absl::string_view variant,
                    uint64_t to_step);
    void PutDrift(absl::string_view run, const v1::ParameterDrift& drift);
    void DeleteDrift(absl::string_view run, uint64_t to_step);
    void DeleteJob(uint64_t id);
    // Deletes the run record and every checkpoint, prediction, score, pair and drift key
    // of `run` (range deletions; its jobs are keyed by id: DeleteJob each). Task contents
    // are shared by content hash across runs and stay.
    void DeleteRunData(absl::string_view run);
    int count() const { return batch_.Count(); }

   private:
    friend class Store;
    explicit Batch(Store* store) : store_(store) {}
    Store* store_;
    rocksdb::WriteBatch batch_;
  };

  // Opens (creating if missing) the database in `dir`. FAILED_PRECONDITION when the
  // stored schema version is not kSchemaVersion (written by another steadyeval version);
  // DATA_LOSS when the version record is unreadable or RocksDB finds a damaged log or
  // table file (named in the message); RESOURCE_EXHAUSTED when the disk is full;
  // INTERNAL for other RocksDB errors.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& dir,
                                                     const StoreOptions& options = {});
  ~Store();

  Batch NewBatch() { return Batch(this); }
  // Writes the batch atomically with sync=true. RESOURCE_EXHAUSTED or UNAVAILABLE when
  // storage refuses it (see the top of this file): nothing of the batch is applied.
  absl::Status Commit(Batch batch);

  // ---- storage health ----
  enum class Refusal { kReserve, kSstLimit, kNoSpace, kWriteError, kNumRefusals };
  // "reserve", "sst_limit", "no_space", "write_error" (the metric's label values).
  static const char* RefusalName(Refusal reason);
  struct Health {
    bool healthy = true;         // writes go through
    std::string reason;          // why not (empty when healthy)
    uint64_t free_bytes = 0;     // the data dir's free space at the last check
    uint64_t reserve_bytes = 0;  // StoreOptions::reserve_bytes
    uint64_t refused[static_cast<int>(Refusal::kNumRefusals)] = {};  // writes refused, by reason
  };
  Health GetHealth() const;
  // Re-checks health now: the free space, the SST limit, and RocksDB's background error
  // (resumed when space allows). The server calls it periodically so health recovers
  // without a write. Thread-safe.
  void RefreshHealth();
  // Called with the new value each time health changes (from the thread that noticed:
  // a writer, RefreshHealth's caller or a RocksDB background thread), under a lock: it
  // must not call back into the Store. Replaces the previous observer; null removes it.
  void SetHealthObserver(std::function<void(bool healthy, const std::string& reason)> observer);

  // ---- backup (RocksDB BackupEngine) ----
  struct BackupResult {
    uint32_t backup_id = 0;
    uint64_t bytes = 0;  // size of the files this backup added to the folder
    std::string path;    // the folder, absolute
  };
  // Adds a backup of the live database (with its write-ahead log, so everything
  // committed before the call) to `to_dir` (created if missing; earlier backups there are
  // kept and share unchanged files) and verifies it. INVALID_ARGUMENT for an empty path
  // or one inside the data dir; RESOURCE_EXHAUSTED when the target runs out of space;
  // FAILED_PRECONDITION when it cannot be written. One backup at a time per store.
  absl::StatusOr<BackupResult> Backup(const std::string& to_dir);
  struct RestoreResult {
    uint32_t backup_id = 0;
    int64_t timestamp = 0;  // when the backup was taken (Unix seconds)
    uint64_t bytes = 0;
  };
  // Offline: restores the latest backup in `from_dir` into `data_dir`, which must not
  // exist or be empty (FAILED_PRECONDITION otherwise), then opens it once to check it.
  // NOT_FOUND when `from_dir` holds no backup.
  static absl::StatusOr<RestoreResult> Restore(const std::string& from_dir,
                                               const std::string& data_dir);

  // Raw meta access (tests use it to simulate other schema versions).
  absl::Status PutMeta(absl::string_view key, absl::string_view value);
  absl::StatusOr<std::optional<std::string>> GetMeta(absl::string_view key) const;

  // NOT_FOUND when absent; DATA_LOSS when the stored value does not parse.
  absl::StatusOr<v1::Run> GetRun(absl::string_view name) const;
  absl::StatusOr<v1::TaskContent> GetTask(absl::string_view sha256) const;
  absl::StatusOr<v1::Checkpoint> GetCheckpoint(absl::string_view run, uint64_t step) const;
  absl::StatusOr<v1::Job> GetJob(uint64_t id) const;
  absl::StatusOr<v1::Prediction> GetPrediction(absl::string_view run, absl::string_view task,
                                               absl::string_view variant, uint64_t step,
                                               uint32_t example) const;
  // 1 on a fresh database.
  absl::StatusOr<uint64_t> GetNextJobId() const;
  absl::StatusOr<v1::Score> GetScore(absl::string_view run, absl::string_view task,
                                     absl::string_view variant, uint64_t step) const;
  absl::StatusOr<v1::ParameterDrift> GetDrift(absl::string_view run, uint64_t to_step) const;

  // Range scans in key order. `visit` returns false to stop early (not an error).
  // Runs with name > `after` (all when empty), at most `limit` (0 = no limit).
  absl::Status ScanRuns(absl::string_view after, size_t limit,
                        const std::function<bool(const v1::Run&)>& visit) const;
  // A run's checkpoints by step; every run's (run, step order) when `run` is empty.
  absl::Status ScanCheckpoints(absl::string_view run,
                               const std::function<bool(const v1::Checkpoint&)>& visit) const;
  absl::Status ScanJobs(const std::function<bool(const v1::Job&)>& visit) const;
  // Scores of `run`, optionally only of `task` (empty = all), in (task, variant, step) order.
  absl::Status ScanScores(absl::string_view run, absl::string_view task,
                          const std::function<bool(const v1::Score&)>& visit) const;
  // One (run, task, variant, step)'s predictions by example index.
  absl::Status ScanPredictions(
      absl::string_view run, absl::string_view task, absl::string_view variant, uint64_t step,
      const std::function<bool(uint32_t example, const v1::Prediction&)>& visit) const;
  // Every prediction of `run` in key order (task, variant, step, example); `task` and
  // `variant` filter when non-empty.
  struct PredictionKeyParts {
    std::string task;
    std::string variant;
    uint64_t step = 0;
    uint32_t example = 0;
  };
  absl::Status ScanAllPredictions(
      absl::string_view run, absl::string_view task, absl::string_view variant,
      const std::function<bool(const PredictionKeyParts&, const v1::Prediction&)>& visit) const;
  // One (run, task, variant) sequence's pairs by to_step; every pair of the run (with its
  // task and variant) when `task` is empty.
  absl::Status ScanPairs(absl::string_view run, absl::string_view task, absl::string_view variant,
                         const std::function<bool(const std::string& task,
                                                  const std::string& variant,
                                                  const v1::PairStats&)>& visit) const;
  // How many keys DeleteRunData(run) removes (a key-only scan).
  absl::StatusOr<uint64_t> CountRunKeys(absl::string_view run) const;
  // A run's drift records by to_step.
  absl::Status ScanDrifts(absl::string_view run,
                          const std::function<bool(const v1::ParameterDrift&)>& visit) const;

  // Key encodings (exposed for tests).
  static std::string RunKey(absl::string_view name);
  static std::string CheckpointKey(absl::string_view run, uint64_t step);
  static std::string JobKey(uint64_t id);
  static std::string PredictionKey(absl::string_view run, absl::string_view task,
                                   absl::string_view variant, uint64_t step, uint32_t example);
  static std::string ScoreKey(absl::string_view run, absl::string_view task,
                              absl::string_view variant, uint64_t step);
  static std::string PairKey(absl::string_view run, absl::string_view task,
                             absl::string_view variant, uint64_t to_step);
  static std::string DriftKey(absl::string_view run, uint64_t to_step);

  // The column families of each schema version (tests build old databases with them).
  static std::vector<std::string> FamilyNames(uint32_t schema_version);

  // RocksDB's size and write-stall figures (the steadyeval_rocksdb_* metrics). Sizes are
  // summed over every column family this store has open.
  struct Stats {
    uint64_t sst_bytes = 0;        // property rocksdb.total-sst-files-size
    uint64_t memtable_bytes = 0;   // rocksdb.cur-size-all-mem-tables
    uint64_t live_data_bytes = 0;  // rocksdb.estimate-live-data-size
    uint64_t stall_micros = 0;     // statistics ticker STALL_MICROS since Open
    bool write_stalled = false;    // WriteStalled(...) of the write controller's properties
  };
  // Reads in-memory properties and one ticker only (no I/O): cheap enough for every
  // scrape. Thread-safe. INTERNAL when RocksDB does not report a property.
  absl::StatusOr<Stats> GetStats() const;
  // Whether RocksDB is delaying or stopping writes, from the DB-wide properties
  // rocksdb.actual-delayed-write-rate (bytes/s, 0 unless writes are delayed) and
  // rocksdb.is-write-stopped (1 while stopped).
  static bool WriteStalled(uint64_t actual_delayed_write_rate, uint64_t is_write_stopped);
  // Flushes every column family's memtable to SST files and waits for it (tests).
  absl::Status Flush();

 private:
  enum Family {
    kMeta, kRuns, kTasks, kCheckpoints, kJobs, kPredictions, kScores, kPairs, kDrift,
    kNumFamilies
  };
  class Listener;
  friend class StoreRawAccess;  // fuzz/store_fuzzer.cc writes raw records into an open store
  Store() = default;
  absl::Status CheckSchema(const std::string& dir);
  // Writes `batch` (sync) unless storage refuses it; `what` names the write in errors.
  absl::Status Write(rocksdb::WriteBatch* batch, absl::string_view what);
  // The free-space, SST-limit and background-error checks before a write of `bytes`.
  absl::Status ReadyForWrite(uint64_t bytes, absl::string_view what);
  // DB::Resume after a background error; OK when there is none (any more). On failure
  // sets `reason` and returns the refusal (not counted).
  absl::Status ResumeIfStopped(absl::string_view what, Refusal* reason);
  // Whether the data dir takes writes again after the background error `error`: free
  // space for the reserve plus what a resume writes (the memtables and a log buffer), and
  // a small probe file written and synced through RocksDB's Env. Sets `reason` when not.
  absl::Status ProbeWritable(absl::string_view what, const std::string& error, Refusal* reason);
  absl::StatusOr<uint64_t> FreeBytes() const;
  // Counts a refused write, marks the store unhealthy and returns `status`.
  absl::Status Refuse(Refusal reason, absl::Status status);
  // The RESOURCE_EXHAUSTED / UNAVAILABLE status for RocksDB's refusal `s` of `what`.
  absl::Status WriteError(const rocksdb::Status& s, absl::string_view what, Refusal* reason) const;
  void SetHealth(bool healthy, const std::string& reason) ABSL_LOCKS_EXCLUDED(health_mu_);
  // The Listener's callbacks (RocksDB background threads).
  void OnBackgroundError(const rocksdb::Status& status);
  void OnRecovered();
  // Version 1 -> 2: the new families already exist (Open creates missing ones); stamp it.
  absl::Status MigrateV1ToV2(const std::string& dir);
  rocksdb::ColumnFamilyHandle* cf(Family f) const { return handles_[f]; }
  // Reads and parses one value; NOT_FOUND names `what`.
  template <typename Proto>
  absl::StatusOr<Proto> GetProto(Family f, const std::string& key, absl::string_view what) const;
  // Iterates [prefix, PrefixSuccessor(prefix)) starting at `start` (>= prefix).
  absl::Status Scan(Family f, const std::string& prefix, const std::string& start,
                    const std::function<bool(absl::string_view key, absl::string_view value)>&
                        visit) const;

  std::string dir_;
  StoreOptions options_;
  std::unique_ptr<rocksdb::Env> env_;                // with options_.file_system; outlives db_
  std::shared_ptr<StoreLogger> logger_;              // RocksDB's info log; outlives db_
  std::shared_ptr<rocksdb::SstFileManager> sst_files_;
  std::shared_ptr<rocksdb::Statistics> statistics_;  // set at Open; outlives db_

  mutable absl::Mutex health_mu_;
  bool background_error_ ABSL_GUARDED_BY(health_mu_) = false;
  std::string background_error_text_ ABSL_GUARDED_BY(health_mu_);
  bool background_error_fatal_ ABSL_GUARDED_BY(health_mu_) = false;  // until a restart
  bool healthy_ ABSL_GUARDED_BY(health_mu_) = true;
  std::string unhealthy_reason_ ABSL_GUARDED_BY(health_mu_);
  uint64_t last_free_bytes_ ABSL_GUARDED_BY(health_mu_) = 0;
  uint64_t refused_[static_cast<int>(Refusal::kNumRefusals)] ABSL_GUARDED_BY(health_mu_) = {};
  std::function<void(bool, const std::string&)> health_observer_ ABSL_GUARDED_BY(health_mu_);
  absl::Mutex resume_mu_;  // one DB::Resume at a time
  absl::Mutex backup_mu_;  // one backup at a time

  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;        // by Family
  std::vector<rocksdb::ColumnFamilyHandle*> other_handles_;  // default + unknown families
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_STORE_STORE_H_
