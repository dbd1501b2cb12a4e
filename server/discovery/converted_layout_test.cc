// Completeness of training-framework checkpoints (a run with a converter, DESIGN §4): PyTorch
// DCP's .metadata, Megatron's and DeepSpeed's tracker files beside the checkpoint folders,
// the marker, and the watcher re-checking when only a tracker changes. Everything runs on a
// FakeFileSystem.
#include <memory>
#include <string>

#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/discovery/completeness.h"
#include "server/discovery/watcher.h"
#include "testing/checkpoint_files.h"
#include "testing/fake_bucket_file_system.h"
#include "testing/fake_file_system.h"
#include "testing/status_matchers.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::FakeBucketFileSystem;
using ::steadyeval::testing::FakeFileSystem;
using ::steadyeval::testing::SafetensorsBytes;
using ::steadyeval::testing::StatusIs;
using ::steadyeval::testing::kConfigJson;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

constexpr auto kNotYet = absl::StatusCode::kFailedPrecondition;
constexpr auto kMalformed = absl::StatusCode::kInvalidArgument;
constexpr char kRoot[] = "/bucket/run7";

class ConvertedCompletenessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs_.MakeDir(kRoot);
    auto source = FileSystemSource::Create(kRoot, &fs_);
    ASSERT_OK(source);
    source_ = *std::move(source);
  }

  static std::string At(const std::string& name) { return std::string(kRoot) + "/" + name; }

  absl::Status Check(const std::string& folder, uint64_t step, const std::string& marker = "") {
    return CompletenessCheck(marker, CheckpointLayout::kConverted)
        .Check(*source_, At(folder), step);
  }

  FakeFileSystem fs_;
  std::unique_ptr<FileSystemSource> source_;
};

TEST_F(ConvertedCompletenessTest, DcpFolderIsCompleteOnceMetadataIsWritten) {
  fs_.WriteFile(At("step-100/__0_0.distcp"), "shard bytes");
  fs_.WriteFile(At("step-100/__1_0.distcp"), "shard bytes");
  EXPECT_THAT(Check("step-100", 100),
              StatusIs(kNotYet, AllOf(StartsWith("step-100: "),
                                      HasSubstr(".metadata in the folder (PyTorch DCP writes it last)"),
                                      HasSubstr("latest_checkpointed_iteration.txt (Megatron)"),
                                      HasSubstr("latest (DeepSpeed)"),
                                      HasSubstr("it has *.distcp files"))));
  fs_.WriteFile(At("step-100/.metadata"), "pickled metadata");
  EXPECT_OK(Check("step-100", 100));
}

TEST_F(ConvertedCompletenessTest, AnEmptyFolderNamesWhatEachLayoutNeeds) {
  fs_.MakeDir(At("step-5"));
  EXPECT_THAT(Check("step-5", 5),
              StatusIs(kNotYet, AllOf(HasSubstr("not a complete training-framework checkpoint yet"),
                                      HasSubstr(".metadata"), HasSubstr("Megatron"),
                                      HasSubstr("DeepSpeed"))));
}

TEST_F(ConvertedCompletenessTest, MegatronNeedsTheTrackerToReachTheStep) {
  fs_.WriteFile(At("iter_0000300/mp_rank_00/model_optim_rng.pt"), "torch.save bytes");
  // No tracker yet: nothing says the checkpoint is done.
  EXPECT_THAT(Check("iter_0000300", 300),
              StatusIs(kNotYet, HasSubstr("latest_checkpointed_iteration.txt (Megatron)")));

  fs_.WriteFile(At("latest_checkpointed_iteration.txt"), "200\n");
  EXPECT_THAT(Check("iter_0000300", 300),
              StatusIs(kNotYet, AllOf(StartsWith("iter_0000300: latest_checkpointed_iteration.txt"),
                                      HasSubstr("names step 200"),
                                      HasSubstr("waiting for Megatron to record step 300 or later"))));

  fs_.WriteFile(At("latest_checkpointed_iteration.txt"), "300\n");
  EXPECT_OK(Check("iter_0000300", 300));
  fs_.WriteFile(At("latest_checkpointed_iteration.txt"), "400");
  EXPECT_OK(Check("iter_0000300", 300));
}

TEST_F(ConvertedCompletenessTest, MegatronTorchDistAlsoNeedsMetadata) {
  fs_.WriteFile(At("latest_checkpointed_iteration.txt"), "500");
  fs_.WriteFile(At("iter_0000500/__0_0.distcp"), "shard bytes");
  fs_.WriteFile(At("iter_0000500/common.pt"), "common");
  EXPECT_THAT(Check("iter_0000500", 500),
              StatusIs(kNotYet, AllOf(HasSubstr("*.distcp files (Megatron torch_dist)"),
                                      HasSubstr("no .metadata"))));
  fs_.WriteFile(At("iter_0000500/.metadata"), "pickled metadata");
  EXPECT_OK(Check("iter_0000500", 500));
}

TEST_F(ConvertedCompletenessTest, AMegatronTrackerThatNamesNoStepIsNamed) {
  fs_.WriteFile(At("iter_0000300/mp_rank_00/model_optim_rng.pt"), "torch.save bytes");
  fs_.WriteFile(At("latest_checkpointed_iteration.txt"), "");
  EXPECT_THAT(Check("iter_0000300", 300),
              StatusIs(kNotYet, HasSubstr("latest_checkpointed_iteration.txt beside the "
                                          "checkpoints is empty (Megatron is writing it?)")));
  fs_.WriteFile(At("latest_checkpointed_iteration.txt"), "release");
  EXPECT_THAT(Check("iter_0000300", 300),
              StatusIs(kMalformed, HasSubstr("says 'release', which names no step")));
}

TEST_F(ConvertedCompletenessTest, DeepSpeedNeedsLatestToNameThisStepOrLater) {
  fs_.WriteFile(At("global_step1200/mp_rank_00_model_states.pt"), "torch.save bytes");
  EXPECT_THAT(Check("global_step1200", 1200), StatusIs(kNotYet, HasSubstr("latest (DeepSpeed)")));

  fs_.WriteFile(At("latest"), "global_step1100");
  EXPECT_THAT(Check("global_step1200", 1200),
              StatusIs(kNotYet, AllOf(StartsWith("global_step1200: latest beside the checkpoints"),
                                      HasSubstr("names step 1100 ('global_step1100')"),
                                      HasSubstr("waiting for DeepSpeed to record step 1200"))));
  fs_.WriteFile(At("latest"), "global_step1200\n");
  EXPECT_OK(Check("global_step1200", 1200));
  fs_.WriteFile(At("latest"), "global_step1300");
  EXPECT_OK(Check("global_step1200", 1200));
  fs_.WriteFile(At("latest"), "best");
  EXPECT_THAT(Check("global_step1200", 1200),
              StatusIs(kMalformed, HasSubstr("latest beside the checkpoints says 'best'")));
}

TEST_F(ConvertedCompletenessTest, ALatestFolderIsNoDeepSpeedTracker) {
  // Some trainers keep `latest` as a link to the newest folder: not a tracker file.
  fs_.MakeDir(At("latest"));
  fs_.WriteFile(At("step-100/__0_0.distcp"), "shard bytes");
  fs_.WriteFile(At("step-100/.metadata"), "pickled metadata");
  EXPECT_OK(Check("step-100", 100));
}

TEST_F(ConvertedCompletenessTest, MarkerIsRequiredWhenSet) {
  fs_.WriteFile(At("step-100/__0_0.distcp"), "shard bytes");
  fs_.WriteFile(At("step-100/.metadata"), "pickled metadata");
  EXPECT_THAT(Check("step-100", 100, "_SUCCESS"),
              StatusIs(kNotYet, AllOf(StartsWith("step-100: "),
                                      HasSubstr("marker file _SUCCESS is missing"))));
  fs_.WriteFile(At("step-100/_SUCCESS"), "");
  EXPECT_OK(Check("step-100", 100, "_SUCCESS"));

  // The layout's own rule still applies with the marker present.
  fs_.WriteFile(At("global_step9/_SUCCESS"), "");
  fs_.WriteFile(At("latest"), "global_step8");
  EXPECT_THAT(Check("global_step9", 9, "_SUCCESS"), StatusIs(kNotYet, HasSubstr("names step 8")));
}

TEST_F(ConvertedCompletenessTest, TrackerReadErrorsPropagateAsErrorsNotVerdicts) {
  fs_.WriteFile(At("step-100/.metadata"), "pickled metadata");
  fs_.InjectError(FakeFileSystem::Op::kRead, At("latest_checkpointed_iteration.txt"),
                  absl::UnavailableError("injected: connection reset"));
  EXPECT_THAT(Check("step-100", 100),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("latest_checkpointed_iteration.txt beside the checkpoints"),
                             HasSubstr("injected: connection reset"))));
}

TEST_F(ConvertedCompletenessTest, WithoutAStepATrackerCannotBeCompared) {
  fs_.WriteFile(At("latest"), "global_step3");
  fs_.WriteFile(At("global_step3/mp_rank_00_model_states.pt"), "torch.save bytes");
  EXPECT_THAT(CompletenessCheck("", CheckpointLayout::kConverted).Check(*source_, At("global_step3")),
              StatusIs(kMalformed, HasSubstr("step is unknown")));
}

TEST_F(ConvertedCompletenessTest, EachLayoutKeepsItsOwnRules) {
  // An HF folder is not a converted checkpoint, and a DCP folder is not an HF one.
  fs_.WriteFile(At("step-1/config.json"), kConfigJson);
  fs_.WriteFile(At("step-1/model.safetensors"), SafetensorsBytes());
  fs_.WriteFile(At("step-2/.metadata"), "pickled metadata");
  fs_.WriteFile(At("step-2/__0_0.distcp"), "shard bytes");
  CompletenessCheck hf;
  EXPECT_OK(hf.Check(*source_, At("step-1"), 1));
  EXPECT_THAT(hf.Check(*source_, At("step-2"), 2), StatusIs(kNotYet, HasSubstr("config.json is missing")));
  EXPECT_THAT(Check("step-1", 1), StatusIs(kNotYet, HasSubstr("not a complete training-framework")));
  EXPECT_OK(Check("step-2", 2));
}

TEST(CheckpointSourceRootFileTest, ReadsOnlyFilesAtTheRoot) {
  FakeFileSystem fs;
  fs.WriteFile(std::string(kRoot) + "/latest", "global_step5");
  auto source = FileSystemSource::Create(kRoot, &fs);
  ASSERT_OK(source);
  absl::StatusOr<std::string> latest = (*source)->ReadRootFile("latest", 100);
  ASSERT_OK(latest);
  EXPECT_EQ(*latest, "global_step5");
  EXPECT_THAT((*source)->ReadRootFile("absent", 100),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("absent")));
  EXPECT_THAT((*source)->ReadRootFile("latest", 3), StatusIs(kMalformed, HasSubstr("latest")));
  EXPECT_THAT((*source)->ReadRootFile("../etc/passwd", 100), StatusIs(kMalformed, HasSubstr("not a file name")));
}

TEST(ConvertedBucketTest, TrackersAreReadBesideTheCheckpointsInABucket) {
  FakeBucketFileSystem bucket;
  bucket.WriteFile("s3://ckpts/run9/iter_0000300/__0_0.distcp", "shard bytes");
  bucket.WriteFile("s3://ckpts/run9/iter_0000300/.metadata", "pickled metadata");
  bucket.WriteFile("s3://ckpts/run9/latest_checkpointed_iteration.txt", "200");
  auto source = FileSystemSource::Create("s3://ckpts/run9", &bucket);
  ASSERT_OK(source);
  const CompletenessCheck check("", CheckpointLayout::kConverted);
  EXPECT_THAT(check.Check(**source, "s3://ckpts/run9/iter_0000300", 300),
              StatusIs(kNotYet, HasSubstr("names step 200")));
  bucket.WriteFile("s3://ckpts/run9/latest_checkpointed_iteration.txt", "300");
  EXPECT_OK(check.Check(**source, "s3://ckpts/run9/iter_0000300", 300));
}

// The watcher for a run with a converter.
class ConvertedWatcherTest : public ConvertedCompletenessTest {
 protected:
  std::unique_ptr<CheckpointWatcher> MakeWatcher(const std::string& marker = "") {
    WatcherOptions options;
    options.source = kRoot;
    options.file_system = &fs_;
    options.marker = marker;
    options.convert = "dcp";
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

  static std::string ReasonFor(const CheckpointWatcher& watcher, uint64_t step) {
    for (const PendingCheckpoint& p : watcher.Pending()) {
      if (p.step == step) return p.reason;
    }
    return "(not pending)";
  }

  FakeClock clock_;
};

TEST_F(ConvertedWatcherTest, DcpCheckpointIsAdmittedAfterMetadataSettles) {
  fs_.WriteFile(At("step-100/__0_0.distcp"), "shard bytes");
  auto watcher = MakeWatcher();
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(ReasonFor(*watcher, 100), HasSubstr(".metadata in the folder"));
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());

  fs_.WriteFile(At("step-100/.metadata"), "pickled metadata");
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());  // quiescence still applies
  EXPECT_THAT(ReasonFor(*watcher, 100), HasSubstr("complete, but .metadata appeared"));
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(100));
}

TEST_F(ConvertedWatcherTest, ATrackerUpdateAloneAdmitsAnUnchangedFolder) {
  fs_.WriteFile(At("iter_0000200/mp_rank_00/model_optim_rng.pt"), "torch.save bytes");
  fs_.WriteFile(At("iter_0000300/mp_rank_00/model_optim_rng.pt"), "torch.save bytes");
  fs_.WriteFile(At("latest_checkpointed_iteration.txt"), "200");
  auto watcher = MakeWatcher();
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(200));
  for (int poll = 0; poll < 2; ++poll) {
    EXPECT_THAT(PollSteps(*watcher), IsEmpty()) << poll;
    EXPECT_THAT(ReasonFor(*watcher, 300), HasSubstr("names step 200")) << poll;
  }

  // Only the tracker beside the folders changes; the folder's files stay the same.
  fs_.WriteFile(At("latest_checkpointed_iteration.txt"), "300");
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(300));
  EXPECT_THAT(watcher->Pending(), IsEmpty());
}

TEST_F(ConvertedWatcherTest, TrackersAreReadOncePerPollAndOnlyWhenListed) {
  for (const char* folder : {"iter_0000300", "iter_0000400", "iter_0000500"}) {
    fs_.WriteFile(At(std::string(folder) + "/mp_rank_00/model_optim_rng.pt"), "torch.save bytes");
  }
  auto watcher = MakeWatcher();
  // Neither tracker is listed: neither is read, however many candidates wait.
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_EQ(fs_.Calls(FakeFileSystem::Op::kRead, At("latest_checkpointed_iteration.txt")), 0);
  EXPECT_EQ(fs_.Calls(FakeFileSystem::Op::kRead, At("latest")), 0);

  // One read per poll for the three pending candidates; DeepSpeed's is not consulted.
  fs_.WriteFile(At("latest_checkpointed_iteration.txt"), "300");
  fs_.WriteFile(At("latest"), "global_step300");
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(300));
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_EQ(fs_.Calls(FakeFileSystem::Op::kRead, At("latest_checkpointed_iteration.txt")), 2);
  EXPECT_EQ(fs_.Calls(FakeFileSystem::Op::kRead, At("latest")), 0);
  EXPECT_THAT(ReasonFor(*watcher, 500), HasSubstr("names step 300"));

  fs_.WriteFile(At("latest_checkpointed_iteration.txt"), "500");
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(500, 400));
}

TEST_F(ConvertedWatcherTest, DeepSpeedWithMarkerNeedsBoth) {
  fs_.WriteFile(At("global_step40/mp_rank_00_model_states.pt"), "torch.save bytes");
  fs_.WriteFile(At("latest"), "global_step40");
  auto watcher = MakeWatcher(".complete");
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(ReasonFor(*watcher, 40), HasSubstr("marker file .complete is missing"));
  fs_.WriteFile(At("global_step40/.complete"), "");
  EXPECT_THAT(PollSteps(*watcher), IsEmpty());
  EXPECT_THAT(PollSteps(*watcher), ElementsAre(40));
}

TEST_F(ConvertedWatcherTest, ARunWithoutAConverterKeepsTheHuggingFaceRules) {
  fs_.WriteFile(At("step-100/__0_0.distcp"), "shard bytes");
  fs_.WriteFile(At("step-100/.metadata"), "pickled metadata");
  WatcherOptions options;
  options.source = kRoot;
  options.file_system = &fs_;
  auto watcher = CheckpointWatcher::Create(options, &clock_);
  ASSERT_OK(watcher);
  EXPECT_THAT(PollSteps(**watcher), IsEmpty());
  EXPECT_THAT(PollSteps(**watcher), IsEmpty());
  EXPECT_THAT(ReasonFor(**watcher, 100), HasSubstr("config.json is missing"));
}

}  // namespace
}  // namespace steadyeval
