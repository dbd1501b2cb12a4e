// gMock matchers for absl::Status / absl::StatusOr (Abseil 20220623 ships none).
//   EXPECT_THAT(DoIt(), IsOk());
//   EXPECT_THAT(DoIt(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 3")));
#ifndef STEADYEVAL_TESTING_STATUS_MATCHERS_H_
#define STEADYEVAL_TESTING_STATUS_MATCHERS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/status.h"
#include "gmock/gmock.h"

namespace steadyeval::testing {
namespace internal_status {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) { return s.status(); }

}  // namespace internal_status

MATCHER(IsOk, "is OK") {
  const absl::Status& s = internal_status::GetStatus(arg);
  if (!s.ok()) *result_listener << "status is " << s;
  return s.ok();
}

MATCHER_P2(StatusIs, code, message_matcher,
           "has code " + std::string(absl::StatusCodeToString(code))) {
  const absl::Status& s = internal_status::GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code &&
         ::testing::Matches(::testing::Matcher<std::string>(message_matcher))(
             std::string(s.message()));
}

}  // namespace steadyeval::testing

#define ASSERT_OK(expr) ASSERT_THAT((expr), ::steadyeval::testing::IsOk())
#define EXPECT_OK(expr) EXPECT_THAT((expr), ::steadyeval::testing::IsOk())

// Asserts `expr` (a StatusOr) is OK and moves its value into `lhs` (a declaration or an
// lvalue): ASSERT_OK_AND_ASSIGN(Task task, ParseTask(...));
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(STEADYEVAL_CONCAT_(steadyeval_assert_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                               \
  ASSERT_OK(statusor);                                  \
  lhs = std::move(statusor).value()

#endif  // STEADYEVAL_TESTING_STATUS_MATCHERS_H_
