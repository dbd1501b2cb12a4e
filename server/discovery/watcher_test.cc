#include "server/discovery/watcher.h"

#include <filesystem>
#include <map>

#include "testing/fake_bucket_file_system.h"
#include "testing/fake_file_system.h"
#include "testing/files.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/checkpoint_files.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::AppendFile;
using ::steadyeval::testing::FakeBucketFileSystem;
using ::steadyeval::testing::FakeFileSystem;
using ::steadyeval::testing::SafetensorsBytes;
using ::steadyeval::testing::SetMtime;
using ::steadyeval::testing::StatusIs;
using ::steadyeval::testing::TempDir;
using ::steadyeval::testing::WriteFile;
using ::steadyeval::testing::WriteSafetensorsCheckpoint;
using ::steadyeval::testing::WriteShardedCheckpoint;
using ::steadyeval::testing::kConfigJson;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::vector<uint64_t> Steps(const std::vector<AdmittedCheckpoint>& admitted) {
  std::vector<uint64_t> steps;
  for (const auto& a : admitted) steps.push_back(a.step);
  return steps;
}

std::vector<uint64_t> PendingSteps(const CheckpointWatcher& watcher) {
  std::vector<uint64_t> steps;
  for (const auto& p : watcher.Pending()) steps.push_back(p.step);
  return steps;
}

// The pending reason for `step`, or a note that it is not pending.
std::string ReasonFor(const CheckpointWatcher& watcher, uint64_t step) {
  for (const auto& p : watcher.Pending()) {
    if (p.step == step) return p.reason;
  }
  return "(not pending)";
}

// A FileSystemSource whose listing can be made to fail, and which counts listings.
class FlakySource : public CheckpointSource {
 public:
  explicit FlakySource(const std::string& root) : inner_(*FileSystemSource::Create(root)) {}
  absl::StatusOr<std::vector<SourceEntry>> List() override {
    ++lists;
    if (fail_list) return absl::UnavailableError("injected: listing timed out");
    return inner_->List();
  }
  absl::StatusOr<CheckpointFingerprint> Fingerprint(const std::string& path) override {
    return inner_->Fingerprint(path);
  }
  absl::StatusOr<std::string> ReadRange(const std::string& path, const std::string& name,
                                        uint64_t offset, uint64_t length) override {
    return inner_->ReadRange(path, name, offset, length);
  }
  std::string Describe() const override { return "flaky"; }

  bool fail_list = false;
  int lists = 0;

 private:
  std::unique_ptr<FileSystemSource> inner_;
};

class WatcherTest : public ::testing::Test {
 protected:
  std::unique_ptr<CheckpointWatcher> MakeWatcher(WatcherOptions options = {}) {
    if (options.source.empty()) options.source = dir_.path();
    auto watcher = CheckpointWatcher::Create(options, &clock_);
    EXPECT_OK(watcher);
    return watcher.ok() ? *std::move(watcher) : nullptr;
  }

  // Polls and returns the admitted steps (failing the test on a poll error).
  std::vector<uint64_t> PollSteps(CheckpointWatcher& watcher) {
    auto admitted = watcher.Poll();
    EXPECT_OK(admitted);
    return admitted.ok() ? Steps(*admitted) : std::vector<uint64_t>{};
  }

  TempDir dir_;
  FakeClock clock_;
};

TEST_F(WatcherTest, CreateRejectsBadOptions) {
  EXPECT_THAT(CheckpointWatcher::Create({dir_.path(), "ckpt_\\d+", "", 0}, &clock_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("capture group")));
  EXPECT_THAT(CheckpointWatcher::Create({dir_.path(), "", "", -1}, &clock_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("settle_seconds")));
  EXPECT_THAT(CheckpointWatcher::Create({dir_.path(), "", "a/b", 0}, &clock_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("marker")));
  EXPECT_THAT(CheckpointWatcher::Create({"", "", "", 0}, &clock_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  // A bucket is read through an S3 file system, not the local one.
  EXPECT_THAT(CheckpointWatcher::Create({"s3://bucket/run", "", "", 0}, &clock_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("s3://bucket/run")));
  EXPECT_THAT(CheckpointWatcher::Create({"gs://bucket/run", "", "", 0}, &clock_),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("gs://bucket/run")));
}

TEST_F(WatcherTest, AdmitsOnTheSecondPollNewestFirstAndOnlyOnce) {
  WriteSafetensorsCheckpoint(dir_ / "step_000100");
  WriteSafetensorsCheckpoint(dir_ / "step_000300");
  WriteShardedCheckpoint(dir_ / "step_000200");
  auto watcher = MakeWatcher();

  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PendingSteps(*watcher), ElementsAre(100, 200, 300));
  EXPECT_THAT(ReasonFor(*watcher, 100), HasSubstr("waiting for the next poll"));
  ASSERT_FALSE(watcher->Pending().empty());
  EXPECT_EQ(watcher->Pending()[0].path, dir_ / "step_000100");

  auto admitted = watcher->Poll();
  ASSERT_OK(admitted);
  EXPECT_THAT(Steps(*admitted), ElementsAre(300, 200, 100));
  EXPECT_EQ((*admitted)[0].path, dir_ / "step_000300");
  EXPECT_THAT(watcher->Pending(), IsEmpty());

  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(watcher->Pending(), IsEmpty());
}

TEST_F(WatcherTest, RecognisesEveryDefaultNameAndIgnoresTempNames) {
  for (const char* name : {"step_000100", "step-200", "step300", "iter_0000400", "checkpoint-500",
                           "global_step600",
                           // not checkpoint names: whole-name match only
                           "step_000700.tmp", "step_000800-partial", "tmp-checkpoint-900",
                           "global_step1000.tmp", "latest", "runs"}) {
    WriteSafetensorsCheckpoint(dir_ / name);
  }
  WriteFile(dir_ / "step_001100", "a file, not a folder");
  auto watcher = MakeWatcher();
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PendingSteps(*watcher), ElementsAre(100, 200, 300, 400, 500, 600));
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(600, 500, 400, 300, 200, 100));
}

TEST_F(WatcherTest, CustomPatternReplacesTheDefaults) {
  WriteSafetensorsCheckpoint(dir_ / "ckpt_7");
  WriteSafetensorsCheckpoint(dir_ / "step_000100");
  WriteSafetensorsCheckpoint(dir_ / "ckpt_8.tmp");
  WatcherOptions options;
  options.pattern = R"(ckpt_(\d+))";
  auto watcher = MakeWatcher(options);
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(7));
}

TEST_F(WatcherTest, AcceptsAFileUrl) {
  WriteSafetensorsCheckpoint(dir_ / "step_1");
  WatcherOptions options;
  options.source = "file://" + dir_.path();
  auto watcher = MakeWatcher(options);
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(1));
}

TEST_F(WatcherTest, MarkAdmittedStepsAreNeverReturned) {
  WriteSafetensorsCheckpoint(dir_ / "step_1");
  WriteSafetensorsCheckpoint(dir_ / "step_2");
  auto watcher = MakeWatcher();
  watcher->MarkAdmitted(1);
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PendingSteps(*watcher), ElementsAre(2));
  watcher->MarkAdmitted(2);  // also drops it from the pending list
  EXPECT_THAT(watcher->Pending(), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
}

TEST_F(WatcherTest, MissingSourceIsAnErrorUntilItAppears) {
  WatcherOptions options;
  options.source = dir_ / "run42";
  auto watcher = MakeWatcher(options);
  EXPECT_THAT(watcher->Poll(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("run42")));
  WriteSafetensorsCheckpoint(dir_ / "run42/step_5");
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(5));
}

TEST_F(WatcherTest, AListingErrorKeepsWhatWasSeen) {
  WriteSafetensorsCheckpoint(dir_ / "step_5");
  auto flaky = std::make_unique<FlakySource>(dir_.path());
  FlakySource* source = flaky.get();
  auto watcher = CheckpointWatcher::Create({"ignored", "", "", 0}, &clock_, std::move(flaky));
  ASSERT_OK(watcher);
  EXPECT_THAT(Steps(*(*watcher)->Poll()), IsEmpty());
  source->fail_list = true;
  EXPECT_THAT((*watcher)->Poll(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("injected")));
  source->fail_list = false;
  EXPECT_THAT(Steps(*(*watcher)->Poll()), ElementsAre(5));
  EXPECT_EQ(source->lists, 3);
}

TEST_F(WatcherTest, IncompleteCheckpointsStayPendingWithTheReason) {
  const std::string ckpt = dir_ / "step_000300";
  WriteFile(ckpt + "/model.safetensors", SafetensorsBytes());
  auto watcher = MakeWatcher();
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(PollSteps(*watcher), IsEmpty());
    ASSERT_EQ(watcher->Pending().size(), 1u);
    EXPECT_THAT(ReasonFor(*watcher, 300), HasSubstr("step_000300: config.json is missing"));
  }
  WriteFile(ckpt + "/config.json", kConfigJson);
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());  // complete now, but just changed
  EXPECT_THAT(ReasonFor(*watcher, 300), HasSubstr("config.json appeared"));
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(300));
}

TEST_F(WatcherTest, TruncatedShardIsNotAdmittedUntilFinished) {
  const std::string ckpt = dir_ / "step_000300";
  WriteShardedCheckpoint(ckpt, 2);
  const std::string shard = ckpt + "/model-00002-of-00002.safetensors";
  const std::string full = SafetensorsBytes();
  WriteFile(shard, full.substr(0, full.size() - 10));
  auto watcher = MakeWatcher();
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());  // unchanged, but still incomplete
  EXPECT_THAT(ReasonFor(*watcher, 300),
              HasSubstr("model-00002-of-00002.safetensors is"));
  AppendFile(shard, full.substr(full.size() - 10));
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(ReasonFor(*watcher, 300), HasSubstr("went from"));
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(300));
}

TEST_F(WatcherTest, AGrowingFileBlocksAdmission) {
  const std::string ckpt = dir_ / "step_1";
  WriteSafetensorsCheckpoint(ckpt);
  auto watcher = MakeWatcher();
  for (int i = 0; i < 4; ++i) {
    AppendFile(ckpt + "/optimizer.pt", "more bytes");  // complete, but still being written to
    EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  }
  EXPECT_THAT(ReasonFor(*watcher, 1), HasSubstr("optimizer.pt went from 30 to 40 bytes"));
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(1));
}

TEST_F(WatcherTest, AnMtimeChangeAloneResetsQuiescence) {
  const std::string ckpt = dir_ / "step_1";
  WriteSafetensorsCheckpoint(ckpt);
  SetMtime(ckpt + "/config.json", 1'600'000'000);
  auto watcher = MakeWatcher();
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  SetMtime(ckpt + "/config.json", 1'600'000'001);
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(ReasonFor(*watcher, 1), HasSubstr("config.json was modified"));
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(1));
}

TEST_F(WatcherTest, SettleSecondsAreRespected) {
  WriteSafetensorsCheckpoint(dir_ / "step_1");
  WatcherOptions options;
  options.settle_seconds = 30;
  auto watcher = MakeWatcher(options);
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  clock_.AdvanceSeconds(10);
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(ReasonFor(*watcher, 1), HasSubstr("unchanged for 10.0s of the 30.0s"));
  clock_.AdvanceSeconds(19);
  clock_.AdvanceNanos(999'999'999);
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());  // 1ns short
  clock_.AdvanceNanos(1);
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(1));
  clock_.AdvanceSeconds(100);
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
}

TEST_F(WatcherTest, SettleTimeIsTwoObservationsApartNotFirstSight) {
  // One poll long after first sight is not enough when the files changed in between.
  const std::string ckpt = dir_ / "step_1";
  WriteSafetensorsCheckpoint(ckpt);
  WatcherOptions options;
  options.settle_seconds = 30;
  auto watcher = MakeWatcher(options);
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  clock_.AdvanceSeconds(20);
  AppendFile(ckpt + "/trainer_state.json", "{}");
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());  // changed: the settle time restarts here
  clock_.AdvanceSeconds(20);
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());  // 40s since first sight, 20s unchanged
  clock_.AdvanceSeconds(10);
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(1));
}

TEST_F(WatcherTest, MarkerIsRequiredWhenSet) {
  const std::string ckpt = dir_ / "step_1";
  WriteSafetensorsCheckpoint(ckpt);
  WatcherOptions options;
  options.marker = "_SUCCESS";
  auto watcher = MakeWatcher(options);
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(ReasonFor(*watcher, 1), HasSubstr("marker file _SUCCESS is missing"));
  WriteFile(ckpt + "/_SUCCESS", "");
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(1));
}

TEST_F(WatcherTest, RotatedAwayCheckpointsLeaveThePendingList) {
  WriteFile(dir_ / "step_1/config.json", kConfigJson);
  auto watcher = MakeWatcher();
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PendingSteps(*watcher), ElementsAre(1));
  std::filesystem::remove_all(dir_ / "step_1");
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(watcher->Pending(), IsEmpty());
}

TEST_F(WatcherTest, ARenamedFolderStartsOver) {
  // A trainer that writes step_1.tmp and renames it to step_1: the tmp name is never seen,
  // and the final name still needs its two polls.
  WriteSafetensorsCheckpoint(dir_ / "step_1.tmp");
  auto watcher = MakeWatcher();
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(watcher->Pending(), IsEmpty());
  std::filesystem::rename(dir_ / "step_1.tmp", dir_ / "step_1");
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(1));
}

TEST_F(WatcherTest, TwoFoldersForOneStepAreHeldBack) {
  WriteSafetensorsCheckpoint(dir_ / "checkpoint-100");
  WriteSafetensorsCheckpoint(dir_ / "step_000100");
  auto watcher = MakeWatcher();
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  ASSERT_EQ(watcher->Pending().size(), 1u);
  EXPECT_THAT(ReasonFor(*watcher, 100),
              HasSubstr("checkpoint-100 and step_000100 both name step 100"));
  std::filesystem::remove_all(dir_ / "checkpoint-100");
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(100));
}

// Each pending step's first sighting: kept while the step stays listed (through file
// changes, an ambiguous second folder and a failed fingerprint), new when it comes back.
TEST_F(WatcherTest, PendingKeepsWhenEachStepWasFirstSeen) {
  auto first_seen = [](const CheckpointWatcher& watcher) {
    std::map<uint64_t, int64_t> by_step;
    for (const auto& p : watcher.Pending()) by_step[p.step] = p.first_seen_nanos;
    return by_step;
  };
  const int64_t t0 = clock_.MonotonicNanos();
  WriteFile(dir_ / "step_1/config.json", kConfigJson);  // incomplete: no weights
  auto watcher = MakeWatcher();
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_EQ(first_seen(*watcher), (std::map<uint64_t, int64_t>{{1, t0}}));

  clock_.AdvanceSeconds(10);
  WriteFile(dir_ / "step_2/config.json", kConfigJson);
  AppendFile(dir_ / "step_1/config.json", " ");
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  const int64_t t10 = t0 + 10'000'000'000;
  EXPECT_EQ(first_seen(*watcher), (std::map<uint64_t, int64_t>{{1, t0}, {2, t10}}));

  clock_.AdvanceSeconds(10);
  WriteFile(dir_ / "checkpoint-1/config.json", kConfigJson);  // step 1 becomes ambiguous
  std::filesystem::remove_all(dir_ / "step_2");               // step 2 leaves the listing
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_EQ(first_seen(*watcher), (std::map<uint64_t, int64_t>{{1, t0}}));

  clock_.AdvanceSeconds(10);
  std::filesystem::remove_all(dir_ / "checkpoint-1");
  WriteFile(dir_ / "step_2/config.json", kConfigJson);  // back: seen anew
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  const int64_t t30 = t0 + 30'000'000'000;
  EXPECT_EQ(first_seen(*watcher), (std::map<uint64_t, int64_t>{{1, t0}, {2, t30}}));
}

// The pending entry for `step` (fails the test when there is none).
PendingCheckpoint PendingFor(const CheckpointWatcher& watcher, uint64_t step) {
  for (const auto& p : watcher.Pending()) {
    if (p.step == step) return p;
  }
  ADD_FAILURE() << "step " << step << " is not pending";
  return PendingCheckpoint{step, "", "", 0};
}

TEST_F(WatcherTest, AReasonKeepsItsSinceUntilItChangesAndSettlingIsNamed) {
  const std::string ckpt = dir_ / "step_000300";
  WriteSafetensorsCheckpoint(ckpt);
  WriteFile(ckpt + "/config.json", "{garbage");
  WatcherOptions options;
  options.settle_seconds = 30;
  auto watcher = MakeWatcher(options);
  const int64_t t0 = clock_.UnixMillis();
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  PendingCheckpoint p = PendingFor(*watcher, 300);
  EXPECT_THAT(p.reason, HasSubstr("config.json"));
  EXPECT_TRUE(p.incomplete);
  EXPECT_EQ(p.reason_since_unix_ms, t0);
  EXPECT_TRUE(p.reason_changed);
  for (int i = 0; i < 3; ++i) {  // the same reason: since stays, no change reported
    clock_.AdvanceSeconds(60);
    EXPECT_THAT(PollSteps(*watcher), IsEmpty());
    p = PendingFor(*watcher, 300);
    EXPECT_EQ(p.reason_since_unix_ms, t0);
    EXPECT_FALSE(p.reason_changed);
  }

  // Fixed: complete and settling, a new reason from now.
  WriteFile(ckpt + "/config.json", kConfigJson);
  const int64_t t1 = clock_.UnixMillis();
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  p = PendingFor(*watcher, 300);
  EXPECT_FALSE(p.incomplete);
  EXPECT_THAT(p.reason, ::testing::StartsWith("settling ("));
  EXPECT_EQ(p.reason_since_unix_ms, t1);
  EXPECT_TRUE(p.reason_changed);
  clock_.AdvanceSeconds(10);  // the settle clock ticks: still the same reason
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  p = PendingFor(*watcher, 300);
  EXPECT_THAT(p.reason, HasSubstr("unchanged for 10.0s of the 30.0s"));
  EXPECT_EQ(p.reason_since_unix_ms, t1);
  EXPECT_FALSE(p.reason_changed);
  clock_.AdvanceSeconds(30);
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(300));
  EXPECT_TRUE(watcher->Pending().empty());
}

TEST_F(WatcherTest, AShardStillGrowingIsOneReasonWhateverItsSize) {
  const std::string ckpt = dir_ / "step_000300";
  WriteShardedCheckpoint(ckpt, 2);
  const std::string shard = ckpt + "/model-00002-of-00002.safetensors";
  const std::string full = SafetensorsBytes();
  WriteFile(shard, full.substr(0, full.size() - 20));
  auto watcher = MakeWatcher();
  const int64_t t0 = clock_.UnixMillis();
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  const std::string first = PendingFor(*watcher, 300).reason;
  clock_.AdvanceSeconds(1);
  AppendFile(shard, full.substr(full.size() - 20, 10));
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  PendingCheckpoint p = PendingFor(*watcher, 300);
  EXPECT_NE(p.reason, first);  // another size in the text...
  EXPECT_EQ(p.reason_since_unix_ms, t0);  // ...but the same reason
  EXPECT_FALSE(p.reason_changed);
}

constexpr char kFakeRoot[] = "/bucket/run42";

// Discovery running wholly on a FakeFileSystem (testing/fake_file_system.h): nothing here
// exists on disk, so these tests fail if discovery bypassed the FileSystem it was given.
// Files grow, vanish and fail to read between polls without any sleeping.
class DiscoveryOnFakeFileSystemTest : public WatcherTest {
 protected:
  std::unique_ptr<CheckpointWatcher> MakeWatcher() {
    WatcherOptions options;
    options.source = kFakeRoot;
    options.file_system = &fs_;
    return WatcherTest::MakeWatcher(options);
  }

  static std::string Ckpt(const std::string& name) { return std::string(kFakeRoot) + "/" + name; }

  FakeFileSystem fs_;
};

TEST_F(DiscoveryOnFakeFileSystemTest, CheckpointBecomesCompleteAcrossListings) {
  auto watcher = MakeWatcher();
  // The run's folder does not exist yet: the listing error comes from the fake.
  EXPECT_THAT(watcher->Poll(),
              StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr(kFakeRoot), HasSubstr("no such folder"))));

  const std::string ckpt = Ckpt("step_000100");
  fs_.WriteFile(ckpt + "/config.json", kConfigJson);
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(ReasonFor(*watcher, 100), HasSubstr("no model.safetensors"));

  // The weights arrive in pieces: a header that promises more than is there.
  const std::string weights = SafetensorsBytes();
  fs_.WriteFile(ckpt + "/model.safetensors", weights.substr(0, weights.size() - 5));
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(ReasonFor(*watcher, 100), HasSubstr("still being written"));

  fs_.AppendFile(ckpt + "/model.safetensors", weights.substr(weights.size() - 5));
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(ReasonFor(*watcher, 100),
              AllOf(HasSubstr("complete, but model.safetensors went from"), HasSubstr("settle")));
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(100));
  EXPECT_THAT(watcher->Pending(), IsEmpty());
}

TEST_F(DiscoveryOnFakeFileSystemTest, ShardDisappearingHoldsTheCheckpointBack) {
  const std::string ckpt = Ckpt("step_000200");
  fs_.WriteFile(ckpt + "/config.json", kConfigJson);
  fs_.WriteFile(ckpt + "/model-00001-of-00002.safetensors", SafetensorsBytes());
  fs_.WriteFile(ckpt + "/model-00002-of-00002.safetensors", SafetensorsBytes());
  fs_.WriteFile(ckpt + "/model.safetensors.index.json",
                R"({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                   "b": "model-00002-of-00002.safetensors"}})");
  auto watcher = MakeWatcher();
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(ReasonFor(*watcher, 200), HasSubstr("waiting for the next poll"));

  fs_.Remove(ckpt + "/model-00002-of-00002.safetensors");
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(ReasonFor(*watcher, 200),
              HasSubstr("shard model-00002-of-00002.safetensors listed in "
                        "model.safetensors.index.json is missing"));
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());

  fs_.WriteFile(ckpt + "/model-00002-of-00002.safetensors", SafetensorsBytes());
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(200));
}

TEST_F(DiscoveryOnFakeFileSystemTest, ReadErrorIsPendingNotAdmittedAndRetriedOnTheSameFiles) {
  const std::string ckpt = Ckpt("step_000300");
  fs_.WriteFile(ckpt + "/config.json", kConfigJson);
  fs_.WriteFile(ckpt + "/model.safetensors", SafetensorsBytes());
  fs_.InjectError(FakeFileSystem::Op::kRead, ckpt + "/model.safetensors",
                  absl::UnavailableError("injected: connection reset"));
  auto watcher = MakeWatcher();
  for (int poll = 0; poll < 3; ++poll) {
    EXPECT_THAT(PollSteps(*watcher), IsEmpty()) << poll;
    EXPECT_THAT(ReasonFor(*watcher, 300), HasSubstr("injected: connection reset")) << poll;
  }
  // The files never changed, but a read error is no verdict: each poll read again.
  EXPECT_EQ(fs_.Calls(FakeFileSystem::Op::kRead, ckpt + "/model.safetensors"), 3);

  fs_.ClearErrors();
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(300));
}

TEST_F(DiscoveryOnFakeFileSystemTest, ListingErrorKeepsTheWatchersState) {
  const std::string ckpt = Ckpt("step_000400");
  fs_.WriteFile(ckpt + "/config.json", kConfigJson);
  fs_.WriteFile(ckpt + "/model.safetensors", SafetensorsBytes());
  auto watcher = MakeWatcher();
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());

  fs_.InjectError(FakeFileSystem::Op::kList, kFakeRoot, absl::UnavailableError("bucket unreachable"));
  EXPECT_THAT(watcher->Poll(), StatusIs(absl::StatusCode::kUnavailable,
                                        AllOf(HasSubstr("checkpoint source"), HasSubstr("bucket unreachable"))));
  fs_.ClearErrors();
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(400));
}

// On a bucket an object can be rewritten with the same size within one LastModified
// second: only its ETag says so, and quiescence must see it.
TEST_F(WatcherTest, AnEtagChangeAloneResetsQuiescenceOnABucket) {
  FakeBucketFileSystem bucket;
  bucket.WriteFile("s3://ckpt/run/step_1/config.json", kConfigJson);
  bucket.WriteFile("s3://ckpt/run/step_1/model.safetensors", SafetensorsBytes());
  bucket.SetEtag("s3://ckpt/run/step_1/model.safetensors", "v1");
  auto source = FileSystemSource::Create("s3://ckpt/run", &bucket);
  ASSERT_OK(source);
  std::vector<std::pair<double, bool>> listings;
  WatcherOptions options;
  options.on_list = [&](double seconds, const absl::Status& status) {
    listings.emplace_back(seconds, status.ok());
  };
  auto watcher = CheckpointWatcher::Create(options, &clock_, *std::move(source));
  ASSERT_OK(watcher);
  EXPECT_THAT(PollSteps(**watcher), IsEmpty());
  bucket.SetEtag("s3://ckpt/run/step_1/model.safetensors", "v2");  // same size, same mtime
  EXPECT_THAT(PollSteps(**watcher), IsEmpty());
  EXPECT_THAT(ReasonFor(**watcher, 1), HasSubstr("model.safetensors was modified"));
  const std::vector<uint64_t> admitted = PollSteps(**watcher);
  EXPECT_THAT(admitted, ElementsAre(1));
  EXPECT_THAT(bucket.NonUriPaths(), IsEmpty());
  // Every poll's listing is reported once.
  EXPECT_EQ(listings.size(), 3u);
  for (const auto& [seconds, ok] : listings) {
    EXPECT_GE(seconds, 0);
    EXPECT_TRUE(ok);
  }
}

TEST_F(WatcherTest, AFailedListingIsReportedToo) {
  std::vector<bool> listings;
  WatcherOptions options;
  options.source = dir_ / "not_yet";
  options.on_list = [&](double, const absl::Status& status) { listings.push_back(status.ok()); };
  auto watcher = MakeWatcher(options);
  EXPECT_THAT(watcher->Poll(), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(listings, ElementsAre(false));
}

}  // namespace
}  // namespace steadyeval
