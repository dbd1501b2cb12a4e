// The names of variants and job kinds (DESIGN §2, §3): one parser, one printer.
//
// A variant names one sequence of values of a (run, task):
//   raw           each checkpoint as trained
//   avg@n         the uniform parameter average of the window of n admitted checkpoints
//   ens@n         the majority vote of the window's raw outputs
//   ens-soft@n    the mean of the window's option likelihoods (multiple choice only)
// with 2 <= n <= kMaxWindowSize. A job kind is the subset a worker computes: raw or avg@n.
//
// Only the canonical spelling parses: lower case, no spaces, no sign, no leading zeros
// (`avg@02`, `avg@+2`, `AVG@2`, `avg@ 2` are refused), so ToString(ParseVariant(s)) == s
// for every s that parses and stored keys never hold two spellings of one variant. The
// proto form (v1::VariantSpec) is converted in api/variant_proto.h. Pure functions.
#ifndef STEADYEVAL_COMMON_VARIANT_H_
#define STEADYEVAL_COMMON_VARIANT_H_

#include <cstdint>
#include <string>
#include <tuple>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace steadyeval {

struct Variant {
  enum class Kind { kRaw = 0, kAverage = 1, kEnsemble = 2, kSoftEnsemble = 3 };
  Kind kind = Kind::kRaw;
  uint32_t window = 0;  // n; 0 for raw

  static Variant Raw() { return {}; }
  static Variant Average(uint32_t n) { return {Kind::kAverage, n}; }
  static Variant Ensemble(uint32_t n) { return {Kind::kEnsemble, n}; }
  static Variant SoftEnsemble(uint32_t n) { return {Kind::kSoftEnsemble, n}; }

  bool is_raw() const { return kind == Kind::kRaw; }
  // Table order: raw, avg@n…, ens@n…, ens-soft@n…, each by n.
  bool operator<(const Variant& o) const {
    return std::tie(kind, window) < std::tie(o.kind, o.window);
  }
  bool operator==(const Variant& o) const { return kind == o.kind && window == o.window; }
  bool operator!=(const Variant& o) const { return !(*this == o); }
};

// "raw", "avg@n", "ens@n" or "ens-soft@n".
std::string ToString(const Variant& variant);

// INVALID_ARGUMENT, naming `text` and the accepted forms, for anything but the canonical
// spelling of a variant with 2 <= n <= kMaxWindowSize.
absl::StatusOr<Variant> ParseVariant(absl::string_view text);

// OK when `variant` is well formed (a window in 2..kMaxWindowSize, raw's window 0): what
// ParseVariant guarantees, for variants built another way (e.g. from a proto).
absl::Status CheckVariant(const Variant& variant);

// The kind of a job: raw (one checkpoint) or avg@n (the average of a window of n). The
// ensembles are computed by the coordinator from raw values and are never jobs.
class JobKind {
 public:
  static JobKind Raw() { return JobKind(0); }
  // n in 2..kMaxWindowSize (not checked here; ParseJobKind checks).
  static JobKind Average(uint32_t n) { return JobKind(n); }

  bool is_raw() const { return window_ == 0; }
  uint32_t window() const { return window_; }  // n of avg@n; 0 for raw
  Variant variant() const { return is_raw() ? Variant::Raw() : Variant::Average(window_); }

  // Scheduling order: raw first, then avg@n by n.
  bool operator<(const JobKind& o) const { return window_ < o.window_; }
  bool operator==(const JobKind& o) const { return window_ == o.window_; }
  bool operator!=(const JobKind& o) const { return window_ != o.window_; }

 private:
  explicit JobKind(uint32_t window) : window_(window) {}
  uint32_t window_;
};

std::string ToString(JobKind kind);

// The job kind `variant` names; INVALID_ARGUMENT for ens@n / ens-soft@n.
absl::StatusOr<JobKind> JobKindOf(const Variant& variant);
// ParseVariant, then JobKindOf: "raw" or "avg@n" in canonical spelling.
absl::StatusOr<JobKind> ParseJobKind(absl::string_view text);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_VARIANT_H_
