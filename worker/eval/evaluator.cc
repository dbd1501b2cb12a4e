#include "worker/eval/evaluator.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/prompt.h"
#include "common/status.h"
#include "common/text.h"
#include "worker/eval/token_scheduler.h"
#include "worker/torch_status.h"

namespace steadyeval {
namespace {

constexpr char kStopString[] = "\n\n";

// A cancel point: asked after every forward (and before every decoding step's), so that
// a cancel stops the evaluation before another forward runs. False cancels.
using GoOnFn = std::function<bool()>;

absl::Status CancelledHere() { return absl::CancelledError("evaluation cancelled"); }

at::Tensor ToBatch(const std::vector<int64_t>& ids) {
  return at::tensor(ids, at::kLong).view({1, -1});
}

// Forward of `ids` continuing `cache` (nullable); returns logits [1, T, V].
absl::StatusOr<at::Tensor> RunForward(const LanguageModel& model,
                                         const std::vector<int64_t>& ids, KVCache* cache) {
  ASSIGN_OR_RETURN(at::Tensor batch,
                   GuardTorch("evaluator", [&]() -> absl::StatusOr<at::Tensor> {
                     return ToBatch(ids);
                   }));
  return model.Forward(batch, cache);
}

// Log-probs in double of every position ([T, V]) or, with `last_only`, of the last ([V]).
absl::StatusOr<at::Tensor> ForwardLogprobs(const LanguageModel& model,
                                              const std::vector<int64_t>& ids, KVCache* cache,
                                              bool last_only = false) {
  ASSIGN_OR_RETURN(at::Tensor logits, RunForward(model, ids, cache));
  return GuardTorch("evaluator", [&]() -> absl::StatusOr<at::Tensor> {
    c10::InferenceMode inference;
    at::Tensor rows = last_only ? logits[0][-1] : logits[0];
    return at::log_softmax(rows.to(at::kDouble), -1);
  });
}

// The conditioning tokens for `context` (BOS rule; lm-eval uses EOS when empty).
absl::StatusOr<std::vector<int64_t>> ContextTokens(const Tokenizer& tokenizer,
                                                   const LanguageModel& model,
                                                   const std::string& context, bool* substituted) {
  ASSIGN_OR_RETURN(std::vector<int64_t> ids, tokenizer.EncodeWithBos(context));
  *substituted = false;
  if (ids.empty()) {
    int64_t eos = tokenizer.eos_id();
    if (eos < 0 && !model.eos_token_ids().empty()) eos = model.eos_token_ids().front();
    if (eos < 0) {
      return absl::InvalidArgumentError(
          "empty context with no BOS or EOS token to condition the continuation on");
    }
    ids.push_back(eos);
    *substituted = true;
  }
  return ids;
}

// Scores the continuations of one context: the context runs once, each option forks it.
class ContextScorer {
 public:
  static absl::StatusOr<ContextScorer> Create(const LanguageModel& model,
                                              const Tokenizer& tokenizer,
                                              const std::string& context) {
    ContextScorer scorer(model, tokenizer, context);
    ASSIGN_OR_RETURN(scorer.ctx_ids_,
                     ContextTokens(tokenizer, model, context, &scorer.ctx_substituted_));
    ASSIGN_OR_RETURN(scorer.next_logprobs_,
                     ForwardLogprobs(model, scorer.ctx_ids_, &scorer.cache_, /*last_only=*/true));
    return scorer;
  }

  // `continuation` already carries the context's moved trailing whitespace.
  absl::StatusOr<double> Score(const std::string& continuation) const {
    ASSIGN_OR_RETURN(std::vector<int64_t> whole,
                     ctx_substituted_ ? tokenizer_.Encode(continuation)
                                      : tokenizer_.EncodeWithBos(context_ + continuation));
    const size_t skip = ctx_substituted_ ? 0 : ctx_ids_.size();
    if (whole.size() <= skip) {
      return absl::InvalidArgumentError(absl::StrCat(
          "continuation '", continuation, "' adds no tokens to its context"));
    }
    std::vector<int64_t> cont(whole.begin() + skip, whole.end());
    const int64_t limit = model_.length_dependent_beyond();
    if (limit > 0 && static_cast<int64_t>(ctx_ids_.size() + cont.size()) > limit) {
      return ScoreInOnePass(cont);
    }
    return GuardTorch("evaluator", [&]() -> absl::StatusOr<double> {
      double total = next_logprobs_[cont[0]].item<double>();
      if (cont.size() > 1) {
        KVCache cache = cache_.Fork();
        ASSIGN_OR_RETURN(at::Tensor lp,
                         ForwardLogprobs(model_, std::vector<int64_t>(cont.begin(), cont.end() - 1),
                                         &cache));
        at::Tensor targets = at::tensor(std::vector<int64_t>(cont.begin() + 1, cont.end()),
                                              at::kLong);
        total += lp.gather(1, targets.view({-1, 1})).sum().item<double>();
      }
      return total;
    });
  }

 private:
  // Context and continuation as one sequence without the context's cache: for models whose
  // positions depend on the total length (dynamic RoPE past its limit).
  absl::StatusOr<double> ScoreInOnePass(const std::vector<int64_t>& cont) const {
    std::vector<int64_t> seq = ctx_ids_;
    seq.insert(seq.end(), cont.begin(), cont.end());
    // The whole sequence, last token included: L is the full scored sequence (MODELS.md),
    // as `steadyeval-worker logprobs` computes it.
    ASSIGN_OR_RETURN(at::Tensor lp, ForwardLogprobs(model_, seq, nullptr));
    return GuardTorch("evaluator", [&]() -> absl::StatusOr<double> {
      // Row t holds log p(· | seq[0..t]); continuation token k sits at ctx + k.
      double total = 0;
      for (size_t k = 0; k < cont.size(); ++k) {
        total += lp[static_cast<int64_t>(ctx_ids_.size() + k - 1)][cont[k]].item<double>();
      }
      return total;
    });
  }

  ContextScorer(const LanguageModel& model, const Tokenizer& tokenizer, std::string context)
      : model_(model), tokenizer_(tokenizer), context_(std::move(context)) {}

  const LanguageModel& model_;
  const Tokenizer& tokenizer_;
  std::string context_;
  std::vector<int64_t> ctx_ids_;
  bool ctx_substituted_ = false;
  KVCache cache_;
  at::Tensor next_logprobs_;  // [V] log p(· | context)
};

// An example's context and its options' continuations: the query's trailing whitespace
// moves to the front of every option (the convention in evaluator.h).
struct ChoiceSplit {
  std::string context;
  std::vector<std::string> continuations;
};

ChoiceSplit SplitChoices(const ChoiceExample& example) {
  ChoiceSplit split;
  for (const std::string& choice : example.choices) {
    auto [ctx, cont] = MoveTrailingWhitespace(example.query, choice);
    split.context = ctx;
    split.continuations.push_back(cont);
  }
  return split;
}

// The index of the best option; ties go to the lowest.
size_t BestOption(const std::vector<double>& logliks) {
  size_t best = 0;
  for (size_t k = 1; k < logliks.size(); ++k) {
    if (logliks[k] > logliks[best]) best = k;
  }
  return best;
}

absl::StatusOr<EvalOutput> EvaluateChoice(const LanguageModel& model, const Tokenizer& tokenizer,
                                          const ChoiceExample& example, uint32_t index,
                                          const GoOnFn& go_on) {
  EvalOutput out;
  out.index = index;
  const auto [context, continuations] = SplitChoices(example);
  ASSIGN_OR_RETURN(ContextScorer scorer, ContextScorer::Create(model, tokenizer, context));
  if (!go_on()) return CancelledHere();
  for (size_t k = 0; k < continuations.size(); ++k) {
    auto ll = scorer.Score(continuations[k]);
    if (!ll.ok()) return Annotate(ll.status(), absl::StrCat("option ", k));
    if (!go_on()) return CancelledHere();
    out.option_logliks.push_back(*ll);
  }
  out.output = std::to_string(BestOption(out.option_logliks));
  return out;
}

// One example of a generation batch.
struct GenerationRow {
  size_t index;                 // example index
  bool continues_prefix;        // tokens continue the shared prefix's cache
  std::vector<int64_t> tokens;  // the prompt, without the shared prefix when it continues it
};

// A prompt that has run: the KV cache of its whole sequence (batch 1) and the logits after
// its last token ([V]).
struct PromptState {
  size_t index;  // example index
  KVCache cache;
  at::Tensor last_logits;
};

// Runs each row's prompt on its own, continuing its own fork of `prefix` or from scratch
// as the row says (the per-request engine); `go_on` after each (CANCELLED when false).
absl::StatusOr<std::vector<PromptState>> RunPrompts(const LanguageModel& model,
                                                    const std::vector<GenerationRow>& rows,
                                                    const KVCache& prefix, const GoOnFn& go_on) {
  std::vector<PromptState> states;
  for (const GenerationRow& row : rows) {
    PromptState state{row.index, row.continues_prefix ? prefix.Fork() : KVCache(), {}};
    ASSIGN_OR_RETURN(at::Tensor logits, RunForward(model, row.tokens, &state.cache));
    RETURN_IF_ERROR(GuardTorch("evaluator", [&]() -> absl::Status {
      state.last_logits = logits[0][-1].clone();  // not a view: frees the [T, V] logits
      return absl::OkStatus();
    }));
    states.push_back(std::move(state));
    if (!go_on()) return CancelledHere();
  }
  return states;
}

// Greedy-decodes `rows` together and writes each row's decoded continuation into
// (*outputs)[row.index]. Per row this is exactly the unbatched greedy loop: at most
// `max_new` tokens, stop (excluded) at a `stop_ids` token, stop (included) once the decoded
// continuation contains kStopString; argmax ties go to the lowest id. `on_done` runs once
// per row, when it finishes, and `go_on` before every decoding step's forward; either
// returning false cancels (CANCELLED).
//
// The prompts' caches are stacked into one left-padded batch (KVCache::StackRows) that
// decodes one token per live row per step; rows that stop leave the batch
// (KVCache::SelectRows).
absl::Status DecodeBatch(const LanguageModel& model, const Tokenizer& tokenizer,
                         std::vector<PromptState> rows, int max_new,
                         const std::set<int64_t>& stop_ids, std::vector<EvalOutput>* outputs,
                         const std::function<bool()>& on_done, const GoOnFn& go_on) {
  const size_t n = rows.size();
  std::vector<std::vector<int64_t>> generated(n);
  auto finish = [&](size_t r) -> absl::Status {
    ASSIGN_OR_RETURN((*outputs)[rows[r].index].output, tokenizer.Decode(generated[r]));
    if (!on_done()) return CancelledHere();
    return absl::OkStatus();
  };
  if (n == 0) return absl::OkStatus();
  if (max_new <= 0) {
    for (size_t r = 0; r < n; ++r) RETURN_IF_ERROR(finish(r));
    return absl::OkStatus();
  }
  std::vector<KVCache> prompt_caches;  // row r's cache until the rows are stacked
  std::vector<at::Tensor> prompt_logits;
  for (PromptState& row : rows) {
    prompt_caches.push_back(std::move(row.cache));
    prompt_logits.push_back(std::move(row.last_logits));
  }
  ASSIGN_OR_RETURN(at::Tensor last_logits,
                   GuardTorch("evaluator", [&]() -> absl::StatusOr<at::Tensor> {
                     return at::stack(prompt_logits);
                   }));
  prompt_logits.clear();

  KVCache cache;                // the live rows, once stacked
  std::vector<size_t> live(n);  // row k of last_logits (and of the cache) decodes rows[live[k]]
  for (size_t r = 0; r < n; ++r) live[r] = r;
  while (true) {
    ASSIGN_OR_RETURN(std::vector<int64_t> next,
                     GuardTorch("evaluator", [&]() -> absl::StatusOr<std::vector<int64_t>> {
                       // argmax returns the first maximal index: ties go to the lowest id.
                       at::Tensor best = last_logits.argmax(-1).contiguous();
                       return std::vector<int64_t>(best.data_ptr<int64_t>(),
                                                   best.data_ptr<int64_t>() + best.numel());
                     }));
    std::vector<int64_t> keep;  // rows of last_logits that go on
    std::vector<int64_t> keep_tokens;
    for (size_t k = 0; k < live.size(); ++k) {
      const size_t r = live[k];
      if (stop_ids.count(next[k]) > 0) {
        RETURN_IF_ERROR(finish(r));
        continue;
      }
      generated[r].push_back(next[k]);
      ASSIGN_OR_RETURN(std::string text, tokenizer.Decode(generated[r]));
      if (absl::StrContains(text, kStopString) ||
          generated[r].size() >= static_cast<size_t>(max_new)) {
        RETURN_IF_ERROR(finish(r));
        continue;
      }
      keep.push_back(static_cast<int64_t>(k));
      keep_tokens.push_back(next[k]);
    }
    if (keep.empty()) return absl::OkStatus();
    if (!prompt_caches.empty()) {
      std::vector<KVCache> kept;
      for (int64_t k : keep) kept.push_back(std::move(prompt_caches[live[k]]));
      prompt_caches.clear();
      if (kept.size() == 1) {
        cache = std::move(kept.front());  // nothing to stack
      } else {
        ASSIGN_OR_RETURN(cache, KVCache::StackRows(kept, /*spare_slots=*/max_new));
      }
    } else if (keep.size() < live.size()) {
      ASSIGN_OR_RETURN(cache, cache.SelectRows(keep));
    }
    std::vector<size_t> still_live;
    for (int64_t k : keep) still_live.push_back(live[k]);
    live = std::move(still_live);
    if (!go_on()) return CancelledHere();
    ASSIGN_OR_RETURN(at::Tensor step,
                     GuardTorch("evaluator", [&]() -> absl::StatusOr<at::Tensor> {
                       return at::tensor(keep_tokens, at::kLong).view({-1, 1});
                     }));
    ASSIGN_OR_RETURN(at::Tensor logits, model.Forward(step, &cache));
    ASSIGN_OR_RETURN(last_logits,
                     GuardTorch("evaluator", [&]() -> absl::StatusOr<at::Tensor> {
                       return logits.select(1, -1);  // [live, V]
                     }));
  }
}

// Whether the caller wants to go on (no callback: always).
bool Report(const EvalOptions& options, size_t done, size_t total) {
  return !options.progress || options.progress(done, total);
}

absl::Status Cancelled(const std::string& task_context, size_t done, size_t total) {
  return absl::CancelledError(
      absl::StrCat(task_context, ": evaluation cancelled after ", done, " of ", total, " examples"));
}

// Baseline engine: each example's context runs once, each option continues a fork of it.
absl::StatusOr<std::vector<EvalOutput>> EvaluateChoicesPerRequest(const LanguageModel& model,
                                                                  const Tokenizer& tokenizer,
                                                                  const Task& task,
                                                                  const EvalOptions& options) {
  const std::string task_context = absl::StrCat("task ", task.name);
  const size_t total = task.size();
  std::vector<EvalOutput> outputs;
  outputs.reserve(total);
  for (size_t i = 0; i < total; ++i) {
    auto out = EvaluateChoice(model, tokenizer, task.choice_examples[i], i,
                              [&] { return Report(options, i, total); });
    if (absl::IsCancelled(out.status())) return Cancelled(task_context, i, total);
    if (!out.ok()) {
      return Annotate(out.status(), absl::StrCat(task_context, " example ", i, " (id ",
                                                 task.choice_examples[i].id, ")"));
    }
    outputs.push_back(*std::move(out));
    if (!Report(options, i + 1, total)) return Cancelled(task_context, i + 1, total);
  }
  return outputs;
}

// One option's token sequence and where its continuation starts (the convention in
// evaluator.h: the context's tokens, then whole[len(ctx):]).
struct OptionSequence {
  std::vector<int64_t> tokens;
  size_t score_from = 0;
};

absl::StatusOr<std::vector<OptionSequence>> OptionSequences(const LanguageModel& model,
                                                            const Tokenizer& tokenizer,
                                                            const ChoiceExample& example) {
  const auto [context, continuations] = SplitChoices(example);
  bool substituted = false;
  ASSIGN_OR_RETURN(std::vector<int64_t> ctx_ids,
                   ContextTokens(tokenizer, model, context, &substituted));
  std::vector<OptionSequence> sequences;
  for (size_t k = 0; k < continuations.size(); ++k) {
    auto whole = substituted ? tokenizer.Encode(continuations[k])
                             : tokenizer.EncodeWithBos(context + continuations[k]);
    if (!whole.ok()) return Annotate(whole.status(), absl::StrCat("option ", k));
    const size_t skip = substituted ? 0 : ctx_ids.size();
    if (whole->size() <= skip) {
      return absl::InvalidArgumentError(absl::StrCat("option ", k, ": continuation '",
                                                     continuations[k],
                                                     "' adds no tokens to its context"));
    }
    OptionSequence seq{ctx_ids, ctx_ids.size()};
    seq.tokens.insert(seq.tokens.end(), whole->begin() + static_cast<std::ptrdiff_t>(skip),
                      whole->end());
    sequences.push_back(std::move(seq));
  }
  return sequences;
}

// The packed engine: every option of every example in one token trie (token_scheduler.h).
absl::StatusOr<std::vector<EvalOutput>> EvaluateChoicesPacked(const LanguageModel& model,
                                                              const Tokenizer& tokenizer,
                                                              const Task& task,
                                                              const EvalOptions& options) {
  const std::string task_context = absl::StrCat("task ", task.name);
  const size_t total = task.size();
  TokenScheduler::Options scheduler_options;
  scheduler_options.batch_tokens = options.batch_tokens;
  size_t reported = 0;
  // After every batch, even one that finished no example: a false return must stop the
  // work within one batch.
  scheduler_options.after_batch = [&](size_t groups_done) {
    reported = groups_done;
    return Report(options, reported, total);
  };
  ASSIGN_OR_RETURN(TokenScheduler scheduler, TokenScheduler::Create(scheduler_options));
  std::vector<EvalOutput> outputs(total);
  // request[i][k]: the scheduler's request of example i's option k; -1 when the option is
  // scored alone (a model whose positions depend on the length, past that length).
  std::vector<std::vector<int64_t>> request(total);
  const int64_t limit = model.length_dependent_beyond();
  for (size_t i = 0; i < total; ++i) {
    const ChoiceExample& example = task.choice_examples[i];
    outputs[i].index = static_cast<uint32_t>(i);
    auto sequences = OptionSequences(model, tokenizer, example);
    if (!sequences.ok()) {
      return Annotate(sequences.status(),
                      absl::StrCat(task_context, " example ", i, " (id ", example.id, ")"));
    }
    outputs[i].option_logliks.assign(sequences->size(), 0);
    for (size_t k = 0; k < sequences->size(); ++k) {
      const OptionSequence& seq = (*sequences)[k];
      if (limit > 0 && static_cast<int64_t>(seq.tokens.size()) > limit) {
        // One pass over the whole sequence, as a reference would compute it.
        auto lp = TokenLogprobs(model, seq.tokens);
        if (!lp.ok()) {
          return Annotate(lp.status(), absl::StrCat(task_context, " example ", i, " option ", k));
        }
        if (!Report(options, 0, total)) return Cancelled(task_context, 0, total);
        double sum = 0;
        for (size_t t = seq.score_from; t < lp->size(); ++t) sum += (*lp)[t];
        outputs[i].option_logliks[k] = sum;
        request[i].push_back(-1);
        continue;
      }
      ASSIGN_OR_RETURN(size_t id, scheduler.AddLoglik(seq.tokens, seq.score_from, i));
      request[i].push_back(static_cast<int64_t>(id));
    }
  }
  absl::Status status = scheduler.Run(model, nullptr);
  if (absl::IsCancelled(status)) return Cancelled(task_context, reported, total);
  if (!status.ok()) return Annotate(status, task_context);
  for (size_t i = 0; i < total; ++i) {
    EvalOutput& out = outputs[i];
    for (size_t k = 0; k < request[i].size(); ++k) {
      if (request[i][k] >= 0) out.option_logliks[k] = scheduler.loglik(request[i][k]);
    }
    out.output = std::to_string(BestOption(out.option_logliks));
  }
  if (reported < total && !Report(options, total, total)) {
    return Cancelled(task_context, reported, total);
  }
  if (options.stats != nullptr) *options.stats = scheduler.stats();
  return outputs;
}

// Generation, with either engine: prompts run per request (continuing the shared prompt
// prefix's cache when reuse is on) or packed through the token scheduler; decoding is
// batched the same way for both.
absl::StatusOr<std::vector<EvalOutput>> EvaluateGeneration(const LanguageModel& model,
                                                           const Tokenizer& tokenizer,
                                                           const Task& task,
                                                           const EvalOptions& options) {
  const std::string task_context = absl::StrCat("task ", task.name);
  const size_t total = task.size();
  if (options.batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("generation batch size must be at least 1, got ", options.batch_size));
  }
  std::set<int64_t> stop_ids(model.eos_token_ids().begin(), model.eos_token_ids().end());
  if (tokenizer.eos_id() >= 0) stop_ids.insert(tokenizer.eos_id());
  const int max_new = task.output_length + options.max_new_tokens_delta;
  std::vector<EvalOutput> outputs(total);
  size_t done = 0;
  auto on_done = [&]() {
    ++done;
    return Report(options, done, total);
  };
  const GoOnFn go_on = [&] { return Report(options, done, total); };
  const size_t batch_size = static_cast<size_t>(options.batch_size);
  const int64_t limit = model.length_dependent_beyond();
  std::vector<std::vector<int64_t>> prompts(total);
  for (size_t i = 0; i < total; ++i) {
    outputs[i].index = static_cast<uint32_t>(i);
    auto ids = tokenizer.EncodeWithBos(BuildPrompt(task, i, options.prompt));
    if (!ids.ok()) return Annotate(ids.status(), absl::StrCat(task_context, " sample ", i));
    if (ids->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(task_context, " sample ", i, ": the prompt encodes to no tokens"));
    }
    prompts[i] = *std::move(ids);
  }
  auto decode = [&](std::vector<PromptState> rows) -> absl::Status {
    if (rows.empty()) return absl::OkStatus();
    const size_t first = rows.front().index;
    absl::Status status =
        DecodeBatch(model, tokenizer, std::move(rows), max_new, stop_ids, &outputs, on_done, go_on);
    if (absl::IsCancelled(status)) return Cancelled(task_context, done, total);
    return Annotate(status, absl::StrCat(task_context, " samples from ", first));
  };

  if (options.engine == EvalEngine::kPacked) {
    TokenScheduler::Options scheduler_options;
    scheduler_options.batch_tokens = options.batch_tokens;
    // Prompt batches report the examples decoded so far (a cancel point per batch).
    scheduler_options.after_batch = [&](size_t) { return go_on(); };
    ASSIGN_OR_RETURN(TokenScheduler scheduler, TokenScheduler::Create(scheduler_options));
    std::vector<PromptState> pending;  // run prompts, decoded batch_size at a time
    auto queue = [&](PromptState row) -> absl::Status {
      pending.push_back(std::move(row));
      if (pending.size() < batch_size) return absl::OkStatus();
      std::vector<PromptState> rows = std::move(pending);
      pending.clear();
      return decode(std::move(rows));
    };
    std::vector<size_t> example_of;  // by request id
    for (size_t i = 0; i < total; ++i) {
      // A model whose positions depend on the total length sees a long prompt in one pass.
      if (limit > 0 && static_cast<int64_t>(prompts[i].size()) > limit) {
        auto alone = RunPrompts(model, {{i, false, prompts[i]}}, KVCache(), go_on);
        if (absl::IsCancelled(alone.status())) return Cancelled(task_context, done, total);
        RETURN_IF_ERROR(alone.status());
        RETURN_IF_ERROR(queue(std::move(alone->front())));
        continue;
      }
      ASSIGN_OR_RETURN(size_t id, scheduler.AddPrompt(prompts[i], i));
      example_of.resize(id + 1);
      example_of[id] = i;
    }
    absl::Status status = scheduler.Run(
        model,
        [&](size_t request, at::Tensor last_logits, KVCache cache) -> absl::Status {
          return queue({example_of[request], std::move(cache), std::move(last_logits)});
        },
        /*spare_slots=*/std::max(max_new, 0));
    if (absl::IsCancelled(status)) return Cancelled(task_context, done, total);
    if (!status.ok()) return Annotate(status, task_context);
    RETURN_IF_ERROR(decode(std::move(pending)));
    if (options.stats != nullptr) *options.stats = scheduler.stats();
    return outputs;
  }

  KVCache prefix;
  std::vector<int64_t> prefix_ids;
  if (options.reuse_prefix_cache) {
    auto ids = tokenizer.EncodeWithBos(PromptPrefix(task, options.prompt));
    if (!ids.ok()) return Annotate(ids.status(), task_context);
    prefix_ids = *std::move(ids);
    if (!prefix_ids.empty()) {
      auto logits = RunForward(model, prefix_ids, &prefix);
      if (!logits.ok()) {
        return Annotate(logits.status(), absl::StrCat(task_context, " prompt prefix"));
      }
      if (!go_on()) return Cancelled(task_context, done, total);
    }
  }
  for (size_t begin = 0; begin < total; begin += batch_size) {
    const size_t end = std::min(total, begin + batch_size);
    // Rows whose tokenization starts with the prefix's continue its cache; the others
    // (no reuse, or tokens merged across the prefix boundary) run whole.
    std::vector<GenerationRow> rows;
    for (size_t i = begin; i < end; ++i) {
      const std::vector<int64_t>& ids = prompts[i];
      // A model whose positions depend on the total length must see a long prompt in
      // one pass, as a reference would.
      const bool length_dependent = limit > 0 && static_cast<int64_t>(ids.size()) > limit;
      if (!prefix.empty() && !length_dependent && ids.size() > prefix_ids.size() &&
          std::equal(prefix_ids.begin(), prefix_ids.end(), ids.begin())) {
        rows.push_back({i, true, std::vector<int64_t>(ids.begin() + prefix_ids.size(), ids.end())});
      } else {
        rows.push_back({i, false, ids});
      }
    }
    auto states = RunPrompts(model, rows, prefix, go_on);
    if (absl::IsCancelled(states.status())) return Cancelled(task_context, done, total);
    if (!states.ok()) {
      return Annotate(states.status(), absl::StrCat(task_context, " samples ", begin, "..", end - 1));
    }
    RETURN_IF_ERROR(decode(*std::move(states)));
  }
  return outputs;
}

}  // namespace

absl::StatusOr<double> ContinuationLoglik(const LanguageModel& model, const Tokenizer& tokenizer,
                                          const std::string& context,
                                          const std::string& continuation) {
  auto [ctx, cont] = MoveTrailingWhitespace(context, continuation);
  ASSIGN_OR_RETURN(ContextScorer scorer, ContextScorer::Create(model, tokenizer, ctx));
  return scorer.Score(cont);
}

absl::StatusOr<std::vector<double>> TokenLogprobs(const LanguageModel& model,
                                                  const std::vector<int64_t>& tokens) {
  if (tokens.empty()) return absl::InvalidArgumentError("no tokens to score");
  ASSIGN_OR_RETURN(at::Tensor lp, ForwardLogprobs(model, tokens, nullptr));
  return GuardTorch("evaluator", [&]() -> absl::StatusOr<std::vector<double>> {
    std::vector<double> out(tokens.size(), std::numeric_limits<double>::quiet_NaN());
    auto acc = lp.accessor<double, 2>();
    for (size_t i = 1; i < tokens.size(); ++i) out[i] = acc[i - 1][tokens[i]];
    return out;
  });
}

absl::StatusOr<std::vector<EvalOutput>> EvaluateTask(const LanguageModel& model,
                                                     const Tokenizer& tokenizer, const Task& task,
                                                     const EvalOptions& options) {
  if (tokenizer.vocab_size() > model.vocab_size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "tokenizer ", tokenizer.path(), " has ", tokenizer.vocab_size(),
        " tokens but the model only ", model.vocab_size(), " (wrong tokenizer?)"));
  }
  if (options.batch_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_tokens must be at least 1, got ", options.batch_tokens));
  }
  const bool packed = options.engine == EvalEngine::kPacked;
  if (task.kind == TaskKind::kMultipleChoice) {
    return packed ? EvaluateChoicesPacked(model, tokenizer, task, options)
                  : EvaluateChoicesPerRequest(model, tokenizer, task, options);
  }
  return EvaluateGeneration(model, tokenizer, task, options);
}

}  // namespace steadyeval
