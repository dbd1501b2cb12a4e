// The one boundary between libtorch's exceptions and steadyeval's absl::Status.
//
// Every worker function that calls into libtorch runs its torch code through
// GuardTorch(), which turns c10::Error (and any other std::exception) into INTERNAL with
// `what` as context. Thread-safe.
#ifndef STEADYEVAL_WORKER_TORCH_STATUS_H_
#define STEADYEVAL_WORKER_TORCH_STATUS_H_

#include <exception>
#include <utility>

#include <c10/util/Exception.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace steadyeval {

// Runs `fn` (returning absl::Status or absl::StatusOr<T>) and converts exceptions.
template <typename Fn>
auto GuardTorch(absl::string_view what, Fn&& fn) -> decltype(fn()) {
  try {
    return std::forward<Fn>(fn)();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": libtorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_TORCH_STATUS_H_
