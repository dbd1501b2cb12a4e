#include "common/prompt.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace steadyeval {
namespace {

struct Template {
  const char* header;
  const char* instruction;  // marker lines, each preceded by a blank line
  const char* input;
  const char* response;
};

constexpr Template kJapanese = {
    "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。"
    "要求を適切に満たす応答を書きなさい。",
    "\n\n### 指示:\n", "\n\n### 入力:\n", "\n\n### 応答:\n"};

constexpr Template kEnglish = {
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.",
    "\n\n### Instruction:\n", "\n\n### Input:\n", "\n\n### Response:\n"};

const Template& TemplateFor(PromptLanguage language) {
  return language == PromptLanguage::kEnglish ? kEnglish : kJapanese;
}

}  // namespace

std::optional<PromptLanguage> ParsePromptLanguage(absl::string_view name) {
  if (name.empty() || name == "ja") return PromptLanguage::kJapanese;
  if (name == "en") return PromptLanguage::kEnglish;
  return std::nullopt;
}

std::optional<BosMode> ParseBosMode(absl::string_view name) {
  if (name.empty() || name == "auto") return BosMode::kAuto;
  if (name == "add") return BosMode::kAdd;
  if (name == "none") return BosMode::kNone;
  return std::nullopt;
}

absl::string_view PromptLanguageName(PromptLanguage language) {
  return language == PromptLanguage::kEnglish ? "en" : "ja";
}

std::string PromptPrefix(const Task& task, const PromptOptions& options) {
  const Template& t = TemplateFor(options.language);
  std::string out = absl::StrCat(t.header, t.instruction, task.instruction);
  size_t shots = std::min<size_t>(std::max(options.few_shots, 0), task.few_shots.size());
  for (size_t i = 0; i < shots; ++i) {
    absl::StrAppend(&out, t.input, task.few_shots[i].input, t.response, task.few_shots[i].output);
  }
  return out;
}

std::string PromptSuffix(const Task& task, size_t index, const PromptOptions& options) {
  const Template& t = TemplateFor(options.language);
  return absl::StrCat(t.input, task.samples.at(index).input, t.response);
}

std::string BuildPrompt(const Task& task, size_t index, const PromptOptions& options) {
  return PromptPrefix(task, options) + PromptSuffix(task, index, options);
}

}  // namespace steadyeval
