#include "common/job_failure.h"

#include "common/status.h"
#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval {
namespace {

using ::testing::HasSubstr;
using ::steadyeval::testing::StatusIs;

TEST(JobFailureTest, PermanentCodesAreThoseAnotherWorkerCannotFix) {
  for (absl::Status s : {absl::NotFoundError("x"), absl::InvalidArgumentError("x"),
                         absl::FailedPreconditionError("x"), absl::DataLossError("x"),
                         absl::UnimplementedError("x")}) {
    EXPECT_EQ(JobFailureOf(s), JobFailure::kPermanent) << s;
  }
  for (absl::Status s : {absl::UnavailableError("x"), absl::InternalError("x"),
                         absl::ResourceExhaustedError("x"), absl::DeadlineExceededError("x"),
                         absl::UnknownError("x")}) {
    EXPECT_EQ(JobFailureOf(s), JobFailure::kRetryable) << s;
  }
}

TEST(JobFailureTest, MembersGoneIsCarriedByTheStatusNotItsText) {
  const absl::Status gone = MembersGoneError("window member /ckpt/step_100 no longer exists");
  EXPECT_THAT(gone, StatusIs(absl::StatusCode::kNotFound,
                             HasSubstr("members_gone: window member /ckpt/step_100")));
  EXPECT_EQ(JobFailureOf(gone), JobFailure::kMembersGone);
  // The text alone is not the signal any more: a NOT_FOUND that merely mentions it is
  // an ordinary permanent failure.
  EXPECT_EQ(JobFailureOf(absl::NotFoundError("members_gone: x")), JobFailure::kPermanent);
  // Context added on the way up keeps the reason.
  EXPECT_EQ(JobFailureOf(Annotate(gone, "loading avg@2")), JobFailure::kMembersGone);
}

TEST(JobFailureTest, AReasonOverridesTheCode) {
  EXPECT_EQ(JobFailureOf(WithJobFailure(absl::NotFoundError("x"), JobFailure::kRetryable)),
            JobFailure::kRetryable);
  EXPECT_EQ(JobFailureOf(WithJobFailure(absl::UnavailableError("x"), JobFailure::kPermanent)),
            JobFailure::kPermanent);
  EXPECT_TRUE(WithJobFailure(absl::OkStatus(), JobFailure::kPermanent).ok());
}

TEST(JobFailureTest, OnlyPermanentReasonsEndTheJob) {
  EXPECT_FALSE(IsRetryable(JobFailure::kPermanent));
  EXPECT_FALSE(IsRetryable(JobFailure::kMembersGone));
  EXPECT_TRUE(IsRetryable(JobFailure::kRetryable));
  EXPECT_TRUE(IsRetryable(JobFailure::kWorkerStopping));
  EXPECT_TRUE(IsRetryable(JobFailure::kLeaseExpired));
}

}  // namespace
}  // namespace steadyeval
