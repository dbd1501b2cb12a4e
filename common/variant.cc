#include "common/variant.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/limits.h"
#include "common/status.h"

namespace steadyeval {
namespace {

// The windowed kinds by spelling. "ens-soft@" before "ens@" does not matter: every prefix
// ends in '@', so no prefix is a prefix of another.
constexpr std::pair<absl::string_view, Variant::Kind> kWindowedPrefixes[] = {
    {"avg@", Variant::Kind::kAverage},
    {"ens@", Variant::Kind::kEnsemble},
    {"ens-soft@", Variant::Kind::kSoftEnsemble},
};

std::string AcceptedForms() {
  return absl::StrCat("raw, avg@n, ens@n or ens-soft@n with n a whole number in 2..",
                      kMaxWindowSize, " written without leading zeros");
}

// A window size in canonical decimal: digits only, no leading zero, 2..kMaxWindowSize.
bool ParseWindowSize(absl::string_view digits, uint32_t* n) {
  if (digits.empty() || digits.size() > 10 || digits[0] == '0') return false;
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  return absl::SimpleAtoi(digits, n) && *n >= 2 && *n <= kMaxWindowSize;
}

}  // namespace

std::string ToString(const Variant& variant) {
  for (const auto& [prefix, kind] : kWindowedPrefixes) {
    if (kind == variant.kind) return absl::StrCat(prefix, variant.window);
  }
  return "raw";
}

absl::StatusOr<Variant> ParseVariant(absl::string_view text) {
  if (text == "raw") return Variant::Raw();
  for (const auto& [prefix, kind] : kWindowedPrefixes) {
    uint32_t n = 0;
    if (absl::StartsWith(text, prefix) && ParseWindowSize(text.substr(prefix.size()), &n)) {
      return Variant{kind, n};
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("variant '", text, "' is not one of ", AcceptedForms()));
}

absl::Status CheckVariant(const Variant& variant) {
  const bool known = variant.kind == Variant::Kind::kRaw ||
                     std::any_of(std::begin(kWindowedPrefixes), std::end(kWindowedPrefixes),
                                 [&](const auto& p) { return p.second == variant.kind; });
  if (!known) {
    return absl::InvalidArgumentError(absl::StrCat("variant kind ", static_cast<int>(variant.kind),
                                                   " is unknown; use ", AcceptedForms()));
  }
  const bool window_ok = variant.is_raw()
                             ? variant.window == 0
                             : variant.window >= 2 && variant.window <= kMaxWindowSize;
  if (window_ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("variant ", ToString(variant), " (window ",
                                                 variant.window, ") is not one of ",
                                                 AcceptedForms()));
}

std::string ToString(JobKind kind) { return ToString(kind.variant()); }

absl::StatusOr<JobKind> JobKindOf(const Variant& variant) {
  RETURN_IF_ERROR(CheckVariant(variant));
  switch (variant.kind) {
    case Variant::Kind::kRaw: return JobKind::Raw();
    case Variant::Kind::kAverage: return JobKind::Average(variant.window);
    default: break;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "job kind '", ToString(variant), "' is not raw or avg@n (ens@n and ens-soft@n are "
      "computed by the coordinator, never by a job)"));
}

absl::StatusOr<JobKind> ParseJobKind(absl::string_view text) {
  absl::StatusOr<Variant> variant = ParseVariant(text);
  if (!variant.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job kind '", text, "' is not raw or avg@n with n a whole number in 2..",
        kMaxWindowSize, " written without leading zeros"));
  }
  return JobKindOf(*variant);
}

}  // namespace steadyeval
