#include "worker/evaluator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/prompt.h"
#include "common/status.h"
#include "worker/torch_status.h"

namespace steadyeval {
namespace {

constexpr char kStopString[] = "\n\n";

// Python's str.isspace() code points.
bool IsPythonSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
         c == 0x202f || c == 0x205f || c == 0x3000;
}

// Start of the last UTF-8 code point of s[0:end) and its value (U+FFFD when malformed).
size_t LastCodePoint(const std::string& s, size_t end, uint32_t* code) {
  size_t start = end - 1;
  while (start > 0 && end - start < 4 && (static_cast<uint8_t>(s[start]) & 0xc0) == 0x80) --start;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + start;
  const size_t n = end - start;
  if (n == 1 && p[0] < 0x80) {
    *code = p[0];
  } else if (n == 2 && (p[0] & 0xe0) == 0xc0) {
    *code = ((p[0] & 0x1fu) << 6) | (p[1] & 0x3fu);
  } else if (n == 3 && (p[0] & 0xf0) == 0xe0) {
    *code = ((p[0] & 0x0fu) << 12) | ((p[1] & 0x3fu) << 6) | (p[2] & 0x3fu);
  } else if (n == 4 && (p[0] & 0xf8) == 0xf0) {
    *code = ((p[0] & 0x07u) << 18) | ((p[1] & 0x3fu) << 12) | ((p[2] & 0x3fu) << 6) |
            (p[3] & 0x3fu);
  } else {
    *code = 0xfffd;
    return end - 1;
  }
  return start;
}

torch::Tensor ToBatch(const std::vector<int64_t>& ids) {
  return torch::tensor(ids, torch::kInt64).view({1, -1});
}

// Forward of `ids` continuing `cache` (nullable); returns logits [1, T, V].
absl::StatusOr<torch::Tensor> RunForward(const LanguageModel& model,
                                         const std::vector<int64_t>& ids, KVCache* cache) {
  ASSIGN_OR_RETURN(torch::Tensor batch,
                   GuardTorch("evaluator", [&]() -> absl::StatusOr<torch::Tensor> {
                     return ToBatch(ids);
                   }));
  return model.Forward(batch, cache);
}

// Log-probs in double of every position ([T, V]) or, with `last_only`, of the last ([V]).
absl::StatusOr<torch::Tensor> ForwardLogprobs(const LanguageModel& model,
                                              const std::vector<int64_t>& ids, KVCache* cache,
                                              bool last_only = false) {
  ASSIGN_OR_RETURN(torch::Tensor logits, RunForward(model, ids, cache));
  return GuardTorch("evaluator", [&]() -> absl::StatusOr<torch::Tensor> {
    c10::InferenceMode inference;
    torch::Tensor rows = last_only ? logits[0][-1] : logits[0];
    return torch::log_softmax(rows.to(torch::kFloat64), -1);
  });
}

absl::StatusOr<int64_t> ArgmaxLast(const torch::Tensor& logits) {
  return GuardTorch("evaluator", [&]() -> absl::StatusOr<int64_t> {
    // torch::argmax returns the first maximal index: ties go to the lowest id.
    return logits[0][-1].argmax().item<int64_t>();
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
    return GuardTorch("evaluator", [&]() -> absl::StatusOr<double> {
      double total = next_logprobs_[cont[0]].item<double>();
      if (cont.size() > 1) {
        KVCache cache = cache_.Fork();
        ASSIGN_OR_RETURN(torch::Tensor lp,
                         ForwardLogprobs(model_, std::vector<int64_t>(cont.begin(), cont.end() - 1),
                                         &cache));
        torch::Tensor targets = torch::tensor(std::vector<int64_t>(cont.begin() + 1, cont.end()),
                                              torch::kInt64);
        total += lp.gather(1, targets.view({-1, 1})).sum().item<double>();
      }
      return total;
    });
  }

 private:
  ContextScorer(const LanguageModel& model, const Tokenizer& tokenizer, std::string context)
      : model_(model), tokenizer_(tokenizer), context_(std::move(context)) {}

  const LanguageModel& model_;
  const Tokenizer& tokenizer_;
  std::string context_;
  std::vector<int64_t> ctx_ids_;
  bool ctx_substituted_ = false;
  KVCache cache_;
  torch::Tensor next_logprobs_;  // [V] log p(· | context)
};

absl::StatusOr<EvalOutput> EvaluateChoice(const LanguageModel& model, const Tokenizer& tokenizer,
                                          const ChoiceExample& example, uint32_t index) {
  EvalOutput out;
  out.index = index;
  std::string context;
  std::vector<std::string> continuations;
  for (const std::string& choice : example.choices) {
    auto [ctx, cont] = MoveTrailingWhitespace(example.query, choice);
    context = ctx;
    continuations.push_back(cont);
  }
  ASSIGN_OR_RETURN(ContextScorer scorer, ContextScorer::Create(model, tokenizer, context));
  size_t best = 0;
  for (size_t k = 0; k < continuations.size(); ++k) {
    auto ll = scorer.Score(continuations[k]);
    if (!ll.ok()) return Annotate(ll.status(), absl::StrCat("option ", k));
    out.option_logliks.push_back(*ll);
    if (*ll > out.option_logliks[best]) best = k;
  }
  out.output = std::to_string(best);
  return out;
}

struct PrefixCache {
  std::vector<int64_t> ids;
  KVCache cache;
};

absl::StatusOr<EvalOutput> Generate(const LanguageModel& model, const Tokenizer& tokenizer,
                                    const Task& task, uint32_t index, const EvalOptions& options,
                                    const PrefixCache* prefix, const std::set<int64_t>& stop_ids) {
  EvalOutput out;
  out.index = index;
  const std::string prompt = BuildPrompt(task, index, PromptOptions{options.few_shots});
  ASSIGN_OR_RETURN(std::vector<int64_t> ids, tokenizer.EncodeWithBos(prompt));
  if (ids.empty()) return absl::InvalidArgumentError("the prompt encodes to no tokens");
  KVCache cache;
  std::vector<int64_t> to_run = ids;
  if (prefix != nullptr && !prefix->ids.empty() && ids.size() > prefix->ids.size() &&
      std::equal(prefix->ids.begin(), prefix->ids.end(), ids.begin())) {
    cache = prefix->cache.Fork();
    to_run.assign(ids.begin() + prefix->ids.size(), ids.end());
  }
  const int max_new = task.output_length + options.max_new_tokens_delta;
  std::vector<int64_t> generated;
  for (int step = 0; step < max_new; ++step) {
    ASSIGN_OR_RETURN(torch::Tensor logits, RunForward(model, to_run, &cache));
    ASSIGN_OR_RETURN(int64_t next, ArgmaxLast(logits));
    if (stop_ids.count(next) > 0) break;
    generated.push_back(next);
    ASSIGN_OR_RETURN(std::string text, tokenizer.Decode(generated));
    if (absl::StrContains(text, kStopString)) break;
    to_run.assign(1, next);
  }
  ASSIGN_OR_RETURN(out.output, tokenizer.Decode(generated));
  return out;
}

}  // namespace

std::pair<std::string, std::string> MoveTrailingWhitespace(const std::string& context,
                                                           const std::string& continuation) {
  size_t end = context.size();
  while (end > 0) {
    uint32_t code;
    size_t start = LastCodePoint(context, end, &code);
    if (!IsPythonSpace(code)) break;
    end = start;
  }
  return {context.substr(0, end), context.substr(end) + continuation};
}

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
  ASSIGN_OR_RETURN(torch::Tensor lp, ForwardLogprobs(model, tokens, nullptr));
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
  std::vector<EvalOutput> outputs;
  const size_t total = task.size();
  outputs.reserve(total);
  const std::string task_context = absl::StrCat("task ", task.name);
  if (task.kind == TaskKind::kMultipleChoice) {
    for (size_t i = 0; i < total; ++i) {
      auto out = EvaluateChoice(model, tokenizer, task.choice_examples[i], i);
      if (!out.ok()) {
        return Annotate(out.status(), absl::StrCat(task_context, " example ", i, " (id ",
                                                   task.choice_examples[i].id, ")"));
      }
      outputs.push_back(*std::move(out));
      if (options.progress) options.progress(i + 1, total);
    }
    return outputs;
  }

  std::set<int64_t> stop_ids(model.eos_token_ids().begin(), model.eos_token_ids().end());
  if (tokenizer.eos_id() >= 0) stop_ids.insert(tokenizer.eos_id());
  PrefixCache prefix;
  if (options.reuse_prefix_cache) {
    auto ids = tokenizer.EncodeWithBos(PromptPrefix(task, PromptOptions{options.few_shots}));
    if (!ids.ok()) return Annotate(ids.status(), task_context);
    prefix.ids = *std::move(ids);
    if (!prefix.ids.empty()) {
      auto logits = RunForward(model, prefix.ids, &prefix.cache);
      if (!logits.ok()) {
        return Annotate(logits.status(), absl::StrCat(task_context, " prompt prefix"));
      }
    }
  }
  for (size_t i = 0; i < total; ++i) {
    auto out = Generate(model, tokenizer, task, i, options,
                        options.reuse_prefix_cache ? &prefix : nullptr, stop_ids);
    if (!out.ok()) return Annotate(out.status(), absl::StrCat(task_context, " sample ", i));
    outputs.push_back(*std::move(out));
    if (options.progress) options.progress(i + 1, total);
  }
  return outputs;
}

}  // namespace steadyeval
