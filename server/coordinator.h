// The coordinator's logic behind both gRPC services (DESIGN §1, §5): a facade that wires
// the stages together and keeps the runs' lifecycle (creation, checkpoint polling loops,
// pause, deletion):
//   discovery/ (CheckpointDiscovery, one per run) -> Admit -> jobs/Scheduler
//   workers -> jobs/LeaseBroker (long poll, heartbeats, failures) + jobs/WorkerRegistry
//   reports -> ingest/ReportIngest -> analytics/Analytics + Scheduler::Complete -> store/
//   CreateRun / UpdateRun -> ingest/run_config -> ingest/RunTable + store/
//
// Plain C++: every method returns absl::Status(Or); services.cc maps them to gRPC.
// Thread-safe; the lock order of everything behind it is in server/LOCKING.md. Background
// threads (one polling loop per run, one reaper) run only between Start() and Stop();
// tests leave them off and drive PollRunsOnce() and Tick() with a FakeClock instead.
#ifndef STEADYEVAL_SERVER_COORDINATOR_H_
#define STEADYEVAL_SERVER_COORDINATOR_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/clock.h"
#include "common/task.h"
#include "server/analytics/analytics.h"
#include "server/discovery/discovery.h"
#include "server/coordinator_metrics.h"
#include "server/ingest/report_ingest.h"
#include "server/ingest/run_config.h"
#include "server/ingest/run_table.h"
#include "server/ingest/task_cache.h"
#include "server/jobs/lease_broker.h"
#include "server/jobs/scheduler.h"
#include "server/jobs/worker_registry.h"
#include "server/store/store.h"
#include "steadyeval/v1/eval_service.pb.h"
#include "steadyeval/v1/worker_service.pb.h"

namespace steadyeval {

struct CoordinatorOptions {
  SchedulerOptions scheduler;
  int64_t poll_interval_ms = 1000;      // each run's checkpoint polling period
  double default_settle_seconds = 30;   // for runs created with settle_seconds = 0
  int64_t max_acquire_wait_ms = 30'000; // cap on AcquireJob's long poll
  // Lease expiry / worker state check period; a waiting long poll re-tries as often.
  int64_t reap_interval_ms = 250;
  // Where a run's source must be (ingest/run_inputs.h ParseSourceRoots): resolved folders
  // (symlinks followed) and s3://bucket/prefix URIs; empty: any.
  std::vector<std::string> source_roots;
  // S3 endpoints runs may name besides AWS (--s3_endpoints, normalised by ParseS3Endpoints).
  std::vector<std::string> s3_endpoints;
  // The region stored in s3 runs created without one (DefaultS3Region of the coordinator's
  // environment).
  std::string default_s3_region = "us-east-1";
};

class Coordinator {
 public:
  // Loads runs, checkpoints and jobs from `store` (not owned, outlives the coordinator).
  // `discovery` makes each run's checkpoint discovery; `clock` is not owned.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(Store* store, Clock* clock,
                                                             DiscoveryFactory discovery,
                                                             CoordinatorOptions options);
  ~Coordinator();

  // Starts the reaper and a polling loop per run (also for runs created later).
  void Start();
  // Stops the background threads and wakes every long poll. Idempotent.
  void Stop();

  // ---- runs (EvalService) ----
  // Validates the config and task files (errors name the file and line), stores the
  // tasks and the run; INVALID_ARGUMENT for bad input, ALREADY_EXISTS for a taken name.
  // average_windows / ensemble_windows: each n >= 2, stored deduplicated and sorted.
  // Categories come from config.tasks: an entry with a name gives that task's category,
  // an entry without one the category of the task file at its index; each is one of
  // kTaskCategories (case-insensitive, stored upper-case) or empty.
  // `managed_by`: the config file declaring the run (Run.managed_by), empty for `runs add`.
  absl::StatusOr<v1::Run> CreateRun(v1::RunConfig config,
                                    const std::vector<v1::TaskContent>& task_files,
                                    const std::string& managed_by = "");
  // As above for a run already checked by CheckNewRun with new_run_options() (e.g. by
  // CheckDeclaredRuns): stores it without checking it again.
  absl::StatusOr<v1::Run> CreateRun(NewRun checked, const std::string& managed_by);
  // The rules CreateRun checks a new run against (source roots, S3 endpoints, defaults).
  NewRunOptions new_run_options() const;
  // The checks CreateRun applies for a coordinator with `options` (also steadyeval-server
  // --check, which has none).
  static NewRunOptions NewRunOptionsFor(const CoordinatorOptions& options);
  absl::StatusOr<v1::ListRunsResponse> ListRuns(int32_t page_size,
                                                const std::string& page_token) const;
  // NOT_FOUND "run 'x' not found (see `steadyeval runs list`)" for an unknown run (also
  // for the streaming queries below). With the run's source error, if its last poll could
  // not list the source (a missing folder; a bucket's HTTP error, endpoint down).
  absl::StatusOr<v1::GetRunResponse> GetRun(const std::string& name) const;
  absl::Status ListCheckpoints(const std::string& run,
                               const std::function<bool(const v1::Checkpoint&)>& visit) const;
  // Every run's jobs when `run` is empty.
  absl::Status ListJobs(const std::string& run,
                        const std::function<bool(const v1::Job&)>& visit) const;
  absl::Status GetScores(const v1::GetScoresRequest& request,
                         const std::function<bool(const v1::Score&)>& visit) const;
  v1::ListWorkersResponse ListWorkers() const;
  // Changes window sizes (the `set_*` ones). Added avg@n sizes get a job for every window
  // that has none; removed sizes' pending and leased jobs become SUPERSEDED, their stored
  // values are kept (queryable; erased like any value when a late admission changes their
  // window). Added ens@n sizes are computed for every window from stored raw values;
  // removed ones are no longer computed (values kept likewise).
  // FAILED_PRECONDITION, naming the file, when the run's managed_by is not `managed_by`
  // (a run declared in a config file changes only through that file).
  absl::StatusOr<v1::Run> UpdateRun(const v1::UpdateRunRequest& r,
                                    const std::string& managed_by = "");
  absl::StatusOr<v1::GetStabilityResponse> GetStability(const v1::GetStabilityRequest& r);
  // Re-scores every stored raw and avg@n value of the run's tasks (or of `r.task()`) from
  // the stored outputs with the current metric code, then recomputes the ensembles; pair
  // figures follow. One committed batch per task. NOT_FOUND for an unknown run or task.
  absl::StatusOr<v1::RescoreResponse> Rescore(const v1::RescoreRequest& r);
  // The folders the run's discovery saw but did not admit at its last poll that listed its
  // source, by step, with the reason and since when it holds, and the error of listing the
  // source if the last poll failed (as GetRun). Empty before the first poll and while paused.
  absl::StatusOr<v1::ListPendingCheckpointsResponse> ListPendingCheckpoints(
      const std::string& run) const;

  // ---- admin (EvalService) ----
  // Pause: no admissions (the run's folder is not polled) and no leases of its jobs;
  // leases held run on. Resume restarts both. Persisted in Run.paused; idempotent.
  absl::StatusOr<v1::Run> SetRunPaused(const std::string& name, bool paused);
  // Stops the run's polling loop and deletes the run record and every checkpoint, job,
  // prediction, score, pair and drift key of it in one batch (task contents, shared by
  // hash, stay), then its metric series. Requests for its jobs are then ABORTED.
  absl::StatusOr<v1::DeleteRunResponse> DeleteRun(const std::string& name);
  // FAILED -> PENDING with a fresh attempt budget (Scheduler::Requeue): `job_ids`, or
  // every job of `run` in `state` (only JOB_FAILED). INVALID_ARGUMENT for both or neither.
  absl::StatusOr<v1::RequeueJobsResponse> RequeueJobs(const v1::RequeueJobsRequest& r);
  // Forgets the run's tokenizer pin; the next accepted result that names one pins again.
  absl::StatusOr<v1::Run> ClearTokenizerPin(const std::string& name);
  absl::StatusOr<v1::GetExamplesResponse> GetExamples(const v1::GetExamplesRequest& r);
  absl::Status ExportPredictions(const v1::ExportPredictionsRequest& r,
                                 const std::function<bool(const v1::ExportedPrediction&)>& visit);
  // Adds a backup of the live store to r.to_dir() on this machine (Store::Backup).
  absl::StatusOr<v1::BackupResponse> Backup(const v1::BackupRequest& r);

  // ---- workers (WorkerService) ----
  // FAILED_PRECONDITION naming both versions when r.protocol_version() is not
  // kProtocolVersion (api/protocol.h).
  absl::StatusOr<v1::RegisterWorkerResponse> RegisterWorker(const v1::RegisterWorkerRequest& r);
  // Long poll up to min(wait_ms, max_acquire_wait_ms) of the clock's time, or until
  // `cancelled()` (may be null) returns true (LeaseBroker::Acquire). NOT_FOUND for an unregistered worker.
  // Remembers the window sums the worker holds (r.window_sums replaces the previous
  // list): it is offered the avg@n job of a (run, n) it holds first, and other workers
  // are not given avg@n jobs of that (run, n) while it is idle and polling (seen within a
  // lease TTL, holding no lease); once it is busy or lost they are.
  absl::StatusOr<v1::AcquireJobResponse> AcquireJob(const v1::AcquireJobRequest& r,
                                                    const std::function<bool()>& cancelled);
  // Heartbeat (with a job), ReportResults and FailJob must carry the lease's secret
  // (LeasedJob.lease_secret, see lease_secret.h): PERMISSION_DENIED otherwise, whichever
  // of worker id, epoch and secret is wrong. With the right secret of an older lease of
  // the job: ABORTED (stop working on it).
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& r);
  // A hand-back (JobFailure::kWorkerStopping: `failure`, or an old worker's retryable
  // kWorkerStoppingReason) gives the lease back (Scheduler::HandBack): not an attempt
  // failure. Other failures count by their JobFailure.
  absl::StatusOr<v1::FailJobResponse> FailJob(const v1::FailJobRequest& r);
  absl::StatusOr<v1::TaskContent> GetTask(const std::string& sha256) const;

  // Checks a report stream's first message before reading the rest: the worker must hold
  // (job, epoch) and prove it with the lease secret, or the job must be DONE with that
  // epoch (replay, also with the secret). PERMISSION_DENIED for a wrong secret, ABORTED
  // for a lease the worker no longer holds.
  absl::Status CheckReportStart(const v1::ReportResultsRequest& first) const;
  // Commits one job's report (every chunk of the stream): validates, scores each task and
  // writes predictions, scores, job DONE and checkpoint EVALUATED in one synced batch.
  // replay=true and nothing written when the job is already DONE with this epoch;
  // INVALID_ARGUMENT (nothing written) for missing/duplicate/extra outputs or tasks;
  // ABORTED when the worker does not hold the lease.
  absl::StatusOr<v1::ReportResultsResponse> ReportResults(
      const std::vector<v1::ReportResultsRequest>& chunks);

  // ---- driving (tests; the background threads call these) ----
  // Polls every run's discovery once and admits what it returns. A checkpoint whose
  // admission fails (e.g. storage refuses the write) is admitted at the run's next poll.
  absl::Status PollRunsOnce();
  // Re-checks storage health (resuming writes once space returns), expires leases, wakes
  // long polls, refreshes gauges.
  absl::Status Tick();

  Scheduler* scheduler() { return scheduler_.get(); }
  CoordinatorMetrics* metrics() { return &metrics_; }
  const std::string& instance_id() const { return instance_id_; }

 private:
  // A run's checkpoint polling: its discovery and polling loop, and the lock that orders
  // admissions with the run's window changes, pause and deletion.
  struct RunPoll {
    explicit RunPoll(std::string run) : name(std::move(run)) {}
    const std::string name;
    // Serialises polls of `discovery` and the run's admissions with UpdateRun,
    // SetRunPaused, ClearTokenizerPin and DeleteRun.
    absl::Mutex poll_mu;
    // Set once DeleteRun has committed: nothing may write for this run. Deleted states
    // stay allocated (retired_polls_) for threads that still hold them.
    bool deleted ABSL_GUARDED_BY(poll_mu) = false;
    std::unique_ptr<CheckpointDiscovery> discovery ABSL_GUARDED_BY(poll_mu);
    // Steps seen by this process (pending or admitted) or stored at start-up: each step
    // counts once in steadyeval_checkpoints_discovered_total.
    std::set<uint64_t> seen_steps ABSL_GUARDED_BY(poll_mu);
    // Returned by the discovery (which returns each checkpoint once) but not admitted
    // because the admission failed: tried again first at the next poll.
    std::vector<DiscoveredCheckpoint> unadmitted ABSL_GUARDED_BY(poll_mu);
    // The last poll error logged (digits blanked); empty when the last poll succeeded.
    std::string logged_error ABSL_GUARDED_BY(poll_mu);
    // The polling loop; it stops when `stop_poller` is set (Stop, DeleteRun).
    absl::Mutex stop_mu;
    bool stop_poller ABSL_GUARDED_BY(stop_mu) = false;
    std::thread poller ABSL_GUARDED_BY(stop_mu);
    // The discovery's pending folders after the last poll (ListPendingCheckpoints).
    mutable absl::Mutex pending_mu;
    std::vector<PendingDiscovery> pending ABSL_GUARDED_BY(pending_mu);
    // Why the last poll could not list the run's source (or make its discovery), and
    // since when (Clock::UnixMillis of the first poll with this error, numbers aside);
    // empty once a poll lists it again (GetRun, ListPendingCheckpoints).
    std::string source_error ABSL_GUARDED_BY(pending_mu);
    int64_t source_error_since_unix_ms ABSL_GUARDED_BY(pending_mu) = 0;
  };

  Coordinator(Store* store, Clock* clock, DiscoveryFactory discovery, CoordinatorOptions options);

  // Polls the run once (PollRunLocked) and logs its error when it differs from the last
  // one logged, or that polls work again.
  absl::Status PollRun(RunPoll& poll);
  absl::Status PollRunLocked(RunPoll& poll) ABSL_EXCLUSIVE_LOCKS_REQUIRED(poll.poll_mu);
  // What the run's discovery returns now (made first when there is none).
  absl::StatusOr<std::vector<DiscoveredCheckpoint>> PollDiscovery(RunPoll& poll,
                                                                  const v1::Run& run)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(poll.poll_mu);
  // Records `status` of listing the run's source as its source error (or clears it).
  void NoteSourceStatus(RunPoll& poll, const absl::Status& status);
  void StartPoller(RunPoll& poll);
  // Tells the run's poller to stop and joins it. Call without poll_mu held.
  void StopPoller(RunPoll& poll);
  // The run's polling state; NOT_FOUND for an unknown run.
  absl::StatusOr<RunPoll*> FindPoll(const std::string& name) const;
  std::vector<RunPoll*> Polls() const;
  // Admits one discovered checkpoint with its window jobs and the value erasures a late
  // admission implies, in one batch. Returns whether it was new.
  absl::StatusOr<bool> Admit(const v1::Run& run, const DiscoveredCheckpoint& c);
  // The attempt-failure, job and checkpoint counters of a failed attempt of `job_id`
  // (looked up after the transition: FAILED means it failed for good).
  void CountAttemptFailure(uint64_t job_id, JobFailure reason);
  // Call without mu_ held.
  void RefreshGauges();
  // The score / MTV / IS gauges of these (run, task)s' variants (runs still present).
  // Call without mu_ held.
  void RefreshStabilityGauges(const std::set<std::pair<std::string, std::string>>& tasks);

  Store* const store_;
  Clock* const clock_;
  const DiscoveryFactory discovery_factory_;
  const CoordinatorOptions options_;
  const std::string instance_id_;
  CoordinatorMetrics metrics_;
  RunTable runs_;
  WorkerRegistry workers_;
  TaskCache tasks_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<Analytics> analytics_;
  std::unique_ptr<LeaseBroker> leases_;
  std::unique_ptr<ReportIngest> reports_;
  // Serialises the per-run gauge refreshes with DeleteRun's removal of the run's series,
  // so a refresh that listed a run before its deletion cannot bring its series back.
  // Held only while reading memory and setting gauges (server/LOCKING.md).
  absl::Mutex gauges_mu_;

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<RunPoll>> polls_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<RunPoll>> retired_polls_ ABSL_GUARDED_BY(mu_);  // deleted runs
  bool started_ ABSL_GUARDED_BY(mu_) = false;

  std::atomic<bool> stopping_{false};
  absl::Notification stop_;
  std::thread reaper_ ABSL_GUARDED_BY(mu_);
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_COORDINATOR_H_
