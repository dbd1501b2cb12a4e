// Task files (common/task.h): JSONL multiple choice and llm-jp-eval generation JSON, with
// the options a run can give (metric, max_samples, a separate few-shot train file).
//
// Input: one byte of flags, then the task file's bytes. Flags: bit 0 picks the kind
// (0 `.jsonl`, 1 `.json`); bit 1 sets max_samples to 1 + bits 4..7; bit 2 sets a metric;
// bit 3 splits the rest at the first "\n\x00\n" into the task file and a train file.
#include <cstdint>
#include <string>

#include "common/task.h"
#include "fuzz/fuzz_util.h"

using namespace steadyeval;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view in = fuzz::AsView(data, size);
  const uint8_t flags = static_cast<uint8_t>(fuzz::TakeLE(in, 1));
  const std::string filename = (flags & 1) ? "tasks/fuzz.json" : "tasks/fuzz.jsonl";
  TaskOptions options;
  if (flags & 2) options.max_samples = 1 + (flags >> 4);
  if (flags & 4) options.metric = "exact_match";
  absl::string_view content = in;
  if (flags & 8) {
    const size_t cut = in.find(absl::string_view("\n\0\n", 3));
    if (cut != absl::string_view::npos) {
      content = in.substr(0, cut);
      options.train_filename = "train/fuzz.json";
      options.train_content = std::string(in.substr(cut + 3));
    }
  }

  auto task = ParseTask(filename, content, options);
  if (!task.ok()) return 0;
  FUZZ_CHECK(task->name == "fuzz");
  FUZZ_CHECK(task->sha256 == TaskContentHash(content, options.train_content));
  FUZZ_CHECK(task->size() > 0);
  FUZZ_CHECK(task->size() <= task->total_samples);
  if (options.max_samples > 0) FUZZ_CHECK(task->size() <= options.max_samples);
  FUZZ_CHECK(!task->primary_metric().empty());
  if (task->kind == TaskKind::kMultipleChoice) {
    FUZZ_CHECK(task->samples.empty());
    for (const ChoiceExample& ex : task->choice_examples) {
      FUZZ_CHECK(ex.choices.size() >= 2);
      FUZZ_CHECK(ex.gold >= 0 && static_cast<size_t>(ex.gold) < ex.choices.size());
      FUZZ_CHECK(CheckUtf8("query", ex.query).ok());
    }
  } else {
    FUZZ_CHECK(task->choice_examples.empty());
    FUZZ_CHECK(task->output_length > 0 && !task->metrics.empty());
    if (!options.train_filename.empty()) FUZZ_CHECK(!task->few_shots.empty());
  }
  return 0;
}
