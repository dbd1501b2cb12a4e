// TokenScheduler: the evaluation engine's token work (DESIGN §6). Every request of a task
// (a log-likelihood continuation, a multiple-choice option, a generation prompt) is a token
// sequence from position 0; the scheduler puts them all into one token trie, so a prefix
// shared by several requests (the instruction and shots every example starts with, the
// context an example's options share) is one path of nodes, computed once. Sharing is
// found on token ids alone, whatever text produced them.
//
// Run() computes every trie node once: the nodes in depth-first (pre)order, cut into
// batches of at most `batch_tokens` tokens, each batch one LanguageModel::ForwardPacked
// call. Preorder makes the context of a batch simple: every ancestor of a batch's token
// that is not in the batch is an ancestor of the batch's first token, so the only KV kept
// between batches is that one root-to-node path (the "stack", at most the longest
// request). A token sees the stack slots of its own ancestors, its ancestors inside the
// batch and itself, at position = its depth. Memory is therefore bounded by the budget
// and the longest request, not by the task's size.
//
// Only what is read is computed past the last layer: the logits of the nodes a request
// scores (one log-sum-exp per node, in double, however many requests read it) and of a
// prompt's last token. A log-likelihood request reads log p(tokens[k] | tokens[:k]) for
// k >= score_from; its last token is never run (nothing reads its output).
//
// Sequences must be within the model's length_dependent_beyond() (when non-zero): the
// caller evaluates longer ones alone (evaluator.cc). Not thread-safe.
#ifndef STEADYEVAL_WORKER_EVAL_TOKEN_SCHEDULER_H_
#define STEADYEVAL_WORKER_EVAL_TOKEN_SCHEDULER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/eval/eval_backend.h"  // kDefaultBatchTokens
#include "worker/model/language_model.h"

namespace steadyeval {

struct TokenWorkStats {
  uint64_t requests = 0;
  uint64_t requested_tokens = 0;  // tokens the requests would run one at a time
  uint64_t computed_tokens = 0;   // trie nodes: the tokens actually run
  uint64_t scored_positions = 0;  // nodes whose logits were read
  uint64_t batches = 0;
};

class TokenScheduler {
 public:
  struct Options {
    int64_t batch_tokens = kDefaultBatchTokens;  // >= 1
    // After each batch, with the number of groups whose requests are all computed (see
    // Add*); return false to stop: Run() then returns CANCELLED. Optional.
    std::function<bool(size_t groups_done)> after_batch;
  };

  // A prompt's last token was computed: the logits after it ([V] float32, CPU) and the
  // KV cache of the whole prompt (batch 1, with spare slots for decoding). Called in
  // preorder of the prompts' last tokens, once per AddPrompt (identical prompts each get
  // their own call). An error stops Run() and is returned.
  using PromptFn = std::function<absl::Status(size_t request, at::Tensor last_logits,
                                              KVCache cache)>;

  // INVALID_ARGUMENT for batch_tokens < 1.
  static absl::StatusOr<TokenScheduler> Create(const Options& options);

  // A log-likelihood request: the sum over k in [score_from, tokens.size()) of
  // log p(tokens[k] | tokens[:k]). `group` is the unit progress counts (e.g. an example:
  // its options are one group). Returns the request's id (0, 1, ...). INVALID_ARGUMENT
  // unless 1 <= score_from < tokens.size().
  absl::StatusOr<size_t> AddLoglik(const std::vector<int64_t>& tokens, size_t score_from,
                                   size_t group);
  // A generation prompt (non-empty): its last logits and KV cache go to Run()'s PromptFn.
  absl::StatusOr<size_t> AddPrompt(const std::vector<int64_t>& tokens, size_t group);

  // Computes every request. `on_prompt` may be null when there are no prompts.
  // `spare_slots` is the room each prompt's cache gets for decoding. Errors: the model's
  // (annotated with the batch), on_prompt's, CANCELLED from after_batch,
  // INVALID_ARGUMENT for a sequence past the model's length_dependent_beyond(). Call once.
  absl::Status Run(const LanguageModel& model, const PromptFn& on_prompt,
                   int64_t spare_slots = 0);

  // After Run(): a log-likelihood request's sum (in double).
  double loglik(size_t request) const { return logliks_[request]; }
  const TokenWorkStats& stats() const { return stats_; }

 private:
  struct Node {
    int64_t token;
    int32_t parent;  // -1: a child of the (virtual) root
    int32_t depth;   // = position
    int32_t first_child = -1, last_child = -1, next_sibling = -1;
  };
  struct Target {  // log p(token | path to node) is added to request's sum
    int32_t request;
    int64_t token;
  };

  explicit TokenScheduler(const Options& options) : options_(options) {}
  // Inserts tokens[0..count) and returns the node of each.
  std::vector<int32_t> Insert(const std::vector<int64_t>& tokens, size_t count);

  Options options_;
  std::vector<Node> nodes_;
  absl::flat_hash_map<std::pair<int32_t, int64_t>, int32_t> child_of_;
  absl::flat_hash_map<int32_t, std::vector<Target>> targets_;  // by node
  absl::flat_hash_map<int32_t, std::vector<int32_t>> prompts_;  // by last node
  std::vector<int32_t> request_last_;  // per request: the deepest node it needs
  std::vector<size_t> request_group_;
  std::vector<double> logliks_;
  TokenWorkStats stats_;
  int32_t first_root_ = -1, last_root_ = -1;
  bool ran_ = false;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_EVAL_TOKEN_SCHEDULER_H_
