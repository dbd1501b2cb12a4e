#include "common/scoring.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/eval_metrics.h"
#include "common/status.h"
#include "common/text.h"

namespace steadyeval {
namespace {

bool IsChoiceMetric(absl::string_view metric) { return metric == "acc" || metric == "acc_norm"; }

absl::Status IndexError(const Task& task, size_t index) {
  return absl::InvalidArgumentError(absl::StrCat("task ", task.name, " has ", task.size(),
                                                 " examples; index ", index, " is out of range"));
}

// Lowest index of the maximum (NaN never wins).
int Argmax(const std::vector<double>& values) {
  int best = 0;
  for (size_t k = 1; k < values.size(); ++k) {
    if (values[k] > values[best] || std::isnan(values[best])) best = static_cast<int>(k);
  }
  return best;
}

absl::StatusOr<int> ParseChoice(const Task& task, size_t index, const std::string& output) {
  const ChoiceExample& ex = task.choice_examples[index];
  int chosen = -1;
  if (!absl::SimpleAtoi(output, &chosen) || chosen < 0 ||
      chosen >= static_cast<int>(ex.choices.size())) {
    return absl::InvalidArgumentError(absl::StrCat("task ", task.name, " example ", index,
                                                   ": output '", output, "' is not an option index"));
  }
  return chosen;
}

// Multiple choice: `chosen_by` maps a metric to the option it picks.
absl::StatusOr<TaskScore> ScoreChoices(const Task& task, const std::vector<RawOutput>& outputs,
                                       bool normalized_input) {
  TaskScore result;
  result.metric = task.primary_metric();
  for (const std::string& m : task.metrics) result.metric_scores[m] = 0;
  result.metric_scores[result.metric] = 0;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const ChoiceExample& ex = task.choice_examples[i];
    const RawOutput& out = outputs[i];
    ScoredExample scored;
    std::map<std::string, int> picks;
    if (!normalized_input && !out.option_logliks.empty()) {
      // The worker's own pick must at least name an option, although the log-likelihoods
      // decide.
      if (absl::StatusOr<int> named = ParseChoice(task, i, out.output); !named.ok()) {
        return named.status();
      }
      if (out.option_logliks.size() != ex.choices.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "task ", task.name, " example ", i, ": ", out.option_logliks.size(),
            " option log-likelihoods for ", ex.choices.size(), " choices"));
      }
      for (const auto& [metric, unused] : result.metric_scores) {
        ASSIGN_OR_RETURN(std::vector<double> scores, OptionScores(task, i, out.option_logliks, metric));
        picks[metric] = Argmax(scores);
      }
    } else {
      // An option index (a vote, or a report without log-likelihoods): it is the primary
      // metric's pick; other metrics cannot be judged.
      ASSIGN_OR_RETURN(int chosen, ParseChoice(task, i, out.output));
      picks[result.metric] = chosen;
    }
    for (const auto& [metric, pick] : picks) {
      const double value = pick == ex.gold ? 1.0 : 0.0;
      scored.metric_values[metric] = value;
      result.metric_scores[metric] += value;
    }
    scored.normalized = std::to_string(picks.at(result.metric));
    scored.score = scored.metric_values.at(result.metric);
    result.examples.push_back(std::move(scored));
  }
  for (auto& [metric, sum] : result.metric_scores) {
    sum = outputs.empty() ? 0 : sum / static_cast<double>(outputs.size());
  }
  // Metrics no example could judge (votes carry the primary pick only) are not reported.
  for (auto it = result.metric_scores.begin(); it != result.metric_scores.end();) {
    const bool judged = !result.examples.empty() && result.examples[0].metric_values.count(it->first);
    it = judged || it->first == result.metric ? std::next(it) : result.metric_scores.erase(it);
  }
  result.score = result.metric_scores.at(result.metric);
  return result;
}

absl::StatusOr<TaskScore> ScoreGeneration(const Task& task, std::vector<std::string> preds) {
  TaskScore result;
  result.metric = task.primary_metric();
  const GenerationMetric* primary = FindGenerationMetric(result.metric);
  if (primary == nullptr) return CheckMetricsSupported(task);
  result.per_example = primary->per_example();
  std::vector<std::string> golds;
  golds.reserve(task.samples.size());
  for (const GenerationSample& s : task.samples) golds.push_back(NormalizeGold(s.output));
  result.examples.resize(preds.size());
  for (size_t i = 0; i < preds.size(); ++i) result.examples[i].normalized = preds[i];

  std::vector<std::string> names = task.metrics;
  if (std::find(names.begin(), names.end(), result.metric) == names.end()) {
    names.push_back(result.metric);
  }
  for (const std::string& name : names) {
    const GenerationMetric* metric = FindGenerationMetric(name);
    if (metric == nullptr || result.metric_scores.count(name)) continue;  // unsupported: skipped
    if (metric->per_example()) {
      double sum = 0;
      for (size_t i = 0; i < preds.size(); ++i) {
        ASSIGN_OR_RETURN(double value, metric->Example(preds[i], golds[i]));
        result.examples[i].metric_values[name] = value;
        sum += value;
      }
      result.metric_scores[name] = preds.empty() ? 0 : sum / static_cast<double>(preds.size());
    } else {
      absl::StatusOr<double> value = metric->Aggregate(preds, golds);
      if (value.ok()) {
        result.metric_scores[name] = *value;
      } else if (name == result.metric) {
        return value.status();
      }  // a secondary corpus metric this task cannot support is left out
    }
  }
  result.score = result.metric_scores.at(result.metric);
  if (result.per_example) {
    for (ScoredExample& e : result.examples) e.score = e.metric_values.at(result.metric);
  }
  return result;
}

absl::Status CheckCount(const Task& task, size_t n) {
  if (n == task.size()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("task ", task.name, " has ", task.size(), " examples but ", n, " outputs"));
}

}  // namespace

std::string NormalizeGold(absl::string_view gold) { return NormalizeNfkc(gold); }

bool MetricHasExampleValues(absl::string_view metric) {
  if (IsChoiceMetric(metric)) return true;
  const GenerationMetric* m = FindGenerationMetric(metric);
  return m == nullptr || m->per_example();
}

std::vector<std::string> UnsupportedMetrics(const Task& task) {
  std::vector<std::string> out;
  for (const std::string& m : task.metrics) {
    const bool known = task.kind == TaskKind::kMultipleChoice ? IsChoiceMetric(m)
                                                               : FindGenerationMetric(m) != nullptr;
    if (!known) out.push_back(m);
  }
  return out;
}

absl::Status CheckMetricsSupported(const Task& task) {
  const std::string metric = task.primary_metric();
  if (task.kind == TaskKind::kMultipleChoice) {
    if (IsChoiceMetric(metric)) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "task ", task.filename, ": metric '", metric,
        "' does not apply to a multiple-choice (log-likelihood) task; use acc or acc_norm"));
  }
  if (const GenerationMetric* m = FindGenerationMetric(metric); m != nullptr) {
    if (m->per_example()) return absl::OkStatus();
    // A corpus-level metric must be computable on this task at all (llm-jp-eval raises on
    // non-numeric golds, and pearson needs two samples): try it on the golds themselves.
    std::vector<std::string> golds;
    for (const GenerationSample& s : task.samples) golds.push_back(NormalizeGold(s.output));
    absl::StatusOr<double> probe = m->Aggregate(golds, golds);
    if (probe.ok()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("task ", task.filename, ": metric '", metric,
                                                   "' cannot score this task: ",
                                                   probe.status().message()));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "task ", task.filename, ": metric '", metric, "' is not supported for generation tasks ",
      "(supported: ", absl::StrJoin(GenerationMetricNames(), ", "), ")"));
}

absl::StatusOr<std::vector<double>> OptionScores(const Task& task, size_t index,
                                                 const std::vector<double>& logliks,
                                                 absl::string_view metric) {
  if (task.kind != TaskKind::kMultipleChoice || index >= task.size()) return IndexError(task, index);
  const ChoiceExample& ex = task.choice_examples[index];
  if (logliks.size() != ex.choices.size()) {
    return absl::InvalidArgumentError(absl::StrCat("task ", task.name, " example ", index, ": ",
                                                   logliks.size(), " option scores for ",
                                                   ex.choices.size(), " choices"));
  }
  if (metric == "acc") return logliks;
  if (metric != "acc_norm") {
    return absl::InvalidArgumentError(absl::StrCat("metric '", metric, "' does not rank options"));
  }
  std::vector<double> scores(logliks.size());
  for (size_t k = 0; k < logliks.size(); ++k) {
    const size_t chars = CodePointCount(MoveTrailingWhitespace(ex.query, ex.choices[k]).second);
    scores[k] = logliks[k] / static_cast<double>(std::max<size_t>(chars, 1));
  }
  return scores;
}

absl::StatusOr<TaskScore> ScoreTask(const Task& task, const std::vector<RawOutput>& outputs) {
  if (absl::Status s = CheckCount(task, outputs.size()); !s.ok()) return s;
  if (absl::Status s = CheckMetricsSupported(task); !s.ok()) return s;
  if (task.kind == TaskKind::kMultipleChoice) return ScoreChoices(task, outputs, false);
  std::vector<std::string> preds;
  preds.reserve(outputs.size());
  for (const RawOutput& o : outputs) preds.push_back(NormalizeGenerated(o.output));
  return ScoreGeneration(task, std::move(preds));
}

absl::StatusOr<TaskScore> ScoreNormalized(const Task& task,
                                          const std::vector<std::string>& normalized) {
  if (absl::Status s = CheckCount(task, normalized.size()); !s.ok()) return s;
  if (absl::Status s = CheckMetricsSupported(task); !s.ok()) return s;
  if (task.kind == TaskKind::kMultipleChoice) {
    std::vector<RawOutput> outputs;
    for (const std::string& n : normalized) outputs.push_back({n, {}});
    return ScoreChoices(task, outputs, true);
  }
  return ScoreGeneration(task, normalized);
}

}  // namespace steadyeval
