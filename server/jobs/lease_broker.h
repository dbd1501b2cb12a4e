// The worker side of leasing (DESIGN §5): AcquireJob's long poll, heartbeats, failures
// and lease expiry, between the workers (WorkerRegistry) and the jobs (Scheduler).
//
// Long poll: AcquireJob tries to lease; when nothing is leasable it waits on the clock
// (Clock::AwaitWithTimeout) until WakeWaiters is called (new work: an admission, a
// released or requeued job, a resumed run), Stop, or `recheck_interval_ms` of clock time
// passes (backoffs and expiries pass without a wake-up), up to its deadline. Leasing
// decisions and the deadline use the same clock, so a FakeClock drives both in tests.
//
// Every request about a lease (Heartbeat with a job, FailJob, a report) must prove it
// with the lease's secret (lease_secret.h): PERMISSION_DENIED otherwise, naming none of
// worker id, epoch and secret as the culprit.
//
// Thread-safe. Holds no lock of its own while it calls the scheduler, the registry or
// the store; `wake_mu_` guards only the wake-up generation (a leaf, server/LOCKING.md).
#ifndef STEADYEVAL_SERVER_JOBS_LEASE_BROKER_H_
#define STEADYEVAL_SERVER_JOBS_LEASE_BROKER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/job_failure.h"
#include "server/jobs/lease_secret.h"
#include "server/jobs/scheduler.h"
#include "server/jobs/worker_registry.h"
#include "server/store/store.h"
#include "steadyeval/v1/worker_service.pb.h"

namespace steadyeval {

struct LeaseBrokerOptions {
  int64_t max_acquire_wait_ms = 30'000;  // cap on AcquireJob's long poll
  int64_t recheck_interval_ms = 250;     // a waiting long poll re-tries this often
};

// The current record of a run (a lease carries its settings); NOT_FOUND for an unknown run.
using RunLookup = std::function<absl::StatusOr<v1::Run>(const std::string& run)>;

class LeaseBroker {
 public:
  // None of the pointers is owned; all outlive the broker.
  LeaseBroker(Scheduler* scheduler, WorkerRegistry* workers, Store* store, const Clock* clock,
              LeaseSecrets secrets, RunLookup find_run, LeaseBrokerOptions options);

  // Long poll up to min(wait_ms, max_acquire_wait_ms) of clock time, or until
  // `cancelled()` (may be null) returns true or Stop. NOT_FOUND for an unregistered
  // worker. r.window_sums replaces the sums the worker holds (WorkerRegistry::AffinityFor).
  absl::StatusOr<v1::AcquireJobResponse> Acquire(const v1::AcquireJobRequest& r,
                                                 const std::function<bool()>& cancelled);
  // Touches the worker; with a job, extends its lease (Scheduler::Heartbeat).
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& r);
  // The request's JobFailure (api/job_failure_proto.h: `failure`, or an old worker's
  // `retryable` and reason text): kWorkerStopping hands the lease back
  // (Scheduler::HandBack), not an attempt failure; any other is Scheduler::Fail's. Wakes
  // the long polls.
  struct FailOutcome {
    v1::FailJobResponse response;
    JobFailure failure = JobFailure::kRetryable;  // as read from the request
    bool handed_back = false;                     // no attempt was used
  };
  absl::StatusOr<FailOutcome> Fail(const v1::FailJobRequest& r);

  // OK when `secret` is the secret of lease (job_id, epoch) granted to `worker_id`;
  // PERMISSION_DENIED otherwise.
  absl::Status CheckLeaseSecret(uint64_t job_id, uint64_t epoch, const std::string& worker_id,
                                const std::string& secret) const;

  // Expires overdue leases (Scheduler::ExpireLeases: each a failed attempt) and wakes the
  // long polls when a job is leasable. Returns the ids whose lease expired.
  absl::StatusOr<std::vector<uint64_t>> ExpireLeases();

  // Wakes every waiting long poll to try again.
  void WakeWaiters();
  // Wakes every long poll for good: they return (without a job) and later ones do not wait.
  void Stop();

 private:
  absl::StatusOr<v1::LeasedJob> BuildLeasedJob(const v1::Job& job) const;
  // Waits (clock time) until WakeWaiters or Stop after `generation`, or `timeout_nanos`.
  void WaitForWake(uint64_t generation, int64_t timeout_nanos);

  Scheduler* const scheduler_;
  WorkerRegistry* const workers_;
  Store* const store_;
  const Clock* const clock_;
  const LeaseSecrets secrets_;
  const RunLookup find_run_;
  const LeaseBrokerOptions options_;

  absl::Mutex wake_mu_;
  uint64_t wake_generation_ ABSL_GUARDED_BY(wake_mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(wake_mu_) = false;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_JOBS_LEASE_BROKER_H_
