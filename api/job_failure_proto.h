// Job failure reasons in FailJobRequest: the typed `failure` (v1::JobFailure) beside the
// fields coordinators before it read (`retryable`, and the "members_gone" / "worker
// stopping" texts in `reason`). Workers set all of them (SetJobFailure); the coordinator
// reads `failure` when set and derives the reason from the old fields otherwise
// (JobFailureOf). Pure functions.
#ifndef STEADYEVAL_API_JOB_FAILURE_PROTO_H_
#define STEADYEVAL_API_JOB_FAILURE_PROTO_H_

#include <string>

#include "common/job_failure.h"
#include "steadyeval/v1/worker_service.pb.h"

namespace steadyeval {

// kLeaseExpired is never sent: JOB_FAILURE_RETRYABLE, as the coordinator treats it.
v1::JobFailure ToProto(JobFailure failure);

// Sets failure, retryable (IsRetryable) and reason. `reason` of kMembersGone should start
// with "members_gone" (MembersGoneError's message does); that of kWorkerStopping is
// kWorkerStoppingReason.
void SetJobFailure(v1::FailJobRequest& request, JobFailure failure, std::string reason);

// `failure` when set to a known value; for an old worker: a retryable kWorkerStoppingReason
// is kWorkerStopping, a reason containing "members_gone" kMembersGone, else `retryable`.
JobFailure JobFailureOf(const v1::FailJobRequest& request);

}  // namespace steadyeval

#endif  // STEADYEVAL_API_JOB_FAILURE_PROTO_H_
