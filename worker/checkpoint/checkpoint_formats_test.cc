// Every weight format CheckpointReader reads gives the same model.
//
// tests/fixtures/formats/ holds the tiny Llama of tests/fixtures/llama/gqa written again as
// sharded safetensors, pytorch_model.bin (torch.save of an OrderedDict), sharded .bin, a .bin
// whose tensors are views of one storage, and bfloat16 safetensors; it is produced by
// `/usr/bin/python3 tests/reference/make_format_fixtures.py` (Debian's python3-torch 1.13
// and numpy). gqa/expected.json holds the float64 NumPy reference log-probs
// (tests/reference/llama_reference.py). Each folder is opened, loaded with
// LoadLanguageModel, run on expected.json's tokens, and its per-token log-probs compared.
#include <cmath>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "testing/files.h"
#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/model/language_model.h"
#include "testing/models.h"

namespace steadyeval {
namespace {

using namespace ::steadyeval::testing;

// Tolerances (testing/tolerance.h), all for the gqa shape.
// fp32 weights identical to gqa's: the same computation on the same values; the loaders
// may hand the kernels differently laid-out tensors (bin_views stores a transposed view),
// so allow two float32 evaluations' rounding.
Fp32Bound SameWeightsBound() {
  Fp32Bound bound = LogprobBound(LlamaFixture("gqa"));
  bound.label = "same fp32 weights, another file format";
  return bound;
}
// The C++ fp32 forward against the float64 reference (as in llama_model_test.cc).
Fp32Bound ReferenceBound() {
  Fp32Bound bound = LogprobBound(LlamaFixture("gqa"), /*evaluations=*/1);
  bound.label = "fp32 forward vs float64 reference";
  return bound;
}
// bfloat16 keeps 8 significant bits: rounding moves each weight by up to 2^-9 of itself,
// which moves every sum it enters by at most 2^-9 of its terms' magnitudes; through the
// forward's D sums that is D·2^-9 relative (0.039 x max(1, |log-prob|) here, ~0.4 nats at
// these log-probs of -5 to -10). Measured on this fixture: 0.031 nats from the fp32 model,
// and 0.031 from the float64 reference as well. A misread tensor moves whole nats.
Fp32Bound Bf16Bound(int evaluations) {
  Fp32Bound bound = LogprobBound(LlamaFixture("gqa"), evaluations);
  bound.weight_rounding = kBf16WeightRounding;
  bound.label = "bf16-rounded weights vs fp32 weights";
  return bound;
}

std::string FormatFixture(const std::string& name) {
  return SourceDir() + "/tests/fixtures/formats/" + name;
}

struct Expected {
  std::vector<int64_t> tokens;
  std::vector<double> token_logprobs;  // [0] is unused (no prediction for the first token)
};

Expected ReadExpected() {
  nlohmann::json doc = ReadJson(LlamaFixture("gqa") + "/expected.json");
  Expected e;
  e.tokens = doc["tokens"].get<std::vector<int64_t>>();
  for (const auto& lp : doc["token_logprobs"]) {
    e.token_logprobs.push_back(lp.is_null() ? NAN : lp.get<double>());
  }
  return e;
}

// log p(token t | tokens before t) for t >= 1 ([0] is NaN), from the checkpoint in `dir`.
std::vector<double> TokenLogprobs(const std::string& dir, const std::vector<int64_t>& tokens) {
  auto reader = CheckpointReader::Open(dir);
  EXPECT_OK(reader);
  if (!reader.ok()) return {};
  auto model = LoadLanguageModel(**reader);
  EXPECT_OK(model);
  if (!model.ok()) return {};
  at::Tensor ids = at::tensor(tokens, at::kLong).view({1, -1});
  auto logits = (*model)->Forward(ids, nullptr);
  EXPECT_OK(logits);
  if (!logits.ok()) return {};
  at::Tensor logprobs = at::log_softmax(logits->to(at::kDouble)[0], -1);
  std::vector<double> out(tokens.size(), NAN);
  for (size_t t = 1; t < tokens.size(); ++t) {
    out[t] = logprobs[static_cast<int64_t>(t) - 1][tokens[t]].item<double>();
  }
  return out;
}

// Token log-probs 1.. of `got` within `bound` of `want`'s (same length).
::testing::AssertionResult LogprobsWithin(const std::vector<double>& got,
                                          const std::vector<double>& want,
                                          const Fp32Bound& bound) {
  if (got.size() != want.size() || got.size() < 2) {
    return ::testing::AssertionFailure() << "sizes " << got.size() << " and " << want.size();
  }
  return WithinBound(at::tensor(got, at::kDouble).narrow(0, 1, got.size() - 1),
                     at::tensor(want, at::kDouble).narrow(0, 1, want.size() - 1), bound);
}

TEST(CheckpointFormatsTest, SingleFileModelMatchesReference) {
  const Expected expected = ReadExpected();
  const std::vector<double> single = TokenLogprobs(LlamaFixture("gqa"), expected.tokens);
  ASSERT_EQ(single.size(), expected.tokens.size());
  EXPECT_TRUE(LogprobsWithin(single, expected.token_logprobs, ReferenceBound()));
}

class Fp32FormatTest : public ::testing::TestWithParam<std::string> {};

TEST_P(Fp32FormatTest, GivesTheSingleFileModelsLogprobs) {
  const Expected expected = ReadExpected();
  const std::vector<double> single = TokenLogprobs(LlamaFixture("gqa"), expected.tokens);
  const std::vector<double> got = TokenLogprobs(FormatFixture(GetParam()), expected.tokens);
  ASSERT_EQ(got.size(), expected.tokens.size());
  EXPECT_TRUE(LogprobsWithin(got, single, SameWeightsBound()));
  EXPECT_TRUE(LogprobsWithin(got, expected.token_logprobs, ReferenceBound()));
}

INSTANTIATE_TEST_SUITE_P(AllFormats, Fp32FormatTest,
                         ::testing::Values("safetensors_sharded", "bin", "bin_sharded",
                                         // views of one shared storage, one transposed
                                         "bin_views"));

TEST(CheckpointFormatsTest, Bf16IsCloseButReallyAnotherPrecision) {
  auto reader = CheckpointReader::Open(FormatFixture("bf16"));
  ASSERT_OK(reader);
  auto info = (*reader)->Info("model.layers.0.mlp.up_proj.weight");
  ASSERT_OK(info);
  EXPECT_EQ(info->dtype, DType::kBF16);

  const Expected expected = ReadExpected();
  const std::vector<double> single = TokenLogprobs(LlamaFixture("gqa"), expected.tokens);
  const std::vector<double> bf16 = TokenLogprobs(FormatFixture("bf16"), expected.tokens);
  ASSERT_EQ(bf16.size(), expected.tokens.size());
  EXPECT_TRUE(LogprobsWithin(bf16, single, Bf16Bound(/*evaluations=*/2)));
  EXPECT_TRUE(LogprobsWithin(bf16, expected.token_logprobs, Bf16Bound(/*evaluations=*/1)));
  // Really another precision: further from fp32 than fp32 rounding could take it.
  double difference = 0, magnitude = 0;
  for (size_t t = 1; t < bf16.size(); ++t) {
    difference = std::max(difference, std::abs(bf16[t] - single[t]));
    magnitude = std::max(magnitude, std::abs(single[t]));
  }
  EXPECT_TRUE(BeyondBound(difference, magnitude, SameWeightsBound()));
}

}  // namespace
}  // namespace steadyeval
