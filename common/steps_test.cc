#include "common/steps.h"

#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval {
namespace {

using ::testing::HasSubstr;
using ::testing::Optional;
using ::steadyeval::testing::StatusIs;

std::unique_ptr<StepParser> Parser(const std::string& pattern = "") {
  auto parser = StepParser::Create(pattern);
  EXPECT_OK(parser);
  return parser.ok() ? *std::move(parser) : nullptr;
}

TEST(StepParserTest, DefaultsRecogniseTheCommonTrainers) {
  auto parser = Parser();
  EXPECT_THAT(parser->Parse("step_000100"), Optional(100u));
  EXPECT_THAT(parser->Parse("step-100"), Optional(100u));
  EXPECT_THAT(parser->Parse("step100"), Optional(100u));
  EXPECT_THAT(parser->Parse("iter_0000100"), Optional(100u));     // Megatron
  EXPECT_THAT(parser->Parse("checkpoint-100"), Optional(100u));   // HF Trainer
  EXPECT_THAT(parser->Parse("global_step100"), Optional(100u));   // DeepSpeed
  EXPECT_THAT(parser->Parse("step_0"), Optional(0u));
}

TEST(StepParserTest, DefaultsMatchTheWholeName) {
  auto parser = Parser();
  for (const char* name : {"step_000100.tmp", "step_000100-partial", "tmp_step_000100", "step_",
                           "step_-1", "step_1e3", "iter_", "checkpoint-", "global_step",
                           "checkpoint_100", "iter-100", "latest", "", "step_ 100", "STEP_100"}) {
    EXPECT_EQ(parser->Parse(name), std::nullopt) << name;
  }
}

TEST(StepParserTest, StepsBeyondUint64AreNotSteps) {
  auto parser = Parser();
  EXPECT_THAT(parser->Parse("step_18446744073709551615"), Optional(18446744073709551615ull));
  EXPECT_EQ(parser->Parse("step_18446744073709551616"), std::nullopt);
  EXPECT_EQ(parser->Parse("step_99999999999999999999999"), std::nullopt);
}

TEST(StepParserTest, CustomPatternReplacesTheDefaults) {
  auto parser = Parser(R"(run42-ckpt(\d+)\.hf)");
  EXPECT_THAT(parser->Parse("run42-ckpt7.hf"), Optional(7u));
  EXPECT_EQ(parser->Parse("run42-ckpt7.hf.tmp"), std::nullopt);
  EXPECT_EQ(parser->Parse("step_000100"), std::nullopt);
}

TEST(StepParserTest, ACaptureOfNonDigitsIsNotAStep) {
  auto parser = Parser(R"(ckpt_(\w+))");
  EXPECT_THAT(parser->Parse("ckpt_12"), Optional(12u));
  EXPECT_EQ(parser->Parse("ckpt_12a"), std::nullopt);
  EXPECT_EQ(parser->Parse("ckpt_abc"), std::nullopt);
}

TEST(StepParserTest, RejectsBadPatterns) {
  EXPECT_THAT(StepParser::Create(R"(ckpt_\d+)"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0 capture groups")));
  EXPECT_THAT(StepParser::Create(R"((ckpt)_(\d+))"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 capture groups")));
  EXPECT_THAT(StepParser::Create(R"(ckpt_(\d+)"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a valid regex")));
}

TEST(StepParserTest, EveryDefaultPatternCompiles) {
  ASSERT_FALSE(StepParser::DefaultPatterns().empty());
  for (const std::string& pattern : StepParser::DefaultPatterns()) {
    EXPECT_OK(StepParser::Create(pattern)) << pattern;
  }
}

TEST(StepParserTest, BacktrackingPatternsRunInLinearTime) {
  // (a+)+$ takes exponential time in a backtracking engine on "aaaa…ab"; RE2 is linear.
  auto parser = StepParser::Create("(a+)+$");
  ASSERT_TRUE(parser.ok());
  EXPECT_EQ((*parser)->Parse(std::string(100000, 'a') + "b"), std::nullopt);
}

TEST(StepParserTest, OversizedPatternsAreRefused) {
  EXPECT_FALSE(StepParser::Create(std::string(2000, 'a') + "(\\d+)").ok());
  // Small text, huge program: RE2's memory bound refuses it.
  EXPECT_FALSE(StepParser::Create("((((((a{100}){100}){100}){100})))(\\d+)x").ok());
}

}  // namespace
}  // namespace steadyeval
