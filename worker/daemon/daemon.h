// The worker daemon: registers with the coordinator, long-polls for jobs, heartbeats
// while it evaluates, fetches task content by hash, and reports per-example outputs
// (DESIGN §5, §6).
//
// Failure handling:
//   - NOT_FOUND from the coordinator (it restarted and forgot us) → register again with
//     the same worker id and carry on; our persisted lease stays valid.
//   - UNAVAILABLE → back off and retry; outputs of a finished job are kept in memory and
//     re-sent, so a coordinator restart during reporting loses nothing. A report refused
//     with UNAVAILABLE or RESOURCE_EXHAUSTED (e.g. the coordinator's disk is full) is
//     retried with exponential backoff (retry_backoff_ms doubling up to
//     report_backoff_max_ms) for as long as the lease is held, heartbeating meanwhile; it
//     never fails the job. Task fetches likewise wait for an unreachable coordinator as
//     long as the lease is not lost.
//   - ABORTED on heartbeat or report (stale epoch: the job was re-leased) → drop the job:
//     the evaluation is cancelled at its next cancel point (after the forward batch in
//     progress), nothing is reported, and the worker goes back to acquiring.
//   - A checkpoint that cannot be loaded (missing shard, corrupt header) → FailJob as
//     permanent, a window member gone as kMembersGone; other errors → FailJob as
//     retryable (common/job_failure.h JobFailureOf decides).
//   - FAILED_PRECONDITION from RegisterWorker (another protocol version) → Run() returns it.
//   - PERMISSION_DENIED on heartbeat or report (the coordinator does not accept our lease
//     secret) → drop the job.
//
// What a lease may make this worker open (DESIGN §9): a checkpoint folder, and every file
// in it, only when it resolves (after --path_map and symlinks) under the lease's
// source_root; a run's own tokenizer file only when it resolves under one of
// DaemonOptions::tokenizer_dirs (none by default). Anything else fails the job for good
// (FAILED_PRECONDITION naming the path and the rule) before the file is opened.
//
// Materialising a checkpoint (issue #18) before the backend loads it:
//   - A local folder without a converter is loaded in place, as always.
//   - An s3:// lease (source_root starts with s3://): every checkpoint path must lie under
//     source_root (same bucket, key under its prefix, compared after ParseS3Uri, which
//     refuses "." and ".." components), else FAILED_PRECONDITION for good. Its objects are
//     fetched into the checkpoint cache (worker/cache/) through an S3 client for the
//     lease's s3_endpoint and s3_region (region default: DaemonOptions::default_s3_region,
//     AWS_REGION / AWS_DEFAULT_REGION at start, else us-east-1) with this worker's own
//     credentials; clients are kept per (endpoint, region). The worker talks to no
//     endpoint but the lease's.
//   - A lease with `convert` set: the named --converter runs on the (local or fetched)
//     folder and its cached output is what is loaded; the fetched source is unpinned
//     once converted. A name this worker does not declare fails the job as retryable
//     (another worker may declare it; the coordinator's attempt limit bounds the tries),
//     naming the converter and this worker's converters.
//   - The cache (DaemonOptions::cache) is opened on the first job that needs it.
//   - Cache entries stay pinned until the model is loaded; for drift, while it is
//     computed (a drift whose two checkpoints the cache cannot hold is skipped, logged).
//   - Errors: a checkpoint or window member whose objects are gone is NOT_FOUND (a raw
//     job, permanent) or MembersGoneError (a window); listing and fetch errors (access
//     denied, endpoint down, a size mismatch), a full cache and every converter failure
//     (non-zero exit, timeout, no config.json) are retryable and name what failed; the
//     daemon carries on with the next job. A lost lease, Stop() or an expired drain stops
//     a fetch between chunks and a converter at its next poll.
//
// Draining (Drain(), the worker's SIGTERM/SIGINT): no new job is acquired; the current
// job is finished and reported if that is done within drain_grace_ms, else evaluation
// stops after the packed batch in progress and the lease is handed back (FailJob,
// kWorkerStopping, kWorkerStoppingReason), which gives the job to another worker at once
// without using up an attempt. Run() then returns OK.
//
// Heartbeats: a held lease is heartbeaten from a thread of its own at the period the
// coordinator gave at registration (RegisterWorkerResponse.heartbeat_interval_ms), or a
// third of the lease's TTL when it gave none.
//
// Time: every wait (backoffs, the heartbeat period, the drain grace) and the evaluation
// time it measures go through DaemonOptions::clock, so tests drive them with a FakeClock.
// Only gRPC deadlines are real time.
//
// Thread-safety: Run() is called once; Stop(), Drain() and metrics() may be called from
// any thread.
#ifndef STEADYEVAL_WORKER_DAEMON_DAEMON_H_
#define STEADYEVAL_WORKER_DAEMON_DAEMON_H_

#include <atomic>
#include <map>
#include <optional>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/job_failure.h"
#include "common/task.h"
#include "s3/credentials.h"
#include "s3/s3_client.h"
#include "s3/s3_endpoint.h"
#include "steadyeval/v1/worker_service.grpc.pb.h"
#include "worker/cache/checkpoint_cache.h"
#include "worker/cache/converter.h"
#include "worker/eval/eval_backend.h"
#include "worker/daemon/metrics_http.h"
#include "worker/daemon/worker_metrics.h"

namespace steadyeval {

struct PathMapping {
  std::string from;
  std::string to;
};

// Parses "FROM=TO". INVALID_ARGUMENT otherwise.
absl::StatusOr<PathMapping> ParsePathMapping(const std::string& spec);
// Rewrites the first mapping whose `from` is a path prefix of `path`.
std::string MapPath(const std::vector<PathMapping>& mappings, const std::string& path);

// Whether `path` resolves (std::filesystem::weakly_canonical: symlinks of its existing part
// followed) to `root` or below it; `root` is resolved the same way.
bool ResolvesUnder(const std::string& path, const std::string& root);

// The evaluation settings a lease carries (the run's prompt language, BOS mode, shots and
// max_new_tokens delta) plus this worker's batch size. INVALID_ARGUMENT for values this
// worker does not know.
absl::StatusOr<EvalSettings> SettingsForLease(const steadyeval::v1::LeasedJob& lease, int batch_size);

struct DaemonOptions {
  std::string worker_id;  // stable for the life of the process
  std::string name;
  std::string device = "cpu";
  std::vector<PathMapping> path_map;
  // Folders a run's tokenizer_path may resolve under (empty: runs may not choose one).
  std::vector<std::string> tokenizer_dirs;
  // Draining: how long the current job may still run to completion (then it is handed back).
  int64_t drain_grace_ms = 20'000;
  int64_t acquire_wait_ms = 5000;
  int64_t retry_backoff_ms = 500;
  int64_t report_backoff_max_ms = 10'000;  // cap of a refused report's retry backoff
  int report_chunk = 64;  // outputs per ReportResults message
  int batch_size = 8;     // generation examples decoded together (EvalSettings)
  std::string metrics_listen;  // empty: no metrics endpoint
  // What every wait and measured duration uses (see the file comment): backoffs, the
  // heartbeat period, the drain grace, evaluation time, converter timeouts. Not owned; must
  // outlive the daemon.
  Clock* clock = Clock::Real();

  // The checkpoint cache for s3:// and converted checkpoints (--cache_dir, --cache_bytes,
  // --fetch_concurrency); its observer is set by the daemon (metrics).
  CheckpointCacheOptions cache;
  // Declared converters (--converter), by name, and their timeout (--converter_timeout_s).
  std::vector<ConverterSpec> converters;
  int64_t converter_timeout_ms = 3'600'000;
  // This worker's credentials for s3:// leases (LoadAwsCredentials at start); an error
  // fails s3:// jobs (retryable) with its message.
  absl::StatusOr<AwsCredentials> s3_credentials =
      absl::NotFoundError("no AWS credentials were loaded");
  // The region of s3:// leases that name none: DefaultS3Region of this worker's AWS_REGION /
  // AWS_DEFAULT_REGION, resolved once at start (main.cc).
  std::string default_s3_region = kDefaultS3Region;
  // Makes the file system of an s3:// lease from its client options. Empty: an
  // S3FileSystem over an S3Client. Tests give a fake.
  std::function<absl::StatusOr<std::shared_ptr<FileSystem>>(const S3ClientOptions&)> s3_file_system;
};

class WorkerDaemon {
 public:
  WorkerDaemon(DaemonOptions options, std::shared_ptr<steadyeval::v1::WorkerService::StubInterface> stub,
               std::unique_ptr<EvalBackend> backend);
  ~WorkerDaemon();

  // Starts the metrics endpoint if configured; returns its bound "host:port" ("" if off).
  // UNAVAILABLE when it cannot listen there. Call once, before Run().
  absl::StatusOr<std::string> StartMetrics();
  // The metrics the endpoint serves (docs/metrics.md "Worker"); kept whether or not an
  // endpoint is started, so tests read them with metrics().Collect().
  const WorkerMetrics& metrics() const { return *metrics_; }

  // Serves until Stop() or a finished Drain(). Returns OK then; an error only when it
  // cannot go on (e.g. the coordinator refuses this worker's protocol version).
  absl::Status Run();
  // Stops at once: a job in progress is dropped (its lease runs out on the coordinator).
  void Stop();
  // Starts draining (see above). Idempotent.
  void Drain();

  int64_t jobs_done() const { return jobs_done_.load(); }

 private:
  // Each evaluated task's per-example results, in lease order.
  using TaskOutputs = std::vector<std::pair<steadyeval::v1::TaskRef, std::vector<ExampleResult>>>;

  absl::Status Register();
  // One job end to end, heartbeating its lease meanwhile; any error is turned into FailJob
  // or a dropped lease.
  void RunJob(const steadyeval::v1::LeasedJob& lease);
  // RunJob's work while the lease is held: load, evaluate, report (retrying). `lost` turns
  // true when a heartbeat finds the lease gone; it cancels the evaluation.
  absl::Status EvaluateAndReport(const steadyeval::v1::LeasedJob& lease,
                                 const std::atomic<bool>& lost);
  // One Heartbeat call for `lease`; false when the coordinator says the lease is no longer
  // ours (ABORTED, PERMISSION_DENIED). Registers again on NOT_FOUND.
  bool SendHeartbeat(const steadyeval::v1::LeasedJob& lease);
  // The heartbeat period of `lease` in milliseconds (see the file comment).
  int64_t HeartbeatIntervalMs(const steadyeval::v1::LeasedJob& lease) const;
  // The task `header` names, from the cache or the coordinator (waiting out an unreachable
  // coordinator unless stopped or `lost`, then ABORTED).
  absl::StatusOr<Task> GetTask(const steadyeval::v1::TaskContent& header,
                               const std::atomic<bool>& lost);
  absl::Status Report(const steadyeval::v1::LeasedJob& lease, const TaskOutputs& outputs,
                      const std::vector<steadyeval::v1::ParameterDrift>& drifts);
  // FAILED_PRECONDITION when the lease pins the run to another tokenizer than the one
  // just loaded.
  absl::Status CheckPinnedTokenizer(const v1::LeasedJob& lease) const;
  // The checkpoint folder `dir` (already path-mapped) and every entry in it resolve under
  // the lease's source_root; FAILED_PRECONDITION naming the path otherwise.
  absl::Status CheckCheckpointFolder(const v1::LeasedJob& lease, const std::string& dir) const;
  // The tokenizer file the job may load: "" for the checkpoints' own, else the run's
  // tokenizer_path resolved, when under a --tokenizer_dirs folder; FAILED_PRECONDITION
  // naming the path and the flag otherwise.
  absl::StatusOr<std::string> AllowedTokenizer(const v1::LeasedJob& lease) const;
  // A checkpoint as a local folder the backend can load, and the cache pin (if any) that
  // keeps it there while `pin` lives.
  struct LocalCheckpoint {
    std::string dir;
    std::optional<CacheEntry> pin;
  };
  // The checkpoint `path` of `lease` as a local folder (see "Materialising" above).
  // `window_member`: a NOT_FOUND becomes MembersGoneError. `lost` cancels.
  absl::StatusOr<LocalCheckpoint> Materialize(const v1::LeasedJob& lease, const std::string& path,
                                              bool window_member, const std::atomic<bool>& lost);
  // The cache, opened now if it is not yet.
  absl::StatusOr<CheckpointCache*> Cache();
  // The file system of an s3:// lease's endpoint and region (made once per pair).
  absl::StatusOr<std::shared_ptr<FileSystem>> S3FileSystemFor(const v1::LeasedJob& lease);
  // FAILED_PRECONDITION unless the s3:// `path` lies under the lease's source_root.
  absl::Status CheckS3Checkpoint(const v1::LeasedJob& lease, const std::string& path) const;
  // The converter the lease names; FAILED_PRECONDITION (retryable) when not declared.
  absl::StatusOr<const ConverterSpec*> ConverterFor(const v1::LeasedJob& lease) const;
  // Loads the job's model: one checkpoint (raw) or the average of its window (avg@n).
  absl::StatusOr<LoadStats> LoadForJob(const steadyeval::v1::LeasedJob& lease,
                                       const std::atomic<bool>& lost);
  // Evaluates every task of the lease with the loaded model, counting examples, tokens and
  // evaluation time into metrics_ as it goes; `lost` cancels it.
  absl::StatusOr<TaskOutputs> EvaluateTasks(const steadyeval::v1::LeasedJob& lease,
                                            const std::atomic<bool>& lost);
  // The job's drift targets that could be computed (a failure is logged and skipped:
  // drift is a side measurement and must not fail the evaluation).
  std::vector<steadyeval::v1::ParameterDrift> ComputeDrifts(const steadyeval::v1::LeasedJob& lease,
                                                            const std::atomic<bool>& lost);
  void FailJob(const steadyeval::v1::LeasedJob& lease, const absl::Status& why);
  // Sends FailJob (retrying through coordinator restarts) with this reason.
  void SendFailJob(const steadyeval::v1::LeasedJob& lease, const std::string& reason,
                   JobFailure failure);
  // Waits up to `ms` of options_.clock's time unless Stop() (or, with `wake_on_drain`,
  // Drain()) is called first. Returns false when woken that way.
  bool WaitMs(int64_t ms, bool wake_on_drain = false) ABSL_LOCKS_EXCLUDED(mu_);
  // Draining and the grace period is over: the job in progress must stop.
  bool DrainExpired() const;

  DaemonOptions options_;
  std::shared_ptr<steadyeval::v1::WorkerService::StubInterface> stub_;
  std::unique_ptr<EvalBackend> backend_;
  std::map<std::string, Task> task_cache_;  // by sha256; only touched by Run()'s thread
  // Locks: mu_ here, and each job's LeaseHeartbeat's own mutex (daemon.cc). No code holds
  // two of them at once, so there is no lock order to keep.
  absl::Mutex mu_;
  grpc::ClientContext* acquire_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;  // the AcquireJob in flight
  // Written under mu_ (so that WaitMs's condition is re-checked), read anywhere.
  std::atomic<bool> stopping_{false};
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> drain_deadline_nanos_{0};  // options_.clock's monotonic time
  std::atomic<int64_t> jobs_done_{0};
  // The coordinator's heartbeat period from the last registration; 0: it gave none.
  std::atomic<int64_t> heartbeat_interval_ms_{0};
  std::unique_ptr<WorkerMetrics> metrics_;        // never null
  std::unique_ptr<MetricsHttpServer> metrics_server_;  // null until StartMetrics(); serves metrics_
  // Only touched by Run()'s thread (jobs run there one at a time).
  std::unique_ptr<CheckpointCache> cache_;  // null until a job needs it
  std::map<std::pair<std::string, std::string>, std::shared_ptr<FileSystem>> s3_file_systems_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_DAEMON_DAEMON_H_
