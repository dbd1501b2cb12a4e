// Tokenizer against python sentencepiece.
//
// tests/fixtures/tokenizer/ (tokenizer.model and expected.json) was produced by
//     /usr/bin/python3 tests/reference/make_tokenizer.py
// which trains a tiny Japanese+English BPE model (vocab 420, byte fallback, identity
// normalizer) and records python sentencepiece's ids and decoded text for a few strings.
#include "worker/tokenizer/tokenizer.h"

#include <filesystem>

#include "testing/files.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace ::steadyeval::testing;

TEST(TokenizerTest, MatchesPythonSentencePiece) {
  auto tokenizer = Tokenizer::Load(TokenizerFixture(), BosRule{});
  ASSERT_OK(tokenizer);
  nlohmann::json expected =
      ReadJson(SourceDir() + "/tests/fixtures/tokenizer/expected.json");
  EXPECT_EQ((*tokenizer)->vocab_size(), expected["vocab_size"].get<int64_t>());
  EXPECT_EQ((*tokenizer)->eos_id(), expected["eos_id"].get<int64_t>());
  ASSERT_GE(expected["cases"].size(), 5u);
  for (const auto& c : expected["cases"]) {
    const std::string text = c["text"].get<std::string>();
    auto ids = (*tokenizer)->Encode(text);
    ASSERT_OK(ids);
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int64_t>>()) << text;
    auto decoded = (*tokenizer)->Decode(*ids);
    ASSERT_OK(decoded);
    EXPECT_EQ(*decoded, c["decoded"].get<std::string>()) << text;
    // Without a BOS rule EncodeWithBos adds nothing.
    EXPECT_EQ((*tokenizer)->EncodeWithBos(text).value(), *ids);
  }
}

TEST(TokenizerTest, ExplicitBosRule) {
  auto tokenizer = Tokenizer::Load(TokenizerFixture(), BosRule{true, 1});
  ASSERT_OK(tokenizer);
  auto plain = (*tokenizer)->Encode("Tokyo");
  auto with_bos = (*tokenizer)->EncodeWithBos("Tokyo");
  ASSERT_OK(plain);
  ASSERT_OK(with_bos);
  ASSERT_EQ(with_bos->size(), plain->size() + 1);
  EXPECT_EQ(with_bos->front(), 1);
  EXPECT_THAT((*tokenizer)->EncodeWithBos("").value(), ElementsAre(1));
}

class CheckpointBosRuleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ScratchDir("ckpt");
    std::filesystem::copy_file(TokenizerFixture(), dir_ + "/tokenizer.model");
  }
  std::string dir_;
};

TEST_F(CheckpointBosRuleTest, ConfigBosTokenIdWithoutTokenizerConfig) {
  WriteFile(dir_ + "/config.json", R"({"model_type": "llama", "bos_token_id": 1})");
  auto tokenizer = Tokenizer::LoadForCheckpoint(dir_);
  ASSERT_OK(tokenizer);
  EXPECT_TRUE((*tokenizer)->add_bos());
  EXPECT_EQ((*tokenizer)->EncodeWithBos("Tokyo").value().front(), 1);
}

TEST_F(CheckpointBosRuleTest, NoBosTokenIdMeansNoBos) {
  WriteFile(dir_ + "/config.json", R"({"model_type": "llama"})");
  auto tokenizer = Tokenizer::LoadForCheckpoint(dir_);
  ASSERT_OK(tokenizer);
  EXPECT_FALSE((*tokenizer)->add_bos());
}

TEST_F(CheckpointBosRuleTest, TokenizerConfigDecides) {
  WriteFile(dir_ + "/config.json", R"({"model_type": "llama", "bos_token_id": 1})");
  WriteFile(dir_ + "/tokenizer_config.json", R"({"add_bos_token": false})");
  auto off = Tokenizer::LoadForCheckpoint(dir_);
  ASSERT_OK(off);
  EXPECT_FALSE((*off)->add_bos());
  EXPECT_EQ((*off)->EncodeWithBos("Tokyo").value(), (*off)->Encode("Tokyo").value());

  WriteFile(dir_ + "/config.json", R"({"model_type": "llama"})");
  WriteFile(dir_ + "/tokenizer_config.json", R"({"add_bos_token": true})");
  auto on = Tokenizer::LoadForCheckpoint(dir_);
  ASSERT_OK(on);
  EXPECT_TRUE((*on)->add_bos());
  EXPECT_EQ((*on)->bos_id(), 1);  // the SentencePiece model's BOS
}

TEST_F(CheckpointBosRuleTest, ExplicitPathOverridesFolder) {
  WriteFile(dir_ + "/config.json", R"({"model_type": "llama", "bos_token_id": 1})");
  std::filesystem::remove(dir_ + "/tokenizer.model");
  EXPECT_THAT(Tokenizer::LoadForCheckpoint(dir_),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("tokenizer.model")));
  auto tokenizer = Tokenizer::LoadForCheckpoint(dir_, TokenizerFixture());
  ASSERT_OK(tokenizer);
  EXPECT_EQ((*tokenizer)->path(), TokenizerFixture());
  EXPECT_TRUE((*tokenizer)->add_bos());
}

// Byte-level BPE folders (tests/fixtures/bpe, see bpe_tokenizer_test.cc): the BOS comes
// from the post-processor template or tokenizer_config.json, the EOS from
// tokenizer_config.json's eos_token.
TEST(BpeCheckpointTokenizerTest, TemplateAndConfigDecideBosAndEos) {
  const std::string dir = CopyFixture(SourceDir() + "/tests/fixtures/bpe/llama3_style", "llama3");
  auto tokenizer = Tokenizer::LoadForCheckpoint(dir);
  ASSERT_OK(tokenizer);
  EXPECT_STREQ((*tokenizer)->kind(), "bpe");
  const int64_t begin = (*tokenizer)->bos_id();
  EXPECT_EQ((*tokenizer)->IdToPiece(begin), "<|begin_of_text|>");
  EXPECT_EQ((*tokenizer)->IdToPiece((*tokenizer)->eos_id()), "<|end_of_text|>");
  EXPECT_TRUE((*tokenizer)->add_bos());
  auto plain = (*tokenizer)->Encode("Tokyo is big.");
  auto with_bos = (*tokenizer)->EncodeWithBos("Tokyo is big.");
  ASSERT_OK(plain);
  ASSERT_OK(with_bos);
  ASSERT_EQ(with_bos->size(), plain->size() + 1);
  EXPECT_EQ(with_bos->front(), begin);
  EXPECT_EQ((*tokenizer)->Decode(*plain).value(), "Tokyo is big.");
  const std::string sha = (*tokenizer)->content_sha256();

  // add_bos_token false in tokenizer_config.json wins over the template, and changes the
  // content hash (the pin covers the config).
  nlohmann::json config = ReadJson(dir + "/tokenizer_config.json");
  config["add_bos_token"] = false;
  WriteFile(dir + "/tokenizer_config.json", config.dump());
  auto off = Tokenizer::LoadForCheckpoint(dir);
  ASSERT_OK(off);
  EXPECT_FALSE((*off)->add_bos());
  EXPECT_EQ((*off)->EncodeWithBos("Tokyo is big.").value(), *plain);
  EXPECT_NE((*off)->content_sha256(), sha);

  // GPT-2 style: no template BOS, so none is added.
  auto gpt2 = Tokenizer::LoadForCheckpoint(SourceDir() + "/tests/fixtures/bpe/gpt2_style");
  ASSERT_OK(gpt2);
  EXPECT_FALSE((*gpt2)->add_bos());
  EXPECT_EQ((*gpt2)->IdToPiece((*gpt2)->eos_id()), "<|endoftext|>");
}

TEST(BpeCheckpointTokenizerTest, SentencePieceIsPreferredAndHashesDifferByContent) {
  const std::string dir = CopyFixture(SourceDir() + "/tests/fixtures/bpe/gpt2_style", "both");
  auto bpe = Tokenizer::LoadForCheckpoint(dir);
  ASSERT_OK(bpe);
  EXPECT_STREQ((*bpe)->kind(), "bpe");
  std::filesystem::copy_file(TokenizerFixture(), dir + "/tokenizer.model");
  auto spm = Tokenizer::LoadForCheckpoint(dir);
  ASSERT_OK(spm);
  EXPECT_STREQ((*spm)->kind(), "sentencepiece");
  EXPECT_NE((*spm)->content_sha256(), (*bpe)->content_sha256());
  // The same files elsewhere hash the same.
  const std::string copy = CopyFixture(dir, "copy");
  EXPECT_EQ(Tokenizer::LoadForCheckpoint(copy).value()->content_sha256(),
            (*spm)->content_sha256());
  // An explicit .json path loads BPE even beside a tokenizer.model.
  auto forced = Tokenizer::LoadForCheckpoint(dir, dir + "/tokenizer.json");
  ASSERT_OK(forced);
  EXPECT_STREQ((*forced)->kind(), "bpe");
}

TEST(TokenizerTest, Errors) {
  std::string dir = ScratchDir("bad");
  WriteFile(dir + "/tokenizer.model", "definitely not a protobuf");
  EXPECT_THAT(Tokenizer::Load(dir + "/tokenizer.model", BosRule{}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a SentencePiece")));
  EXPECT_THAT(Tokenizer::Load(dir + "/missing.model", BosRule{}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.model")));
  auto tokenizer = Tokenizer::Load(TokenizerFixture(), BosRule{});
  ASSERT_OK(tokenizer);
  EXPECT_THAT((*tokenizer)->Decode({5, 420}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("420")));
}

}  // namespace
}  // namespace steadyeval
