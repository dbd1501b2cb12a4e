// Tests of the llm-jp-eval metrics against reference vectors.
//
// The vectors in tests/fixtures/metrics/*.json were computed by the reference libraries
// themselves (fuzzywuzzy 0.18 + python-Levenshtein, scipy.stats, sacrebleu from source, MeCab
// with Debian's IPA dictionary) wrapped in llm-jp-eval v1.4.1's formulas:
//
//   mkdir -p /tmp/sacrebleu
//   git --git-dir=/work/.mirror/mjpost+sacrebleu/repo archive HEAD | tar -x -C /tmp/sacrebleu
//   /usr/bin/python3 tests/reference/metric_vectors.py --sacrebleu /tmp/sacrebleu --out tests/fixtures/metrics
//
// sacrebleu's ja-mecab tokenizer runs through Debian's python3-mecab binding (same libmecab
// as here) with a stand-in for pip's `ipadic` module; see the script's docstring.
// The llm-jp-eval formulas in the script are reconstructed, not copied (its repository was not
// available); the library pieces under them are the real ones.
// Tolerances: exact for exact_match, exact_match_figure, char_f1, set_f1 and every mean;
// 1e-9 relative for BLEU; 1e-12 for pearson/spearman.
#include "common/eval_metrics.h"

#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/mecab_tokenizer.h"
#include "testing/files.h"
#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace steadyeval {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;
using ::steadyeval::testing::SourceDir;
using ::steadyeval::testing::StatusIs;

std::filesystem::path FixtureDir() {
  return std::filesystem::path(SourceDir()) / "tests" / "fixtures" / "metrics";
}

json LoadVectors(const std::string& name) {
  std::ifstream in(FixtureDir() / name);
  EXPECT_TRUE(in.good()) << "missing fixture " << (FixtureDir() / name);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return json::parse(buffer.str());
}

std::string Show(const json& c) {
  return "pred=" + c["pred"].dump() + " gold=" + c["gold"].dump();
}

void ExpectRelativeNear(double actual, double expected, double relative, const std::string& what) {
  EXPECT_NEAR(actual, expected, relative * std::max(1.0, std::fabs(expected))) << what;
}

// Checks Example() on every case and Aggregate() on all of them. `relative` 0 means exact.
void CheckPerExampleVectors(const std::string& file, double relative) {
  const json vectors = LoadVectors(file);
  const std::string name = vectors["metric"];
  const GenerationMetric* metric = FindGenerationMetric(name);
  ASSERT_NE(metric, nullptr) << name;
  ASSERT_TRUE(metric->per_example());
  std::vector<std::string> preds, golds;
  for (const json& c : vectors["cases"]) {
    preds.push_back(c["pred"]);
    golds.push_back(c["gold"]);
    absl::StatusOr<double> value = metric->Example(preds.back(), golds.back());
    ASSERT_OK(value);
    const double expected = c["example"];
    if (relative == 0) {
      EXPECT_EQ(*value, expected) << name << " " << Show(c);
    } else {
      ExpectRelativeNear(*value, expected, relative, name + " " + Show(c));
    }
  }
  EXPECT_GE(preds.size(), 12u);
  absl::StatusOr<double> aggregate = metric->Aggregate(preds, golds);
  ASSERT_OK(aggregate);
  const double expected = vectors["aggregate"];
  if (relative == 0) {
    EXPECT_EQ(*aggregate, expected) << name;
  } else {
    ExpectRelativeNear(*aggregate, expected, relative, name + " aggregate");
  }
}

TEST(MetricVectorsTest, ExactMatch) { CheckPerExampleVectors("exact_match.json", 0); }
TEST(MetricVectorsTest, ExactMatchFigure) { CheckPerExampleVectors("exact_match_figure.json", 0); }
TEST(MetricVectorsTest, CharF1) { CheckPerExampleVectors("char_f1.json", 0); }
TEST(MetricVectorsTest, SetF1) { CheckPerExampleVectors("set_f1.json", 0); }
TEST(MetricVectorsTest, BleuEn) { CheckPerExampleVectors("bleu_en.json", 1e-9); }
TEST(MetricVectorsTest, BleuJa) { CheckPerExampleVectors("bleu_ja.json", 1e-9); }

TEST(MetricVectorsTest, FuzzFullProcessAndTokenSortRatio) {
  const json vectors = LoadVectors("char_f1.json");
  for (const json& c : vectors["cases"]) {
    EXPECT_EQ(FuzzFullProcess(c["pred"].get<std::string>()), c["full_process_pred"]) << Show(c);
    const double expected = c["example"];
    EXPECT_EQ(FuzzTokenSortRatio(c["pred"].get<std::string>(), c["gold"].get<std::string>()),
              static_cast<int>(std::lround(expected * 100)))
        << Show(c);
  }
}

void CheckBleuBuildingBlocks(const std::string& file, BleuTokenizer tokenizer) {
  const json vectors = LoadVectors(file);
  std::vector<std::string> preds, golds;
  for (const json& c : vectors["cases"]) {
    const std::string pred = c["pred"], gold = c["gold"];
    preds.push_back(pred);
    golds.push_back(gold);
    absl::StatusOr<double> sentence = SentenceBleu(pred, gold, tokenizer);
    ASSERT_OK(sentence);
    ExpectRelativeNear(*sentence, c["sentence_bleu"], 1e-9, "sentence BLEU " + Show(c));
    // The segment sacrebleu scores is the right-stripped line.
    std::string stripped = pred;
    while (!stripped.empty() && (stripped.back() == ' ' || stripped.back() == '\n')) {
      stripped.pop_back();
    }
    if (tokenizer == BleuTokenizer::k13a) {
      EXPECT_EQ(Tokenize13a(stripped), c["pred_tokens"]) << Show(c);
    } else {
      absl::StatusOr<std::string> tokens = TokenizeJaMecab(stripped);
      ASSERT_OK(tokens);
      EXPECT_EQ(*tokens, c["pred_tokens"]) << Show(c);
    }
  }
  absl::StatusOr<double> corpus = CorpusBleu(preds, golds, tokenizer, false);
  ASSERT_OK(corpus);
  ExpectRelativeNear(*corpus, vectors["corpus_bleu"], 1e-9, "corpus BLEU");
  corpus = CorpusBleu(preds, golds, tokenizer, true);
  ASSERT_OK(corpus);
  ExpectRelativeNear(*corpus, vectors["corpus_bleu_effective_order"], 1e-9,
                     "corpus BLEU, effective order");
}

TEST(MetricVectorsTest, BleuEnBuildingBlocks) {
  CheckBleuBuildingBlocks("bleu_en.json", BleuTokenizer::k13a);
}
TEST(MetricVectorsTest, BleuJaBuildingBlocks) {
  CheckBleuBuildingBlocks("bleu_ja.json", BleuTokenizer::kJaMecab);
}

TEST(MetricVectorsTest, Tokenize13a) {
  const json vectors = LoadVectors("tokenize_13a.json");
  for (const json& c : vectors["cases"]) {
    EXPECT_EQ(Tokenize13a(c["input"].get<std::string>()), c["output"]) << c["input"].dump();
  }
}

TEST(MetricVectorsTest, TokenizeJaMecab) {
  const json vectors = LoadVectors("tokenize_ja_mecab.json");
  for (const json& c : vectors["cases"]) {
    absl::StatusOr<std::string> tokens = TokenizeJaMecab(c["input"].get<std::string>());
    ASSERT_OK(tokens);
    EXPECT_EQ(*tokens, c["output"]) << c["input"].dump();
  }
}

void CheckCorrelationVectors(const std::string& file) {
  const json vectors = LoadVectors(file);
  const GenerationMetric* metric = FindGenerationMetric(vectors["metric"].get<std::string>());
  ASSERT_NE(metric, nullptr);
  EXPECT_FALSE(metric->per_example());
  for (const json& set : vectors["sets"]) {
    const std::vector<std::string> preds = set["preds"], golds = set["golds"];
    absl::StatusOr<double> value = metric->Aggregate(preds, golds);
    ASSERT_OK(value);
    EXPECT_NEAR(*value, set["value"].get<double>(), 1e-12) << set["preds"].dump();
  }
}

TEST(MetricVectorsTest, Pearson) { CheckCorrelationVectors("pearson.json"); }
TEST(MetricVectorsTest, Spearman) { CheckCorrelationVectors("spearman.json"); }

// fuzzywuzzy's full_process on every single code point: \w (str.isalnum() or '_') and
// str.lower() from Python's Unicode database against ICU's. Code points that Python's
// Unicode version (14.0 for Python 3.11) does not assign are skipped: ICU may know them.
TEST(MetricVectorsTest, FullProcessMatchesPythonOnEveryCodePoint) {
  const json tables = LoadVectors("python_unicode.json");
  const std::string version = tables["unicode_version"];
  UVersionInfo python_version;
  u_versionFromString(python_version, version.c_str());
  std::vector<bool> word(0x110000, false);
  for (const json& range : tables["word_ranges"]) {
    for (uint32_t c = range[0]; c <= range[1].get<uint32_t>(); ++c) word[c] = true;
  }
  std::vector<std::string> lower(0x110000);
  for (const json& entry : tables["lower"]) lower[entry[0].get<uint32_t>()] = entry[1];
  int checked = 0;
  std::vector<std::string> mismatches;
  for (UChar32 c = 0; c < 0x110000; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    UVersionInfo age;
    u_charAge(c, age);
    if (u_charType(c) != U_UNASSIGNED && memcmp(age, python_version, sizeof(age)) > 0) continue;
    std::string input;
    icu::UnicodeString(c).toUTF8String(input);
    std::string expected;
    if (!(c >= 128 && c <= 255) && word[c]) expected = lower[c].empty() ? input : lower[c];
    ++checked;
    if (FuzzFullProcess(input) != expected && mismatches.size() < 20) {
      mismatches.push_back(absl::StrCat("U+", absl::Hex(c)));
    }
  }
  EXPECT_GT(checked, 1000000);
  EXPECT_THAT(mismatches, ::testing::IsEmpty());
}

// ---- Edge cases beyond the vectors ----------------------------------------------------------

TEST(MetricsTest, Registry) {
  EXPECT_THAT(GenerationMetricNames(),
              ElementsAre("bleu_en", "bleu_ja", "char_f1", "exact_match", "exact_match_figure",
                          "pearson", "set_f1", "spearman"));
  for (const std::string& name : GenerationMetricNames()) {
    const GenerationMetric* metric = FindGenerationMetric(name);
    ASSERT_NE(metric, nullptr);
    EXPECT_EQ(metric->name(), name);
    EXPECT_EQ(metric->per_example(), name != "pearson" && name != "spearman") << name;
  }
  EXPECT_EQ(FindGenerationMetric("acc"), nullptr);
  EXPECT_EQ(FindGenerationMetric("bleu"), nullptr);
  EXPECT_EQ(FindGenerationMetric("Char_F1"), nullptr);
}

TEST(MetricsTest, AggregateRejectsMismatchedOrEmptyInput) {
  const GenerationMetric* metric = FindGenerationMetric("char_f1");
  EXPECT_THAT(metric->Aggregate({"a", "b"}, {"a"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 predictions but 1")));
  EXPECT_THAT(metric->Aggregate({}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no examples")));
  EXPECT_THAT(FindGenerationMetric("pearson")->Aggregate({"1"}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pearson")));
}

TEST(MetricsTest, CorrelationEdgeCases) {
  const GenerationMetric* pearson = FindGenerationMetric("pearson");
  const GenerationMetric* spearman = FindGenerationMetric("spearman");
  EXPECT_TRUE(std::isnan(*pearson->Example("1", "1")));
  EXPECT_TRUE(std::isnan(*spearman->Example("1", "1")));
  // scipy raises for one point (so does llm-jp-eval); spearmanr returns NaN -> 0.
  EXPECT_THAT(pearson->Aggregate({"1"}, {"1.0"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at least 2")));
  EXPECT_EQ(*spearman->Aggregate({"1"}, {"1.0"}), 0.0);
  // float(gold) raises in llm-jp-eval.
  EXPECT_THAT(pearson->Aggregate({"1", "2"}, {"1.0", "high"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::AllOf(HasSubstr("\"high\""), HasSubstr("not a number"))));
  // Unparsable predictions count as -2.0.
  EXPECT_EQ(*pearson->Aggregate({"x", "1", "2"}, {"0", "1", "2"}),
            *PearsonR({0, 1, 2}, {-2, 1, 2}));
  EXPECT_EQ(*pearson->Aggregate({"1", "2"}, {"5", "3"}), -1.0);
  EXPECT_THAT(PearsonR({1, 2}, {1}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("length")));
  EXPECT_TRUE(std::isnan(*SpearmanR({1, std::nan(""), 3}, {1, 2, 3})));
}

TEST(MetricsTest, ParseFloatLikeLlmJpEval) {
  EXPECT_EQ(LlmJpEvalParseFloat("3.5"), 3.5);
  EXPECT_EQ(LlmJpEvalParseFloat("約3.5点です"), 3.5);
  EXPECT_EQ(LlmJpEvalParseFloat("-4"), 4.0);  // the sign is dropped, as in llm-jp-eval
  EXPECT_EQ(LlmJpEvalParseFloat("1e3"), 13.0);
  EXPECT_EQ(LlmJpEvalParseFloat("4."), 4.0);
  EXPECT_EQ(LlmJpEvalParseFloat(".5"), 0.5);
  EXPECT_EQ(LlmJpEvalParseFloat(""), -2.0);
  EXPECT_EQ(LlmJpEvalParseFloat("."), -2.0);
  EXPECT_EQ(LlmJpEvalParseFloat("1.2.3"), -2.0);
  EXPECT_EQ(LlmJpEvalParseFloat("３"), -2.0);  // full-width digits are not [0-9]
}

TEST(MetricsTest, PythonFloat) {
  EXPECT_EQ(PythonFloat("1_000"), 1000.0);
  EXPECT_EQ(PythonFloat("\u00a0-2.5e1 "), -25.0);
  EXPECT_EQ(PythonFloat("١٢"), 12.0);
  EXPECT_EQ(PythonFloat("-Infinity"), -std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(*PythonFloat("NaN")));
  EXPECT_EQ(PythonFloat("0.1"), 0.1);
  for (const char* bad : {"", " ", "1__0", "_1", "1_", "1e", "e1", ".", "1.2.3", "0x10", "nan1",
                          "\x1c" "1", "1 2", "infinit", "1,0", "−1", "+-1"}) {
    EXPECT_EQ(PythonFloat(bad), std::nullopt) << bad;
  }
}

TEST(MetricsTest, PythonMeanIsExact) {
  EXPECT_EQ(*PythonMean({0.1, 0.2, 0.3}), 0.2);  // naive (sum)/3 gives 0.20000000000000004
  EXPECT_EQ(*PythonMean({1e16, 1.0, -1e16}), 0.3333333333333333);
  EXPECT_EQ(*PythonMean({0.7, 0.51, 0.33}), 0.5133333333333333);
  EXPECT_EQ(*PythonMean({5e-324, 5e-324, 0.0}), 5e-324);
  EXPECT_EQ(*PythonMean({1.7976931348623157e308, 1.7976931348623157e308}),
            1.7976931348623157e308);
  EXPECT_EQ(*PythonMean({-0.5, -0.25}), -0.375);
  EXPECT_EQ(*PythonMean({0.0, -0.0}), 0.0);
  EXPECT_THAT(PythonMean({}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no values")));
  // Property: the mean of n copies of x is x.
  uint64_t state = 12345;
  for (int i = 0; i < 2000; ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    double x;
    uint64_t bits = state;
    std::memcpy(&x, &bits, sizeof(x));
    if (!std::isfinite(x)) continue;
    const size_t n = 1 + (state >> 60);
    EXPECT_EQ(*PythonMean(std::vector<double>(n, x)), x) << x << " x" << n;
  }
}

TEST(MetricsTest, FuzzTokenSortRatioProperties) {
  EXPECT_EQ(FuzzTokenSortRatio("", ""), 100);
  EXPECT_EQ(FuzzTokenSortRatio("...", ""), 100);  // both process to ""
  EXPECT_EQ(FuzzTokenSortRatio("a", ""), 0);
  EXPECT_EQ(FuzzTokenSortRatio("b a c", "c a b"), 100);
  // round-half-even: 2*1/16 -> 12.5 -> 12, 2*3/16 -> 37.5 -> 38
  EXPECT_EQ(FuzzTokenSortRatio("abcdefgh", "aijklmno"), 12);
  EXPECT_EQ(FuzzTokenSortRatio("abcdefgh", "abcijklm"), 38);
  const std::vector<std::string> samples = {"東京都 千代田区", "千代田区", "The cat", "cat the",
                                            "ＡＢＣ", "", "x_y z"};
  for (const std::string& a : samples) {
    for (const std::string& b : samples) {
      EXPECT_EQ(FuzzTokenSortRatio(a, b), FuzzTokenSortRatio(b, a)) << a << " | " << b;
    }
  }
}

TEST(MetricsTest, SetF1EdgeCases) {
  EXPECT_EQ(SetF1("a\nb", "a\nb"), 1.0);
  EXPECT_EQ(SetF1("a", "b"), 0.0);
  // Duplicate gold lines count in recall's denominator: pre 1, rec 1/2.
  EXPECT_DOUBLE_EQ(SetF1("a", "a\na"), 2 * 0.5 / 1.5);
  // Duplicate prediction lines do not.
  EXPECT_EQ(SetF1("a\na", "a"), 1.0);
}

TEST(MetricsTest, BleuEdgeCases) {
  // llm-jp-eval: empty after strip() -> 1.0 if both empty, else 0.0 (not 0..100).
  EXPECT_EQ(*LlmJpEvalBleu(" ", "\u3000", BleuTokenizer::k13a), 1.0);
  EXPECT_EQ(*LlmJpEvalBleu("", "x", BleuTokenizer::k13a), 0.0);
  // Position-aligned characters: "abcd" vs "abxd" matches 3 of 4.
  EXPECT_NEAR(*LlmJpEvalBleu("abcd", "abxd", BleuTokenizer::k13a), 75.0, 1e-12);
  // Brevity penalty from the shorter hypothesis ("ab" vs "ab", zip stops at 2) is 1.
  EXPECT_NEAR(*LlmJpEvalBleu("ab", "abcdef", BleuTokenizer::k13a), 100.0, 1e-9);
  // Spaces are empty segments: "a b" vs "a c" has 2 hypothesis tokens, 1 match.
  EXPECT_NEAR(*LlmJpEvalBleu("a b", "a c", BleuTokenizer::k13a), 50.0, 1e-12);

  BleuStats none;
  none.sys_len = 3;
  none.ref_len = 3;
  none.total = {3, 2, 1, 0};
  EXPECT_EQ(BleuFromStats(none, true), 0.0);
  BleuStats unigram_only = none;
  unigram_only.correct = {3, 0, 0, 0};
  // Without effective order an empty 4-gram order drives BLEU to ~0; with it, exp smoothing.
  EXPECT_LT(BleuFromStats(unigram_only, false), 1e-100);
  EXPECT_NEAR(BleuFromStats(unigram_only, true),
              std::exp((std::log(100.0) + std::log(100.0 / 4) + std::log(100.0 / 4)) / 3), 1e-9);
  // A single pair as a corpus with effective order is the sentence score.
  EXPECT_NEAR(*CorpusBleu({"the cat sat"}, {"the cat sat down"}, BleuTokenizer::k13a, true),
              *SentenceBleu("the cat sat", "the cat sat down", BleuTokenizer::k13a), 1e-12);
  EXPECT_THAT(CorpusBleu({"a"}, {}, BleuTokenizer::k13a, false),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("1 predictions but 0")));
}

TEST(MetricsTest, MissingMecabDictionaryIsAClearError) {
  MecabTokenizer::Options options;
  options.dictionary_dir = "/nonexistent/ipadic-utf8";
  EXPECT_THAT(MecabTokenizer::Create(options),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::AllOf(HasSubstr("/nonexistent/ipadic-utf8"),
                                        HasSubstr("apt-get install mecab-ipadic-utf8"))));
}

TEST(MetricsTest, MecabDictionaryIsIpadic) {
  absl::StatusOr<const MecabTokenizer*> mecab = DefaultMecabTokenizer();
  ASSERT_OK(mecab);
  // pip's ipadic (what sacrebleu checks for) has 392126 entries; Debian's build one more.
  EXPECT_THAT((*mecab)->dictionary_size(), ::testing::AnyOf(392126u, 392127u));
  absl::StatusOr<std::string> wakati = (*mecab)->Wakati("すもももももももものうち");
  ASSERT_OK(wakati);
  EXPECT_EQ(*wakati, "すもも も もも も もも の うち ");
}

TEST(MetricsTest, BleuJaIsThreadSafe) {
  const GenerationMetric* metric = FindGenerationMetric("bleu_ja");
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"私は昨日東京へ行きました。", "昨日、私は東京に行った。"},
      {"吾輩は犬である。", "吾輩は猫である。"},
      {"東京タワー", "東京スカイツリー"}};
  std::vector<double> expected;
  for (const auto& [pred, gold] : pairs) expected.push_back(*metric->Example(pred, gold));
  std::vector<std::thread> threads;
  std::vector<int> failures(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 50; ++round) {
        for (size_t i = 0; i < pairs.size(); ++i) {
          absl::StatusOr<double> v = metric->Example(pairs[i].first, pairs[i].second);
          absl::StatusOr<std::string> tokens = TokenizeJaMecab(pairs[i].first);
          if (!v.ok() || *v != expected[i] || !tokens.ok()) ++failures[t];
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_THAT(failures, ::testing::Each(0));
}

}  // namespace
}  // namespace steadyeval
