// How far evaluation is behind a run's newest admitted checkpoint (DESIGN §9,
// docs/metrics.md): one rule for the coordinator's steadyeval_eval_lag_* gauges and the
// CLI's `watch`.
#ifndef STEADYEVAL_API_EVAL_LAG_H_
#define STEADYEVAL_API_EVAL_LAG_H_

#include <cstdint>
#include <vector>

#include "steadyeval/v1/types.pb.h"

namespace steadyeval {

struct EvalProgress {
  uint64_t newest_step = 0;            // the newest admitted step; 0 when none
  uint64_t newest_evaluated_step = 0;  // the newest CHECKPOINT_EVALUATED step; 0 when none
  uint64_t lag_steps = 0;              // newest_step − newest_evaluated_step
};

// Of one run's admitted checkpoints, in any order.
EvalProgress EvalProgressOf(const std::vector<v1::Checkpoint>& checkpoints);

// 0 when the newest admitted checkpoint is evaluated; otherwise the seconds from the
// admission of the oldest admitted checkpoint newer than the newest evaluated one (every
// checkpoint when none is evaluated) to `now_unix_ms`, never negative.
double EvalLagSeconds(const std::vector<v1::Checkpoint>& checkpoints, int64_t now_unix_ms);

}  // namespace steadyeval

#endif  // STEADYEVAL_API_EVAL_LAG_H_
