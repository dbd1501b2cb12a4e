// Jobs, leases and retries (DESIGN §5).
//
// Job lifecycle (the legal transitions are listed once, in scheduler.cc):
//   PENDING -> LEASED            a worker acquires it (epoch += 1, attempts += 1)
//   LEASED  -> DONE              results committed
//   LEASED  -> PENDING           lease expired or retryable failure, attempts left
//                                (not leasable again before an exponential backoff);
//                                or handed back by a stopping worker (the attempt is
//                                given back, no backoff)
//   LEASED  -> FAILED            permanent failure (JobFailure kPermanent, kMembersGone),
//                                or attempts exhausted
//   FAILED  -> PENDING           requeued by an admin (attempts back to 0)
//   PENDING | LEASED | DONE | FAILED -> SUPERSEDED
//                                an avg@n job whose window changed membership (a checkpoint
//                                admitted late), or of a size removed from the run
// A raw job's checkpoint follows its job: PENDING / EVALUATING / EVALUATED / FAILED(+error).
//
// Windows (DESIGN §3): the window of size n ending at admitted checkpoint c_i is
// {c_{i-n+1} .. c_i} over the run's admitted checkpoints by step. Admitting c_i creates,
// for every configured n with >= n checkpoints up to c_i, an "avg@n" job (steps = members,
// oldest first) in the same batch as the checkpoint and its raw job; when c_i lands between
// existing checkpoints the next n-1 windows change too: their current jobs become
// SUPERSEDED (superseded_by = the new job) and new jobs take their place.
//
// Leases: expiry = clock monotonic now + TTL, kept in memory only; on Create every LEASED
// job gets a fresh expiry of now + TTL and keeps its epoch and worker. A request carrying
// another epoch or worker than the lease's gets ABORTED and changes nothing.
//
// Paused runs (SetRunPaused) have no leasable jobs; their leases held run on.
//
// Priority among leasable jobs: round-robin across runs (by name); within a run the newest
// window-end step first, then `raw` before `avg@n` (smaller n first), then the oldest id.
// Affinity (DESIGN §5): a worker holding a window sum of (run, n) first gets the leasable
// avg@n job of that run sharing the most members with its sum; avg@n jobs of a (run, n)
// reserved for another worker (the caller decides which) are not leased to this one.
//
// Every transition is one Store batch, committed (sync) before the method returns; when
// the commit fails nothing of it is written and the in-memory state is unchanged (new job
// ids are not used up either).
//
// Commits hold no lock that leases and heartbeats need (server/LOCKING.md). A transition
//   1. prepares under mu_: checks it is legal, builds its records, and reserves the jobs
//      it rewrites (marks them committing);
//   2. commits its batch with mu_ released;
//   3. takes mu_ again, clears the marks, and installs the records in memory when the
//      commit succeeded (re-checking the job's state and epoch: INTERNAL if they moved).
// While a job is reserved no other transition of it starts: Heartbeat, Complete, Fail,
// HandBack and Requeue wait for the reservation to end (then look again: a job reported
// meanwhile is DONE, so a late Fail is ABORTED), Lease and ExpireLeases pass it by. A
// run being deleted counts as reserved for all its jobs. Admissions, window changes and
// deletions ("structural": they add jobs or remove a run) are serialised among
// themselves by structure_mu_, which nothing on the lease path takes; they reserve the
// jobs they supersede, so a lease, report or failure of another job of the run goes on
// while they commit. Readers (GetJob, Checkpoints, CheckReport, ...) never wait: they see
// a reserved job as it was before its transition.
//
// Thread-safe.
#ifndef STEADYEVAL_SERVER_JOBS_SCHEDULER_H_
#define STEADYEVAL_SERVER_JOBS_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/job_failure.h"
#include "server/store/store.h"
#include "api/state_names.h"

namespace steadyeval {

struct SchedulerOptions {
  int64_t lease_ttl_ms = 30'000;
  uint32_t max_attempts = 3;           // leases granted before a job fails for good
  int64_t backoff_initial_ms = 2'000;  // not leasable again for this long after 1st failure
  int64_t backoff_max_ms = 300'000;    // doubling per attempt, capped here
};

// The outcome of a commit attempt of results for (job, epoch).
struct ReportCheck {
  v1::Job job;
  bool replay = false;  // already DONE with this epoch: answer OK and write nothing
};

struct CompletedJob {
  v1::Job job;
  double duration_seconds = 0;  // lease to commit, on the monotonic clock
};

// What admitting a checkpoint did (for the caller's writes in the same batch).
struct Admission {
  v1::Checkpoint checkpoint;
  v1::Job raw_job;
  std::vector<v1::Job> window_jobs;  // new avg@n jobs
  std::vector<v1::Job> superseded;   // avg@n jobs now SUPERSEDED (their new record)
  std::vector<uint64_t> steps;       // the run's admitted steps after admission, ascending
  size_t index = 0;                  // position of the new checkpoint in `steps`
};

// What changing a run's averaging windows did.
struct WindowUpdate {
  std::vector<v1::Job> created;     // avg@n jobs for windows that had none
  std::vector<v1::Job> superseded;  // pending/leased jobs of removed sizes
};

// Extra writes the caller adds to a transition's batch. It runs with the scheduler's lock
// released while the transition's jobs are reserved (see the top of this file): it may
// read the scheduler but must not start a transition (that would wait for itself). A
// non-OK status cancels the transition.
template <typename T>
using ExtraWrites = std::function<absl::Status(const T&, Store::Batch&)>;

// A window sum a worker holds (AcquireJobRequest.window_sums).
struct HeldWindow {
  std::string run;
  uint32_t window = 0;
  std::vector<uint64_t> steps;
};

struct LeaseAffinity {
  std::vector<HeldWindow> held;                              // the leasing worker's sums
  std::set<std::pair<std::string, uint32_t>> reserved;       // (run, n) kept for others
};

// Job counts for metrics and GetRun.
struct JobCounts {
  std::map<std::tuple<std::string, std::string, v1::JobState>, int> by_run_kind_state;
};

class Scheduler {
 public:
  // Loads checkpoints and jobs from `store` (not owned; outlives the scheduler).
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(Store* store, Clock* clock,
                                                           SchedulerOptions options);

  // Records an admitted checkpoint (PENDING), its raw job and its window jobs (see
  // Windows above, sizes from run.config().average_windows) in one batch, with `extra`'s
  // writes. Returns what it did, or nullopt when the checkpoint is already known (nothing
  // written).
  absl::StatusOr<std::optional<Admission>> AdmitCheckpoint(
      const v1::Run& run, uint64_t step, const std::string& path,
      const ExtraWrites<Admission>& extra = nullptr);

  // Makes `run`'s avg@n jobs match run.config().average_windows: creates a job for every
  // window of a configured size that has no current job, supersedes (superseded_by = 0)
  // the pending and leased jobs of sizes no longer configured; done and failed ones stay.
  // One batch with `extra`'s writes.
  absl::StatusOr<WindowUpdate> SetAverageWindows(const v1::Run& run,
                                                 const ExtraWrites<WindowUpdate>& extra = nullptr);

  // Leases the highest-priority leasable job to `worker_id` (see Affinity above); nullopt
  // when none is.
  absl::StatusOr<std::optional<v1::Job>> Lease(const std::string& worker_id,
                                               const LeaseAffinity& affinity = {});

  // Extends the lease. NOT_FOUND for an unknown job; ABORTED when (epoch, worker) is not
  // the job's current lease.
  absl::Status Heartbeat(uint64_t job_id, uint64_t epoch, const std::string& worker_id);

  // Whether results for (job, epoch) from `worker_id` may be committed: OK with
  // replay=false when the worker holds the lease, replay=true when the job is DONE with
  // this epoch; NOT_FOUND for an unknown job; ABORTED otherwise.
  absl::StatusOr<ReportCheck> CheckReport(uint64_t job_id, uint64_t epoch,
                                          const std::string& worker_id) const;

  // Commits `results` (predictions, scores) together with job DONE and, for a raw job,
  // checkpoint EVALUATED, in one synced batch. Fails like CheckReport; a replay here is
  // ABORTED too (the caller checks first). `bos` (how the worker applied BOS) is
  // recorded on the job.
  absl::StatusOr<CompletedJob> Complete(uint64_t job_id, uint64_t epoch,
                                        const std::string& worker_id, Store::Batch results,
                                        const std::string& bos = "");

  // A worker gives up on its lease. IsRetryable(failure) with attempts left -> PENDING
  // after a backoff; otherwise FAILED with `reason`. Returns the new state. (A hand-back,
  // kWorkerStopping, is HandBack's.)
  absl::StatusOr<v1::JobState> Fail(uint64_t job_id, uint64_t epoch, const std::string& worker_id,
                                    const std::string& reason, JobFailure failure);

  // A stopping worker gives its lease back unfinished: LEASED -> PENDING, leasable at
  // once, and the attempt it used is given back (it says nothing about the checkpoint).
  // Fails like Fail.
  absl::Status HandBack(uint64_t job_id, uint64_t epoch, const std::string& worker_id);

  // Expires leases whose expiry has passed (each counts as a retryable failure). Returns
  // the ids of the jobs whose lease expired; when a commit fails it stops there (that job
  // and the rest stay leased, retried at the next call) and returns the ones released so
  // far, or the error when there are none. A lease restored at start-up whose holder never
  // contacted this process goes back to PENDING with its attempt refunded and is not
  // among the ids (a coordinator crash between a lease's commit and its answer must not
  // use up a job's attempts).
  absl::StatusOr<std::vector<uint64_t>> ExpireLeases();

  // FAILED -> PENDING with attempts 0 (a fresh budget) for each of `job_ids`, in one
  // batch; a raw job's checkpoint follows (PENDING). NOT_FOUND for an unknown id,
  // FAILED_PRECONDITION naming the job for one that is not FAILED; nothing is changed then.
  // Returns the requeued jobs.
  absl::StatusOr<std::vector<v1::Job>> Requeue(const std::vector<uint64_t>& job_ids);

  // Whether `run`'s jobs may be leased (memory only; the caller persists Run.paused).
  void SetRunPaused(const std::string& run, bool paused);

  // Forgets every job and checkpoint of `run` and deletes the job records, in one batch
  // with `extra`'s writes (the caller adds the rest of the run's keys). Requests for its
  // jobs are then ABORTED. Returns the number of job records deleted.
  absl::StatusOr<uint64_t> DeleteRun(const std::string& run,
                                     const std::function<absl::Status(Store::Batch&)>& extra);

  // Snapshots.
  std::optional<v1::Job> GetJob(uint64_t id) const;
  std::optional<v1::Checkpoint> GetCheckpoint(const std::string& run, uint64_t step) const;
  std::vector<v1::Checkpoint> Checkpoints(const std::string& run) const;  // by step
  std::vector<uint64_t> AdmittedSteps(const std::string& run) const;      // ascending
  // The adjacent pairs (from, to) a raw job measures the parameter drift of: each pair
  // with its predecessor / successor is measured by the job of whichever of the two was
  // admitted later (so predecessor -> it normally, and also it -> successor when it was
  // admitted late, between existing checkpoints). Empty for other kinds.
  std::vector<std::pair<uint64_t, uint64_t>> DriftPairs(const v1::Job& job) const;
  std::vector<v1::Job> Jobs() const;                                      // by id
  std::map<std::string, uint64_t> LeasedJobByWorker() const;
  JobCounts CountJobs() const;
  // Whether a job is leasable now (for the long poll's quick check).
  bool HasLeasableJob() const;

  int64_t lease_ttl_ms() const { return options_.lease_ttl_ms; }
  // Monotonic expiry of a leased job's lease (tests).
  std::optional<int64_t> LeaseExpiryNanos(uint64_t job_id) const;

  // Whether `from -> to` is a legal job transition.
  static bool IsLegalTransition(v1::JobState from, v1::JobState to);

 private:
  struct Entry {
    v1::Job job;
    int64_t lease_expiry_nanos = 0;  // LEASED only
    int64_t leased_at_nanos = 0;     // LEASED only
    int64_t not_before_nanos = 0;    // PENDING only: backoff
    // LEASED only: restored from the store at start-up and not heard of since (no
    // heartbeat, report or failure from its holder). Its expiry refunds the attempt: the
    // previous coordinator may have died before the lease reached the worker.
    bool inherited_unheard = false;
    // A transition of this job is being committed (see the top of this file).
    bool committing = false;
  };
  using WindowKey = std::tuple<std::string, uint32_t /*n*/, uint64_t /*end step*/>;
  // Orders a run's pending jobs by priority: newest step, raw first, oldest id.
  using PendingKey = std::tuple<int64_t /*-step*/, uint32_t /*kind rank*/, uint64_t /*id*/>;

  Scheduler(Store* store, Clock* clock, SchedulerOptions options)
      : store_(store), clock_(clock), options_(options) {}

  static PendingKey KeyOf(const v1::Job& job);
  absl::StatusOr<Entry*> FindHeld(uint64_t job_id, uint64_t epoch, const std::string& worker_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes `next` (plus the followed checkpoint and `batch`'s writes) with `entry`'s job
  // reserved and, when the commit succeeds, installs it in memory. `entry` must be idle.
  absl::Status CommitTransition(Entry& entry, v1::Job next, Store::Batch batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a transition of `entry`'s job may start: none under way, its run not being
  // deleted.
  bool IsIdle(const Entry& entry) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether every job of `ids` that exists is idle.
  bool AllIdle(const std::vector<uint64_t>& ids) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits, releasing mu_, until AllIdle(ids).
  void AwaitIdle(const std::vector<uint64_t>& ids) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reserves the jobs `reserved`, releases mu_, runs `extra` on `batch` and commits it,
  // takes mu_ again and ends the reservations. Returns the first error.
  absl::Status CommitReserved(const std::vector<uint64_t>& reserved, Store::Batch batch,
                              const std::function<absl::Status(Store::Batch&)>& extra = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What admitting (run, step) would write now.
  Admission PrepareAdmission(const v1::Run& run, uint64_t step, const std::string& path) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What making the run's avg@n jobs match its configured sizes would write now.
  WindowUpdate PrepareWindows(const v1::Run& run) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The checkpoint record a raw job's new state implies, if it has one.
  std::optional<v1::Checkpoint> FollowCheckpoint(const v1::Job& next) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // LEASED -> PENDING (with backoff) or FAILED when attempts are exhausted / !retryable.
  absl::StatusOr<v1::JobState> Release(Entry& entry, const std::string& reason, bool retryable)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t BackoffNanos(uint32_t attempts) const;
  // PENDING -> LEASED in memory and store; the lease runs from the commit.
  absl::Status LeaseEntry(Entry& entry, const std::string& worker_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<uint64_t> AdmittedStepsLocked(const std::string& run) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Job NewWindowJob(const v1::Run& run, uint32_t n, const std::vector<uint64_t>& steps,
                       size_t end_index, uint64_t id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The SUPERSEDED record of `entry`'s job.
  v1::Job Superseded(const Entry& entry, uint64_t by, const std::string& reason) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Installs a job record written in a committed batch (memory only).
  void Install(v1::Job job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Store* const store_;
  Clock* const clock_;
  const SchedulerOptions options_;

  // Serialises the structural transitions (AdmitCheckpoint, SetAverageWindows, DeleteRun)
  // through their commits. Taken before mu_; the lease path never takes it.
  absl::Mutex structure_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  std::map<uint64_t, Entry> jobs_ ABSL_GUARDED_BY(mu_);
  // Reserved jobs per run (Entry::committing), and the runs whose deletion is under way.
  std::map<std::string, int> committing_by_run_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> deleting_runs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::set<PendingKey>> pending_by_run_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, uint64_t>, v1::Checkpoint> checkpoints_ ABSL_GUARDED_BY(mu_);
  // The current (not superseded) avg@n job of each window.
  std::map<WindowKey, uint64_t> window_jobs_ ABSL_GUARDED_BY(mu_);
  // Each checkpoint's raw job (its id orders admissions).
  std::map<std::pair<std::string, uint64_t>, uint64_t> raw_jobs_ ABSL_GUARDED_BY(mu_);
  std::string last_served_run_ ABSL_GUARDED_BY(mu_);
  uint64_t next_job_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::set<std::string> paused_runs_ ABSL_GUARDED_BY(mu_);
};


}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_JOBS_SCHEDULER_H_
