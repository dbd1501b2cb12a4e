#include "common/steps.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace steadyeval {

const std::vector<std::string>& StepParser::DefaultPatterns() {
  static const auto* patterns = new std::vector<std::string>{
      R"(step[_-]?(\d+))",        // step_000100, step-100, step100
      R"(iter_(\d+))",            // Megatron iter_0000100
      R"(checkpoint-(\d+))",      // HF Trainer
      R"(global_step(\d+))",      // DeepSpeed
  };
  return *patterns;
}

absl::StatusOr<std::unique_ptr<StepParser>> StepParser::Create(const std::string& pattern) {
  std::vector<std::string> sources =
      pattern.empty() ? DefaultPatterns() : std::vector<std::string>{pattern};
  std::vector<std::regex> compiled;
  for (const std::string& source : sources) {
    try {
      std::regex re(source, std::regex::ECMAScript);
      if (re.mark_count() != 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "step pattern '", source, "' has ", re.mark_count(),
            " capture groups; it needs exactly one, around the step digits, e.g. 'ckpt_(\\d+)'"));
      }
      compiled.push_back(std::move(re));
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("step pattern '", source, "' is not a valid regex: ", e.what()));
    }
  }
  return std::unique_ptr<StepParser>(new StepParser(std::move(compiled)));
}

std::optional<uint64_t> StepParser::Parse(absl::string_view name) const {
  std::string s(name);
  for (const std::regex& re : patterns_) {
    std::smatch m;
    if (!std::regex_match(s, m, re)) continue;
    std::string digits = m[1].str();
    if (digits.empty()) continue;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
    }
    uint64_t step = 0;
    if (!absl::SimpleAtoi(digits, &step)) return std::nullopt;
    return step;
  }
  return std::nullopt;
}

}  // namespace steadyeval
