#include "server/discovery/checkpoint_source.h"

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/discovery/checkpoint_test_util.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing_util::SetMtime;
using ::steadyeval::testing_util::TempDir;
using ::steadyeval::testing_util::WriteFile;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;

TEST(FileSystemSourceTest, CreateAcceptsPathsAndFileUrls) {
  auto plain = FileSystemSource::Create("/mnt/ckpt/run42/");
  ASSERT_OK(plain);
  EXPECT_EQ((*plain)->root(), "/mnt/ckpt/run42");
  EXPECT_EQ((*plain)->Describe(), "/mnt/ckpt/run42/");

  auto url = FileSystemSource::Create("file:///mnt/ckpt/run42");
  ASSERT_OK(url);
  EXPECT_EQ((*url)->root(), "/mnt/ckpt/run42");
  EXPECT_EQ((*url)->Describe(), "file:///mnt/ckpt/run42");

  auto root = FileSystemSource::Create("file:///");
  ASSERT_OK(root);
  EXPECT_EQ((*root)->root(), "/");
}

TEST(FileSystemSourceTest, CreateRejectsBadRoots) {
  EXPECT_THAT(FileSystemSource::Create(""), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(FileSystemSource::Create("file://host/ckpt"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("file:///")));
  EXPECT_THAT(FileSystemSource::Create("file://"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("absolute")));
  EXPECT_THAT(FileSystemSource::Create("s3://bucket/run42"),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("s3://bucket/run42")));
}

TEST(FileSystemSourceTest, ListsEntriesSortedWithKinds) {
  TempDir dir;
  WriteFile(dir.Sub("step_2/config.json"), "{}");
  WriteFile(dir.Sub("step_1/config.json"), "{}");
  WriteFile(dir.Sub("notes.txt"), "hi");
  auto source = FileSystemSource::Create(dir.path());
  ASSERT_OK(source);
  auto entries = (*source)->List();
  ASSERT_OK(entries);
  ASSERT_EQ(entries->size(), 3u);
  EXPECT_EQ((*entries)[0].name, "notes.txt");
  EXPECT_FALSE((*entries)[0].is_dir);
  EXPECT_EQ((*entries)[1].name, "step_1");
  EXPECT_TRUE((*entries)[1].is_dir);
  EXPECT_EQ((*entries)[1].path, dir.Sub("step_1"));
  EXPECT_EQ((*entries)[2].name, "step_2");
}

TEST(FileSystemSourceTest, ListingAMissingFolderIsNotFound) {
  TempDir dir;
  auto source = FileSystemSource::Create("file://" + dir.Sub("not_yet"));
  ASSERT_OK(source);
  EXPECT_THAT((*source)->List(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("not_yet")));
}

TEST(FileSystemSourceTest, FingerprintDescendsOneLevel) {
  TempDir dir;
  const std::string ckpt = dir.Sub("step_1");
  WriteFile(ckpt + "/config.json", "{}");
  WriteFile(ckpt + "/b.bin", "12345");
  WriteFile(ckpt + "/sub/inner.bin", "xy");
  WriteFile(ckpt + "/sub/deeper/ignored.bin", "zzz");
  SetMtime(ckpt + "/b.bin", 1'600'000'000);
  auto source = FileSystemSource::Create(dir.path());
  ASSERT_OK(source);
  auto files = (*source)->Fingerprint(ckpt);
  ASSERT_OK(files);
  EXPECT_THAT(*files, ElementsAre(Field(&FileFingerprint::name, "b.bin"),
                                  Field(&FileFingerprint::name, "config.json"),
                                  Field(&FileFingerprint::name, "sub/inner.bin")));
  EXPECT_EQ((*files)[0].size, 5u);
  EXPECT_EQ((*files)[0].mtime_ns, 1'600'000'000'000'000'000);
  EXPECT_EQ((*files)[2].size, 2u);

  EXPECT_THAT((*source)->Fingerprint(dir.Sub("gone")), StatusIs(absl::StatusCode::kNotFound, HasSubstr("gone")));
}

TEST(FileSystemSourceTest, ReadRangeStopsAtEndOfFile) {
  TempDir dir;
  WriteFile(dir.Sub("step_1/data.bin"), "0123456789");
  auto source = FileSystemSource::Create(dir.path());
  ASSERT_OK(source);
  auto middle = (*source)->ReadRange(dir.Sub("step_1"), "data.bin", 2, 3);
  ASSERT_OK(middle);
  EXPECT_EQ(*middle, "234");
  auto tail = (*source)->ReadRange(dir.Sub("step_1"), "data.bin", 8, 100);
  ASSERT_OK(tail);
  EXPECT_EQ(*tail, "89");
  auto past = (*source)->ReadRange(dir.Sub("step_1"), "data.bin", 50, 4);
  ASSERT_OK(past);
  EXPECT_EQ(*past, "");
  EXPECT_THAT((*source)->ReadRange(dir.Sub("step_1"), "nope.bin", 0, 4),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope.bin")));
}

}  // namespace
}  // namespace steadyeval
