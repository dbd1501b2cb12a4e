#include "server/metrics.h"

namespace steadyeval {

CoordinatorMetrics::CoordinatorMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      discovered_(prometheus::BuildCounter()
                      .Name("steadyeval_checkpoints_discovered_total")
                      .Help("Checkpoints admitted (complete) per run")
                      .Register(*registry_)),
      jobs_(prometheus::BuildGauge()
                .Name("steadyeval_jobs")
                .Help("Jobs now in each state")
                .Register(*registry_)),
      workers_(prometheus::BuildGauge()
                   .Name("steadyeval_workers")
                   .Help("Registered workers by state")
                   .Register(*registry_)),
      predictions_(prometheus::BuildCounter()
                       .Name("steadyeval_predictions_ingested_total")
                       .Help("Per-example predictions stored")
                       .Register(*registry_)),
      eval_lag_(prometheus::BuildGauge()
                    .Name("steadyeval_eval_lag_steps")
                    .Help("Newest admitted step minus newest fully evaluated step")
                    .Register(*registry_)),
      job_duration_(prometheus::BuildHistogram()
                        .Name("steadyeval_job_duration_seconds")
                        .Help("Lease-to-commit time of finished jobs")
                        .Register(*registry_)),
      score_(prometheus::BuildGauge()
                 .Name("steadyeval_score")
                 .Help("Latest task score (newest step) per variant")
                 .Register(*registry_)),
      mtv_(prometheus::BuildGauge()
               .Name("steadyeval_mtv")
               .Help("Mean Total Variation of the task score over the default range "
                     "(the last 20% of raw points)")
               .Register(*registry_)),
      instability_(prometheus::BuildGauge()
                       .Name("steadyeval_instability_score")
                       .Help("Instability Score (mean fraction of examples whose output "
                             "changes between adjacent points) over the default range")
                       .Register(*registry_)) {
  predictions_.Add({});
  for (const char* state : {"idle", "busy", "lost"}) workers_.Add({{"state", state}});
}

void CoordinatorMetrics::CheckpointDiscovered(const std::string& run) {
  discovered_.Add({{"run", run}}).Increment();
}

void CoordinatorMetrics::PredictionsIngested(uint64_t n) {
  predictions_.Add({}).Increment(static_cast<double>(n));
}

void CoordinatorMetrics::JobFinished(const std::string& kind, double seconds) {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200};
  job_duration_.Add({{"kind", kind}}, *buckets).Observe(seconds);
}

namespace {
void SetOrRemove(prometheus::Family<prometheus::Gauge>& family,
                 const std::map<std::string, std::string>& labels, std::optional<double> value) {
  prometheus::Gauge& gauge = family.Add(labels);
  if (value.has_value()) {
    gauge.Set(*value);
  } else {
    family.Remove(&gauge);
  }
}
}  // namespace

void CoordinatorMetrics::SetScore(const std::string& run, const std::string& task,
                                  const std::string& variant, std::optional<double> score) {
  SetOrRemove(score_, {{"run", run}, {"task", task}, {"variant", variant}}, score);
}

void CoordinatorMetrics::SetStability(const std::string& run, const std::string& task,
                                      const std::string& variant, std::optional<double> mtv,
                                      std::optional<double> instability) {
  const std::map<std::string, std::string> labels = {
      {"run", run}, {"task", task}, {"variant", variant}};
  SetOrRemove(mtv_, labels, mtv);
  SetOrRemove(instability_, labels, instability);
}

void CoordinatorMetrics::SetEvalLagSteps(const std::string& run, double lag) {
  eval_lag_.Add({{"run", run}}).Set(lag);
}

void CoordinatorMetrics::SetWorkers(int idle, int busy, int lost) {
  workers_.Add({{"state", "idle"}}).Set(idle);
  workers_.Add({{"state", "busy"}}).Set(busy);
  workers_.Add({{"state", "lost"}}).Set(lost);
}

void CoordinatorMetrics::SetJobs(const JobCounts& counts) {
  absl::MutexLock lock(&mu_);
  for (auto& [labels, gauge] : job_gauges_) gauge->Set(0);
  for (const auto& [key, n] : counts.by_run_kind_state) {
    const auto& [run, kind, state] = key;
    std::string label = JobStateName(state);
    auto& gauge = job_gauges_[{run, kind, label}];
    if (gauge == nullptr) {
      gauge = &jobs_.Add({{"run", run}, {"kind", kind}, {"state", label}});
    }
    gauge->Set(n);
  }
}

}  // namespace steadyeval
