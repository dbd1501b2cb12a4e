// Llama forward pass against an independent reference.
//
// The fixtures under tests/fixtures/llama/<name>/ (config.json, safetensors weights,
// expected.json) were produced by
//     /usr/bin/python3 tests/reference/llama_reference.py
// which writes tiny random Llama checkpoints by hand and computes per-token log-probs with
// its own float64 NumPy forward pass. Weights stored in bf16/fp16 are rounded before the
// reference uses them, so every fixture, bf16 and fp16 included, must match within the
// float32 error bound of its shape (LogprobBound, worker/test_tolerance.h: 2.5e-5 to
// 3.6e-5 x max(1, |log-prob|) for these fixtures). Cache, batch and padding paths must
// match the one-pass logits within LogitBound (two float32 evaluations, ~3e-5 relative).
// Dropping the padding mask or shifting cached positions by one moves logits by 1 to 10,
// over 10^4 times these tolerances (measured by mutating model_common.cc).
#include "worker/model/llama/llama_model.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/torch.h>  // torch::optim for the AdamW test only

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/eval/evaluator.h"
#include "worker/model/language_model.h"
#include "worker/model/model_config.h"
#include "worker/backend/offline.h"
#include "worker/checkpoint/tensor_source.h"
#include "worker/test_fixtures.h"
#include "worker/model/test_models.h"

namespace steadyeval {
namespace {

using ::testing::HasSubstr;
using namespace testing_fixtures;

class LlamaReferenceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { ASSERT_OK(ConfigureThreads(1)); }
};

TEST_P(LlamaReferenceTest, MatchesReferenceLogprobs) {
  auto model = LoadFixtureModel(GetParam());
  ASSERT_NE(model, nullptr);
  ASSERT_NO_FATAL_FAILURE(ExpectMatchesReference(*model, LlamaFixture(GetParam())));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LlamaReferenceTest,
                         ::testing::Values("gqa", "tied", "mha", "bf16", "fp16", "sharded",
                                           "rope_linear", "rope_dynamic", "rope_llama3",
                                           "head_dim", "attn_bias", "qwen2"));

TEST(LlamaKVCacheTest, TokenByTokenEqualsOnePass) {
  ASSERT_OK(ConfigureThreads(1));
  // rope_llama3: static scaling must survive chunking; rope_dynamic is not here (its
  // 16 tokens exceed max_position_embeddings; see LlamaDynamicRopeTest).
  for (const char* name : {"gqa", "mha", "rope_linear", "rope_llama3", "head_dim", "attn_bias",
                           "qwen2"}) {
    auto model = LoadFixtureModel(name);
    ASSERT_NE(model, nullptr);
    const std::vector<int64_t> tokens = ReferenceTokens(LlamaFixture(name));
    ASSERT_NO_FATAL_FAILURE(ExpectStepwiseMatchesOnePass(*model, tokens, LogitBound(LlamaFixture(name))));
  }
}

TEST(LlamaKVCacheTest, ForkedPrefixEqualsOnePass) {
  ASSERT_OK(ConfigureThreads(1));
  const Fp32Bound bound = LogitBound(LlamaFixture("gqa"));
  auto model = LoadFixtureModel("gqa");
  ASSERT_NE(model, nullptr);
  const std::vector<int64_t> prefix = {1, 17, 99, 250, 3};
  const std::vector<int64_t> a = {44, 45, 46}, b = {300, 7};

  KVCache shared;
  ASSERT_OK(model->Forward(Ids(prefix), &shared));
  for (const auto& tail : {a, b, a}) {
    KVCache fork = shared.Fork();
    auto chunked = model->Forward(Ids(tail), &fork);
    ASSERT_OK(chunked);
    EXPECT_EQ(fork.length(), static_cast<int64_t>(prefix.size() + tail.size()));
    std::vector<int64_t> whole = prefix;
    whole.insert(whole.end(), tail.begin(), tail.end());
    auto full = model->Forward(Ids(whole), nullptr);
    ASSERT_OK(full);
    EXPECT_TRUE(WithinBound(full->narrow(1, prefix.size(), tail.size()), *chunked, bound));
  }
  EXPECT_EQ(shared.length(), static_cast<int64_t>(prefix.size()));  // forks left it alone
}

std::vector<int64_t> FixtureTokens(const std::string& name) {
  return ReferenceTokens(LlamaFixture(name));
}

// rope_dynamic: max_position_embeddings 8, factor 2, 16 reference tokens.
TEST(LlamaDynamicRopeTest, CacheWithinMaxPositionsEqualsOnePass) {
  ASSERT_OK(ConfigureThreads(1));
  const Fp32Bound bound = LogitBound(LlamaFixture("rope_dynamic"));
  auto model = LoadFixtureModel("rope_dynamic");
  ASSERT_NE(model, nullptr);
  std::vector<int64_t> tokens = FixtureTokens("rope_dynamic");
  tokens.resize(8);  // L <= max_position_embeddings: plain RoPE throughout
  auto full = model->Forward(Ids(tokens), nullptr);
  ASSERT_OK(full);
  KVCache cache;
  std::vector<at::Tensor> steps;
  for (int64_t token : tokens) {
    auto step = model->Forward(Ids({token}), &cache);
    ASSERT_OK(step);
    steps.push_back(*step);
  }
  EXPECT_TRUE(WithinBound(*full, at::cat(steps, 1), bound));
}

// Past max_position_embeddings each chunk uses the inv_freq of the length reached with
// it and cached keys are not re-rotated (as transformers' generate does), so a chunked
// pass is not the one-pass result: the documented reason to score in one pass.
TEST(LlamaDynamicRopeTest, CacheBeyondMaxPositionsKeepsEarlierRotation) {
  ASSERT_OK(ConfigureThreads(1));
  const Fp32Bound bound = LogitBound(LlamaFixture("rope_dynamic"));
  auto model = LoadFixtureModel("rope_dynamic");
  ASSERT_NE(model, nullptr);
  const std::vector<int64_t> tokens = FixtureTokens("rope_dynamic");
  const std::vector<int64_t> head(tokens.begin(), tokens.begin() + 8);
  const std::vector<int64_t> tail(tokens.begin() + 8, tokens.end());
  auto full = model->Forward(Ids(tokens), nullptr);
  ASSERT_OK(full);
  KVCache cache;
  auto first = model->Forward(Ids(head), &cache);
  ASSERT_OK(first);
  auto second = model->Forward(Ids(tail), &cache);
  ASSERT_OK(second);
  // The head chunk ran with L = 8 (no scaling): the head run alone.
  auto head_alone = model->Forward(Ids(head), nullptr);
  ASSERT_OK(head_alone);
  EXPECT_TRUE(WithinBound(*head_alone, *first, bound));
  // The tail ran with L = 16 against keys rotated for L = 8: not the one-pass logits.
  EXPECT_TRUE(DiffersBeyondBound(*second, full->narrow(1, 8, tail.size()), bound));
}

// Each row of a left-padded batch is scaled for its own length, so it matches the row
// run alone (and the reference for the full-length row).
TEST(LlamaDynamicRopeTest, PaddedRowsUseTheirOwnLength) {
  ASSERT_OK(ConfigureThreads(1));
  const Fp32Bound bound = LogitBound(LlamaFixture("rope_dynamic"));
  auto model = LoadFixtureModel("rope_dynamic");
  ASSERT_NE(model, nullptr);
  const std::vector<int64_t> tokens = FixtureTokens("rope_dynamic");
  const std::vector<std::vector<int64_t>> rows = {
      tokens, std::vector<int64_t>(tokens.begin(), tokens.begin() + 6),
      std::vector<int64_t>(tokens.begin() + 2, tokens.begin() + 13)};
  const int64_t T = static_cast<int64_t>(tokens.size());
  at::Tensor ids = at::zeros({3, T}, at::kLong);
  at::Tensor mask = at::zeros({3, T}, at::kBool);
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t n = static_cast<int64_t>(rows[b].size());
    ids[b].narrow(0, T - n, n).copy_(at::tensor(rows[b], at::kLong));
    mask[b].narrow(0, T - n, n).fill_(true);
  }
  auto batch = model->Forward(ids, mask, nullptr);
  ASSERT_OK(batch);
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t n = static_cast<int64_t>(rows[b].size());
    auto alone = model->Forward(Ids(rows[b]), nullptr);
    ASSERT_OK(alone);
    EXPECT_TRUE(WithinBound((*batch)[b].narrow(0, T - n, n), (*alone)[0], bound))
        << "row " << b;
  }
}

TEST(LlamaModelTest, RejectsBadInputAndKeepsCache) {
  auto model = LoadFixtureModel("tied");  // vocab 200
  ASSERT_NE(model, nullptr);
  KVCache cache;
  ASSERT_OK(model->Forward(Ids({1, 2, 3}), &cache));
  EXPECT_THAT(model->Forward(Ids({5, 200}), &cache),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token id 200")));
  EXPECT_EQ(cache.length(), 3);
  EXPECT_THAT(model->Forward(at::zeros({3}, at::kLong), nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[batch, tokens]")));
  EXPECT_THAT(model->Forward(at::zeros({2, 1}, at::kLong), &cache),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch size")));
}

TEST(LlamaModelTest, BatchOfTwoEqualsSingleSequences) {
  const Fp32Bound bound = LogitBound(LlamaFixture("gqa"));
  auto model = LoadFixtureModel("gqa");
  ASSERT_NE(model, nullptr);
  std::vector<int64_t> a = {1, 5, 9, 13}, b = {1, 400, 2, 77};
  at::Tensor batch = at::stack({Ids(a)[0], Ids(b)[0]});
  auto both = model->Forward(batch, nullptr);
  auto only_a = model->Forward(Ids(a), nullptr);
  auto only_b = model->Forward(Ids(b), nullptr);
  ASSERT_OK(both);
  ASSERT_OK(only_a);
  ASSERT_OK(only_b);
  EXPECT_TRUE(WithinBound((*both)[0], (*only_a)[0], bound));
  EXPECT_TRUE(WithinBound((*both)[1], (*only_b)[0], bound));
}

TEST(LlamaModelTest, WeightsThatDisagreeWithConfigAreReported) {
  auto reader = CheckpointReader::Open(LlamaFixture("tied"));
  ASSERT_OK(reader);
  auto config = ParseLlamaConfig((*reader)->config_json());
  ASSERT_OK(config);
  LlamaConfig untied = *config;
  untied.tie_word_embeddings = false;
  EXPECT_THAT(LlamaModel::Create(untied, **reader),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'lm_head.weight'")));
  LlamaConfig wider = *config;
  wider.intermediate_size = 128;
  EXPECT_THAT(LlamaModel::Create(wider, **reader),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'model.layers.0.mlp.gate_proj.weight' has shape [64, 32]")));
}

TEST(ModelConfigTest, ParsesFieldsAndDefaults) {
  auto config = ParseLlamaConfig(R"({"model_type": "llama", "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 8,
      "vocab_size": 1000, "eos_token_id": [2, 7], "bos_token_id": 1,
      "torch_dtype": "bfloat16", "rope_scaling": null})");
  ASSERT_OK(config);
  EXPECT_EQ(config->num_key_value_heads, 8);
  EXPECT_EQ(config->head_dim, 8);
  EXPECT_EQ(config->rope_theta, 10000.0);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_EQ(config->eos_token_ids, (std::vector<int64_t>{2, 7}));
  EXPECT_EQ(config->bos_token_id, 1);
  EXPECT_EQ(config->torch_dtype, "bfloat16");
  EXPECT_FALSE(config->qkv_bias);

  auto qwen = ParseLlamaConfig(R"({"model_type": "qwen2", "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 8,
      "num_key_value_heads": 2, "vocab_size": 10, "eos_token_id": 3})");
  ASSERT_OK(qwen);
  EXPECT_TRUE(qwen->qkv_bias);
  EXPECT_FALSE(qwen->o_bias);
  EXPECT_EQ(qwen->eos_token_ids, (std::vector<int64_t>{3}));
}

// A minimal llama config.json with `extra` (JSON members, leading comma) appended.
std::string LlamaJson(const std::string& extra) {
  return R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
      "num_hidden_layers": 1, "num_attention_heads": 8, "vocab_size": 10,
      "max_position_embeddings": 2048)" +
         extra + "}";
}

TEST(ModelConfigTest, ParsesRopeScalingInBothSpellings) {
  auto linear = ParseLlamaConfig(LlamaJson(R"(, "rope_scaling": {"type": "linear",
      "factor": 4.0})"));
  ASSERT_OK(linear);
  EXPECT_EQ(linear->rope_scaling.kind, RopeScaling::Kind::kLinear);
  EXPECT_EQ(linear->rope_scaling.factor, 4.0);

  auto dynamic = ParseLlamaConfig(LlamaJson(R"(, "rope_scaling": {"rope_type": "dynamic",
      "factor": 2})"));
  ASSERT_OK(dynamic);
  EXPECT_EQ(dynamic->rope_scaling.kind, RopeScaling::Kind::kDynamic);
  EXPECT_EQ(dynamic->rope_scaling.factor, 2.0);

  auto llama3 = ParseLlamaConfig(LlamaJson(R"(, "rope_scaling": {"rope_type": "llama3",
      "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192})"));
  ASSERT_OK(llama3);
  EXPECT_EQ(llama3->rope_scaling.kind, RopeScaling::Kind::kLlama3);
  EXPECT_EQ(llama3->rope_scaling.factor, 8.0);
  EXPECT_EQ(llama3->rope_scaling.low_freq_factor, 1.0);
  EXPECT_EQ(llama3->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(llama3->rope_scaling.original_max_position_embeddings, 8192);

  // Both spellings: rope_type wins.
  auto both = ParseLlamaConfig(LlamaJson(R"(, "rope_scaling": {"type": "linear",
      "rope_type": "dynamic", "factor": 2.0})"));
  ASSERT_OK(both);
  EXPECT_EQ(both->rope_scaling.kind, RopeScaling::Kind::kDynamic);

  for (const char* none : {R"(, "rope_scaling": null)", R"(, "rope_scaling": {"rope_type":
      "default"})", ""}) {
    auto plain = ParseLlamaConfig(LlamaJson(none));
    ASSERT_OK(plain);
    EXPECT_EQ(plain->rope_scaling.kind, RopeScaling::Kind::kNone) << none;
  }
}

TEST(ModelConfigTest, RejectsBadRopeScaling) {
  EXPECT_THAT(ParseLlamaConfig(LlamaJson(R"(, "rope_scaling": {"type": "yarn",
      "factor": 4.0})")),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("'yarn'")));
  EXPECT_THAT(ParseLlamaConfig(LlamaJson(R"(, "rope_scaling": {"rope_type": "linear"})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rope_scaling.factor")));
  EXPECT_THAT(ParseLlamaConfig(LlamaJson(R"(, "rope_scaling": {"type": "dynamic",
      "factor": "2"})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rope_scaling.factor")));
  EXPECT_THAT(ParseLlamaConfig(LlamaJson(R"(, "rope_scaling": {"type": "linear",
      "factor": 0})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rope_scaling.factor")));
  EXPECT_THAT(ParseLlamaConfig(LlamaJson(R"(, "rope_scaling": {"factor": 2.0})")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rope_type")));
  EXPECT_THAT(ParseLlamaConfig(LlamaJson(R"(, "rope_scaling": {"rope_type": "llama3",
      "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0})")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("rope_scaling.original_max_position_embeddings")));
  EXPECT_THAT(ParseLlamaConfig(LlamaJson(R"(, "rope_scaling": {"rope_type": "llama3",
      "factor": 8.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("rope_scaling.low_freq_factor")));
  EXPECT_THAT(ParseLlamaConfig(LlamaJson(R"(, "rope_scaling": {"rope_type": "llama3",
      "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192})")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("rope_scaling.high_freq_factor")));
  EXPECT_THAT(ParseLlamaConfig(R"({"model_type": "llama", "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 8,
      "vocab_size": 10, "rope_scaling": {"type": "dynamic", "factor": 2.0}})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("max_position_embeddings")));
}

TEST(ModelConfigTest, ParsesHeadDimAndAttentionBias) {
  auto config = ParseLlamaConfig(LlamaJson(R"(, "head_dim": 12, "attention_bias": true)"));
  ASSERT_OK(config);
  EXPECT_EQ(config->head_dim, 12);
  EXPECT_TRUE(config->qkv_bias);
  EXPECT_TRUE(config->o_bias);
}

TEST(ModelConfigTest, RejectsUnsupported) {
  EXPECT_THAT(ParseLlamaConfig(R"({"model_type": "gpt_neox"})"),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("gpt_neox")));
  EXPECT_THAT(ParseLlamaConfig(R"({"model_type": "llama", "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 8,
      "num_key_value_heads": 3, "vocab_size": 10})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("num_key_value_heads")));
  EXPECT_THAT(ParseLlamaConfig(R"({"model_type": "llama", "hidden_size": 64})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("intermediate_size")));
  EXPECT_THAT(ParseLlamaConfig("not json"), StatusIs(absl::StatusCode::kInvalidArgument,
                                                     HasSubstr("config.json")));
}

TEST(LanguageModelTest, UnknownFamilyIsAClearError) {
  std::string dir = CopyFixture(LlamaFixture("tied"), "ckpt");
  nlohmann::json config = ReadJson(dir + "/config.json");
  config["model_type"] = "mamba";
  WriteText(dir + "/config.json", config.dump());
  auto reader = CheckpointReader::Open(dir);
  ASSERT_OK(reader);
  EXPECT_THAT(LoadLanguageModel(**reader),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("'mamba'")));
}

// ---- Training surface (examples/toy_pretrain) ----------------------------------------------

// A model built from clones of fixture `name`'s weights (a TensorMap), so training may
// update them in place; null (with a test failure) when it does not load.
std::unique_ptr<LlamaModel> TrainableFixtureModel(const std::string& name) {
  auto reader = CheckpointReader::Open(LlamaFixture(name));
  EXPECT_OK(reader);
  if (!reader.ok()) return nullptr;
  TensorMap map("trainable " + name, (*reader)->config_json());
  for (const std::string& tensor : (*reader)->TensorNames()) {
    auto t = (*reader)->Tensor(tensor);
    EXPECT_OK(t);
    if (!t.ok() || !map.Add(tensor, t->clone()).ok()) return nullptr;
  }
  auto config = ParseLlamaConfig(map.config_json());
  EXPECT_OK(config);
  if (!config.ok()) return nullptr;
  auto model = LlamaModel::Create(*config, map);
  EXPECT_OK(model);
  return model.ok() ? *std::move(model) : nullptr;
}

TEST(LlamaTrainingTest, NamedWeightsListEveryStoredTensorOnce) {
  for (const std::string name : {"tied", "attn_bias", "gqa"}) {
    SCOPED_TRACE(name);
    auto model = TrainableFixtureModel(name);
    ASSERT_NE(model, nullptr);
    auto reader = CheckpointReader::Open(LlamaFixture(name));
    ASSERT_OK(reader);
    std::vector<std::string> names;
    for (const auto& [weight, tensor] : model->NamedWeights()) {
      names.push_back(weight);
      EXPECT_TRUE(tensor.defined());
    }
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (*reader)->TensorNames());
  }
}

TEST(LlamaTrainingTest, ForwardForTrainingEqualsForward) {
  for (const std::string name : {"gqa", "tied", "attn_bias"}) {
    SCOPED_TRACE(name);
    const Fp32Bound bound = LogitBound(LlamaFixture(name));
    auto model = TrainableFixtureModel(name);
    ASSERT_NE(model, nullptr);
    for (auto& [weight, tensor] : model->NamedWeights()) tensor.requires_grad_(true);
    const at::Tensor ids = at::tensor({1, 5, 9, 13, 40, 2, 7, 7, 3, 1, 4, 6}, at::kLong)
                                  .view({2, 6});
    auto inference = model->Forward(ids, nullptr);
    auto training = model->ForwardForTraining(ids);
    ASSERT_OK(inference);
    ASSERT_OK(training);
    EXPECT_TRUE(training->requires_grad());
    EXPECT_EQ(training->sizes(), inference->sizes());
    EXPECT_TRUE(WithinBound(training->detach(), *inference, bound));
  }
}

TEST(LlamaTrainingTest, RejectsBadTrainingInput) {
  auto model = TrainableFixtureModel("gqa");
  ASSERT_NE(model, nullptr);
  EXPECT_THAT(model->ForwardForTraining(at::tensor({1, 100000}, at::kLong).view({1, 2})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("outside the vocabulary")));
  EXPECT_THAT(model->ForwardForTraining(at::tensor({1.0, 2.0}).view({1, 2})),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(LlamaTrainingTest, AdamWStepsLowerTheLossAndChangeForward) {
  auto model = TrainableFixtureModel("gqa");
  ASSERT_NE(model, nullptr);
  std::vector<at::Tensor> params;
  for (auto& [weight, tensor] : model->NamedWeights()) params.push_back(tensor.requires_grad_(true));
  torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(1e-2));
  const at::Tensor batch =
      at::tensor({1, 5, 9, 13, 40, 2, 7, 7, 3, 1, 4, 6, 8, 9, 10, 11}, at::kLong).view({2, 8});
  const at::Tensor inputs = batch.narrow(1, 0, 7), targets = batch.narrow(1, 1, 7);
  auto before = model->Forward(inputs, nullptr);
  ASSERT_OK(before);
  auto loss_of = [&]() {
    auto logits = model->ForwardForTraining(inputs);
    EXPECT_OK(logits);
    return torch::nn::functional::cross_entropy(logits->reshape({-1, logits->size(-1)}),
                                                targets.reshape({-1}));
  };
  const double initial = loss_of().item<double>();
  for (int step = 0; step < 10; ++step) {
    at::Tensor loss = loss_of();
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
  }
  const double final_loss = loss_of().item<double>();
  EXPECT_LT(final_loss, initial - 0.5) << "initial " << initial;
  // The optimizer updated the very tensors Forward (inference) reads.
  auto after = model->Forward(inputs, nullptr);
  ASSERT_OK(after);
  EXPECT_GT(MaxAbsDiff(*after, *before), 1e-3);
}

}  // namespace
}  // namespace steadyeval
