#include "common/steps.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/limits.h"
#include "common/text_escape.h"
#include "re2/re2.h"

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

StepParser::StepParser(std::vector<std::unique_ptr<re2::RE2>> patterns)
    : patterns_(std::move(patterns)) {}
StepParser::~StepParser() = default;

absl::StatusOr<std::unique_ptr<StepParser>> StepParser::Create(const std::string& pattern) {
  std::vector<std::string> sources =
      pattern.empty() ? DefaultPatterns() : std::vector<std::string>{pattern};
  std::vector<std::unique_ptr<re2::RE2>> compiled;
  for (const std::string& source : sources) {
    if (source.size() > kMaxPatternBytes) {
      return absl::InvalidArgumentError(absl::StrCat("step pattern is ", source.size(),
                                                     " bytes; at most ", kMaxPatternBytes,
                                                     " are accepted"));
    }
    re2::RE2::Options options;
    options.set_log_errors(false);
    options.set_max_mem(kMaxPatternProgramBytes);  // a huge repetition fails to compile
    auto re = std::make_unique<re2::RE2>(source, options);
    if (!re->ok()) {
      return absl::InvalidArgumentError(absl::StrCat("step pattern '", Printable(source, 200),
                                                     "' is not a valid regex: ", re->error()));
    }
    if (re->NumberOfCapturingGroups() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "step pattern '", Printable(source, 200), "' has ", re->NumberOfCapturingGroups(),
          " capture groups; it needs exactly one, around the step digits, e.g. 'ckpt_(\\d+)'"));
    }
    compiled.push_back(std::move(re));
  }
  return std::unique_ptr<StepParser>(new StepParser(std::move(compiled)));
}

std::optional<uint64_t> StepParser::Parse(absl::string_view name) const {
  const re2::StringPiece text(name.data(), name.size());
  for (const auto& re : patterns_) {
    std::string digits;
    if (!re2::RE2::FullMatch(text, *re, &digits)) continue;
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
