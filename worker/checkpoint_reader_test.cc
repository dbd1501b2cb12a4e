// CheckpointReader over the committed tiny Llama fixtures (tests/fixtures/llama/, written
// by `/usr/bin/python3 tests/reference/llama_reference.py`) and damaged copies of them.
#include "worker/checkpoint_reader.h"

#include <filesystem>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/test_fixtures.h"

namespace steadyeval {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace testing_fixtures;

TEST(CheckpointReaderTest, OpensSingleFileAndIgnoresBuffers) {
  auto reader = CheckpointReader::Open(LlamaFixture("gqa"));
  ASSERT_OK(reader);
  std::vector<std::string> names = (*reader)->TensorNames();
  // embed + 2 layers x 9 + norm + lm_head; the rotary inv_freq buffer is not listed.
  EXPECT_EQ(names.size(), 21u);
  EXPECT_THAT(names, Contains("lm_head.weight"));
  EXPECT_THAT(names, Not(Contains("model.layers.0.self_attn.rotary_emb.inv_freq")));
  EXPECT_TRUE((*reader)->HasTensor("model.layers.0.self_attn.rotary_emb.inv_freq"));
  EXPECT_THAT((*reader)->config_json(), HasSubstr("\"model_type\": \"llama\""));

  auto t = (*reader)->Tensor("model.layers.1.self_attn.k_proj.weight");
  ASSERT_OK(t);
  EXPECT_EQ(t->scalar_type(), torch::kFloat32);
  EXPECT_EQ(t->sizes(), (std::vector<int64_t>{16, 32}));
  EXPECT_TRUE(t->is_contiguous());
}

TEST(CheckpointReaderTest, ConvertsHalfPrecisionToFloat32) {
  for (const char* name : {"bf16", "fp16"}) {
    auto reader = CheckpointReader::Open(LlamaFixture(name));
    ASSERT_OK(reader);
    auto info = (*reader)->Info("model.norm.weight");
    ASSERT_OK(info);
    EXPECT_EQ(info->dtype, std::string(name) == "bf16" ? DType::kBF16 : DType::kF16);
    auto t = (*reader)->Tensor("model.norm.weight");
    ASSERT_OK(t);
    EXPECT_EQ(t->scalar_type(), torch::kFloat32);
    // Norm weights are 1 + 0.1·N(0,1): a wrong conversion would be far off.
    EXPECT_NEAR(t->mean().item<double>(), 1.0, 0.1) << name;
  }
}

TEST(CheckpointReaderTest, OpensShardedCheckpoint) {
  auto reader = CheckpointReader::Open(LlamaFixture("sharded"));
  ASSERT_OK(reader);
  std::vector<std::string> names = (*reader)->TensorNames();
  EXPECT_EQ(names.size(), 21u);
  // One tensor from each shard.
  EXPECT_OK((*reader)->Tensor("model.embed_tokens.weight"));
  EXPECT_OK((*reader)->Tensor("lm_head.weight"));
}

TEST(CheckpointReaderTest, MissingTensorIsNamed) {
  auto reader = CheckpointReader::Open(LlamaFixture("tied"));
  ASSERT_OK(reader);
  EXPECT_THAT((*reader)->Tensor("lm_head.weight"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'lm_head.weight'")));
  EXPECT_THAT((*reader)->Info("model.layers.7.mlp.up_proj.weight"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("model.layers.7.mlp.up_proj.weight")));
}

TEST(CheckpointReaderTest, MissingShardIsNamed) {
  std::string dir = CopyFixture(LlamaFixture("sharded"), "ckpt");
  std::filesystem::remove(dir + "/model-00002-of-00002.safetensors");
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("shard model-00002-of-00002.safetensors")));
}

TEST(CheckpointReaderTest, TruncatedShardIsRejected) {
  std::string dir = CopyFixture(LlamaFixture("gqa"), "ckpt");
  const std::string file = dir + "/model.safetensors";
  std::filesystem::resize_file(file, std::filesystem::file_size(file) - 100);
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("model.safetensors")));
}

TEST(CheckpointReaderTest, IndexNamingTensorAbsentFromShardIsDataLoss) {
  std::string dir = CopyFixture(LlamaFixture("sharded"), "ckpt");
  nlohmann::json index = ReadJson(dir + "/model.safetensors.index.json");
  index["weight_map"]["model.extra.weight"] = "model-00001-of-00002.safetensors";
  WriteText(dir + "/model.safetensors.index.json", index.dump());
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("model.extra.weight")));
}

TEST(CheckpointReaderTest, MissingConfigOrWeights) {
  std::string dir = CopyFixture(LlamaFixture("gqa"), "ckpt");
  std::filesystem::remove(dir + "/model.safetensors");
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("model.safetensors")));
  std::filesystem::remove(dir + "/config.json");
  EXPECT_THAT(CheckpointReader::Open(dir),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("config.json")));
}

TEST(CheckpointReaderTest, TensorsOutliveNothingButTheReader) {
  torch::Tensor copy;
  {
    auto reader = CheckpointReader::Open(LlamaFixture("gqa"));
    ASSERT_OK(reader);
    auto t = (*reader)->Tensor("model.norm.weight");
    ASSERT_OK(t);
    copy = *t;
  }
  // The returned tensor is a copy: still readable after the mapping is gone.
  EXPECT_EQ(copy.numel(), 32);
  EXPECT_TRUE(std::isfinite(copy.sum().item<double>()));
}

}  // namespace
}  // namespace steadyeval
