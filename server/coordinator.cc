#include "server/coordinator.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/prompt.h"
#include "common/scoring.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/steps.h"
#include "common/text_escape.h"
#include "common/limits.h"
#include "server/ingest/run_inputs.h"
#include "api/eval_lag.h"
#include "api/job_failure_proto.h"
#include "api/protocol.h"
#include "api/task_content.h"
#include "api/variant_proto.h"

namespace steadyeval {
namespace {

constexpr int32_t kDefaultPageSize = 100;
constexpr int32_t kMaxPageSize = 1000;

absl::Status RunNotFound(absl::string_view name) {
  return absl::NotFoundError(
      absl::StrCat("run '", name, "' not found (see `steadyeval runs list`)"));
}

bool ValidRunName(absl::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return name != "." && name != "..";
}

bool ValidSha256(absl::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

v1::TaskKind ToProtoKind(TaskKind kind) {
  return kind == TaskKind::kMultipleChoice ? v1::TASK_KIND_MULTIPLE_CHOICE
                                           : v1::TASK_KIND_GENERATION;
}

// The variant a job's results are stored under; DATA_LOSS for a stored kind that is
// neither raw nor avg@n.
absl::StatusOr<Variant> VariantOf(const v1::Job& job) {
  absl::StatusOr<JobKind> kind = JobKindOf(job);
  if (!kind.ok()) {
    return absl::DataLossError(absl::StrCat("job ", job.id(), ": ", kind.status().message()));
  }
  return kind->variant();
}

constexpr uint32_t kMaxWindow = kMaxWindowSize;

// Each n >= 2 (and <= kMaxWindow), deduplicated and sorted.
absl::StatusOr<std::vector<uint32_t>> NormalizeWindows(
    const google::protobuf::RepeatedField<uint32_t>& given, absl::string_view what,
    absl::string_view run) {
  std::set<uint32_t> sizes;
  for (uint32_t n : given) {
    if (n < 2 || n > kMaxWindow) {
      return absl::InvalidArgumentError(absl::StrCat("run ", run, ": ", what, " window size ", n,
                                                     " is invalid (each n must be 2..",
                                                     kMaxWindow, ")"));
    }
    sizes.insert(n);
  }
  return std::vector<uint32_t>(sizes.begin(), sizes.end());
}

void SetWindows(const std::vector<uint32_t>& sizes, google::protobuf::RepeatedField<uint32_t>* out) {
  out->Clear();
  for (uint32_t n : sizes) out->Add(n);
}

// "" or one of kTaskCategories, upper-cased.
absl::StatusOr<std::string> NormalizeCategory(absl::string_view category, absl::string_view task) {
  if (category.empty()) return std::string();
  if (std::optional<std::string> known = ParseTaskCategory(category)) return *known;
  return absl::InvalidArgumentError(absl::StrCat("task ", task, ": category '", category,
                                                 "' is not one of ", TaskCategoryList()));
}

// The run's source folder as leases name it: without a file:// prefix, lexically
// normalised. Symlinks are left to the worker, which resolves them on its own filesystem
// (after its --path_map) together with the checkpoint paths.
std::string SourceRootOf(const v1::RunConfig& config) {
  std::string dir = config.source();
  if (absl::StartsWith(dir, "file://")) dir = dir.substr(7);
  return std::filesystem::path(dir).lexically_normal().string();
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
      instance_id_(NewInstanceId(clock)) {}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(Store* store, Clock* clock,
                                                                 DiscoveryFactory discovery,
                                                                 CoordinatorOptions options) {
  std::unique_ptr<Coordinator> c(new Coordinator(store, clock, std::move(discovery), options));
  ASSIGN_OR_RETURN(c->scheduler_, Scheduler::Create(store, clock, options.scheduler));
  ASSIGN_OR_RETURN(LeaseSecrets secrets, LeaseSecrets::Load(store));
  c->lease_secrets_.emplace(std::move(secrets));
  absl::ReleasableMutexLock lock(&c->mu_);
  RETURN_IF_ERROR(store->ScanRuns("", 0, [&](const v1::Run& run) {
    c->mu_.AssertHeld();  // the lock above; clang's analysis does not follow it into lambdas
    auto state = std::make_unique<RunState>();
    state->run = run;
    if (run.paused()) c->scheduler_->SetRunPaused(run.config().name(), true);
    c->runs_[run.config().name()] = std::move(state);
    return true;
  }));
  std::vector<v1::Run> runs;
  for (const auto& [name, state] : c->runs_) {
    runs.push_back(state->run);
    c->metrics_.AddRun(name);
  }
  lock.Release();  // analytics before mu_ (see the lock order in coordinator.h)
  Coordinator* self = c.get();
  c->analytics_ = std::make_unique<Analytics>(
      store, [self](const v1::TaskRef& ref) { return self->LoadTask(ref); });
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
  for (auto& [name, state] : runs_) StartPoller(*state);
  reaper_ = std::thread([this] {
    do {
      absl::Status s = Tick();
      if (!s.ok()) std::cerr << "steadyeval-server: reaper: " << s << "\n";
    } while (!stop_.WaitForNotificationWithTimeout(
        absl::Milliseconds(options_.reap_interval_ms)));
  });
}

void Coordinator::StartPoller(RunState& state) {
  RunState* s = &state;
  {
    absl::MutexLock stop_lock(&state.stop_mu);
    state.stop_poller = false;
  }
  state.poller = std::thread([this, s] {
    while (true) {
      absl::Status status = PollRun(*s);
      if (!status.ok()) {
        std::cerr << "steadyeval-server: run " << s->run.config().name() << ": " << status
                  << "\n";
      }
      absl::MutexLock stop_lock(&s->stop_mu);
      if (s->stop_mu.AwaitWithTimeout(absl::Condition(&s->stop_poller),
                                      absl::Milliseconds(options_.poll_interval_ms))) {
        return;
      }
    }
  });
}

void Coordinator::StopPoller(RunState& state) {
  {
    absl::MutexLock stop_lock(&state.stop_mu);
    state.stop_poller = true;
  }
  std::thread poller;
  {
    absl::MutexLock lock(&mu_);
    poller = std::move(state.poller);
  }
  if (poller.joinable()) poller.join();
}

void Coordinator::Stop() {
  if (stopping_.exchange(true)) return;
  if (!stop_.HasBeenNotified()) stop_.Notify();
  WakeWaiters();
  std::vector<RunState*> states;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, state] : runs_) states.push_back(state.get());
  }
  // Signal every poller first, then join them: each stops after its current poll.
  for (RunState* state : states) {
    absl::MutexLock stop_lock(&state->stop_mu);
    state->stop_poller = true;
  }
  for (RunState* state : states) StopPoller(*state);
  if (reaper_.joinable()) reaper_.join();
}

// ---------------------------------------------------------------------------------------
// Runs

absl::StatusOr<v1::Run> Coordinator::CreateRun(v1::RunConfig config,
                                               const std::vector<v1::TaskContent>& task_files) {
  const std::string name = config.name();
  if (!ValidRunName(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run name '", Printable(name, 200),
        "' is invalid: use 1-128 characters from [A-Za-z0-9._-]"));
  }
  RETURN_IF_ERROR(Annotate(CheckRunInputLimits(config, task_files), absl::StrCat("run ", name)));
  RETURN_IF_ERROR(Annotate(ResolveSource(config.source(), options_.source_roots).status(),
                           absl::StrCat("run ", name)));
  if (auto parser = StepParser::Create(config.pattern()); !parser.ok()) {
    return Annotate(parser.status(), absl::StrCat("run ", name));
  }
  if (config.few_shots() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("run ", name, ": few_shots is ", config.few_shots(), "; it must be >= 0"));
  }
  if (config.settle_seconds() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run ", name, ": settle_seconds is ", config.settle_seconds(), "; it must be >= 0"));
  }
  if (config.settle_seconds() == 0) config.set_settle_seconds(options_.default_settle_seconds);
  if (task_files.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("run ", name, ": no task files given (pass at least one --task FILE)"));
  }

  ASSIGN_OR_RETURN(std::vector<uint32_t> average,
                   NormalizeWindows(config.average_windows(), "average", name));
  ASSIGN_OR_RETURN(std::vector<uint32_t> ensemble,
                   NormalizeWindows(config.ensemble_windows(), "ensemble", name));
  SetWindows(average, config.mutable_average_windows());
  SetWindows(ensemble, config.mutable_ensemble_windows());

  if (!ParsePromptLanguage(config.prompt_language()).has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run ", name, ": prompt language '", config.prompt_language(), "' is not ja or en"));
  }
  if (config.prompt_language().empty()) config.set_prompt_language("ja");
  if (config.bos().empty()) config.set_bos("auto");
  if (config.bos() != "auto" && config.bos() != "add" && config.bos() != "none") {
    return absl::InvalidArgumentError(
        absl::StrCat("run ", name, ": bos '", config.bos(), "' is not auto, add or none"));
  }
  if (config.max_new_tokens_delta() < 0 || config.max_new_tokens_delta() > 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run ", name, ": max_new_tokens_delta is ", config.max_new_tokens_delta(),
        "; it must be in 0..4096"));
  }

  // Per-task settings (category, metric, max_samples) as the CLI sends them: by task
  // name, or by task file index when unnamed.
  const std::vector<v1::TaskRef> given(config.tasks().begin(), config.tasks().end());
  std::map<std::string, v1::TaskRef> given_by_name;
  for (const v1::TaskRef& ref : given) {
    if (!ref.name().empty()) given_by_name[ref.name()] = ref;
  }
  config.clear_tasks();
  std::vector<v1::TaskContent> contents;
  std::set<std::string> task_names;
  for (size_t file_index = 0; file_index < task_files.size(); ++file_index) {
    const v1::TaskContent& file = task_files[file_index];
    v1::TaskRef settings;
    const std::string stem = TaskNameFromFilename(file.filename());
    if (auto named = given_by_name.find(stem); named != given_by_name.end()) {
      settings = named->second;
      given_by_name.erase(named);
    } else if (file_index < given.size() && given[file_index].name().empty()) {
      settings = given[file_index];
    }
    settings.set_name(stem);
    settings.clear_sha256();
    ASSIGN_OR_RETURN(Task task, ParseTaskContent(file, settings));
    RETURN_IF_ERROR(CheckMetricsSupported(task));
    if (!task_names.insert(task.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "run ", name, ": two task files are named '", task.name,
          "' (", file.filename(), "); task names (file stems) must be unique within a run"));
    }
    ASSIGN_OR_RETURN(std::string category, NormalizeCategory(settings.category(), task.name));
    v1::TaskRef ref = settings;
    ref.set_sha256(task.sha256);
    ref.set_category(category);
    v1::TaskContent content;
    content.mutable_ref()->set_name(task.name);
    content.mutable_ref()->set_sha256(task.sha256);
    content.set_filename(file.filename());
    content.set_kind(ToProtoKind(task.kind));
    content.set_content(file.content());
    content.set_train_filename(file.train_filename());
    content.set_train_content(file.train_content());
    *config.add_tasks() = ref;
    contents.push_back(std::move(content));
  }
  if (!given_by_name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run ", name, ": settings are given for task '", given_by_name.begin()->first,
        "' but no task file has that name"));
  }

  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointDiscovery> discovery, discovery_factory_(config));
  auto state = std::make_unique<RunState>();
  {
    // Before taking mu_: polls take poll_mu then mu_, never the other way round.
    absl::MutexLock poll_lock(&state->poll_mu);
    state->discovery = std::move(discovery);
  }

  absl::MutexLock lock(&mu_);
  if (runs_.count(name)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "run '", name, "' already exists (choose another name, or see `steadyeval runs show ",
        name, "`)"));
  }
  v1::Run run;
  *run.mutable_config() = config;
  run.set_created_unix_ms(clock_->UnixMillis());
  Store::Batch batch = store_->NewBatch();
  for (const v1::TaskContent& content : contents) batch.PutTask(content);
  batch.PutRun(run);
  RETURN_IF_ERROR(store_->Commit(std::move(batch)));

  state->run = run;
  RunState& ref = *state;
  runs_[name] = std::move(state);
  metrics_.AddRun(name);
  if (started_ && !stopping_) StartPoller(ref);
  return run;
}

absl::StatusOr<v1::Run> Coordinator::FindRun(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = runs_.find(name);
  if (it == runs_.end()) return RunNotFound(name);
  return it->second->run;
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
  ASSIGN_OR_RETURN(v1::Run run, FindRun(name));
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
  return response;
}

absl::Status Coordinator::ListCheckpoints(
    const std::string& run, const std::function<bool(const v1::Checkpoint&)>& visit) const {
  RETURN_IF_ERROR(FindRun(run).status());
  return store_->ScanCheckpoints(run, visit);
}

absl::Status Coordinator::ListJobs(const std::string& run,
                                   const std::function<bool(const v1::Job&)>& visit) const {
  if (!run.empty()) RETURN_IF_ERROR(FindRun(run).status());
  return store_->ScanJobs([&](const v1::Job& stored) {
    if (!run.empty() && stored.run() != run) return true;
    v1::Job job = stored;
    FillJobKindSpec(job);  // a record from before kind_spec
    return visit(job);
  });
}

absl::Status Coordinator::GetScores(const v1::GetScoresRequest& request,
                                    const std::function<bool(const v1::Score&)>& visit) const {
  RETURN_IF_ERROR(FindRun(request.run()).status());
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

absl::StatusOr<v1::Run> Coordinator::UpdateRun(const v1::UpdateRunRequest& r) {
  RunState* state = nullptr;
  {
    absl::MutexLock lock(&mu_);
    auto it = runs_.find(r.name());
    if (it == runs_.end()) return RunNotFound(r.name());
    state = it->second.get();
  }
  // Serialises with admissions: window jobs are created against one list of checkpoints.
  absl::MutexLock poll_lock(&state->poll_mu);
  if (state->deleted) return RunNotFound(r.name());
  std::optional<absl::MutexLock> write_lock(std::in_place, &state->write_mu);
  v1::Run run;
  {
    absl::MutexLock lock(&mu_);
    run = state->run;
  }
  const std::string& name = run.config().name();
  const std::set<uint32_t> old_ensembles(run.config().ensemble_windows().begin(),
                                         run.config().ensemble_windows().end());
  if (r.set_average_windows()) {
    ASSIGN_OR_RETURN(std::vector<uint32_t> sizes,
                     NormalizeWindows(r.average_windows(), "average", name));
    SetWindows(sizes, run.mutable_config()->mutable_average_windows());
  }
  if (r.set_ensemble_windows()) {
    ASSIGN_OR_RETURN(std::vector<uint32_t> sizes,
                     NormalizeWindows(r.ensemble_windows(), "ensemble", name));
    SetWindows(sizes, run.mutable_config()->mutable_ensemble_windows());
  }
  RETURN_IF_ERROR(scheduler_
                      ->SetAverageWindows(run,
                                          [&](const WindowUpdate&, Store::Batch& batch) {
                                            batch.PutRun(run);
                                            return absl::OkStatus();
                                          })
                      .status());
  {
    absl::MutexLock lock(&mu_);
    state->run = run;
  }
  write_lock.reset();
  WakeWaiters();

  // Ensembles of the added sizes, one batch per window.
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
  ASSIGN_OR_RETURN(v1::Run run, FindRun(r.run()));
  return analytics_->GetStability(run, r);
}

absl::StatusOr<v1::RescoreResponse> Coordinator::Rescore(const v1::RescoreRequest& r) {
  ASSIGN_OR_RETURN(v1::Run run, FindRun(r.run()));
  const std::string& name = run.config().name();
  std::vector<v1::TaskRef> refs;
  for (const v1::TaskRef& ref : run.config().tasks()) {
    if (r.task().empty() || ref.name() == r.task()) refs.push_back(ref);
  }
  if (refs.empty()) {
    return absl::NotFoundError(absl::StrCat("run ", name, " has no task '", r.task(), "'"));
  }
  v1::RescoreResponse response;
  std::set<std::pair<std::string, std::string>> touched;
  const std::vector<uint64_t> steps = scheduler_->AdmittedSteps(name);
  for (const v1::TaskRef& ref : refs) {
    ASSIGN_OR_RETURN(std::shared_ptr<const Task> task, LoadTask(ref));
    std::vector<v1::Score> stored;
    RETURN_IF_ERROR(store_->ScanScores(name, ref.name(), [&](const v1::Score& s) {
      absl::StatusOr<Variant> v = VariantOf(s);
      if (v.ok() && (v->kind == Variant::Kind::kRaw || v->kind == Variant::Kind::kAverage)) {
        stored.push_back(s);
      }
      return true;
    }));
    Analytics::Update update(analytics_.get());
    Store::Batch batch = store_->NewBatch();
    for (const v1::Score& old : stored) {
      std::vector<v1::Prediction> predictions;
      RETURN_IF_ERROR(store_->ScanPredictions(
          name, ref.name(), old.variant(), old.step(), [&](uint32_t, const v1::Prediction& p) {
            predictions.push_back(p);
            return true;
          }));
      std::vector<RawOutput> raw;
      raw.reserve(predictions.size());
      for (const v1::Prediction& p : predictions) {
        raw.push_back({p.output(), {p.option_logliks().begin(), p.option_logliks().end()}});
      }
      const std::string where = absl::StrCat("rescore ", name, "/", ref.name(), " ",
                                             old.variant(), "@", old.step());
      absl::StatusOr<TaskScore> scored = ScoreTask(*task, raw);
      if (!scored.ok()) return Annotate(scored.status(), where);
      v1::Score score = old;
      FillVariantSpec(score);
      ApplyTaskScore(*scored, score, predictions);
      if (score.score() != old.score() || score.metric() != old.metric()) {
        response.set_scores_changed(response.scores_changed() + 1);
      }
      response.set_values(response.values() + 1);
      response.set_predictions(response.predictions() + static_cast<uint32_t>(predictions.size()));
      RETURN_IF_ERROR(Annotate(update.PutValue(batch, score, std::move(predictions)), where));
    }
    for (uint32_t n : run.config().ensemble_windows()) {
      std::vector<size_t> ends;
      for (size_t end = n - 1; end < steps.size(); ++end) ends.push_back(end);
      RETURN_IF_ERROR(update.UpdateEnsembles(batch, run, steps, n, ends));
    }
    if (batch.count() > 0) RETURN_IF_ERROR(store_->Commit(std::move(batch)));
    update.Committed();
    for (const auto& t : update.TouchedTasks()) touched.insert(t);
  }
  RefreshStabilityGauges(touched);
  return response;
}

absl::StatusOr<v1::GetExamplesResponse> Coordinator::GetExamples(const v1::GetExamplesRequest& r) {
  ASSIGN_OR_RETURN(v1::Run run, FindRun(r.run()));
  return analytics_->GetExamples(run, r);
}

absl::Status Coordinator::ExportPredictions(
    const v1::ExportPredictionsRequest& r,
    const std::function<bool(const v1::ExportedPrediction&)>& visit) {
  ASSIGN_OR_RETURN(v1::Run run, FindRun(r.run()));
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
  std::vector<PendingDiscovery> pending;
  {
    absl::MutexLock lock(&mu_);
    auto it = runs_.find(run);
    if (it == runs_.end()) return RunNotFound(run);
    absl::MutexLock pending_lock(&it->second->pending_mu);
    pending = it->second->pending;
  }
  v1::ListPendingCheckpointsResponse response;
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

absl::StatusOr<Coordinator::RunState*> Coordinator::FindRunState(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = runs_.find(name);
  if (it == runs_.end()) return RunNotFound(name);
  return it->second.get();  // RunStates live until the coordinator does (DeleteRun marks them)
}

absl::StatusOr<v1::Run> Coordinator::SetRunPaused(const std::string& name, bool paused) {
  ASSIGN_OR_RETURN(RunState* const state, FindRunState(name));
  // Under poll_mu: once this returns, no poll of the run is admitting anything.
  absl::MutexLock poll_lock(&state->poll_mu);
  if (state->deleted) return RunNotFound(name);
  absl::MutexLock write_lock(&state->write_mu);
  ASSIGN_OR_RETURN(v1::Run run, FindRun(name));
  if (run.paused() != paused) {
    run.set_paused(paused);
    Store::Batch batch = store_->NewBatch();
    batch.PutRun(run);
    RETURN_IF_ERROR(store_->Commit(std::move(batch)));
    scheduler_->SetRunPaused(name, paused);
    absl::MutexLock lock(&mu_);
    state->run = run;
    std::cerr << "steadyeval-server: run " << name << (paused ? " paused" : " resumed") << "\n";
  }
  if (!paused) WakeWaiters();
  if (paused) {
    absl::MutexLock pending_lock(&state->pending_mu);
    state->pending.clear();
  }
  return run;
}

absl::StatusOr<v1::DeleteRunResponse> Coordinator::DeleteRun(const std::string& name) {
  ASSIGN_OR_RETURN(RunState* const state, FindRunState(name));
  StopPoller(*state);
  uint64_t keys = 0;
  absl::Status deleted = [&]() -> absl::Status {
    absl::MutexLock poll_lock(&state->poll_mu);
    if (state->deleted) return RunNotFound(name);
    // The analytics lock keeps result commits (and their pins) out while the keys go.
    Analytics::Update update(analytics_.get());
    absl::MutexLock write_lock(&state->write_mu);
    ASSIGN_OR_RETURN(keys, store_->CountRunKeys(name));
    ASSIGN_OR_RETURN(uint64_t jobs, scheduler_->DeleteRun(name, [&](Store::Batch& batch) {
                       batch.DeleteRunData(name);
                       return absl::OkStatus();
                     }));
    keys += jobs;
    state->deleted = true;
    update.ForgetRun(name);
    update.Committed();
    return absl::OkStatus();
  }();
  if (!deleted.ok()) {
    absl::MutexLock lock(&mu_);
    if (started_ && !stopping_ && runs_.count(name) && !state->poller.joinable()) {
      StartPoller(*state);
    }
    return deleted;
  }
  {
    absl::MutexLock gauges_lock(&gauges_mu_);
    {
      absl::MutexLock lock(&mu_);
      auto it = runs_.find(name);
      retired_runs_.push_back(std::move(it->second));
      runs_.erase(it);
    }
    metrics_.RemoveRun(name);
  }
  std::cerr << "steadyeval-server: run " << name << " deleted (" << keys << " keys)\n";
  WakeWaiters();
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
    RETURN_IF_ERROR(FindRun(r.run()).status());
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
  WakeWaiters();
  RefreshGauges();
  return response;
}

absl::StatusOr<v1::Run> Coordinator::ClearTokenizerPin(const std::string& name) {
  ASSIGN_OR_RETURN(RunState* const state, FindRunState(name));
  absl::MutexLock poll_lock(&state->poll_mu);
  if (state->deleted) return RunNotFound(name);
  // The same locks, in the same order, as a result that pins the tokenizer.
  Analytics::Update update(analytics_.get());
  absl::MutexLock write_lock(&state->write_mu);
  ASSIGN_OR_RETURN(v1::Run run, FindRun(name));
  if (!run.tokenizer_sha256().empty()) {
    std::cerr << "steadyeval-server: run " << name << ": tokenizer pin "
              << run.tokenizer_sha256() << " (step " << run.tokenizer_pinned_step()
              << ") cleared\n";
    run.clear_tokenizer_sha256();
    run.clear_tokenizer_pinned_step();
    Store::Batch batch = store_->NewBatch();
    batch.PutRun(run);
    RETURN_IF_ERROR(store_->Commit(std::move(batch)));
    absl::MutexLock lock(&mu_);
    state->run = run;
  }
  update.Committed();
  return run;
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

absl::Status Coordinator::PollRun(RunState& state) {
  const std::string& name = state.run.config().name();
  absl::MutexLock poll_lock(&state.poll_mu);
  // Paused: nothing is admitted, so the folder is not even listed (a poll marks what it
  // returns as admitted). Deleted: the run's keys are gone.
  if (state.deleted || state.run.paused()) return absl::OkStatus();
  if (state.discovery == nullptr) {
    // Created at start-up (or after a failed attempt): steps already stored are known.
    ASSIGN_OR_RETURN(state.discovery, discovery_factory_(state.run.config()));
    for (const v1::Checkpoint& c : scheduler_->Checkpoints(name)) {
      state.discovery->MarkKnown(c.step());
      state.seen_steps.insert(c.step());
    }
  }
  ASSIGN_OR_RETURN(std::vector<DiscoveredCheckpoint> found, state.discovery->Poll());
  found.insert(found.begin(), state.unadmitted.begin(), state.unadmitted.end());
  state.unadmitted.clear();
  const std::vector<PendingDiscovery> pending = state.discovery->Pending();
  int64_t oldest_seen_nanos = clock_->MonotonicNanos();
  for (const PendingDiscovery& p : pending) {
    if (state.seen_steps.insert(p.step).second) metrics_.CheckpointDiscovered(name);
    oldest_seen_nanos = std::min(oldest_seen_nanos, p.first_seen_nanos);
    if (p.reason_changed) {
      std::cerr << "steadyeval-server: run " << name << ": checkpoint folder "
                << (p.path.empty() ? absl::StrCat("of step ", p.step) : p.path)
                << " not admitted yet: " << p.reason << "\n";
    }
  }
  {
    absl::MutexLock pending_lock(&state.pending_mu);
    state.pending = pending;
  }
  metrics_.SetIncompleteCheckpoints(
      name, static_cast<int>(pending.size()),
      (clock_->MonotonicNanos() - oldest_seen_nanos) / 1e9);
  bool admitted = false;
  absl::Status status;
  for (size_t i = 0; i < found.size(); ++i) {
    const DiscoveredCheckpoint& c = found[i];
    if (state.seen_steps.insert(c.step).second) metrics_.CheckpointDiscovered(name);
    absl::StatusOr<bool> added = Admit(state.run, c);
    if (!added.ok()) {
      // Nothing of it was written; it and the rest are admitted at the next poll.
      state.unadmitted.assign(found.begin() + i, found.end());
      status = Annotate(added.status(), absl::StrCat("admitting step ", c.step,
                                                     " (retried at the next poll)"));
      break;
    }
    admitted = admitted || *added;
  }
  if (admitted) {
    WakeWaiters();
    RefreshGauges();
  }
  return status;
}

absl::Status Coordinator::PollRunsOnce() {
  std::vector<RunState*> states;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, state] : runs_) states.push_back(state.get());
  }
  absl::Status first;
  for (RunState* s : states) {
    absl::Status status = PollRun(*s);
    if (!status.ok() && first.ok()) first = Annotate(status, s->run.config().name());
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
  {
    absl::MutexLock lock(&mu_);
    WorkerEntry& w = workers_[r.worker_id()];
    w.info.set_id(r.worker_id());
    w.info.set_name(r.name());
    w.info.set_device(r.device());
    w.last_seen_nanos = clock_->MonotonicNanos();
  }
  RefreshGauges();
  v1::RegisterWorkerResponse response;
  response.set_coordinator_instance(instance_id_);
  response.set_heartbeat_interval_ms(std::max<int64_t>(1, scheduler_->lease_ttl_ms() / 3));
  response.set_protocol_version(kProtocolVersion);
  return response;
}

absl::Status Coordinator::TouchWorker(const std::string& worker_id) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) {
    return absl::NotFoundError(
        absl::StrCat("worker ", worker_id, " is not registered (register again)"));
  }
  it->second.last_seen_nanos = clock_->MonotonicNanos();
  return absl::OkStatus();
}

v1::ListWorkersResponse Coordinator::ListWorkers() const {
  std::map<std::string, uint64_t> leased = scheduler_->LeasedJobByWorker();
  const int64_t now = clock_->MonotonicNanos();
  const int64_t lost_after = 3 * scheduler_->lease_ttl_ms() * 1'000'000;
  v1::ListWorkersResponse response;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, w] : workers_) {
    v1::WorkerInfo info = w.info;
    auto job = leased.find(id);
    info.set_current_job(job == leased.end() ? 0 : job->second);
    info.set_last_seen_seconds_ago((now - w.last_seen_nanos) / 1e9);
    if (now - w.last_seen_nanos > lost_after) {
      info.set_state(v1::WORKER_LOST);
    } else {
      info.set_state(job == leased.end() ? v1::WORKER_IDLE : v1::WORKER_BUSY);
    }
    *response.add_workers() = std::move(info);
  }
  return response;
}

absl::StatusOr<v1::LeasedJob> Coordinator::BuildLeasedJob(const v1::Job& job) const {
  ASSIGN_OR_RETURN(v1::Run run, FindRun(job.run()));
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
  leased.set_lease_secret(lease_secrets_->For(job.id(), job.epoch(), job.worker_id()));
  leased.set_source_root(SourceRootOf(run.config()));
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

LeaseAffinity Coordinator::AffinityFor(const std::string& worker_id) const {
  const std::map<std::string, uint64_t> leased = scheduler_->LeasedJobByWorker();
  const int64_t now = clock_->MonotonicNanos();
  const int64_t ttl = scheduler_->lease_ttl_ms() * 1'000'000;
  LeaseAffinity affinity;
  absl::MutexLock lock(&mu_);
  std::set<std::pair<std::string, uint32_t>> own;
  if (auto it = workers_.find(worker_id); it != workers_.end()) {
    affinity.held = it->second.window_sums;
    for (const HeldWindow& h : affinity.held) own.emplace(h.run, h.window);
  }
  for (const auto& [id, w] : workers_) {
    if (id == worker_id || w.window_sums.empty() || leased.count(id)) continue;  // busy
    const bool idle_polling = w.polling > 0 || now - w.last_seen_nanos <= ttl;
    if (!idle_polling) continue;  // lost, or gone quiet: others may take its windows
    for (const HeldWindow& h : w.window_sums) {
      if (!own.count({h.run, h.window})) affinity.reserved.emplace(h.run, h.window);
    }
  }
  return affinity;
}

absl::StatusOr<v1::AcquireJobResponse> Coordinator::AcquireJob(
    const v1::AcquireJobRequest& r, const std::function<bool()>& cancelled) {
  RETURN_IF_ERROR(TouchWorker(r.worker_id()));
  {
    absl::MutexLock lock(&mu_);
    WorkerEntry& w = workers_[r.worker_id()];
    w.window_sums.clear();
    for (const v1::WindowSumHeld& held : r.window_sums()) {
      if (held.window() < 2) continue;
      w.window_sums.push_back(
          HeldWindow{held.run(), held.window(),
                     std::vector<uint64_t>(held.steps().begin(), held.steps().end())});
    }
    ++w.polling;
  }
  struct PollingGuard {
    Coordinator* c;
    std::string id;
    ~PollingGuard() {
      absl::MutexLock lock(&c->mu_);
      auto it = c->workers_.find(id);
      if (it != c->workers_.end()) --it->second.polling;
    }
  } guard{this, r.worker_id()};
  const int64_t wait_ms = std::clamp<int64_t>(r.wait_ms(), 0, options_.max_acquire_wait_ms);
  // The long poll waits in real time (it bounds an RPC); leasing decisions use clock_.
  const absl::Time deadline = absl::Now() + absl::Milliseconds(wait_ms);
  v1::AcquireJobResponse response;
  while (true) {
    uint64_t generation;
    {
      absl::MutexLock lock(&wake_mu_);
      generation = wake_generation_;
    }
    // A caller that has gone (cancelled, or past its deadline while the call queued in a
    // busy server) would never see a lease taken for it: the job would sit leased until the
    // lease expired and that expiry would count as a failed attempt.
    if (cancelled && cancelled()) return response;
    ASSIGN_OR_RETURN(std::optional<v1::Job> job,
                     scheduler_->Lease(r.worker_id(), AffinityFor(r.worker_id())));
    if (job.has_value()) {
      if (job->attempts() == 1) {
        const int64_t waited_ms = clock_->UnixMillis() - job->created_unix_ms();
        metrics_.JobFirstLeased(JobKindNameOf(*job), std::max<int64_t>(0, waited_ms) / 1e3);
      }
      RefreshGauges();
      ASSIGN_OR_RETURN(*response.mutable_lease(), BuildLeasedJob(*job));
      response.set_has_job(true);
      return response;
    }
    if (stopping_ || absl::Now() >= deadline || (cancelled && cancelled())) return response;
    // Wake on new work, or periodically to catch backoffs and expiries passing.
    absl::MutexLock lock(&wake_mu_);
    if (wake_generation_ == generation) {
      absl::Duration wait = std::min(deadline - absl::Now(),
                                     absl::Milliseconds(options_.reap_interval_ms));
      wake_.WaitWithTimeout(&wake_mu_, std::max(wait, absl::ZeroDuration()));
    }
  }
}

absl::Status Coordinator::CheckLeaseSecret(uint64_t job_id, uint64_t epoch,
                                           const std::string& worker_id,
                                           const std::string& secret) const {
  if (lease_secrets_->Matches(job_id, epoch, worker_id, secret)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "job ", job_id, " epoch ", epoch,
      ": the request does not prove the lease (its worker id, epoch and lease secret must be "
      "those the lease was granted with); only the worker holding a lease may use it"));
}

absl::StatusOr<v1::HeartbeatResponse> Coordinator::Heartbeat(const v1::HeartbeatRequest& r) {
  if (r.job_id() != 0) {
    RETURN_IF_ERROR(CheckLeaseSecret(r.job_id(), r.epoch(), r.worker_id(), r.lease_secret()));
  }
  RETURN_IF_ERROR(TouchWorker(r.worker_id()));
  if (r.job_id() != 0) RETURN_IF_ERROR(scheduler_->Heartbeat(r.job_id(), r.epoch(), r.worker_id()));
  v1::HeartbeatResponse response;
  response.set_lease_ttl_ms(scheduler_->lease_ttl_ms());
  return response;
}

absl::StatusOr<v1::FailJobResponse> Coordinator::FailJob(const v1::FailJobRequest& r) {
  RETURN_IF_ERROR(CheckLeaseSecret(r.job_id(), r.epoch(), r.worker_id(), r.lease_secret()));
  TouchWorker(r.worker_id()).IgnoreError();  // heard from; the lease check is Fail's
  v1::JobState state = v1::JOB_PENDING;
  const JobFailure failure = JobFailureOf(r);  // typed, or read from an old worker's fields
  if (failure == JobFailure::kWorkerStopping) {
    // A stopping worker's hand-back: not the checkpoint's fault, not an attempt.
    RETURN_IF_ERROR(scheduler_->HandBack(r.job_id(), r.epoch(), r.worker_id()));
    std::cerr << "steadyeval-server: job " << r.job_id() << " handed back by stopping worker "
              << r.worker_id() << "\n";
  } else {
    ASSIGN_OR_RETURN(state, scheduler_->Fail(r.job_id(), r.epoch(), r.worker_id(), r.reason(),
                                             failure));
    CountAttemptFailure(r.job_id(), failure);
  }
  WakeWaiters();
  RefreshGauges();
  v1::FailJobResponse response;
  response.set_state(state);
  return response;
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

absl::StatusOr<std::shared_ptr<const Task>> Coordinator::LoadTask(const v1::TaskRef& ref) const {
  const std::string key = TaskCacheKey(ref);
  {
    absl::MutexLock lock(&task_mu_);
    auto it = tasks_.find(key);
    if (it != tasks_.end()) return it->second;
  }
  ASSIGN_OR_RETURN(v1::TaskContent content, store_->GetTask(ref.sha256()));
  absl::StatusOr<Task> task = ParseTaskContent(content, ref);
  if (!task.ok()) {
    return absl::DataLossError(absl::StrCat("stored task ", ref.name(), " (", ref.sha256(),
                                            ") no longer parses: ", task.status().message()));
  }
  auto parsed = std::make_shared<const Task>(std::move(*task));
  absl::MutexLock lock(&task_mu_);
  tasks_.emplace(key, parsed);
  return parsed;
}

absl::Status Coordinator::CheckReportStart(const v1::ReportResultsRequest& first) const {
  RETURN_IF_ERROR(
      CheckLeaseSecret(first.job_id(), first.epoch(), first.worker_id(), first.lease_secret()));
  return scheduler_->CheckReport(first.job_id(), first.epoch(), first.worker_id()).status();
}

absl::StatusOr<v1::ReportResultsResponse> Coordinator::ReportResults(
    const std::vector<v1::ReportResultsRequest>& chunks) {
  if (chunks.empty()) {
    return absl::InvalidArgumentError("the report stream carried no messages");
  }
  const v1::ReportResultsRequest& first = chunks.front();
  RETURN_IF_ERROR(
      CheckLeaseSecret(first.job_id(), first.epoch(), first.worker_id(), first.lease_secret()));
  TouchWorker(first.worker_id()).IgnoreError();  // heard from; the lease check follows
  const std::string where = absl::StrCat("job ", first.job_id(), " epoch ", first.epoch());
  ASSIGN_OR_RETURN(ReportCheck check,
                   scheduler_->CheckReport(first.job_id(), first.epoch(), first.worker_id()));
  v1::ReportResultsResponse response;
  if (check.replay) {
    response.set_replay(true);
    return response;
  }
  const v1::Job& job = check.job;

  // The steps a job's results may be for: each step of a raw job, a window's end step.
  std::set<uint64_t> allowed_steps;
  if (IsRawJob(job)) {
    allowed_steps.insert(job.steps().begin(), job.steps().end());
  } else if (!job.steps().empty()) {
    allowed_steps.insert(job.steps(job.steps_size() - 1));
  }
  std::map<std::string, const v1::TaskRef*> job_tasks;
  for (const v1::TaskRef& ref : job.tasks()) job_tasks[ref.name()] = &ref;

  struct Accumulated {
    std::map<uint32_t, const v1::ExampleOutput*> outputs;
    bool complete = false;
  };
  std::map<std::pair<uint64_t, std::string>, Accumulated> acc;
  for (const v1::ReportResultsRequest& chunk : chunks) {
    if (chunk.job_id() != first.job_id() || chunk.epoch() != first.epoch() ||
        chunk.worker_id() != first.worker_id()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": one report stream carries one (worker, job, epoch); got job ",
          chunk.job_id(), " epoch ", chunk.epoch(), " from worker ", chunk.worker_id()));
    }
    if (!allowed_steps.count(chunk.step())) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": step ", chunk.step(), " is not a step this job evaluates"));
    }
    auto task = job_tasks.find(chunk.task().name());
    if (task == job_tasks.end() || task->second->sha256() != chunk.task().sha256()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": task ", chunk.task().name(), " (",
                                                     chunk.task().sha256(),
                                                     ") is not one of this job's tasks"));
    }
    Accumulated& a = acc[{chunk.step(), chunk.task().name()}];
    if (a.complete) {
      return absl::InvalidArgumentError(absl::StrCat(where, " step ", chunk.step(), " task ",
                                                     chunk.task().name(),
                                                     ": outputs sent after task_complete"));
    }
    for (const v1::ExampleOutput& out : chunk.outputs()) {
      if (!a.outputs.emplace(out.index(), &out).second) {
        return absl::InvalidArgumentError(absl::StrCat(where, " step ", chunk.step(), " task ",
                                                       chunk.task().name(), ": example ",
                                                       out.index(), " reported twice"));
      }
    }
    a.complete = chunk.task_complete();
  }

  std::set<uint64_t> reported_steps;
  for (const auto& [key, a] : acc) reported_steps.insert(key.first);
  const uint64_t end_step = job.steps().empty() ? 0 : job.steps(job.steps_size() - 1);
  if (!reported_steps.count(end_step)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": no outputs for step ", end_step, " (the job's checkpoint)"));
  }

  // Drift of adjacent checkpoint pairs (a raw job's drift targets), on any message.
  std::map<uint64_t, v1::ParameterDrift> drifts;  // by to_step
  for (const v1::ReportResultsRequest& chunk : chunks) {
    for (const v1::ParameterDrift& d : chunk.drifts()) {
      if (!IsRawJob(job) || d.from_step() >= d.to_step() || !std::isfinite(d.l2()) ||
          !std::isfinite(d.relative()) || d.l2() < 0 || d.relative() < 0 ||
          (d.from_step() != end_step && d.to_step() != end_step)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": drift ", d.from_step(), " -> ", d.to_step(), " (l2 ", d.l2(),
            ", relative ", d.relative(), ") is not one of this job's drift targets"));
      }
      drifts[d.to_step()] = d;
    }
  }

  ASSIGN_OR_RETURN(const Variant variant, VariantOf(job));
  uint32_t written = 0;
  std::vector<std::pair<v1::Score, std::vector<v1::Prediction>>> values;
  for (uint64_t step : reported_steps) {
    for (const v1::TaskRef& ref : job.tasks()) {
      auto it = acc.find({step, ref.name()});
      if (it == acc.end() || !it->second.complete) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, " step ", step, ": task ", ref.name(),
            it == acc.end() ? " has no outputs" : " was not marked task_complete",
            " (report every task of the job before closing the stream)"));
      }
      ASSIGN_OR_RETURN(std::shared_ptr<const Task> task, LoadTask(ref));
      const auto& outputs = it->second.outputs;
      if (outputs.size() != task->size() ||
          (!outputs.empty() && outputs.rbegin()->first >= task->size())) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, " step ", step, ": task ", ref.name(), " has ", task->size(),
            " examples but the report holds ", outputs.size(),
            " distinct outputs (indices 0..", task->size() == 0 ? 0 : task->size() - 1,
            " expected)"));
      }
      std::vector<RawOutput> raw;
      raw.reserve(outputs.size());
      for (const auto& [index, out] : outputs) {
        raw.push_back({out->output(), {out->option_logliks().begin(), out->option_logliks().end()}});
      }
      absl::StatusOr<TaskScore> scored = ScoreTask(*task, raw);
      if (!scored.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(where, " step ", step, ": ",
                                                       scored.status().message()));
      }
      std::vector<v1::Prediction> predictions;
      predictions.reserve(outputs.size());
      for (const auto& [index, out] : outputs) {  // indices 0..size-1, checked above
        v1::Prediction p;
        p.set_output(out->output());
        p.set_example(index);
        *p.mutable_option_logliks() = out->option_logliks();
        predictions.push_back(std::move(p));
        ++written;
      }
      v1::Score score;
      score.set_run(job.run());
      score.set_task(ref.name());
      score.set_task_sha256(ref.sha256());
      SetVariant(score, variant);
      score.set_step(step);
      score.set_examples(static_cast<uint32_t>(outputs.size()));
      ApplyTaskScore(*scored, score, predictions);
      values.emplace_back(std::move(score), std::move(predictions));
    }
  }

  // Commit under the analytics lock: values, pair figures, the ensembles the new raw
  // values complete, drift, and job DONE in one batch.
  std::set<std::pair<std::string, std::string>> touched;
  CompletedJob done;
  bool pinned_tokenizer = false;
  {
    Analytics::Update update(analytics_.get());
    ASSIGN_OR_RETURN(ReportCheck again,
                     scheduler_->CheckReport(first.job_id(), first.epoch(), first.worker_id()));
    if (again.replay) {  // committed by a concurrent identical report
      response.set_replay(true);
      return response;
    }
    ASSIGN_OR_RETURN(v1::Run run, FindRun(job.run()));
    Store::Batch batch = store_->NewBatch();
    // One tokenizer per run: the first result that names one pins it (under the analytics
    // lock, so two first reports cannot pin different ones; under the run's write lock,
    // re-reading the record, so a concurrent UpdateRun is not overwritten).
    const std::string& tokenizer = first.tokenizer_sha256();
    std::optional<absl::MutexLock> write_lock;
    if (!tokenizer.empty() && run.tokenizer_sha256().empty()) {
      RunState* state = nullptr;
      {
        absl::MutexLock lock(&mu_);
        auto it = runs_.find(job.run());
        if (it == runs_.end()) return RunNotFound(job.run());
        state = it->second.get();
      }
      write_lock.emplace(&state->write_mu);
      ASSIGN_OR_RETURN(run, FindRun(job.run()));
      run.set_tokenizer_sha256(tokenizer);
      run.set_tokenizer_pinned_step(end_step);
      batch.PutRun(run);
      pinned_tokenizer = true;
    } else if (!tokenizer.empty() && run.tokenizer_sha256() != tokenizer) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, " step ", end_step, ": the checkpoint's tokenizer (sha256 ", tokenizer,
          ") differs from the one run ", job.run(), " is pinned to (sha256 ",
          run.tokenizer_sha256(), ", first seen at step ", run.tokenizer_pinned_step(),
          "); scores under another tokenizer are not comparable: evaluate it in a new run"));
    }
    for (auto& [score, predictions] : values) {
      RETURN_IF_ERROR(Annotate(update.PutValue(batch, score, std::move(predictions)), where));
    }
    const std::vector<uint64_t> steps = scheduler_->AdmittedSteps(job.run());
    if (IsRawJob(job)) {
      for (uint64_t step : reported_steps) {
        RETURN_IF_ERROR(Annotate(update.OnRawStored(batch, run, steps, step), where));
      }
    }
    for (const auto& [to, d] : drifts) {
      // Only pairs still adjacent (a later admission may have split one since the lease).
      auto pos = std::lower_bound(steps.begin(), steps.end(), to);
      if (pos != steps.end() && *pos == to && pos != steps.begin() && *(pos - 1) == d.from_step()) {
        batch.PutDrift(job.run(), d);
      }
    }
    ASSIGN_OR_RETURN(done, scheduler_->Complete(first.job_id(), first.epoch(), first.worker_id(),
                                                std::move(batch), first.bos()));
    if (pinned_tokenizer) {
      absl::MutexLock lock(&mu_);
      if (auto it = runs_.find(job.run()); it != runs_.end()) {
        it->second->run.set_tokenizer_sha256(first.tokenizer_sha256());
        it->second->run.set_tokenizer_pinned_step(end_step);
      }
    }
    update.Committed();
    touched = update.TouchedTasks();
  }
  metrics_.PredictionsIngested(written);
  metrics_.JobDone(done.job.run(), JobKindNameOf(done.job), done.duration_seconds);
  WakeWaiters();
  RefreshGauges();
  RefreshStabilityGauges(touched);
  response.set_predictions_written(written);
  return response;
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

void Coordinator::RefreshStabilityGauges(
    const std::set<std::pair<std::string, std::string>>& tasks) {
  absl::MutexLock gauges_lock(&gauges_mu_);
  for (const auto& [run, task] : tasks) {
    {
      absl::MutexLock lock(&mu_);
      if (!runs_.count(run)) continue;  // deleted since
    }
    for (const Analytics::VariantFigures& f : analytics_->DefaultRangeFigures(run, task)) {
      metrics_.SetScore(run, task, f.variant, f.latest_score, f.latest_step, f.previous_score);
      metrics_.SetStability(run, task, f.variant, f.figures.mtv, f.figures.instability);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Housekeeping

void Coordinator::WakeWaiters() {
  absl::MutexLock lock(&wake_mu_);
  ++wake_generation_;
  wake_.SignalAll();
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

absl::Status Coordinator::Tick() {
  store_->RefreshHealth();
  ASSIGN_OR_RETURN(std::vector<uint64_t> expired, scheduler_->ExpireLeases());
  for (uint64_t id : expired) CountAttemptFailure(id, JobFailure::kLeaseExpired);
  // Backoffs pass silently; the long polls re-check on their own period too.
  if (!expired.empty() || scheduler_->HasLeasableJob()) WakeWaiters();
  RefreshGauges();
  return absl::OkStatus();
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

  std::vector<std::string> names;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, state] : runs_) names.push_back(name);
  }
  const int64_t now_ms = clock_->UnixMillis();
  for (const std::string& name : names) {
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
