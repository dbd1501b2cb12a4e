// Text from outside (worker names, paths, reasons, user input echoed in errors) made safe
// to print on a terminal or in a log line: control characters (C0, DEL, and the C1 range
// U+0080..U+009F) are escaped as \xNN / \u{NN}, invalid UTF-8 bytes as \xNN, and long
// text is cut at `max_bytes` with "…(N bytes)" so an error never echoes megabytes back.
#ifndef STEADYEVAL_COMMON_TEXT_ESCAPE_H_
#define STEADYEVAL_COMMON_TEXT_ESCAPE_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace steadyeval {

// `max_bytes` bounds the input consumed (0 = no bound), not the escaped output.
std::string Printable(absl::string_view text, size_t max_bytes = 0);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_TEXT_ESCAPE_H_
