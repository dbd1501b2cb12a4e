// Status helpers shared by every steadyeval module.
//
// Abseil 20220623 (Debian 12) has no status_macros.h, so the two macros every module
// needs live here. Both evaluate their argument exactly once.
#ifndef STEADYEVAL_COMMON_STATUS_H_
#define STEADYEVAL_COMMON_STATUS_H_

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

#define STEADYEVAL_CONCAT_INNER_(a, b) a##b
#define STEADYEVAL_CONCAT_(a, b) STEADYEVAL_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                                  \
  do {                                                         \
    ::absl::Status steadyeval_status_ = (expr);                \
    if (!steadyeval_status_.ok()) return steadyeval_status_;   \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns `x` from an absl::StatusOr or
// returns its error status from the enclosing function.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL_(STEADYEVAL_CONCAT_(steadyeval_statusor_, __LINE__), lhs, rexpr)

#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                           \
  if (!statusor.ok()) return statusor.status();      \
  lhs = std::move(statusor).value()

namespace steadyeval {

// Prefixes a non-OK status's message with `context` ("context: message"), keeping its code
// and payloads (e.g. a JobFailure, common/job_failure.h).
inline absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  absl::Status annotated(status.code(), absl::StrCat(context, ": ", status.message()));
  status.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) {
    annotated.SetPayload(url, payload);
  });
  return annotated;
}

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_STATUS_H_
