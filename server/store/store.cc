#include "server/store/store.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/keys.h"
#include "common/status.h"
#include "rocksdb/listener.h"
#include "rocksdb/options.h"
#include "rocksdb/statistics.h"
#include "rocksdb/utilities/backup_engine.h"
#include "server/store/store_logger.h"

namespace steadyeval {
namespace {

// By Store::Family. Version 1 had the first kFamiliesV1 of them.
constexpr const char* kFamilyNames[] = {"meta",        "runs",   "tasks", "checkpoints", "jobs",
                                        "predictions", "scores", "pairs", "drift"};
constexpr size_t kFamiliesV1 = 7;
constexpr absl::string_view kSchemaVersionKey = "schema_version";
// RocksDB's writable_file_max_buffer_size (set explicitly at Open): the most a failed
// write can leave unwritten in a log's buffer, which a resume writes first.
constexpr uint64_t kLogBufferBytes = 1 << 20;
constexpr absl::string_view kNextJobIdKey = "next_job_id";

constexpr absl::string_view kRestoreHint =
    "restore the data dir from a backup (steadyeval-server restore --from BACKUP_DIR "
    "--data_dir NEW_DIR) and start steadyeval-server on NEW_DIR";

bool IsSpaceError(const rocksdb::Status& s) {
  return s.IsNoSpace() || s.subcode() == rocksdb::Status::kSpaceLimit;
}

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  if (s.IsCorruption()) {
    return absl::DataLossError(absl::StrCat(what, ": ", s.ToString(), " (the data dir is damaged: ",
                                            kRestoreHint, ")"));
  }
  if (IsSpaceError(s)) return absl::ResourceExhaustedError(absl::StrCat(what, ": ", s.ToString()));
  return absl::InternalError(absl::StrCat(what, ": ", s.ToString()));
}

// DATA_LOSS for a database RocksDB refuses to open as damaged, naming the files RocksDB's
// log blamed (or, failing that, the write-ahead logs it replays).
absl::Status DamagedAtOpen(const std::string& dir, const rocksdb::Status& s,
                           const std::vector<std::string>& log_lines) {
  std::vector<std::string> files;
  std::string evidence;
  for (const std::string& line : log_lines) {
    for (std::string& f : StoreLogger::FilesNamedIn(line)) {
      if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(std::move(f));
    }
    if (evidence.empty() && absl::StrContains(line, "dropping")) evidence = line;
  }
  for (std::string& f : StoreLogger::FilesNamedIn(s.ToString())) {
    if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(std::move(f));
  }
  std::string where;
  if (!files.empty()) {
    for (std::string& f : files) f = dir + "/" + f;
    where = absl::StrCat(" in ", absl::StrJoin(files, ", "));
  } else {
    std::error_code ec;
    std::vector<std::string> logs;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      if (entry.path().extension() == ".log") logs.push_back(entry.path().string());
    }
    std::sort(logs.begin(), logs.end());
    if (!logs.empty()) where = absl::StrCat(" in one of ", absl::StrJoin(logs, ", "));
  }
  if (!evidence.empty()) {
    const size_t start = evidence.find(' ', evidence.find(' ') + 1);  // after date and thread
    absl::StrAppend(&where, " (RocksDB: \"",
                    start == std::string::npos ? evidence : evidence.substr(start + 1), "\")");
  }
  return absl::DataLossError(absl::StrCat(
      "the database in ", dir, " is damaged: ", s.ToString(), where,
      ". steadyeval-server does not open it, because recovering past the damage would "
      "silently drop committed results: ", kRestoreHint, "; keep ", dir, " for inspection"));
}

rocksdb::Slice ToSlice(absl::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
absl::string_view ToView(const rocksdb::Slice& s) { return absl::string_view(s.data(), s.size()); }

std::string Serialize(const google::protobuf::MessageLite& m) {
  std::string out;
  m.SerializeToString(&out);
  return out;
}

}  // namespace

// ---- keys ----

std::string Store::RunKey(absl::string_view name) { return KeyBuilder().Str(name).Release(); }
std::string Store::CheckpointKey(absl::string_view run, uint64_t step) {
  return KeyBuilder().Str(run).U64(step).Release();
}
std::string Store::JobKey(uint64_t id) { return KeyBuilder().U64(id).Release(); }
std::string Store::PredictionKey(absl::string_view run, absl::string_view task,
                                 absl::string_view variant, uint64_t step, uint32_t example) {
  return KeyBuilder().Str(run).Str(task).Str(variant).U64(step).U32(example).Release();
}
std::string Store::ScoreKey(absl::string_view run, absl::string_view task,
                            absl::string_view variant, uint64_t step) {
  return KeyBuilder().Str(run).Str(task).Str(variant).U64(step).Release();
}

std::string Store::PairKey(absl::string_view run, absl::string_view task,
                           absl::string_view variant, uint64_t to_step) {
  return KeyBuilder().Str(run).Str(task).Str(variant).U64(to_step).Release();
}
std::string Store::DriftKey(absl::string_view run, uint64_t to_step) {
  return KeyBuilder().Str(run).U64(to_step).Release();
}

std::vector<std::string> Store::FamilyNames(uint32_t schema_version) {
  const size_t n = schema_version <= 1 ? kFamiliesV1 : static_cast<size_t>(kNumFamilies);
  return std::vector<std::string>(kFamilyNames, kFamilyNames + n);
}

// ---- batch ----

void Store::Batch::PutRun(const v1::Run& run) {
  batch_.Put(store_->cf(kRuns), RunKey(run.config().name()), Serialize(run));
}
void Store::Batch::PutTask(const v1::TaskContent& task) {
  batch_.Put(store_->cf(kTasks), task.ref().sha256(), Serialize(task));
}
void Store::Batch::PutCheckpoint(const v1::Checkpoint& c) {
  batch_.Put(store_->cf(kCheckpoints), CheckpointKey(c.run(), c.step()), Serialize(c));
}
void Store::Batch::PutJob(const v1::Job& job) {
  batch_.Put(store_->cf(kJobs), JobKey(job.id()), Serialize(job));
}
void Store::Batch::PutNextJobId(uint64_t next_id) {
  batch_.Put(store_->cf(kMeta), ToSlice(kNextJobIdKey), std::to_string(next_id));
}
void Store::Batch::PutPrediction(absl::string_view run, absl::string_view task,
                                 absl::string_view variant, uint64_t step, uint32_t example,
                                 const v1::Prediction& prediction) {
  batch_.Put(store_->cf(kPredictions), PredictionKey(run, task, variant, step, example),
             Serialize(prediction));
}
void Store::Batch::PutScore(const v1::Score& s) {
  batch_.Put(store_->cf(kScores), ScoreKey(s.run(), s.task(), s.variant(), s.step()),
             Serialize(s));
}

void Store::Batch::DeleteScore(absl::string_view run, absl::string_view task,
                               absl::string_view variant, uint64_t step) {
  batch_.Delete(store_->cf(kScores), ScoreKey(run, task, variant, step));
}
void Store::Batch::DeletePredictions(absl::string_view run, absl::string_view task,
                                     absl::string_view variant, uint64_t step) {
  const std::string prefix = ScoreKey(run, task, variant, step);
  batch_.DeleteRange(store_->cf(kPredictions), prefix, PrefixSuccessor(prefix));
}
void Store::Batch::PutPair(absl::string_view run, absl::string_view task,
                           absl::string_view variant, const v1::PairStats& pair) {
  batch_.Put(store_->cf(kPairs), PairKey(run, task, variant, pair.to_step()), Serialize(pair));
}
void Store::Batch::DeletePair(absl::string_view run, absl::string_view task,
                              absl::string_view variant, uint64_t to_step) {
  batch_.Delete(store_->cf(kPairs), PairKey(run, task, variant, to_step));
}
void Store::Batch::PutDrift(absl::string_view run, const v1::ParameterDrift& drift) {
  batch_.Put(store_->cf(kDrift), DriftKey(run, drift.to_step()), Serialize(drift));
}
void Store::Batch::DeleteDrift(absl::string_view run, uint64_t to_step) {
  batch_.Delete(store_->cf(kDrift), DriftKey(run, to_step));
}

void Store::Batch::DeleteJob(uint64_t id) { batch_.Delete(store_->cf(kJobs), JobKey(id)); }
void Store::Batch::DeleteRunData(absl::string_view run) {
  const std::string prefix = RunKey(run);
  batch_.Delete(store_->cf(kRuns), prefix);
  for (Family f : {kCheckpoints, kPredictions, kScores, kPairs, kDrift}) {
    batch_.DeleteRange(store_->cf(f), prefix, PrefixSuccessor(prefix));
  }
}

// ---- open ----

// Reports RocksDB's background errors to the store, which resumes writes itself.
class Store::Listener : public rocksdb::EventListener {
 public:
  explicit Listener(Store* store) : store_(store) {}
  void OnBackgroundError(rocksdb::BackgroundErrorReason /*reason*/,
                         rocksdb::Status* bg_error) override {
    if (bg_error != nullptr && !bg_error->ok()) store_->OnBackgroundError(*bg_error);
  }
  // RocksDB's own recovery from a full disk (SstFileManager) waits until the free space
  // reaches its reserved disk buffer, the write buffer size (64 MiB by default): on a
  // small disk it never starts, and while it is pending DB::Resume() answers Busy, so
  // writes fail until a restart. The store resumes instead (Store::ResumeIfStopped).
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/, rocksdb::Status /*error*/,
                            bool* auto_recovery) override {
    if (auto_recovery != nullptr) *auto_recovery = false;
  }
  void OnErrorRecoveryEnd(const rocksdb::BackgroundErrorRecoveryInfo& info) override {
    if (info.new_bg_error.ok()) store_->OnRecovered();
  }

 private:
  Store* const store_;
};

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& dir,
                                                   const StoreOptions& store_options) {
  std::unique_ptr<Store> store(new Store);
  store->dir_ = dir;
  store->options_ = store_options;
  rocksdb::Options options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  if (store_options.file_system != nullptr) {
    store->env_ = rocksdb::NewCompositeEnv(store_options.file_system);
    options.env = store->env_.get();
  }
  rocksdb::Status made = options.env->CreateDirIfMissing(dir);
  if (!made.ok()) {
    return FromRocks(made, absl::StrCat("creating the data dir ", dir));
  }
  // RocksDB's info log without RocksDB's file writer (see store_logger.h).
  ASSIGN_OR_RETURN(store->logger_, StoreLogger::Open(dir));
  options.info_log = store->logger_;
  // A torn last record (a crash mid-write) is dropped; any other checksum error fails
  // Open. The default, kPointInTimeRecovery, opens and silently stops replaying at the
  // first bad record, losing every later committed write.
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  options.paranoid_checks = true;
  // No automatic resume thread: the store resumes at the next write (ResumeIfStopped).
  options.max_bgerror_resume_count = 0;
  options.writable_file_max_buffer_size = kLogBufferBytes;
  // Memtables and the write-ahead log sized to the data dir's filesystem: with RocksDB's
  // defaults (64 MiB memtables, WAL up to 4x that before a flush) a data dir of a few MiB
  // fills with WAL and never flushes. A 16th (memtable) and an 8th (WAL) of the
  // filesystem, within RocksDB's defaults, keep a small disk usable.
  struct statvfs fs_info;
  if (statvfs(dir.c_str(), &fs_info) == 0) {
    const uint64_t total = static_cast<uint64_t>(fs_info.f_blocks) * fs_info.f_frsize;
    options.write_buffer_size =
        std::clamp<uint64_t>(total / 16, 256u << 10, options.write_buffer_size);
    options.max_total_wal_size = std::clamp<uint64_t>(total / 8, 512u << 10, 256u << 20);
  }
  // No preallocation: space a file holds in reserve hides how full the disk is from the
  // reserve check, and a write then fails at a moment the statvfs figure did not predict.
  options.allow_fallocate = false;
  options.listeners.push_back(std::make_shared<Listener>(store.get()));
  store->sst_files_.reset(rocksdb::NewSstFileManager(options.env, store->logger_));
  if (store_options.max_sst_bytes > 0) {
    store->sst_files_->SetMaxAllowedSpaceUsage(store_options.max_sst_bytes);
  }
  options.sst_file_manager = store->sst_files_;
  // Tickers for steadyeval_rocksdb_write_stall_seconds_total (STALL_MICROS). The default
  // stats level (kExceptDetailedTimers) skips timing inside the DB mutex and compression,
  // so the cost is a few atomic increments per write.
  options.statistics = rocksdb::CreateDBStatistics();

  std::vector<std::string> existing;
  rocksdb::Status list = rocksdb::DB::ListColumnFamilies(options, dir, &existing);
  if (!list.ok()) existing.clear();  // a fresh directory

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const char* name : kFamilyNames) {
    descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions(options));
  }
  // RocksDB requires every existing family to be opened, including ones we do not know.
  std::vector<std::string> others = {rocksdb::kDefaultColumnFamilyName};
  for (const std::string& name : existing) {
    bool known = name == rocksdb::kDefaultColumnFamilyName;
    for (const char* ours : kFamilyNames) known = known || name == ours;
    if (!known) others.push_back(name);
  }
  for (const std::string& name : others) {
    descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions(options));
  }

  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(rocksdb::DBOptions(options), dir, descriptors, &handles, &db);
  if (!s.ok()) {
    if (s.IsCorruption()) return DamagedAtOpen(dir, s, store->logger_->CorruptionLines());
    if (IsSpaceError(s)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "storage: opening the database in ", dir, ": ", s.ToString(),
          " (free space on its filesystem, then start again)"));
    }
    return FromRocks(s, absl::StrCat("opening the database in ", dir,
                                     " (is another steadyeval-server using it?)"));
  }
  store->statistics_ = options.statistics;
  store->db_.reset(db);
  store->handles_.assign(handles.begin(), handles.begin() + kNumFamilies);
  store->other_handles_.assign(handles.begin() + kNumFamilies, handles.end());
  RETURN_IF_ERROR(store->CheckSchema(dir));
  return store;
}

Store::~Store() {
  if (!db_) return;
  for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
  for (auto* h : other_handles_) db_->DestroyColumnFamilyHandle(h);
  db_->Close();
}

absl::Status Store::CheckSchema(const std::string& dir) {
  ASSIGN_OR_RETURN(std::optional<std::string> version, GetMeta(kSchemaVersionKey));
  if (!version.has_value()) {
    // Only a database with no runs may be stamped: anything else lost its version record.
    bool has_runs = false;
    RETURN_IF_ERROR(ScanRuns("", 1, [&](const v1::Run&) {
      has_runs = true;
      return false;
    }));
    if (has_runs) {
      return absl::DataLossError(absl::StrCat(
          "database in ", dir, " holds runs but no schema version record (restore a backup)"));
    }
    return PutMeta(kSchemaVersionKey, std::to_string(kSchemaVersion));
  }
  uint32_t stored = 0;
  if (!absl::SimpleAtoi(*version, &stored)) {
    return absl::DataLossError(absl::StrCat("database in ", dir, ": schema version record '",
                                            *version, "' is not a number (restore a backup)"));
  }
  if (stored == 1) return MigrateV1ToV2(dir);
  if (stored != kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "database in ", dir, " has schema version ", stored, "; this steadyeval-server reads ",
        "version ", kSchemaVersion,
        " (run the steadyeval-server release that wrote it, or restore a backup)"));
  }
  return absl::OkStatus();
}

absl::Status Store::MigrateV1ToV2(const std::string& dir) {
  // Open created `pairs` and `drift` (create_missing_column_families); they start empty
  // and the coordinator recomputes pair figures for sequences without them at start-up.
  for (Family f : {kPairs, kDrift}) {
    if (cf(f) == nullptr) {
      return absl::InternalError(absl::StrCat("migrating the database in ", dir,
                                              " to schema 2: column family ", kFamilyNames[f],
                                              " was not created"));
    }
  }
  return PutMeta(kSchemaVersionKey, std::to_string(kSchemaVersion));
}

absl::Status Store::Commit(Batch batch) { return Write(&batch.batch_, "committing a write batch"); }

absl::Status Store::PutMeta(absl::string_view key, absl::string_view value) {
  rocksdb::WriteBatch batch;
  batch.Put(cf(kMeta), ToSlice(key), ToSlice(value));
  return Write(&batch, absl::StrCat("writing meta ", key));
}

// ---- storage faults and health ----

const char* Store::RefusalName(Refusal reason) {
  switch (reason) {
    case Refusal::kReserve: return "reserve";
    case Refusal::kSstLimit: return "sst_limit";
    case Refusal::kNoSpace: return "no_space";
    case Refusal::kWriteError: return "write_error";
    case Refusal::kNumRefusals: break;
  }
  return "unknown";
}

absl::Status Store::Write(rocksdb::WriteBatch* batch, absl::string_view what) {
  RETURN_IF_ERROR(ReadyForWrite(batch->GetDataSize(), what));
  rocksdb::WriteOptions options;
  options.sync = true;
  rocksdb::Status s = db_->Write(options, batch);
  if (!s.ok()) {
    Refusal reason = Refusal::kWriteError;
    absl::Status error = WriteError(s, what, &reason);
    return Refuse(reason, std::move(error));
  }
  bool healthy;
  {
    absl::MutexLock lock(&health_mu_);
    healthy = healthy_;
  }
  if (!healthy) SetHealth(true, "");
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Store::FreeBytes() const {
  if (options_.file_system != nullptr) {
    uint64_t free = 0;
    rocksdb::IOStatus s =
        options_.file_system->GetFreeSpace(dir_, rocksdb::IOOptions(), &free, nullptr);
    if (!s.ok()) {
      return absl::UnavailableError(
          absl::StrCat("storage: cannot read the free space of ", dir_, ": ", s.ToString()));
    }
    return free;
  }
  struct statvfs st;
  if (statvfs(dir_.c_str(), &st) != 0) {
    return absl::UnavailableError(absl::StrCat("storage: cannot read the free space of ", dir_,
                                               ": ", strerror(errno)));
  }
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

absl::Status Store::ReadyForWrite(uint64_t bytes, absl::string_view what) {
  absl::StatusOr<uint64_t> free = FreeBytes();
  if (!free.ok()) return Refuse(Refusal::kWriteError, free.status());
  {
    absl::MutexLock lock(&health_mu_);
    last_free_bytes_ = *free;
  }
  const uint64_t reserve = options_.reserve_bytes;
  if (reserve > 0 && *free < reserve + bytes) {
    return Refuse(Refusal::kReserve,
                  absl::ResourceExhaustedError(absl::StrCat(
                      "storage: ", what, " (", bytes, " bytes) refused: the data dir ", dir_,
                      " has ", *free, " bytes free, less than this write plus the reserve of ",
                      reserve, " bytes (--storage_reserve_bytes); free space on its "
                      "filesystem and writes resume by themselves")));
  }
  if (options_.max_sst_bytes > 0 && sst_files_->IsMaxAllowedSpaceReached()) {
    return Refuse(Refusal::kSstLimit,
                  absl::ResourceExhaustedError(absl::StrCat(
                      "storage: ", what, " refused: RocksDB's table files in ", dir_,
                      " reached the limit of ", options_.max_sst_bytes,
                      " bytes (--storage_max_sst_bytes); raise the limit")));
  }
  Refusal reason = Refusal::kWriteError;
  absl::Status resumed = ResumeIfStopped(what, &reason);
  if (!resumed.ok()) return Refuse(reason, std::move(resumed));
  return absl::OkStatus();
}

absl::Status Store::ResumeIfStopped(absl::string_view what, Refusal* reason) {
  {
    absl::MutexLock lock(&health_mu_);
    if (!background_error_) return absl::OkStatus();
  }
  absl::MutexLock resume_lock(&resume_mu_);
  std::string error;
  bool fatal;
  {
    absl::MutexLock lock(&health_mu_);
    if (!background_error_) return absl::OkStatus();  // another thread resumed it
    error = background_error_text_;
    fatal = background_error_fatal_;
  }
  if (fatal) {
    *reason = Refusal::kWriteError;
    return absl::UnavailableError(absl::StrCat(
        "storage: ", what, " refused: RocksDB stopped writes to ", dir_, " for good after \"",
        error, "\" (an error it does not resume from): restart steadyeval-server; everything "
        "committed before is kept"));
  }
  // DB::Resume flushes every memtable and starts a new write-ahead log; when a write fails
  // on the way, RocksDB 7.8 makes the error fatal (only a restart clears it). So resume
  // only once the disk takes writes again.
  RETURN_IF_ERROR(ProbeWritable(what, error, reason));
  rocksdb::Status s = db_->Resume();
  if (s.ok()) {
    OnRecovered();
    std::cerr << "steadyeval-server: storage: RocksDB resumed writes to " << dir_ << " after \""
              << error << "\"\n";
    return absl::OkStatus();
  }
  return WriteError(
      s, absl::StrCat(what, ": RocksDB stopped writes after \"", error, "\"; resuming"), reason);
}

absl::Status Store::ProbeWritable(absl::string_view what, const std::string& error,
                                  Refusal* reason) {
  uint64_t memtables = 0;
  db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kCurSizeAllMemTables, &memtables);
  absl::StatusOr<uint64_t> free = FreeBytes();
  if (!free.ok()) {
    *reason = Refusal::kWriteError;
    return free.status();
  }
  // A resume writes the memtables out, and first the failed log's unwritten buffer (up to
  // writable_file_max_buffer_size); keep the reserve on top.
  const uint64_t needed = options_.reserve_bytes + memtables + kLogBufferBytes;
  if (*free < needed) {
    *reason = Refusal::kNoSpace;
    return absl::ResourceExhaustedError(absl::StrCat(
        "storage: ", what, " refused: RocksDB stopped writes to ", dir_, " after \"", error,
        "\"; it resumes by itself once the data dir has ", needed, " bytes free (it has ", *free,
        "): free space on its filesystem"));
  }
  rocksdb::Env* env = db_->GetEnv();
  const std::string probe = dir_ + "/steadyeval-write-probe";
  std::unique_ptr<rocksdb::WritableFile> file;
  rocksdb::Status s = env->NewWritableFile(probe, &file, rocksdb::EnvOptions());
  if (s.ok()) s = file->Append(std::string(4096, '\0'));
  if (s.ok()) s = file->Sync();
  if (file != nullptr) {
    rocksdb::Status closed = file->Close();
    if (s.ok()) s = closed;
  }
  env->DeleteFile(probe).PermitUncheckedError();
  if (s.ok()) return absl::OkStatus();
  return WriteError(s, absl::StrCat(what, ": RocksDB stopped writes after \"", error,
                                    "\"; the data dir does not take writes yet (probe file ",
                                    probe, ")"),
                    reason);
}

absl::Status Store::WriteError(const rocksdb::Status& s, absl::string_view what,
                               Refusal* reason) const {
  if (s.subcode() == rocksdb::Status::kSpaceLimit) {
    *reason = Refusal::kSstLimit;
    return absl::ResourceExhaustedError(absl::StrCat(
        "storage: ", what, " failed: ", s.ToString(), " (RocksDB's table files in ", dir_,
        " reached --storage_max_sst_bytes; raise it)"));
  }
  if (s.IsNoSpace()) {
    *reason = Refusal::kNoSpace;
    return absl::ResourceExhaustedError(absl::StrCat(
        "storage: ", what, " failed: ", s.ToString(), " (the data dir ", dir_,
        " is out of space; free space on its filesystem and writes resume by themselves)"));
  }
  *reason = Refusal::kWriteError;
  return absl::UnavailableError(absl::StrCat(
      "storage: ", what, " failed: ", s.ToString(), " (writes to ", dir_,
      " are retried at every commit; if this persists, check the disk and restart "
      "steadyeval-server)"));
}

absl::Status Store::Refuse(Refusal reason, absl::Status status) {
  {
    absl::MutexLock lock(&health_mu_);
    ++refused_[static_cast<int>(reason)];
  }
  SetHealth(false, std::string(status.message()));
  return status;
}

void Store::SetHealth(bool healthy, const std::string& reason) {
  absl::MutexLock lock(&health_mu_);
  if (healthy == healthy_ && (healthy || reason == unhealthy_reason_)) return;
  const bool changed = healthy != healthy_;
  healthy_ = healthy;
  unhealthy_reason_ = healthy ? "" : reason;
  if (!changed) return;
  if (healthy) {
    std::cerr << "steadyeval-server: storage healthy again: writes to " << dir_
              << " go through\n";
  } else {
    std::cerr << "steadyeval-server: storage unhealthy, writes are refused: " << reason << "\n";
  }
  if (health_observer_) health_observer_(healthy, unhealthy_reason_);
}

void Store::SetHealthObserver(std::function<void(bool, const std::string&)> observer) {
  absl::MutexLock lock(&health_mu_);
  health_observer_ = std::move(observer);
}

Store::Health Store::GetHealth() const {
  absl::MutexLock lock(&health_mu_);
  Health health;
  health.healthy = healthy_;
  health.reason = unhealthy_reason_;
  health.free_bytes = last_free_bytes_;
  health.reserve_bytes = options_.reserve_bytes;
  std::copy(std::begin(refused_), std::end(refused_), std::begin(health.refused));
  return health;
}

void Store::RefreshHealth() {
  absl::StatusOr<uint64_t> free = FreeBytes();
  if (!free.ok()) {
    SetHealth(false, std::string(free.status().message()));
    return;
  }
  {
    absl::MutexLock lock(&health_mu_);
    last_free_bytes_ = *free;
  }
  if (options_.reserve_bytes > 0 && *free < options_.reserve_bytes) {
    SetHealth(false, absl::StrCat("storage: the data dir ", dir_, " has ", *free,
                                  " bytes free, less than the reserve of ",
                                  options_.reserve_bytes,
                                  " bytes (--storage_reserve_bytes): writes are refused until "
                                  "space is freed"));
    return;
  }
  if (options_.max_sst_bytes > 0 && sst_files_->IsMaxAllowedSpaceReached()) {
    SetHealth(false, absl::StrCat("storage: RocksDB's table files in ", dir_,
                                  " reached the limit of ", options_.max_sst_bytes,
                                  " bytes (--storage_max_sst_bytes): writes are refused"));
    return;
  }
  Refusal reason = Refusal::kWriteError;
  absl::Status resumed = ResumeIfStopped("resuming writes", &reason);
  if (!resumed.ok()) {
    SetHealth(false, std::string(resumed.message()));
    return;
  }
  SetHealth(true, "");
}

void Store::OnBackgroundError(const rocksdb::Status& status) {
  const std::string text = status.ToString();
  bool fatal;
  {
    absl::MutexLock lock(&health_mu_);
    background_error_ = true;
    background_error_text_ = text;
    background_error_fatal_ =
        background_error_fatal_ || status.severity() >= rocksdb::Status::Severity::kFatalError;
    fatal = background_error_fatal_;
  }
  SetHealth(false, absl::StrCat("storage: RocksDB stopped writes to ", dir_, ": ", text,
                                fatal ? " (an error it does not resume from: restart "
                                        "steadyeval-server)"
                                      : " (resumed at the next write once the disk takes "
                                        "writes again)"));
}

void Store::OnRecovered() {
  absl::MutexLock lock(&health_mu_);
  background_error_ = false;
  background_error_text_.clear();
}

absl::StatusOr<std::optional<std::string>> Store::GetMeta(absl::string_view key) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf(kMeta), ToSlice(key), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  RETURN_IF_ERROR(FromRocks(s, absl::StrCat("reading meta ", key)));
  return std::optional<std::string>(std::move(value));
}

// ---- backup ----

namespace {

// Bytes of the regular files under `dir` (0 when it does not exist).
uint64_t TreeBytes(const std::filesystem::path& dir) {
  std::error_code ec;
  uint64_t total = 0;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) {
      const uint64_t size = it->file_size(size_ec);
      if (!size_ec) total += size;
    }
  }
  return total;
}

// The status for a BackupEngine failure of `what`.
absl::Status FromBackupEngine(const rocksdb::Status& s, absl::string_view what) {
  if (IsSpaceError(s)) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": ", s.ToString(), " (free space there, or back up elsewhere)"));
  }
  if (s.IsCorruption()) return absl::DataLossError(absl::StrCat(what, ": ", s.ToString()));
  if (s.IsNotFound()) return absl::NotFoundError(absl::StrCat(what, ": ", s.ToString()));
  return absl::FailedPreconditionError(absl::StrCat(what, ": ", s.ToString()));
}

}  // namespace

absl::StatusOr<Store::BackupResult> Store::Backup(const std::string& to_dir) {
  namespace fs = std::filesystem;
  if (to_dir.empty()) {
    return absl::InvalidArgumentError("no backup folder given (steadyeval backup --to DIR)");
  }
  std::error_code ec;
  const fs::path target = fs::weakly_canonical(fs::absolute(to_dir), ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("backup folder ", to_dir, " cannot be resolved: ", ec.message()));
  }
  const fs::path data = fs::weakly_canonical(fs::absolute(dir_), ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot resolve the data dir ", dir_));
  auto [data_end, target_it] = std::mismatch(data.begin(), data.end(), target.begin(), target.end());
  (void)target_it;
  if (data_end == data.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "backup folder ", target.string(), " is inside the data dir ", data.string(),
        ": back up to another folder, ideally on another disk"));
  }
  fs::create_directories(target, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create the backup folder ",
                                                      target.string(), ": ", ec.message()));
  }
  absl::MutexLock lock(&backup_mu_);
  const uint64_t before = TreeBytes(target);
  rocksdb::BackupEngineOptions engine_options(target.string(), rocksdb::Env::Default());
  engine_options.info_log = logger_.get();
  rocksdb::BackupEngine* raw_engine = nullptr;
  const std::string where = absl::StrCat("backing up ", dir_, " to ", target.string());
  rocksdb::Status s = rocksdb::BackupEngine::Open(engine_options, db_->GetEnv(), &raw_engine);
  if (!s.ok()) return FromBackupEngine(s, where);
  std::unique_ptr<rocksdb::BackupEngine> engine(raw_engine);
  rocksdb::CreateBackupOptions create;
  // The live write-ahead log is copied too (BackupEngineOptions::backup_log_files), so
  // the backup holds every committed write without flushing memtables here.
  create.flush_before_backup = false;
  rocksdb::BackupID id = 0;
  s = engine->CreateNewBackup(create, db_.get(), &id);
  if (!s.ok()) return FromBackupEngine(s, where);
  s = engine->VerifyBackup(id, /*verify_with_checksum=*/true);
  if (!s.ok()) return FromBackupEngine(s, absl::StrCat(where, ": verifying backup ", id));
  BackupResult result;
  result.backup_id = id;
  const uint64_t after = TreeBytes(target);
  result.bytes = after > before ? after - before : 0;
  result.path = target.string();
  return result;
}

absl::StatusOr<Store::RestoreResult> Store::Restore(const std::string& from_dir,
                                                    const std::string& data_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (from_dir.empty() || data_dir.empty()) {
    return absl::InvalidArgumentError("restore needs --from BACKUP_DIR and --data_dir DIR");
  }
  if (!fs::is_directory(from_dir, ec)) {
    return absl::NotFoundError(absl::StrCat("backup folder ", from_dir, " does not exist"));
  }
  if (fs::exists(data_dir, ec) && !fs::is_empty(data_dir, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data dir ", data_dir, " is not empty: restore into a new (or empty) folder, then "
        "start steadyeval-server with --data_dir on it"));
  }
  rocksdb::BackupEngineReadOnly* raw_engine = nullptr;
  rocksdb::Status s = rocksdb::BackupEngineReadOnly::Open(
      rocksdb::BackupEngineOptions(from_dir), rocksdb::Env::Default(), &raw_engine);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat(
        "no backup in ", from_dir, " (", s.ToString(), "; make one with `steadyeval backup --to ",
        from_dir, "`)"));
  }
  if (!s.ok()) return FromBackupEngine(s, absl::StrCat("opening the backups in ", from_dir));
  std::unique_ptr<rocksdb::BackupEngineReadOnly> engine(raw_engine);
  rocksdb::BackupInfo info;
  s = engine->GetLatestBackupInfo(&info);
  if (!s.ok()) {
    return absl::NotFoundError(absl::StrCat(
        "no backup in ", from_dir, " (make one with `steadyeval backup --to ", from_dir, "`)"));
  }
  s = engine->VerifyBackup(info.backup_id, /*verify_with_checksum=*/true);
  if (!s.ok()) {
    return FromBackupEngine(s, absl::StrCat("verifying backup ", info.backup_id, " in ", from_dir));
  }
  fs::create_directories(data_dir, ec);
  s = engine->RestoreDBFromBackup(info.backup_id, data_dir, data_dir);
  if (!s.ok()) {
    return FromBackupEngine(s, absl::StrCat("restoring backup ", info.backup_id, " from ",
                                            from_dir, " into ", data_dir));
  }
  StoreOptions check;
  check.reserve_bytes = 0;  // opening writes nothing to a restored database
  absl::StatusOr<std::unique_ptr<Store>> restored = Open(data_dir, check);
  if (!restored.ok()) {
    return Annotate(restored.status(), absl::StrCat("opening backup ", info.backup_id,
                                                    " restored into ", data_dir));
  }
  RestoreResult result;
  result.backup_id = info.backup_id;
  result.timestamp = info.timestamp;
  result.bytes = info.size;
  return result;
}

// ---- point reads ----

template <typename Proto>
absl::StatusOr<Proto> Store::GetProto(Family f, const std::string& key,
                                      absl::string_view what) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf(f), key, &value);
  if (s.IsNotFound()) return absl::NotFoundError(absl::StrCat(what, " not found"));
  RETURN_IF_ERROR(FromRocks(s, absl::StrCat("reading ", what)));
  Proto proto;
  if (!proto.ParseFromString(value)) {
    return absl::DataLossError(absl::StrCat("stored ", what, " does not parse (corrupt record)"));
  }
  return proto;
}

absl::StatusOr<v1::Run> Store::GetRun(absl::string_view name) const {
  return GetProto<v1::Run>(kRuns, RunKey(name), absl::StrCat("run '", name, "'"));
}
absl::StatusOr<v1::TaskContent> Store::GetTask(absl::string_view sha256) const {
  return GetProto<v1::TaskContent>(kTasks, std::string(sha256), absl::StrCat("task ", sha256));
}
absl::StatusOr<v1::Checkpoint> Store::GetCheckpoint(absl::string_view run, uint64_t step) const {
  return GetProto<v1::Checkpoint>(kCheckpoints, CheckpointKey(run, step),
                                  absl::StrCat("checkpoint ", run, "@", step));
}
absl::StatusOr<v1::Job> Store::GetJob(uint64_t id) const {
  return GetProto<v1::Job>(kJobs, JobKey(id), absl::StrCat("job ", id));
}
absl::StatusOr<v1::Prediction> Store::GetPrediction(absl::string_view run, absl::string_view task,
                                                    absl::string_view variant, uint64_t step,
                                                    uint32_t example) const {
  return GetProto<v1::Prediction>(
      kPredictions, PredictionKey(run, task, variant, step, example),
      absl::StrCat("prediction ", run, "/", task, "/", variant, "@", step, "#", example));
}

absl::StatusOr<v1::Score> Store::GetScore(absl::string_view run, absl::string_view task,
                                          absl::string_view variant, uint64_t step) const {
  return GetProto<v1::Score>(kScores, ScoreKey(run, task, variant, step),
                             absl::StrCat("score ", run, "/", task, "/", variant, "@", step));
}
absl::StatusOr<v1::ParameterDrift> Store::GetDrift(absl::string_view run, uint64_t to_step) const {
  return GetProto<v1::ParameterDrift>(kDrift, DriftKey(run, to_step),
                                      absl::StrCat("drift ", run, "@", to_step));
}

absl::StatusOr<uint64_t> Store::GetNextJobId() const {
  ASSIGN_OR_RETURN(std::optional<std::string> value, GetMeta(kNextJobIdKey));
  if (!value.has_value()) return uint64_t{1};
  uint64_t id = 0;
  if (!absl::SimpleAtoi(*value, &id) || id == 0) {
    return absl::DataLossError(
        absl::StrCat("stored next job id '", *value, "' is not a positive number"));
  }
  return id;
}

// ---- scans ----

absl::Status Store::Scan(
    Family f, const std::string& prefix, const std::string& start,
    const std::function<bool(absl::string_view, absl::string_view)>& visit) const {
  rocksdb::ReadOptions options;
  std::string upper = PrefixSuccessor(prefix);
  rocksdb::Slice upper_slice(upper);
  if (!prefix.empty() && !upper.empty()) options.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options, cf(f)));
  for (it->Seek(start); it->Valid(); it->Next()) {
    if (!visit(ToView(it->key()), ToView(it->value()))) break;
  }
  return FromRocks(it->status(), absl::StrCat("scanning ", kFamilyNames[f]));
}

namespace {
// Adapts a typed visitor to Scan's raw one; a value that does not parse ends the scan
// with DATA_LOSS.
template <typename Proto>
struct TypedVisit {
  const std::function<bool(const Proto&)>& visit;
  absl::string_view what;
  absl::Status status;
  bool operator()(absl::string_view /*key*/, absl::string_view value) {
    Proto proto;
    if (!proto.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      status = absl::DataLossError(absl::StrCat("stored ", what, " does not parse (corrupt record)"));
      return false;
    }
    return visit(proto);
  }
};
}  // namespace

absl::Status Store::ScanRuns(absl::string_view after, size_t limit,
                             const std::function<bool(const v1::Run&)>& visit) const {
  size_t seen = 0;
  std::string after_key = after.empty() ? std::string() : RunKey(after);
  std::function<bool(const v1::Run&)> limited = [&](const v1::Run& run) {
    if (!after.empty() && run.config().name() == after) return true;
    if (!visit(run)) return false;
    ++seen;
    return limit == 0 || seen < limit;
  };
  TypedVisit<v1::Run> typed{limited, "run", absl::OkStatus()};
  RETURN_IF_ERROR(Scan(kRuns, "", after_key,
                       [&](absl::string_view k, absl::string_view v) { return typed(k, v); }));
  return typed.status;
}

absl::Status Store::ScanCheckpoints(
    absl::string_view run, const std::function<bool(const v1::Checkpoint&)>& visit) const {
  std::string prefix = run.empty() ? std::string() : RunKey(run);
  TypedVisit<v1::Checkpoint> typed{visit, "checkpoint", absl::OkStatus()};
  RETURN_IF_ERROR(Scan(kCheckpoints, prefix, prefix,
                       [&](absl::string_view k, absl::string_view v) { return typed(k, v); }));
  return typed.status;
}

absl::Status Store::ScanJobs(const std::function<bool(const v1::Job&)>& visit) const {
  TypedVisit<v1::Job> typed{visit, "job", absl::OkStatus()};
  RETURN_IF_ERROR(Scan(kJobs, "", "",
                       [&](absl::string_view k, absl::string_view v) { return typed(k, v); }));
  return typed.status;
}

absl::Status Store::ScanScores(absl::string_view run, absl::string_view task,
                               const std::function<bool(const v1::Score&)>& visit) const {
  KeyBuilder prefix;
  prefix.Str(run);
  if (!task.empty()) prefix.Str(task);
  TypedVisit<v1::Score> typed{visit, "score", absl::OkStatus()};
  RETURN_IF_ERROR(Scan(kScores, prefix.key(), prefix.key(),
                       [&](absl::string_view k, absl::string_view v) { return typed(k, v); }));
  return typed.status;
}

absl::Status Store::ScanPredictions(
    absl::string_view run, absl::string_view task, absl::string_view variant, uint64_t step,
    const std::function<bool(uint32_t, const v1::Prediction&)>& visit) const {
  std::string prefix = ScoreKey(run, task, variant, step);
  absl::Status status;
  RETURN_IF_ERROR(Scan(kPredictions, prefix, prefix,
                       [&](absl::string_view key, absl::string_view value) {
                         KeyReader reader(key.substr(prefix.size()));
                         absl::StatusOr<uint32_t> example = reader.U32();
                         v1::Prediction p;
                         if (!example.ok() || !reader.done() ||
                             !p.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
                           status = absl::DataLossError(
                               absl::StrCat("stored prediction under ", run, "/", task, "/",
                                            variant, "@", step, " is corrupt"));
                           return false;
                         }
                         return visit(*example, p);
                       }));
  return status;
}

absl::Status Store::ScanAllPredictions(
    absl::string_view run, absl::string_view task, absl::string_view variant,
    const std::function<bool(const PredictionKeyParts&, const v1::Prediction&)>& visit) const {
  KeyBuilder prefix;
  prefix.Str(run);
  if (!task.empty()) {
    prefix.Str(task);
    if (!variant.empty()) prefix.Str(variant);
  }
  const std::string run_prefix = RunKey(run);
  absl::Status status;
  RETURN_IF_ERROR(Scan(kPredictions, prefix.key(), prefix.key(),
                       [&](absl::string_view key, absl::string_view value) {
                         KeyReader reader(key.substr(run_prefix.size()));
                         PredictionKeyParts parts;
                         absl::StatusOr<std::string> t = reader.Str();
                         absl::StatusOr<std::string> v = t.ok() ? reader.Str() : t;
                         absl::StatusOr<uint64_t> step = v.ok() ? reader.U64() : v.status();
                         absl::StatusOr<uint32_t> ex = step.ok() ? reader.U32() : step.status();
                         v1::Prediction p;
                         if (!ex.ok() || !reader.done() ||
                             !p.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
                           status = absl::DataLossError(absl::StrCat(
                               "stored prediction of run ", run, " is corrupt"));
                           return false;
                         }
                         if (!variant.empty() && *v != variant) return true;
                         parts.task = std::move(*t);
                         parts.variant = std::move(*v);
                         parts.step = *step;
                         parts.example = *ex;
                         return visit(parts, p);
                       }));
  return status;
}

absl::Status Store::ScanPairs(
    absl::string_view run, absl::string_view task, absl::string_view variant,
    const std::function<bool(const std::string&, const std::string&, const v1::PairStats&)>& visit)
    const {
  KeyBuilder prefix;
  prefix.Str(run);
  if (!task.empty()) prefix.Str(task).Str(variant);
  const std::string run_prefix = RunKey(run);
  absl::Status status;
  RETURN_IF_ERROR(Scan(kPairs, prefix.key(), prefix.key(),
                       [&](absl::string_view key, absl::string_view value) {
                         KeyReader reader(key.substr(run_prefix.size()));
                         absl::StatusOr<std::string> t = reader.Str();
                         absl::StatusOr<std::string> v = t.ok() ? reader.Str() : t;
                         v1::PairStats pair;
                         if (!v.ok() ||
                             !pair.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
                           status = absl::DataLossError(
                               absl::StrCat("stored pair figures of run ", run, " are corrupt"));
                           return false;
                         }
                         return visit(*t, *v, pair);
                       }));
  return status;
}

absl::StatusOr<uint64_t> Store::CountRunKeys(absl::string_view run) const {
  const std::string prefix = RunKey(run);
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf(kRuns), prefix, &value);
  uint64_t keys = s.ok() ? 1 : 0;
  if (!s.ok() && !s.IsNotFound()) RETURN_IF_ERROR(FromRocks(s, absl::StrCat("reading run ", run)));
  for (Family f : {kCheckpoints, kPredictions, kScores, kPairs, kDrift}) {
    RETURN_IF_ERROR(Scan(f, prefix, prefix, [&keys](absl::string_view, absl::string_view) {
      ++keys;
      return true;
    }));
  }
  return keys;
}

absl::Status Store::ScanDrifts(absl::string_view run,
                               const std::function<bool(const v1::ParameterDrift&)>& visit) const {
  const std::string prefix = RunKey(run);
  TypedVisit<v1::ParameterDrift> typed{visit, "drift", absl::OkStatus()};
  RETURN_IF_ERROR(Scan(kDrift, prefix, prefix,
                       [&](absl::string_view k, absl::string_view v) { return typed(k, v); }));
  return typed.status;
}

// ---- stats ----

bool Store::WriteStalled(uint64_t actual_delayed_write_rate, uint64_t is_write_stopped) {
  return actual_delayed_write_rate > 0 || is_write_stopped == 1;
}

absl::StatusOr<Store::Stats> Store::GetStats() const {
  auto property = [this](rocksdb::ColumnFamilyHandle* family,
                         const std::string& name) -> absl::StatusOr<uint64_t> {
    uint64_t value = 0;
    if (!db_->GetIntProperty(family, name, &value)) {
      return absl::InternalError(absl::StrCat("RocksDB does not report ", name, " for family ",
                                              family->GetName()));
    }
    return value;
  };
  Stats stats;
  for (const auto* families : {&handles_, &other_handles_}) {
    for (rocksdb::ColumnFamilyHandle* family : *families) {
      ASSIGN_OR_RETURN(uint64_t sst,
                       property(family, rocksdb::DB::Properties::kTotalSstFilesSize));
      ASSIGN_OR_RETURN(uint64_t memtable,
                       property(family, rocksdb::DB::Properties::kCurSizeAllMemTables));
      ASSIGN_OR_RETURN(uint64_t live,
                       property(family, rocksdb::DB::Properties::kEstimateLiveDataSize));
      stats.sst_bytes += sst;
      stats.memtable_bytes += memtable;
      stats.live_data_bytes += live;
    }
  }
  // The write controller is DB-wide: any family reports it.
  ASSIGN_OR_RETURN(uint64_t delayed_rate,
                   property(db_->DefaultColumnFamily(),
                            rocksdb::DB::Properties::kActualDelayedWriteRate));
  ASSIGN_OR_RETURN(uint64_t stopped, property(db_->DefaultColumnFamily(),
                                              rocksdb::DB::Properties::kIsWriteStopped));
  stats.write_stalled = WriteStalled(delayed_rate, stopped);
  stats.stall_micros = statistics_->getTickerCount(rocksdb::STALL_MICROS);
  return stats;
}

absl::Status Store::Flush() {
  std::vector<rocksdb::ColumnFamilyHandle*> families(handles_);
  families.insert(families.end(), other_handles_.begin(), other_handles_.end());
  rocksdb::FlushOptions options;
  options.wait = true;
  return FromRocks(db_->Flush(options, families), "flushing the database");
}

}  // namespace steadyeval
