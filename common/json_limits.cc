#include "common/json_limits.h"

#include "absl/strings/str_cat.h"

namespace steadyeval {

absl::Status CheckJsonNesting(absl::string_view what, absl::string_view text, size_t max_depth) {
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": JSON nested deeper than ", max_depth, " levels (at byte ", i,
            "); a real file nests a few levels, so this one is corrupt or not what it claims"));
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return absl::OkStatus();
}

}  // namespace steadyeval
