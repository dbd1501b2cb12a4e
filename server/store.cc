#include "server/store.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/keys.h"
#include "common/status.h"
#include "rocksdb/options.h"
#include "rocksdb/statistics.h"

namespace steadyeval {
namespace {

// By Store::Family. Version 1 had the first kFamiliesV1 of them.
constexpr const char* kFamilyNames[] = {"meta",        "runs",   "tasks", "checkpoints", "jobs",
                                        "predictions", "scores", "pairs", "drift"};
constexpr size_t kFamiliesV1 = 7;
constexpr absl::string_view kSchemaVersionKey = "schema_version";
constexpr absl::string_view kNextJobIdKey = "next_job_id";

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  if (s.IsCorruption()) return absl::DataLossError(absl::StrCat(what, ": ", s.ToString()));
  return absl::InternalError(absl::StrCat(what, ": ", s.ToString()));
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

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& dir) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
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

  std::unique_ptr<Store> store(new Store);
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(rocksdb::DBOptions(options), dir, descriptors, &handles, &db);
  if (!s.ok()) {
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

absl::Status Store::Commit(Batch batch) {
  rocksdb::WriteOptions options;
  options.sync = true;
  return FromRocks(db_->Write(options, &batch.batch_), "committing a write batch");
}

absl::Status Store::PutMeta(absl::string_view key, absl::string_view value) {
  rocksdb::WriteOptions options;
  options.sync = true;
  return FromRocks(db_->Put(options, cf(kMeta), ToSlice(key), ToSlice(value)),
                   absl::StrCat("writing meta ", key));
}

absl::StatusOr<std::optional<std::string>> Store::GetMeta(absl::string_view key) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf(kMeta), ToSlice(key), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  RETURN_IF_ERROR(FromRocks(s, absl::StrCat("reading meta ", key)));
  return std::optional<std::string>(std::move(value));
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
