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

#include <torch/torch.h>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/checkpoint_reader.h"
#include "worker/language_model.h"
#include "worker/test_fixtures.h"

namespace steadyeval {
namespace {

using namespace testing_fixtures;

// fp32 weights identical to gqa's: the forward is the same computation on the same values,
// so only kernel-dispatch noise may differ (none is expected; 1e-5 leaves room).
constexpr double kSameWeightsTolerance = 1e-5;
// The C++ fp32 forward against the float64 reference (as in llama_model_test.cc).
constexpr double kReferenceTolerance = 1e-4;
// bfloat16 keeps 8 significant bits: rounding moves each weight by up to 2^-9 relative
// (~0.2%), and through two layers and the LM head that shifts log-probs by a few hundredths
// of a nat. Measured on this fixture (libtorch 1.13 CPU): the largest per-token difference
// from the fp32 model is 0.031 nats, and 0.031 from the float64 reference as well. 0.1 nats
// leaves a 3x margin and is still far below what a misread tensor gives (whole nats: these
// log-probs are -5 to -10 over a 420-token vocabulary).
constexpr double kBf16Tolerance = 0.1;
// Below this, "bf16" would be indistinguishable from fp32 (the weights were not rounded).
constexpr double kBf16MinimumDifference = 1e-4;

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
  torch::Tensor ids = torch::tensor(tokens, torch::kInt64).view({1, -1});
  auto logits = (*model)->Forward(ids, nullptr);
  EXPECT_OK(logits);
  if (!logits.ok()) return {};
  torch::Tensor logprobs = torch::log_softmax(logits->to(torch::kFloat64)[0], -1);
  std::vector<double> out(tokens.size(), NAN);
  for (size_t t = 1; t < tokens.size(); ++t) {
    out[t] = logprobs[static_cast<int64_t>(t) - 1][tokens[t]].item<double>();
  }
  return out;
}

double MaxAbsDifference(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t t = 1; t < std::min(a.size(), b.size()); ++t) {
    worst = std::max(worst, std::abs(a[t] - b[t]));
  }
  return worst;
}

TEST(CheckpointFormatsTest, SingleFileModelMatchesReference) {
  const Expected expected = ReadExpected();
  const std::vector<double> single = TokenLogprobs(LlamaFixture("gqa"), expected.tokens);
  ASSERT_EQ(single.size(), expected.tokens.size());
  EXPECT_LE(MaxAbsDifference(single, expected.token_logprobs), kReferenceTolerance);
}

class Fp32FormatTest : public testing::TestWithParam<std::string> {};

TEST_P(Fp32FormatTest, GivesTheSingleFileModelsLogprobs) {
  const Expected expected = ReadExpected();
  const std::vector<double> single = TokenLogprobs(LlamaFixture("gqa"), expected.tokens);
  const std::vector<double> got = TokenLogprobs(FormatFixture(GetParam()), expected.tokens);
  ASSERT_EQ(got.size(), expected.tokens.size());
  const double difference = MaxAbsDifference(got, single);
  RecordProperty("max_logprob_difference", std::to_string(difference));
  EXPECT_LE(difference, kSameWeightsTolerance);
  EXPECT_LE(MaxAbsDifference(got, expected.token_logprobs), kReferenceTolerance);
}

INSTANTIATE_TEST_SUITE_P(AllFormats, Fp32FormatTest,
                         testing::Values("safetensors_sharded", "bin", "bin_sharded",
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
  const double difference = MaxAbsDifference(bf16, single);
  RecordProperty("bf16_max_logprob_difference", std::to_string(difference));
  EXPECT_LE(difference, kBf16Tolerance);
  EXPECT_GE(difference, kBf16MinimumDifference);
  const double from_reference = MaxAbsDifference(bf16, expected.token_logprobs);
  RecordProperty("bf16_max_difference_from_reference", std::to_string(from_reference));
  EXPECT_LE(from_reference, kBf16Tolerance);
}

}  // namespace
}  // namespace steadyeval
