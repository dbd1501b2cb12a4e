#include "api/job_failure_proto.h"

#include "api/protocol.h"
#include "gtest/gtest.h"

namespace steadyeval {
namespace {

TEST(JobFailureProtoTest, WorkersFillTheTypedAndTheOldFieldsAlike) {
  const struct {
    JobFailure failure;
    v1::JobFailure proto;
    bool retryable;
  } kCases[] = {
      {JobFailure::kRetryable, v1::JOB_FAILURE_RETRYABLE, true},
      {JobFailure::kPermanent, v1::JOB_FAILURE_PERMANENT, false},
      {JobFailure::kMembersGone, v1::JOB_FAILURE_MEMBERS_GONE, false},
      {JobFailure::kWorkerStopping, v1::JOB_FAILURE_WORKER_STOPPING, true},
  };
  for (const auto& c : kCases) {
    v1::FailJobRequest request;
    SetJobFailure(request, c.failure, "why");
    EXPECT_EQ(request.failure(), c.proto) << JobFailureName(c.failure);
    EXPECT_EQ(request.retryable(), c.retryable) << JobFailureName(c.failure);
    EXPECT_EQ(request.reason(), "why");
    EXPECT_EQ(JobFailureOf(request), c.failure) << JobFailureName(c.failure);
  }
}

TEST(JobFailureProtoTest, TheTypedReasonWinsOverTheText) {
  v1::FailJobRequest request;
  SetJobFailure(request, JobFailure::kRetryable, "disk said members_gone once");
  EXPECT_EQ(JobFailureOf(request), JobFailure::kRetryable);
}

TEST(JobFailureProtoTest, AnOldWorkersRequestIsReadFromRetryableAndItsReason) {
  v1::FailJobRequest request;  // failure unset
  request.set_retryable(true);
  request.set_reason("members_gone: /ckpt/r/step_100 no longer exists");
  EXPECT_EQ(JobFailureOf(request), JobFailure::kMembersGone);
  request.set_reason(kWorkerStoppingReason);
  EXPECT_EQ(JobFailureOf(request), JobFailure::kWorkerStopping);
  request.set_retryable(false);  // "worker stopping" only hands back when retryable
  EXPECT_EQ(JobFailureOf(request), JobFailure::kPermanent);
  request.set_reason("out of memory");
  request.set_retryable(true);
  EXPECT_EQ(JobFailureOf(request), JobFailure::kRetryable);
  request.set_failure(static_cast<v1::JobFailure>(99));  // newer than this coordinator
  EXPECT_EQ(JobFailureOf(request), JobFailure::kRetryable);
}

}  // namespace
}  // namespace steadyeval
