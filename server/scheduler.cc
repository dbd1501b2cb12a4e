#include "server/scheduler.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace steadyeval {
namespace {

using v1::JobState;

// The legal job transitions (DESIGN §5), in one place.
constexpr std::pair<JobState, JobState> kLegalTransitions[] = {
    {v1::JOB_PENDING, v1::JOB_LEASED},  // leased to a worker
    {v1::JOB_LEASED, v1::JOB_DONE},     // results committed
    {v1::JOB_LEASED, v1::JOB_FAILED},   // permanent failure / attempts exhausted
    {v1::JOB_LEASED, v1::JOB_PENDING},  // lease expired / retryable failure
};

uint32_t KindRank(const std::string& kind) {
  if (kind == "raw") return 0;
  uint32_t n = 0;
  if (absl::StartsWith(kind, "avg@") && absl::SimpleAtoi(kind.substr(4), &n)) return n;
  return UINT32_MAX;
}

}  // namespace

std::string JobStateLabel(v1::JobState state) {
  switch (state) {
    case v1::JOB_PENDING: return "pending";
    case v1::JOB_LEASED: return "leased";
    case v1::JOB_DONE: return "done";
    case v1::JOB_FAILED: return "failed";
    default: return "unspecified";
  }
}

bool Scheduler::IsLegalTransition(v1::JobState from, v1::JobState to) {
  for (const auto& [f, t] : kLegalTransitions) {
    if (f == from && t == to) return true;
  }
  return false;
}

Scheduler::PendingKey Scheduler::KeyOf(const v1::Job& job) {
  uint64_t step = job.steps().empty() ? 0 : job.steps(job.steps_size() - 1);
  return {-static_cast<int64_t>(step), KindRank(job.kind()), job.id()};
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(Store* store, Clock* clock,
                                                             SchedulerOptions options) {
  std::unique_ptr<Scheduler> s(new Scheduler(store, clock, options));
  absl::MutexLock lock(&s->mu_);
  RETURN_IF_ERROR(store->ScanCheckpoints("", [&](const v1::Checkpoint& c) {
    s->checkpoints_[{c.run(), c.step()}] = c;
    return true;
  }));
  ASSIGN_OR_RETURN(s->next_job_id_, store->GetNextJobId());
  const int64_t now = clock->MonotonicNanos();
  RETURN_IF_ERROR(store->ScanJobs([&](const v1::Job& job) {
    Entry& e = s->jobs_[job.id()];
    e.job = job;
    if (job.state() == v1::JOB_LEASED) {
      // Never persisted as a clock value: a fresh lease from now, same epoch and worker.
      e.lease_expiry_nanos = now + options.lease_ttl_ms * 1'000'000;
      e.leased_at_nanos = now;
    } else if (job.state() == v1::JOB_PENDING) {
      s->pending_by_run_[job.run()].insert(KeyOf(job));
    }
    s->next_job_id_ = std::max(s->next_job_id_, job.id() + 1);
    return true;
  }));
  return s;
}

absl::StatusOr<std::optional<v1::Job>> Scheduler::AdmitCheckpoint(const v1::Run& run,
                                                                  uint64_t step,
                                                                  const std::string& path) {
  absl::MutexLock lock(&mu_);
  const std::string& name = run.config().name();
  if (checkpoints_.count({name, step})) return std::optional<v1::Job>();
  v1::Checkpoint checkpoint;
  checkpoint.set_run(name);
  checkpoint.set_step(step);
  checkpoint.set_path(path);
  checkpoint.set_state(v1::CHECKPOINT_PENDING);
  checkpoint.set_admitted_unix_ms(clock_->UnixMillis());

  v1::Job job;
  job.set_id(next_job_id_);
  job.set_run(name);
  job.set_kind("raw");
  job.add_steps(step);
  *job.mutable_tasks() = run.config().tasks();
  job.set_state(v1::JOB_PENDING);
  job.set_created_unix_ms(clock_->UnixMillis());

  Store::Batch batch = store_->NewBatch();
  batch.PutCheckpoint(checkpoint);
  batch.PutJob(job);
  batch.PutNextJobId(next_job_id_ + 1);
  RETURN_IF_ERROR(store_->Commit(std::move(batch)));

  ++next_job_id_;
  checkpoints_[{name, step}] = checkpoint;
  jobs_[job.id()].job = job;
  pending_by_run_[name].insert(KeyOf(job));
  return std::optional<v1::Job>(job);
}

std::optional<v1::Checkpoint> Scheduler::FollowCheckpoint(const v1::Job& next) const {
  if (next.kind() != "raw" || next.steps().empty()) return std::nullopt;
  auto it = checkpoints_.find({next.run(), next.steps(0)});
  if (it == checkpoints_.end()) return std::nullopt;
  v1::Checkpoint c = it->second;
  switch (next.state()) {
    case v1::JOB_PENDING:
      c.set_state(v1::CHECKPOINT_PENDING);
      c.set_error(next.error());
      break;
    case v1::JOB_LEASED:
      c.set_state(v1::CHECKPOINT_EVALUATING);
      break;
    case v1::JOB_DONE:
      c.set_state(v1::CHECKPOINT_EVALUATED);
      c.clear_error();
      break;
    case v1::JOB_FAILED:
      c.set_state(v1::CHECKPOINT_FAILED);
      c.set_error(next.error());
      break;
    default:
      return std::nullopt;
  }
  return c;
}

absl::Status Scheduler::CommitTransition(Entry& entry, v1::Job next, Store::Batch batch) {
  if (!IsLegalTransition(entry.job.state(), next.state())) {
    return absl::InternalError(absl::StrCat("job ", entry.job.id(), ": illegal transition ",
                                            JobStateLabel(entry.job.state()), " -> ",
                                            JobStateLabel(next.state())));
  }
  std::optional<v1::Checkpoint> checkpoint = FollowCheckpoint(next);
  batch.PutJob(next);
  if (checkpoint) batch.PutCheckpoint(*checkpoint);
  RETURN_IF_ERROR(store_->Commit(std::move(batch)));

  if (entry.job.state() == v1::JOB_PENDING) {
    auto it = pending_by_run_.find(entry.job.run());
    if (it != pending_by_run_.end()) it->second.erase(KeyOf(entry.job));
  }
  entry.job = std::move(next);
  if (entry.job.state() == v1::JOB_PENDING) {
    pending_by_run_[entry.job.run()].insert(KeyOf(entry.job));
  }
  if (checkpoint) checkpoints_[{checkpoint->run(), checkpoint->step()}] = *checkpoint;
  return absl::OkStatus();
}

absl::StatusOr<std::optional<v1::Job>> Scheduler::Lease(const std::string& worker_id) {
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_->MonotonicNanos();
  if (pending_by_run_.empty()) return std::optional<v1::Job>();
  // Round-robin: start with the first run after the one served last, wrapping around.
  auto start = pending_by_run_.upper_bound(last_served_run_);
  std::vector<std::map<std::string, std::set<PendingKey>>::iterator> order;
  for (auto it = start; it != pending_by_run_.end(); ++it) order.push_back(it);
  for (auto it = pending_by_run_.begin(); it != start; ++it) order.push_back(it);
  for (auto run_it : order) {
    for (const PendingKey& key : run_it->second) {
      Entry& entry = jobs_.at(std::get<2>(key));
      if (entry.not_before_nanos > now) continue;
      v1::Job next = entry.job;
      next.set_state(v1::JOB_LEASED);
      next.set_epoch(next.epoch() + 1);
      next.set_attempts(next.attempts() + 1);
      next.set_worker_id(worker_id);
      std::string run = run_it->first;
      RETURN_IF_ERROR(CommitTransition(entry, std::move(next), store_->NewBatch()));
      entry.lease_expiry_nanos = now + options_.lease_ttl_ms * 1'000'000;
      entry.leased_at_nanos = now;
      entry.not_before_nanos = 0;
      last_served_run_ = run;
      return std::optional<v1::Job>(entry.job);
    }
  }
  return std::optional<v1::Job>();
}

bool Scheduler::HasLeasableJob() const {
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_->MonotonicNanos();
  for (const auto& [run, keys] : pending_by_run_) {
    for (const PendingKey& key : keys) {
      if (jobs_.at(std::get<2>(key)).not_before_nanos <= now) return true;
    }
  }
  return false;
}

absl::StatusOr<Scheduler::Entry*> Scheduler::FindHeld(uint64_t job_id, uint64_t epoch,
                                                      const std::string& worker_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    return absl::NotFoundError(absl::StrCat("job ", job_id, " does not exist"));
  }
  const v1::Job& job = it->second.job;
  if (job.state() != v1::JOB_LEASED) {
    return absl::AbortedError(absl::StrCat(
        "job ", job_id, " is ", JobStateLabel(job.state()), " (epoch ", job.epoch(),
        "), not leased to worker ", worker_id, " with epoch ", epoch, "; stop working on it"));
  }
  if (job.epoch() != epoch || job.worker_id() != worker_id) {
    return absl::AbortedError(absl::StrCat(
        "job ", job_id, ": worker ", worker_id, " with epoch ", epoch,
        " does not hold the lease (it is epoch ", job.epoch(), " held by worker ",
        job.worker_id(), "); stop working on it"));
  }
  return &it->second;
}

absl::Status Scheduler::Heartbeat(uint64_t job_id, uint64_t epoch, const std::string& worker_id) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Entry * entry, FindHeld(job_id, epoch, worker_id));
  entry->lease_expiry_nanos = clock_->MonotonicNanos() + options_.lease_ttl_ms * 1'000'000;
  return absl::OkStatus();
}

absl::StatusOr<ReportCheck> Scheduler::CheckReport(uint64_t job_id, uint64_t epoch,
                                                   const std::string& worker_id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it != jobs_.end() && it->second.job.state() == v1::JOB_DONE &&
      it->second.job.epoch() == epoch) {
    return ReportCheck{it->second.job, true};
  }
  ASSIGN_OR_RETURN(Entry * entry,
                   const_cast<Scheduler*>(this)->FindHeld(job_id, epoch, worker_id));
  return ReportCheck{entry->job, false};
}

absl::StatusOr<CompletedJob> Scheduler::Complete(uint64_t job_id, uint64_t epoch,
                                                 const std::string& worker_id,
                                                 Store::Batch results) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Entry * entry, FindHeld(job_id, epoch, worker_id));
  v1::Job next = entry->job;
  next.set_state(v1::JOB_DONE);
  next.clear_error();
  next.set_finished_unix_ms(clock_->UnixMillis());
  const int64_t now = clock_->MonotonicNanos();
  RETURN_IF_ERROR(CommitTransition(*entry, std::move(next), std::move(results)));
  return CompletedJob{entry->job, (now - entry->leased_at_nanos) / 1e9};
}

int64_t Scheduler::BackoffNanos(uint32_t attempts) const {
  int64_t ms = options_.backoff_initial_ms;
  for (uint32_t i = 1; i < attempts && ms < options_.backoff_max_ms; ++i) ms *= 2;
  return std::min(ms, options_.backoff_max_ms) * 1'000'000;
}

absl::StatusOr<v1::JobState> Scheduler::Release(Entry& entry, const std::string& reason,
                                                bool retryable) {
  v1::Job next = entry.job;
  const bool exhausted = next.attempts() >= options_.max_attempts;
  if (retryable && !exhausted) {
    next.set_state(v1::JOB_PENDING);
    next.set_error(reason);
  } else {
    next.set_state(v1::JOB_FAILED);
    next.set_error(retryable ? absl::StrCat("gave up after ", next.attempts(),
                                            " attempts; last error: ", reason)
                             : reason);
    next.set_finished_unix_ms(clock_->UnixMillis());
  }
  const uint32_t attempts = next.attempts();
  RETURN_IF_ERROR(CommitTransition(entry, std::move(next), store_->NewBatch()));
  entry.lease_expiry_nanos = 0;
  if (entry.job.state() == v1::JOB_PENDING) {
    entry.not_before_nanos = clock_->MonotonicNanos() + BackoffNanos(attempts);
  }
  return entry.job.state();
}

absl::StatusOr<v1::JobState> Scheduler::Fail(uint64_t job_id, uint64_t epoch,
                                             const std::string& worker_id,
                                             const std::string& reason, bool retryable) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Entry * entry, FindHeld(job_id, epoch, worker_id));
  return Release(*entry, reason.empty() ? "worker gave no reason" : reason, retryable);
}

absl::StatusOr<std::vector<uint64_t>> Scheduler::ExpireLeases() {
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_->MonotonicNanos();
  std::vector<uint64_t> expired;
  for (auto& [id, entry] : jobs_) {
    if (entry.job.state() != v1::JOB_LEASED || entry.lease_expiry_nanos > now) continue;
    RETURN_IF_ERROR(Release(entry,
                            absl::StrCat("lease expired: worker ", entry.job.worker_id(),
                                         " sent no heartbeat for ", options_.lease_ttl_ms,
                                         " ms (epoch ", entry.job.epoch(), ")"),
                            /*retryable=*/true)
                        .status());
    expired.push_back(id);
  }
  return expired;
}

std::optional<v1::Job> Scheduler::GetJob(uint64_t id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second.job;
}

std::optional<v1::Checkpoint> Scheduler::GetCheckpoint(const std::string& run,
                                                       uint64_t step) const {
  absl::MutexLock lock(&mu_);
  auto it = checkpoints_.find({run, step});
  if (it == checkpoints_.end()) return std::nullopt;
  return it->second;
}

std::vector<v1::Checkpoint> Scheduler::Checkpoints(const std::string& run) const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Checkpoint> out;
  for (auto it = checkpoints_.lower_bound({run, 0});
       it != checkpoints_.end() && it->first.first == run; ++it) {
    out.push_back(it->second);
  }
  return out;
}

std::vector<v1::Job> Scheduler::Jobs() const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Job> out;
  out.reserve(jobs_.size());
  for (const auto& [id, entry] : jobs_) out.push_back(entry.job);
  return out;
}

std::map<std::string, uint64_t> Scheduler::LeasedJobByWorker() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, uint64_t> out;
  for (const auto& [id, entry] : jobs_) {
    if (entry.job.state() == v1::JOB_LEASED) out[entry.job.worker_id()] = id;
  }
  return out;
}

JobCounts Scheduler::CountJobs() const {
  absl::MutexLock lock(&mu_);
  JobCounts counts;
  for (const auto& [id, entry] : jobs_) {
    ++counts.by_run_kind_state[{entry.job.run(), entry.job.kind(), entry.job.state()}];
  }
  return counts;
}

std::optional<int64_t> Scheduler::LeaseExpiryNanos(uint64_t job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.job.state() != v1::JOB_LEASED) return std::nullopt;
  return it->second.lease_expiry_nanos;
}

}  // namespace steadyeval
