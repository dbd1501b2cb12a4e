// Inputs the fuzzers' size limit keeps them from producing: multi-megabyte and deeply
// nested files through every parser with a fuzz target. Each must end in a status (an
// error naming the problem where the input is unusable), never a stack overflow.
#include <cstdint>
#include <filesystem>
#include <string>

#include "common/json_limits.h"
#include "common/safetensors.h"
#include "testing/files.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"
#include "common/steps.h"
#include "common/task.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/averaging/averager.h"
#include "worker/tokenizer/bpe_tokenizer.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/model/model_config.h"
#include "worker/tokenizer/tokenizer.h"

namespace steadyeval {
namespace {

using ::testing::HasSubstr;
using ::steadyeval::testing::CopyFixture;
using ::steadyeval::testing::ReadFileOrEmpty;
using ::steadyeval::testing::SourceDir;
using ::steadyeval::testing::StatusIs;
using ::steadyeval::testing::WriteFile;

// Deep enough that recursing once per level overflows an 8 MiB stack many times over.
constexpr size_t kDeep = 1'000'000;

std::string DeepArray(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// `json_object` (text of a JSON object) with one more member, "extra", nested `depth` deep.
std::string WithDeepMember(const std::string& json_object, size_t depth) {
  const size_t close = json_object.rfind('}');
  return json_object.substr(0, close) + ", \"extra\": " + DeepArray(depth) + "}";
}

TEST(JsonNestingTest, CountsBracketsOutsideStringsOnly) {
  EXPECT_OK(CheckJsonNesting("f", DeepArray(3), 3));
  EXPECT_THAT(CheckJsonNesting("f.json", DeepArray(4), 3),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("f.json: JSON nested deeper than 3 levels (at byte 3)")));
  EXPECT_OK(CheckJsonNesting("f", R"({"a": "[[[[{{{{", "b": ["\"[[[["]})", 2));
  // Stray closers do not take the depth below 0 (which would let "[[" pass here).
  EXPECT_THAT(CheckJsonNesting("f", "[]]]][[", 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at byte 6")));
  EXPECT_OK(CheckJsonNesting("f", "[" + std::string(kDeep, '"'), 1));
}

TEST(InputLimitsTest, SafetensorsHeaderNestedDeepIsRefused) {
  const std::string header =
      R"({"t": {"dtype": "F32", "shape": )" + DeepArray(kDeep) + R"(, "data_offsets": [0, 4]}})";
  EXPECT_THAT(ParseSafetensorsHeader(header, 8 + header.size() + 4, "deep.safetensors"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("deep.safetensors")));
}

TEST(InputLimitsTest, SafetensorsHeaderOfManyMegabytesParses) {
  std::string header = R"({"__metadata__": {"note": ")" + std::string(16 << 20, 'x') + R"("})";
  for (int i = 0; i < 20000; ++i) {
    header += ", \"t" + std::to_string(i) + "\": {\"dtype\": \"F32\", \"shape\": [1], " +
              "\"data_offsets\": [" + std::to_string(4 * i) + ", " + std::to_string(4 * i + 4) +
              "]}";
  }
  header += "}";
  ASSERT_OK_AND_ASSIGN(SafetensorsHeader parsed,
                       ParseSafetensorsHeader(header, 8 + header.size() + 4 * 20000, "big"));
  EXPECT_EQ(parsed.tensors.size(), 20000u);
  EXPECT_EQ(parsed.data_length, 4u * 20000);
}

TEST(InputLimitsTest, ConfigNestedDeepIsRefused) {
  const std::string config =
      ReadFileOrEmpty(SourceDir() + "/tests/fixtures/llama/rope_llama3/config.json");
  ASSERT_OK(ParseLlamaConfig(config));
  EXPECT_THAT(ParseLlamaConfig(WithDeepMember(config, kDeep)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config.json: JSON nested deeper than 64 levels")));
  EXPECT_OK(ParseLlamaConfig(WithDeepMember(config, kMaxJsonNesting - 1)));
}

// Averaging compares the members' configs key by key (copies, == and dump recurse).
TEST(InputLimitsTest, AveragingMembersWithDeepConfigsIsRefused) {
  const std::string fixture = SourceDir() + "/tests/fixtures/llama/fp16";
  const std::string a = CopyFixture(fixture, "a");
  const std::string b = CopyFixture(fixture, "b");
  const std::string deep = WithDeepMember(ReadFileOrEmpty(fixture + "/config.json"), kDeep);
  WriteFile(a + "/config.json", deep);
  WriteFile(b + "/config.json", deep);
  ASSERT_OK_AND_ASSIGN(auto reference, OpenWindowMember(a));
  ASSERT_OK_AND_ASSIGN(auto member, OpenWindowMember(b));
  EXPECT_THAT(CheckMembersAgree(*reference, *member),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nested deeper")));
}

// Flatten() walks nested Sequences recursively, building each level's field name.
TEST(InputLimitsTest, TokenizerWithDeeplyNestedSequencesIsRefused) {
  auto tokenizer_with_depth = [](size_t depth) {
    std::string nested;
    for (size_t i = 0; i < depth; ++i) nested += R"({"type": "Sequence", "pretokenizers": [)";
    nested += R"({"type": "ByteLevel"})";
    for (size_t i = 0; i < depth; ++i) nested += "]}";
    return R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": )" +
           nested + "}";
  };
  ASSERT_OK(BpeTokenizer::FromJson(tokenizer_with_depth(20), "shallow/tokenizer.json"));
  EXPECT_THAT(BpeTokenizer::FromJson(tokenizer_with_depth(1000), "deep/tokenizer.json"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("deep/tokenizer.json: JSON nested deeper than 64 levels")));
}

// tokenizer_config.json is dumped into the tokenizer's content hash.
TEST(InputLimitsTest, TokenizerConfigNestedDeepIsRefused) {
  const std::string dir = CopyFixture(SourceDir() + "/tests/fixtures/bpe/gpt2_style", "ckpt");
  ASSERT_OK(Tokenizer::LoadForCheckpoint(dir));
  WriteFile(dir + "/tokenizer_config.json",
            WithDeepMember(ReadFileOrEmpty(dir + "/tokenizer_config.json"), kDeep));
  EXPECT_THAT(Tokenizer::LoadForCheckpoint(dir),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tokenizer_config.json: JSON nested deeper than")));
}

TEST(InputLimitsTest, TaskFilesNestedDeepEndInStatus) {
  const std::string generation =
      R"({"instruction": "i", "output_length": 4, "metrics": ["exact_match"],
          "samples": [{"input": "1", "output": "2"}]})";
  ASSERT_OK(ParseTask("t.json", generation));
  // An unknown member is ignored however deep it nests: the parse does not recurse.
  EXPECT_OK(ParseTask("t.json", WithDeepMember(generation, kDeep)));
  EXPECT_THAT(ParseTask("t.jsonl", DeepArray(kDeep)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("t.jsonl:1")));
  EXPECT_THAT(
      ParseTask("t.json", R"({"instruction": "i", "output_length": 4, "metrics": ["m"],
                              "samples": [)" + DeepArray(kDeep) + "]}"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("samples[0]")));
}

TEST(InputLimitsTest, TaskFileOfManyMegabytesParses) {
  std::string jsonl;
  for (int i = 0; i < 100'000; ++i) {
    jsonl += R"({"query": "q )" + std::to_string(i) + R"(", "choices": ["a", "b"], "gold": 1})" "\n";
  }
  ASSERT_GT(jsonl.size(), 4u << 20);
  ASSERT_OK_AND_ASSIGN(Task task, ParseTask("big.jsonl", jsonl));
  EXPECT_EQ(task.size(), 100'000u);
}

TEST(InputLimitsTest, StepPatternOfAMegabyteIsRefused) {
  EXPECT_THAT(StepParser::Create(std::string(1 << 20, '(') + "\\d+" + std::string(1 << 20, ')')),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  ASSERT_OK_AND_ASSIGN(auto parser, StepParser::Create(""));
  EXPECT_EQ(parser->Parse("step_" + std::string(1 << 20, '1')), std::nullopt);
  EXPECT_EQ(parser->Parse("step_000100"), 100u);
}

}  // namespace
}  // namespace steadyeval
