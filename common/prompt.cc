#include "common/prompt.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace steadyeval {
namespace {

constexpr char kHeaderJa[] =
    "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。"
    "要求を適切に満たす応答を書きなさい。";

}  // namespace

std::string PromptPrefix(const Task& task, const PromptOptions& options) {
  std::string out = absl::StrCat(kHeaderJa, "\n\n### 指示:\n", task.instruction);
  size_t shots = std::min<size_t>(std::max(options.few_shots, 0), task.few_shots.size());
  for (size_t i = 0; i < shots; ++i) {
    absl::StrAppend(&out, "\n\n### 入力:\n", task.few_shots[i].input, "\n\n### 応答:\n",
                    task.few_shots[i].output);
  }
  return out;
}

std::string PromptSuffix(const Task& task, size_t index) {
  return absl::StrCat("\n\n### 入力:\n", task.samples.at(index).input, "\n\n### 応答:\n");
}

std::string BuildPrompt(const Task& task, size_t index, const PromptOptions& options) {
  return PromptPrefix(task, options) + PromptSuffix(task, index);
}

}  // namespace steadyeval
