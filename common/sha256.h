// SHA-256 of a byte string as lowercase hex (task identities, tokenizer pins).
#ifndef STEADYEVAL_COMMON_SHA256_H_
#define STEADYEVAL_COMMON_SHA256_H_

#include <string>
#include "absl/strings/string_view.h"

namespace steadyeval {

std::string Sha256Hex(absl::string_view data);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_SHA256_H_
