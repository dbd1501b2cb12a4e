#include "api/job_failure_proto.h"

#include <utility>

#include "absl/strings/match.h"
#include "api/protocol.h"

namespace steadyeval {

v1::JobFailure ToProto(JobFailure failure) {
  switch (failure) {
    case JobFailure::kPermanent: return v1::JOB_FAILURE_PERMANENT;
    case JobFailure::kMembersGone: return v1::JOB_FAILURE_MEMBERS_GONE;
    case JobFailure::kWorkerStopping: return v1::JOB_FAILURE_WORKER_STOPPING;
    case JobFailure::kRetryable:
    case JobFailure::kLeaseExpired:
      return v1::JOB_FAILURE_RETRYABLE;
  }
  return v1::JOB_FAILURE_RETRYABLE;
}

void SetJobFailure(v1::FailJobRequest& request, JobFailure failure, std::string reason) {
  request.set_failure(ToProto(failure));
  request.set_retryable(IsRetryable(failure));
  request.set_reason(std::move(reason));
}

JobFailure JobFailureOf(const v1::FailJobRequest& request) {
  switch (request.failure()) {
    case v1::JOB_FAILURE_RETRYABLE: return JobFailure::kRetryable;
    case v1::JOB_FAILURE_PERMANENT: return JobFailure::kPermanent;
    case v1::JOB_FAILURE_MEMBERS_GONE: return JobFailure::kMembersGone;
    case v1::JOB_FAILURE_WORKER_STOPPING: return JobFailure::kWorkerStopping;
    default: break;  // unset (an old worker) or a value newer than this coordinator
  }
  if (request.retryable() && request.reason() == kWorkerStoppingReason) {
    return JobFailure::kWorkerStopping;
  }
  if (absl::StrContains(request.reason(), "members_gone")) return JobFailure::kMembersGone;
  return request.retryable() ? JobFailure::kRetryable : JobFailure::kPermanent;
}

}  // namespace steadyeval
