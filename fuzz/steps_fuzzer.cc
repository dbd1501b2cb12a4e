// Step parsing from checkpoint folder names (common/steps.h): a user's pattern and the
// names it is matched against.
//
// Input: the pattern, a newline, then one name per line. A pattern that does not compile
// must be refused with an error; the default patterns also parse every name.
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/str_split.h"
#include "common/steps.h"
#include "fuzz/fuzz_util.h"

using namespace steadyeval;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view in = fuzz::AsView(data, size);
  const size_t newline = in.find('\n');
  const std::string pattern(in.substr(0, newline));
  const absl::string_view names =
      newline == absl::string_view::npos ? absl::string_view() : in.substr(newline + 1);

  static const std::unique_ptr<StepParser> defaults = std::move(*StepParser::Create(""));
  auto custom = StepParser::Create(pattern);
  for (absl::string_view name : absl::StrSplit(names, '\n')) {
    (void)defaults->Parse(name);
    if (custom.ok()) (void)(*custom)->Parse(name);
  }
  return 0;
}
