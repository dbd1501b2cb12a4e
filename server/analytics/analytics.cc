#include "server/analytics/analytics.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "api/variant_proto.h"
#include "common/scoring.h"
#include "common/status.h"

namespace steadyeval {
namespace {

v1::PairStats ToProto(const PairFigures& f) {
  v1::PairStats p;
  p.set_from_step(f.from_step);
  p.set_to_step(f.to_step);
  p.set_abs_delta_score(f.abs_delta_score);
  p.set_sum_abs_delta_example(f.sum_abs_delta_example);
  p.set_flips(f.flips);
  p.set_examples(f.examples);
  p.set_has_example_scores(f.has_example_scores);
  return p;
}

PairFigures FromProto(const v1::PairStats& p) {
  PairFigures f;
  f.from_step = p.from_step();
  f.to_step = p.to_step();
  f.abs_delta_score = p.abs_delta_score();
  f.sum_abs_delta_example = p.sum_abs_delta_example();
  f.flips = p.flips();
  f.examples = p.examples();
  f.has_example_scores = p.has_example_scores();
  return f;
}

StepPoint PointOf(uint64_t step, const v1::Score& score,
                  const std::vector<v1::Prediction>& predictions) {
  StepPoint point;
  point.step = step;
  point.score = score.score();
  const bool per_example = MetricHasExampleValues(score.metric());
  point.outputs.reserve(predictions.size());
  for (const v1::Prediction& p : predictions) {
    point.outputs.push_back(p.normalized());
    if (per_example) point.example_scores.push_back(p.score());
  }
  return point;
}

template <typename T>
void SetOptional(const std::optional<double>& value, T* row,
                 void (T::*setter)(double)) {
  if (value.has_value()) (row->*setter)(*value);
}

std::optional<double> Median(std::vector<double> v) {
  if (v.empty()) return std::nullopt;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// Mean of the curves at the steps where every curve has a point (categories, AVG).
std::map<uint64_t, double> MeanCurve(const std::vector<std::map<uint64_t, double>>& curves) {
  std::map<uint64_t, double> out;
  if (curves.empty()) return out;
  for (const auto& [step, first] : curves[0]) {
    double sum = 0;
    bool all = true;
    for (const auto& curve : curves) {
      auto it = curve.find(step);
      if (it == curve.end()) {
        all = false;
        break;
      }
      sum += it->second;
    }
    if (all) out[step] = sum / curves.size();
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<v1::Prediction>> ScoredVotes(const Task& task,
                                                        const std::vector<std::string>& votes,
                                                        v1::Score& score) {
  ASSIGN_OR_RETURN(TaskScore scored, ScoreNormalized(task, votes));
  std::vector<v1::Prediction> predictions(votes.size());
  for (size_t e = 0; e < votes.size(); ++e) {
    predictions[e].set_output(votes[e]);
    predictions[e].set_example(static_cast<uint32_t>(e));
  }
  ApplyTaskScore(scored, score, predictions);
  return predictions;
}

void ApplyTaskScore(const TaskScore& scored, v1::Score& score,
                    std::vector<v1::Prediction>& predictions) {
  score.set_metric(scored.metric);
  score.set_score(scored.score);
  score.clear_metric_scores();
  score.mutable_metric_scores()->insert(scored.metric_scores.begin(), scored.metric_scores.end());
  for (size_t i = 0; i < predictions.size(); ++i) {
    const ScoredExample& e = scored.examples[i];
    predictions[i].set_normalized(e.normalized);
    predictions[i].set_score(e.score);
    predictions[i].clear_metric_values();
    predictions[i].mutable_metric_values()->insert(e.metric_values.begin(), e.metric_values.end());
  }
}

// ---- Analytics ----

Analytics::Analytics(Store* store, TaskLoader load_task)
    : store_(store), load_task_(std::move(load_task)) {}
Analytics::~Analytics() = default;

absl::StatusOr<StepPoint> Analytics::LoadStoredPoint(const SeqKey& key, uint64_t step) const {
  // Named references, not a structured binding: the lambda below captures them (C++17).
  const std::string& run = std::get<0>(key);
  const std::string& task = std::get<1>(key);
  const std::string& variant = std::get<2>(key);
  ASSIGN_OR_RETURN(v1::Score score, store_->GetScore(run, task, variant, step));
  std::vector<v1::Prediction> predictions;
  absl::Status gap;
  RETURN_IF_ERROR(store_->ScanPredictions(run, task, variant, step,
                                          [&](uint32_t example, const v1::Prediction& p) {
                                            if (example != predictions.size()) {
                                              gap = absl::DataLossError(absl::StrCat(
                                                  "predictions of ", run, "/", task, "/", variant,
                                                  "@", step, " skip example ", predictions.size()));
                                              return false;
                                            }
                                            predictions.push_back(p);
                                            return true;
                                          }));
  RETURN_IF_ERROR(gap);
  return PointOf(step, score, predictions);
}

absl::Status Analytics::LoadRun(const v1::Run& run) {
  absl::MutexLock lock(&mu_);
  const std::string& name = run.config().name();
  std::map<SeqKey, std::vector<std::pair<uint64_t, double>>> points;
  std::map<SeqKey, std::vector<v1::PairStats>> pairs;
  RETURN_IF_ERROR(store_->ScanScores(name, "", [&](const v1::Score& s) {
    points[{name, s.task(), s.variant()}].emplace_back(s.step(), s.score());
    return true;
  }));
  RETURN_IF_ERROR(store_->ScanPairs(
      name, "", "",
      [&](const std::string& task, const std::string& variant, const v1::PairStats& p) {
        pairs[{name, task, variant}].push_back(p);
        return true;
      }));
  std::set<SeqKey> keys;
  for (const auto& [key, v] : points) keys.insert(key);
  for (const auto& [key, v] : pairs) keys.insert(key);
  for (const SeqKey& key : keys) RETURN_IF_ERROR(RebuildSequence(key, points[key], pairs[key]));
  return absl::OkStatus();
}

absl::Status Analytics::ReloadSequence(const SeqKey& key) {
  const std::string& run = std::get<0>(key);
  const std::string& task = std::get<1>(key);
  const std::string& variant = std::get<2>(key);
  std::vector<std::pair<uint64_t, double>> points;
  std::vector<v1::PairStats> pairs;
  RETURN_IF_ERROR(store_->ScanScores(run, task, [&](const v1::Score& s) {
    if (s.variant() == variant) points.emplace_back(s.step(), s.score());
    return true;
  }));
  RETURN_IF_ERROR(store_->ScanPairs(run, task, variant,
                                    [&](const std::string&, const std::string&,
                                        const v1::PairStats& p) {
                                      pairs.push_back(p);
                                      return true;
                                    }));
  return RebuildSequence(key, points, pairs);
}

absl::Status Analytics::RebuildSequence(const SeqKey& key,
                                        const std::vector<std::pair<uint64_t, double>>& points,
                                        const std::vector<v1::PairStats>& pairs) {
  bool consistent = pairs.size() + 1 == std::max<size_t>(points.size(), 1);
  for (size_t i = 0; consistent && i < pairs.size(); ++i) {
    consistent = pairs[i].from_step() == points[i].first && pairs[i].to_step() == points[i + 1].first;
  }
  StabilityIndex index;
  for (const auto& [step, score] : points) index.RestorePoint(step, score);
  if (consistent) {
    for (const v1::PairStats& p : pairs) index.RestorePair(FromProto(p));
  } else {
    // Pairs missing (schema 1) or stale: recompute them from the stored predictions.
    const auto& [run, task, variant] = key;
    Store::Batch batch = store_->NewBatch();
    for (const v1::PairStats& p : pairs) batch.DeletePair(run, task, variant, p.to_step());
    std::optional<StepPoint> previous;
    for (const auto& [step, score] : points) {
      ASSIGN_OR_RETURN(StepPoint point, LoadStoredPoint(key, step));
      if (previous.has_value()) {
        ASSIGN_OR_RETURN(PairFigures figures, ComputePair(*previous, point));
        index.RestorePair(figures);
        batch.PutPair(run, task, variant, ToProto(figures));
      }
      previous = std::move(point);
    }
    RETURN_IF_ERROR(store_->Commit(std::move(batch)));
  }
  if (points.empty()) {
    indexes_.erase(key);
  } else {
    indexes_[key] = std::move(index);
  }
  return absl::OkStatus();
}

const StabilityIndex* Analytics::FindIndex(const SeqKey& key) const {
  auto it = indexes_.find(key);
  return it == indexes_.end() ? nullptr : &it->second;
}

// ---- Update ----

// An Update holds analytics_->mu_ from construction to destruction (lock_). Clang's
// thread-safety analysis cannot follow a lock held by a member across member functions,
// so the ones that touch the guarded state assert it (AssertHeld: checked in debug
// builds, a no-op otherwise).
Analytics::Update::Update(Analytics* analytics)
    : analytics_(analytics), lock_(&analytics->mu_) {}

Analytics::Update::~Update() {
  if (committed_) return;
  analytics_->mu_.AssertHeld();
  for (const SeqKey& key : touched_) {
    absl::Status s = analytics_->ReloadSequence(key);
    if (!s.ok()) {
      analytics_->indexes_.erase(key);
      std::cerr << "steadyeval-server: restoring the stability index of " << std::get<0>(key)
                << "/" << std::get<1>(key) << "/" << std::get<2>(key) << ": " << s
                << " (dropped until the coordinator restarts)\n";
    }
  }
}

void Analytics::Update::ForgetRun(const std::string& run) {
  analytics_->mu_.AssertHeld();
  auto& indexes = analytics_->indexes_;
  for (auto it = indexes.lower_bound({run, "", ""});
       it != indexes.end() && std::get<0>(it->first) == run;) {
    it = indexes.erase(it);
  }
  for (auto it = touched_.begin(); it != touched_.end();) {
    it = std::get<0>(*it) == run ? touched_.erase(it) : std::next(it);
  }
}

std::set<std::pair<std::string, std::string>> Analytics::Update::TouchedTasks() const {
  std::set<std::pair<std::string, std::string>> out;
  for (const auto& [run, task, variant] : touched_) out.emplace(run, task);
  return out;
}

StabilityIndex& Analytics::Update::Index(const SeqKey& key) {
  analytics_->mu_.AssertHeld();
  touched_.insert(key);
  return analytics_->indexes_[key];
}

absl::StatusOr<std::vector<v1::Prediction>> Analytics::Update::LoadPredictions(const SeqKey& key,
                                                                               uint64_t step) {
  auto it = pending_.find({key, step});
  if (it != pending_.end()) {
    if (!it->second.has_value()) {
      return absl::NotFoundError(absl::StrCat("value ", std::get<2>(key), "@", step, " erased"));
    }
    return it->second->predictions;
  }
  const auto& [run, task, variant] = key;
  std::vector<v1::Prediction> out;
  RETURN_IF_ERROR(analytics_->store_->ScanPredictions(
      run, task, variant, step, [&](uint32_t example, const v1::Prediction& p) {
        out.push_back(p);
        out.back().set_example(example);
        return true;
      }));
  return out;
}

absl::StatusOr<StepPoint> Analytics::Update::LoadPoint(const SeqKey& key, uint64_t step) {
  auto it = pending_.find({key, step});
  if (it != pending_.end()) {
    if (!it->second.has_value()) {
      return absl::NotFoundError(absl::StrCat("value ", std::get<2>(key), "@", step, " erased"));
    }
    v1::Score score;
    score.set_score(it->second->score);
    score.set_metric(it->second->metric);
    return PointOf(step, score, it->second->predictions);
  }
  return analytics_->LoadStoredPoint(key, step);
}

void Analytics::Update::Persist(Store::Batch& batch, const SeqKey& key,
                                const StabilityIndex::Change& change) {
  const auto& [run, task, variant] = key;
  for (uint64_t to_step : change.removed_pairs) batch.DeletePair(run, task, variant, to_step);
  for (const PairFigures& f : change.added_pairs) batch.PutPair(run, task, variant, ToProto(f));
}

absl::Status Analytics::Update::PutValue(Store::Batch& batch, const v1::Score& score,
                                         std::vector<v1::Prediction> predictions) {
  const SeqKey key{score.run(), score.task(), score.variant()};
  for (size_t i = 0; i < predictions.size(); ++i) {
    predictions[i].set_example(static_cast<uint32_t>(i));
  }
  const StepPoint point = PointOf(score.step(), score, predictions);
  StabilityIndex& index = Index(key);
  const bool replacing = index.ScoreAt(score.step()).has_value();
  ASSIGN_OR_RETURN(StabilityIndex::Change change,
                   index.Upsert(point, [&](uint64_t step) { return LoadPoint(key, step); }));
  Persist(batch, key, change);
  if (replacing) batch.DeletePredictions(score.run(), score.task(), score.variant(), score.step());
  for (const v1::Prediction& p : predictions) {
    batch.PutPrediction(score.run(), score.task(), score.variant(), score.step(), p.example(), p);
  }
  batch.PutScore(score);
  Value value;
  value.score = score.score();
  value.metric = score.metric();
  value.predictions = std::move(predictions);
  pending_[{key, score.step()}] = std::move(value);
  return absl::OkStatus();
}

absl::Status Analytics::Update::EraseValue(Store::Batch& batch, const std::string& run,
                                           const std::string& task, const std::string& variant,
                                           uint64_t step) {
  analytics_->mu_.AssertHeld();
  const SeqKey key{run, task, variant};
  auto it = analytics_->indexes_.find(key);
  if (it == analytics_->indexes_.end() || !it->second.ScoreAt(step).has_value()) {
    return absl::OkStatus();
  }
  StabilityIndex& index = Index(key);
  ASSIGN_OR_RETURN(StabilityIndex::Change change,
                   index.Erase(step, [&](uint64_t s) { return LoadPoint(key, s); }));
  Persist(batch, key, change);
  batch.DeletePredictions(run, task, variant, step);
  batch.DeleteScore(run, task, variant, step);
  pending_[{key, step}] = std::nullopt;
  return absl::OkStatus();
}

absl::Status Analytics::Update::UpdateEnsembles(Store::Batch& batch, const v1::Run& run,
                                                const std::vector<uint64_t>& steps, uint32_t n,
                                                const std::vector<size_t>& ends) {
  if (n < 2) return absl::OkStatus();
  const std::string& name = run.config().name();
  const Variant hard_variant = Variant::Ensemble(n), soft_variant = Variant::SoftEnsemble(n);
  const std::string hard = ToString(hard_variant), soft = ToString(soft_variant);
  for (const v1::TaskRef& ref : run.config().tasks()) {
    ASSIGN_OR_RETURN(std::shared_ptr<const Task> task, analytics_->load_task_(ref));
    const bool multiple_choice = task->kind == TaskKind::kMultipleChoice;
    const SeqKey raw_key{name, ref.name(), "raw"};
    for (size_t end : ends) {
      if (end + 1 < n || end >= steps.size()) continue;
      const uint64_t window_end = steps[end];
      // Members oldest first; every one needs a raw value.
      std::vector<std::vector<v1::Prediction>> members;
      analytics_->mu_.AssertHeld();
      auto raw_index = analytics_->indexes_.find(raw_key);
      bool complete = raw_index != analytics_->indexes_.end();
      for (size_t i = end + 1 - n; complete && i <= end; ++i) {
        complete = raw_index->second.ScoreAt(steps[i]).has_value();
        if (!complete) break;
        ASSIGN_OR_RETURN(std::vector<v1::Prediction> predictions,
                         LoadPredictions(raw_key, steps[i]));
        if (predictions.size() != task->size()) {
          return absl::DataLossError(absl::StrCat("raw value ", name, "/", ref.name(), "@",
                                                  steps[i], " holds ", predictions.size(),
                                                  " predictions; the task has ", task->size()));
        }
        members.push_back(std::move(predictions));
      }
      if (!complete) {
        RETURN_IF_ERROR(EraseValue(batch, name, ref.name(), hard, window_end));
        RETURN_IF_ERROR(EraseValue(batch, name, ref.name(), soft, window_end));
        continue;
      }
      v1::Score score;
      score.set_run(name);
      score.set_task(ref.name());
      score.set_task_sha256(ref.sha256());
      score.set_step(window_end);
      score.set_metric(task->primary_metric());
      score.set_examples(static_cast<uint32_t>(task->size()));

      std::vector<std::string> votes(task->size());
      for (size_t e = 0; e < task->size(); ++e) {
        std::vector<std::string> outputs;
        for (const auto& m : members) outputs.push_back(m[e].normalized());
        votes[e] = MajorityVote(outputs);
      }
      SetVariant(score, hard_variant);
      ASSIGN_OR_RETURN(std::vector<v1::Prediction> voted, ScoredVotes(*task, votes, score));
      RETURN_IF_ERROR(PutValue(batch, score, std::move(voted)));
      if (!multiple_choice) continue;

      // ens-soft@n: per member, the option scores the primary metric ranks (acc: summed
      // log-likelihoods; acc_norm: per character).
      std::vector<std::string> soft_votes(task->size());
      bool soft_ok = true;
      for (size_t e = 0; soft_ok && e < task->size(); ++e) {
        std::vector<std::vector<double>> option_scores;
        for (const auto& m : members) {
          if (static_cast<size_t>(m[e].option_logliks_size()) !=
              task->choice_examples[e].choices.size()) {
            soft_ok = false;  // a member without log-likelihoods: no soft vote
            break;
          }
          ASSIGN_OR_RETURN(std::vector<double> scores,
                           OptionScores(*task, e,
                                        {m[e].option_logliks().begin(), m[e].option_logliks().end()},
                                        task->primary_metric()));
          option_scores.push_back(std::move(scores));
        }
        if (!soft_ok) break;
        ASSIGN_OR_RETURN(int chosen, SoftVote(option_scores));
        soft_votes[e] = std::to_string(chosen);
      }
      if (!soft_ok) {
        RETURN_IF_ERROR(EraseValue(batch, name, ref.name(), soft, window_end));
        continue;
      }
      SetVariant(score, soft_variant);
      ASSIGN_OR_RETURN(std::vector<v1::Prediction> soft_voted, ScoredVotes(*task, soft_votes, score));
      RETURN_IF_ERROR(PutValue(batch, score, std::move(soft_voted)));
    }
  }
  return absl::OkStatus();
}

absl::Status Analytics::Update::OnRawStored(Store::Batch& batch, const v1::Run& run,
                                            const std::vector<uint64_t>& steps, uint64_t step) {
  auto pos = std::lower_bound(steps.begin(), steps.end(), step);
  if (pos == steps.end() || *pos != step) return absl::OkStatus();
  const size_t i = pos - steps.begin();
  const std::set<uint32_t> sizes(run.config().ensemble_windows().begin(),
                                 run.config().ensemble_windows().end());
  for (uint32_t n : sizes) {
    std::vector<size_t> ends;
    for (size_t end = std::max<size_t>(i, n - 1); end < steps.size() && end < i + n; ++end) {
      ends.push_back(end);
    }
    RETURN_IF_ERROR(UpdateEnsembles(batch, run, steps, n, ends));
  }
  return absl::OkStatus();
}

absl::Status Analytics::Update::OnAdmission(Store::Batch& batch, const v1::Run& run,
                                            const Admission& admission) {
  const std::string& name = run.config().name();
  for (const v1::Job& job : admission.superseded) {
    if (job.steps().empty()) continue;
    const uint64_t end = job.steps(job.steps_size() - 1);
    for (const v1::TaskRef& ref : job.tasks()) {
      RETURN_IF_ERROR(EraseValue(batch, name, ref.name(), JobKindNameOf(job), end));
    }
  }
  // Ensemble sizes configured or still holding values.
  std::set<uint32_t> sizes(run.config().ensemble_windows().begin(),
                           run.config().ensemble_windows().end());
  std::set<std::string> tasks;
  for (const v1::TaskRef& ref : run.config().tasks()) tasks.insert(ref.name());
  analytics_->mu_.AssertHeld();
  for (auto it = analytics_->indexes_.lower_bound({name, "", ""});
       it != analytics_->indexes_.end() && std::get<0>(it->first) == name; ++it) {
    absl::StatusOr<Variant> v = ParseVariant(std::get<2>(it->first));
    if (v.ok() && (v->kind == Variant::Kind::kEnsemble ||
                   v->kind == Variant::Kind::kSoftEnsemble)) {
      sizes.insert(v->window);
    }
    tasks.insert(std::get<1>(it->first));
  }
  const std::vector<uint64_t>& steps = admission.steps;
  for (uint32_t n : sizes) {
    for (size_t end = std::max<size_t>(admission.index, n - 1);
         end < steps.size() && end < admission.index + n; ++end) {
      for (const std::string& task : tasks) {
        RETURN_IF_ERROR(
            EraseValue(batch, name, task, ToString(Variant::Ensemble(n)), steps[end]));
        RETURN_IF_ERROR(EraseValue(batch, name, task,
                                   ToString(Variant::SoftEnsemble(n)), steps[end]));
      }
    }
  }
  return absl::OkStatus();
}

// ---- queries ----

std::vector<Variant> Analytics::VariantsOf(const v1::Run& run, const v1::TaskRef& task,
                                           bool multiple_choice) {
  std::set<Variant> variants = {Variant::Raw()};
  for (uint32_t n : run.config().average_windows()) variants.insert(Variant::Average(n));
  for (uint32_t n : run.config().ensemble_windows()) {
    variants.insert(Variant::Ensemble(n));
    if (multiple_choice) variants.insert(Variant::SoftEnsemble(n));
  }
  const std::string& name = run.config().name();
  for (auto it = indexes_.lower_bound({name, task.name(), ""});
       it != indexes_.end() && std::get<0>(it->first) == name &&
       std::get<1>(it->first) == task.name();
       ++it) {
    if (absl::StatusOr<Variant> v = ParseVariant(std::get<2>(it->first)); v.ok()) {
      variants.insert(*v);
    }
  }
  return std::vector<Variant>(variants.begin(), variants.end());
}

absl::StatusOr<v1::GetStabilityResponse> Analytics::GetStability(
    const v1::Run& run, const v1::GetStabilityRequest& r) {
  const std::string& name = run.config().name();
  std::vector<v1::TaskRef> tasks;
  for (const v1::TaskRef& ref : run.config().tasks()) {
    if (r.task().empty() || ref.name() == r.task()) tasks.push_back(ref);
  }
  if (tasks.empty()) {
    return absl::NotFoundError(absl::StrCat("run ", name, " has no task '", r.task(),
                                            "' (see `steadyeval runs show ", name, "`)"));
  }
  RangeSpec spec;
  switch (r.range_case()) {
    case v1::GetStabilityRequest::kLastPoints:
      spec.kind = RangeSpec::Kind::kLastPoints;
      spec.last_points = r.last_points();
      break;
    case v1::GetStabilityRequest::kLastFraction:
      spec.kind = RangeSpec::Kind::kLastFraction;
      spec.last_fraction = r.last_fraction();
      break;
    case v1::GetStabilityRequest::kSteps:
      spec.kind = RangeSpec::Kind::kSteps;
      spec.from_step = r.steps().from_step();
      spec.to_step = r.steps().to_step();
      break;
    default:
      break;
  }

  absl::MutexLock lock(&mu_);
  std::set<uint64_t> raw_steps;
  for (const v1::TaskRef& ref : tasks) {
    if (const StabilityIndex* index = FindIndex({name, ref.name(), "raw"})) {
      for (uint64_t s : index->Steps()) raw_steps.insert(s);
    }
  }
  ASSIGN_OR_RETURN(std::optional<StepRangeResult> range,
                   ResolveRange(spec, std::vector<uint64_t>(raw_steps.begin(), raw_steps.end())));
  v1::GetStabilityResponse response;
  response.set_run(name);
  if (range.has_value()) {
    response.mutable_range()->set_from_step(range->from_step);
    response.mutable_range()->set_to_step(range->to_step);
  }
  auto in_range = [&](uint64_t step) {
    return range.has_value() && step >= range->from_step && step <= range->to_step;
  };

  // Task rows, and each task's score curve per variant (for categories and AVG).
  std::map<std::string, std::map<Variant, std::map<uint64_t, double>>> curves;
  std::set<Variant> all_variants;
  for (const v1::TaskRef& ref : tasks) {
    ASSIGN_OR_RETURN(std::shared_ptr<const Task> task, load_task_(ref));
    for (const Variant& variant : VariantsOf(run, ref, task->kind == TaskKind::kMultipleChoice)) {
      all_variants.insert(variant);
      v1::StabilityRow* row = response.add_rows();
      row->set_task(ref.name());
      row->set_kind("task");
      SetVariant(*row, variant);
      row->set_metric(task->primary_metric());
      const StabilityIndex* index = FindIndex({name, ref.name(), ToString(variant)});
      auto& curve = curves[ref.name()][variant];
      if (index == nullptr || !range.has_value()) continue;
      const StabilityFigures f = index->Query(range->from_step, range->to_step);
      row->set_checkpoints(f.points);
      SetOptional(f.mean, row, &v1::StabilityRow::set_mean);
      SetOptional(f.mtv, row, &v1::StabilityRow::set_mtv);
      SetOptional(f.example_mtv, row, &v1::StabilityRow::set_example_mtv);
      SetOptional(f.instability, row, &v1::StabilityRow::set_instability);
      for (uint64_t step : index->Steps()) {
        if (in_range(step)) curve[step] = *index->ScoreAt(step);
      }
    }
  }

  auto curve_row = [&](const std::string& label, const std::string& kind, const Variant& variant,
                       const std::map<uint64_t, double>& curve) {
    v1::StabilityRow* row = response.add_rows();
    row->set_task(label);
    row->set_kind(kind);
    SetVariant(*row, variant);
    row->set_checkpoints(static_cast<uint32_t>(curve.size()));
    if (!curve.empty()) {
      double sum = 0;
      for (const auto& [step, v] : curve) sum += v;
      row->set_mean(sum / curve.size());
    }
    if (range.has_value()) {
      SetOptional(CurveMtv(curve, range->from_step, range->to_step), row,
                  &v1::StabilityRow::set_mtv);
    }
  };
  if (r.task().empty()) {
    // Categories: the mean curve of their tasks, for variants every task of theirs has.
    std::map<std::string, std::vector<std::string>> members;
    for (const v1::TaskRef& ref : tasks) {
      if (!ref.category().empty()) members[ref.category()].push_back(ref.name());
    }
    std::map<Variant, std::vector<std::map<uint64_t, double>>> avg_units;
    for (const Variant& variant : all_variants) {
      if (!members.empty()) {
        for (const std::string category : kTaskCategories) {
          auto m = members.find(category);
          if (m == members.end()) continue;
          std::vector<std::map<uint64_t, double>> task_curves;
          for (const std::string& task : m->second) {
            auto c = curves[task].find(variant);
            if (c == curves[task].end()) break;
            task_curves.push_back(c->second);
          }
          if (task_curves.size() != m->second.size()) continue;  // not every task has it
          std::map<uint64_t, double> curve = MeanCurve(task_curves);
          curve_row(category, "category", variant, curve);
          avg_units[variant].push_back(std::move(curve));
        }
        if (avg_units[variant].size() != members.size()) avg_units.erase(variant);
      } else {
        for (const v1::TaskRef& ref : tasks) {
          auto c = curves[ref.name()].find(variant);
          if (c == curves[ref.name()].end()) break;
          avg_units[variant].push_back(c->second);
        }
        if (avg_units[variant].size() != tasks.size()) avg_units.erase(variant);
      }
    }
    for (const auto& [variant, units] : avg_units) {
      curve_row("AVG", "avg", variant, MeanCurve(units));
    }
  }

  if (range.has_value()) {
    std::vector<double> l2, relative;
    RETURN_IF_ERROR(store_->ScanDrifts(name, [&](const v1::ParameterDrift& d) {
      if (in_range(d.from_step()) && in_range(d.to_step())) {
        l2.push_back(d.l2());
        relative.push_back(d.relative());
      }
      return true;
    }));
    response.set_drift_pairs(static_cast<uint32_t>(l2.size()));
    if (auto m = Median(l2)) response.set_median_drift_l2(*m);
    if (auto m = Median(relative)) response.set_median_drift_relative(*m);
  }
  return response;
}

absl::StatusOr<v1::GetExamplesResponse> Analytics::GetExamples(const v1::Run& run,
                                                               const v1::GetExamplesRequest& r) {
  const std::string& name = run.config().name();
  const v1::TaskRef* ref = nullptr;
  for (const v1::TaskRef& t : run.config().tasks()) {
    if (t.name() == r.task()) ref = &t;
  }
  if (ref == nullptr) {
    return absl::NotFoundError(r.task().empty()
                                   ? absl::StrCat("give a task (run ", name, " has ",
                                                  run.config().tasks_size(), ")")
                                   : absl::StrCat("run ", name, " has no task '", r.task(), "'"));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const Task> task, load_task_(*ref));

  // Raw flips per example, from the raw sequence in step order.
  std::vector<uint32_t> flips(task->size(), 0);
  std::vector<std::optional<std::string>> last(task->size());
  RETURN_IF_ERROR(store_->ScanAllPredictions(
      name, ref->name(), "raw",
      [&](const Store::PredictionKeyParts& k, const v1::Prediction& p) {
        if (k.example >= task->size()) return true;
        if (last[k.example].has_value() && *last[k.example] != p.normalized()) ++flips[k.example];
        last[k.example] = p.normalized();
        return true;
      }));

  std::vector<uint32_t> selected;
  if (r.select_case() == v1::GetExamplesRequest::kExample) {
    if (r.example() >= task->size()) {
      return absl::InvalidArgumentError(absl::StrCat("task ", ref->name(), " has ", task->size(),
                                                     " examples; ", r.example(),
                                                     " is out of range"));
    }
    selected.push_back(r.example());
  } else {
    const uint32_t k = r.select_case() == v1::GetExamplesRequest::kFlippiest ? r.flippiest() : 10;
    std::vector<uint32_t> order(task->size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](uint32_t a, uint32_t b) { return flips[a] > flips[b]; });
    order.resize(std::min<size_t>(k, order.size()));
    selected = std::move(order);
  }

  std::vector<Variant> variants;
  {
    absl::MutexLock lock(&mu_);
    variants = VariantsOf(run, *ref, task->kind == TaskKind::kMultipleChoice);
  }
  v1::GetExamplesResponse response;
  for (uint32_t e : selected) {
    v1::ExampleHistory* h = response.add_examples();
    h->set_example(e);
    h->set_flips(flips[e]);
    if (task->kind == TaskKind::kMultipleChoice) {
      const ChoiceExample& ex = task->choice_examples[e];
      std::string input = ex.query;
      for (size_t i = 0; i < ex.choices.size(); ++i) {
        absl::StrAppend(&input, "\n", i, ": ", ex.choices[i]);
      }
      h->set_input(input);
      h->set_gold(std::to_string(ex.gold));
    } else {
      h->set_input(task->samples[e].input);
      h->set_gold(task->samples[e].output);
    }
  }
  for (const Variant& variant : variants) {
    std::vector<uint64_t> steps;
    {
      absl::MutexLock lock(&mu_);
      if (const StabilityIndex* index = FindIndex({name, ref->name(), ToString(variant)})) {
        steps = index->Steps();
      }
    }
    for (int i = 0; i < response.examples_size(); ++i) {
      v1::ExampleHistory* h = response.mutable_examples(i);
      for (uint64_t step : steps) {
        absl::StatusOr<v1::Prediction> p =
            store_->GetPrediction(name, ref->name(), ToString(variant), step, h->example());
        if (absl::IsNotFound(p.status())) continue;  // erased meanwhile
        RETURN_IF_ERROR(p.status());
        v1::ExamplePoint* point = h->add_points();
        SetVariant(*point, variant);
        point->set_step(step);
        point->set_output(p->output());
        point->set_normalized(p->normalized());
        point->set_score(p->score());
      }
    }
  }
  return response;
}

absl::Status Analytics::ExportPredictions(
    const v1::Run& run, const v1::ExportPredictionsRequest& r,
    const std::function<bool(const v1::ExportedPrediction&)>& visit) {
  std::map<std::string, std::string> metrics;
  for (const v1::TaskRef& ref : run.config().tasks()) {
    ASSIGN_OR_RETURN(std::shared_ptr<const Task> task, load_task_(ref));
    metrics[ref.name()] = task->primary_metric();
  }
  if (!r.task().empty() && !metrics.count(r.task())) {
    return absl::NotFoundError(
        absl::StrCat("run ", run.config().name(), " has no task '", r.task(), "'"));
  }
  v1::ExportedPrediction out;
  return store_->ScanAllPredictions(
      run.config().name(), r.task(), r.variant(),
      [&](const Store::PredictionKeyParts& k, const v1::Prediction& p) {
        out.Clear();
        out.set_step(k.step);
        out.set_task(k.task);
        out.set_variant(k.variant);
        FillVariantSpec(out);
        out.set_example(k.example);
        out.set_output(p.output());
        out.set_normalized_output(p.normalized());
        out.set_score(p.score());
        if (p.metric_values().empty()) {  // stored before per-metric values existed
          auto m = metrics.find(k.task);
          if (m != metrics.end() && MetricHasExampleValues(m->second)) {
            (*out.mutable_metrics())[m->second] = p.score();
          }
        } else {
          *out.mutable_metrics() = p.metric_values();
        }
        return visit(out);
      });
}

std::vector<Analytics::VariantFigures> Analytics::DefaultRangeFigures(const std::string& run,
                                                                      const std::string& task) {
  absl::MutexLock lock(&mu_);
  std::vector<VariantFigures> out;
  std::optional<StepRangeResult> range;
  if (const StabilityIndex* raw = FindIndex({run, task, "raw"})) {
    absl::StatusOr<std::optional<StepRangeResult>> resolved = ResolveRange({}, raw->Steps());
    if (resolved.ok()) range = *resolved;
  }
  for (auto it = indexes_.lower_bound({run, task, ""});
       it != indexes_.end() && std::get<0>(it->first) == run && std::get<1>(it->first) == task;
       ++it) {
    VariantFigures f;
    f.variant = std::get<2>(it->first);
    const StabilityIndex& index = it->second;
    if (index.size() > 0) {
      const std::vector<uint64_t> steps = index.Steps();
      f.latest_step = steps.back();
      f.latest_score = index.ScoreAt(steps.back());
      if (steps.size() >= 2) f.previous_score = index.ScoreAt(steps[steps.size() - 2]);
    }
    if (range.has_value()) f.figures = index.Query(range->from_step, range->to_step);
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace steadyeval
