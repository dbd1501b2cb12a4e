// The synthetic world behind the toy pretraining run (examples/toy_pretrain): people with
// a city, a job and a pet, small additions, and sentences over them; from it, four
// evaluation tasks and the documents the toy model is trained on.
//
// Tasks (each an eval split written to --tasks_out and, for generation tasks, a train split
// with the same file name under --tasks_out/train/, the few-shot source of a run's
// `--few_shots_from`):
//   toy_facts_qa.json  generation, "Where does Ana live?" → "Lima" (exact_match, char_f1);
//   toy_arith.json     generation, "What is 17 + 25?" → "42" (exact_match);
//   toy_nli.json       generation, premise/hypothesis → entailment|contradiction|neutral;
//   toy_facts_mc.jsonl multiple choice (acc): a person's city/job/pet among four, or which
//                      of four words is a city/job/animal.
// Every person's facts are stated in the training documents (eval questions included: the
// model can learn the facts, not the eval answers' QA form); QA, arithmetic, NLI and MC
// training documents use only train-split samples. Generation documents are exactly what
// the evaluator prompts with (common/prompt.h, English, kToyFewShots shots from the train
// split) followed by the answer; multiple-choice documents are query + gold choice, the
// string the evaluator scores. The tokenizer adds BOS/EOS around each document.
//
// Deterministic: the same options give byte-identical files and documents (own
// std::mt19937_64 draws, no distribution objects). No libtorch. Thread-safe (pure).
#ifndef STEADYEVAL_EXAMPLES_TOY_PRETRAIN_CORPUS_H_
#define STEADYEVAL_EXAMPLES_TOY_PRETRAIN_CORPUS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/prompt.h"

namespace steadyeval::toy {

// The few-shot count the training documents are formatted with: evaluate with
// `--prompt_language en --few_shots 1` (kToyFewShots) and `--few_shots_from <tasks>/train`.
inline constexpr int kToyFewShots = 1;
inline constexpr PromptLanguage kToyPromptLanguage = PromptLanguage::kEnglish;
PromptOptions ToyPromptOptions();

struct CorpusOptions {
  uint64_t seed = 1;
  int people = 160;            // people in the world (names are unique)
  int eval_samples = 60;       // per task
  int train_samples = 240;     // per generation task (train split, also training documents)
  int max_addend = 14;         // arithmetic operands are 0..max_addend
};

// A task file: its name (e.g. "toy_arith.json") and bytes.
struct TaskFile {
  std::string filename;
  std::string content;
};

struct ToyCorpus {
  std::vector<TaskFile> eval_tasks;   // written to DIR/
  std::vector<TaskFile> train_tasks;  // written to DIR/train/ (generation tasks only)
  // Training documents, without BOS/EOS, in a deterministic shuffled order.
  std::vector<std::string> documents;
  // One document per line with newlines escaped away: the tokenizer's training text.
  std::string tokenizer_text;
};

// INVALID_ARGUMENT naming the option when a count is out of range (e.g. more samples than
// the world can make distinct).
absl::StatusOr<ToyCorpus> GenerateCorpus(const CorpusOptions& options);

// Writes eval_tasks into `dir` and train_tasks into `dir`/train (both created).
// INTERNAL naming the file on I/O failure.
absl::Status WriteTaskFiles(const ToyCorpus& corpus, const std::string& dir);

}  // namespace steadyeval::toy

#endif  // STEADYEVAL_EXAMPLES_TOY_PRETRAIN_CORPUS_H_
