// S3FileSystem's FileSystem contract (common/file_system.h) against a real s3rver.
#include "s3/s3_file_system.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/s3rver.h"
#include "testing/status_matchers.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::S3rver;
using ::steadyeval::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

class S3FileSystemTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(server_, S3rver::Start());
    client_ = server_->Client();
    ASSERT_NE(client_, nullptr);
    ASSERT_OK(client_->CreateBucket("ckpt"));
    Put("run/step_1/model.safetensors", std::string(100, 'w'));
    Put("run/step_1/config.json", "{}");
    Put("run/step_2/model.safetensors", "x");
    Put("run/top.txt", "0123456789");
    Put("run/empty", "");
    fs_ = std::make_unique<S3FileSystem>(client_);
  }
  void Put(const std::string& key, const std::string& bytes) {
    ASSERT_OK(client_->Put("ckpt", key, bytes));
  }

  std::unique_ptr<S3rver> server_;
  std::shared_ptr<S3Client> client_;
  std::unique_ptr<S3FileSystem> fs_;
};

TEST_F(S3FileSystemTest, ListGivesEachNextComponentOnceSortedWithItsStat) {
  for (const char* dir : {"s3://ckpt/run", "s3://ckpt/run/"}) {
    ASSERT_OK_AND_ASSIGN(std::vector<DirEntry> entries, fs_->List(dir));
    ASSERT_EQ(entries.size(), 4u) << dir;
    EXPECT_EQ(entries[0].name, "empty");
    EXPECT_EQ(entries[1].name, "step_1");
    EXPECT_EQ(entries[1].stat.kind, FileKind::kDirectory);
    EXPECT_EQ(entries[2].name, "step_2");
    EXPECT_EQ(entries[2].stat.kind, FileKind::kDirectory);
    EXPECT_EQ(entries[3].name, "top.txt");
    EXPECT_EQ(entries[3].stat.kind, FileKind::kRegular);
    EXPECT_EQ(entries[3].stat.size, 10u);
  }
  ASSERT_OK_AND_ASSIGN(std::vector<DirEntry> root, fs_->List("s3://ckpt"));
  ASSERT_EQ(root.size(), 1u);
  EXPECT_EQ(root[0].name, "run");
  EXPECT_EQ(root[0].stat.kind, FileKind::kDirectory);
}

TEST_F(S3FileSystemTest, ListedStatEqualsStat) {
  ASSERT_OK_AND_ASSIGN(std::vector<DirEntry> entries, fs_->List("s3://ckpt/run/step_1"));
  ASSERT_EQ(entries.size(), 2u);
  for (const DirEntry& entry : entries) {
    ASSERT_OK_AND_ASSIGN(FileStat stat, fs_->Stat("s3://ckpt/run/step_1/" + entry.name));
    EXPECT_EQ(stat.kind, entry.stat.kind) << entry.name;
    EXPECT_EQ(stat.size, entry.stat.size) << entry.name;
    EXPECT_EQ(stat.mtime_nanos, entry.stat.mtime_nanos) << entry.name;
    EXPECT_EQ(stat.etag, entry.stat.etag) << entry.name;
    EXPECT_FALSE(stat.etag.empty()) << entry.name;
    EXPECT_GT(stat.mtime_nanos, 0) << entry.name;
  }
  ASSERT_OK_AND_ASSIGN(FileStat folder, fs_->Stat("s3://ckpt/run/step_1/"));
  EXPECT_EQ(folder.kind, FileKind::kDirectory);
  ASSERT_OK_AND_ASSIGN(FileStat bucket, fs_->Stat("s3://ckpt"));
  EXPECT_EQ(bucket.kind, FileKind::kDirectory);
}

TEST_F(S3FileSystemTest, MissingPathsAreNotFoundAndWrongKindsFailedPrecondition) {
  EXPECT_THAT(fs_->List("s3://ckpt/run/step_3"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("s3://ckpt/run/step_3")));
  EXPECT_THAT(fs_->List("s3://ckpt/run/top.txt"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not a folder")));
  EXPECT_THAT(fs_->Stat("s3://ckpt/run/step_3/model.safetensors"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("s3://ckpt/run/step_3")));
  // "run/top" is a prefix of "run/top.txt" but not a folder: no such path.
  EXPECT_THAT(fs_->Stat("s3://ckpt/run/top"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("top")));
  EXPECT_THAT(fs_->ReadRange("s3://ckpt/run/absent", 0, 10),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("s3://ckpt/run/absent")));
  EXPECT_THAT(fs_->ReadRange("s3://ckpt/run/step_1", 0, 10),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("folder")));
  EXPECT_THAT(fs_->ReadFile("s3://ckpt/run", 100),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("folder")));
  EXPECT_THAT(fs_->Map("s3://ckpt/run/absent"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("absent")));
  EXPECT_THAT(fs_->Stat("s3://other-bucket/x"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("NoSuchBucket")));
  EXPECT_THAT(fs_->Stat("/local/path"), StatusIs(absl::StatusCode::kInvalidArgument,
                                                 HasSubstr("s3://")));
}

TEST_F(S3FileSystemTest, ReadRangeIsShortOnlyAtTheEnd) {
  const std::string path = "s3://ckpt/run/top.txt";
  EXPECT_THAT(fs_->ReadRange(path, 2, 3), ::testing::Eq(absl::StatusOr<std::string>("234")));
  EXPECT_THAT(fs_->ReadRange(path, 7, 100), ::testing::Eq(absl::StatusOr<std::string>("789")));
  EXPECT_THAT(fs_->ReadRange(path, 10, 5), ::testing::Eq(absl::StatusOr<std::string>("")));
  EXPECT_THAT(fs_->ReadRange(path, 1000, 5), ::testing::Eq(absl::StatusOr<std::string>("")));
  EXPECT_THAT(fs_->ReadRange(path, 0, UINT64_MAX),
              ::testing::Eq(absl::StatusOr<std::string>("0123456789")));
}

TEST_F(S3FileSystemTest, ReadFileIsBoundedAndMapHoldsTheBytes) {
  EXPECT_THAT(fs_->ReadFile("s3://ckpt/run/top.txt", 10),
              ::testing::Eq(absl::StatusOr<std::string>("0123456789")));
  EXPECT_THAT(fs_->ReadFile("s3://ckpt/run/top.txt", 9),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("s3://ckpt/run/top.txt"), HasSubstr("10 bytes"),
                             HasSubstr("9"))));
  EXPECT_THAT(fs_->ReadFile("s3://ckpt/run/empty", 10),
              ::testing::Eq(absl::StatusOr<std::string>("")));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<MappedFile> mapped,
                       fs_->Map("s3://ckpt/run/step_1/model.safetensors"));
  EXPECT_EQ(mapped->bytes(), std::string(100, 'w'));
}

TEST_F(S3FileSystemTest, EtagChangesWhenAnObjectIsRewritten) {
  const std::string path = "s3://ckpt/run/step_2/model.safetensors";
  ASSERT_OK_AND_ASSIGN(FileStat before, fs_->Stat(path));
  Put("run/step_2/model.safetensors", "y");  // same size, other content
  ASSERT_OK_AND_ASSIGN(FileStat after, fs_->Stat(path));
  EXPECT_EQ(before.size, after.size);
  EXPECT_FALSE(after.etag.empty());
  EXPECT_NE(before.etag, after.etag);
  ASSERT_OK_AND_ASSIGN(std::vector<DirEntry> listed, fs_->List("s3://ckpt/run/step_2"));
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].stat.etag, after.etag);
}

}  // namespace
}  // namespace steadyeval
