#include "server/discovery/checkpoint_source.h"

#include "testing/files.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/checkpoint_files.h"
#include "testing/fake_bucket_file_system.h"
#include "common/safetensors.h"
#include "server/discovery/completeness.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::SetMtime;
using ::steadyeval::testing::StatusIs;
using ::steadyeval::testing::TempDir;
using ::steadyeval::testing::WriteFile;
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
  // A bucket needs an object store's file system; other schemes are not read at all.
  EXPECT_THAT(FileSystemSource::Create("s3://bucket/run42"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("s3://bucket/run42")));
  EXPECT_THAT(FileSystemSource::Create("gs://bucket/run42"),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("gs://bucket/run42")));
  testing::FakeBucketFileSystem bucket;
  EXPECT_THAT(FileSystemSource::Create("s3://", &bucket),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("s3://")));
}

// A safetensors file whose tensor data is `data_bytes` long (one U8 tensor).
std::string BigSafetensors(uint64_t data_bytes) {
  std::vector<TensorInfo> tensors(1);
  tensors[0].name = "w";
  tensors[0].dtype = DType::kU8;
  tensors[0].shape = {static_cast<int64_t>(data_bytes)};
  std::string bytes = BuildSafetensorsHeader(tensors);
  bytes.append(data_bytes, '\x02');
  return bytes;
}

TEST(FileSystemSourceTest, ABucketPrefixKeepsFullUrisAndReadsOnlyHeaders) {
  testing::FakeBucketFileSystem bucket;
  constexpr uint64_t kData = 4 << 20;
  bucket.WriteFile("s3://ckpt/run42/step_000100/config.json", testing::kConfigJson);
  bucket.WriteFile("s3://ckpt/run42/step_000100/model.safetensors", BigSafetensors(kData));
  bucket.WriteFile("s3://ckpt/run42/notes.txt", "hi");
  bucket.SetEtag("s3://ckpt/run42/step_000100/model.safetensors", "abc123");

  auto source = FileSystemSource::Create("s3://ckpt/run42/", &bucket);
  ASSERT_OK(source);
  EXPECT_EQ((*source)->root(), "s3://ckpt/run42");
  EXPECT_EQ((*source)->Describe(), "s3://ckpt/run42/");
  auto entries = (*source)->List();
  ASSERT_OK(entries);
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[1].name, "step_000100");
  EXPECT_EQ((*entries)[1].path, "s3://ckpt/run42/step_000100");
  EXPECT_TRUE((*entries)[1].is_dir);

  auto files = (*source)->Fingerprint((*entries)[1].path);
  ASSERT_OK(files);
  ASSERT_EQ(files->size(), 2u);
  EXPECT_EQ((*files)[1].name, "model.safetensors");
  EXPECT_EQ((*files)[1].etag, "abc123");
  EXPECT_FALSE((*files)[0].etag.empty());

  // Completeness fetches config.json and the safetensors header, not the 4 MiB of data.
  EXPECT_OK(CompletenessCheck().Check(**source, (*entries)[1].path));
  EXPECT_LT(bucket.BytesRead(), 4096u);
  EXPECT_THAT(bucket.NonUriPaths(), ::testing::IsEmpty());

  // A whole bucket: paths are s3://bucket/name.
  auto whole = FileSystemSource::Create("s3://ckpt", &bucket);
  ASSERT_OK(whole);
  auto top = (*whole)->List();
  ASSERT_OK(top);
  ASSERT_EQ(top->size(), 1u);
  EXPECT_EQ((*top)[0].path, "s3://ckpt/run42");
}

TEST(FileSystemSourceTest, FingerprintsDifferByEtagAlone) {
  FileFingerprint a{"model.safetensors", 10, 5, "v1"};
  FileFingerprint b = a;
  EXPECT_EQ(a, b);
  b.etag = "v2";
  EXPECT_NE(a, b);
}

TEST(FileSystemSourceTest, ListsEntriesSortedWithKinds) {
  TempDir dir;
  WriteFile(dir / "step_2/config.json", "{}");
  WriteFile(dir / "step_1/config.json", "{}");
  WriteFile(dir / "notes.txt", "hi");
  auto source = FileSystemSource::Create(dir.path());
  ASSERT_OK(source);
  auto entries = (*source)->List();
  ASSERT_OK(entries);
  ASSERT_EQ(entries->size(), 3u);
  EXPECT_EQ((*entries)[0].name, "notes.txt");
  EXPECT_FALSE((*entries)[0].is_dir);
  EXPECT_EQ((*entries)[1].name, "step_1");
  EXPECT_TRUE((*entries)[1].is_dir);
  EXPECT_EQ((*entries)[1].path, dir / "step_1");
  EXPECT_EQ((*entries)[2].name, "step_2");
}

TEST(FileSystemSourceTest, ListingAMissingFolderIsNotFound) {
  TempDir dir;
  auto source = FileSystemSource::Create("file://" + dir / "not_yet");
  ASSERT_OK(source);
  EXPECT_THAT((*source)->List(), StatusIs(absl::StatusCode::kNotFound, HasSubstr("not_yet")));
}

TEST(FileSystemSourceTest, FingerprintDescendsOneLevel) {
  TempDir dir;
  const std::string ckpt = dir / "step_1";
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

  EXPECT_THAT((*source)->Fingerprint(dir / "gone"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("gone")));
}

TEST(FileSystemSourceTest, ReadRangeStopsAtEndOfFile) {
  TempDir dir;
  WriteFile(dir / "step_1/data.bin", "0123456789");
  auto source = FileSystemSource::Create(dir.path());
  ASSERT_OK(source);
  auto middle = (*source)->ReadRange(dir / "step_1", "data.bin", 2, 3);
  ASSERT_OK(middle);
  EXPECT_EQ(*middle, "234");
  auto tail = (*source)->ReadRange(dir / "step_1", "data.bin", 8, 100);
  ASSERT_OK(tail);
  EXPECT_EQ(*tail, "89");
  auto past = (*source)->ReadRange(dir / "step_1", "data.bin", 50, 4);
  ASSERT_OK(past);
  EXPECT_EQ(*past, "");
  EXPECT_THAT((*source)->ReadRange(dir / "step_1", "nope.bin", 0, 4),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope.bin")));
}

}  // namespace
}  // namespace steadyeval
