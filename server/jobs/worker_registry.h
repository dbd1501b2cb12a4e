// The workers this coordinator has heard from (DESIGN §5): who each is, when it was last
// heard from, the window sums it holds and whether it is polling for a job right now.
//
// In memory only: after a coordinator restart workers register again. Time is the
// clock's monotonic time. A worker is LOST when unheard for 3 lease TTLs, else BUSY while
// it holds a lease, else IDLE.
//
// Thread-safe: one mutex, a leaf of the lock order (server/LOCKING.md).
#ifndef STEADYEVAL_SERVER_JOBS_WORKER_REGISTRY_H_
#define STEADYEVAL_SERVER_JOBS_WORKER_REGISTRY_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "server/jobs/scheduler.h"
#include "steadyeval/v1/eval_service.pb.h"

namespace steadyeval {

class WorkerRegistry {
 public:
  // `clock` is not owned and outlives the registry.
  WorkerRegistry(const Clock* clock, int64_t lease_ttl_ms)
      : clock_(clock), lease_ttl_ms_(lease_ttl_ms) {}

  // Adds the worker, or refreshes its name and device; heard from now.
  void Register(const std::string& id, const std::string& name, const std::string& device);

  // The worker was heard from now. NOT_FOUND "worker X is not registered (register
  // again)" for an unknown one.
  absl::Status Touch(const std::string& id);

  // An AcquireJob of `id` starts: touches it (NOT_FOUND like Touch), replaces the window
  // sums it holds, and counts it as polling until the matching EndPoll.
  absl::Status BeginPoll(const std::string& id, std::vector<HeldWindow> window_sums);
  void EndPoll(const std::string& id);

  // What leasing to `id` must respect (Scheduler::Lease): the sums it holds, and the
  // (run, n) whose avg@n jobs stay with another worker holding that sum while it is idle
  // and polling (seen within a lease TTL, no lease in `leased_by_worker`).
  LeaseAffinity AffinityFor(const std::string& id,
                            const std::map<std::string, uint64_t>& leased_by_worker) const;

  // Every worker with its state; current_job from `leased_by_worker`.
  v1::ListWorkersResponse List(const std::map<std::string, uint64_t>& leased_by_worker) const;

 private:
  struct Entry {
    v1::WorkerInfo info;
    int64_t last_seen_nanos = 0;
    std::vector<HeldWindow> window_sums;
    int polling = 0;  // AcquireJob calls in progress
  };

  const Clock* const clock_;
  const int64_t lease_ttl_ms_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> workers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_JOBS_WORKER_REGISTRY_H_
