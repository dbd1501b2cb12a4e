// Text post-processing shared by scoring and the worker, and the coordinator's keys for
// messages that differ only in numbers.
#ifndef STEADYEVAL_COMMON_TEXT_H_
#define STEADYEVAL_COMMON_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include "absl/strings/string_view.h"

namespace steadyeval {

// Unicode NFKC through ICU. Invalid UTF-8 is replaced (U+FFFD) rather than failing.
std::string NormalizeNfkc(absl::string_view text);

// llm-jp-eval's answer extraction: the text before the first "\n\n", NFKC, then
// str.strip() (in that order: NFKC can create edge whitespace).
std::string NormalizeGenerated(absl::string_view text);

// Whitespace stripped from both ends as Python's str.strip() does (IsPythonSpace).
std::string StripUnicode(absl::string_view text);

// Python's str.isspace() for one code point.
bool IsPythonSpace(uint32_t code_point);

// lm-evaluation-harness's split of (context, continuation): trailing whitespace of the
// context (str.isspace() characters) moves to the start of the continuation.
std::pair<std::string, std::string> MoveTrailingWhitespace(const std::string& context,
                                                           const std::string& continuation);

// Number of code points in UTF-8 `text` (a malformed byte counts as one).
size_t CodePointCount(absl::string_view text);

// `text` with every run of ASCII digits replaced by one '#': messages that differ only in
// numbers (a growing size, a ticking clock, an attempt count) get one key.
std::string BlankDigits(absl::string_view text);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_TEXT_H_
