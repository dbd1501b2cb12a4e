// Scoring worker outputs against gold answers (DESIGN §1 step 4, §3, §7).
//
// Scoring lives in the coordinator (and the offline `eval` command) so a metric fix is a
// re-score of stored outputs (`steadyeval rescore`).
//
// Generation: the output is the raw generated text; its normalised form is llm-jp-eval's
// answer extraction (text.h NormalizeGenerated), the gold's is NormalizeGold. Every metric
// the task lists (metrics.h) is scored; per-example metrics give each example a value,
// corpus-level ones (correlations) a task value only.
// Multiple choice: the output carries the per-option summed log-likelihoods; `acc` picks
// the option with the highest sum, `acc_norm` the highest sum per character of the
// option's continuation (lm-evaluation-harness); ties go to the lowest index. The stored
// normalised output is the option the primary metric picks. Thread-safe.
#ifndef STEADYEVAL_COMMON_SCORING_H_
#define STEADYEVAL_COMMON_SCORING_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/task.h"

namespace steadyeval {

// One example's output as a worker reports it.
struct RawOutput {
  std::string output;                  // generated text, or chosen option index in decimal
  std::vector<double> option_logliks;  // multiple choice: one per option (may be empty)
};

struct ScoredExample {
  std::string normalized;  // what is compared against gold (and for stability, §3)
  double score = 0;        // the primary metric's per-example value (0 if corpus-level)
  std::map<std::string, double> metric_values;  // every per-example metric's value
};

struct TaskScore {
  std::string metric;        // the primary metric
  double score = 0;          // its task value
  bool per_example = true;   // the primary metric has per-example values
  std::map<std::string, double> metric_scores;  // every metric's task value
  std::vector<ScoredExample> examples;
};

// Scores raw worker outputs; `outputs[i]` is example i's, one per example.
// INVALID_ARGUMENT for a wrong count, an option index out of range, option
// log-likelihoods of the wrong arity, or an unsupported primary metric.
absl::StatusOr<TaskScore> ScoreTask(const Task& task, const std::vector<RawOutput>& outputs);

// Scores already-normalised outputs (ensemble votes): generation texts as
// NormalizeGenerated returns them, option indices for multiple choice.
absl::StatusOr<TaskScore> ScoreNormalized(const Task& task, const std::vector<std::string>& normalized);

// The option scores `metric` ranks for multiple-choice example `index` (acc: the
// log-likelihoods; acc_norm: divided by the continuation's length in code points).
absl::StatusOr<std::vector<double>> OptionScores(const Task& task, size_t index,
                                                 const std::vector<double>& logliks,
                                                 absl::string_view metric);

// OK when the task's primary metric is implemented for its kind (checked when a run is
// created); INVALID_ARGUMENT naming the metric and the supported ones otherwise.
absl::Status CheckMetricsSupported(const Task& task);
// Listed metrics that are not implemented (skipped when scoring; reported at run creation).
std::vector<std::string> UnsupportedMetrics(const Task& task);

// True when `metric` has per-example values (example-level MTV is defined for it).
bool MetricHasExampleValues(absl::string_view metric);

// llm-jp-eval's gold normalisation: NFKC of the gold answer (not stripped: llm-jp-eval
// strips only predictions).
std::string NormalizeGold(absl::string_view gold);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_SCORING_H_
