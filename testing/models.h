// Helpers over libtorch: loading a committed fixture model, building id tensors
// and padded batches, and checking a model against a reference script's expected.json.
#ifndef STEADYEVAL_TESTING_MODELS_H_
#define STEADYEVAL_TESTING_MODELS_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "testing/files.h"
#include "testing/status_matchers.h"
#include "testing/tolerance.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/eval/evaluator.h"
#include "worker/model/language_model.h"

namespace steadyeval::testing {

// How a test builds the model of a checkpoint: LoadLanguageModel (dispatch on
// model_type) or one family's loader (LoadGpt2Model, LoadGptNeoxModel).
using ModelLoaderFn = absl::StatusOr<std::unique_ptr<LanguageModel>> (*)(
    const TensorSource& source, const WeightPlacement& placement);

// The model of checkpoint folder `dir`, built by `load` with the default (CPU, float32)
// placement; null (with a test failure) when it does not open or load.
inline std::unique_ptr<LanguageModel> LoadModelFrom(const std::string& dir,
                                                    ModelLoaderFn load = &LoadLanguageModel) {
  auto reader = CheckpointReader::Open(dir);
  EXPECT_OK(reader);
  if (!reader.ok()) return nullptr;
  auto model = load(**reader, WeightPlacement{});
  EXPECT_OK(model);
  return model.ok() ? *std::move(model) : nullptr;
}

// The model of fixture folder tests/fixtures/llama/`name`; null (with a test failure) when
// it does not load.
inline std::unique_ptr<LanguageModel> LoadFixtureModel(const std::string& name) {
  return LoadModelFrom(LlamaFixture(name));
}

// The "tokens" of fixture_dir/expected.json.
inline std::vector<int64_t> ReferenceTokens(const std::string& fixture_dir) {
  return ReadJson(fixture_dir + "/expected.json")["tokens"].get<std::vector<int64_t>>();
}

// A [1, T] int64 batch of `ids`.
inline at::Tensor Ids(const std::vector<int64_t>& ids) {
  return at::tensor(ids, at::kLong).view({1, -1});
}

// max |a - b| over all elements.
inline double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// Whether float32 `got` is within `bound` of `want` (same shape): max |got - want| against
// the bound's tolerance at magnitude max |want|. Records the check (testing/tolerance.h).
inline ::testing::AssertionResult WithinBound(const at::Tensor& got, const at::Tensor& want,
                                              const Fp32Bound& bound) {
  if (got.sizes() != want.sizes()) {
    return ::testing::AssertionFailure()
           << bound.label << ": shapes differ: " << got.sizes() << " vs " << want.sizes();
  }
  const at::Tensor w = want.to(at::kDouble);
  return CheckDeviation(bound, (got.to(at::kDouble) - w).abs().max().item<double>(),
                        w.abs().max().item<double>());
}

// Whether `got` differs from `want` clearly beyond rounding (BeyondBound at max |want|).
inline ::testing::AssertionResult DiffersBeyondBound(const at::Tensor& got, const at::Tensor& want,
                                                     const Fp32Bound& bound) {
  const at::Tensor w = want.to(at::kDouble);
  return BeyondBound((got.to(at::kDouble) - w).abs().max().item<double>(),
                     w.abs().max().item<double>(), bound);
}

// The float32 error bound (testing/tolerance.h) of the logits of the model in checkpoint
// folder `dir`, from its config.json (Llama, GPT-NeoX and GPT-2 field names), for
// comparing two float32 evaluations. K, the longest sum, is the largest of the hidden
// size, the MLP's inner size and 64 (the attention spans of the fixtures' sequences). D,
// the sums in sequence, is 9 per layer (input norm, Q/K/V, scores, softmax, weighted
// values, output projection, post-attention norm, MLP in, MLP out) plus the final norm
// and the LM head.
inline Fp32Bound LogitBound(const std::string& dir) {
  const nlohmann::json config = ReadJson(dir + "/config.json");
  auto field = [&](const char* a, const char* b) -> int64_t {
    if (config.contains(a) && config[a].is_number()) return config[a].get<int64_t>();
    if (config.contains(b) && config[b].is_number()) return config[b].get<int64_t>();
    return 0;
  };
  const int64_t hidden = field("hidden_size", "n_embd");
  int64_t inner = field("intermediate_size", "n_inner");
  if (inner == 0) inner = 4 * hidden;  // GPT-2's n_inner: null
  const int64_t layers = field("num_hidden_layers", "n_layer");
  EXPECT_GT(hidden * layers, 0) << dir << "/config.json: no hidden size or layer count";
  Fp32Bound bound;
  bound.label = std::filesystem::path(dir).filename().string() + " logits";
  bound.longest_sum = std::max({hidden, inner, int64_t{64}});
  bound.sums_in_sequence = 9 * layers + 2;
  bound.final_sum = 0;
  bound.evaluations = 2;
  return bound;
}

// LogitBound plus the log-softmax's sum over the vocabulary: for log-probs (and sums of
// them, all of one sign) of `evaluations` float32 evaluations (1: against a float64
// reference).
inline Fp32Bound LogprobBound(const std::string& dir, int evaluations = 2) {
  Fp32Bound bound = LogitBound(dir);
  bound.label = std::filesystem::path(dir).filename().string() + " log-probs";
  bound.final_sum = ReadJson(dir + "/config.json").value("vocab_size", int64_t{0});
  bound.evaluations = evaluations;
  return bound;
}

// A left-padded batch: ids [B, T] int64, mask [B, T] bool (true on real tokens).
struct PaddedBatch {
  at::Tensor ids;
  at::Tensor mask;
};

// Row b of `rows` right-aligned in a [B, width] batch (width 0: the longest row's length);
// padding ids are `pad_id` (any value: a model must ignore them, even outside its
// vocabulary).
inline PaddedBatch LeftPad(const std::vector<std::vector<int64_t>>& rows, int64_t pad_id,
                           int64_t width = 0) {
  size_t longest = 0;
  for (const auto& row : rows) longest = std::max(longest, row.size());
  const int64_t B = static_cast<int64_t>(rows.size());
  const int64_t T = width > 0 ? width : static_cast<int64_t>(longest);
  PaddedBatch batch{at::full({B, T}, pad_id, at::kLong),
                    at::zeros({B, T}, at::kBool)};
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = static_cast<int64_t>(rows[b].size());
    if (n == 0) continue;
    batch.ids[b].narrow(0, T - n, n).copy_(at::tensor(rows[b], at::kLong));
    batch.mask[b].narrow(0, T - n, n).fill_(true);
  }
  return batch;
}

// Feeds `tokens` to `model` one at a time through a fresh KVCache and expects the cache
// to grow by one each step and the step logits, concatenated, to be within `bound` of one
// pass over all of them. Stores the one-pass logits ([1, T, vocab]) in `one_pass` when not
// null. Wrap in ASSERT_NO_FATAL_FAILURE to stop the test on a fatal failure (a Forward
// error).
inline void ExpectStepwiseMatchesOnePass(const LanguageModel& model,
                                         const std::vector<int64_t>& tokens,
                                         const Fp32Bound& bound,
                                         at::Tensor* one_pass = nullptr) {
  auto full = model.Forward(Ids(tokens), nullptr);
  ASSERT_OK(full);
  if (one_pass != nullptr) *one_pass = *full;

  KVCache cache;
  std::vector<at::Tensor> steps;
  for (size_t i = 0; i < tokens.size(); ++i) {
    auto step = model.Forward(Ids({tokens[i]}), &cache);
    ASSERT_OK(step);
    EXPECT_EQ(cache.length(), static_cast<int64_t>(i + 1));
    steps.push_back(*step);
  }
  EXPECT_TRUE(WithinBound(at::cat(steps, 1), *full, bound));
}

// Checks `model` against fixture_dir/expected.json (tokens, token_logprobs,
// last_logprobs, as the tests/reference scripts write them with their own float64
// forward passes): TokenLogprobs of the tokens is NaN for token 0 and, from token 1 on,
// within LogprobBound(fixture_dir, 1) of token_logprobs; Forward of the tokens gives
// [1, T, vocab] float32 logits whose last-position log_softmax (in float64) is within the
// same bound of last_logprobs. One evaluation: the reference's own rounding (float64) is
// ~2^29 times smaller. Wrap in ASSERT_NO_FATAL_FAILURE to stop on a Forward error.
inline void ExpectMatchesReference(const LanguageModel& model, const std::string& fixture_dir) {
  nlohmann::json expected = ReadJson(fixture_dir + "/expected.json");
  std::vector<int64_t> tokens = expected["tokens"].get<std::vector<int64_t>>();
  Fp32Bound bound = LogprobBound(fixture_dir, /*evaluations=*/1);
  const std::string forward = bound.label;

  auto logprobs = TokenLogprobs(model, tokens);
  ASSERT_OK(logprobs);
  ASSERT_EQ(logprobs->size(), tokens.size());
  EXPECT_TRUE(std::isnan((*logprobs)[0]));
  ASSERT_EQ(expected["token_logprobs"].size(), tokens.size());
  std::vector<double> got(logprobs->begin() + 1, logprobs->end()), want;
  for (size_t i = 1; i < tokens.size(); ++i) {
    want.push_back(expected["token_logprobs"][i].get<double>());  // [0] is null
  }
  bound.label = forward + ": token log-probs vs float64 reference";
  EXPECT_TRUE(WithinBound(at::tensor(got, at::kDouble), at::tensor(want, at::kDouble), bound));

  // The whole distribution at the last position.
  auto logits = model.Forward(Ids(tokens), nullptr);
  ASSERT_OK(logits);
  ASSERT_EQ(logits->sizes(), (std::vector<int64_t>{1, static_cast<int64_t>(tokens.size()),
                                                   model.vocab_size()}));
  EXPECT_EQ(logits->scalar_type(), at::kFloat);
  const at::Tensor last = at::log_softmax((*logits)[0][-1].to(at::kDouble), -1);
  want = expected["last_logprobs"].get<std::vector<double>>();
  ASSERT_EQ(static_cast<int64_t>(want.size()), model.vocab_size());
  bound.label = forward + ": last-position log-probs vs float64 reference";
  EXPECT_TRUE(WithinBound(last, at::tensor(want, at::kDouble), bound));
}

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_MODELS_H_
