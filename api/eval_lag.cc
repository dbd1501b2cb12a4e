#include "api/eval_lag.h"

#include <algorithm>
#include <optional>

namespace steadyeval {

EvalProgress EvalProgressOf(const std::vector<v1::Checkpoint>& checkpoints) {
  EvalProgress progress;
  for (const v1::Checkpoint& c : checkpoints) {
    progress.newest_step = std::max(progress.newest_step, c.step());
    if (c.state() == v1::CHECKPOINT_EVALUATED) {
      progress.newest_evaluated_step = std::max(progress.newest_evaluated_step, c.step());
    }
  }
  progress.lag_steps = progress.newest_step - progress.newest_evaluated_step;
  return progress;
}

double EvalLagSeconds(const std::vector<v1::Checkpoint>& checkpoints, int64_t now_unix_ms) {
  std::optional<uint64_t> newest_evaluated;
  for (const v1::Checkpoint& c : checkpoints) {
    if (c.state() == v1::CHECKPOINT_EVALUATED) {
      newest_evaluated = std::max(newest_evaluated.value_or(0), c.step());
    }
  }
  std::optional<int64_t> oldest_unevaluated_ms;
  for (const v1::Checkpoint& c : checkpoints) {
    if (newest_evaluated.has_value() && c.step() <= *newest_evaluated) continue;
    oldest_unevaluated_ms = std::min(oldest_unevaluated_ms.value_or(c.admitted_unix_ms()),
                                     c.admitted_unix_ms());
  }
  if (!oldest_unevaluated_ms.has_value()) return 0;
  return std::max<int64_t>(0, now_unix_ms - *oldest_unevaluated_ms) / 1e3;
}

}  // namespace steadyeval
