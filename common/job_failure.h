// Why an attempt at a job ended without results (DESIGN §5): one enum from the error
// that a worker's backend returns, through FailJobRequest.failure (v1::JobFailure, converted
// in api/job_failure_proto.h), to the scheduler's retry decision and the coordinator's
// attempt-failure counts.
//
// An error carries its reason as a status payload (WithJobFailure) where the status code
// alone would not tell it, e.g. a window member rotated away (MembersGoneError); otherwise
// JobFailureOf derives it from the code. Pure functions.
#ifndef STEADYEVAL_COMMON_JOB_FAILURE_H_
#define STEADYEVAL_COMMON_JOB_FAILURE_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace steadyeval {

enum class JobFailure {
  // Another attempt may succeed (I/O error, out of memory, the coordinator unreachable):
  // the job goes back to PENDING after a backoff while attempts are left.
  kRetryable,
  // No attempt can succeed (a malformed or partial checkpoint, an unknown job kind): FAILED.
  kPermanent,
  // A window member's folder no longer exists (trainers rotate checkpoints): FAILED, the
  // window never comes back.
  kMembersGone,
  // A stopping worker handed the lease back: PENDING at once, the attempt given back.
  kWorkerStopping,
  // The holder stopped heartbeating (coordinator side only; never sent by a worker):
  // retried like kRetryable.
  kLeaseExpired,
};

// Whether the job may be leased again (kRetryable, kWorkerStopping, kLeaseExpired).
bool IsRetryable(JobFailure failure);

// "retryable", "permanent", "members_gone", "worker_stopping", "lease_expired".
absl::string_view JobFailureName(JobFailure failure);

// `status` (not OK) carrying `failure` as its payload.
absl::Status WithJobFailure(absl::Status status, JobFailure failure);

// NOT_FOUND "members_gone: <what>" carrying kMembersGone. The message keeps the
// "members_gone" prefix: coordinators before the typed reason look for that substring.
absl::Status MembersGoneError(absl::string_view what);

// The reason `status` (not OK) carries, else by code: NOT_FOUND, INVALID_ARGUMENT,
// FAILED_PRECONDITION, DATA_LOSS and UNIMPLEMENTED (a missing, malformed or partial
// checkpoint; a job this worker cannot run) are kPermanent, every other code kRetryable.
JobFailure JobFailureOf(const absl::Status& status);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_JOB_FAILURE_H_
