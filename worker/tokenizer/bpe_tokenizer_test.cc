// Tests for BpeTokenizer against reference encodings from an independent implementation.
//
// How the fixtures were made (tests/fixtures/bpe/):
//   /usr/bin/python3 tests/reference/make_bpe_tokenizers.py
//     trains three tiny byte-level BPE tokenizers (256 byte tokens, then 300-350 merges) on
//     tests/fixtures/corpus.txt plus some Japanese and emoji text and writes
//     gpt2_style/{tokenizer.json,tokenizer_config.json}  (ByteLevel + GPT-2 regex,
//         <|endoftext|>, merges as "a b"),
//     llama3_style/{tokenizer.json,tokenizer_config.json} (Sequence[Split(Llama-3 regex,
//         Isolated), ByteLevel(use_regex false)], ignore_merges, Llama-3 special tokens,
//         TemplateProcessing with <|begin_of_text|>, merges as [a, b]),
//     neox_style/{tokenizer.json,tokenizer_config.json}   (NFC, ByteLevel with a prefix
//         space, space runs as normalized added tokens, <mask> with lstrip, an EOS template),
//     texts.json (the strings checked below: a fixed list plus seeded random ones).
//   mkdir -p /tmp/bpe-ref && cd /tmp/bpe-ref && npm init -y &&
//     npm install --ignore-scripts @huggingface/transformers   (4.3.2)
//   node tests/reference/bpe_reference.mjs /tmp/bpe-ref
//     loads each fixture offline with transformers.js and writes expected.json: for each
//     text, encode(text, add_special_tokens=false), decode of those ids, and encode(text)
//     with the post-processor's tokens.
#include "worker/tokenizer/bpe_tokenizer.h"

#include <random>
#include <string>
#include <vector>

#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "testing/files.h"
#include "testing/temp_dir.h"

namespace steadyeval {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;
using ::steadyeval::testing::StatusIs;

std::string BpeFixture(const std::string& name) {
  return testing::SourceDir() + "/tests/fixtures/bpe/" + name;
}

std::unique_ptr<BpeTokenizer> LoadFixture(const std::string& name) {
  auto tokenizer = BpeTokenizer::Load(BpeFixture(name + "/tokenizer.json"));
  EXPECT_OK(tokenizer);
  return tokenizer.ok() ? std::move(tokenizer).value() : nullptr;
}

class ReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceTest, EncodeMatchesTransformersJs) {
  const std::string fixture = GetParam();
  std::unique_ptr<BpeTokenizer> tokenizer = LoadFixture(fixture);
  ASSERT_NE(tokenizer, nullptr);
  const nlohmann::json expected = testing::ReadJson(BpeFixture("expected.json"));
  const nlohmann::json& records = expected.at(fixture);
  ASSERT_THAT(records, SizeIs(testing::ReadJson(BpeFixture("texts.json")).size()));
  for (const nlohmann::json& record : records) {
    const std::string text = record.at("text").get<std::string>();
    SCOPED_TRACE("text: \"" + text + "\"");
    ASSERT_OK_AND_ASSIGN(std::vector<int64_t> ids, tokenizer->Encode(text));
    EXPECT_EQ(ids, record.at("ids").get<std::vector<int64_t>>());

    ASSERT_OK_AND_ASSIGN(std::string decoded, tokenizer->Decode(ids));
    EXPECT_EQ(decoded, record.at("decoded").get<std::string>());
    // The NeoX-style fixture normalizes (NFC) and adds a prefix space, so only the others
    // give the text back unchanged.
    if (fixture != "neox_style") {
      EXPECT_EQ(decoded, text);
    }

    std::vector<int64_t> with_template;
    if (tokenizer->template_bos_id()) with_template.push_back(*tokenizer->template_bos_id());
    with_template.insert(with_template.end(), ids.begin(), ids.end());
    if (tokenizer->template_eos_id()) with_template.push_back(*tokenizer->template_eos_id());
    EXPECT_EQ(with_template, record.at("ids_with_special").get<std::vector<int64_t>>());
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ReferenceTest,
                         ::testing::Values("gpt2_style", "llama3_style", "neox_style"));

// Any text over a pool of scripts, emoji and whitespace survives Encode then Decode when
// the tokenizer neither normalizes nor adds a prefix space.
class RoundTripTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RoundTripTest, RandomTextRoundTrips) {
  std::unique_ptr<BpeTokenizer> tokenizer = LoadFixture(GetParam());
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<std::string> pool = {"a",          "Z",      "the",    " ",
                                         "  ",         "\t",     "\n",     "\r\n",
                                         "'s",         "'LL",    "0",      "42",
                                         "999",        ".",      "!?",     "日",
                                         "本",         "の",     "す",     "。",
                                         "é",          "ß",      "😀",      "👨‍👩‍👧",
                                         "🏽",       "\u00a0", "\u3000", "<|endoftext|>",
                                         "<|eot_id|>", "<|",     "|>",     "ā",
                                         "Ġ",          "Ċ"};
  std::mt19937 random(20261128);
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    const int length = static_cast<int>(random() % 24);
    for (int i = 0; i < length; ++i) text += pool[random() % pool.size()];
    SCOPED_TRACE("text: \"" + text + "\"");
    ASSERT_OK_AND_ASSIGN(std::vector<int64_t> ids, tokenizer->Encode(text));
    ASSERT_OK_AND_ASSIGN(std::string decoded, tokenizer->Decode(ids));
    EXPECT_EQ(decoded, text);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RoundTripTest, ::testing::Values("gpt2_style", "llama3_style"));

TEST(BpeTokenizerTest, VocabularyAccessors) {
  std::unique_ptr<BpeTokenizer> gpt2 = LoadFixture("gpt2_style");
  std::unique_ptr<BpeTokenizer> llama3 = LoadFixture("llama3_style");
  ASSERT_NE(gpt2, nullptr);
  ASSERT_NE(llama3, nullptr);

  const std::optional<int64_t> endoftext = gpt2->TokenToId("<|endoftext|>");
  ASSERT_TRUE(endoftext.has_value());
  EXPECT_EQ(gpt2->vocab_size(), *endoftext + 1);
  EXPECT_TRUE(gpt2->IsSpecial(*endoftext));
  EXPECT_EQ(gpt2->IdToPiece(*endoftext), "<|endoftext|>");
  // The 256 byte tokens come first, id = byte value; space is shown as U+0120.
  EXPECT_EQ(gpt2->TokenToId("Ġ"), 32);
  EXPECT_EQ(gpt2->IdToPiece('!'), "!");
  EXPECT_EQ(gpt2->IdToPiece(0), "Ā");
  EXPECT_EQ(gpt2->IdToPiece(gpt2->vocab_size()), "");
  EXPECT_EQ(gpt2->IdToPiece(-1), "");
  EXPECT_FALSE(gpt2->TokenToId("not a token").has_value());
  EXPECT_EQ(gpt2->template_bos_id(), std::nullopt);
  EXPECT_EQ(gpt2->template_eos_id(), std::nullopt);

  const std::optional<int64_t> begin = llama3->TokenToId("<|begin_of_text|>");
  ASSERT_TRUE(begin.has_value());
  EXPECT_EQ(llama3->template_bos_id(), begin);
  EXPECT_EQ(llama3->template_eos_id(), std::nullopt);
  EXPECT_EQ(llama3->vocab_size(), *llama3->TokenToId("<|eot_id|>") + 1);
  EXPECT_FALSE(llama3->IsSpecial(0));

  std::unique_ptr<BpeTokenizer> neox = LoadFixture("neox_style");
  ASSERT_NE(neox, nullptr);
  EXPECT_EQ(neox->template_bos_id(), std::nullopt);
  EXPECT_EQ(neox->template_eos_id(), neox->TokenToId("<|endoftext|>"));
  EXPECT_FALSE(neox->IsSpecial(*neox->TokenToId("    ")));  // a whitespace-run added token
  EXPECT_TRUE(neox->IsSpecial(*neox->TokenToId("<mask>")));
}

// With ignore_merges a pre-token found whole in the vocabulary is one token even when no
// merge sequence builds it; without it (GPT-2 fixture) merges alone decide.
TEST(BpeTokenizerTest, IgnoreMergesUsesWholeWords) {
  std::unique_ptr<BpeTokenizer> gpt2 = LoadFixture("gpt2_style");
  std::unique_ptr<BpeTokenizer> llama3 = LoadFixture("llama3_style");
  ASSERT_NE(gpt2, nullptr);
  ASSERT_NE(llama3, nullptr);
  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> whole, llama3->Encode(" steadyeval"));
  EXPECT_THAT(whole, ElementsAre(*llama3->TokenToId("Ġsteadyeval")));
  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> merged, gpt2->Encode(" steadyeval"));
  EXPECT_GT(merged.size(), 1u);
}

// The decoded text, or the error's text so a failure shows in the comparison.
std::string DecodeText(const BpeTokenizer& tokenizer, const std::vector<int64_t>& ids) {
  absl::StatusOr<std::string> text = tokenizer.Decode(ids);
  return text.ok() ? *text : "error: " + text.status().ToString();
}

// "の" is E3 81 AE; the fixtures learned the merge of its first two bytes, a token that is
// not a whole character on its own.
TEST(BpeTokenizerTest, DecodeReplacesPartialCharacters) {
  std::unique_ptr<BpeTokenizer> tokenizer = LoadFixture("llama3_style");
  ASSERT_NE(tokenizer, nullptr);
  const std::optional<int64_t> lead = tokenizer->TokenToId("ãģ");  // bytes E3 81
  const std::optional<int64_t> tail = tokenizer->TokenToId("®");   // byte AE
  ASSERT_TRUE(lead.has_value());
  ASSERT_TRUE(tail.has_value());
  EXPECT_EQ(DecodeText(*tokenizer, {*lead}), "\xEF\xBF\xBD");
  EXPECT_EQ(DecodeText(*tokenizer, {*lead, *tail}), "の");
  // A truncated character between whole ones: one U+FFFD for the maximal invalid prefix.
  const int64_t a = *tokenizer->TokenToId("a");
  EXPECT_EQ(DecodeText(*tokenizer, {a, *lead, a}),
            "a\xEF\xBF\xBD"
            "a");
  // A lone continuation byte is its own U+FFFD.
  EXPECT_EQ(DecodeText(*tokenizer, {*tail, *tail}), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(BpeTokenizerTest, DecodeRejectsIdsOutsideTheVocabulary) {
  std::unique_ptr<BpeTokenizer> tokenizer = LoadFixture("gpt2_style");
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_THAT(tokenizer->Decode({0, tokenizer->vocab_size()}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("token id " + std::to_string(tokenizer->vocab_size()))));
  EXPECT_THAT(tokenizer->Decode({-3}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token id -3")));
}

TEST(BpeTokenizerTest, EncodeRejectsInvalidUtf8) {
  std::unique_ptr<BpeTokenizer> tokenizer = LoadFixture("gpt2_style");
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_THAT(tokenizer->Encode("abc\xE3\x81"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid UTF-8")));
}

TEST(BpeTokenizerTest, MissingFileIsNotFound) {
  const std::string path = testing::ScratchDir("missing") + "/tokenizer.json";
  EXPECT_THAT(BpeTokenizer::Load(path), StatusIs(absl::StatusCode::kNotFound, HasSubstr(path)));
}

TEST(BpeTokenizerTest, MalformedJsonIsInvalidArgument) {
  const std::string dir = testing::ScratchDir("bad_json");
  testing::WriteFile(dir + "/tokenizer.json", "{\"model\": {\"type\": \"BPE\",");
  EXPECT_THAT(BpeTokenizer::Load(dir + "/tokenizer.json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(dir + "/tokenizer.json: content is not valid JSON")));
}

nlohmann::json FixtureJson(const std::string& name) {
  return testing::ReadJson(BpeFixture(name + "/tokenizer.json"));
}

TEST(BpeTokenizerTest, MalformedFieldsAreNamed) {
  nlohmann::json no_merge_target = FixtureJson("gpt2_style");
  no_merge_target["model"]["merges"].push_back("Ġsteadyeval Ġcheckpointing");
  EXPECT_THAT(
      BpeTokenizer::FromJson(no_merge_target.dump(), "fixture.json"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fixture.json: model.merges[300]")));

  nlohmann::json bad_merge = FixtureJson("gpt2_style");
  bad_merge["model"]["merges"][3] = 7;
  EXPECT_THAT(BpeTokenizer::FromJson(bad_merge.dump(), "fixture.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model.merges[3]")));

  nlohmann::json bad_added = FixtureJson("llama3_style");
  bad_added["added_tokens"][1].erase("id");
  EXPECT_THAT(BpeTokenizer::FromJson(bad_added.dump(), "fixture.json"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("added_tokens[1].id")));

  nlohmann::json bad_regex = FixtureJson("llama3_style");
  bad_regex["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  EXPECT_THAT(
      BpeTokenizer::FromJson(bad_regex.dump(), "fixture.json"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pre_tokenizer step 0.pattern")));
}

TEST(BpeTokenizerTest, UnsupportedComponentsAreNamed) {
  nlohmann::json metaspace = FixtureJson("llama3_style");
  metaspace["pre_tokenizer"]["pretokenizers"][1] = {
      {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}};
  EXPECT_THAT(
      BpeTokenizer::FromJson(metaspace.dump(), "tokenizer.json"),
      StatusIs(absl::StatusCode::kUnimplemented,
               HasSubstr("tokenizer.json: pre_tokenizer type 'Metaspace' is not supported")));

  nlohmann::json wordpiece = FixtureJson("gpt2_style");
  wordpiece["model"]["type"] = "WordPiece";
  EXPECT_THAT(BpeTokenizer::FromJson(wordpiece.dump(), "tokenizer.json"),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("model type 'WordPiece'")));

  nlohmann::json byte_fallback = FixtureJson("gpt2_style");
  byte_fallback["model"]["byte_fallback"] = true;
  EXPECT_THAT(BpeTokenizer::FromJson(byte_fallback.dump(), "tokenizer.json"),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("byte_fallback")));

  nlohmann::json lowercase = FixtureJson("gpt2_style");
  lowercase["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_THAT(BpeTokenizer::FromJson(lowercase.dump(), "tokenizer.json"),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("normalizer type 'Lowercase'")));

  nlohmann::json fuse = FixtureJson("gpt2_style");
  fuse["decoder"] = {{"type", "Fuse"}};
  EXPECT_THAT(BpeTokenizer::FromJson(fuse.dump(), "tokenizer.json"),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("decoder type 'Fuse'")));
}

// Added-token options, following the `tokenizers` library's AddedVocabulary: lstrip/rstrip
// swallow the whitespace next to the token; single_word matches only between non-word
// characters.
TEST(BpeTokenizerTest, AddedTokenStripAndSingleWord) {
  nlohmann::json json = FixtureJson("gpt2_style");
  const int64_t mask_id = json["added_tokens"][0]["id"].get<int64_t>() + 1;
  json["added_tokens"].push_back({{"id", mask_id},
                                  {"content", "<mask>"},
                                  {"special", true},
                                  {"lstrip", true},
                                  {"rstrip", true},
                                  {"single_word", false},
                                  {"normalized", false}});
  json["added_tokens"].push_back({{"id", mask_id + 1},
                                  {"content", "ony"},
                                  {"special", false},
                                  {"lstrip", false},
                                  {"rstrip", false},
                                  {"single_word", true},
                                  {"normalized", true}});
  ASSERT_OK_AND_ASSIGN(auto tokenizer, BpeTokenizer::FromJson(json.dump(), "with_mask"));
  ASSERT_OK_AND_ASSIGN(auto gpt2,
                       BpeTokenizer::FromJson(FixtureJson("gpt2_style").dump(), "plain"));

  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> ids, tokenizer->Encode("a  <mask>\t b"));
  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> a, gpt2->Encode("a"));
  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> b, gpt2->Encode("b"));
  std::vector<int64_t> want = a;
  want.push_back(mask_id);
  want.insert(want.end(), b.begin(), b.end());
  EXPECT_EQ(ids, want);

  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> alone, tokenizer->Encode("ony"));
  EXPECT_THAT(alone, ElementsAre(mask_id + 1));
  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> spaced, tokenizer->Encode("x ony."));
  EXPECT_THAT(spaced, ::testing::Contains(mask_id + 1));
  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> inside, tokenizer->Encode("Tony"));
  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> plain_inside, gpt2->Encode("Tony"));
  EXPECT_EQ(inside, plain_inside);
}

// NFC (GPT-NeoX's normalizer) composes "e" + U+0301 to "é" before tokenizing.
TEST(BpeTokenizerTest, NfcNormalizerComposes) {
  nlohmann::json json = FixtureJson("gpt2_style");
  json["normalizer"] = {{"type", "NFC"}};
  ASSERT_OK_AND_ASSIGN(auto nfc, BpeTokenizer::FromJson(json.dump(), "nfc"));
  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> decomposed, nfc->Encode("cafe\u0301"));
  ASSERT_OK_AND_ASSIGN(std::vector<int64_t> composed, nfc->Encode("caf\u00e9"));
  EXPECT_EQ(decomposed, composed);
  ASSERT_OK_AND_ASSIGN(std::string text, nfc->Decode(decomposed));
  EXPECT_EQ(text, "caf\u00e9");
}

}  // namespace
}  // namespace steadyeval
