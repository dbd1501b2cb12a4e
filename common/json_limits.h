// A bound on the nesting of the JSON files steadyeval reads from checkpoint folders
// (config.json, tokenizer.json, tokenizer_config.json).
//
// nlohmann::json parses and destroys any depth without recursion, but copying, comparing
// and dumping a document recurse once per level, as does walking a tokenizer's nested
// `Sequence`s: a hostile or corrupt file nested a million levels deep would overflow the
// stack there. Real files nest a handful of levels. Thread-safe (pure function).
#ifndef STEADYEVAL_COMMON_JSON_LIMITS_H_
#define STEADYEVAL_COMMON_JSON_LIMITS_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace steadyeval {

// Deepest nesting of arrays and objects accepted.
inline constexpr size_t kMaxJsonNesting = 64;

// OK when no array or object in `text` is nested deeper than `max_depth` levels (brackets
// inside strings do not count; the text need not be valid JSON: the parser says so later).
// INVALID_ARGUMENT "<what>: JSON nested deeper than N levels (at byte B) ..." otherwise.
absl::Status CheckJsonNesting(absl::string_view what, absl::string_view text,
                              size_t max_depth = kMaxJsonNesting);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_JSON_LIMITS_H_
