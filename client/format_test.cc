#include "client/format.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/match.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval::client {
namespace {

TEST(FormatTableTest, AlignsColumnsCountingWideCharactersTwice) {
  EXPECT_EQ(FormatTable({"A", "LONG"}, {{"xyz", "1"}, {"日本", "22"}}, {false, true}),
            "A     LONG\n"
            "xyz      1\n"
            "日本    22\n");
}

TEST(FormatTableTest, LastLeftColumnHasNoTrailingSpaces) {
  EXPECT_EQ(FormatTable({"K", "V"}, {{"a", "long value"}}), "K  V\na  long value\n");
}

TEST(VariantLessTest, RawThenAveragesThenEnsemblesByWindow) {
  std::vector<std::string> v = {"ens@2", "avg@10", "zzz", "raw", "avg@2", "ens-soft@3"};
  std::sort(v.begin(), v.end(), VariantLess);
  EXPECT_EQ(v, (std::vector<std::string>{"raw", "avg@2", "avg@10", "ens@2", "ens-soft@3", "zzz"}));
}

TEST(FormatTest, StateNames) {
  EXPECT_EQ(CheckpointStateName(v1::CHECKPOINT_EVALUATING), "evaluating");
  EXPECT_EQ(JobStateName(v1::JOB_DONE), "done");
  EXPECT_EQ(WorkerStateName(v1::WORKER_LOST), "lost");
}

TEST(FormatTest, UnixMillis) {
  EXPECT_EQ(FormatUnixMillis(0), "-");
  EXPECT_EQ(FormatUnixMillis(1'700'000'000'000), "2023-11-14 22:13:20Z");
}

TEST(FormatTest, JsonDoesNotThrowOnInvalidUtf8) {
  v1::Checkpoint c;
  c.set_error(std::string("bad \xff byte"));
  Json doc = CheckpointsToJson({c});
  EXPECT_NO_THROW(doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

TEST(FormatTest, CsvFieldQuotesPerRfc4180) {
  EXPECT_EQ(CsvField("plain"), "plain");
  EXPECT_EQ(CsvField(""), "");
  EXPECT_EQ(CsvField("a,b"), "\"a,b\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(CsvField("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(CsvField("cr\r"), "\"cr\r\"");
  EXPECT_EQ(CsvField(" padded"), "\" padded\"");
  EXPECT_EQ(CsvField("日本語"), "日本語");
}

TEST(FormatTest, NumbersRoundTripShortest) {
  EXPECT_EQ(FormatNumber(1), "1");
  EXPECT_EQ(FormatNumber(0), "0");
  EXPECT_EQ(FormatNumber(0.1), "0.1");
  EXPECT_EQ(FormatNumber(0.25), "0.25");
  EXPECT_EQ(FormatNumber(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(FormatNumber(std::nan("")), "");
}

TEST(FormatTest, JobStateSuperseded) {
  EXPECT_EQ(JobStateName(v1::JOB_SUPERSEDED), "superseded");
}

TEST(FormatTest, ExportJsonLineNonFiniteIsNull) {
  v1::ExportedPrediction p;
  p.set_score(std::nan(""));
  (*p.mutable_metrics())["bleu"] = std::numeric_limits<double>::infinity();
  const std::string line = ExportJsonLine(p);
  ASSERT_TRUE(absl::EndsWith(line, "}\n"));
  Json doc = Json::parse(line);
  EXPECT_TRUE(doc["score"].is_null());
  EXPECT_TRUE(doc["metrics"]["bleu"].is_null());
}

TEST(FormatTest, ExamplesTextTruncatesWideInputAtCharacterBoundary) {
  v1::GetExamplesResponse resp;
  v1::ExampleHistory* e = resp.add_examples();
  e->set_input("日本語の長い入力");
  e->set_gold("");
  const std::string text = ExamplesText(resp, 7);
  EXPECT_THAT(text, ::testing::HasSubstr("input: 日本語…\n"));
  EXPECT_THAT(text, ::testing::HasSubstr("no predictions stored\n"));
}

}  // namespace
}  // namespace steadyeval::client
