// The coordinator's Prometheus metrics (DESIGN §9). Names keep their meaning across
// releases; dashboards and alert rules in deploy/ depend on them. Thread-safe
// (prometheus-cpp metrics are).
#ifndef STEADYEVAL_SERVER_METRICS_H_
#define STEADYEVAL_SERVER_METRICS_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>

#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/scheduler.h"

namespace steadyeval {

class CoordinatorMetrics {
 public:
  CoordinatorMetrics();

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void CheckpointDiscovered(const std::string& run);
  void PredictionsIngested(uint64_t n);
  void JobFinished(const std::string& kind, double seconds);
  // The latest score of a (run, task, variant); nullopt removes the series.
  void SetScore(const std::string& run, const std::string& task, const std::string& variant,
                std::optional<double> score);
  // steadyeval_mtv / steadyeval_instability_score over the default range; a null figure
  // (fewer than 2 points) removes its series.
  void SetStability(const std::string& run, const std::string& task, const std::string& variant,
                    std::optional<double> mtv, std::optional<double> instability);
  void SetEvalLagSteps(const std::string& run, double lag);
  void SetWorkers(int idle, int busy, int lost);
  // Sets steadyeval_jobs to `counts`; label sets seen before and now absent drop to 0.
  void SetJobs(const JobCounts& counts);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& discovered_;
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Gauge>& workers_;
  prometheus::Family<prometheus::Counter>& predictions_;
  prometheus::Family<prometheus::Gauge>& eval_lag_;
  prometheus::Family<prometheus::Histogram>& job_duration_;
  prometheus::Family<prometheus::Gauge>& score_;
  prometheus::Family<prometheus::Gauge>& mtv_;
  prometheus::Family<prometheus::Gauge>& instability_;

  absl::Mutex mu_;
  std::map<std::tuple<std::string, std::string, std::string>, prometheus::Gauge*> job_gauges_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_METRICS_H_
