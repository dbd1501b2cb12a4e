// Prompts for generation tasks, llm-jp-eval's template (DESIGN §7), no chat template.
//
// Japanese (default):
//   以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。
//   \n\n### 指示:\n{instruction}
//   then per few-shot example  \n\n### 入力:\n{input}\n\n### 応答:\n{output}
//   then for the sample        \n\n### 入力:\n{input}\n\n### 応答:\n
// English: the same structure with the header "Below is an instruction that describes a
// task, paired with an input that provides further context. Write a response that
// appropriately completes the request." and the markers "### Instruction:", "### Input:",
// "### Response:".
//
// Prompt = prefix (header + instruction + K few-shot examples, identical for every sample
// of a task) + suffix (the sample's input and the response cue). Thread-safe.
#ifndef STEADYEVAL_COMMON_PROMPT_H_
#define STEADYEVAL_COMMON_PROMPT_H_

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "common/task.h"

namespace steadyeval {

enum class PromptLanguage { kJapanese, kEnglish };

// "ja" / "en" (empty = "ja"); nullopt for anything else.
std::optional<PromptLanguage> ParsePromptLanguage(absl::string_view name);
absl::string_view PromptLanguageName(PromptLanguage language);

// Whether prompts (and multiple-choice contexts) start with a BOS token: as the
// checkpoint's tokenizer_config.json / config.json say (auto), always, or never. A run
// records its choice, and each job how the worker applied it (DESIGN §7).
enum class BosMode { kAuto, kAdd, kNone };
// "auto" / "add" / "none" (empty = "auto"); nullopt otherwise.
std::optional<BosMode> ParseBosMode(absl::string_view name);

struct PromptOptions {
  int few_shots = 4;  // K; fewer are used when the task has fewer
  PromptLanguage language = PromptLanguage::kJapanese;
};

// The part shared by all samples of `task`.
std::string PromptPrefix(const Task& task, const PromptOptions& options);
// The part specific to sample `index`.
std::string PromptSuffix(const Task& task, size_t index, const PromptOptions& options);
// PromptPrefix + PromptSuffix.
std::string BuildPrompt(const Task& task, size_t index, const PromptOptions& options);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_PROMPT_H_
