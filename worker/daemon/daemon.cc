#include "worker/daemon/daemon.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/grpc_status.h"
#include "common/status.h"
#include "api/job_failure_proto.h"
#include "api/protocol.h"
#include "api/task_content.h"
#include "api/variant_proto.h"
#include "s3/s3_file_system.h"
#include "s3/s3_uri.h"

namespace steadyeval {

namespace {

constexpr int64_t kRpcDeadlineMs = 30'000;
constexpr int64_t kReportDeadlineMs = 600'000;

void SetDeadline(grpc::ClientContext& ctx, int64_t ms) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
}

TaskKind FromProto(v1::TaskKind kind) {
  return kind == v1::TASK_KIND_MULTIPLE_CHOICE ? TaskKind::kMultipleChoice : TaskKind::kGeneration;
}

WorkerMetricsOptions MetricsOptionsFor(const DaemonOptions& options) {
  WorkerMetricsOptions metrics;
  metrics.worker = options.name;
  metrics.device = options.device;
  metrics.cache_limit_bytes = options.cache.limit_bytes;
  return metrics;
}

void Log(const std::string& line) { fprintf(stderr, "steadyeval-worker: %s\n", line.c_str()); }

// Heartbeats one held lease from a thread of its own: every `interval_ms` of `clock`'s
// time it calls `send`, which makes one Heartbeat call and returns whether the lease is
// still ours. Once it says no, lost() stays true and nothing more is sent. The destructor
// wakes the thread and joins it. lost() may be read from any thread.
class LeaseHeartbeat {
 public:
  LeaseHeartbeat(const Clock& clock, int64_t interval_ms, std::function<bool()> send)
      : clock_(clock), interval_nanos_(interval_ms * 1'000'000), send_(std::move(send)),
        thread_([this] { Loop(); }) {}
  ~LeaseHeartbeat() {
    {
      absl::MutexLock lock(&mu_);
      finished_ = true;
    }
    thread_.join();
  }
  const std::atomic<bool>& lost() const { return lost_; }

 private:
  void Loop() {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        if (clock_.AwaitWithTimeout(mu_, absl::Condition(&finished_), interval_nanos_)) return;
      }
      if (!lost_ && !send_()) lost_ = true;
    }
  }

  const Clock& clock_;
  const int64_t interval_nanos_;
  const std::function<bool()> send_;
  std::atomic<bool> lost_{false};
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // the job is over: the thread returns
  std::thread thread_;  // last: starts once the fields above are set
};

}  // namespace

absl::StatusOr<PathMapping> ParsePathMapping(const std::string& spec) {
  size_t eq = spec.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--path_map '", spec, "': expected FROM=TO, e.g. /mnt/ckpt=/data/ckpt"));
  }
  return PathMapping{spec.substr(0, eq), spec.substr(eq + 1)};
}

std::string MapPath(const std::vector<PathMapping>& mappings, const std::string& path) {
  for (const PathMapping& m : mappings) {
    if (path.compare(0, m.from.size(), m.from) != 0) continue;
    // Only at a path-component boundary: /mnt/ckpt must not rewrite /mnt/ckpt2.
    if (path.size() == m.from.size() || path[m.from.size()] == '/' || m.from.back() == '/') {
      return m.to + path.substr(m.from.size());
    }
  }
  return path;
}

namespace {

std::filesystem::path Resolve(const std::string& path) {
  std::error_code ec;
  std::filesystem::path resolved = std::filesystem::weakly_canonical(path, ec);
  return ec ? std::filesystem::path(path).lexically_normal() : resolved;
}

bool IsUnder(const std::filesystem::path& path, const std::filesystem::path& root) {
  if (root.empty() || !root.is_absolute() || !path.is_absolute()) return false;
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p) {
    if (r->empty() && std::next(r) == root.end()) break;  // a trailing separator
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}

}  // namespace

bool ResolvesUnder(const std::string& path, const std::string& root) {
  return IsUnder(Resolve(path), Resolve(root));
}

WorkerDaemon::WorkerDaemon(DaemonOptions options,
                           std::shared_ptr<v1::WorkerService::StubInterface> stub,
                           std::unique_ptr<EvalBackend> backend)
    : options_(std::move(options)),
      stub_(std::move(stub)),
      backend_(std::move(backend)),
      metrics_(std::make_unique<WorkerMetrics>(MetricsOptionsFor(options_))) {
  options_.cache.observer = metrics_.get();
}

WorkerDaemon::~WorkerDaemon() = default;

absl::StatusOr<std::string> WorkerDaemon::StartMetrics() {
  if (options_.metrics_listen.empty()) return std::string();
  ASSIGN_OR_RETURN(metrics_server_,
                   MetricsHttpServer::Start(options_.metrics_listen,
                                            {metrics_->registry(), metrics_->device_memory()}));
  const std::string host = options_.metrics_listen.substr(0, options_.metrics_listen.rfind(':'));
  return absl::StrCat(host, ":", metrics_server_->port());
}

void WorkerDaemon::Stop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  if (acquire_ctx_ != nullptr) acquire_ctx_->TryCancel();
}

void WorkerDaemon::Drain() {
  {
    absl::MutexLock lock(&mu_);
    if (draining_) return;
    drain_deadline_nanos_ = options_.clock->MonotonicNanos() + options_.drain_grace_ms * 1'000'000;
    draining_ = true;
    if (acquire_ctx_ != nullptr) acquire_ctx_->TryCancel();
  }
  Log(absl::StrCat("draining: no new jobs; the current one is finished if that takes at most ",
                   options_.drain_grace_ms / 1000.0, " s, else handed back"));
}

bool WorkerDaemon::DrainExpired() const {
  return draining_ && options_.clock->MonotonicNanos() >= drain_deadline_nanos_;
}

bool WorkerDaemon::WaitMs(int64_t ms, bool wake_on_drain) {
  const auto woken = [&] { return stopping_.load() || (wake_on_drain && draining_.load()); };
  absl::MutexLock lock(&mu_);
  return !options_.clock->AwaitWithTimeout(mu_, absl::Condition(&woken), ms * 1'000'000);
}

absl::Status WorkerDaemon::Register() {
  v1::RegisterWorkerRequest req;
  req.set_worker_id(options_.worker_id);
  req.set_name(options_.name);
  req.set_device(options_.device);
  req.set_protocol_version(kProtocolVersion);
  v1::RegisterWorkerResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx, kRpcDeadlineMs);
  RETURN_IF_ERROR(FromGrpc(stub_->RegisterWorker(&ctx, req, &resp)));
  heartbeat_interval_ms_ = std::max<int64_t>(0, resp.heartbeat_interval_ms());
  Log(absl::StrCat("registered as ", options_.worker_id, " (coordinator instance ",
                   resp.coordinator_instance(), ")"));
  return absl::OkStatus();
}

absl::Status WorkerDaemon::Run() {
  bool registered = false;
  while (!stopping_ && !draining_) {
    if (!registered) {
      absl::Status s = Register();
      if (absl::IsUnauthenticated(s) || absl::IsPermissionDenied(s)) {
        // Retrying cannot help: the token is wrong, revoked or of the wrong role.
        return Annotate(s, "the coordinator refused this worker (check --token_file)");
      }
      if (absl::IsFailedPrecondition(s)) {  // another protocol version: retrying cannot help
        return Annotate(s, "the coordinator refused this worker");
      }
      if (!s.ok()) {
        Log(absl::StrCat("cannot register: ", s.message(), "; retrying"));
        if (!WaitMs(options_.retry_backoff_ms, /*wake_on_drain=*/true)) break;
        continue;
      }
      registered = true;
    }
    v1::AcquireJobRequest req;
    req.set_worker_id(options_.worker_id);
    req.set_wait_ms(options_.acquire_wait_ms);
    for (const WindowSumInfo& held : backend_->WindowSums()) {
      v1::WindowSumHeld* w = req.add_window_sums();
      w->set_run(held.run);
      w->set_window(held.window);
      for (uint64_t step : held.steps) w->add_steps(step);
    }
    v1::AcquireJobResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx, options_.acquire_wait_ms + kRpcDeadlineMs);
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ || draining_) break;
      acquire_ctx_ = &ctx;  // Drain() and Stop() cancel it
    }
    absl::Status s = FromGrpc(stub_->AcquireJob(&ctx, req, &resp));
    {
      absl::MutexLock lock(&mu_);
      acquire_ctx_ = nullptr;
    }
    if (s.ok() && resp.has_job() && (draining_ || stopping_)) {
      // Leased just as we began to stop: give it straight back.
      if (draining_) SendFailJob(resp.lease(), kWorkerStoppingReason, JobFailure::kWorkerStopping);
      break;
    }
    if (stopping_ || draining_) break;
    if (absl::IsNotFound(s)) {
      Log("coordinator does not know this worker (restarted?); registering again");
      registered = false;
      continue;
    }
    if (!s.ok()) {
      Log(absl::StrCat("AcquireJob: ", s.message(), "; retrying"));
      if (absl::IsUnavailable(s)) registered = false;  // it may come back as a new instance
      if (!WaitMs(options_.retry_backoff_ms, /*wake_on_drain=*/true)) break;
      continue;
    }
    if (!resp.has_job()) continue;
    RunJob(resp.lease());
  }
  if (draining_) Log("drained; stopping");
  return absl::OkStatus();
}

absl::StatusOr<Task> WorkerDaemon::GetTask(const v1::TaskContent& header,
                                           const std::atomic<bool>& lost) {
  const std::string key = TaskCacheKey(header.ref());
  if (auto it = task_cache_.find(key); it != task_cache_.end()) return it->second;
  v1::GetTaskRequest req;
  req.set_sha256(header.ref().sha256());
  req.set_worker_id(options_.worker_id);
  v1::TaskContent content;
  // An unreachable coordinator (restarting) is waited for: failing the job would spend one
  // of its attempts on something that is not the checkpoint's fault.
  absl::Status fetched;
  while (true) {
    grpc::ClientContext ctx;
    SetDeadline(ctx, kRpcDeadlineMs);
    fetched = FromGrpc(stub_->GetTask(&ctx, req, &content));
    if (!absl::IsUnavailable(fetched) || stopping_) break;
    if (lost) {
      return absl::AbortedError(absl::StrCat("fetching task ", header.ref().name(),
                                             ": the lease was lost while the coordinator was "
                                             "unreachable"));
    }
    Log(absl::StrCat("fetching task ", header.ref().name(), ": ", fetched.message(), "; retrying"));
    if (!WaitMs(options_.retry_backoff_ms)) break;
  }
  RETURN_IF_ERROR(Annotate(fetched, absl::StrCat("fetching task ", header.ref().name())));
  ASSIGN_OR_RETURN(Task task, ParseTaskContent(content, header.ref()));
  if (task.kind != FromProto(content.kind()) && content.kind() != v1::TASK_KIND_UNSPECIFIED) {
    return absl::DataLossError(absl::StrCat("task ", header.ref().name(), ": kind mismatch"));
  }
  task_cache_.emplace(key, task);
  return task;
}

absl::StatusOr<EvalSettings> SettingsForLease(const v1::LeasedJob& lease, int batch_size) {
  EvalSettings settings;
  settings.prompt.few_shots = lease.few_shots();
  std::optional<PromptLanguage> language = ParsePromptLanguage(lease.prompt_language());
  std::optional<BosMode> bos = ParseBosMode(lease.bos());
  if (!language.has_value() || !bos.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job ", lease.job().id(), ": unknown prompt language '", lease.prompt_language(),
        "' or bos mode '", lease.bos(), "' (is this worker older than the coordinator?)"));
  }
  settings.prompt.language = *language;
  settings.bos = *bos;
  settings.max_new_tokens_delta = lease.max_new_tokens_delta();
  settings.batch_size = batch_size;
  return settings;
}

void WorkerDaemon::FailJob(const v1::LeasedJob& lease, const absl::Status& why) {
  const JobFailure failure = JobFailureOf(why);
  Log(absl::StrCat("job ", lease.job().id(), " failed (", JobFailureName(failure),
                   "): ", why.message()));
  metrics_->JobFailed();
  SendFailJob(lease, std::string(why.message()), failure);
}

void WorkerDaemon::SendFailJob(const v1::LeasedJob& lease, const std::string& reason,
                               JobFailure failure) {
  for (int attempt = 0; attempt < 5 && !stopping_; ++attempt) {
    v1::FailJobRequest req;
    req.set_worker_id(options_.worker_id);
    req.set_job_id(lease.job().id());
    req.set_epoch(lease.job().epoch());
    SetJobFailure(req, failure, reason);
    req.set_lease_secret(lease.lease_secret());
    v1::FailJobResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx, kRpcDeadlineMs);
    absl::Status s = FromGrpc(stub_->FailJob(&ctx, req, &resp));
    if (s.ok() || absl::IsAborted(s) || absl::IsPermissionDenied(s)) return;
    if (absl::IsNotFound(s)) {
      (void)Register();
      continue;
    }
    if (!WaitMs(options_.retry_backoff_ms)) return;
  }
}

absl::Status WorkerDaemon::Report(const v1::LeasedJob& lease, const TaskOutputs& outputs,
                                  const std::vector<v1::ParameterDrift>& drifts) {
  const uint64_t step = lease.job().steps(lease.job().steps_size() - 1);
  v1::ReportResultsResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx, kReportDeadlineMs);
  std::unique_ptr<grpc::ClientWriterInterface<v1::ReportResultsRequest>> writer =
      stub_->ReportResults(&ctx, &resp);
  // Every message names the job, its epoch and step, and how BOS was applied.
  v1::ReportResultsRequest header;
  header.set_worker_id(options_.worker_id);
  header.set_job_id(lease.job().id());
  header.set_epoch(lease.job().epoch());
  header.set_lease_secret(lease.lease_secret());
  header.set_step(step);
  header.set_bos(backend_->BosDescription());
  header.set_tokenizer_sha256(backend_->TokenizerSha256());
  bool drifts_sent = drifts.empty();
  if (outputs.empty() && !drifts_sent) {
    v1::ReportResultsRequest msg = header;
    for (const v1::ParameterDrift& d : drifts) *msg.add_drifts() = d;
    drifts_sent = writer->Write(msg);
  }
  for (const auto& [ref, results] : outputs) {
    size_t sent = 0;
    do {
      v1::ReportResultsRequest msg = header;
      *msg.mutable_task() = ref;
      size_t end = std::min(results.size(), sent + static_cast<size_t>(options_.report_chunk));
      for (; sent < end; ++sent) {
        v1::ExampleOutput* out = msg.add_outputs();
        out->set_index(results[sent].index);
        out->set_output(results[sent].output);
        for (double ll : results[sent].option_logliks) out->add_option_logliks(ll);
      }
      msg.set_task_complete(sent == results.size());
      if (!drifts_sent) {
        for (const v1::ParameterDrift& d : drifts) *msg.add_drifts() = d;
        drifts_sent = true;
      }
      if (!writer->Write(msg)) break;  // the final status says why
    } while (sent < results.size());
  }
  writer->WritesDone();
  return FromGrpc(writer->Finish());
}

absl::Status WorkerDaemon::CheckPinnedTokenizer(const v1::LeasedJob& lease) const {
  const std::string loaded = backend_->TokenizerSha256();
  if (lease.tokenizer_sha256().empty() || loaded.empty() || loaded == lease.tokenizer_sha256()) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "tokenizer ", backend_->TokenizerPath(), " (sha256 ", loaded, ") differs from the one run ",
      lease.job().run(), " is pinned to (sha256 ", lease.tokenizer_sha256(),
      "); scores under another tokenizer are not comparable: evaluate this checkpoint in a "
      "new run"));
}

absl::Status WorkerDaemon::CheckCheckpointFolder(const v1::LeasedJob& lease,
                                                 const std::string& dir) const {
  const std::string what = absl::StrCat("job ", lease.job().id(), " (run ", lease.job().run(), ")");
  if (lease.source_root().empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": the lease names no source folder, so checkpoint ", dir,
        " cannot be checked against it; this worker opens only checkpoints under the run's "
        "source folder (upgrade the coordinator)"));
  }
  const std::string root = MapPath(options_.path_map, lease.source_root());
  const std::filesystem::path resolved_root = Resolve(root);
  if (!IsUnder(Resolve(dir), resolved_root)) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": checkpoint folder ", dir, " resolves to ", Resolve(dir).string(),
        ", outside the run's source folder ", root,
        "; this worker opens only checkpoints that resolve (after symlinks) under it"));
  }
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::filesystem::path target = Resolve(entry.path().string());
    if (!IsUnder(target, resolved_root)) {
      return absl::FailedPreconditionError(absl::StrCat(
          what, ": checkpoint file ", entry.path().string(), " resolves to ", target.string(),
          ", outside the run's source folder ", root,
          "; this worker opens only files that resolve (after symlinks) under it"));
    }
  }
  return absl::OkStatus();  // a folder that cannot be listed fails in the loader, by name
}

absl::StatusOr<std::string> WorkerDaemon::AllowedTokenizer(const v1::LeasedJob& lease) const {
  if (lease.tokenizer_path().empty()) return std::string();
  const std::string path = MapPath(options_.path_map, lease.tokenizer_path());
  const std::string what = absl::StrCat("job ", lease.job().id(), ": run ", lease.job().run(),
                                        " asks for tokenizer file ", path);
  if (options_.tokenizer_dirs.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ", but this worker opens a run's tokenizer file only under its --tokenizer_dirs, "
        "and none are given (start the worker with --tokenizer_dirs DIR naming the folder "
        "that holds it, or let the run use each checkpoint's own tokenizer)"));
  }
  const std::filesystem::path resolved = Resolve(path);
  for (const std::string& dir : options_.tokenizer_dirs) {
    if (IsUnder(resolved, Resolve(dir))) return resolved.string();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      what, " (resolves to ", resolved.string(), "), which is under none of this worker's "
      "--tokenizer_dirs (", absl::StrJoin(options_.tokenizer_dirs, ", "),
      "); add its folder to --tokenizer_dirs or let the run use each checkpoint's own tokenizer"));
}

namespace {

// An error of listing or fetching a checkpoint, as the job fails with it, prefixed with
// `context` when not empty (the cache's and listing's own messages name the path): gone is
// NOT_FOUND (permanent) or, for a window member, MembersGoneError; a full cache and a
// cancellation keep their codes; anything else (access denied, an endpoint down, a size
// mismatch, an unknown error) is retryable, with PERMISSION_DENIED reported as UNAVAILABLE
// (RunJob reads PERMISSION_DENIED as the coordinator refusing the lease).
absl::Status FetchFailure(const absl::Status& status, const std::string& context, bool window_member) {
  const absl::Status named = context.empty() ? status : Annotate(status, context);
  if (absl::IsNotFound(status)) {
    return window_member ? MembersGoneError(absl::StrCat("window member: ", named.message())) : named;
  }
  if (absl::IsCancelled(status) || absl::IsResourceExhausted(status)) return named;
  return WithJobFailure(absl::IsPermissionDenied(status) ? absl::UnavailableError(named.message()) : named,
                        JobFailure::kRetryable);
}

}  // namespace

absl::StatusOr<CheckpointCache*> WorkerDaemon::Cache() {
  if (cache_ == nullptr) {
    ASSIGN_OR_RETURN(cache_, CheckpointCache::Create(options_.cache));
  }
  return cache_.get();
}

absl::StatusOr<const ConverterSpec*> WorkerDaemon::ConverterFor(const v1::LeasedJob& lease) const {
  std::vector<std::string> names;
  for (const ConverterSpec& spec : options_.converters) {
    if (spec.name == lease.convert()) return &spec;
    names.push_back(spec.name);
  }
  return WithJobFailure(
      absl::FailedPreconditionError(absl::StrCat(
          "run ", lease.job().run(), " asks for converter '", lease.convert(),
          "', which this worker does not declare (its converters: ",
          names.empty() ? "none" : absl::StrJoin(names, ", "), "); start workers with --converter ",
          lease.convert(), "='CMD ARGS {src} {dst}' (retryable: another worker may have it)")),
      JobFailure::kRetryable);
}

absl::Status WorkerDaemon::CheckS3Checkpoint(const v1::LeasedJob& lease, const std::string& path) const {
  const std::string what = absl::StrCat("job ", lease.job().id(), " (run ", lease.job().run(), ")");
  absl::StatusOr<S3Uri> root = ParseS3Uri(lease.source_root());
  absl::StatusOr<S3Uri> uri = ParseS3Uri(path);
  if (!root.ok() || !uri.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": ", (!root.ok() ? root.status() : uri.status()).message()));
  }
  if (!IsUnderS3Prefix(*root, *uri)) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": checkpoint ", path, " is outside the run's source ", lease.source_root(),
        "; this worker fetches only checkpoints under it"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<FileSystem>> WorkerDaemon::S3FileSystemFor(const v1::LeasedJob& lease) {
  const std::string region =
      lease.s3_region().empty() ? options_.default_s3_region : lease.s3_region();
  const auto key = std::make_pair(lease.s3_endpoint(), region);
  if (auto it = s3_file_systems_.find(key); it != s3_file_systems_.end()) return it->second;
  if (!options_.s3_credentials.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "this worker has no AWS credentials for s3:// checkpoints: ",
        options_.s3_credentials.status().message()));
  }
  S3ClientOptions client;
  client.endpoint = lease.s3_endpoint();
  client.region = region;
  client.credentials = *options_.s3_credentials;
  client.clock = options_.clock;
  client.observer = metrics_.get();
  std::shared_ptr<FileSystem> fs;
  if (options_.s3_file_system) {
    ASSIGN_OR_RETURN(fs, options_.s3_file_system(client));
  } else {
    ASSIGN_OR_RETURN(std::unique_ptr<S3Client> made, S3Client::Create(std::move(client)));
    fs = std::make_shared<S3FileSystem>(std::shared_ptr<S3Client>(std::move(made)));
  }
  s3_file_systems_.emplace(key, fs);
  return fs;
}

absl::StatusOr<WorkerDaemon::LocalCheckpoint> WorkerDaemon::Materialize(
    const v1::LeasedJob& lease, const std::string& path, bool window_member,
    const std::atomic<bool>& lost) {
  const bool remote = IsS3Uri(lease.source_root());
  const ConverterSpec* converter = nullptr;
  if (!lease.convert().empty()) {
    ASSIGN_OR_RETURN(converter, ConverterFor(lease));
  }
  std::string dir;
  if (!remote) {
    dir = MapPath(options_.path_map, path);
    RETURN_IF_ERROR(CheckCheckpointFolder(lease, dir));
    // As before issue #18: a local folder without a converter is read in place.
    if (converter == nullptr) return LocalCheckpoint{dir, std::nullopt};
  }
  std::shared_ptr<FileSystem> fs;
  std::string origin;
  if (remote) {
    RETURN_IF_ERROR(CheckS3Checkpoint(lease, path));
    absl::StatusOr<std::shared_ptr<FileSystem>> made = S3FileSystemFor(lease);
    if (!made.ok()) return FetchFailure(made.status(), absl::StrCat("checkpoint ", path), window_member);
    fs = *made;
    dir = path;
    origin = absl::StrCat("s3 ", lease.s3_endpoint().empty() ? "AWS" : lease.s3_endpoint());
  } else {
    fs = std::shared_ptr<FileSystem>(FileSystem::Local(), [](FileSystem*) {});
    origin = "local";
  }
  const std::string what = absl::StrCat("checkpoint ", dir);
  absl::StatusOr<CheckpointCache*> cache = Cache();
  if (!cache.ok()) return WithJobFailure(Annotate(cache.status(), what), JobFailure::kRetryable);
  absl::StatusOr<CheckpointIdentity> identity = IdentifyCheckpoint(*fs, origin, dir);
  if (!identity.ok()) return FetchFailure(identity.status(), "", window_member);
  const CheckpointCache::CancelFn cancelled = [this, &lost] {
    return lost.load() || stopping_.load() || DrainExpired();
  };
  if (converter == nullptr) {
    absl::StatusOr<CacheEntry> fetched = (*cache)->Fetch(*fs, *identity, cancelled);
    if (!fetched.ok()) return FetchFailure(fetched.status(), "", window_member);
    const std::string local = fetched->path();
    return LocalCheckpoint{local, std::move(*fetched)};
  }
  // Converted: the source is fetched (remote) or read in place (local) only on a miss.
  bool source_failed = false;
  auto source = [&]() -> absl::StatusOr<CheckpointCache::ConvertSource> {
    if (!remote) return CheckpointCache::ConvertSource{dir, std::nullopt};
    absl::StatusOr<CacheEntry> fetched = (*cache)->Fetch(*fs, *identity, cancelled);
    if (!fetched.ok()) {
      source_failed = true;
      return FetchFailure(fetched.status(), "", window_member);
    }
    const std::string local = fetched->path();
    return CheckpointCache::ConvertSource{local, std::move(*fetched)};
  };
  ConverterRunOptions run;
  run.timeout_ms = options_.converter_timeout_ms;
  run.clock = options_.clock;
  absl::StatusOr<CacheEntry> converted = (*cache)->Convert(*identity, *converter, run, source, cancelled);
  if (!converted.ok()) {
    if (source_failed || absl::IsCancelled(converted.status()) ||
        absl::IsResourceExhausted(converted.status())) {
      return converted.status();
    }
    // The converter's failure may be this worker's (a missing module, memory): retryable.
    return WithJobFailure(Annotate(converted.status(), absl::StrCat("converting ", dir)),
                          JobFailure::kRetryable);
  }
  const std::string local = converted->path();
  return LocalCheckpoint{local, std::move(*converted)};
}

absl::StatusOr<LoadStats> WorkerDaemon::LoadForJob(const v1::LeasedJob& lease,
                                                   const std::atomic<bool>& lost) {
  const v1::Job& job = lease.job();
  absl::StatusOr<JobKind> kind = JobKindOf(job);  // kind_spec, else the text (old coordinator)
  if (!kind.ok()) {
    return absl::UnimplementedError(absl::StrCat(kind.status().message(),
                                                 "; this worker runs raw and avg@n jobs"));
  }
  const uint32_t window = kind->window();
  ASSIGN_OR_RETURN(const std::string tokenizer, AllowedTokenizer(lease));
  if (window == 0) {
    if (lease.checkpoint_paths_size() != 1) {
      return absl::InvalidArgumentError("raw job must name exactly one checkpoint");
    }
    // Pinned in the cache until the model is loaded.
    ASSIGN_OR_RETURN(const LocalCheckpoint checkpoint,
                     Materialize(lease, lease.checkpoint_paths(0), /*window_member=*/false, lost));
    return backend_->Load(checkpoint.dir, tokenizer);
  }
  if (lease.window() != 0 && lease.window() != window) {
    return absl::InvalidArgumentError(absl::StrCat("job kind ", job.kind(), " but lease window ",
                                                   lease.window()));
  }
  if (static_cast<uint32_t>(lease.checkpoint_paths_size()) != window ||
      static_cast<uint32_t>(job.steps_size()) != window) {
    return absl::InvalidArgumentError(absl::StrCat(
        job.kind(), " job names ", lease.checkpoint_paths_size(), " checkpoints and ",
        job.steps_size(), " steps; expected ", window, " of each (oldest first)"));
  }
  std::vector<LocalCheckpoint> members;  // all pinned until the average is loaded
  std::vector<std::string> dirs;
  std::vector<uint64_t> steps(job.steps().begin(), job.steps().end());
  for (const std::string& path : lease.checkpoint_paths()) {
    ASSIGN_OR_RETURN(LocalCheckpoint member, Materialize(lease, path, /*window_member=*/true, lost));
    dirs.push_back(member.dir);
    members.push_back(std::move(member));
  }
  return backend_->LoadAverage(job.run(), window, dirs, steps, tokenizer);
}

std::vector<v1::ParameterDrift> WorkerDaemon::ComputeDrifts(const v1::LeasedJob& lease,
                                                            const std::atomic<bool>& lost) {
  std::vector<v1::ParameterDrift> drifts;
  for (const v1::DriftTarget& target : lease.drift_targets()) {
    // Both ends pinned while the drift is computed; one the cache cannot hold beside the
    // other (RESOURCE_EXHAUSTED) skips this drift like any other failure.
    absl::StatusOr<ParameterDriftResult> drift = [&]() -> absl::StatusOr<ParameterDriftResult> {
      ASSIGN_OR_RETURN(const LocalCheckpoint from, Materialize(lease, target.from_path(), false, lost));
      ASSIGN_OR_RETURN(const LocalCheckpoint to, Materialize(lease, target.to_path(), false, lost));
      return backend_->ComputeDrift(from.dir, to.dir);
    }();
    if (!drift.ok()) {
      Log(absl::StrCat("job ", lease.job().id(), ": parameter drift ", target.from_step(), " -> ",
                       target.to_step(), " skipped: ", drift.status().message()));
      continue;
    }
    v1::ParameterDrift d;
    d.set_from_step(target.from_step());
    d.set_to_step(target.to_step());
    d.set_l2(drift->l2);
    d.set_relative(drift->relative);
    drifts.push_back(std::move(d));
  }
  return drifts;
}

absl::StatusOr<WorkerDaemon::TaskOutputs> WorkerDaemon::EvaluateTasks(
    const v1::LeasedJob& lease, const std::atomic<bool>& lost) {
  // Evaluation time runs from here (model loaded) to the last task evaluated; it is added
  // to the counter at every progress report so the total moves during a long job.
  const int64_t start_nanos = options_.clock->MonotonicNanos();
  int64_t counted_nanos = start_nanos;
  auto count_eval_time = [&] {
    const int64_t now = options_.clock->MonotonicNanos();
    metrics_->AddEvalNanos(now - counted_nanos);
    counted_nanos = now;
  };
  uint64_t examples = 0;
  uint64_t tokens = 0;
  absl::StatusOr<TaskOutputs> outputs = [&]() -> absl::StatusOr<TaskOutputs> {
    TaskOutputs by_task;
    ASSIGN_OR_RETURN(const EvalSettings settings, SettingsForLease(lease, options_.batch_size));
    for (const v1::TaskContent& header : lease.task_headers()) {
      if (lost) return absl::AbortedError("lease lost");
      ASSIGN_OR_RETURN(Task task, GetTask(header, lost));
      const uint64_t tokens_before = backend_->tokens_processed();
      size_t task_done = 0;  // progress reports several examples at once (a packed batch)
      ASSIGN_OR_RETURN(std::vector<ExampleResult> results,
                       backend_->Evaluate(task, settings, [&](size_t done, size_t) {
                         const size_t fresh = done > task_done ? done - task_done : 0;
                         task_done = std::max(task_done, done);
                         examples += fresh;
                         metrics_->AddExamples(fresh);
                         count_eval_time();
                         return !lost && !stopping_ && !DrainExpired();
                       }));
      const uint64_t task_tokens = backend_->tokens_processed() - tokens_before;
      tokens += task_tokens;
      metrics_->AddTokens(task_tokens);
      by_task.emplace_back(header.ref(), std::move(results));
    }
    return by_task;
  }();
  count_eval_time();
  if (outputs.ok()) {
    metrics_->RecordEvaluationRates(examples, tokens,
                                    static_cast<double>(counted_nanos - start_nanos) / 1e9);
  }
  return outputs;
}

int64_t WorkerDaemon::HeartbeatIntervalMs(const v1::LeasedJob& lease) const {
  const int64_t registered = heartbeat_interval_ms_.load();
  if (registered > 0) return registered;
  return std::max<int64_t>(lease.lease_ttl_ms() / 3, 50);  // the coordinator gave none
}

bool WorkerDaemon::SendHeartbeat(const v1::LeasedJob& lease) {
  v1::HeartbeatRequest req;
  req.set_worker_id(options_.worker_id);
  req.set_job_id(lease.job().id());
  req.set_epoch(lease.job().epoch());
  req.set_lease_secret(lease.lease_secret());
  v1::HeartbeatResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(ctx, kRpcDeadlineMs);
  absl::Status s = FromGrpc(stub_->Heartbeat(&ctx, req, &resp));
  if (absl::IsAborted(s) || absl::IsPermissionDenied(s)) {
    Log(absl::StrCat("job ", lease.job().id(), ": lease lost (", s.message(), "); dropping it"));
    return false;
  }
  if (absl::IsNotFound(s)) (void)Register();
  return true;  // held, or not known either way (an unreachable coordinator)
}

absl::Status WorkerDaemon::EvaluateAndReport(const v1::LeasedJob& lease,
                                             const std::atomic<bool>& lost) {
  const v1::Job& job = lease.job();
  if (DrainExpired()) return absl::CancelledError("worker stopping before the job started");
  ASSIGN_OR_RETURN(LoadStats load, LoadForJob(lease, lost));
  metrics_->RecordLoad(load);
  RETURN_IF_ERROR(CheckPinnedTokenizer(lease));
  ASSIGN_OR_RETURN(const auto outputs, EvaluateTasks(lease, lost));
  const std::vector<v1::ParameterDrift> drifts = ComputeDrifts(lease, lost);
  // Report, retrying through coordinator restarts and refused writes: the outputs are
  // kept until accepted. UNAVAILABLE and RESOURCE_EXHAUSTED (coordinator down, or its
  // storage refusing writes) are retried for as long as the lease is held (the
  // heartbeat thread keeps it), with exponential backoff; other errors 20 times.
  int64_t backoff_ms = options_.retry_backoff_ms;
  // A heartbeat that finds the lease gone during a backoff may mean that an earlier
  // attempt was committed and only its answer was lost (the coordinator restarted): the
  // next attempt then comes back as a replay, so `lost` is checked after an attempt,
  // never instead of one.
  // A few attempts are still made after that, while the coordinator is unreachable.
  constexpr int kAttemptsAfterLost = 5;
  int attempts_after_lost = 0;
  for (int attempt = 0;; ++attempt) {
    absl::Status s = Report(lease, outputs, drifts);
    if (s.ok() || absl::IsAborted(s) || absl::IsInvalidArgument(s) ||
        absl::IsPermissionDenied(s) || stopping_ || DrainExpired()) {
      return s;
    }
    if (lost && ++attempts_after_lost > kAttemptsAfterLost) {
      return absl::AbortedError("lease lost");
    }
    const bool retry_while_leased = absl::IsUnavailable(s) || absl::IsResourceExhausted(s);
    if (!retry_while_leased && attempt >= 20) return s;
    const int64_t wait_ms = retry_while_leased ? backoff_ms : options_.retry_backoff_ms;
    Log(absl::StrCat("job ", job.id(), ": report failed (", s.message(), "); retrying in ",
                     wait_ms, " ms",
                     retry_while_leased ? " while the lease is held" : "", " (attempt ",
                     attempt + 1, ")"));
    if (absl::IsNotFound(s) || absl::IsUnavailable(s)) (void)Register();
    if (!WaitMs(wait_ms)) return s;
    if (retry_while_leased) {
      backoff_ms = std::min(std::max<int64_t>(1, backoff_ms) * 2, options_.report_backoff_max_ms);
    }
  }
}

void WorkerDaemon::RunJob(const v1::LeasedJob& lease) {
  const v1::Job& job = lease.job();
  Log(absl::StrCat("job ", job.id(), " (", job.run(), " ", job.kind(), " step ",
                   job.steps_size() ? job.steps(job.steps_size() - 1) : 0, ") leased, epoch ", job.epoch()));
  metrics_->SetBusy(true);
  absl::Status status;
  bool lost = false;
  {
    LeaseHeartbeat heartbeat(*options_.clock, HeartbeatIntervalMs(lease),
                             [this, &lease] { return SendHeartbeat(lease); });
    status = EvaluateAndReport(lease, heartbeat.lost());
    lost = heartbeat.lost();
  }  // the heartbeat thread has stopped
  metrics_->SetBusy(false);
  if (status.ok()) {
    ++jobs_done_;
    metrics_->JobDone();
    Log(absl::StrCat("job ", job.id(), " done"));
  } else if (draining_ && !lost && !stopping_ &&
             (absl::IsCancelled(status) || absl::IsUnavailable(status) ||
              absl::IsDeadlineExceeded(status))) {
    // Stopped by the drain, or a report that could not be delivered within its grace.
    Log(absl::StrCat("job ", job.id(), " handed back: ", kWorkerStoppingReason));
    SendFailJob(lease, kWorkerStoppingReason, JobFailure::kWorkerStopping);
  } else if (absl::IsAborted(status) || absl::IsCancelled(status) ||
             absl::IsPermissionDenied(status)) {
    Log(absl::StrCat("job ", job.id(), " dropped: ", status.message()));
  } else {
    FailJob(lease, status);
  }
}

}  // namespace steadyeval
