// GPT-NeoX (Pythia) forward pass against an independent reference.
//
// The fixtures under tests/fixtures/gpt_neox/<name>/ (config.json, model.safetensors,
// expected.json) were produced by
//     /usr/bin/python3 tests/reference/gpt_neox_reference.py
// which writes tiny random GPT-NeoX checkpoints (H 64, 2 layers, head_dim 16 or 8) by hand
// and computes per-token log-probs with its own float64 NumPy forward pass:
//   parallel      use_parallel_residual true, rotary_pct 0.25 (4 of 16 dims rotate), gelu
//   sequential    use_parallel_residual false, rotary_pct 0.5, rotary_emb_base 1000,
//                 gelu_new, eos_token_id [0, 2]
//   tied          tie_word_embeddings true (no embed_out), rotary_pct 1.0
//   bf16          as parallel, weights stored bf16 (the reference uses the rounded values)
//   no_attn_bias  attention_bias false (no query_key_value / dense biases), relu, 8 heads
// The weight scales are large enough that a wrong layout is caught: the script asserts
// that splitting the fused QKV as [3, nh, hd] instead of per head, rotating all head dims,
// taking the other residual form or rotating interleaved pairs moves some per-token
// log-prob by more than 0.01 in every fixture (in fact by 0.4 to 3.5). Every fixture must
// match within the float32 error bound of its shape (LogprobBound,
// worker/test_tolerance.h); cache and padding paths match the one-pass logits within
// LogitBound.
#include "worker/model/gpt_neox/gpt_neox_model.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/eval/evaluator.h"
#include "worker/model/language_model.h"
#include "worker/backend/offline.h"
#include "worker/test_fixtures.h"
#include "worker/model/test_models.h"

namespace steadyeval {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using namespace testing_fixtures;

const char* const kFixtures[] = {"parallel", "sequential", "tied", "bf16", "no_attn_bias"};

std::string NeoxFixture(const std::string& name) {
  return SourceDir() + "/tests/fixtures/gpt_neox/" + name;
}

// The model of fixture `name`; null (with a test failure) when it does not load.
std::unique_ptr<LanguageModel> LoadNeox(const std::string& name) {
  return LoadModelFrom(NeoxFixture(name), &LoadGptNeoxModel);
}

std::vector<int64_t> FixtureTokens(const std::string& name) {
  return ReferenceTokens(NeoxFixture(name));
}

class GptNeoxReferenceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { ASSERT_OK(ConfigureThreads(1)); }
};

TEST_P(GptNeoxReferenceTest, MatchesReferenceLogprobs) {
  auto model = LoadNeox(GetParam());
  ASSERT_NE(model, nullptr);
  ASSERT_NO_FATAL_FAILURE(ExpectMatchesReference(*model, NeoxFixture(GetParam())));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GptNeoxReferenceTest, ::testing::ValuesIn(std::vector<std::string>(
                             std::begin(kFixtures), std::end(kFixtures))));

TEST(GptNeoxKVCacheTest, TokenByTokenEqualsOnePass) {
  ASSERT_OK(ConfigureThreads(1));
  for (const char* name : kFixtures) {
    auto model = LoadNeox(name);
    ASSERT_NE(model, nullptr);
    const std::vector<int64_t> tokens = FixtureTokens(name);
    const Fp32Bound bound = LogitBound(NeoxFixture(name));
    at::Tensor full;
    ASSERT_NO_FATAL_FAILURE(ExpectStepwiseMatchesOnePass(*model, tokens, bound, &full));

    // Two chunks through a fork of a shared prefix.
    KVCache prefix;
    ASSERT_OK(model->Forward(Ids(std::vector<int64_t>(tokens.begin(), tokens.begin() + 6)), &prefix));
    KVCache fork = prefix.Fork();
    auto tail = model->Forward(Ids(std::vector<int64_t>(tokens.begin() + 6, tokens.end())), &fork);
    ASSERT_OK(tail);
    EXPECT_TRUE(WithinBound(full.narrow(1, 6, tokens.size() - 6), *tail, bound)) << name;
    EXPECT_EQ(prefix.length(), 6);
  }
}

// Row 0 is the whole fixture sequence, row 1 a shorter one left-padded (with an
// out-of-vocabulary id, which padding may hold). Each row equals that row run alone, and
// a further token through the cache continues each row as if it were alone.
TEST(GptNeoxModelTest, LeftPaddedBatchEqualsRowsAlone) {
  ASSERT_OK(ConfigureThreads(1));
  for (const char* name : {"parallel", "sequential", "tied"}) {
    auto model = LoadNeox(name);
    ASSERT_NE(model, nullptr);
    const Fp32Bound bound = LogitBound(NeoxFixture(name));
    const std::vector<int64_t> a = FixtureTokens(name);
    const std::vector<int64_t> b(a.begin() + 3, a.begin() + 10);
    const int64_t T = static_cast<int64_t>(a.size()), nb = static_cast<int64_t>(b.size());
    at::Tensor ids = at::full({2, T}, 99999, at::kLong);
    at::Tensor mask = at::zeros({2, T}, at::kBool);
    ids[0].copy_(at::tensor(a, at::kLong));
    mask[0].fill_(true);
    ids[1].narrow(0, T - nb, nb).copy_(at::tensor(b, at::kLong));
    mask[1].narrow(0, T - nb, nb).fill_(true);

    KVCache cache;
    auto batch = model->Forward(ids, mask, &cache);
    ASSERT_OK(batch);
    auto alone_a = model->Forward(Ids(a), nullptr);
    auto alone_b = model->Forward(Ids(b), nullptr);
    ASSERT_OK(alone_a);
    ASSERT_OK(alone_b);
    EXPECT_TRUE(WithinBound((*batch)[0], (*alone_a)[0], bound)) << name;
    EXPECT_TRUE(WithinBound((*batch)[1].narrow(0, T - nb, nb), (*alone_b)[0], bound))
        << name;
    EXPECT_EQ(cache.length(), T);

    const int64_t next = 5;
    auto step = model->Forward(at::full({2, 1}, next, at::kLong), &cache);
    ASSERT_OK(step);
    std::vector<int64_t> a_next = a, b_next = b;
    a_next.push_back(next);
    b_next.push_back(next);
    auto full_a = model->Forward(Ids(a_next), nullptr);
    auto full_b = model->Forward(Ids(b_next), nullptr);
    ASSERT_OK(full_a);
    ASSERT_OK(full_b);
    EXPECT_TRUE(WithinBound((*step)[0][0], (*full_a)[0][-1], bound)) << name;
    EXPECT_TRUE(WithinBound((*step)[1][0], (*full_b)[0][-1], bound)) << name;
  }
}

TEST(GptNeoxModelTest, AllPaddingRowIsFiniteAndHarmless) {
  ASSERT_OK(ConfigureThreads(1));
  const Fp32Bound bound = LogitBound(NeoxFixture("parallel"));
  auto model = LoadNeox("parallel");
  ASSERT_NE(model, nullptr);
  const std::vector<int64_t> a = FixtureTokens("parallel");
  const int64_t T = static_cast<int64_t>(a.size());
  at::Tensor ids = at::stack({at::tensor(a, at::kLong),
                                    at::full({T}, -7, at::kLong)});
  at::Tensor mask = at::stack({at::ones({T}, at::kBool),
                                     at::zeros({T}, at::kBool)});
  KVCache cache;
  auto out = model->Forward(ids, mask, &cache);
  ASSERT_OK(out);
  EXPECT_TRUE(at::isfinite(*out).all().item<bool>());
  auto alone = model->Forward(Ids(a), nullptr);
  ASSERT_OK(alone);
  EXPECT_TRUE(WithinBound((*out)[0], (*alone)[0], bound));
  // The padding row's cached keys stay harmless: a real token after them is position 0.
  auto step = model->Forward(at::tensor({a[0], a[0]}, at::kLong).view({2, 1}), &cache);
  ASSERT_OK(step);
  EXPECT_TRUE(at::isfinite(*step).all().item<bool>());
  auto first = model->Forward(Ids({a[0]}), nullptr);
  ASSERT_OK(first);
  EXPECT_TRUE(WithinBound((*step)[1][0], (*first)[0][0], bound));
}

TEST(GptNeoxModelTest, RejectsBadInputAndKeepsCache) {
  const Fp32Bound bound = LogitBound(NeoxFixture("tied"));
  auto model = LoadNeox("tied");  // vocab 120
  ASSERT_NE(model, nullptr);
  KVCache cache;
  ASSERT_OK(model->Forward(Ids({1, 2, 3}), &cache));
  EXPECT_THAT(model->Forward(Ids({5, 120}), &cache),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token id 120")));
  EXPECT_THAT(model->Forward(Ids({-1}), &cache),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token id -1")));
  EXPECT_EQ(cache.length(), 3);
  EXPECT_THAT(model->Forward(at::zeros({3}, at::kLong), nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[batch, tokens]")));
  EXPECT_THAT(model->Forward(at::zeros({2, 1}, at::kLong), &cache),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch size")));
  EXPECT_THAT(model->Forward(Ids({1, 2}), at::ones({1, 3}, at::kBool), &cache),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token_mask")));
  EXPECT_EQ(cache.length(), 3);
  EXPECT_FALSE(cache.key_mask().defined());
  // The cache still continues the sequence exactly.
  auto next = model->Forward(Ids({7}), &cache);
  auto whole = model->Forward(Ids({1, 2, 3, 7}), nullptr);
  ASSERT_OK(next);
  ASSERT_OK(whole);
  EXPECT_TRUE(WithinBound((*next)[0][0], (*whole)[0][-1], bound));
}

TEST(GptNeoxModelTest, WeightsThatDisagreeWithConfigAreReported) {
  auto reader = CheckpointReader::Open(NeoxFixture("tied"));
  ASSERT_OK(reader);
  auto config = ParseGptNeoxConfig((*reader)->config_json());
  ASSERT_OK(config);
  GptNeoxConfig untied = *config;
  untied.tie_word_embeddings = false;
  EXPECT_THAT(GptNeoxModel::Create(untied, **reader),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'embed_out.weight'")));
  GptNeoxConfig wider = *config;
  wider.intermediate_size = 128;
  EXPECT_THAT(GptNeoxModel::Create(wider, **reader),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'gpt_neox.layers.0.mlp.dense_h_to_4h.weight' has shape "
                                 "[256, 64]")));

  auto no_bias = CheckpointReader::Open(NeoxFixture("no_attn_bias"));
  ASSERT_OK(no_bias);
  auto no_bias_config = ParseGptNeoxConfig((*no_bias)->config_json());
  ASSERT_OK(no_bias_config);
  EXPECT_FALSE(no_bias_config->attention_bias);
  GptNeoxConfig biased = *no_bias_config;
  biased.attention_bias = true;
  EXPECT_THAT(GptNeoxModel::Create(biased, **no_bias),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("'gpt_neox.layers.0.attention.query_key_value.bias'")));
}

// A minimal gpt_neox config.json with `extra` (JSON members, leading comma) appended.
std::string NeoxJson(const std::string& extra) {
  return R"({"model_type": "gpt_neox", "hidden_size": 64, "intermediate_size": 256,
      "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100)" +
         extra + "}";
}

TEST(GptNeoxConfigTest, ParsesFieldsAndDefaults) {
  auto config = ParseGptNeoxConfig(NeoxJson(""));
  ASSERT_OK(config);
  EXPECT_EQ(config->head_dim, 16);
  EXPECT_EQ(config->rotary_pct, 0.25);
  EXPECT_EQ(config->rotary_ndims, 4);
  EXPECT_EQ(config->rotary_emb_base, 10000.0);
  EXPECT_EQ(config->layer_norm_eps, 1e-5);
  EXPECT_TRUE(config->use_parallel_residual);
  EXPECT_EQ(config->hidden_act, GptNeoxConfig::Activation::kGelu);
  EXPECT_FALSE(config->tie_word_embeddings);
  EXPECT_TRUE(config->attention_bias);
  EXPECT_EQ(config->bos_token_id, 0);  // transformers' GPTNeoXConfig defaults
  EXPECT_EQ(config->eos_token_ids, (std::vector<int64_t>{2}));

  // A Pythia config.json.
  auto pythia = ParseGptNeoxConfig(R"({"architectures": ["GPTNeoXForCausalLM"],
      "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu", "hidden_size": 512,
      "initializer_range": 0.02, "intermediate_size": 2048, "layer_norm_eps": 1e-05,
      "max_position_embeddings": 2048, "model_type": "gpt_neox", "num_attention_heads": 8,
      "num_hidden_layers": 6, "rotary_emb_base": 10000, "rotary_pct": 0.25,
      "tie_word_embeddings": false, "torch_dtype": "float16", "transformers_version":
      "4.24.0", "use_cache": true, "use_parallel_residual": true, "vocab_size": 50304})");
  ASSERT_OK(pythia);
  EXPECT_EQ(pythia->rotary_ndims, 16);
  EXPECT_EQ(pythia->eos_token_ids, (std::vector<int64_t>{0}));
  EXPECT_EQ(pythia->max_position_embeddings, 2048);
  EXPECT_EQ(pythia->torch_dtype, "float16");

  auto other = ParseGptNeoxConfig(NeoxJson(R"(, "use_parallel_residual": false,
      "rotary_pct": 1.0, "rope_theta": 500, "hidden_act": "gelu_fast",
      "tie_word_embeddings": true, "attention_bias": false, "eos_token_id": [0, 3],
      "layer_norm_eps": 1e-6, "rope_scaling": null)"));
  ASSERT_OK(other);
  EXPECT_FALSE(other->use_parallel_residual);
  EXPECT_EQ(other->rotary_ndims, 16);
  EXPECT_EQ(other->rotary_emb_base, 500.0);  // rope_theta when rotary_emb_base is absent
  EXPECT_EQ(other->hidden_act, GptNeoxConfig::Activation::kGeluTanh);
  EXPECT_TRUE(other->tie_word_embeddings);
  EXPECT_FALSE(other->attention_bias);
  EXPECT_EQ(other->eos_token_ids, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(other->layer_norm_eps, 1e-6);

  // Newer transformers: rotary settings inside rope_parameters win.
  auto newer = ParseGptNeoxConfig(NeoxJson(R"(, "rotary_emb_base": 10000,
      "rope_parameters": {"rope_type": "default", "rope_theta": 20000,
      "partial_rotary_factor": 0.5}, "hidden_act": "relu")"));
  ASSERT_OK(newer);
  EXPECT_EQ(newer->rotary_emb_base, 20000.0);
  EXPECT_EQ(newer->rotary_ndims, 8);
  EXPECT_EQ(newer->hidden_act, GptNeoxConfig::Activation::kRelu);
}

TEST(GptNeoxConfigTest, ErrorsNameTheField) {
  EXPECT_THAT(ParseGptNeoxConfig(R"({"model_type": "gpt_neox", "intermediate_size": 256,
      "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'hidden_size'")));
  EXPECT_THAT(ParseGptNeoxConfig(R"({"model_type": "gpt_neox", "hidden_size": 64,
      "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'vocab_size'")));
  EXPECT_THAT(ParseGptNeoxConfig(R"({"model_type": "gpt_neox", "hidden_size": 64,
      "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 5,
      "vocab_size": 100})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("num_attention_heads")));
  EXPECT_THAT(ParseGptNeoxConfig(NeoxJson(R"(, "rotary_pct": "0.25")")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'rotary_pct'")));
  EXPECT_THAT(ParseGptNeoxConfig(NeoxJson(R"(, "rotary_pct": 1.5)")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'rotary_pct'")));
  // 16 * 0.1875 = 3 rotary dims: odd.
  EXPECT_THAT(ParseGptNeoxConfig(NeoxJson(R"(, "rotary_pct": 0.1875)")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'rotary_pct'")));
  EXPECT_THAT(ParseGptNeoxConfig(NeoxJson(R"(, "rotary_emb_base": -1)")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'rotary_emb_base'")));
  EXPECT_THAT(ParseGptNeoxConfig(NeoxJson(R"(, "layer_norm_eps": 0)")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'layer_norm_eps'")));
  EXPECT_THAT(ParseGptNeoxConfig(NeoxJson(R"(, "use_parallel_residual": 1)")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'use_parallel_residual'")));
  EXPECT_THAT(ParseGptNeoxConfig(NeoxJson(R"(, "tie_word_embeddings": "yes")")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'tie_word_embeddings'")));
  EXPECT_THAT(ParseGptNeoxConfig(NeoxJson(R"(, "attention_bias": "no")")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'attention_bias'")));
  EXPECT_THAT(ParseGptNeoxConfig(NeoxJson(R"(, "eos_token_id": [0, "x"])")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'eos_token_id'")));
  EXPECT_THAT(ParseGptNeoxConfig(NeoxJson(R"(, "bos_token_id": [0])")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'bos_token_id'")));
  EXPECT_THAT(ParseGptNeoxConfig(NeoxJson(R"(, "rope_scaling": 2)")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'rope_scaling'")));
  EXPECT_THAT(ParseGptNeoxConfig(NeoxJson(R"(, "rope_parameters": {"rope_type": "default",
      "partial_rotary_factor": 2})")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'rope_parameters.partial_rotary_factor'")));

  EXPECT_THAT(ParseGptNeoxConfig(NeoxJson(R"(, "hidden_act": "swish")")),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("'swish'")));
  EXPECT_THAT(ParseGptNeoxConfig(NeoxJson(R"(, "rope_scaling": {"type": "linear",
      "factor": 2.0})")),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("'linear'")));
  EXPECT_THAT(ParseGptNeoxConfig(R"({"model_type": "llama"})"),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("'llama'")));
  EXPECT_THAT(ParseGptNeoxConfig("[1, 2]"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("config.json")));
}

TEST(GptNeoxConfigTest, LoadLanguageModelNamesTheCheckpointOnConfigErrors) {
  std::string dir = CopyFixture(NeoxFixture("parallel"), "ckpt");
  nlohmann::json config = ReadJson(dir + "/config.json");
  config.erase("num_attention_heads");
  WriteText(dir + "/config.json", config.dump());
  auto reader = CheckpointReader::Open(dir);
  ASSERT_OK(reader);
  EXPECT_THAT(LoadLanguageModel(**reader),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("num_attention_heads"), HasSubstr("checkpoint " + dir))));
}

}  // namespace
}  // namespace steadyeval
