#include "server/coordinator_metrics.h"

#include <utility>

namespace steadyeval {
namespace {

prometheus::Family<prometheus::Counter>& Counter(prometheus::Registry& registry,
                                                 const std::string& name,
                                                 const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry);
}
prometheus::Family<prometheus::Gauge>& Gauge(prometheus::Registry& registry,
                                             const std::string& name, const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry);
}
prometheus::Family<prometheus::Histogram>& Histogram(prometheus::Registry& registry,
                                                     const std::string& name,
                                                     const std::string& help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(registry);
}

void SetOrRemove(prometheus::Family<prometheus::Gauge>& family,
                 const std::map<std::string, std::string>& labels, std::optional<double> value) {
  if (value.has_value()) {
    family.Add(labels).Set(*value);
  } else if (family.Has(labels)) {
    family.Remove(&family.Add(labels));
  }
}

// Removes the series of `family` whose `run` label is `run`.
template <typename T>
void RemoveRunSeries(prometheus::Family<T>& family, const std::string& run) {
  for (const prometheus::MetricFamily& collected : family.Collect()) {
    for (const prometheus::ClientMetric& metric : collected.metric) {
      std::map<std::string, std::string> labels;
      for (const prometheus::ClientMetric::Label& label : metric.label) {
        labels[label.name] = label.value;
      }
      auto it = labels.find("run");
      if (it == labels.end() || it->second != run || !family.Has(labels)) continue;
      family.Remove(&family.Add(labels));
    }
  }
}

const char* ReasonLabel(JobFailure reason) {
  switch (reason) {
    case JobFailure::kPermanent:
    case JobFailure::kMembersGone:
      return "permanent";
    case JobFailure::kLeaseExpired:
      return "lease_expired";
    case JobFailure::kRetryable:
    case JobFailure::kWorkerStopping:
      return "retryable";
  }
  return "retryable";
}

}  // namespace

CoordinatorMetrics::CoordinatorMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      discovered_(Counter(*registry_, "steadyeval_checkpoints_discovered_total",
                          "Checkpoint folders (names that parse as a step) seen for the first "
                          "time by this process, complete or not")),
      admitted_(Counter(*registry_, "steadyeval_checkpoints_admitted_total",
                        "Checkpoints admitted (complete and quiescent) by this process")),
      checkpoints_failed_(Counter(*registry_, "steadyeval_checkpoints_failed_total",
                                  "Checkpoints whose raw evaluation failed for good")),
      checkpoints_(Gauge(*registry_, "steadyeval_checkpoints",
                         "Admitted checkpoints now in each state")),
      incomplete_(Gauge(*registry_, "steadyeval_checkpoints_incomplete",
                        "Checkpoint folders seen but not admitted (incomplete, still changing, "
                        "or ambiguous)")),
      incomplete_age_(Gauge(*registry_, "steadyeval_checkpoint_incomplete_age_seconds",
                            "Seconds since the oldest checkpoint folder seen but not admitted "
                            "was first seen; 0 when there is none")),
      jobs_(Gauge(*registry_, "steadyeval_jobs", "Jobs now in each state")),
      jobs_finished_(Counter(*registry_, "steadyeval_jobs_finished_total",
                             "Jobs that reached done or failed")),
      attempt_failures_(Counter(*registry_, "steadyeval_job_attempt_failures_total",
                                "Failed job attempts: a worker's FailJob (retryable or "
                                "permanent) or an expired lease")),
      job_duration_(Histogram(*registry_, "steadyeval_job_duration_seconds",
                              "Lease-to-commit time of jobs that finished done")),
      queue_wait_(Histogram(*registry_, "steadyeval_job_queue_wait_seconds",
                            "Time from a job's creation to its first lease")),
      eval_lag_(Gauge(*registry_, "steadyeval_eval_lag_steps",
                      "Newest admitted step minus newest fully evaluated step")),
      eval_lag_seconds_(Gauge(*registry_, "steadyeval_eval_lag_seconds",
                              "Seconds since the oldest admitted checkpoint newer than the "
                              "newest evaluated one was admitted; 0 when caught up")),
      workers_(Gauge(*registry_, "steadyeval_workers", "Registered workers by state")),
      heartbeat_age_(Gauge(*registry_, "steadyeval_worker_heartbeat_age_seconds",
                           "Seconds since the coordinator last heard from the worker")),
      predictions_(Counter(*registry_, "steadyeval_predictions_ingested_total",
                           "Per-example predictions stored")),
      score_(Gauge(*registry_, "steadyeval_score",
                   "Task score at the newest evaluated point of the variant")),
      score_previous_(Gauge(*registry_, "steadyeval_score_previous",
                            "Task score at the point before the newest one")),
      score_step_(Gauge(*registry_, "steadyeval_score_step",
                        "Step of the newest evaluated point of the variant")),
      mtv_(Gauge(*registry_, "steadyeval_mtv",
                 "Mean Total Variation of the task score over the default range "
                 "(the last 20% of raw points)")),
      instability_(Gauge(*registry_, "steadyeval_instability_score",
                         "Instability Score (mean fraction of examples whose output "
                         "changes between adjacent points) over the default range")) {
  predictions_.Add({});
  for (const char* state : {"idle", "busy", "lost"}) workers_.Add({{"state", state}});
}

void CoordinatorMetrics::AddRun(const std::string& run) {
  discovered_.Add({{"run", run}});
  admitted_.Add({{"run", run}});
  checkpoints_failed_.Add({{"run", run}});
  incomplete_.Add({{"run", run}});
  incomplete_age_.Add({{"run", run}});
  eval_lag_.Add({{"run", run}});
  eval_lag_seconds_.Add({{"run", run}});
  SetCheckpoints(run, CheckpointCounts());
}

void CoordinatorMetrics::RemoveRun(const std::string& run) {
  {
    absl::MutexLock lock(&mu_);
    for (auto it = job_gauges_.begin(); it != job_gauges_.end();) {
      it = std::get<0>(it->first) == run ? job_gauges_.erase(it) : std::next(it);
    }
  }
  for (auto* family : {&discovered_, &admitted_, &checkpoints_failed_, &jobs_finished_,
                       &attempt_failures_}) {
    RemoveRunSeries(*family, run);
  }
  for (auto* family : {&checkpoints_, &incomplete_, &incomplete_age_, &jobs_, &eval_lag_,
                       &eval_lag_seconds_, &score_, &score_previous_, &score_step_, &mtv_,
                       &instability_}) {
    RemoveRunSeries(*family, run);
  }
}

void CoordinatorMetrics::CheckpointDiscovered(const std::string& run) {
  discovered_.Add({{"run", run}}).Increment();
}

void CoordinatorMetrics::CheckpointAdmitted(const std::string& run) {
  admitted_.Add({{"run", run}}).Increment();
}

void CoordinatorMetrics::CheckpointFailed(const std::string& run) {
  checkpoints_failed_.Add({{"run", run}}).Increment();
}

void CoordinatorMetrics::SetCheckpoints(const std::string& run, const CheckpointCounts& counts) {
  checkpoints_.Add({{"run", run}, {"state", "pending"}}).Set(counts.pending);
  checkpoints_.Add({{"run", run}, {"state", "evaluating"}}).Set(counts.evaluating);
  checkpoints_.Add({{"run", run}, {"state", "evaluated"}}).Set(counts.evaluated);
  checkpoints_.Add({{"run", run}, {"state", "failed"}}).Set(counts.failed);
}

void CoordinatorMetrics::SetIncompleteCheckpoints(const std::string& run, int count,
                                                  double oldest_age_seconds) {
  incomplete_.Add({{"run", run}}).Set(count);
  incomplete_age_.Add({{"run", run}}).Set(count == 0 ? 0 : oldest_age_seconds);
}

void CoordinatorMetrics::JobDone(const std::string& run, const std::string& kind,
                                 double seconds) {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200};
  jobs_finished_.Add({{"run", run}, {"kind", kind}, {"outcome", "done"}}).Increment();
  job_duration_.Add({{"kind", kind}}, *buckets).Observe(seconds);
}

void CoordinatorMetrics::JobFailed(const std::string& run, const std::string& kind) {
  jobs_finished_.Add({{"run", run}, {"kind", kind}, {"outcome", "failed"}}).Increment();
}

void CoordinatorMetrics::JobAttemptFailed(const std::string& run, const std::string& kind,
                                          JobFailure reason) {
  attempt_failures_.Add({{"run", run}, {"kind", kind}, {"reason", ReasonLabel(reason)}})
      .Increment();
}

void CoordinatorMetrics::JobFirstLeased(const std::string& kind, double seconds) {
  // Seconds (an idle fleet) to a day (a backlog).
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400};
  queue_wait_.Add({{"kind", kind}}, *buckets).Observe(seconds);
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

void CoordinatorMetrics::PredictionsIngested(uint64_t n) {
  predictions_.Add({}).Increment(static_cast<double>(n));
}

void CoordinatorMetrics::SetEvalLag(const std::string& run, double steps, double seconds) {
  eval_lag_.Add({{"run", run}}).Set(steps);
  eval_lag_seconds_.Add({{"run", run}}).Set(seconds);
}

void CoordinatorMetrics::SetWorkers(int idle, int busy, int lost) {
  workers_.Add({{"state", "idle"}}).Set(idle);
  workers_.Add({{"state", "busy"}}).Set(busy);
  workers_.Add({{"state", "lost"}}).Set(lost);
}

void CoordinatorMetrics::SetWorkerHeartbeatAges(const std::map<std::string, double>& age_by_name) {
  for (const auto& [name, age] : age_by_name) heartbeat_age_.Add({{"worker", name}}).Set(age);
}

void CoordinatorMetrics::SetScore(const std::string& run, const std::string& task,
                                  const std::string& variant, std::optional<double> score,
                                  std::optional<uint64_t> step, std::optional<double> previous) {
  const std::map<std::string, std::string> labels = {
      {"run", run}, {"task", task}, {"variant", variant}};
  SetOrRemove(score_, labels, score);
  SetOrRemove(score_step_, labels,
              step.has_value() ? std::optional<double>(static_cast<double>(*step)) : std::nullopt);
  SetOrRemove(score_previous_, labels, previous);
}

void CoordinatorMetrics::SetStability(const std::string& run, const std::string& task,
                                      const std::string& variant, std::optional<double> mtv,
                                      std::optional<double> instability) {
  const std::map<std::string, std::string> labels = {
      {"run", run}, {"task", task}, {"variant", variant}};
  SetOrRemove(mtv_, labels, mtv);
  SetOrRemove(instability_, labels, instability);
}

SourceMetrics::SourceMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      s3_requests_(Counter(*registry_, "steadyeval_s3_requests_total",
                           "S3 requests (every attempt, retries included) made by checkpoint "
                           "discovery, by operation")),
      s3_errors_(Counter(*registry_, "steadyeval_s3_request_errors_total",
                         "Failed S3 request attempts of checkpoint discovery, by operation and "
                         "kind of failure")),
      list_seconds_(Histogram(*registry_, "steadyeval_source_list_seconds",
                              "Time one poll took to list a run's source (its root), by scheme")) {}

void SourceMetrics::OnAttempt(const char* op, double /*seconds*/, S3ErrorKind error) {
  s3_requests_.Add({{"op", op}}).Increment();
  if (error != S3ErrorKind::kNone) {
    s3_errors_.Add({{"op", op}, {"kind", S3ErrorKindName(error)}}).Increment();
  }
}

void SourceMetrics::OnSourceList(const char* scheme, double seconds, bool /*ok*/) {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  list_seconds_.Add({{"scheme", scheme}}, *buckets).Observe(seconds);
}

}  // namespace steadyeval
