// Evaluator: runs one task's examples through a model and returns the raw outputs that
// scoring (common/scoring.h) turns into metrics. Deterministic for a given model, task
// and thread count.
//
// Multiple choice (log-likelihood, lm-evaluation-harness convention): for context c and
// option o, trailing whitespace of c moves to the front of o; ctx = tok(c), whole =
// tok(c + o), both with the BOS rule; the option's continuation tokens are
// whole[len(ctx):] and its score is the sum of their log-probs conditioned on ctx. The
// context is the example's query verbatim and the option text verbatim (put any
// separating space in the task file). Output = index of the best option (ties: lowest).
//
// Generation: prompt = BuildPrompt(task, i, few_shots); greedy decoding with a KV cache
// for up to task.output_length + max_new_tokens_delta tokens, stopping at an EOS token
// (the tokenizer's or config.json's) or once the decoded continuation contains "\n\n".
// Output = the decoded continuation, raw (scoring extracts and normalizes the answer).
// The shared prompt prefix is computed once per task and its KV cache reused for every
// example whose tokenization starts with the prefix's tokens; other examples are
// encoded and run whole, so the result never depends on the reuse.
//
// Thread-safe: model and tokenizer are only read, so concurrent calls are fine; the
// progress callback runs on the calling thread.
#ifndef STEADYEVAL_WORKER_EVALUATOR_H_
#define STEADYEVAL_WORKER_EVALUATOR_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/task.h"
#include "worker/language_model.h"
#include "worker/tokenizer.h"

namespace steadyeval {

struct EvalOptions {
  int few_shots = 4;
  int max_new_tokens_delta = 0;  // added to the task's output_length
  // Reuse the shared prompt prefix's KV cache (generation). Off only to test that it
  // changes nothing.
  bool reuse_prefix_cache = true;
  // Called after each example with (examples done, total). Optional.
  std::function<void(size_t done, size_t total)> progress;
};

struct EvalOutput {
  uint32_t index = 0;
  std::string output;                 // option index in decimal, or generated text
  std::vector<double> option_logliks; // multiple choice: per option, in option order
};

// Evaluates every example of `task`, in order. FAILED_PRECONDITION when the tokenizer's
// vocabulary does not fit the model's; INVALID_ARGUMENT for an option that tokenizes to
// no continuation tokens; model errors as returned by Forward().
absl::StatusOr<std::vector<EvalOutput>> EvaluateTask(const LanguageModel& model,
                                                     const Tokenizer& tokenizer,
                                                     const Task& task,
                                                     const EvalOptions& options);

// Log-likelihood of `continuation` given `context` under the convention above.
absl::StatusOr<double> ContinuationLoglik(const LanguageModel& model, const Tokenizer& tokenizer,
                                          const std::string& context,
                                          const std::string& continuation);

// Splits (context, continuation) per lm-evaluation-harness: trailing whitespace of the
// context (Python str.isspace() characters) moves to the start of the continuation.
std::pair<std::string, std::string> MoveTrailingWhitespace(const std::string& context,
                                                           const std::string& continuation);

// Per-token log-probs of `tokens` (a whole sequence from position 0): entry i is
// log p(tokens[i] | tokens[:i]) for i >= 1; entry 0 is NaN (nothing conditions it).
absl::StatusOr<std::vector<double>> TokenLogprobs(const LanguageModel& model,
                                                  const std::vector<int64_t>& tokens);

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_EVALUATOR_H_
