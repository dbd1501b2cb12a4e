#include "server/discovery/completeness.h"

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/discovery/checkpoint_test_util.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing_util::AppendFile;
using ::steadyeval::testing_util::kConfigJson;
using ::steadyeval::testing_util::SafetensorsBytes;
using ::steadyeval::testing_util::TempDir;
using ::steadyeval::testing_util::WriteFile;
using ::steadyeval::testing_util::WriteSafetensorsCheckpoint;
using ::steadyeval::testing_util::WriteShardedCheckpoint;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr auto kNotYet = absl::StatusCode::kFailedPrecondition;
constexpr auto kMalformed = absl::StatusCode::kInvalidArgument;

class CompletenessTest : public ::testing::Test {
 protected:
  TempDir dir_;
  const std::string ckpt_ = dir_.Sub("step_000300");
};

TEST_F(CompletenessTest, SingleFileSafetensorsIsComplete) {
  WriteSafetensorsCheckpoint(ckpt_);
  EXPECT_OK(CheckLocalCheckpoint(ckpt_));
  EXPECT_OK(CheckLocalCheckpoint("file://" + ckpt_));
}

TEST_F(CompletenessTest, ShardedSafetensorsIsComplete) {
  WriteShardedCheckpoint(ckpt_, 3);
  EXPECT_OK(CheckLocalCheckpoint(ckpt_));
}

TEST_F(CompletenessTest, MissingConfigIsNamed) {
  WriteFile(ckpt_ + "/model.safetensors", SafetensorsBytes());
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_),
              StatusIs(kNotYet, AllOf(StartsWith("step_000300: "), HasSubstr("config.json is missing"))));
}

TEST_F(CompletenessTest, ConfigMustBeAJsonObject) {
  WriteSafetensorsCheckpoint(ckpt_);
  WriteFile(ckpt_ + "/config.json", R"({"model_type": "lla)");
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_), StatusIs(kMalformed, HasSubstr("config.json is not valid JSON")));
  WriteFile(ckpt_ + "/config.json", "[1, 2]");
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_), StatusIs(kMalformed, HasSubstr("config.json is not a JSON object")));
}

TEST_F(CompletenessTest, NoWeightsIsNamed) {
  WriteFile(ckpt_ + "/config.json", kConfigJson);
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_),
              StatusIs(kNotYet, HasSubstr("no model.safetensors or model.safetensors.index.json")));
}

TEST_F(CompletenessTest, TruncatedSafetensorsIsNotComplete) {
  WriteFile(ckpt_ + "/config.json", kConfigJson);
  WriteFile(ckpt_ + "/model.safetensors", SafetensorsBytes(/*missing_bytes=*/5));
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_),
              StatusIs(kNotYet, AllOf(HasSubstr("model.safetensors is"), HasSubstr("still being written?"))));
}

TEST_F(CompletenessTest, SafetensorsCutInsideItsHeaderIsNotComplete) {
  WriteFile(ckpt_ + "/config.json", kConfigJson);
  WriteFile(ckpt_ + "/model.safetensors", SafetensorsBytes().substr(0, 20));
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_), StatusIs(kNotYet, HasSubstr("its header alone says")));
  WriteFile(ckpt_ + "/model.safetensors", "abc");
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_), StatusIs(kNotYet, HasSubstr("too short for a safetensors header")));
}

TEST_F(CompletenessTest, SafetensorsWithTrailingBytesIsRejected) {
  WriteSafetensorsCheckpoint(ckpt_);
  AppendFile(ckpt_ + "/model.safetensors", "extra");
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_), StatusIs(kNotYet, HasSubstr("trailing bytes")));
}

TEST_F(CompletenessTest, CorruptSafetensorsHeaderIsMalformed) {
  WriteFile(ckpt_ + "/config.json", kConfigJson);
  std::string bytes(8, '\0');
  bytes[0] = 6;
  bytes += "{nope}";
  WriteFile(ckpt_ + "/model.safetensors", bytes);
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_), StatusIs(kMalformed, HasSubstr("model.safetensors: header is not valid JSON")));
}

TEST_F(CompletenessTest, IndexWithMissingShardNamesIt) {
  WriteShardedCheckpoint(ckpt_, 2);
  std::filesystem::remove(ckpt_ + "/model-00002-of-00002.safetensors");
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_),
              StatusIs(kNotYet, HasSubstr("shard model-00002-of-00002.safetensors listed in "
                                          "model.safetensors.index.json is missing")));
}

TEST_F(CompletenessTest, TruncatedShardIsNamed) {
  WriteShardedCheckpoint(ckpt_, 2);
  WriteFile(ckpt_ + "/model-00001-of-00002.safetensors", SafetensorsBytes(1));
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_),
              StatusIs(kNotYet, HasSubstr("model-00001-of-00002.safetensors is")));
}

TEST_F(CompletenessTest, IndexNeedsAWeightMap) {
  WriteShardedCheckpoint(ckpt_, 1);
  WriteFile(ckpt_ + "/model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_), StatusIs(kMalformed, HasSubstr("no \"weight_map\"")));
  WriteFile(ckpt_ + "/model.safetensors.index.json", R"({"weight_map": {)");
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_),
              StatusIs(kMalformed, HasSubstr("model.safetensors.index.json is not valid JSON")));
  WriteFile(ckpt_ + "/model.safetensors.index.json", R"({"weight_map": {"w": "../other/x.safetensors"}})");
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_), StatusIs(kMalformed, HasSubstr("not a file inside")));
}

TEST_F(CompletenessTest, MarkerIsRequiredWhenSet) {
  WriteSafetensorsCheckpoint(ckpt_);
  EXPECT_OK(CheckLocalCheckpoint(ckpt_));
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_, ".complete"),
              StatusIs(kNotYet, HasSubstr("marker file .complete is missing")));
  WriteFile(ckpt_ + "/.complete", "");
  EXPECT_OK(CheckLocalCheckpoint(ckpt_, ".complete"));
}

TEST_F(CompletenessTest, PytorchBinIsAcceptedByPresence) {
  WriteFile(ckpt_ + "/config.json", kConfigJson);
  WriteFile(ckpt_ + "/pytorch_model.bin", "not checked beyond presence");
  EXPECT_OK(CheckLocalCheckpoint(ckpt_));
}

TEST_F(CompletenessTest, PytorchBinIndexNeedsItsShards) {
  WriteFile(ckpt_ + "/config.json", kConfigJson);
  WriteFile(ckpt_ + "/pytorch_model.bin.index.json",
            R"({"weight_map": {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}})");
  WriteFile(ckpt_ + "/pytorch_model-00001-of-00002.bin", "x");
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_),
              StatusIs(kNotYet, HasSubstr("shard pytorch_model-00002-of-00002.bin listed in "
                                          "pytorch_model.bin.index.json is missing")));
  WriteFile(ckpt_ + "/pytorch_model-00002-of-00002.bin", "x");
  EXPECT_OK(CheckLocalCheckpoint(ckpt_));
}

TEST_F(CompletenessTest, ShardsMayLiveInASubfolder) {
  WriteFile(ckpt_ + "/config.json", kConfigJson);
  WriteFile(ckpt_ + "/weights/part1.safetensors", SafetensorsBytes());
  WriteFile(ckpt_ + "/model.safetensors.index.json", R"({"weight_map": {"w": "weights/part1.safetensors"}})");
  EXPECT_OK(CheckLocalCheckpoint(ckpt_));
}

TEST_F(CompletenessTest, MissingFolderIsNotFound) {
  EXPECT_THAT(CheckLocalCheckpoint(ckpt_), StatusIs(absl::StatusCode::kNotFound, HasSubstr("step_000300")));
}

// A source whose reads fail: read errors come back as they are, not as verdicts.
class FailingReadSource : public CheckpointSource {
 public:
  explicit FailingReadSource(std::unique_ptr<CheckpointSource> inner) : inner_(std::move(inner)) {}
  absl::StatusOr<std::vector<SourceEntry>> List() override { return inner_->List(); }
  absl::StatusOr<CheckpointFingerprint> Fingerprint(const std::string& path) override {
    return inner_->Fingerprint(path);
  }
  absl::StatusOr<std::string> ReadRange(const std::string&, const std::string& name, uint64_t,
                                        uint64_t) override {
    return absl::UnavailableError("injected: cannot read " + name);
  }
  std::string Describe() const override { return "failing"; }

 private:
  std::unique_ptr<CheckpointSource> inner_;
};

TEST_F(CompletenessTest, ReadErrorsPropagate) {
  WriteSafetensorsCheckpoint(ckpt_);
  auto local = FileSystemSource::Create(ckpt_);
  ASSERT_OK(local);
  FailingReadSource source(*std::move(local));
  EXPECT_THAT(CompletenessCheck().Check(source, ckpt_),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("injected: cannot read config.json")));
}

}  // namespace
}  // namespace steadyeval
