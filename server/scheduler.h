// Jobs, leases and retries (DESIGN §5).
//
// Job lifecycle (the legal transitions are listed once, in scheduler.cc):
//   PENDING -> LEASED            a worker acquires it (epoch += 1, attempts += 1)
//   LEASED  -> DONE              results committed
//   LEASED  -> PENDING           lease expired or retryable failure, attempts left
//                                (not leasable again before an exponential backoff)
//   LEASED  -> FAILED            permanent failure, or attempts exhausted
// A raw job's checkpoint follows its job: PENDING / EVALUATING / EVALUATED / FAILED(+error).
//
// Leases: expiry = clock monotonic now + TTL, kept in memory only; on Create every LEASED
// job gets a fresh expiry of now + TTL and keeps its epoch and worker. A request carrying
// another epoch or worker than the lease's gets ABORTED and changes nothing.
//
// Priority among leasable jobs: round-robin across runs (by name); within a run the newest
// window-end step first, then `raw` before `avg@n` (smaller n first), then the oldest id.
//
// Every transition is one Store batch, committed (sync) before the method returns; when
// the commit fails the in-memory state is unchanged. Thread-safe.
#ifndef STEADYEVAL_SERVER_SCHEDULER_H_
#define STEADYEVAL_SERVER_SCHEDULER_H_

#include <cstdint>
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
#include "server/store.h"

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

// Job counts for metrics and GetRun.
struct JobCounts {
  std::map<std::tuple<std::string, std::string, v1::JobState>, int> by_run_kind_state;
};

class Scheduler {
 public:
  // Loads checkpoints and jobs from `store` (not owned; outlives the scheduler).
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(Store* store, Clock* clock,
                                                           SchedulerOptions options);

  // Records an admitted checkpoint (PENDING) and its raw job in one batch. Returns the
  // new job, or nullopt when the checkpoint is already known (nothing written).
  absl::StatusOr<std::optional<v1::Job>> AdmitCheckpoint(const v1::Run& run, uint64_t step,
                                                         const std::string& path);

  // Leases the highest-priority leasable job to `worker_id`; nullopt when none is.
  absl::StatusOr<std::optional<v1::Job>> Lease(const std::string& worker_id);

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
  // ABORTED too (the caller checks first).
  absl::StatusOr<CompletedJob> Complete(uint64_t job_id, uint64_t epoch,
                                        const std::string& worker_id, Store::Batch results);

  // A worker gives up on its lease. Retryable with attempts left -> PENDING after a
  // backoff; otherwise FAILED with `reason`. Returns the new state.
  absl::StatusOr<v1::JobState> Fail(uint64_t job_id, uint64_t epoch, const std::string& worker_id,
                                    const std::string& reason, bool retryable);

  // Expires leases whose expiry has passed (each counts as a retryable failure). Returns
  // the ids of the jobs whose lease expired.
  absl::StatusOr<std::vector<uint64_t>> ExpireLeases();

  // Snapshots.
  std::optional<v1::Job> GetJob(uint64_t id) const;
  std::optional<v1::Checkpoint> GetCheckpoint(const std::string& run, uint64_t step) const;
  std::vector<v1::Checkpoint> Checkpoints(const std::string& run) const;  // by step
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
  };
  // Orders a run's pending jobs by priority: newest step, raw first, oldest id.
  using PendingKey = std::tuple<int64_t /*-step*/, uint32_t /*kind rank*/, uint64_t /*id*/>;

  Scheduler(Store* store, Clock* clock, SchedulerOptions options)
      : store_(store), clock_(clock), options_(options) {}

  static PendingKey KeyOf(const v1::Job& job);
  absl::StatusOr<Entry*> FindHeld(uint64_t job_id, uint64_t epoch, const std::string& worker_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes `next` (plus the followed checkpoint and `batch`'s writes) and, when the commit
  // succeeds, installs it in memory.
  absl::Status CommitTransition(Entry& entry, v1::Job next, Store::Batch batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The checkpoint record a raw job's new state implies, if it has one.
  std::optional<v1::Checkpoint> FollowCheckpoint(const v1::Job& next) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // LEASED -> PENDING (with backoff) or FAILED when attempts are exhausted / !retryable.
  absl::StatusOr<v1::JobState> Release(Entry& entry, const std::string& reason, bool retryable)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t BackoffNanos(uint32_t attempts) const;

  Store* const store_;
  Clock* const clock_;
  const SchedulerOptions options_;

  mutable absl::Mutex mu_;
  std::map<uint64_t, Entry> jobs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::set<PendingKey>> pending_by_run_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, uint64_t>, v1::Checkpoint> checkpoints_ ABSL_GUARDED_BY(mu_);
  std::string last_served_run_ ABSL_GUARDED_BY(mu_);
  uint64_t next_job_id_ ABSL_GUARDED_BY(mu_) = 1;
};

// "pending", "leased", "done", "failed" (GetRun's jobs_by_state keys, metric labels).
std::string JobStateLabel(v1::JobState state);

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_SCHEDULER_H_
