#include "api/state_names.h"

namespace steadyeval {

std::string CheckpointStateName(v1::CheckpointState state) {
  switch (state) {
    case v1::CHECKPOINT_PENDING: return "pending";
    case v1::CHECKPOINT_EVALUATING: return "evaluating";
    case v1::CHECKPOINT_EVALUATED: return "evaluated";
    case v1::CHECKPOINT_FAILED: return "failed";
    default: return "unspecified";
  }
}

std::string JobStateName(v1::JobState state) {
  switch (state) {
    case v1::JOB_PENDING: return "pending";
    case v1::JOB_LEASED: return "leased";
    case v1::JOB_DONE: return "done";
    case v1::JOB_FAILED: return "failed";
    case v1::JOB_SUPERSEDED: return "superseded";
    default: return "unspecified";
  }
}

std::string WorkerStateName(v1::WorkerState state) {
  switch (state) {
    case v1::WORKER_IDLE: return "idle";
    case v1::WORKER_BUSY: return "busy";
    case v1::WORKER_LOST: return "lost";
    default: return "unspecified";
  }
}

}  // namespace steadyeval
