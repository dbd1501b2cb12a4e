// Evaluation tasks: parsing and validating task files (DESIGN §2, §7).
//
// Two formats:
//   - multiple choice, JSONL (`.jsonl`): one object per line,
//     {"id": str|int, "query"|"context": str, "choices": [str, ...], "gold": k};
//     scored by log-likelihood; metrics `acc` (default) and `acc_norm`;
//   - generation, llm-jp-eval evaluation JSON (`.json`):
//     {"instruction", "output_length", "metrics": [...], "few_shots": [{"input","output"}],
//      "samples": [{"input","output"}]}; `few_shots` is optional, and may instead come from
//     a separate train file (llm-jp-eval's layout: its first K samples are the shots).
// A task's identity is its name (file stem) plus TaskContentHash of its content (and of
// the train file, when one supplies the shots). Errors name the file, the field (or
// line) and the reason. Thread-safe (pure functions).
#ifndef STEADYEVAL_COMMON_TASK_H_
#define STEADYEVAL_COMMON_TASK_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

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

// How a run uses a task file (TaskRef in the API).
struct TaskOptions {
  std::string metric;         // the primary metric; empty = the task's default
  uint32_t max_samples = 0;   // evaluate the first max_samples samples; 0 = all
  // Few-shot source replacing the file's `few_shots`: an llm-jp-eval JSON file whose
  // `samples` are the shots, in order. Empty name = unused.
  std::string train_filename;
  std::string train_content;
};

struct Task {
  std::string name;      // file stem, e.g. "jcommonsenseqa" for jcommonsenseqa.jsonl
  std::string filename;  // as given
  std::string sha256;    // TaskContentHash of the content (and train content)
  TaskKind kind = TaskKind::kGeneration;
  uint32_t total_samples = 0;  // in the file, before max_samples

  // Generation tasks.
  std::string instruction;
  int output_length = 0;
  std::vector<GenerationSample> few_shots;
  std::vector<GenerationSample> samples;

  // Multiple-choice tasks.
  std::vector<ChoiceExample> choice_examples;

  // Every metric scored: the file's list (generation) or {acc, acc_norm}.
  std::vector<std::string> metrics;
  std::string metric_override;  // TaskOptions::metric

  size_t size() const {
    return kind == TaskKind::kGeneration ? samples.size() : choice_examples.size();
  }
  // The metric whose value is the task score: the override, else the first listed
  // (generation) or `acc` (multiple choice).
  std::string primary_metric() const;
};

// Parses `content` of the file named `filename`. The kind comes from the extension
// (`.jsonl` multiple choice, `.json` generation). INVALID_ARGUMENT naming the file, the
// field (JSON) or line (JSONL) and the reason for malformed input: invalid UTF-8, not
// JSON, a missing or mistyped field, no samples.
absl::StatusOr<Task> ParseTask(absl::string_view filename, absl::string_view content,
                               const TaskOptions& options = {});

// sha256 (hex) of `content`; with a non-empty `train_content`, sha256 of the two hashes
// joined by '+' (so a different few-shot source is a different task version).
std::string TaskContentHash(absl::string_view content, absl::string_view train_content);

// The task name for a file name: its base name without directories and extension.
std::string TaskNameFromFilename(absl::string_view filename);

absl::string_view TaskKindName(TaskKind kind);

// The llm-jp-eval categories a task may carry (TaskRef.category), in table order.
inline constexpr const char* kTaskCategories[] = {"NLI", "QA", "RC", "MC", "EL",
                                                   "FA",  "MR", "MT", "HE"};
// `text` upper-cased when it names one of kTaskCategories in any case, else nullopt.
std::optional<std::string> ParseTaskCategory(absl::string_view text);
// "NLI, QA, RC, MC, EL, FA, MR, MT, HE", for error messages.
std::string TaskCategoryList();

// OK for valid UTF-8; otherwise INVALID_ARGUMENT "<what>: invalid UTF-8 at byte N (line L)".
absl::Status CheckUtf8(absl::string_view what, absl::string_view text);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_TASK_H_
