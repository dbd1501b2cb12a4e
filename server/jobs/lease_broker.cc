#include "server/jobs/lease_broker.h"

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/job_failure_proto.h"
#include "api/protocol.h"
#include "api/variant_proto.h"
#include "common/status.h"

namespace steadyeval {
namespace {

// The run's source as leases name it. A folder: without a file:// prefix, lexically
// normalised; symlinks are left to the worker, which resolves them on its own filesystem
// (after its --path_map) together with the checkpoint paths. An s3:// URI as stored (run
// creation normalised it; path normalisation would fold its "//").
std::string SourceRootOf(const v1::RunConfig& config) {
  std::string dir = config.source();
  if (absl::StartsWith(dir, "s3://")) return dir;
  if (absl::StartsWith(dir, "file://")) dir = dir.substr(7);
  return std::filesystem::path(dir).lexically_normal().string();
}

std::vector<HeldWindow> HeldWindowsOf(const v1::AcquireJobRequest& r) {
  std::vector<HeldWindow> held;
  for (const v1::WindowSumHeld& sum : r.window_sums()) {
    if (sum.window() < 2) continue;
    held.push_back(HeldWindow{sum.run(), sum.window(),
                              std::vector<uint64_t>(sum.steps().begin(), sum.steps().end())});
  }
  return held;
}

}  // namespace

LeaseBroker::LeaseBroker(Scheduler* scheduler, WorkerRegistry* workers, Store* store,
                         const Clock* clock, LeaseSecrets secrets, RunLookup find_run,
                         LeaseBrokerOptions options)
    : scheduler_(scheduler),
      workers_(workers),
      store_(store),
      clock_(clock),
      secrets_(std::move(secrets)),
      find_run_(std::move(find_run)),
      options_(options) {}

absl::StatusOr<v1::AcquireJobResponse> LeaseBroker::Acquire(
    const v1::AcquireJobRequest& r, const std::function<bool()>& cancelled) {
  RETURN_IF_ERROR(workers_->BeginPoll(r.worker_id(), HeldWindowsOf(r)));
  struct PollingScope {
    WorkerRegistry* workers;
    const std::string& id;
    ~PollingScope() { workers->EndPoll(id); }
  } polling{workers_, r.worker_id()};
  const int64_t wait_ms = std::clamp<int64_t>(r.wait_ms(), 0, options_.max_acquire_wait_ms);
  const int64_t deadline = clock_->MonotonicNanos() + wait_ms * 1'000'000;
  v1::AcquireJobResponse response;
  while (true) {
    uint64_t generation;
    bool stopped;
    {
      absl::MutexLock lock(&wake_mu_);
      generation = wake_generation_;
      stopped = stopped_;
    }
    // A caller that has gone (cancelled, or past its deadline while the call queued in a
    // busy server) would never see a lease taken for it: the job would sit leased until the
    // lease expired and that expiry would count as a failed attempt.
    if (cancelled && cancelled()) return response;
    ASSIGN_OR_RETURN(std::optional<v1::Job> job,
                     scheduler_->Lease(r.worker_id(),
                                       workers_->AffinityFor(r.worker_id(),
                                                             scheduler_->LeasedJobByWorker())));
    if (job.has_value()) {
      ASSIGN_OR_RETURN(*response.mutable_lease(), BuildLeasedJob(*job));
      response.set_has_job(true);
      return response;
    }
    const int64_t now = clock_->MonotonicNanos();
    if (stopped || now >= deadline || (cancelled && cancelled())) return response;
    // Wake on new work, or periodically to catch backoffs and expiries passing.
    WaitForWake(generation, std::min(deadline - now, options_.recheck_interval_ms * 1'000'000));
  }
}

void LeaseBroker::WaitForWake(uint64_t generation, int64_t timeout_nanos) {
  absl::MutexLock lock(&wake_mu_);
  const auto woken = [this, generation] {
    wake_mu_.AssertHeld();  // Await evaluates it under the lock; clang cannot see that
    return stopped_ || wake_generation_ != generation;
  };
  clock_->AwaitWithTimeout(wake_mu_, absl::Condition(&woken), timeout_nanos);
}

absl::StatusOr<v1::LeasedJob> LeaseBroker::BuildLeasedJob(const v1::Job& job) const {
  ASSIGN_OR_RETURN(v1::Run run, find_run_(job.run()));
  v1::LeasedJob leased;
  *leased.mutable_job() = job;
  for (uint64_t step : job.steps()) {
    std::optional<v1::Checkpoint> c = scheduler_->GetCheckpoint(job.run(), step);
    if (!c.has_value()) {
      return absl::DataLossError(absl::StrCat("job ", job.id(), ": checkpoint ", job.run(), "@",
                                              step, " is not in the store"));
    }
    leased.add_checkpoint_paths(c->path());
  }
  for (const v1::TaskRef& ref : job.tasks()) {
    ASSIGN_OR_RETURN(v1::TaskContent header, store_->GetTask(ref.sha256()));
    header.clear_content();
    header.clear_train_content();
    *header.mutable_ref() = ref;  // with the run's metric and max_samples
    *leased.add_task_headers() = std::move(header);
  }
  leased.set_few_shots(run.config().few_shots());
  leased.set_prompt_language(run.config().prompt_language());
  leased.set_bos(run.config().bos());
  leased.set_max_new_tokens_delta(run.config().max_new_tokens_delta());
  leased.set_tokenizer_path(run.config().tokenizer_path());
  leased.set_tokenizer_sha256(run.tokenizer_sha256());
  leased.set_lease_ttl_ms(scheduler_->lease_ttl_ms());
  leased.set_lease_secret(secrets_.For(job.id(), job.epoch(), job.worker_id()));
  leased.set_source_root(SourceRootOf(run.config()));
  leased.set_s3_endpoint(run.config().s3_endpoint());
  leased.set_s3_region(run.config().s3_region());
  leased.set_convert(run.config().convert());
  if (absl::StatusOr<JobKind> kind = JobKindOf(job); kind.ok() && !kind->is_raw()) {
    leased.set_window(kind->window());
  }
  for (const auto& [from, to] : scheduler_->DriftPairs(job)) {
    std::optional<v1::Checkpoint> a = scheduler_->GetCheckpoint(job.run(), from);
    std::optional<v1::Checkpoint> b = scheduler_->GetCheckpoint(job.run(), to);
    if (!a.has_value() || !b.has_value()) continue;
    v1::DriftTarget* target = leased.add_drift_targets();
    target->set_from_step(from);
    target->set_from_path(a->path());
    target->set_to_step(to);
    target->set_to_path(b->path());
  }
  return leased;
}

absl::Status LeaseBroker::CheckLeaseSecret(uint64_t job_id, uint64_t epoch,
                                           const std::string& worker_id,
                                           const std::string& secret) const {
  if (secrets_.Matches(job_id, epoch, worker_id, secret)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "job ", job_id, " epoch ", epoch,
      ": the request does not prove the lease (its worker id, epoch and lease secret must be "
      "those the lease was granted with); only the worker holding a lease may use it"));
}

absl::StatusOr<v1::HeartbeatResponse> LeaseBroker::Heartbeat(const v1::HeartbeatRequest& r) {
  if (r.job_id() != 0) {
    RETURN_IF_ERROR(CheckLeaseSecret(r.job_id(), r.epoch(), r.worker_id(), r.lease_secret()));
  }
  RETURN_IF_ERROR(workers_->Touch(r.worker_id()));
  if (r.job_id() != 0) RETURN_IF_ERROR(scheduler_->Heartbeat(r.job_id(), r.epoch(), r.worker_id()));
  v1::HeartbeatResponse response;
  response.set_lease_ttl_ms(scheduler_->lease_ttl_ms());
  return response;
}

absl::StatusOr<LeaseBroker::FailOutcome> LeaseBroker::Fail(const v1::FailJobRequest& r) {
  RETURN_IF_ERROR(CheckLeaseSecret(r.job_id(), r.epoch(), r.worker_id(), r.lease_secret()));
  workers_->Touch(r.worker_id()).IgnoreError();  // heard from; the lease check is Fail's
  FailOutcome outcome;
  v1::JobState state = v1::JOB_PENDING;
  outcome.failure = JobFailureOf(r);  // typed, or read from an old worker's fields
  if (outcome.failure == JobFailure::kWorkerStopping) {
    // A stopping worker's hand-back: not the checkpoint's fault, not an attempt.
    RETURN_IF_ERROR(scheduler_->HandBack(r.job_id(), r.epoch(), r.worker_id()));
    std::cerr << "steadyeval-server: job " << r.job_id() << " handed back by stopping worker "
              << r.worker_id() << "\n";
    outcome.handed_back = true;
  } else {
    ASSIGN_OR_RETURN(state, scheduler_->Fail(r.job_id(), r.epoch(), r.worker_id(), r.reason(),
                                             outcome.failure));
  }
  WakeWaiters();
  outcome.response.set_state(state);
  return outcome;
}

absl::StatusOr<std::vector<uint64_t>> LeaseBroker::ExpireLeases() {
  ASSIGN_OR_RETURN(std::vector<uint64_t> expired, scheduler_->ExpireLeases());
  // Backoffs pass silently; the long polls re-check on their own period too.
  if (!expired.empty() || scheduler_->HasLeasableJob()) WakeWaiters();
  return expired;
}

void LeaseBroker::WakeWaiters() {
  absl::MutexLock lock(&wake_mu_);
  ++wake_generation_;
}

void LeaseBroker::Stop() {
  absl::MutexLock lock(&wake_mu_);
  stopped_ = true;
  ++wake_generation_;
}

}  // namespace steadyeval
