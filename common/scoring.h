// Scoring worker outputs against gold answers (DESIGN §1 step 4, §7).
//
// Scoring lives in the coordinator (and the offline `eval` command) so a metric fix is a
// re-score of stored outputs. For multiple choice the output is the chosen option index
// in decimal; for generation it is the raw generated text.
// Skeleton metrics: `acc` (multiple choice) and `exact_match` (generation). Thread-safe.
#ifndef STEADYEVAL_COMMON_SCORING_H_
#define STEADYEVAL_COMMON_SCORING_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/task.h"

namespace steadyeval {

struct ScoredExample {
  std::string normalized;  // what is compared against gold (and for stability, §3)
  double score = 0;        // per-example value of the primary metric
};

struct TaskScore {
  std::string metric;
  double score = 0;  // mean of the per-example scores
  std::vector<ScoredExample> examples;
};

// INVALID_ARGUMENT when the metric is not supported or an output is malformed for the
// task (e.g. an option index out of range).
absl::StatusOr<ScoredExample> ScoreExample(const Task& task, size_t index, const std::string& output);

// `outputs[i]` is example i's output; there must be one per example.
absl::StatusOr<TaskScore> ScoreTask(const Task& task, const std::vector<std::string>& outputs);

// OK when every metric the task needs is implemented (checked when a run is created).
absl::Status CheckMetricsSupported(const Task& task);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_SCORING_H_
