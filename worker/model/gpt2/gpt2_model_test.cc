// GPT-2 forward pass against an independent reference.
//
// The fixtures under tests/fixtures/gpt2/<name>/ (config.json, model.safetensors,
// expected.json) were produced by
//     /usr/bin/python3 tests/reference/gpt2_reference.py
// which writes tiny random GPT2LMHeadModel checkpoints by hand and computes per-token
// log-probs with its own float64 NumPy forward pass. bf16 weights are rounded before the
// reference uses them, so every fixture must match within the float32 error bound of its
// shape (LogprobBound, worker/test_tolerance.h: ~4.5e-4 at these log-probs); cache and
// padding paths must match the one-pass logits within LogitBound. The weight scales are
// large enough that the plausible mistakes are outside these bounds: the script reports
// that the exact GELU in place of gelu_new (or the reverse) moves log-probs by 1.3e-3 to
// 3.3e-3 (measured: a swapped GELU fails the reference tests at 4.5x the tolerance), and using
// attn.c_proj (the one square Conv1D, which a shape check cannot catch) without
// transposing moves them by more than 10.
//
// Fixtures: base (`transformer.` prefix, with the attn.bias / attn.masked_bias buffers),
// noprefix (bare names, n_inner 48, layer_norm_epsilon 1e-3), inverse_layer_idx (3
// layers, scale_attn_by_inverse_layer_idx), bf16 (weights stored bf16, 8 heads),
// untied (lm_head.weight, exact gelu, scale_attn_weights false).
#include "worker/model/gpt2/gpt2_model.h"

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/eval/evaluator.h"
#include "worker/model/language_model.h"
#include "worker/backend/offline.h"
#include "worker/checkpoint/tensor_source.h"
#include "worker/test_fixtures.h"
#include "worker/model/test_models.h"

namespace steadyeval {
namespace {

using ::testing::HasSubstr;
using namespace testing_fixtures;

std::string Gpt2Fixture(const std::string& name) {
  return SourceDir() + "/tests/fixtures/gpt2/" + name;
}

std::unique_ptr<CheckpointReader> OpenFixture(const std::string& name) {
  auto reader = CheckpointReader::Open(Gpt2Fixture(name));
  EXPECT_OK(reader);
  return reader.ok() ? *std::move(reader) : nullptr;
}

// The model of fixture `name`; null (with a test failure) when it does not load.
std::unique_ptr<LanguageModel> LoadGpt2Fixture(const std::string& name) {
  return LoadModelFrom(Gpt2Fixture(name), &LoadGpt2Model);
}

std::vector<int64_t> FixtureTokens(const std::string& name) {
  return ReferenceTokens(Gpt2Fixture(name));
}

// A TensorMap with every parameter of `reader`, renamed by `rename` (empty: dropped).
std::unique_ptr<TensorMap> CopyTensors(const CheckpointReader& reader,
                                       const std::function<std::string(std::string)>& rename) {
  auto map = std::make_unique<TensorMap>("copy of " + reader.label(), reader.config_json());
  for (const std::string& name : reader.TensorNames()) {
    const std::string to = rename(name);
    if (to.empty()) continue;
    auto t = reader.Tensor(name);
    EXPECT_OK(t);
    if (t.ok()) {
      EXPECT_OK(map->Add(to, *t));
    }
  }
  return map;
}

const char* const kFixtures[] = {"base", "noprefix", "inverse_layer_idx", "bf16", "untied"};

class Gpt2ReferenceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { ASSERT_OK(ConfigureThreads(1)); }
};

TEST_P(Gpt2ReferenceTest, MatchesReferenceLogprobs) {
  auto model = LoadGpt2Fixture(GetParam());
  ASSERT_NE(model, nullptr);
  ASSERT_NO_FATAL_FAILURE(ExpectMatchesReference(*model, Gpt2Fixture(GetParam())));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Gpt2ReferenceTest,
                         ::testing::Values("base", "noprefix", "inverse_layer_idx", "bf16",
                                           "untied"));

TEST(Gpt2KVCacheTest, TokenByTokenEqualsOnePass) {
  ASSERT_OK(ConfigureThreads(1));
  for (const char* name : kFixtures) {
    auto model = LoadGpt2Fixture(name);
    ASSERT_NE(model, nullptr);
    const std::vector<int64_t> tokens = FixtureTokens(name);
    ASSERT_NO_FATAL_FAILURE(ExpectStepwiseMatchesOnePass(*model, tokens, LogitBound(Gpt2Fixture(name))));
  }
}

TEST(Gpt2PaddingTest, LeftPaddedRowsEqualRowsAlone) {
  ASSERT_OK(ConfigureThreads(1));
  for (const char* name : {"base", "inverse_layer_idx", "untied"}) {
    auto model = LoadGpt2Fixture(name);
    ASSERT_NE(model, nullptr);
    const Fp32Bound bound = LogitBound(Gpt2Fixture(name));
    const std::vector<int64_t> tokens = FixtureTokens(name);
    const std::vector<std::vector<int64_t>> rows = {
        tokens, std::vector<int64_t>(tokens.begin() + 3, tokens.begin() + 12)};
    const int64_t T = static_cast<int64_t>(tokens.size());
    const PaddedBatch batch = LeftPad(rows, /*pad_id=*/123456, T);
    auto both = model->Forward(batch.ids, batch.mask, nullptr);
    ASSERT_OK(both);
    for (int64_t b = 0; b < 2; ++b) {
      const int64_t n = static_cast<int64_t>(rows[b].size());
      auto alone = model->Forward(Ids(rows[b]), nullptr);
      ASSERT_OK(alone);
      EXPECT_TRUE(WithinBound((*both)[b].narrow(0, T - n, n), (*alone)[0], bound))
          << name << " row " << b;
    }
  }
}

// A padded prompt through the cache, then unpadded continuation tokens: each row still
// equals its real tokens run alone in one pass.
TEST(Gpt2PaddingTest, PaddedPromptThenCacheEqualsRowsAlone) {
  ASSERT_OK(ConfigureThreads(1));
  const Fp32Bound bound = LogitBound(Gpt2Fixture("base"));
  auto model = LoadGpt2Fixture("base");
  ASSERT_NE(model, nullptr);
  const std::vector<int64_t> tokens = FixtureTokens("base");
  const std::vector<std::vector<int64_t>> prompts = {
      std::vector<int64_t>(tokens.begin(), tokens.begin() + 10),
      std::vector<int64_t>(tokens.begin() + 10, tokens.begin() + 14)};
  const std::vector<std::vector<int64_t>> tails = {{5, 6, 7}, {100, 2, 3}};
  const PaddedBatch prompt = LeftPad(prompts, /*pad_id=*/0, 10);
  KVCache cache;
  ASSERT_OK(model->Forward(prompt.ids, prompt.mask, &cache));
  auto continued =
      model->Forward(at::tensor({5, 6, 7, 100, 2, 3}, at::kLong).view({2, 3}), &cache);
  ASSERT_OK(continued);
  EXPECT_EQ(cache.length(), 13);
  for (int64_t b = 0; b < 2; ++b) {
    std::vector<int64_t> whole = prompts[b];
    whole.insert(whole.end(), tails[b].begin(), tails[b].end());
    auto alone = model->Forward(Ids(whole), nullptr);
    ASSERT_OK(alone);
    EXPECT_TRUE(WithinBound((*continued)[b], (*alone)[0].narrow(0, whole.size() - 3, 3), bound))
        << "row " << b;
  }
}

TEST(Gpt2PaddingTest, AllPaddingRowIsFinite) {
  ASSERT_OK(ConfigureThreads(1));
  const Fp32Bound bound = LogitBound(Gpt2Fixture("base"));
  auto model = LoadGpt2Fixture("base");
  ASSERT_NE(model, nullptr);
  const std::vector<int64_t> tokens = FixtureTokens("base");
  const PaddedBatch batch = LeftPad({tokens, {}}, -7, static_cast<int64_t>(tokens.size()));
  KVCache cache;
  auto logits = model->Forward(batch.ids, batch.mask, &cache);
  ASSERT_OK(logits);
  EXPECT_TRUE(at::isfinite(*logits).all().item<bool>());
  auto alone = model->Forward(Ids(tokens), nullptr);
  ASSERT_OK(alone);
  EXPECT_TRUE(WithinBound((*logits)[0], (*alone)[0], bound));
  // The padding row's cached keys/values stay finite for later steps.
  auto next = model->Forward(at::tensor({3, 4}, at::kLong).view({2, 1}), &cache);
  ASSERT_OK(next);
  EXPECT_TRUE(at::isfinite(*next).all().item<bool>());
}

// n_positions is 64 in every fixture.
TEST(Gpt2PositionsTest, MoreThanNPositionsRealTokensIsRejected) {
  ASSERT_OK(ConfigureThreads(1));
  const Fp32Bound bound = LogitBound(Gpt2Fixture("base"));
  auto model = LoadGpt2Fixture("base");
  ASSERT_NE(model, nullptr);
  std::vector<int64_t> long_row(65);
  for (size_t i = 0; i < long_row.size(); ++i) long_row[i] = static_cast<int64_t>(i % 160);
  EXPECT_THAT(model->Forward(Ids(long_row), nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("n_positions 64")));

  // Through the cache: 60 cached + 5 new is too many, and the cache is left as it was.
  KVCache cache;
  ASSERT_OK(model->Forward(Ids(std::vector<int64_t>(long_row.begin(), long_row.begin() + 60)),
                           &cache));
  EXPECT_THAT(model->Forward(Ids({1, 2, 3, 4, 5}), &cache),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("n_positions")));
  EXPECT_EQ(cache.length(), 60);
  EXPECT_FALSE(cache.key_mask().defined());
  auto fits = model->Forward(Ids({1, 2, 3, 4}), &cache);  // exactly 64
  ASSERT_OK(fits);
  EXPECT_EQ(cache.length(), 64);

  // Padding takes no position: 64 real tokens behind 6 padding slots fit, and trailing
  // padding after a full row is harmless.
  std::vector<int64_t> full_row(long_row.begin(), long_row.begin() + 64);
  const PaddedBatch padded = LeftPad({full_row, {9, 9}}, /*pad_id=*/0, 70);
  auto batch = model->Forward(padded.ids, padded.mask, nullptr);
  ASSERT_OK(batch);
  auto alone = model->Forward(Ids(full_row), nullptr);
  ASSERT_OK(alone);
  EXPECT_TRUE(WithinBound((*batch)[0].narrow(0, 6, 64), (*alone)[0], bound));
  at::Tensor trailing_ids = at::zeros({1, 66}, at::kLong);
  trailing_ids[0].narrow(0, 0, 64).copy_(at::tensor(full_row, at::kLong));
  at::Tensor trailing_mask = at::zeros({1, 66}, at::kBool);
  trailing_mask[0].narrow(0, 0, 64).fill_(true);
  auto trailing = model->Forward(trailing_ids, trailing_mask, nullptr);
  ASSERT_OK(trailing);
  EXPECT_TRUE(WithinBound((*trailing)[0].narrow(0, 0, 64), (*alone)[0], bound));
}

TEST(Gpt2ModelTest, RejectsBadInputAndKeepsCache) {
  ASSERT_OK(ConfigureThreads(1));
  auto model = LoadGpt2Fixture("base");  // vocab 160
  ASSERT_NE(model, nullptr);
  KVCache cache;
  const PaddedBatch prompt = LeftPad({{1, 2, 3}, {4, 5}}, /*pad_id=*/0, 3);
  ASSERT_OK(model->Forward(prompt.ids, prompt.mask, &cache));
  const at::Tensor mask_before = cache.key_mask().clone();
  const at::Tensor keys_before = cache.keys()[0].narrow(2, 0, 3).clone();
  EXPECT_THAT(model->Forward(at::tensor({5, 160}, at::kLong).view({2, 1}), &cache),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token id 160")));
  EXPECT_THAT(model->Forward(at::tensor({5, -1}, at::kLong).view({2, 1}), &cache),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token id -1")));
  EXPECT_THAT(model->Forward(at::zeros({3, 1}, at::kLong), &cache),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch size")));
  EXPECT_THAT(model->Forward(at::zeros({2, 1}, at::kLong),
                             at::ones({2, 2}, at::kBool), &cache),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token_mask")));
  EXPECT_THAT(model->Forward(at::zeros({3}, at::kLong), nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[batch, tokens]")));
  EXPECT_THAT(model->Forward(at::zeros({1, 2}, at::kInt), nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("int64")));
  EXPECT_EQ(cache.length(), 3);
  EXPECT_TRUE(at::equal(cache.key_mask(), mask_before));
  EXPECT_TRUE(at::equal(cache.keys()[0].narrow(2, 0, 3), keys_before));
}

TEST(Gpt2ModelTest, PrefixedAndBareNamesGiveTheSameModel) {
  ASSERT_OK(ConfigureThreads(1));
  std::unique_ptr<CheckpointReader> reader = OpenFixture("base");
  ASSERT_NE(reader, nullptr);
  auto bare = CopyTensors(*reader, [](std::string name) {
    return absl::StartsWith(name, "transformer.") ? name.substr(12) : name;
  });
  auto from_bare = LoadGpt2Model(*bare, {});
  ASSERT_OK(from_bare);
  auto from_prefixed = LoadGpt2Model(*reader, {});
  ASSERT_OK(from_prefixed);
  const std::vector<int64_t> tokens = FixtureTokens("base");
  auto a = (*from_bare)->Forward(Ids(tokens), nullptr);
  auto b = (*from_prefixed)->Forward(Ids(tokens), nullptr);
  ASSERT_OK(a);
  ASSERT_OK(b);
  EXPECT_TRUE(at::equal(*a, *b));
}

TEST(Gpt2ModelTest, MissingOrMisshapenTensorsAreNamed) {
  std::unique_ptr<CheckpointReader> base = OpenFixture("base");
  ASSERT_NE(base, nullptr);
  auto config = ParseGpt2Config(base->config_json());
  ASSERT_OK(config);

  auto missing = CopyTensors(*base, [](std::string name) {
    return name == "transformer.h.1.mlp.c_fc.bias" ? "" : name;
  });
  EXPECT_THAT(Gpt2Model::Create(*config, *missing),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("transformer.h.1.mlp.c_fc.bias")));

  std::unique_ptr<CheckpointReader> noprefix = OpenFixture("noprefix");
  ASSERT_NE(noprefix, nullptr);
  auto bare_config = ParseGpt2Config(noprefix->config_json());
  ASSERT_OK(bare_config);
  auto bare_missing =
      CopyTensors(*noprefix, [](std::string name) { return name == "ln_f.bias" ? "" : name; });
  EXPECT_THAT(Gpt2Model::Create(*bare_config, *bare_missing),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'ln_f.bias'")));

  Gpt2Config untied = *config;
  untied.tie_word_embeddings = false;
  EXPECT_THAT(Gpt2Model::Create(untied, *base),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'lm_head.weight'")));

  Gpt2Config wider = *config;
  wider.n_inner = 64;
  EXPECT_THAT(Gpt2Model::Create(wider, *base),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'transformer.h.0.mlp.c_fc.weight' has shape [32, 128]")));

  auto nothing = CopyTensors(*base, [](std::string) { return std::string(); });
  EXPECT_THAT(Gpt2Model::Create(*config, *nothing),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("transformer.wte.weight")));
}

// A minimal gpt2 config.json with `extra` (JSON members, leading comma) appended.
std::string Gpt2Json(const std::string& extra) {
  return R"({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4,
      "n_positions": 128, "vocab_size": 1000)" +
         extra + "}";
}

TEST(Gpt2ConfigTest, ParsesFieldsAndDefaults) {
  auto config = ParseGpt2Config(Gpt2Json(R"(, "n_inner": null, "eos_token_id": 50256,
      "bos_token_id": 50256, "torch_dtype": "float32")"));
  ASSERT_OK(config);
  EXPECT_EQ(config->n_embd, 64);
  EXPECT_EQ(config->n_layer, 2);
  EXPECT_EQ(config->n_head, 4);
  EXPECT_EQ(config->head_dim(), 16);
  EXPECT_EQ(config->n_positions, 128);
  EXPECT_EQ(config->n_inner, 256);
  EXPECT_EQ(config->vocab_size, 1000);
  EXPECT_EQ(config->layer_norm_epsilon, 1e-5);
  EXPECT_EQ(config->activation, Gpt2Activation::kGeluTanh);
  EXPECT_TRUE(config->scale_attn_weights);
  EXPECT_FALSE(config->scale_attn_by_inverse_layer_idx);
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_EQ(config->bos_token_id, 50256);
  EXPECT_EQ(config->eos_token_ids, (std::vector<int64_t>{50256}));
  EXPECT_EQ(config->torch_dtype, "float32");

  auto custom = ParseGpt2Config(Gpt2Json(R"(, "n_inner": 100, "layer_norm_epsilon": 1e-6,
      "activation_function": "gelu", "scale_attn_weights": false,
      "scale_attn_by_inverse_layer_idx": true, "reorder_and_upcast_attn": true,
      "tie_word_embeddings": false, "eos_token_id": [1, 2])"));
  ASSERT_OK(custom);
  EXPECT_EQ(custom->n_inner, 100);
  EXPECT_EQ(custom->layer_norm_epsilon, 1e-6);
  EXPECT_EQ(custom->activation, Gpt2Activation::kGelu);
  EXPECT_FALSE(custom->scale_attn_weights);
  EXPECT_TRUE(custom->scale_attn_by_inverse_layer_idx);
  EXPECT_FALSE(custom->tie_word_embeddings);
  EXPECT_FALSE(custom->bos_token_id.has_value());
  EXPECT_EQ(custom->eos_token_ids, (std::vector<int64_t>{1, 2}));

  for (const char* tanh : {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}) {
    auto c = ParseGpt2Config(Gpt2Json(absl::StrCat(R"(, "activation_function": ")", tanh, "\"")));
    ASSERT_OK(c);
    EXPECT_EQ(c->activation, Gpt2Activation::kGeluTanh) << tanh;
  }
  auto relu = ParseGpt2Config(Gpt2Json(R"(, "activation_function": "relu")"));
  ASSERT_OK(relu);
  EXPECT_EQ(relu->activation, Gpt2Activation::kRelu);
}

TEST(Gpt2ConfigTest, ErrorsNameTheField) {
  for (const char* field : {"n_embd", "n_layer", "n_head", "n_positions", "vocab_size"}) {
    nlohmann::json doc = nlohmann::json::parse(Gpt2Json(""));
    doc.erase(field);
    EXPECT_THAT(ParseGpt2Config(doc.dump()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(field)));
    doc[field] = "12";
    EXPECT_THAT(ParseGpt2Config(doc.dump()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(field)));
  }
  EXPECT_THAT(ParseGpt2Config(Gpt2Json(R"(, "n_head": 5)")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("n_head")));
  EXPECT_THAT(ParseGpt2Config(Gpt2Json(R"(, "n_inner": -4)")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("n_inner")));
  EXPECT_THAT(ParseGpt2Config(Gpt2Json(R"(, "layer_norm_epsilon": "small")")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("layer_norm_epsilon")));
  EXPECT_THAT(ParseGpt2Config(Gpt2Json(R"(, "scale_attn_weights": 1)")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("scale_attn_weights")));
  EXPECT_THAT(ParseGpt2Config(Gpt2Json(R"(, "scale_attn_by_inverse_layer_idx": "yes")")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("scale_attn_by_inverse_layer_idx")));
  EXPECT_THAT(ParseGpt2Config(Gpt2Json(R"(, "tie_word_embeddings": "no")")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tie_word_embeddings")));
  EXPECT_THAT(ParseGpt2Config(Gpt2Json(R"(, "eos_token_id": ["x"])")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("eos_token_id")));
  EXPECT_THAT(ParseGpt2Config(Gpt2Json(R"(, "activation_function": 3)")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("activation_function")));
  EXPECT_THAT(ParseGpt2Config(Gpt2Json(R"(, "activation_function": "swish")")),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("'swish'")));
  EXPECT_THAT(ParseGpt2Config(R"({"model_type": "llama", "n_embd": 64})"),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("'llama'")));
  EXPECT_THAT(ParseGpt2Config(R"({"n_embd": 64})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model_type")));
  EXPECT_THAT(ParseGpt2Config("not json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("config.json")));
}

TEST(Gpt2ConfigTest, LoadGpt2ModelNamesTheCheckpointOnConfigErrors) {
  std::string dir = CopyFixture(Gpt2Fixture("base"), "ckpt");
  nlohmann::json config = ReadJson(dir + "/config.json");
  config.erase("n_head");
  WriteText(dir + "/config.json", config.dump());
  auto reader = CheckpointReader::Open(dir);
  ASSERT_OK(reader);
  EXPECT_THAT(LoadGpt2Model(**reader, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("n_head")));
  EXPECT_THAT(LoadGpt2Model(**reader, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("checkpoint " + dir)));
}

}  // namespace
}  // namespace steadyeval
