// The coordinator's Prometheus metrics (DESIGN §9; names, labels and meanings in
// docs/metrics.md). Names keep their meaning across releases; dashboards and alert rules
// in deploy/ depend on them. Thread-safe (prometheus-cpp metrics are; the maps of series
// set as a whole are guarded by mu_).
#ifndef STEADYEVAL_SERVER_COORDINATOR_METRICS_H_
#define STEADYEVAL_SERVER_COORDINATOR_METRICS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>

#include "absl/synchronization/mutex.h"
#include "common/job_failure.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "s3/s3_client.h"
#include "server/discovery/discovery.h"
#include "server/jobs/scheduler.h"

namespace steadyeval {

// Admitted checkpoints of one run by state (steadyeval_checkpoints).
struct CheckpointCounts {
  int pending = 0;
  int evaluating = 0;
  int evaluated = 0;
  int failed = 0;
};

class CoordinatorMetrics {
 public:
  CoordinatorMetrics();

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // Creates `run`'s run-labelled series at 0 (counters, checkpoint and lag gauges), so
  // dashboards show zeros and rates start from the first event.
  void AddRun(const std::string& run);
  // Removes every series labelled run=`run` (a deleted run).
  void RemoveRun(const std::string& run);

  // ---- checkpoints ----
  // A checkpoint folder of `run` seen for the first time by this process.
  void CheckpointDiscovered(const std::string& run);
  void CheckpointAdmitted(const std::string& run);
  // A raw job became FAILED: its checkpoint failed for good.
  void CheckpointFailed(const std::string& run);
  void SetCheckpoints(const std::string& run, const CheckpointCounts& counts);
  // Folders seen but not admitted, and the age of the oldest (0 when there is none).
  void SetIncompleteCheckpoints(const std::string& run, int count, double oldest_age_seconds);

  // ---- jobs ----
  // A job committed DONE `seconds` after its lease.
  void JobDone(const std::string& run, const std::string& kind, double seconds);
  void JobFailed(const std::string& run, const std::string& kind);
  // `reason` labels steadyeval_job_attempt_failures_total: "retryable", "permanent" (also
  // kMembersGone) or "lease_expired". A hand-back (kWorkerStopping) is not a failed attempt.
  void JobAttemptFailed(const std::string& run, const std::string& kind, JobFailure reason);
  // A job leased for the first time, `seconds` after it was created.
  void JobFirstLeased(const std::string& kind, double seconds);
  // Sets steadyeval_jobs to `counts`; label sets seen before and now absent drop to 0.
  void SetJobs(const JobCounts& counts);

  void PredictionsIngested(uint64_t n);
  void SetEvalLag(const std::string& run, double steps, double seconds);

  // ---- workers ----
  void SetWorkers(int idle, int busy, int lost);
  // Seconds since each worker name was last heard from; names seen before keep their
  // last value (workers are never forgotten by this process).
  void SetWorkerHeartbeatAges(const std::map<std::string, double>& age_by_name);

  // ---- scores ----
  // The newest evaluated point of a (run, task, variant): its score and step, and the
  // score of the point before it. A nullopt removes that series.
  void SetScore(const std::string& run, const std::string& task, const std::string& variant,
                std::optional<double> score, std::optional<uint64_t> step,
                std::optional<double> previous);
  // steadyeval_mtv / steadyeval_instability_score over the default range; a null figure
  // (fewer than 2 points) removes its series.
  void SetStability(const std::string& run, const std::string& task, const std::string& variant,
                    std::optional<double> mtv, std::optional<double> instability);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& discovered_;
  prometheus::Family<prometheus::Counter>& admitted_;
  prometheus::Family<prometheus::Counter>& checkpoints_failed_;
  prometheus::Family<prometheus::Gauge>& checkpoints_;
  prometheus::Family<prometheus::Gauge>& incomplete_;
  prometheus::Family<prometheus::Gauge>& incomplete_age_;
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Counter>& jobs_finished_;
  prometheus::Family<prometheus::Counter>& attempt_failures_;
  prometheus::Family<prometheus::Histogram>& job_duration_;
  prometheus::Family<prometheus::Histogram>& queue_wait_;
  prometheus::Family<prometheus::Gauge>& eval_lag_;
  prometheus::Family<prometheus::Gauge>& eval_lag_seconds_;
  prometheus::Family<prometheus::Gauge>& workers_;
  prometheus::Family<prometheus::Gauge>& heartbeat_age_;
  prometheus::Family<prometheus::Counter>& predictions_;
  prometheus::Family<prometheus::Gauge>& score_;
  prometheus::Family<prometheus::Gauge>& score_previous_;
  prometheus::Family<prometheus::Gauge>& score_step_;
  prometheus::Family<prometheus::Gauge>& mtv_;
  prometheus::Family<prometheus::Gauge>& instability_;

  absl::Mutex mu_;
  std::map<std::tuple<std::string, std::string, std::string>, prometheus::Gauge*> job_gauges_
      ABSL_GUARDED_BY(mu_);
};

// The metrics of reading run sources (docs/metrics.md, coordinator): every S3 request
// attempt of discovery (steadyeval_s3_requests_total{op}, and
// steadyeval_s3_request_errors_total{op,kind} for failed ones, kind from S3ErrorKindName)
// and the duration of each poll's listing of a run's source
// (steadyeval_source_list_seconds{scheme}). It is the S3Observer of the coordinator's S3
// clients and the SourceListObserver of its watchers, made before the coordinator (whose
// discovery factory needs it), so it registers its families in a registry of its own that
// the exposer serves beside the coordinator's. Thread-safe (prometheus-cpp metrics are).
class SourceMetrics : public S3Observer, public SourceListObserver {
 public:
  SourceMetrics();

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void OnAttempt(const char* op, double seconds, S3ErrorKind error) override;
  void OnSourceList(const char* scheme, double seconds, bool ok) override;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& s3_requests_;
  prometheus::Family<prometheus::Counter>& s3_errors_;
  prometheus::Family<prometheus::Histogram>& list_seconds_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_COORDINATOR_METRICS_H_
