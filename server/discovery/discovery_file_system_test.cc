// Checkpoint discovery running wholly on a FakeFileSystem (common/fake_file_system.h):
// nothing here exists on disk, so every test fails if discovery bypassed the FileSystem it
// was given. Files grow, vanish and fail to read between polls without any sleeping.
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/fake_file_system.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/discovery/checkpoint_test_util.h"
#include "server/discovery/watcher.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing_util::kConfigJson;
using ::steadyeval::testing_util::SafetensorsBytes;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kRoot[] = "/bucket/run42";

class DiscoveryOnFakeFileSystemTest : public ::testing::Test {
 protected:
  std::unique_ptr<CheckpointWatcher> MakeWatcher() {
    WatcherOptions options;
    options.source = kRoot;
    options.file_system = &fs_;
    auto watcher = CheckpointWatcher::Create(options, &clock_);
    EXPECT_OK(watcher);
    return watcher.ok() ? *std::move(watcher) : nullptr;
  }

  std::vector<uint64_t> PollSteps(CheckpointWatcher& watcher) {
    auto admitted = watcher.Poll();
    EXPECT_OK(admitted);
    std::vector<uint64_t> steps;
    if (admitted.ok()) {
      for (const AdmittedCheckpoint& a : *admitted) steps.push_back(a.step);
    }
    return steps;
  }

  std::string ReasonFor(const CheckpointWatcher& watcher, uint64_t step) {
    for (const PendingCheckpoint& p : watcher.Pending()) {
      if (p.step == step) return p.reason;
    }
    return "(not pending)";
  }

  static std::string Ckpt(const std::string& name) { return std::string(kRoot) + "/" + name; }

  FakeFileSystem fs_;
  FakeClock clock_;
};

TEST_F(DiscoveryOnFakeFileSystemTest, CheckpointBecomesCompleteAcrossListings) {
  auto watcher = MakeWatcher();
  // The run's folder does not exist yet: the listing error comes from the fake.
  EXPECT_THAT(watcher->Poll(),
              StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr(kRoot), HasSubstr("no such folder"))));

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

  fs_.InjectError(FakeFileSystem::Op::kList, kRoot, absl::UnavailableError("bucket unreachable"));
  EXPECT_THAT(watcher->Poll(), StatusIs(absl::StatusCode::kUnavailable,
                                        AllOf(HasSubstr("checkpoint source"), HasSubstr("bucket unreachable"))));
  fs_.ClearErrors();
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(400));
}

}  // namespace
}  // namespace steadyeval
