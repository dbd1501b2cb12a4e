// Re-scoring stored results with the current metric code (`steadyeval rescore`): every
// stored raw and avg@n value of a run's tasks is scored again from its stored outputs,
// then the run's ensembles are recomputed; pair figures follow (Analytics::Update).
#ifndef STEADYEVAL_SERVER_ANALYTICS_RESCORE_H_
#define STEADYEVAL_SERVER_ANALYTICS_RESCORE_H_

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/analytics/analytics.h"
#include "server/store/store.h"
#include "steadyeval/v1/eval_service.pb.h"

namespace steadyeval {

struct RescoreResult {
  v1::RescoreResponse response;
  std::set<std::pair<std::string, std::string>> touched_tasks;  // (run, task)
};

// Re-scores `run`'s tasks (or only `task` when not empty); `steps` are the run's admitted
// steps, ascending. One committed batch per task: a failure leaves the tasks before it
// re-scored and the rest as they were. NOT_FOUND for a task the run does not have.
absl::StatusOr<RescoreResult> RescoreRun(Analytics& analytics, Store& store,
                                         const Analytics::TaskLoader& load_task,
                                         const v1::Run& run, const std::string& task,
                                         const std::vector<uint64_t>& steps);

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_ANALYTICS_RESCORE_H_
