// Results coming in (DESIGN §5 step 3): one job's report stream is checked against the
// lease, validated against the job (steps, tasks, every example exactly once, drift
// targets), scored, and committed in one synced batch with everything it implies:
// predictions and scores, the pair figures and ensembles the new values complete, drift,
// the run's tokenizer pin (the first result that names a tokenizer), and the job's DONE
// transition (a raw job's checkpoint EVALUATED).
//
// Thread-safe. Reports are serialised by the analytics lock (an Analytics::Update) from
// the re-check of the lease to the in-memory install; validation and scoring run before,
// under no lock. Which locks the commit holds is written in server/LOCKING.md.
#ifndef STEADYEVAL_SERVER_INGEST_REPORT_INGEST_H_
#define STEADYEVAL_SERVER_INGEST_REPORT_INGEST_H_

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/analytics/analytics.h"
#include "server/ingest/run_table.h"
#include "server/ingest/task_cache.h"
#include "server/jobs/lease_broker.h"
#include "server/jobs/scheduler.h"
#include "server/jobs/worker_registry.h"
#include "server/store/store.h"
#include "steadyeval/v1/worker_service.pb.h"

namespace steadyeval {

// What a committed report did (for the caller's metrics and gauges).
struct IngestedReport {
  v1::ReportResultsResponse response;
  bool committed = false;  // false for a replay (nothing written)
  CompletedJob done;
  std::set<std::pair<std::string, std::string>> touched_tasks;  // (run, task)
};

class ReportIngest {
 public:
  // None of the pointers is owned; all outlive this.
  ReportIngest(Scheduler* scheduler, Analytics* analytics, Store* store, RunTable* runs,
               const TaskCache* tasks, WorkerRegistry* workers, const LeaseBroker* leases)
      : scheduler_(scheduler),
        analytics_(analytics),
        store_(store),
        runs_(runs),
        tasks_(tasks),
        workers_(workers),
        leases_(leases) {}

  // Checks a stream's first message before the rest is read: the worker must hold (job,
  // epoch) and prove it with the lease secret, or the job must be DONE with that epoch
  // (a replay, also with the secret). PERMISSION_DENIED for a wrong secret, ABORTED for a
  // lease the worker no longer holds.
  absl::Status CheckStart(const v1::ReportResultsRequest& first) const;

  // Commits one job's report (every chunk of the stream). A replay (the job is DONE with
  // this epoch) writes nothing and answers replay=true. INVALID_ARGUMENT (nothing written)
  // for missing, duplicate or extra outputs, steps, tasks or drift, and for a tokenizer
  // other than the run's pin; ABORTED when the worker does not hold the lease. When the
  // commit fails nothing is written and memory is unchanged: the job stays leased and the
  // same report may be sent again.
  absl::StatusOr<IngestedReport> Ingest(const std::vector<v1::ReportResultsRequest>& chunks);

 private:
  // One scored (run, task, variant, step) value of the report.
  using Value = std::pair<v1::Score, std::vector<v1::Prediction>>;
  struct Checked;
  // The chunks grouped by (step, task) and checked against `job`.
  static absl::StatusOr<Checked> Check(const v1::Job& job,
                                       const std::vector<v1::ReportResultsRequest>& chunks);
  absl::StatusOr<std::vector<Value>> Score(const v1::Job& job, const Checked& checked) const;
  // Writes `values` with their analytics into `batch` and commits it with the job's DONE
  // transition (under `update`, the analytics lock).
  absl::StatusOr<CompletedJob> Commit(Analytics::Update& update, const v1::Run& run,
                                      const v1::ReportResultsRequest& first,
                                      const Checked& checked, std::vector<Value> values,
                                      Store::Batch batch);

  Scheduler* const scheduler_;
  Analytics* const analytics_;
  Store* const store_;
  RunTable* const runs_;
  const TaskCache* const tasks_;
  WorkerRegistry* const workers_;
  const LeaseBroker* const leases_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_INGEST_REPORT_INGEST_H_
