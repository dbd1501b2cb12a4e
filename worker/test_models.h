// Test-only helpers over libtorch: loading a committed fixture model, building id tensors
// and padded batches, and checking a model against a reference script's expected.json.
#ifndef STEADYEVAL_WORKER_TEST_MODELS_H_
#define STEADYEVAL_WORKER_TEST_MODELS_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/checkpoint_reader.h"
#include "worker/evaluator.h"
#include "worker/language_model.h"
#include "worker/test_fixtures.h"

namespace steadyeval {
namespace testing_fixtures {

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
inline torch::Tensor Ids(const std::vector<int64_t>& ids) {
  return torch::tensor(ids, torch::kInt64).view({1, -1});
}

// max |a - b| over all elements.
inline double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// A left-padded batch: ids [B, T] int64, mask [B, T] bool (true on real tokens).
struct PaddedBatch {
  torch::Tensor ids;
  torch::Tensor mask;
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
  PaddedBatch batch{torch::full({B, T}, pad_id, torch::kInt64),
                    torch::zeros({B, T}, torch::kBool)};
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = static_cast<int64_t>(rows[b].size());
    if (n == 0) continue;
    batch.ids[b].narrow(0, T - n, n).copy_(torch::tensor(rows[b], torch::kInt64));
    batch.mask[b].narrow(0, T - n, n).fill_(true);
  }
  return batch;
}

// Feeds `tokens` to `model` one at a time through a fresh KVCache and expects the cache
// to grow by one each step and the step logits, concatenated, to be within `tolerance`
// of one pass over all of them (the message names `label`). Stores the one-pass logits
// ([1, T, vocab]) in `one_pass` when not null. Wrap in ASSERT_NO_FATAL_FAILURE to stop
// the test on a fatal failure (a Forward error).
inline void ExpectStepwiseMatchesOnePass(const LanguageModel& model,
                                         const std::vector<int64_t>& tokens, double tolerance,
                                         const std::string& label,
                                         torch::Tensor* one_pass = nullptr) {
  auto full = model.Forward(Ids(tokens), nullptr);
  ASSERT_OK(full);
  if (one_pass != nullptr) *one_pass = *full;

  KVCache cache;
  std::vector<torch::Tensor> steps;
  for (size_t i = 0; i < tokens.size(); ++i) {
    auto step = model.Forward(Ids({tokens[i]}), &cache);
    ASSERT_OK(step);
    EXPECT_EQ(cache.length(), static_cast<int64_t>(i + 1));
    steps.push_back(*step);
  }
  EXPECT_LT(MaxAbsDiff(*full, torch::cat(steps, 1)), tolerance) << label;
}

// The largest |model - reference| log-prob deviations ExpectMatchesReference found.
struct ReferenceDeviation {
  double token = 0;  // over the per-token log-probs (token 1 on)
  double last = 0;   // over the whole distribution at the last position
};

// Checks `model` against fixture_dir/expected.json (tokens, token_logprobs,
// last_logprobs, as the tests/reference scripts write it): TokenLogprobs of the tokens
// is NaN for token 0 and within `tolerance` of token_logprobs for every later token
// (EXPECT_NEAR each); Forward of the tokens gives [1, T, vocab] float32 logits whose
// last-position log_softmax (in float64) is within `tolerance` of last_logprobs
// (EXPECT_LT on the largest deviation). Fills `deviation`; a fatal failure (ASSERT)
// returns early, leaving the rest of it zero.
inline void CompareWithReference(const LanguageModel& model, const std::string& fixture_dir,
                                 double tolerance, ReferenceDeviation* deviation) {
  nlohmann::json expected = ReadJson(fixture_dir + "/expected.json");
  std::vector<int64_t> tokens = expected["tokens"].get<std::vector<int64_t>>();

  auto logprobs = TokenLogprobs(model, tokens);
  ASSERT_OK(logprobs);
  ASSERT_EQ(logprobs->size(), tokens.size());
  EXPECT_TRUE(std::isnan((*logprobs)[0]));
  for (size_t i = 1; i < tokens.size(); ++i) {
    const double want = expected["token_logprobs"][i].get<double>();
    EXPECT_NEAR((*logprobs)[i], want, tolerance) << "token " << i;
    deviation->token = std::max(deviation->token, std::abs((*logprobs)[i] - want));
  }

  // The whole distribution at the last position.
  auto logits = model.Forward(Ids(tokens), nullptr);
  ASSERT_OK(logits);
  ASSERT_EQ(logits->sizes(), (std::vector<int64_t>{1, static_cast<int64_t>(tokens.size()),
                                                   model.vocab_size()}));
  EXPECT_EQ(logits->scalar_type(), torch::kFloat32);
  torch::Tensor last = torch::log_softmax((*logits)[0][-1].to(torch::kFloat64), -1);
  std::vector<double> want = expected["last_logprobs"].get<std::vector<double>>();
  ASSERT_EQ(static_cast<int64_t>(want.size()), model.vocab_size());
  for (size_t v = 0; v < want.size(); ++v) {
    deviation->last = std::max(deviation->last, std::abs(last[v].item<double>() - want[v]));
  }
  EXPECT_LT(deviation->last, tolerance);
}

// CompareWithReference, returning the deviations (zero where a fatal failure stopped it).
inline ReferenceDeviation ExpectMatchesReference(const LanguageModel& model,
                                                 const std::string& fixture_dir,
                                                 double tolerance) {
  ReferenceDeviation deviation;
  CompareWithReference(model, fixture_dir, tolerance, &deviation);
  return deviation;
}

}  // namespace testing_fixtures
}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_TEST_MODELS_H_
