// The lower-case names of the API's state enums, as the CLI prints them, GetRun's
// jobs_by_state keys and the metrics' `state` labels use them: one vocabulary everywhere.
#ifndef STEADYEVAL_API_STATE_NAMES_H_
#define STEADYEVAL_API_STATE_NAMES_H_

#include <string>

#include "steadyeval/v1/types.pb.h"

namespace steadyeval {

// "pending", "evaluating", "evaluated", "failed".
std::string CheckpointStateName(v1::CheckpointState state);
// "pending", "leased", "done", "failed", "superseded".
std::string JobStateName(v1::JobState state);
// "idle", "busy", "lost".
std::string WorkerStateName(v1::WorkerState state);

}  // namespace steadyeval

#endif  // STEADYEVAL_API_STATE_NAMES_H_
