// Task files, prompts, text normalisation and scoring (DESIGN §7; issue: llm-jp-eval
// compatible tasks). The expected prompts under tests/fixtures/prompts were written by
// tests/reference/expected_prompts.py, an independent Python rendering of llm-jp-eval's
// template, so the comparison here is byte for byte against another implementation.
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/prompt.h"
#include "common/scoring.h"
#include "testing/files.h"
#include "testing/files.h"
#include "testing/status_matchers.h"
#include "common/task.h"
#include "common/text.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::steadyeval::testing::SourceDir;
using ::steadyeval::testing::StatusIs;

std::string ReadSource(const std::string& relative) {
  std::ifstream in(SourceDir() + "/" + relative, std::ios::binary);
  EXPECT_TRUE(in.good()) << relative;
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

Task LoadExample(const std::string& name, TaskOptions options = {}) {
  absl::StatusOr<Task> task = ParseTask(name, ReadSource("examples/tasks/" + name), options);
  EXPECT_TRUE(task.ok()) << task.status();
  return task.ok() ? *task : Task{};
}

// ---- prompts ----

TEST(PromptTest, JapaneseWithShotsFromTrainFileMatchesReference) {
  TaskOptions options;
  options.train_filename = "train/ja_qa.json";
  options.train_content = ReadSource("examples/tasks/train/ja_qa.json");
  Task task = LoadExample("ja_qa.json", options);
  ASSERT_EQ(task.few_shots.size(), 5u);  // the train split's samples; K picks the first 4
  EXPECT_EQ(BuildPrompt(task, 2, {4, PromptLanguage::kJapanese}),
            ReadSource("tests/fixtures/prompts/ja_qa.k4.s2.txt"));
}

TEST(PromptTest, ZeroShotsMatchesReference) {
  Task task = LoadExample("ja_nli.json");
  EXPECT_EQ(BuildPrompt(task, 0, {0, PromptLanguage::kJapanese}),
            ReadSource("tests/fixtures/prompts/ja_nli.k0.s0.txt"));
}

TEST(PromptTest, EnglishTemplateMatchesReference) {
  Task task = LoadExample("en_qa.json");
  EXPECT_EQ(BuildPrompt(task, 5, {2, PromptLanguage::kEnglish}),
            ReadSource("tests/fixtures/prompts/en_qa.k2.s5.en.txt"));
}

TEST(PromptTest, MultiLineOutputsAndFewerShotsThanAsked) {
  Task task = LoadExample("ja_entities.json");  // 2 shots in the file, 4 asked
  EXPECT_EQ(BuildPrompt(task, 3, {4, PromptLanguage::kJapanese}),
            ReadSource("tests/fixtures/prompts/ja_entities.k4.s3.txt"));
}

TEST(PromptTest, PrefixIsSharedAndSuffixIsPerSample) {
  Task task = LoadExample("en_qa.json");
  PromptOptions options{3, PromptLanguage::kEnglish};
  const std::string prefix = PromptPrefix(task, options);
  for (size_t i = 0; i < task.size(); ++i) {
    const std::string prompt = BuildPrompt(task, i, options);
    EXPECT_EQ(prompt.substr(0, prefix.size()), prefix);
    EXPECT_EQ(prompt.substr(prefix.size()), PromptSuffix(task, i, options));
  }
}

TEST(PromptTest, LanguageAndBosNames) {
  EXPECT_EQ(ParsePromptLanguage(""), PromptLanguage::kJapanese);
  EXPECT_EQ(ParsePromptLanguage("en"), PromptLanguage::kEnglish);
  EXPECT_FALSE(ParsePromptLanguage("fr").has_value());
  EXPECT_EQ(ParseBosMode(""), BosMode::kAuto);
  EXPECT_EQ(ParseBosMode("add"), BosMode::kAdd);
  EXPECT_EQ(ParseBosMode("none"), BosMode::kNone);
  EXPECT_FALSE(ParseBosMode("yes").has_value());
}

// ---- task files ----

TEST(TaskTest, EverySampleFileParsesWithSupportedMetrics) {
  for (const char* name :
       {"arith_mc.jsonl", "ja_commonsense_mc.jsonl", "en_commonsense_mc.jsonl", "qa_gen.json",
        "ja_qa.json", "en_qa.json", "ja_nli.json", "ja_sts.json", "ja_en_mt.json",
        "en_ja_mt.json", "ja_math.json", "ja_entities.json"}) {
    Task task = LoadExample(name);
    EXPECT_GT(task.size(), 0u) << name;
    EXPECT_OK(CheckMetricsSupported(task)) << name;
    EXPECT_TRUE(UnsupportedMetrics(task).empty()) << name;
  }
}

TEST(TaskTest, MaxSamplesTakesTheHead) {
  TaskOptions options;
  options.max_samples = 3;
  Task full = LoadExample("ja_qa.json");
  Task capped = LoadExample("ja_qa.json", options);
  ASSERT_EQ(capped.size(), 3u);
  EXPECT_EQ(capped.total_samples, full.size());
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(capped.samples[i].input, full.samples[i].input);
  EXPECT_EQ(capped.sha256, full.sha256);  // same file; the cap travels in the run's TaskRef

  options.max_samples = 2;
  Task mc = LoadExample("ja_commonsense_mc.jsonl", options);
  EXPECT_EQ(mc.size(), 2u);
  EXPECT_EQ(mc.choice_examples[1].id, "j2");
  options.max_samples = 1000;
  EXPECT_EQ(LoadExample("ja_qa.json", options).size(), full.size());
}

TEST(TaskTest, TrainFileChangesTheIdentity) {
  const std::string content = ReadSource("examples/tasks/ja_qa.json");
  TaskOptions options;
  options.train_filename = "train/ja_qa.json";
  options.train_content = ReadSource("examples/tasks/train/ja_qa.json");
  ASSERT_OK_AND_ASSIGN(Task with_train, ParseTask("ja_qa.json", content, options));
  ASSERT_OK_AND_ASSIGN(Task without, ParseTask("ja_qa.json", content));
  EXPECT_NE(with_train.sha256, without.sha256);
  EXPECT_EQ(with_train.sha256, TaskContentHash(content, options.train_content));
  EXPECT_EQ(without.sha256, TaskContentHash(content, ""));
  EXPECT_TRUE(without.few_shots.empty());
  EXPECT_EQ(with_train.few_shots[0].output, "白");

  options.train_content = R"({"samples": []})";
  EXPECT_THAT(ParseTask("ja_qa.json", content, options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("train/ja_qa.json"), HasSubstr("samples"))));
  EXPECT_THAT(ParseTask("x.jsonl", R"({"query": "q", "choices": ["a", "b"], "gold": 0})",
                        TaskOptions{"", 0, "train/x.json", "{}"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("generation tasks only")));
}

TEST(TaskTest, MetricOverrideSelectsThePrimary) {
  EXPECT_EQ(LoadExample("ja_qa.json").primary_metric(), "char_f1");
  EXPECT_EQ(LoadExample("ja_commonsense_mc.jsonl").primary_metric(), "acc");
  EXPECT_THAT(LoadExample("ja_commonsense_mc.jsonl").metrics, ElementsAre("acc", "acc_norm"));
  TaskOptions options;
  options.metric = "acc_norm";
  EXPECT_EQ(LoadExample("ja_commonsense_mc.jsonl", options).primary_metric(), "acc_norm");
  options.metric = "char_f1";
  EXPECT_THAT(CheckMetricsSupported(LoadExample("ja_commonsense_mc.jsonl", options)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("acc or acc_norm")));
  options.metric = "rouge2";
  EXPECT_THAT(CheckMetricsSupported(LoadExample("ja_qa.json", options)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("rouge2"), HasSubstr("char_f1"))));
}

struct Malformed {
  std::string filename;
  std::string content;
  std::vector<std::string> message_parts;  // file, field, reason
};

TEST(TaskTest, MalformedFilesNameFileFieldAndReason) {
  const std::string ok_sample = R"({"input": "a", "output": "b"})";
  const std::vector<Malformed> cases = {
      {"t.json", R"({"output_length": 3, "metrics": ["exact_match"], "samples": [)" + ok_sample + "]}",
       {"t.json", "missing field 'instruction'"}},
      {"t.json", R"({"instruction": 5, "output_length": 3, "metrics": ["exact_match"], "samples": [)" + ok_sample + "]}",
       {"t.json", "'instruction' must be a string"}},
      {"t.json", R"({"instruction": "i", "output_length": "3", "metrics": ["exact_match"], "samples": [)" + ok_sample + "]}",
       {"t.json", "'output_length'", "integer"}},
      {"t.json", R"({"instruction": "i", "output_length": 3, "samples": [)" + ok_sample + "]}",
       {"t.json", "missing field 'metrics'"}},
      {"t.json", R"({"instruction": "i", "output_length": 3, "metrics": "exact_match", "samples": [)" + ok_sample + "]}",
       {"t.json", "'metrics'", "array"}},
      {"t.json", R"({"instruction": "i", "output_length": 3, "metrics": ["exact_match"]})",
       {"t.json", "missing field 'samples'"}},
      {"t.json", R"({"instruction": "i", "output_length": 3, "metrics": ["exact_match"], "samples": []})",
       {"t.json", "'samples' is empty"}},
      {"t.json", R"({"instruction": "i", "output_length": 3, "metrics": ["exact_match"], "samples": [{"input": "a"}]})",
       {"t.json", "missing field 'samples[0].output'"}},
      {"t.json", R"({"instruction": "i", "output_length": 3, "metrics": ["exact_match"], "samples": [)" + ok_sample + R"(, {"input": 1, "output": "b"}]})",
       {"t.json", "'samples[1].input' must be a string"}},
      {"t.json", R"({"instruction": "i", "output_length": 3, "metrics": ["exact_match"], "few_shots": [3], "samples": [)" + ok_sample + "]}",
       {"t.json", "'few_shots[0]' must be an object"}},
      {"t.json", "{\"instruction\": \"i\xff\", \"output_length\": 3}", {"t.json", "invalid UTF-8 at byte 18", "line 1"}},
      {"t.json", "{\n\"instruction\": \"\xed\xa0\x80\"}", {"t.json", "invalid UTF-8", "line 2"}},  // a surrogate
      {"t.json", "[1, 2]", {"t.json", "expected a JSON object"}},
      {"t.json", "{", {"t.json", "not valid JSON"}},
      {"m.jsonl", R"({"query": "q", "choices": ["a"], "gold": 0})", {"m.jsonl:1", "'choices'", "at least two"}},
      {"m.jsonl", "\n" R"({"query": "q", "choices": ["a", "b"], "gold": 2})", {"m.jsonl:2", "'gold' is 2", "2 choices"}},
      {"m.jsonl", R"({"choices": ["a", "b"], "gold": 0})", {"m.jsonl:1", "missing field 'query'"}},
      {"m.jsonl", R"({"query": "q", "choices": ["a", 3], "gold": 0})", {"m.jsonl:1", "'choices[1]' must be a string"}},
      {"m.jsonl", "", {"m.jsonl", "no examples"}},
      {"m.jsonl", "{\"query\": \"\xc0\xaf\"}", {"m.jsonl", "invalid UTF-8"}},  // an overlong form
      {"t.txt", "{}", {"t.txt", "*.json", "*.jsonl"}},
  };
  for (const Malformed& c : cases) {
    absl::StatusOr<Task> task = ParseTask(c.filename, c.content);
    ASSERT_FALSE(task.ok()) << c.content;
    EXPECT_EQ(task.status().code(), absl::StatusCode::kInvalidArgument);
    for (const std::string& part : c.message_parts) {
      EXPECT_THAT(std::string(task.status().message()), HasSubstr(part)) << c.content;
    }
  }
}

TEST(TaskTest, Utf8Validation) {
  EXPECT_OK(CheckUtf8("x", "日本語 emoji 😀 ascii"));
  EXPECT_THAT(CheckUtf8("x", "ab\ncd\n\xe6\x97"), StatusIs(absl::StatusCode::kInvalidArgument,
                                                          HasSubstr("byte 6 (line 3)")));
  EXPECT_FALSE(CheckUtf8("x", "\xf4\x90\x80\x80").ok());  // above U+10FFFF
}

// ---- text normalisation ----

TEST(TextTest, NfkcFoldsFullWidthHalfWidthAndCompatibilityCharacters) {
  EXPECT_EQ(NormalizeNfkc("１２３４５"), "12345");                // full-width digits
  EXPECT_EQ(NormalizeNfkc("ＡＢＣ　ａｂｃ"), "ABC abc");          // full-width letters, ideographic space
  EXPECT_EQ(NormalizeNfkc("ｶﾀｶﾅ"), "カタカナ");                    // half-width katakana
  EXPECT_EQ(NormalizeNfkc("ｶﾞｷﾞ"), "ガギ");                        // with combining voiced marks
  EXPECT_EQ(NormalizeNfkc("ﾊﾟﾝ"), "パン");
  EXPECT_EQ(NormalizeNfkc("①㈱㍻ﬁ"), "1(株)平成fi");              // compatibility characters
  EXPECT_EQ(NormalizeNfkc("㎏㌔"), "kgキロ");
  EXPECT_EQ(NormalizeNfkc("x²"), "x2");
  EXPECT_EQ(NormalizeNfkc("東京"), "東京");                        // unchanged
}

TEST(TextTest, GeneratedAnswerExtraction) {
  EXPECT_EQ(NormalizeGenerated("  ７日\n\n### 入力:\n次"), "7日");
  EXPECT_EQ(NormalizeGenerated("東京\n横浜\n\nおまけ"), "東京\n横浜");
  EXPECT_EQ(NormalizeGenerated("\u3000ｶﾀｶﾅ\u3000"), "カタカナ");
  EXPECT_EQ(NormalizeGenerated("\n\nlater"), "");
  EXPECT_EQ(NormalizeGold(" ７日 "), " 7日 ");  // llm-jp-eval strips predictions only
  // NFKC before strip: U+00A8 becomes " \u0308", whose space is then stripped.
  EXPECT_EQ(NormalizeGenerated("\u00a8"), "\u0308");
  EXPECT_EQ(NormalizeGenerated("\x1f答\x1c"), "答");  // str.isspace() beyond White_Space
}

TEST(TextTest, TrailingWhitespaceMovesToTheContinuation) {
  EXPECT_EQ(MoveTrailingWhitespace("Answer: ", "yes"), std::make_pair(std::string("Answer:"), std::string(" yes")));
  EXPECT_EQ(MoveTrailingWhitespace("答え：\u3000\n", "傘"),
            std::make_pair(std::string("答え："), std::string("\u3000\n傘")));
  EXPECT_EQ(CodePointCount("傘 a😀"), 4u);
}

// ---- scoring ----

TEST(ScoringTest, MultipleChoiceAccAndAccNormPickFromLogLikelihoods) {
  // Choices "傘"(1 char) ... ; query ends in "答え：" (no trailing space).
  Task task = LoadExample("ja_commonsense_mc.jsonl");
  task.choice_examples.resize(1);  // {"傘", "鍋", "鉛筆", "枕"}, gold 0
  // Summed log-likelihoods: option 2 ("鉛筆", 2 chars) has the best sum but per character
  // option 0 wins.
  std::vector<RawOutput> outputs = {{"2", {-2.5, -9.0, -2.0, -8.0}}};
  ASSERT_OK_AND_ASSIGN(TaskScore acc, ScoreTask(task, outputs));
  EXPECT_EQ(acc.metric, "acc");
  EXPECT_EQ(acc.examples[0].normalized, "2");
  EXPECT_EQ(acc.score, 0.0);
  EXPECT_EQ(acc.metric_scores.at("acc"), 0.0);
  EXPECT_EQ(acc.metric_scores.at("acc_norm"), 0.0);  // -2.5/1 < -2.0/2 = -1.0

  // acc picks the short option 0 (the gold); per character the two-character option 2
  // wins (-1.5 vs -2.0 / 2).
  outputs = {{"0", {-1.5, -9.0, -2.0, -8.0}}};
  ASSERT_OK_AND_ASSIGN(acc, ScoreTask(task, outputs));
  EXPECT_EQ(acc.examples[0].normalized, "0");
  EXPECT_EQ(acc.metric_scores.at("acc"), 1.0);
  EXPECT_EQ(acc.metric_scores.at("acc_norm"), 0.0);

  task.metric_override = "acc_norm";
  ASSERT_OK_AND_ASSIGN(TaskScore norm, ScoreTask(task, outputs));
  EXPECT_EQ(norm.metric, "acc_norm");
  EXPECT_EQ(norm.examples[0].normalized, "2");  // the option acc_norm picks is the output
  EXPECT_EQ(norm.score, 0.0);
  EXPECT_EQ(norm.examples[0].metric_values.at("acc"), 1.0);

  ASSERT_OK_AND_ASSIGN(std::vector<double> per_char,
                       OptionScores(task, 0, {-1.5, -9.0, -2.0, -8.0}, "acc_norm"));
  EXPECT_THAT(per_char, ElementsAre(-1.5, -9.0, -1.0, -8.0));
  EXPECT_THAT(ScoreTask(task, {{"0", {-1, -2}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 option")));
}

TEST(ScoringTest, AccNormCountsTheMovedWhitespace) {
  // English choices carry a leading space: " scissors" is 9 code points.
  Task task = LoadExample("en_commonsense_mc.jsonl");
  ASSERT_OK_AND_ASSIGN(std::vector<double> s, OptionScores(task, 0, {-9, -8, -9, -6}, "acc_norm"));
  EXPECT_DOUBLE_EQ(s[0], -1.0);        // " scissors"
  EXPECT_DOUBLE_EQ(s[1], -8.0 / 8);    // " a spoon"
  EXPECT_DOUBLE_EQ(s[3], -6.0 / 6);    // " water"
}

TEST(ScoringTest, MultipleChoiceVotesScoreThePrimaryOnly) {
  Task task = LoadExample("ja_commonsense_mc.jsonl");
  std::vector<std::string> votes(task.size(), "0");
  ASSERT_OK_AND_ASSIGN(TaskScore scored, ScoreNormalized(task, votes));
  EXPECT_EQ(scored.metric_scores.size(), 1u);
  EXPECT_DOUBLE_EQ(scored.score, 3.0 / 8);  // golds 0 at j1, j4, j6
  votes[0] = "9";
  EXPECT_THAT(ScoreNormalized(task, votes),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an option index")));
}

TEST(ScoringTest, GenerationScoresEveryListedMetric) {
  Task task = LoadExample("ja_qa.json");  // char_f1, exact_match
  std::vector<RawOutput> outputs;
  for (const GenerationSample& s : task.samples) outputs.push_back({s.output + "\n\n### 入力:", {}});
  outputs[1].output = "12ヶ月";  // gold 12か月
  outputs[5].output = "7日";     // gold ７日 (NFKC makes them equal)
  ASSERT_OK_AND_ASSIGN(TaskScore scored, ScoreTask(task, outputs));
  EXPECT_EQ(scored.metric, "char_f1");
  EXPECT_TRUE(scored.per_example);
  EXPECT_EQ(scored.examples[5].metric_values.at("exact_match"), 1.0);
  EXPECT_EQ(scored.examples[1].metric_values.at("exact_match"), 0.0);
  EXPECT_GT(scored.examples[1].metric_values.at("char_f1"), 0.0);
  EXPECT_LT(scored.examples[1].metric_values.at("char_f1"), 1.0);
  EXPECT_EQ(scored.examples[1].score, scored.examples[1].metric_values.at("char_f1"));
  EXPECT_DOUBLE_EQ(scored.metric_scores.at("exact_match"), 7.0 / 8);
  EXPECT_EQ(scored.examples[0].normalized, "富士山");
}

TEST(ScoringTest, CorpusLevelPrimaryHasNoExampleValues) {
  Task task = LoadExample("ja_sts.json");  // pearson, spearman
  std::vector<RawOutput> outputs;
  for (const GenerationSample& s : task.samples) outputs.push_back({s.output, {}});
  ASSERT_OK_AND_ASSIGN(TaskScore scored, ScoreTask(task, outputs));
  EXPECT_EQ(scored.metric, "pearson");
  EXPECT_FALSE(scored.per_example);
  EXPECT_NEAR(scored.score, 1.0, 1e-12);
  EXPECT_NEAR(scored.metric_scores.at("spearman"), 1.0, 1e-12);
  EXPECT_TRUE(scored.examples[0].metric_values.empty());
  EXPECT_FALSE(MetricHasExampleValues("pearson"));
  EXPECT_TRUE(MetricHasExampleValues("char_f1"));
  EXPECT_TRUE(MetricHasExampleValues("acc_norm"));
}

TEST(ScoringTest, WrongOutputCountIsAnError) {
  Task task = LoadExample("ja_qa.json");
  EXPECT_THAT(ScoreTask(task, {{"x", {}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("8 examples but 1 outputs")));
}

}  // namespace
}  // namespace steadyeval
