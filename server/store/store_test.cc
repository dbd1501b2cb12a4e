#include "server/store/store.h"

#include <filesystem>
#include <string>
#include <vector>

#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"

namespace steadyeval {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::steadyeval::testing::StatusIs;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::path(::testing::TempDir()) /
            ("store_test_" + std::string(::testing::UnitTest::GetInstance()
                                             ->current_test_info()->name())))
               .string();
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

v1::Run MakeRun(const std::string& name) {
  v1::Run run;
  run.mutable_config()->set_name(name);
  run.mutable_config()->set_source("/tmp");
  run.set_created_unix_ms(42);
  return run;
}

TEST_F(StoreTest, RoundTripsEveryRecordAcrossReopen) {
  {
    auto store = Store::Open(dir_);
    ASSERT_OK(store);
    Store::Batch batch = (*store)->NewBatch();
    batch.PutRun(MakeRun("b"));
    batch.PutRun(MakeRun("a"));
    v1::TaskContent task;
    task.mutable_ref()->set_name("t");
    task.mutable_ref()->set_sha256("abc");
    task.set_content("hello");
    batch.PutTask(task);
    for (uint64_t step : {300, 20, 1000}) {
      v1::Checkpoint c;
      c.set_run("a");
      c.set_step(step);
      c.set_path("/p/" + std::to_string(step));
      batch.PutCheckpoint(c);
    }
    v1::Job job;
    job.set_id(7);
    job.set_run("a");
    job.set_state(v1::JOB_LEASED);
    job.set_epoch(3);
    batch.PutJob(job);
    batch.PutNextJobId(8);
    v1::Prediction p;
    p.set_output("1");
    p.set_score(1);
    batch.PutPrediction("a", "t", "raw", 20, 2, p);
    batch.PutPrediction("a", "t", "raw", 20, 0, p);
    batch.PutPrediction("a", "t", "raw", 300, 0, p);
    v1::Score s;
    s.set_run("a");
    s.set_task("t");
    s.set_variant("raw");
    s.set_step(20);
    s.set_score(0.5);
    batch.PutScore(s);
    ASSERT_OK((*store)->Commit(std::move(batch)));
  }
  auto store = Store::Open(dir_);
  ASSERT_OK(store);
  Store& st = **store;
  EXPECT_EQ(st.GetRun("a")->created_unix_ms(), 42);
  EXPECT_THAT(st.GetRun("zz"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("run 'zz'")));
  EXPECT_EQ(st.GetTask("abc")->content(), "hello");
  EXPECT_EQ(st.GetJob(7)->epoch(), 3u);
  EXPECT_EQ(*st.GetNextJobId(), 8u);
  EXPECT_EQ(st.GetPrediction("a", "t", "raw", 20, 2)->output(), "1");

  std::vector<std::string> runs;
  ASSERT_OK(st.ScanRuns("", 0, [&](const v1::Run& r) {
    runs.push_back(r.config().name());
    return true;
  }));
  EXPECT_THAT(runs, ElementsAre("a", "b"));
  runs.clear();
  ASSERT_OK(st.ScanRuns("a", 0, [&](const v1::Run& r) {
    runs.push_back(r.config().name());
    return true;
  }));
  EXPECT_THAT(runs, ElementsAre("b"));

  std::vector<uint64_t> steps;
  ASSERT_OK(st.ScanCheckpoints("a", [&](const v1::Checkpoint& c) {
    steps.push_back(c.step());
    return true;
  }));
  EXPECT_THAT(steps, ElementsAre(20, 300, 1000));  // numeric order, not string order

  std::vector<uint32_t> examples;
  ASSERT_OK(st.ScanPredictions("a", "t", "raw", 20, [&](uint32_t e, const v1::Prediction&) {
    examples.push_back(e);
    return true;
  }));
  EXPECT_THAT(examples, ElementsAre(0, 2));  // one step's predictions only

  std::vector<double> scores;
  ASSERT_OK(st.ScanScores("a", "t", [&](const v1::Score& s) {
    scores.push_back(s.score());
    return true;
  }));
  EXPECT_THAT(scores, ElementsAre(0.5));
}

TEST_F(StoreTest, FreshDatabaseHasSchemaVersionAndFirstJobId) {
  auto store = Store::Open(dir_);
  ASSERT_OK(store);
  auto version = (*store)->GetMeta("schema_version");
  ASSERT_OK(version);
  EXPECT_EQ(version->value_or(""), "2");
  EXPECT_EQ(*(*store)->GetNextJobId(), 1u);
}

TEST_F(StoreTest, RefusesUnknownSchemaVersion) {
  {
    auto store = Store::Open(dir_);
    ASSERT_OK(store);
    ASSERT_OK((*store)->PutMeta("schema_version", "7"));
  }
  EXPECT_THAT(Store::Open(dir_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("has schema version 7; this steadyeval-server reads version 2")));
}

TEST_F(StoreTest, RefusesUnreadableSchemaVersion) {
  {
    auto store = Store::Open(dir_);
    ASSERT_OK(store);
    ASSERT_OK((*store)->PutMeta("schema_version", "garbage"));
  }
  EXPECT_THAT(Store::Open(dir_), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("garbage")));
}

// A database written by schema 1 (no `pairs` / `drift` families) is migrated in place.
TEST_F(StoreTest, MigratesSchemaOneInPlace) {
  {
    rocksdb::Options options;
    options.create_if_missing = true;
    options.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
    for (const std::string& name : Store::FamilyNames(1)) {
      descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
    }
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(options), dir_, descriptors, &handles, &raw).ok());
    std::string run;
    MakeRun("old").SerializeToString(&run);
    ASSERT_TRUE(raw->Put(rocksdb::WriteOptions(), handles[1], "schema_version", "1").ok());
    ASSERT_TRUE(raw->Put(rocksdb::WriteOptions(), handles[2], Store::RunKey("old"), run).ok());
    for (auto* h : handles) raw->DestroyColumnFamilyHandle(h);
    delete raw;
  }
  std::vector<std::string> before;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::Options(), dir_, &before).ok());
  EXPECT_THAT(before, ::testing::Not(::testing::Contains("pairs")));

  auto store = Store::Open(dir_);
  ASSERT_OK(store);
  EXPECT_EQ((*store)->GetMeta("schema_version")->value_or(""), "2");
  EXPECT_EQ((*store)->GetRun("old")->config().name(), "old");
  v1::PairStats pair;
  pair.set_from_step(1);
  pair.set_to_step(2);
  pair.set_flips(3);
  v1::ParameterDrift drift;
  drift.set_from_step(1);
  drift.set_to_step(2);
  drift.set_l2(0.5);
  Store::Batch batch = (*store)->NewBatch();
  batch.PutPair("old", "t", "raw", pair);
  batch.PutDrift("old", drift);
  ASSERT_OK((*store)->Commit(std::move(batch)));
  store->reset();

  std::vector<std::string> after;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::Options(), dir_, &after).ok());
  EXPECT_THAT(after, ::testing::IsSupersetOf({"pairs", "drift"}));
  store = Store::Open(dir_);  // now a version-2 database: opens without migrating
  ASSERT_OK(store);
  std::vector<uint32_t> flips;
  ASSERT_OK((*store)->ScanPairs("old", "", "",
                                [&](const std::string& task, const std::string& variant,
                                    const v1::PairStats& p) {
                                  EXPECT_EQ(task, "t");
                                  EXPECT_EQ(variant, "raw");
                                  flips.push_back(p.flips());
                                  return true;
                                }));
  EXPECT_THAT(flips, ElementsAre(3u));
  EXPECT_DOUBLE_EQ((*store)->GetDrift("old", 2)->l2(), 0.5);
}

TEST_F(StoreTest, DeletesOneStepsValuesAndScansEveryPrediction) {
  auto store = Store::Open(dir_);
  ASSERT_OK(store);
  Store::Batch batch = (*store)->NewBatch();
  for (uint64_t step : {1, 2}) {
    for (uint32_t e : {0, 1}) {
      v1::Prediction p;
      p.set_output(std::to_string(step * 10 + e));
      batch.PutPrediction("r", "t", "ens@2", step, e, p);
      batch.PutPrediction("r", "t", "raw", step, e, p);
    }
  }
  ASSERT_OK((*store)->Commit(std::move(batch)));
  batch = (*store)->NewBatch();
  batch.DeletePredictions("r", "t", "ens@2", 1);
  ASSERT_OK((*store)->Commit(std::move(batch)));
  std::vector<std::string> seen;
  ASSERT_OK((*store)->ScanAllPredictions("r", "", "", [&](const Store::PredictionKeyParts& k,
                                                         const v1::Prediction& p) {
    seen.push_back(k.variant + "@" + std::to_string(k.step) + "#" + std::to_string(k.example) +
                   "=" + p.output());
    return true;
  }));
  EXPECT_THAT(seen, ElementsAre("ens@2@2#0=20", "ens@2@2#1=21", "raw@1#0=10", "raw@1#1=11",
                                "raw@2#0=20", "raw@2#1=21"));
  seen.clear();
  ASSERT_OK((*store)->ScanAllPredictions("r", "", "raw", [&](const Store::PredictionKeyParts& k,
                                                            const v1::Prediction&) {
    seen.push_back(k.variant);
    return true;
  }));
  EXPECT_EQ(seen.size(), 4u);
}

// The sum of the sizes of the database's SST files on disk.
uint64_t SstFileBytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".sst") total += entry.file_size();
  }
  return total;
}

// rocksdb.total-sst-files-size summed over every column family, read through a second,
// read-only handle on the database.
uint64_t SstPropertyBytes(const std::string& dir) {
  std::vector<std::string> names;
  EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::Options(), dir, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const std::string& name : names) {
    descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s =
      rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), dir, descriptors, &handles, &db);
  EXPECT_TRUE(s.ok()) << s.ToString();
  if (!s.ok()) return 0;
  uint64_t total = 0;
  for (auto* handle : handles) {
    uint64_t bytes = 0;
    EXPECT_TRUE(db->GetIntProperty(handle, rocksdb::DB::Properties::kTotalSstFilesSize, &bytes));
    total += bytes;
    db->DestroyColumnFamilyHandle(handle);
  }
  delete db;
  return total;
}

TEST_F(StoreTest, StatsFollowWritesAndFlushes) {
  auto store = Store::Open(dir_);
  ASSERT_OK(store);
  ASSERT_OK_AND_ASSIGN(Store::Stats before, (*store)->GetStats());

  // ~400 KB of poorly compressible predictions (a 64-bit LCG's digits), written twice
  // over the same keys.
  constexpr uint64_t kPayloadBytes = 400'000;
  uint64_t x = 12345;
  auto write_predictions = [&] {
    Store::Batch batch = (*store)->NewBatch();
    for (uint32_t e = 0; e < kPayloadBytes / 200; ++e) {
      v1::Prediction p;
      std::string output;
      while (output.size() < 200) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        output += std::to_string(x >> 11);
      }
      p.set_output(output.substr(0, 200));
      batch.PutPrediction("r", "t", "raw", 1, e, p);
    }
    return (*store)->Commit(std::move(batch));
  };
  ASSERT_OK(write_predictions());
  ASSERT_OK_AND_ASSIGN(Store::Stats written, (*store)->GetStats());
  EXPECT_GE(written.memtable_bytes, before.memtable_bytes + kPayloadBytes);
  EXPECT_EQ(written.sst_bytes, before.sst_bytes);  // nothing flushed yet

  ASSERT_OK((*store)->Flush());
  ASSERT_OK_AND_ASSIGN(Store::Stats flushed, (*store)->GetStats());
  EXPECT_LT(flushed.memtable_bytes, written.memtable_bytes);
  EXPECT_GE(flushed.sst_bytes, written.sst_bytes + kPayloadBytes / 2);
  EXPECT_EQ(flushed.sst_bytes, SstFileBytes(dir_));
  EXPECT_EQ(flushed.sst_bytes, SstPropertyBytes(dir_));
  EXPECT_GT(flushed.live_data_bytes, 0u);

  // The overwritten values stay in the first SST file until a compaction: they count in
  // the SST size, not in the live-data estimate.
  ASSERT_OK(write_predictions());
  ASSERT_OK((*store)->Flush());
  ASSERT_OK_AND_ASSIGN(Store::Stats overwritten, (*store)->GetStats());
  EXPECT_GE(overwritten.sst_bytes, flushed.sst_bytes + kPayloadBytes / 2);
  EXPECT_EQ(overwritten.sst_bytes, SstFileBytes(dir_));
  EXPECT_EQ(overwritten.sst_bytes, SstPropertyBytes(dir_));
  EXPECT_GT(overwritten.live_data_bytes, 0u);
  EXPECT_LT(overwritten.live_data_bytes, overwritten.sst_bytes - kPayloadBytes / 2);

  // Normal operation: never delayed or stopped.
  EXPECT_EQ(overwritten.stall_micros, 0u);
  EXPECT_FALSE(overwritten.write_stalled);
}

TEST(StoreStatsTest, WritesAreStalledWhileDelayedOrStopped) {
  EXPECT_FALSE(Store::WriteStalled(/*actual_delayed_write_rate=*/0, /*is_write_stopped=*/0));
  EXPECT_TRUE(Store::WriteStalled(16 << 20, 0));
  EXPECT_TRUE(Store::WriteStalled(1, 0));
  EXPECT_TRUE(Store::WriteStalled(0, 1));
  EXPECT_TRUE(Store::WriteStalled(16 << 20, 1));
}

TEST(StoreKeysTest, KeysOrderLikeTheirComponents) {
  EXPECT_LT(Store::CheckpointKey("a", 9), Store::CheckpointKey("a", 10));
  EXPECT_LT(Store::CheckpointKey("a", UINT64_MAX), Store::CheckpointKey("ab", 0));
  EXPECT_LT(Store::JobKey(255), Store::JobKey(256));
  EXPECT_LT(Store::PredictionKey("r", "t", "raw", 5, 2), Store::PredictionKey("r", "t", "raw", 5, 10));
  EXPECT_LT(Store::PredictionKey("r", "t", "raw", 5, UINT32_MAX),
            Store::PredictionKey("r", "t", "raw", 6, 0));
  EXPECT_LT(Store::ScoreKey("r", "t", "avg@2", 100), Store::ScoreKey("r", "t", "raw", 1));
  // A step's predictions share the score key as prefix.
  EXPECT_EQ(Store::PredictionKey("r", "t", "raw", 5, 1).rfind(Store::ScoreKey("r", "t", "raw", 5), 0), 0u);
}

}  // namespace
}  // namespace steadyeval
