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
// Generation: prompt = BuildPrompt(task, i, options.prompt); greedy decoding with a KV cache
// for up to task.output_length + max_new_tokens_delta tokens, stopping at an EOS token
// (the tokenizer's or config.json's; not part of the output) or once the decoded
// continuation contains "\n\n"; argmax ties go to the lowest token id.
// Output = the decoded continuation, raw (scoring extracts and normalizes the answer).
//
// Engines. kPacked (the default) puts every option sequence or prompt of the task into
// one token trie (token_scheduler.h): shared prefixes (shots, an example's context) run
// once, the remaining tokens run in packed batches of options.batch_tokens, and only the
// scored positions' logits are read. Generation prompts finish in the trie's order and are
// decoded options.batch_size at a time. kPerRequest is the engine before that (kept as
// the benchmarks' baseline): each example's context runs alone and each option continues
// a fork of its cache; generation prompts run one at a time (continuing the shared prompt
// prefix's cache when reuse is on) and are decoded batch_size at a time in example order.
// Both compute the same values up to floating-point rounding (batched kernels sum in
// another order); decoding stacks the prompts' caches into one left-padded KV cache and
// every step runs one token for each example still generating; finished examples leave
// the batch. Each token sees exactly the positions and context it would alone.
//
// Thread-safe: model and tokenizer are only read, so concurrent calls are fine; the
// progress callback runs on the calling thread.
#ifndef STEADYEVAL_WORKER_EVAL_EVALUATOR_H_
#define STEADYEVAL_WORKER_EVAL_EVALUATOR_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/prompt.h"
#include "common/task.h"
#include "common/text.h"  // MoveTrailingWhitespace, used for the split
#include "worker/model/language_model.h"
#include "worker/eval/token_scheduler.h"
#include "worker/tokenizer/tokenizer.h"

namespace steadyeval {

enum class EvalEngine { kPacked, kPerRequest };

struct EvalOptions {
  EvalEngine engine = EvalEngine::kPacked;
  // kPacked: tokens per packed forward (bounds the activations' memory). >= 1.
  int64_t batch_tokens = kDefaultBatchTokens;
  PromptOptions prompt;          // few-shot count and template language (generation)
  int max_new_tokens_delta = 0;  // added to the task's output_length
  // Generation: examples decoded together in one batch (one left-padded KV cache; see
  // above). Must be >= 1 (INVALID_ARGUMENT otherwise). Outputs do not depend on it.
  int batch_size = 8;
  // kPerRequest generation: reuse the shared prompt prefix's KV cache. Off only to test
  // that it changes nothing (kPacked always shares every prefix).
  bool reuse_prefix_cache = true;
  // Called with (examples done, total) as examples finish and after every forward of the
  // model (a packed batch, a prompt, a decoding step; `done` may then repeat); it is the
  // cancel point: return false and the evaluation returns CANCELLED, and no outputs,
  // without running another forward. Optional. Examples finish in any order; `done`
  // counts them and never decreases.
  std::function<bool(size_t done, size_t total)> progress;
  // kPacked: where to put the token work's counts (tokens requested vs computed). Optional.
  TokenWorkStats* stats = nullptr;
};

struct EvalOutput {
  uint32_t index = 0;
  std::string output;                 // option index in decimal, or generated text
  std::vector<double> option_logliks; // multiple choice: per option, in option order
};

// Evaluates every example of `task`; outputs in example order. FAILED_PRECONDITION when
// the tokenizer's vocabulary does not fit the model's; INVALID_ARGUMENT for an option that
// tokenizes to no continuation tokens, a prompt that encodes to no tokens, batch_tokens < 1
// or (generation tasks) batch_size < 1; CANCELLED when progress returned false; model
// errors as returned by Forward().
absl::StatusOr<std::vector<EvalOutput>> EvaluateTask(const LanguageModel& model,
                                                     const Tokenizer& tokenizer,
                                                     const Task& task,
                                                     const EvalOptions& options);

// Log-likelihood of `continuation` given `context` under the convention above.
absl::StatusOr<double> ContinuationLoglik(const LanguageModel& model, const Tokenizer& tokenizer,
                                          const std::string& context,
                                          const std::string& continuation);

// Per-token log-probs of `tokens` (a whole sequence from position 0): entry i is
// log p(tokens[i] | tokens[:i]) for i >= 1; entry 0 is NaN (nothing conditions it).
absl::StatusOr<std::vector<double>> TokenLogprobs(const LanguageModel& model,
                                                  const std::vector<int64_t>& tokens);

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_EVAL_EVALUATOR_H_
