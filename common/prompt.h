// Prompts for generation tasks, llm-jp-eval's template (DESIGN §7), no chat template.
//
// Prompt = prefix (header + instruction + K few-shot examples, identical for every sample
// of a task) + suffix (the sample's input and the response cue). Thread-safe.
#ifndef STEADYEVAL_COMMON_PROMPT_H_
#define STEADYEVAL_COMMON_PROMPT_H_

#include <string>

#include "common/task.h"

namespace steadyeval {

struct PromptOptions {
  int few_shots = 4;  // K; fewer are used when the task has fewer
};

// The part shared by all samples of `task`.
std::string PromptPrefix(const Task& task, const PromptOptions& options);
// The part specific to sample `index`.
std::string PromptSuffix(const Task& task, size_t index);
// PromptPrefix + PromptSuffix.
std::string BuildPrompt(const Task& task, size_t index, const PromptOptions& options);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_PROMPT_H_
