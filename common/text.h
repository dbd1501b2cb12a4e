// Text post-processing shared by scoring and the worker.
#ifndef STEADYEVAL_COMMON_TEXT_H_
#define STEADYEVAL_COMMON_TEXT_H_

#include <string>
#include "absl/strings/string_view.h"

namespace steadyeval {

// Unicode NFKC through ICU. Invalid UTF-8 is replaced (U+FFFD) rather than failing.
std::string NormalizeNfkc(absl::string_view text);

// llm-jp-eval's answer extraction: the text before the first "\n\n", whitespace-stripped,
// then NFKC.
std::string NormalizeGenerated(absl::string_view text);

// Unicode whitespace-stripped both ends (Python's str.strip()).
std::string StripUnicode(absl::string_view text);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_TEXT_H_
