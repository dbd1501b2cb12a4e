// Evaluation tasks: parsing and validating task files (DESIGN §2, §7).
//
// Two formats:
//   - multiple choice, JSONL (`.jsonl`): one object per line,
//     {"id": str|int, "query"|"context": str, "choices": [str, ...], "gold": k};
//     scored by log-likelihood, output = chosen option index, metric `acc`;
//   - generation, llm-jp-eval evaluation JSON (`.json`):
//     {"instruction", "output_length", "metrics": [...], "few_shots": [{"input","output"}],
//      "samples": [{"input","output"}]}.
// A task's identity is its name (file stem) plus the sha256 of its content.
// Errors name the file and, for JSONL, the line. Thread-safe (pure functions).
#ifndef STEADYEVAL_COMMON_TASK_H_
#define STEADYEVAL_COMMON_TASK_H_

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace steadyeval {

enum class TaskKind { kMultipleChoice, kGeneration };

struct GenerationSample {
  std::string input;
  std::string output;
};

struct ChoiceExample {
  std::string id;
  std::string query;
  std::vector<std::string> choices;
  int gold = 0;
};

struct Task {
  std::string name;      // file stem, e.g. "jcommonsenseqa" for jcommonsenseqa.jsonl
  std::string filename;  // as given
  std::string sha256;    // hex of the content
  TaskKind kind = TaskKind::kGeneration;

  // Generation tasks.
  std::string instruction;
  int output_length = 0;
  std::vector<std::string> metrics;
  std::vector<GenerationSample> few_shots;
  std::vector<GenerationSample> samples;

  // Multiple-choice tasks.
  std::vector<ChoiceExample> choice_examples;

  size_t size() const {
    return kind == TaskKind::kGeneration ? samples.size() : choice_examples.size();
  }
  // The metric whose per-example value is the task score: the first listed, `acc` for
  // multiple choice.
  std::string primary_metric() const;
};

// Parses `content` of the file named `filename`. The kind comes from the extension
// (`.jsonl` multiple choice, `.json` generation). INVALID_ARGUMENT with file (and line)
// for malformed input; an empty task is an error too.
absl::StatusOr<Task> ParseTask(absl::string_view filename, absl::string_view content);

// The task name for a file name: its base name without directories and extension.
std::string TaskNameFromFilename(absl::string_view filename);

absl::string_view TaskKindName(TaskKind kind);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_TASK_H_
