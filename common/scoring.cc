#include "common/scoring.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/text.h"

namespace steadyeval {

absl::Status CheckMetricsSupported(const Task& task) {
  const std::string metric = task.primary_metric();
  if (task.kind == TaskKind::kMultipleChoice) {
    if (metric == "acc") return absl::OkStatus();
  } else if (metric == "exact_match") {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "task ", task.filename, ": primary metric '", metric,
      "' is not supported (supported: exact_match for generation, acc for multiple choice)"));
}

absl::StatusOr<ScoredExample> ScoreExample(const Task& task, size_t index, const std::string& output) {
  if (index >= task.size()) {
    return absl::InvalidArgumentError(absl::StrCat("task ", task.name, " has ", task.size(),
                                                   " examples; index ", index, " is out of range"));
  }
  ScoredExample scored;
  if (task.kind == TaskKind::kMultipleChoice) {
    const ChoiceExample& ex = task.choice_examples[index];
    int chosen = -1;
    if (!absl::SimpleAtoi(output, &chosen) || chosen < 0 ||
        chosen >= static_cast<int>(ex.choices.size())) {
      return absl::InvalidArgumentError(absl::StrCat("task ", task.name, " example ", index,
                                                     ": output '", output, "' is not an option index"));
    }
    scored.normalized = std::to_string(chosen);
    scored.score = chosen == ex.gold ? 1.0 : 0.0;
    return scored;
  }
  if (auto s = CheckMetricsSupported(task); !s.ok()) return s;
  scored.normalized = NormalizeGenerated(output);
  scored.score = scored.normalized == NormalizeNfkc(StripUnicode(task.samples[index].output)) ? 1.0 : 0.0;
  return scored;
}

absl::StatusOr<TaskScore> ScoreTask(const Task& task, const std::vector<std::string>& outputs) {
  if (outputs.size() != task.size()) {
    return absl::InvalidArgumentError(absl::StrCat("task ", task.name, " has ", task.size(),
                                                   " examples but ", outputs.size(), " outputs"));
  }
  TaskScore result;
  result.metric = task.primary_metric();
  double sum = 0;
  for (size_t i = 0; i < outputs.size(); ++i) {
    auto scored = ScoreExample(task, i, outputs[i]);
    if (!scored.ok()) return scored.status();
    sum += scored->score;
    result.examples.push_back(std::move(*scored));
  }
  result.score = outputs.empty() ? 0 : sum / outputs.size();
  return result;
}

}  // namespace steadyeval
