#include "server/jobs/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "api/variant_proto.h"
#include "common/status.h"

namespace steadyeval {
namespace {

using v1::JobState;

// The legal job transitions (DESIGN §5), in one place.
constexpr std::pair<JobState, JobState> kLegalTransitions[] = {
    {v1::JOB_PENDING, v1::JOB_LEASED},  // leased to a worker
    {v1::JOB_LEASED, v1::JOB_DONE},     // results committed
    {v1::JOB_LEASED, v1::JOB_FAILED},   // permanent failure / attempts exhausted
    {v1::JOB_LEASED, v1::JOB_PENDING},  // lease expired / retryable failure / handed back
    {v1::JOB_FAILED, v1::JOB_PENDING},  // requeued by an admin
    // A window whose membership changed, or whose size was removed from the run.
    {v1::JOB_PENDING, v1::JOB_SUPERSEDED},
    {v1::JOB_LEASED, v1::JOB_SUPERSEDED},
    {v1::JOB_DONE, v1::JOB_SUPERSEDED},
    {v1::JOB_FAILED, v1::JOB_SUPERSEDED},
};

// The window of an avg@n job (n), 0 for raw; nullopt for a kind this scheduler never
// writes (a record from elsewhere: never leased before raw and avg@n jobs, never a window).
std::optional<uint32_t> WindowOf(const v1::Job& job) {
  absl::StatusOr<JobKind> kind = JobKindOf(job);
  if (!kind.ok()) return std::nullopt;
  return kind->window();
}

std::vector<uint64_t> IdsOf(const std::vector<v1::Job>& jobs) {
  std::vector<uint64_t> ids;
  for (const v1::Job& job : jobs) ids.push_back(job.id());
  return ids;
}

uint64_t EndStep(const v1::Job& job) {
  return job.steps().empty() ? 0 : job.steps(job.steps_size() - 1);
}

}  // namespace

bool Scheduler::IsLegalTransition(v1::JobState from, v1::JobState to) {
  for (const auto& [f, t] : kLegalTransitions) {
    if (f == from && t == to) return true;
  }
  return false;
}

Scheduler::PendingKey Scheduler::KeyOf(const v1::Job& job) {
  return {-static_cast<int64_t>(EndStep(job)), WindowOf(job).value_or(UINT32_MAX), job.id()};
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(Store* store, Clock* clock,
                                                             SchedulerOptions options) {
  std::unique_ptr<Scheduler> s(new Scheduler(store, clock, options));
  absl::MutexLock lock(&s->mu_);
  RETURN_IF_ERROR(store->ScanCheckpoints("", [&](const v1::Checkpoint& c) {
    s->mu_.AssertHeld();  // the lock above; clang's analysis does not follow it into lambdas
    s->checkpoints_[{c.run(), c.step()}] = c;
    return true;
  }));
  ASSIGN_OR_RETURN(s->next_job_id_, store->GetNextJobId());
  const int64_t now = clock->MonotonicNanos();
  RETURN_IF_ERROR(store->ScanJobs([&](const v1::Job& job) {
    s->mu_.AssertHeld();
    Entry& e = s->jobs_[job.id()];
    e.job = job;
    FillJobKindSpec(e.job);  // stored before kind_spec: leases and rewrites carry it
    if (job.state() == v1::JOB_LEASED) {
      // Never persisted as a clock value: a fresh lease from now, same epoch and worker.
      e.lease_expiry_nanos = now + options.lease_ttl_ms * 1'000'000;
      e.leased_at_nanos = now;
      e.inherited_unheard = true;
    } else if (job.state() == v1::JOB_PENDING) {
      s->pending_by_run_[job.run()].insert(KeyOf(job));
    }
    s->next_job_id_ = std::max(s->next_job_id_, job.id() + 1);
    if (IsRawJob(job) && !job.steps().empty()) {
      s->raw_jobs_[{job.run(), job.steps(0)}] = job.id();
    } else if (std::optional<uint32_t> n = WindowOf(job);
               n.has_value() && *n > 0 && job.state() != v1::JOB_SUPERSEDED) {
      s->window_jobs_[{job.run(), *n, EndStep(job)}] = job.id();  // ids ascend: newest wins
    }
    return true;
  }));
  return s;
}

std::vector<uint64_t> Scheduler::AdmittedStepsLocked(const std::string& run) const {
  std::vector<uint64_t> steps;
  for (auto it = checkpoints_.lower_bound({run, 0});
       it != checkpoints_.end() && it->first.first == run; ++it) {
    steps.push_back(it->first.second);
  }
  return steps;
}

v1::Job Scheduler::NewWindowJob(const v1::Run& run, uint32_t n,
                                const std::vector<uint64_t>& steps, size_t end_index,
                                uint64_t id) const {
  v1::Job job;
  job.set_id(id);
  job.set_run(run.config().name());
  SetJobKind(job, JobKind::Average(n));
  for (size_t i = end_index + 1 - n; i <= end_index; ++i) job.add_steps(steps[i]);
  *job.mutable_tasks() = run.config().tasks();
  job.set_state(v1::JOB_PENDING);
  job.set_created_unix_ms(clock_->UnixMillis());
  return job;
}

v1::Job Scheduler::Superseded(const Entry& entry, uint64_t by, const std::string& reason) const {
  v1::Job next = entry.job;
  next.set_state(v1::JOB_SUPERSEDED);
  next.set_superseded_by(by);
  next.set_error(reason);
  next.set_finished_unix_ms(clock_->UnixMillis());
  return next;
}

void Scheduler::Install(v1::Job job) {
  Entry& entry = jobs_[job.id()];
  if (entry.job.id() != 0 && entry.job.state() == v1::JOB_PENDING) {
    auto it = pending_by_run_.find(entry.job.run());
    if (it != pending_by_run_.end()) it->second.erase(KeyOf(entry.job));
  }
  if (job.state() != v1::JOB_LEASED) entry.lease_expiry_nanos = 0;
  const std::optional<uint32_t> n = WindowOf(job);
  if (n.has_value() && *n > 0) {
    const WindowKey key{job.run(), *n, EndStep(job)};
    auto it = window_jobs_.find(key);
    if (job.state() == v1::JOB_SUPERSEDED) {
      if (it != window_jobs_.end() && it->second == job.id()) window_jobs_.erase(it);
    } else {
      window_jobs_[key] = job.id();
    }
  }
  if (job.state() == v1::JOB_PENDING) pending_by_run_[job.run()].insert(KeyOf(job));
  entry.job = std::move(job);
}

bool Scheduler::IsIdle(const Entry& entry) const {
  return !entry.committing && !deleting_runs_.count(entry.job.run());
}

void Scheduler::AwaitIdle(const std::vector<uint64_t>& ids) {
  const auto idle = [this, &ids] {
    mu_.AssertHeld();  // Await evaluates it under mu_; clang cannot see that
    for (uint64_t id : ids) {
      auto it = jobs_.find(id);
      if (it != jobs_.end() && !IsIdle(it->second)) return false;
    }
    return true;
  };
  mu_.Await(absl::Condition(&idle));
}

absl::Status Scheduler::CommitReserved(const std::vector<uint64_t>& reserved, Store::Batch batch,
                                       const std::function<absl::Status(Store::Batch&)>& extra) {
  const auto mark = [this, &reserved](bool committing) {
    mu_.AssertHeld();
    for (uint64_t id : reserved) {
      Entry& entry = jobs_.at(id);
      entry.committing = committing;
      int& count = committing_by_run_[entry.job.run()];
      count += committing ? 1 : -1;
      if (count == 0) committing_by_run_.erase(entry.job.run());
    }
  };
  mark(true);
  mu_.Unlock();
  absl::Status status = extra ? extra(batch) : absl::OkStatus();
  if (status.ok()) status = store_->Commit(std::move(batch));
  mu_.Lock();
  mark(false);
  return status;
}

absl::StatusOr<std::optional<Admission>> Scheduler::AdmitCheckpoint(
    const v1::Run& run, uint64_t step, const std::string& path,
    const ExtraWrites<Admission>& extra) {
  absl::MutexLock structure_lock(&structure_mu_);
  absl::MutexLock lock(&mu_);
  const std::string& name = run.config().name();
  Admission a;
  while (true) {
    if (checkpoints_.count({name, step})) return std::optional<Admission>();
    a = PrepareAdmission(run, step, path);
    if (AllIdle(IdsOf(a.superseded))) break;
    AwaitIdle(IdsOf(a.superseded));  // then prepare again: those jobs have moved on
  }
  const uint64_t next_id = a.raw_job.id() + 1 + a.window_jobs.size();

  Store::Batch batch = store_->NewBatch();
  batch.PutCheckpoint(a.checkpoint);
  batch.PutJob(a.raw_job);
  for (const v1::Job& job : a.window_jobs) batch.PutJob(job);
  for (const v1::Job& job : a.superseded) batch.PutJob(job);
  batch.PutNextJobId(next_id);
  RETURN_IF_ERROR(CommitReserved(IdsOf(a.superseded), std::move(batch), [&](Store::Batch& b) {
    return extra ? extra(a, b) : absl::OkStatus();
  }));

  next_job_id_ = next_id;
  checkpoints_[{name, step}] = a.checkpoint;
  raw_jobs_[{name, step}] = a.raw_job.id();
  for (const v1::Job& job : a.superseded) Install(job);
  Install(a.raw_job);
  for (const v1::Job& job : a.window_jobs) Install(job);
  return std::optional<Admission>(std::move(a));
}

Admission Scheduler::PrepareAdmission(const v1::Run& run, uint64_t step,
                                      const std::string& path) const {
  const std::string& name = run.config().name();
  Admission a;
  a.checkpoint.set_run(name);
  a.checkpoint.set_step(step);
  a.checkpoint.set_path(path);
  a.checkpoint.set_state(v1::CHECKPOINT_PENDING);
  a.checkpoint.set_admitted_unix_ms(clock_->UnixMillis());

  uint64_t next_id = next_job_id_;
  a.raw_job.set_id(next_id++);
  a.raw_job.set_run(name);
  SetJobKind(a.raw_job, JobKind::Raw());
  a.raw_job.add_steps(step);
  *a.raw_job.mutable_tasks() = run.config().tasks();
  a.raw_job.set_state(v1::JOB_PENDING);
  a.raw_job.set_created_unix_ms(clock_->UnixMillis());

  a.steps = AdmittedStepsLocked(name);
  a.index = std::lower_bound(a.steps.begin(), a.steps.end(), step) - a.steps.begin();
  a.steps.insert(a.steps.begin() + a.index, step);
  const std::set<uint32_t> sizes(run.config().average_windows().begin(),
                                 run.config().average_windows().end());
  for (uint32_t n : sizes) {
    if (n < 2) continue;
    // Windows ending at positions index .. index+n-1 contain the new checkpoint.
    for (size_t end = a.index; end < a.steps.size() && end < a.index + n; ++end) {
      if (end + 1 < n) continue;
      v1::Job job = NewWindowJob(run, n, a.steps, end, next_id++);
      auto current = window_jobs_.find({name, n, a.steps[end]});
      if (current != window_jobs_.end()) {
        a.superseded.push_back(Superseded(
            jobs_.at(current->second), job.id(),
            absl::StrCat("window changed: checkpoint ", step, " was admitted late")));
      }
      a.window_jobs.push_back(std::move(job));
    }
  }
  // Windows of sizes no longer configured whose membership changed are superseded too.
  for (auto it = window_jobs_.lower_bound({name, 0, 0});
       it != window_jobs_.end() && std::get<0>(it->first) == name; ++it) {
    const uint32_t n = std::get<1>(it->first);
    if (sizes.count(n)) continue;
    auto pos = std::lower_bound(a.steps.begin(), a.steps.end(), std::get<2>(it->first));
    const size_t end = pos - a.steps.begin();
    if (end > a.index && end < a.index + n) {
      a.superseded.push_back(
          Superseded(jobs_.at(it->second), 0,
                     absl::StrCat("window changed: checkpoint ", step,
                                  " was admitted late (", ToString(JobKind::Average(n)),
                                  " is no longer configured)")));
    }
  }
  return a;
}

bool Scheduler::AllIdle(const std::vector<uint64_t>& ids) const {
  for (uint64_t id : ids) {
    auto it = jobs_.find(id);
    if (it != jobs_.end() && !IsIdle(it->second)) return false;
  }
  return true;
}

absl::StatusOr<WindowUpdate> Scheduler::SetAverageWindows(const v1::Run& run,
                                                          const ExtraWrites<WindowUpdate>& extra) {
  absl::MutexLock structure_lock(&structure_mu_);
  absl::MutexLock lock(&mu_);
  WindowUpdate update;
  while (true) {
    update = PrepareWindows(run);
    if (AllIdle(IdsOf(update.superseded))) break;
    AwaitIdle(IdsOf(update.superseded));  // then prepare again: those jobs have moved on
  }
  const uint64_t next_id = next_job_id_ + update.created.size();
  Store::Batch batch = store_->NewBatch();
  for (const v1::Job& job : update.created) batch.PutJob(job);
  for (const v1::Job& job : update.superseded) batch.PutJob(job);
  batch.PutNextJobId(next_id);
  RETURN_IF_ERROR(
      CommitReserved(IdsOf(update.superseded), std::move(batch), [&](Store::Batch& b) {
        return extra ? extra(update, b) : absl::OkStatus();
      }));
  next_job_id_ = next_id;
  for (const v1::Job& job : update.superseded) Install(job);
  for (const v1::Job& job : update.created) Install(job);
  return update;
}

WindowUpdate Scheduler::PrepareWindows(const v1::Run& run) const {
  const std::string& name = run.config().name();
  const std::set<uint32_t> sizes(run.config().average_windows().begin(),
                                 run.config().average_windows().end());
  const std::vector<uint64_t> steps = AdmittedStepsLocked(name);
  WindowUpdate update;
  uint64_t next_id = next_job_id_;
  for (uint32_t n : sizes) {
    if (n < 2) continue;
    for (size_t end = n - 1; end < steps.size(); ++end) {
      if (window_jobs_.count({name, n, steps[end]})) continue;
      update.created.push_back(NewWindowJob(run, n, steps, end, next_id++));
    }
  }
  for (auto it = window_jobs_.lower_bound({name, 0, 0});
       it != window_jobs_.end() && std::get<0>(it->first) == name; ++it) {
    const uint32_t n = std::get<1>(it->first);
    const Entry& entry = jobs_.at(it->second);
    if (sizes.count(n) || (entry.job.state() != v1::JOB_PENDING &&
                           entry.job.state() != v1::JOB_LEASED)) {
      continue;
    }
    update.superseded.push_back(
        Superseded(entry, 0, absl::StrCat(ToString(JobKind::Average(n)),
                                          " was removed from the run's windows")));
  }
  return update;
}

std::optional<v1::Checkpoint> Scheduler::FollowCheckpoint(const v1::Job& next) const {
  if (!IsRawJob(next) || next.steps().empty()) return std::nullopt;
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
                                            JobStateName(entry.job.state()), " -> ",
                                            JobStateName(next.state())));
  }
  std::optional<v1::Checkpoint> checkpoint = FollowCheckpoint(next);
  batch.PutJob(next);
  if (checkpoint) batch.PutCheckpoint(*checkpoint);
  const v1::JobState from = entry.job.state();
  const uint64_t epoch = entry.job.epoch();
  RETURN_IF_ERROR(CommitReserved({entry.job.id()}, std::move(batch)));
  // The reservation kept every other transition of this job out while mu_ was released.
  if (entry.job.state() != from || entry.job.epoch() != epoch) {
    return absl::InternalError(absl::StrCat("job ", entry.job.id(),
                                            " changed while its transition was committed"));
  }

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

absl::Status Scheduler::LeaseEntry(Entry& entry, const std::string& worker_id) {
  v1::Job next = entry.job;
  next.set_state(v1::JOB_LEASED);
  next.set_epoch(next.epoch() + 1);
  next.set_attempts(next.attempts() + 1);
  next.set_worker_id(worker_id);
  RETURN_IF_ERROR(CommitTransition(entry, std::move(next), store_->NewBatch()));
  const int64_t now = clock_->MonotonicNanos();
  entry.lease_expiry_nanos = now + options_.lease_ttl_ms * 1'000'000;
  entry.leased_at_nanos = now;
  entry.not_before_nanos = 0;
  return absl::OkStatus();
}

absl::StatusOr<std::optional<v1::Job>> Scheduler::Lease(const std::string& worker_id,
                                                        const LeaseAffinity& affinity) {
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_->MonotonicNanos();
  if (pending_by_run_.empty()) return std::optional<v1::Job>();

  // Affinity first: the avg@n job sharing the most members with a sum this worker holds.
  Entry* best = nullptr;
  size_t best_overlap = 0;
  for (const HeldWindow& held : affinity.held) {
    auto run_it = pending_by_run_.find(held.run);
    if (run_it == pending_by_run_.end() || paused_runs_.count(held.run)) continue;
    const std::set<uint64_t> members(held.steps.begin(), held.steps.end());
    for (const PendingKey& key : run_it->second) {
      if (std::get<1>(key) != held.window) continue;
      Entry& entry = jobs_.at(std::get<2>(key));
      if (entry.not_before_nanos > now || !IsIdle(entry)) continue;
      size_t overlap = 0;
      for (uint64_t step : entry.job.steps()) overlap += members.count(step);
      if (best == nullptr || overlap > best_overlap) {
        best = &entry;
        best_overlap = overlap;
      }
    }
  }
  if (best != nullptr) {
    RETURN_IF_ERROR(LeaseEntry(*best, worker_id));
    return std::optional<v1::Job>(best->job);
  }

  // Round-robin: start with the first run after the one served last, wrapping around.
  auto start = pending_by_run_.upper_bound(last_served_run_);
  std::vector<std::map<std::string, std::set<PendingKey>>::iterator> order;
  for (auto it = start; it != pending_by_run_.end(); ++it) order.push_back(it);
  for (auto it = pending_by_run_.begin(); it != start; ++it) order.push_back(it);
  for (auto run_it : order) {
    if (paused_runs_.count(run_it->first)) continue;
    for (const PendingKey& key : run_it->second) {
      Entry& entry = jobs_.at(std::get<2>(key));
      if (entry.not_before_nanos > now || !IsIdle(entry)) continue;
      const uint32_t rank = std::get<1>(key);
      if (rank > 0 && affinity.reserved.count({run_it->first, rank})) continue;
      std::string run = run_it->first;
      RETURN_IF_ERROR(LeaseEntry(entry, worker_id));
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
    if (paused_runs_.count(run)) continue;
    for (const PendingKey& key : keys) {
      const Entry& entry = jobs_.at(std::get<2>(key));
      if (entry.not_before_nanos <= now && IsIdle(entry)) return true;
    }
  }
  return false;
}

absl::StatusOr<Scheduler::Entry*> Scheduler::FindHeld(uint64_t job_id, uint64_t epoch,
                                                      const std::string& worker_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    if (job_id > 0 && job_id < next_job_id_) {  // ids are never reused: its run was deleted
      return absl::AbortedError(absl::StrCat(
          "job ", job_id, " no longer exists (its run was deleted); stop working on it"));
    }
    return absl::NotFoundError(absl::StrCat("job ", job_id, " does not exist"));
  }
  const v1::Job& job = it->second.job;
  if (job.state() != v1::JOB_LEASED) {
    return absl::AbortedError(absl::StrCat(
        "job ", job_id, " is ", JobStateName(job.state()), " (epoch ", job.epoch(),
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
  AwaitIdle({job_id});
  ASSIGN_OR_RETURN(Entry * entry, FindHeld(job_id, epoch, worker_id));
  entry->lease_expiry_nanos = clock_->MonotonicNanos() + options_.lease_ttl_ms * 1'000'000;
  entry->inherited_unheard = false;
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
                                                 Store::Batch results, const std::string& bos) {
  absl::MutexLock lock(&mu_);
  AwaitIdle({job_id});
  ASSIGN_OR_RETURN(Entry * entry, FindHeld(job_id, epoch, worker_id));
  v1::Job next = entry->job;
  next.set_state(v1::JOB_DONE);
  next.set_bos(bos);
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
                                             const std::string& reason, JobFailure failure) {
  absl::MutexLock lock(&mu_);
  AwaitIdle({job_id});
  ASSIGN_OR_RETURN(Entry * entry, FindHeld(job_id, epoch, worker_id));
  return Release(*entry, reason.empty() ? "worker gave no reason" : reason, IsRetryable(failure));
}

absl::Status Scheduler::HandBack(uint64_t job_id, uint64_t epoch, const std::string& worker_id) {
  absl::MutexLock lock(&mu_);
  AwaitIdle({job_id});
  ASSIGN_OR_RETURN(Entry * entry, FindHeld(job_id, epoch, worker_id));
  v1::Job next = entry->job;
  next.set_state(v1::JOB_PENDING);
  if (next.attempts() > 0) next.set_attempts(next.attempts() - 1);
  RETURN_IF_ERROR(CommitTransition(*entry, std::move(next), store_->NewBatch()));
  entry->lease_expiry_nanos = 0;
  entry->not_before_nanos = 0;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Job>> Scheduler::Requeue(const std::vector<uint64_t>& job_ids) {
  absl::MutexLock lock(&mu_);
  AwaitIdle(job_ids);
  std::vector<v1::Job> requeued;
  std::vector<v1::Checkpoint> checkpoints;
  std::set<uint64_t> seen;
  Store::Batch batch = store_->NewBatch();
  for (uint64_t id : job_ids) {
    if (!seen.insert(id).second) continue;
    auto it = jobs_.find(id);
    if (it == jobs_.end()) {
      return absl::NotFoundError(absl::StrCat("job ", id, " does not exist (see `steadyeval jobs`)"));
    }
    const v1::Job& job = it->second.job;
    if (job.state() != v1::JOB_FAILED) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", id, " is ", JobStateName(job.state()), "; only failed jobs can be requeued"));
    }
    v1::Job next = job;
    next.set_state(v1::JOB_PENDING);
    next.set_attempts(0);
    next.set_finished_unix_ms(0);
    next.set_error(absl::StrCat("requeued by an admin; last error: ", job.error()));
    if (std::optional<v1::Checkpoint> c = FollowCheckpoint(next)) {
      batch.PutCheckpoint(*c);
      checkpoints.push_back(std::move(*c));
    }
    batch.PutJob(next);
    requeued.push_back(std::move(next));
  }
  if (requeued.empty()) return requeued;
  RETURN_IF_ERROR(CommitReserved(IdsOf(requeued), std::move(batch)));
  for (const v1::Job& job : requeued) {
    Install(job);
    Entry& entry = jobs_.at(job.id());
    entry.not_before_nanos = 0;
  }
  for (const v1::Checkpoint& c : checkpoints) checkpoints_[{c.run(), c.step()}] = c;
  return requeued;
}

void Scheduler::SetRunPaused(const std::string& run, bool paused) {
  absl::MutexLock lock(&mu_);
  if (paused) {
    paused_runs_.insert(run);
  } else {
    paused_runs_.erase(run);
  }
}

absl::StatusOr<uint64_t> Scheduler::DeleteRun(
    const std::string& run, const std::function<absl::Status(Store::Batch&)>& extra) {
  absl::MutexLock structure_lock(&structure_mu_);
  absl::MutexLock lock(&mu_);
  // No transition of the run's jobs starts from here on (IsIdle); wait for those under way.
  deleting_runs_.insert(run);
  const auto run_idle = [this, &run] {
    mu_.AssertHeld();  // Await evaluates it under mu_; clang cannot see that
    return committing_by_run_.count(run) == 0;
  };
  mu_.Await(absl::Condition(&run_idle));
  std::vector<uint64_t> ids;
  for (const auto& [id, entry] : jobs_) {
    if (entry.job.run() == run) ids.push_back(id);
  }
  Store::Batch batch = store_->NewBatch();
  for (uint64_t id : ids) batch.DeleteJob(id);
  absl::Status deleted = CommitReserved({}, std::move(batch), extra);
  deleting_runs_.erase(run);
  RETURN_IF_ERROR(deleted);
  for (uint64_t id : ids) jobs_.erase(id);
  pending_by_run_.erase(run);
  paused_runs_.erase(run);
  auto in_run = [&run](const auto& key) { return std::get<0>(key) == run; };
  for (auto it = checkpoints_.lower_bound({run, 0}); it != checkpoints_.end() && in_run(it->first);) {
    it = checkpoints_.erase(it);
  }
  for (auto it = raw_jobs_.lower_bound({run, 0}); it != raw_jobs_.end() && in_run(it->first);) {
    it = raw_jobs_.erase(it);
  }
  for (auto it = window_jobs_.lower_bound({run, 0, 0});
       it != window_jobs_.end() && in_run(it->first);) {
    it = window_jobs_.erase(it);
  }
  return static_cast<uint64_t>(ids.size());
}

absl::StatusOr<std::vector<uint64_t>> Scheduler::ExpireLeases() {
  absl::MutexLock lock(&mu_);
  const int64_t now = clock_->MonotonicNanos();
  const auto overdue = [now](const Entry& entry) {
    return entry.job.state() == v1::JOB_LEASED && entry.lease_expiry_nanos <= now;
  };
  // Each release commits with mu_ released (CommitTransition): collect the ids first and
  // look each up again (a heartbeat, report or failure may have come in meanwhile). A
  // lease whose job has a transition under way is left to it.
  std::vector<uint64_t> candidates;
  for (const auto& [id, entry] : jobs_) {
    if (overdue(entry) && IsIdle(entry)) candidates.push_back(id);
  }
  std::vector<uint64_t> expired;
  for (uint64_t id : candidates) {
    auto it = jobs_.find(id);
    if (it == jobs_.end() || !overdue(it->second) || !IsIdle(it->second)) continue;
    Entry& entry = it->second;
    if (entry.inherited_unheard) {
      v1::Job next = entry.job;
      next.set_state(v1::JOB_PENDING);
      if (next.attempts() > 0) next.set_attempts(next.attempts() - 1);
      next.set_error(absl::StrCat("lease of worker ", entry.job.worker_id(), " (epoch ",
                                  entry.job.epoch(),
                                  ") from before a coordinator restart expired unheard; "
                                  "attempt not counted"));
      absl::Status refunded = CommitTransition(entry, std::move(next), store_->NewBatch());
      if (!refunded.ok()) {
        if (expired.empty()) return refunded;
        break;
      }
      entry.lease_expiry_nanos = 0;
      entry.not_before_nanos = 0;
      entry.inherited_unheard = false;
      continue;
    }
    absl::Status released =
        Release(entry,
                absl::StrCat("lease expired: worker ", entry.job.worker_id(),
                             " sent no heartbeat for ", options_.lease_ttl_ms, " ms (epoch ",
                             entry.job.epoch(), ")"),
                /*retryable=*/true)
            .status();
    if (!released.ok()) {
      // The job stays leased (nothing written); the next call retries. Report the ones
      // already released so their failed attempts are counted.
      if (expired.empty()) return released;
      break;
    }
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

std::vector<uint64_t> Scheduler::AdmittedSteps(const std::string& run) const {
  absl::MutexLock lock(&mu_);
  return AdmittedStepsLocked(run);
}

std::vector<std::pair<uint64_t, uint64_t>> Scheduler::DriftPairs(const v1::Job& job) const {
  std::vector<std::pair<uint64_t, uint64_t>> pairs;
  if (!IsRawJob(job) || job.steps().empty()) return pairs;
  absl::MutexLock lock(&mu_);
  const uint64_t step = job.steps(0);
  auto it = checkpoints_.find({job.run(), step});
  if (it == checkpoints_.end()) return pairs;
  // A pair is measured by the job of whichever of its checkpoints was admitted later.
  auto admitted_before = [&](const std::pair<std::string, uint64_t>& key) {
    mu_.AssertHeld();
    auto raw = raw_jobs_.find(key);
    return raw != raw_jobs_.end() && raw->second < job.id();
  };
  if (it != checkpoints_.begin()) {
    auto prev = std::prev(it);
    if (prev->first.first == job.run() && admitted_before(prev->first)) {
      pairs.emplace_back(prev->first.second, step);
    }
  }
  auto next = std::next(it);
  if (next != checkpoints_.end() && next->first.first == job.run() && admitted_before(next->first)) {
    pairs.emplace_back(step, next->first.second);
  }
  return pairs;
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
    ++counts.by_run_kind_state[{entry.job.run(), JobKindNameOf(entry.job), entry.job.state()}];
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
