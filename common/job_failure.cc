#include "common/job_failure.h"

#include <optional>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace steadyeval {
namespace {

// The payload's type URL and its values: the name of the reason.
constexpr absl::string_view kPayloadUrl = "steadyeval/JobFailure";

constexpr JobFailure kAllFailures[] = {JobFailure::kRetryable, JobFailure::kPermanent,
                                       JobFailure::kMembersGone, JobFailure::kWorkerStopping,
                                       JobFailure::kLeaseExpired};

std::optional<JobFailure> PayloadOf(const absl::Status& status) {
  auto payload = status.GetPayload(kPayloadUrl);  // absl::optional<absl::Cord>
  if (!payload.has_value()) return std::nullopt;
  for (JobFailure f : kAllFailures) {
    if (*payload == JobFailureName(f)) return f;
  }
  return std::nullopt;
}

}  // namespace

bool IsRetryable(JobFailure failure) {
  switch (failure) {
    case JobFailure::kPermanent:
    case JobFailure::kMembersGone:
      return false;
    case JobFailure::kRetryable:
    case JobFailure::kWorkerStopping:
    case JobFailure::kLeaseExpired:
      return true;
  }
  return true;
}

absl::string_view JobFailureName(JobFailure failure) {
  switch (failure) {
    case JobFailure::kRetryable: return "retryable";
    case JobFailure::kPermanent: return "permanent";
    case JobFailure::kMembersGone: return "members_gone";
    case JobFailure::kWorkerStopping: return "worker_stopping";
    case JobFailure::kLeaseExpired: return "lease_expired";
  }
  return "retryable";
}

absl::Status WithJobFailure(absl::Status status, JobFailure failure) {
  if (!status.ok()) status.SetPayload(kPayloadUrl, absl::Cord(JobFailureName(failure)));
  return status;
}

absl::Status MembersGoneError(absl::string_view what) {
  return WithJobFailure(absl::NotFoundError(absl::StrCat("members_gone: ", what)),
                        JobFailure::kMembersGone);
}

JobFailure JobFailureOf(const absl::Status& status) {
  if (std::optional<JobFailure> carried = PayloadOf(status)) return *carried;
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kUnimplemented:
      return JobFailure::kPermanent;
    default:
      return JobFailure::kRetryable;
  }
}

}  // namespace steadyeval
