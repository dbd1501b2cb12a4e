#include "server/analytics/rescore.h"

#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "api/variant_proto.h"
#include "common/scoring.h"
#include "common/status.h"

namespace steadyeval {

absl::StatusOr<RescoreResult> RescoreRun(Analytics& analytics, Store& store,
                                         const Analytics::TaskLoader& load_task,
                                         const v1::Run& run, const std::string& task,
                                         const std::vector<uint64_t>& steps) {
  const std::string& name = run.config().name();
  std::vector<v1::TaskRef> refs;
  for (const v1::TaskRef& ref : run.config().tasks()) {
    if (task.empty() || ref.name() == task) refs.push_back(ref);
  }
  if (refs.empty()) {
    return absl::NotFoundError(absl::StrCat("run ", name, " has no task '", task, "'"));
  }
  RescoreResult result;
  v1::RescoreResponse& response = result.response;
  for (const v1::TaskRef& ref : refs) {
    ASSIGN_OR_RETURN(std::shared_ptr<const Task> parsed, load_task(ref));
    std::vector<v1::Score> stored;
    RETURN_IF_ERROR(store.ScanScores(name, ref.name(), [&](const v1::Score& s) {
      absl::StatusOr<Variant> v = VariantOf(s);
      if (v.ok() && (v->kind == Variant::Kind::kRaw || v->kind == Variant::Kind::kAverage)) {
        stored.push_back(s);
      }
      return true;
    }));
    Analytics::Update update(&analytics);
    Store::Batch batch = store.NewBatch();
    for (const v1::Score& old : stored) {
      std::vector<v1::Prediction> predictions;
      RETURN_IF_ERROR(store.ScanPredictions(
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
      absl::StatusOr<TaskScore> scored = ScoreTask(*parsed, raw);
      if (!scored.ok()) return Annotate(scored.status(), where);
      v1::Score score = old;
      FillVariantSpec(score);  // a record from before variant_spec is rewritten with it
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
    if (batch.count() > 0) RETURN_IF_ERROR(store.Commit(std::move(batch)));
    update.Committed();
    for (const auto& t : update.TouchedTasks()) result.touched_tasks.insert(t);
  }
  return result;
}

}  // namespace steadyeval
