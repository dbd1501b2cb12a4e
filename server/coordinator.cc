#include "server/coordinator.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "api/eval_lag.h"
#include "api/protocol.h"
#include "api/variant_proto.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/text.h"
#include "server/analytics/rescore.h"
#include "server/ingest/run_config.h"

namespace steadyeval {
namespace {

constexpr int32_t kDefaultPageSize = 100;
constexpr int32_t kMaxPageSize = 1000;

bool ValidSha256(absl::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string NewInstanceId(Clock* clock) {
  return Sha256Hex(absl::StrCat(clock->UnixMillis(), "/", getpid(), "/",
                                std::chrono::steady_clock::now().time_since_epoch().count()))
      .substr(0, 16);
}

}  // namespace

Coordinator::Coordinator(Store* store, Clock* clock, DiscoveryFactory discovery,
                         CoordinatorOptions options)
    : store_(store),
      clock_(clock),
      discovery_factory_(std::move(discovery)),
      options_(options),
      instance_id_(NewInstanceId(clock)),
      workers_(clock, options.scheduler.lease_ttl_ms),
      tasks_(store) {}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(Store* store, Clock* clock,
                                                                 DiscoveryFactory discovery,
                                                                 CoordinatorOptions options) {
  std::unique_ptr<Coordinator> c(new Coordinator(store, clock, std::move(discovery), options));
  ASSIGN_OR_RETURN(c->scheduler_, Scheduler::Create(store, clock, options.scheduler));
  ASSIGN_OR_RETURN(LeaseSecrets secrets, LeaseSecrets::Load(store));
  std::vector<v1::Run> runs;
  RETURN_IF_ERROR(store->ScanRuns("", 0, [&](const v1::Run& run) {
    runs.push_back(run);
    return true;
  }));
  {
    absl::MutexLock lock(&c->mu_);
    for (const v1::Run& run : runs) {
      const std::string& name = run.config().name();
      c->runs_.Load(run);
      if (run.paused()) c->scheduler_->SetRunPaused(name, true);
      c->polls_[name] = std::make_unique<RunPoll>(name);
      c->metrics_.AddRun(name);
    }
  }
  Coordinator* self = c.get();
  c->analytics_ = std::make_unique<Analytics>(
      store, [self](const v1::TaskRef& ref) { return self->tasks_.Load(ref); });
  LeaseBrokerOptions lease_options;
  lease_options.max_acquire_wait_ms = options.max_acquire_wait_ms;
  lease_options.recheck_interval_ms = options.reap_interval_ms;
  c->leases_ = std::make_unique<LeaseBroker>(
      c->scheduler_.get(), &c->workers_, store, clock, std::move(secrets),
      [self](const std::string& run) { return self->runs_.Get(run); }, lease_options);
  c->reports_ = std::make_unique<ReportIngest>(c->scheduler_.get(), c->analytics_.get(), store,
                                               &c->runs_, &c->tasks_, &c->workers_,
                                               c->leases_.get());
  std::set<std::pair<std::string, std::string>> tasks;
  for (const v1::Run& run : runs) {
    const std::string& name = run.config().name();
    RETURN_IF_ERROR(Annotate(c->analytics_->LoadRun(run),
                             absl::StrCat("loading the stability indexes of run ", name)));
    for (const v1::TaskRef& ref : run.config().tasks()) tasks.emplace(name, ref.name());
  }
  c->RefreshStabilityGauges(tasks);
  c->RefreshGauges();
  return c;
}

Coordinator::~Coordinator() { Stop(); }

void Coordinator::Start() {
  absl::MutexLock lock(&mu_);
  if (started_ || stopping_) return;
  started_ = true;
  for (auto& [name, poll] : polls_) StartPoller(*poll);
  reaper_ = std::thread([this] {
    do {
      absl::Status s = Tick();
      if (!s.ok()) std::cerr << "steadyeval-server: reaper: " << s << "\n";
    } while (!stop_.WaitForNotificationWithTimeout(
        absl::Milliseconds(options_.reap_interval_ms)));
  });
}

void Coordinator::StartPoller(RunPoll& poll) {
  RunPoll* p = &poll;
  absl::MutexLock stop_lock(&poll.stop_mu);
  poll.stop_poller = false;
  poll.poller = std::thread([this, p] {
    while (true) {
      PollRun(*p).IgnoreError();  // PollRun logs its errors, once per change
      absl::MutexLock stop_lock(&p->stop_mu);
      if (p->stop_mu.AwaitWithTimeout(absl::Condition(&p->stop_poller),
                                      absl::Milliseconds(options_.poll_interval_ms))) {
        return;
      }
    }
  });
}

void Coordinator::StopPoller(RunPoll& poll) {
  std::thread poller;
  {
    absl::MutexLock stop_lock(&poll.stop_mu);
    poll.stop_poller = true;
    poller = std::move(poll.poller);
  }
  if (poller.joinable()) poller.join();
}

void Coordinator::Stop() {
  if (stopping_.exchange(true)) return;
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (leases_ != nullptr) leases_->Stop();
  const std::vector<RunPoll*> polls = Polls();
  // Signal every poller first, then join them: each stops after its current poll.
  for (RunPoll* poll : polls) {
    absl::MutexLock stop_lock(&poll->stop_mu);
    poll->stop_poller = true;
  }
  for (RunPoll* poll : polls) StopPoller(*poll);
  std::thread reaper;
  {
    absl::MutexLock lock(&mu_);
    reaper = std::move(reaper_);
  }
  if (reaper.joinable()) reaper.join();
}

absl::StatusOr<Coordinator::RunPoll*> Coordinator::FindPoll(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = polls_.find(name);
  if (it == polls_.end()) return RunNotFound(name);
  return it->second.get();  // RunPolls live until the coordinator does (DeleteRun marks them)
}

std::vector<Coordinator::RunPoll*> Coordinator::Polls() const {
  absl::MutexLock lock(&mu_);
  std::vector<RunPoll*> polls;
  for (const auto& [name, poll] : polls_) polls.push_back(poll.get());
  return polls;
}

// ---------------------------------------------------------------------------------------
// Runs

NewRunOptions Coordinator::NewRunOptionsFor(const CoordinatorOptions& options) {
  NewRunOptions checks;
  checks.default_settle_seconds = options.default_settle_seconds;
  checks.sources.roots = options.source_roots;
  checks.sources.s3_endpoints = options.s3_endpoints;
  checks.sources.default_s3_region = options.default_s3_region;
  return checks;
}

NewRunOptions Coordinator::new_run_options() const { return NewRunOptionsFor(options_); }

absl::StatusOr<v1::Run> Coordinator::CreateRun(v1::RunConfig config,
                                               const std::vector<v1::TaskContent>& task_files,
                                               const std::string& managed_by) {
  ASSIGN_OR_RETURN(NewRun checked,
                   CheckNewRun(std::move(config), task_files, new_run_options()));
  return CreateRun(std::move(checked), managed_by);
}

absl::StatusOr<v1::Run> Coordinator::CreateRun(NewRun checked, const std::string& managed_by) {
  const std::string name = checked.config.name();
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointDiscovery> discovery,
                   discovery_factory_(checked.config));
  auto poll = std::make_unique<RunPoll>(name);
  {
    absl::MutexLock poll_lock(&poll->poll_mu);
    poll->discovery = std::move(discovery);
  }

  v1::Run run;
  *run.mutable_config() = std::move(checked.config);
  run.set_created_unix_ms(clock_->UnixMillis());
  run.set_managed_by(managed_by);
  RETURN_IF_ERROR(runs_.Create(run, [&] {
    Store::Batch batch = store_->NewBatch();
    for (const v1::TaskContent& content : checked.tasks) batch.PutTask(content);
    batch.PutRun(run);
    return store_->Commit(std::move(batch));
  }));
  absl::MutexLock lock(&mu_);
  RunPoll& added = *poll;
  polls_[name] = std::move(poll);
  metrics_.AddRun(name);
  if (started_ && !stopping_) StartPoller(added);
  return run;
}

absl::StatusOr<v1::ListRunsResponse> Coordinator::ListRuns(int32_t page_size,
                                                           const std::string& page_token) const {
  if (page_size < 0) {
    return absl::InvalidArgumentError(absl::StrCat("page_size ", page_size, " is negative"));
  }
  if (page_size == 0) page_size = kDefaultPageSize;
  page_size = std::min(page_size, kMaxPageSize);
  v1::ListRunsResponse response;
  bool more = false;
  RETURN_IF_ERROR(store_->ScanRuns(page_token, page_size + 1, [&](const v1::Run& run) {
    if (response.runs_size() == page_size) {
      more = true;
      return false;
    }
    *response.add_runs() = run;
    return true;
  }));
  if (more) response.set_next_page_token(response.runs(response.runs_size() - 1).config().name());
  return response;
}

absl::StatusOr<v1::GetRunResponse> Coordinator::GetRun(const std::string& name) const {
  ASSIGN_OR_RETURN(v1::Run run, runs_.Get(name));
  v1::GetRunResponse response;
  *response.mutable_run() = run;
  for (const v1::Checkpoint& c : scheduler_->Checkpoints(name)) {
    response.set_checkpoints(response.checkpoints() + 1);
    response.set_newest_step(std::max(response.newest_step(), c.step()));
    if (c.state() == v1::CHECKPOINT_EVALUATED) {
      response.set_evaluated(response.evaluated() + 1);
      response.set_newest_evaluated_step(std::max(response.newest_evaluated_step(), c.step()));
    } else if (c.state() == v1::CHECKPOINT_FAILED) {
      response.set_failed(response.failed() + 1);
    }
  }
  auto& by_state = *response.mutable_jobs_by_state();
  for (const v1::Job& job : scheduler_->Jobs()) {
    if (job.run() == name) ++by_state[JobStateName(job.state())];
  }
  if (absl::StatusOr<RunPoll*> poll = FindPoll(name); poll.ok()) {
    absl::MutexLock pending_lock(&(*poll)->pending_mu);
    response.set_source_error((*poll)->source_error);
    response.set_source_error_since_unix_ms((*poll)->source_error_since_unix_ms);
  }
  return response;
}

absl::Status Coordinator::ListCheckpoints(
    const std::string& run, const std::function<bool(const v1::Checkpoint&)>& visit) const {
  RETURN_IF_ERROR(runs_.Get(run).status());
  return store_->ScanCheckpoints(run, visit);
}

absl::Status Coordinator::ListJobs(const std::string& run,
                                   const std::function<bool(const v1::Job&)>& visit) const {
  if (!run.empty()) RETURN_IF_ERROR(runs_.Get(run).status());
  return store_->ScanJobs([&](const v1::Job& stored) {
    if (!run.empty() && stored.run() != run) return true;
    v1::Job job = stored;
    FillJobKindSpec(job);  // a record from before kind_spec
    return visit(job);
  });
}

absl::Status Coordinator::GetScores(const v1::GetScoresRequest& request,
                                    const std::function<bool(const v1::Score&)>& visit) const {
  RETURN_IF_ERROR(runs_.Get(request.run()).status());
  std::optional<std::string> only;  // the canonical name of the one variant asked for
  if (request.variant_spec().kind() != v1::VARIANT_KIND_UNSPECIFIED ||
      !(request.variant().empty() || request.variant() == "all")) {
    absl::StatusOr<Variant> v = VariantOf(request);
    if (!v.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(v.status().message(), ", or all"));
    }
    only = ToString(*v);
  }
  return store_->ScanScores(request.run(), request.task(), [&](const v1::Score& stored) {
    if (only.has_value() && stored.variant() != *only) return true;
    v1::Score s = stored;
    FillVariantSpec(s);  // a record from before variant_spec
    return visit(s);
  });
}

absl::StatusOr<v1::Run> Coordinator::UpdateRun(const v1::UpdateRunRequest& r,
                                               const std::string& managed_by) {
  ASSIGN_OR_RETURN(RunPoll* const poll, FindPoll(r.name()));
  // Serialises with admissions: window jobs are created against one list of checkpoints.
  absl::MutexLock poll_lock(&poll->poll_mu);
  if (poll->deleted) return RunNotFound(r.name());
  std::set<uint32_t> old_ensembles;
  ASSIGN_OR_RETURN(const v1::Run run, runs_.Change(r.name(), [&](v1::Run& run) -> absl::Status {
    if (run.managed_by() != managed_by) {
      return absl::FailedPreconditionError(absl::StrCat(
          "run ", r.name(), " is declared in ", run.managed_by(),
          " (steadyeval-server --config): change its windows there and send the server SIGHUP"));
    }
    old_ensembles = {run.config().ensemble_windows().begin(),
                     run.config().ensemble_windows().end()};
    RETURN_IF_ERROR(ApplyWindowUpdate(r, *run.mutable_config()));
    return scheduler_
        ->SetAverageWindows(run,
                            [&](const WindowUpdate&, Store::Batch& batch) {
                              batch.PutRun(run);
                              return absl::OkStatus();
                            })
        .status();
  }));
  leases_->WakeWaiters();

  // Ensembles of the added sizes, one batch per window.
  const std::string& name = run.config().name();
  const std::vector<uint64_t> steps = scheduler_->AdmittedSteps(name);
  std::set<std::pair<std::string, std::string>> touched;
  for (uint32_t n : run.config().ensemble_windows()) {
    if (old_ensembles.count(n)) continue;
    for (size_t end = n - 1; end < steps.size(); ++end) {
      Analytics::Update update(analytics_.get());
      Store::Batch batch = store_->NewBatch();
      RETURN_IF_ERROR(update.UpdateEnsembles(batch, run, steps, n, {end}));
      if (batch.count() > 0) RETURN_IF_ERROR(store_->Commit(std::move(batch)));
      update.Committed();
      for (const auto& t : update.TouchedTasks()) touched.insert(t);
    }
  }
  RefreshGauges();
  RefreshStabilityGauges(touched);
  return run;
}

absl::StatusOr<v1::GetStabilityResponse> Coordinator::GetStability(
    const v1::GetStabilityRequest& r) {
  ASSIGN_OR_RETURN(v1::Run run, runs_.Get(r.run()));
  return analytics_->GetStability(run, r);
}

absl::StatusOr<v1::RescoreResponse> Coordinator::Rescore(const v1::RescoreRequest& r) {
  ASSIGN_OR_RETURN(v1::Run run, runs_.Get(r.run()));
  ASSIGN_OR_RETURN(
      RescoreResult result,
      RescoreRun(*analytics_, *store_, [this](const v1::TaskRef& ref) { return tasks_.Load(ref); },
                 run, r.task(), scheduler_->AdmittedSteps(run.config().name())));
  RefreshStabilityGauges(result.touched_tasks);
  return result.response;
}

absl::StatusOr<v1::GetExamplesResponse> Coordinator::GetExamples(const v1::GetExamplesRequest& r) {
  ASSIGN_OR_RETURN(v1::Run run, runs_.Get(r.run()));
  return analytics_->GetExamples(run, r);
}

absl::Status Coordinator::ExportPredictions(
    const v1::ExportPredictionsRequest& r,
    const std::function<bool(const v1::ExportedPrediction&)>& visit) {
  ASSIGN_OR_RETURN(v1::Run run, runs_.Get(r.run()));
  if (r.variant_spec().kind() == v1::VARIANT_KIND_UNSPECIFIED && r.variant().empty()) {
    return analytics_->ExportPredictions(run, r, visit);  // every variant
  }
  ASSIGN_OR_RETURN(const Variant variant, VariantOf(r));
  v1::ExportPredictionsRequest canonical = r;
  SetVariant(canonical, variant);
  return analytics_->ExportPredictions(run, canonical, visit);
}

absl::StatusOr<v1::ListPendingCheckpointsResponse> Coordinator::ListPendingCheckpoints(
    const std::string& run) const {
  ASSIGN_OR_RETURN(RunPoll* const poll, FindPoll(run));
  std::vector<PendingDiscovery> pending;
  v1::ListPendingCheckpointsResponse response;
  {
    absl::MutexLock pending_lock(&poll->pending_mu);
    pending = poll->pending;
    response.set_source_error(poll->source_error);
    response.set_source_error_since_unix_ms(poll->source_error_since_unix_ms);
  }
  for (const PendingDiscovery& p : pending) {
    v1::PendingCheckpoint* out = response.add_pending();
    out->set_path(p.path);
    out->set_step(p.step);
    out->set_reason(p.reason);
    out->set_since_unix_ms(p.reason_since_unix_ms);
    out->set_incomplete(p.incomplete);
  }
  return response;
}

// ---------------------------------------------------------------------------------------
// Admin

absl::StatusOr<v1::Run> Coordinator::SetRunPaused(const std::string& name, bool paused) {
  ASSIGN_OR_RETURN(RunPoll* const poll, FindPoll(name));
  // Under poll_mu: once this returns, no poll of the run is admitting anything.
  absl::MutexLock poll_lock(&poll->poll_mu);
  if (poll->deleted) return RunNotFound(name);
  ASSIGN_OR_RETURN(const v1::Run run, runs_.Change(name, [&](v1::Run& run) -> absl::Status {
    if (run.paused() == paused) return absl::OkStatus();
    run.set_paused(paused);
    Store::Batch batch = store_->NewBatch();
    batch.PutRun(run);
    RETURN_IF_ERROR(store_->Commit(std::move(batch)));
    scheduler_->SetRunPaused(name, paused);
    std::cerr << "steadyeval-server: run " << name << (paused ? " paused" : " resumed") << "\n";
    return absl::OkStatus();
  }));
  if (paused) {
    absl::MutexLock pending_lock(&poll->pending_mu);
    poll->pending.clear();
    poll->source_error.clear();  // not polled while paused
    poll->source_error_since_unix_ms = 0;
  } else {
    leases_->WakeWaiters();
  }
  return run;
}

absl::StatusOr<v1::DeleteRunResponse> Coordinator::DeleteRun(const std::string& name) {
  ASSIGN_OR_RETURN(RunPoll* const poll, FindPoll(name));
  StopPoller(*poll);
  uint64_t keys = 0;
  absl::Status deleted = [&]() -> absl::Status {
    absl::MutexLock poll_lock(&poll->poll_mu);
    if (poll->deleted) return RunNotFound(name);
    // The analytics lock keeps result commits (and their pins) out while the keys go.
    Analytics::Update update(analytics_.get());
    RETURN_IF_ERROR(runs_.Change(name, [&](v1::Run&) -> absl::Status {
                           ASSIGN_OR_RETURN(keys, store_->CountRunKeys(name));
                           ASSIGN_OR_RETURN(uint64_t jobs,
                                            scheduler_->DeleteRun(name, [&](Store::Batch& batch) {
                                              batch.DeleteRunData(name);
                                              return absl::OkStatus();
                                            }));
                           keys += jobs;
                           return absl::OkStatus();
                         })
                        .status());
    poll->deleted = true;
    update.ForgetRun(name);
    update.Committed();
    return absl::OkStatus();
  }();
  if (!deleted.ok()) {
    absl::MutexLock lock(&mu_);
    if (started_ && !stopping_ && polls_.count(name)) {
      bool running;
      {
        absl::MutexLock stop_lock(&poll->stop_mu);
        running = poll->poller.joinable();
      }
      if (!running) StartPoller(*poll);
    }
    return deleted;
  }
  {
    absl::MutexLock gauges_lock(&gauges_mu_);
    {
      absl::MutexLock lock(&mu_);
      auto it = polls_.find(name);
      retired_polls_.push_back(std::move(it->second));
      polls_.erase(it);
    }
    runs_.Remove(name);  // after its poll: a run in the table always has one
    metrics_.RemoveRun(name);
  }
  std::cerr << "steadyeval-server: run " << name << " deleted (" << keys << " keys)\n";
  leases_->WakeWaiters();
  RefreshGauges();
  v1::DeleteRunResponse response;
  response.set_keys_deleted(keys);
  return response;
}

absl::StatusOr<v1::RequeueJobsResponse> Coordinator::RequeueJobs(const v1::RequeueJobsRequest& r) {
  const bool by_run = !r.run().empty() || r.state() != v1::JOB_STATE_UNSPECIFIED;
  if (by_run == (r.job_ids_size() > 0)) {
    return absl::InvalidArgumentError(
        "give either job ids or a run and a state (e.g. `steadyeval jobs requeue 12 13` or "
        "`steadyeval jobs requeue --run R --state failed`)");
  }
  std::vector<uint64_t> ids(r.job_ids().begin(), r.job_ids().end());
  if (by_run) {
    RETURN_IF_ERROR(runs_.Get(r.run()).status());
    if (r.state() != v1::JOB_FAILED) {
      return absl::InvalidArgumentError(absl::StrCat(
          "only failed jobs can be requeued, not ", JobStateName(r.state()), " ones"));
    }
    for (const v1::Job& job : scheduler_->Jobs()) {
      if (job.run() == r.run() && job.state() == v1::JOB_FAILED) ids.push_back(job.id());
    }
  }
  ASSIGN_OR_RETURN(std::vector<v1::Job> requeued, scheduler_->Requeue(ids));
  v1::RequeueJobsResponse response;
  for (const v1::Job& job : requeued) {
    response.add_requeued(job.id());
    std::cerr << "steadyeval-server: job " << job.id() << " (" << job.run() << " "
              << JobKindNameOf(job) << ") requeued\n";
  }
  leases_->WakeWaiters();
  RefreshGauges();
  return response;
}

absl::StatusOr<v1::Run> Coordinator::ClearTokenizerPin(const std::string& name) {
  ASSIGN_OR_RETURN(RunPoll* const poll, FindPoll(name));
  absl::MutexLock poll_lock(&poll->poll_mu);
  if (poll->deleted) return RunNotFound(name);
  // The same locks, in the same order, as a result that pins the tokenizer.
  Analytics::Update update(analytics_.get());
  ASSIGN_OR_RETURN(const v1::Run run, runs_.Change(name, [&](v1::Run& run) -> absl::Status {
    if (run.tokenizer_sha256().empty()) return absl::OkStatus();
    std::cerr << "steadyeval-server: run " << name << ": tokenizer pin "
              << run.tokenizer_sha256() << " (step " << run.tokenizer_pinned_step()
              << ") cleared\n";
    run.clear_tokenizer_sha256();
    run.clear_tokenizer_pinned_step();
    Store::Batch batch = store_->NewBatch();
    batch.PutRun(run);
    return store_->Commit(std::move(batch));
  }));
  update.Committed();
  return run;
}

absl::StatusOr<v1::BackupResponse> Coordinator::Backup(const v1::BackupRequest& r) {
  if (r.to_dir().empty()) {
    return absl::InvalidArgumentError("to_dir is empty (steadyeval backup --to DIR)");
  }
  ASSIGN_OR_RETURN(Store::BackupResult backup, store_->Backup(r.to_dir()));
  std::cerr << "steadyeval-server: backup " << backup.backup_id << " written to " << backup.path
            << " (" << backup.bytes << " bytes added)\n";
  v1::BackupResponse response;
  response.set_backup_id(backup.backup_id);
  response.set_bytes(backup.bytes);
  response.set_path(backup.path);
  return response;
}

// ---------------------------------------------------------------------------------------
// Checkpoint discovery

absl::StatusOr<bool> Coordinator::Admit(const v1::Run& run, const DiscoveredCheckpoint& c) {
  const std::string& name = run.config().name();
  std::set<std::pair<std::string, std::string>> touched;
  {
    Analytics::Update update(analytics_.get());
    ASSIGN_OR_RETURN(
        std::optional<Admission> admission,
        scheduler_->AdmitCheckpoint(
            run, c.step, c.path, [&](const Admission& a, Store::Batch& batch) -> absl::Status {
              // A late admission splits (predecessor, successor): that drift is obsolete.
              if (a.index > 0 && a.index + 1 < a.steps.size()) {
                batch.DeleteDrift(name, a.steps[a.index + 1]);
              }
              return update.OnAdmission(batch, run, a);
            }));
    if (!admission.has_value()) return false;
    update.Committed();
    touched = update.TouchedTasks();
  }
  metrics_.CheckpointAdmitted(name);
  RefreshStabilityGauges(touched);
  return true;
}

absl::Status Coordinator::PollRun(RunPoll& poll) {
  absl::MutexLock poll_lock(&poll.poll_mu);
  absl::Status status = PollRunLocked(poll);
  // Logged once per change (numbers aside), not once per poll; and once when polls work
  // again. The source's error is also kept for GetRun (NoteSourceStatus).
  if (!status.ok() && BlankDigits(status.ToString()) != poll.logged_error) {
    poll.logged_error = BlankDigits(status.ToString());
    std::cerr << "steadyeval-server: run " << poll.name << ": " << status
              << " (tried again every " << options_.poll_interval_ms << " ms)\n";
  } else if (status.ok() && !poll.logged_error.empty()) {
    poll.logged_error.clear();
    std::cerr << "steadyeval-server: run " << poll.name << ": polls work again\n";
  }
  return status;
}

absl::Status Coordinator::PollRunLocked(RunPoll& poll) {
  const std::string& name = poll.name;
  if (poll.deleted) return absl::OkStatus();  // the run's keys are gone
  ASSIGN_OR_RETURN(const v1::Run run, runs_.Get(name));
  // Paused: nothing is admitted, so the folder is not even listed (a poll marks what it
  // returns as admitted).
  if (run.paused()) return absl::OkStatus();
  absl::StatusOr<std::vector<DiscoveredCheckpoint>> polled = PollDiscovery(poll, run);
  NoteSourceStatus(poll, polled.status());
  ASSIGN_OR_RETURN(std::vector<DiscoveredCheckpoint> found, std::move(polled));
  found.insert(found.begin(), poll.unadmitted.begin(), poll.unadmitted.end());
  poll.unadmitted.clear();
  const std::vector<PendingDiscovery> pending = poll.discovery->Pending();
  int64_t oldest_seen_nanos = clock_->MonotonicNanos();
  for (const PendingDiscovery& p : pending) {
    if (poll.seen_steps.insert(p.step).second) metrics_.CheckpointDiscovered(name);
    oldest_seen_nanos = std::min(oldest_seen_nanos, p.first_seen_nanos);
    if (p.reason_changed) {
      std::cerr << "steadyeval-server: run " << name << ": checkpoint folder "
                << (p.path.empty() ? absl::StrCat("of step ", p.step) : p.path)
                << " not admitted yet: " << p.reason << "\n";
    }
  }
  {
    absl::MutexLock pending_lock(&poll.pending_mu);
    poll.pending = pending;
  }
  metrics_.SetIncompleteCheckpoints(
      name, static_cast<int>(pending.size()),
      (clock_->MonotonicNanos() - oldest_seen_nanos) / 1e9);
  bool admitted = false;
  absl::Status status;
  for (size_t i = 0; i < found.size(); ++i) {
    const DiscoveredCheckpoint& c = found[i];
    if (poll.seen_steps.insert(c.step).second) metrics_.CheckpointDiscovered(name);
    absl::StatusOr<bool> added = Admit(run, c);
    if (!added.ok()) {
      // Nothing of it was written; it and the rest are admitted at the next poll.
      poll.unadmitted.assign(found.begin() + i, found.end());
      status = Annotate(added.status(), absl::StrCat("admitting step ", c.step,
                                                     " (retried at the next poll)"));
      break;
    }
    admitted = admitted || *added;
  }
  if (admitted) {
    leases_->WakeWaiters();
    RefreshGauges();
  }
  return status;
}

absl::StatusOr<std::vector<DiscoveredCheckpoint>> Coordinator::PollDiscovery(RunPoll& poll,
                                                                             const v1::Run& run) {
  if (poll.discovery == nullptr) {
    // Created at start-up (or after a failed attempt): steps already stored are known.
    ASSIGN_OR_RETURN(poll.discovery, discovery_factory_(run.config()));
    for (const v1::Checkpoint& c : scheduler_->Checkpoints(poll.name)) {
      poll.discovery->MarkKnown(c.step());
      poll.seen_steps.insert(c.step());
    }
  }
  return poll.discovery->Poll();
}

void Coordinator::NoteSourceStatus(RunPoll& poll, const absl::Status& status) {
  absl::MutexLock pending_lock(&poll.pending_mu);
  if (status.ok()) {
    poll.source_error.clear();
    poll.source_error_since_unix_ms = 0;
    return;
  }
  const std::string error(status.message());
  // A different error (numbers aside) restarts its "since".
  if (poll.source_error.empty() || BlankDigits(poll.source_error) != BlankDigits(error)) {
    poll.source_error_since_unix_ms = clock_->UnixMillis();
  }
  poll.source_error = error;
}

absl::Status Coordinator::PollRunsOnce() {
  absl::Status first;
  for (RunPoll* poll : Polls()) {
    absl::Status status = PollRun(*poll);
    if (!status.ok() && first.ok()) first = Annotate(status, poll->name);
  }
  return first;
}

// ---------------------------------------------------------------------------------------
// Workers

absl::StatusOr<v1::RegisterWorkerResponse> Coordinator::RegisterWorker(
    const v1::RegisterWorkerRequest& r) {
  if (r.worker_id().empty()) {
    return absl::InvalidArgumentError("worker_id is empty (give each worker a stable id)");
  }
  if (r.protocol_version() != kProtocolVersion) {
    const bool older = r.protocol_version() < kProtocolVersion;
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", r.worker_id(), " speaks worker protocol version ", r.protocol_version(),
        r.protocol_version() == 0 ? " (a release from before protocol versions)" : "",
        " but this coordinator speaks version ", kProtocolVersion, ": upgrade the ",
        older ? "worker" : "coordinator",
        " so that both run the same steadyeval release"));
  }
  workers_.Register(r.worker_id(), r.name(), r.device());
  RefreshGauges();
  v1::RegisterWorkerResponse response;
  response.set_coordinator_instance(instance_id_);
  response.set_heartbeat_interval_ms(std::max<int64_t>(1, scheduler_->lease_ttl_ms() / 3));
  response.set_protocol_version(kProtocolVersion);
  return response;
}

v1::ListWorkersResponse Coordinator::ListWorkers() const {
  return workers_.List(scheduler_->LeasedJobByWorker());
}

absl::StatusOr<v1::AcquireJobResponse> Coordinator::AcquireJob(
    const v1::AcquireJobRequest& r, const std::function<bool()>& cancelled) {
  ASSIGN_OR_RETURN(v1::AcquireJobResponse response, leases_->Acquire(r, cancelled));
  if (!response.has_job()) return response;
  const v1::Job& job = response.lease().job();
  if (job.attempts() == 1) {
    const int64_t waited_ms = clock_->UnixMillis() - job.created_unix_ms();
    metrics_.JobFirstLeased(JobKindNameOf(job), std::max<int64_t>(0, waited_ms) / 1e3);
  }
  RefreshGauges();
  return response;
}

absl::StatusOr<v1::HeartbeatResponse> Coordinator::Heartbeat(const v1::HeartbeatRequest& r) {
  return leases_->Heartbeat(r);
}

absl::StatusOr<v1::FailJobResponse> Coordinator::FailJob(const v1::FailJobRequest& r) {
  ASSIGN_OR_RETURN(LeaseBroker::FailOutcome failed, leases_->Fail(r));
  if (!failed.handed_back) CountAttemptFailure(r.job_id(), failed.failure);
  RefreshGauges();
  return failed.response;
}

absl::StatusOr<v1::TaskContent> Coordinator::GetTask(const std::string& sha256) const {
  if (!ValidSha256(sha256)) {
    return absl::InvalidArgumentError(
        absl::StrCat("task id '", sha256, "' is not a lowercase hex sha256"));
  }
  absl::StatusOr<v1::TaskContent> task = store_->GetTask(sha256);
  if (absl::IsNotFound(task.status())) {
    return absl::NotFoundError(absl::StrCat("task ", sha256, " is not stored by this coordinator"
                                            " (was the run that uses it created here?)"));
  }
  return task;
}

// ---------------------------------------------------------------------------------------
// Results

absl::Status Coordinator::CheckReportStart(const v1::ReportResultsRequest& first) const {
  return reports_->CheckStart(first);
}

absl::StatusOr<v1::ReportResultsResponse> Coordinator::ReportResults(
    const std::vector<v1::ReportResultsRequest>& chunks) {
  ASSIGN_OR_RETURN(IngestedReport report, reports_->Ingest(chunks));
  if (report.committed) {
    metrics_.PredictionsIngested(report.response.predictions_written());
    metrics_.JobDone(report.done.job.run(), JobKindNameOf(report.done.job),
                     report.done.duration_seconds);
    leases_->WakeWaiters();
    RefreshGauges();
    RefreshStabilityGauges(report.touched_tasks);
  }
  return report.response;
}

// ---------------------------------------------------------------------------------------
// Housekeeping

absl::Status Coordinator::Tick() {
  store_->RefreshHealth();
  ASSIGN_OR_RETURN(std::vector<uint64_t> expired, leases_->ExpireLeases());
  for (uint64_t id : expired) CountAttemptFailure(id, JobFailure::kLeaseExpired);
  RefreshGauges();
  return absl::OkStatus();
}

void Coordinator::CountAttemptFailure(uint64_t job_id, JobFailure reason) {
  std::optional<v1::Job> job = scheduler_->GetJob(job_id);
  if (!job.has_value()) return;
  const std::string kind = JobKindNameOf(*job);
  metrics_.JobAttemptFailed(job->run(), kind, reason);
  if (job->state() != v1::JOB_FAILED) return;
  metrics_.JobFailed(job->run(), kind);
  if (IsRawJob(*job)) metrics_.CheckpointFailed(job->run());
}

void Coordinator::RefreshStabilityGauges(
    const std::set<std::pair<std::string, std::string>>& tasks) {
  for (const auto& [run, task] : tasks) {
    // Read under the analytics lock (which a report holds through its commit), then set
    // under gauges_mu_ alone, which leases' gauge refreshes take too.
    const std::vector<Analytics::VariantFigures> figures = analytics_->DefaultRangeFigures(run, task);
    absl::MutexLock gauges_lock(&gauges_mu_);
    if (!runs_.Contains(run)) continue;  // deleted since
    for (const Analytics::VariantFigures& f : figures) {
      metrics_.SetScore(run, task, f.variant, f.latest_score, f.latest_step, f.previous_score);
      metrics_.SetStability(run, task, f.variant, f.figures.mtv, f.figures.instability);
    }
  }
}

void Coordinator::RefreshGauges() {
  absl::MutexLock gauges_lock(&gauges_mu_);
  metrics_.SetJobs(scheduler_->CountJobs());
  int idle = 0, busy = 0, lost = 0;
  const v1::ListWorkersResponse workers = ListWorkers();
  for (const v1::WorkerInfo& w : workers.workers()) {
    if (w.state() == v1::WORKER_LOST) ++lost;
    else if (w.state() == v1::WORKER_BUSY) ++busy;
    else ++idle;
  }
  metrics_.SetWorkers(idle, busy, lost);
  std::map<std::string, double> heartbeat_age;  // by name, the freshest worker of a name
  for (const v1::WorkerInfo& w : workers.workers()) {
    const std::string& name = w.name().empty() ? w.id() : w.name();
    auto [it, added] = heartbeat_age.emplace(name, w.last_seen_seconds_ago());
    if (!added) it->second = std::min(it->second, w.last_seen_seconds_ago());
  }
  metrics_.SetWorkerHeartbeatAges(heartbeat_age);

  const int64_t now_ms = clock_->UnixMillis();
  for (const std::string& name : runs_.Names()) {
    const std::vector<v1::Checkpoint> checkpoints = scheduler_->Checkpoints(name);
    CheckpointCounts counts;
    for (const v1::Checkpoint& c : checkpoints) {
      switch (c.state()) {
        case v1::CHECKPOINT_PENDING: ++counts.pending; break;
        case v1::CHECKPOINT_EVALUATING: ++counts.evaluating; break;
        case v1::CHECKPOINT_EVALUATED: ++counts.evaluated; break;
        case v1::CHECKPOINT_FAILED: ++counts.failed; break;
        default: break;
      }
    }
    metrics_.SetCheckpoints(name, counts);
    metrics_.SetEvalLag(name, static_cast<double>(EvalProgressOf(checkpoints).lag_steps),
                        EvalLagSeconds(checkpoints, now_ms));
  }
}

}  // namespace steadyeval
