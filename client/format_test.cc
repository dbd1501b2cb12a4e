#include "client/format.h"

#include <algorithm>

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

}  // namespace
}  // namespace steadyeval::client
