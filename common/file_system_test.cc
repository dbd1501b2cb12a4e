// The FileSystem contract (common/file_system.h), run on LocalFileSystem (in a temp folder)
// and on FakeFileSystem alike, so the fake that discovery tests use behaves as the real one
// does; then what only one of them has (links, FIFOs and mappings; injected errors).
#include "common/file_system.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>

#include "testing/fake_file_system.h"
#include "testing/files.h"
#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::steadyeval::testing::FakeFileSystem;
using ::steadyeval::testing::StatusIs;

MATCHER_P(IsOkAndHolds, expected, "is OK and holds " + ::testing::PrintToString(expected)) {
  if (!arg.ok()) {
    *result_listener << "status is " << arg.status();
    return false;
  }
  *result_listener << "holds " << ::testing::PrintToString(*arg);
  return *arg == expected;
}

// One implementation under test, with the means to lay out files in it.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual FileSystem& fs() = 0;
  // Where the test's files live: an absolute path.
  virtual const std::string& root() const = 0;
  virtual void Write(const std::string& path, const std::string& bytes) = 0;
  virtual void MakeDir(const std::string& path) = 0;
  virtual void SetMtime(const std::string& path, int64_t mtime_nanos) = 0;
};

class LocalBackend : public Backend {
 public:
  LocalBackend() {
    std::string tmpl = ::testing::TempDir() + "/file_system_XXXXXX";
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
  }
  ~LocalBackend() override {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  FileSystem& fs() override { return *FileSystem::Local(); }
  const std::string& root() const override { return root_; }
  void Write(const std::string& path, const std::string& bytes) override {
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }
  void MakeDir(const std::string& path) override { std::filesystem::create_directories(path); }
  void SetMtime(const std::string& path, int64_t mtime_nanos) override {
    struct timespec times[2];
    times[0].tv_sec = mtime_nanos / 1'000'000'000;
    times[0].tv_nsec = mtime_nanos % 1'000'000'000;
    times[1] = times[0];
    ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
  }

 private:
  std::string root_;
};

class FakeBackend : public Backend {
 public:
  FileSystem& fs() override { return fs_; }
  const std::string& root() const override { return root_; }
  void Write(const std::string& path, const std::string& bytes) override { fs_.WriteFile(path, bytes); }
  void MakeDir(const std::string& path) override { fs_.MakeDir(path); }
  void SetMtime(const std::string& path, int64_t mtime_nanos) override {
    fs_.SetMtime(path, mtime_nanos);
  }

 private:
  FakeFileSystem fs_;
  const std::string root_ = "/data/run";
};

enum class Kind { kLocal, kFake };

class FileSystemContractTest : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    backend_ = GetParam() == Kind::kLocal ? std::unique_ptr<Backend>(new LocalBackend)
                                          : std::unique_ptr<Backend>(new FakeBackend);
  }
  FileSystem& fs() { return backend_->fs(); }
  std::string Path(const std::string& relative) const { return backend_->root() + "/" + relative; }

  std::unique_ptr<Backend> backend_;
};

TEST_P(FileSystemContractTest, ListGivesDirectEntriesSortedWithKindsSizesAndMtimes) {
  backend_->Write(Path("b.bin"), "12345");
  backend_->Write(Path("a/config.json"), "{}");
  backend_->Write(Path("a/deeper/x"), "not listed at the top");
  backend_->MakeDir(Path("c"));
  backend_->SetMtime(Path("b.bin"), 1'600'000'000'123'456'789);

  auto entries = fs().List(backend_->root());
  ASSERT_OK(entries);
  ASSERT_THAT(*entries, ElementsAre(Field(&DirEntry::name, "a"), Field(&DirEntry::name, "b.bin"),
                                    Field(&DirEntry::name, "c")));
  EXPECT_EQ((*entries)[0].stat.kind, FileKind::kDirectory);
  EXPECT_EQ((*entries)[1].stat.kind, FileKind::kRegular);
  EXPECT_EQ((*entries)[1].stat.size, 5u);
  EXPECT_EQ((*entries)[1].stat.mtime_nanos, 1'600'000'000'123'456'789);
  EXPECT_EQ((*entries)[2].stat.kind, FileKind::kDirectory);

  // A trailing '/' names the same folder.
  auto again = fs().List(backend_->root() + "/");
  ASSERT_OK(again);
  EXPECT_EQ(again->size(), 3u);
  auto inner = fs().List(Path("a"));
  ASSERT_OK(inner);
  EXPECT_THAT(*inner, ElementsAre(Field(&DirEntry::name, "config.json"),
                                  Field(&DirEntry::name, "deeper")));
}

TEST_P(FileSystemContractTest, ListErrorsNameTheFolder) {
  backend_->Write(Path("file"), "x");
  EXPECT_THAT(fs().List(Path("missing")),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("cannot list"), HasSubstr(Path("missing")))));
  EXPECT_THAT(fs().List(Path("file")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(Path("file"))));
}

TEST_P(FileSystemContractTest, StatDescribesFilesAndFolders) {
  backend_->Write(Path("d/f"), "abc");
  backend_->SetMtime(Path("d/f"), 1'500'000'000'000'000'000);
  auto file = fs().Stat(Path("d/f"));
  ASSERT_OK(file);
  EXPECT_EQ(file->kind, FileKind::kRegular);
  EXPECT_EQ(file->size, 3u);
  EXPECT_EQ(file->mtime_nanos, 1'500'000'000'000'000'000);
  auto dir = fs().Stat(Path("d"));
  ASSERT_OK(dir);
  EXPECT_EQ(dir->kind, FileKind::kDirectory);
  EXPECT_THAT(fs().Stat(Path("d/nope")),
              StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr("stat"), HasSubstr(Path("d/nope")))));
}

TEST_P(FileSystemContractTest, ReadRangeIsShortOnlyAtEndOfFile) {
  backend_->Write(Path("f"), "0123456789");
  EXPECT_THAT(fs().ReadRange(Path("f"), 2, 3), IsOkAndHolds(std::string("234")));
  EXPECT_THAT(fs().ReadRange(Path("f"), 0, 10), IsOkAndHolds(std::string("0123456789")));
  EXPECT_THAT(fs().ReadRange(Path("f"), 7, 100), IsOkAndHolds(std::string("789")));
  EXPECT_THAT(fs().ReadRange(Path("f"), 10, 5), IsOkAndHolds(std::string()));
  EXPECT_THAT(fs().ReadRange(Path("f"), 1000, 5), IsOkAndHolds(std::string()));
  EXPECT_THAT(fs().ReadRange(Path("f"), 0, 0), IsOkAndHolds(std::string()));
  // A length far beyond the file allocates only what the file holds.
  EXPECT_THAT(fs().ReadRange(Path("f"), 8, std::numeric_limits<uint64_t>::max()),
              IsOkAndHolds(std::string("89")));
}

TEST_P(FileSystemContractTest, ReadErrorsNameThePath) {
  backend_->MakeDir(Path("dir"));
  EXPECT_THAT(fs().ReadRange(Path("missing"), 0, 1),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(Path("missing"))));
  EXPECT_THAT(fs().ReadFile(Path("missing"), 10),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(Path("missing"))));
  EXPECT_THAT(fs().Map(Path("missing")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(Path("missing"))));
  EXPECT_THAT(fs().ReadRange(Path("dir"), 0, 1),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(Path("dir"))));
  EXPECT_THAT(fs().ReadFile(Path("dir"), 10),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(Path("dir"))));
  EXPECT_THAT(fs().Map(Path("dir")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(Path("dir"))));
}

TEST_P(FileSystemContractTest, ReadFileIsBounded) {
  backend_->Write(Path("config.json"), "{\"a\": 1}");
  EXPECT_THAT(fs().ReadFile(Path("config.json"), 8), IsOkAndHolds(std::string("{\"a\": 1}")));
  EXPECT_THAT(fs().ReadFile(Path("config.json"), 7),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(Path("config.json")), HasSubstr("8 bytes"),
                             HasSubstr("7-byte limit"))));
}

TEST_P(FileSystemContractTest, MapHoldsTheWholeFile) {
  std::string bytes(10000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  backend_->Write(Path("w.safetensors"), bytes);
  backend_->Write(Path("empty"), "");
  auto mapped = fs().Map(Path("w.safetensors"));
  ASSERT_OK(mapped);
  EXPECT_EQ((*mapped)->size(), bytes.size());
  EXPECT_EQ((*mapped)->bytes(), bytes);
  // Dropping pages is only a hint: the bytes read the same afterwards.
  (*mapped)->DropPages(100, 5000);
  (*mapped)->DropPages(9000, 1'000'000);
  EXPECT_EQ((*mapped)->bytes(), bytes);

  auto empty = fs().Map(Path("empty"));
  ASSERT_OK(empty);
  EXPECT_EQ((*empty)->size(), 0u);
}

TEST_P(FileSystemContractTest, CopyToLocalFileCopiesInChunksAndChecksTheSize) {
  std::string bytes(1000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 13);
  backend_->Write(Path("w.safetensors"), bytes);
  LocalBackend local;  // where the copies go
  const std::string copy = local.root() + "/copy";
  LocalCopyOptions options;
  options.chunk_bytes = 64;
  int chunks = 0;
  options.before_chunk = [&chunks] {
    ++chunks;
    return absl::OkStatus();
  };
  ASSERT_OK(fs().CopyToLocalFile(Path("w.safetensors"), copy, bytes.size(), options));
  EXPECT_EQ(chunks, 16);
  std::ifstream in(copy, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), bytes);

  // Listed longer than it is: cut short while being fetched.
  EXPECT_THAT(fs().CopyToLocalFile(Path("w.safetensors"), copy, bytes.size() + 1, options),
              StatusIs(absl::StatusCode::kDataLoss,
                       HasSubstr("listed as 1001 bytes but 1000 bytes arrived")));
  EXPECT_THAT(fs().CopyToLocalFile(Path("missing"), copy, 10, options),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(Path("missing"))));
  // before_chunk's error abandons the copy as is.
  options.before_chunk = [] { return absl::CancelledError("the job was cancelled"); };
  EXPECT_THAT(fs().CopyToLocalFile(Path("w.safetensors"), copy, bytes.size(), options),
              StatusIs(absl::StatusCode::kCancelled, HasSubstr("the job was cancelled")));
  EXPECT_THAT(fs().CopyToLocalFile(Path("w.safetensors"), local.root() + "/no/such/dir/f",
                                   bytes.size(), LocalCopyOptions()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot create")));
}

INSTANTIATE_TEST_SUITE_P(Implementations, FileSystemContractTest,
                         ::testing::Values(Kind::kLocal, Kind::kFake),
                         [](const ::testing::TestParamInfo<Kind>& info) {
                           return info.param == Kind::kLocal ? "Local" : "Fake";
                         });

// What only the local file system has.
class LocalFileSystemTest : public ::testing::Test {
 protected:
  LocalBackend dir_;
  FileSystem& fs_ = *FileSystem::Local();
  std::string Path(const std::string& relative) const { return dir_.root() + "/" + relative; }
};

TEST_F(LocalFileSystemTest, ListFollowsLinksAndLeavesOutDanglingOnes) {
  dir_.Write(Path("real/config.json"), "{}");
  ASSERT_EQ(::symlink(Path("real").c_str(), Path("linked").c_str()), 0);
  ASSERT_EQ(::symlink(Path("gone").c_str(), Path("dangling").c_str()), 0);
  auto entries = fs_.List(dir_.root());
  ASSERT_OK(entries);
  ASSERT_THAT(*entries, ElementsAre(Field(&DirEntry::name, "linked"), Field(&DirEntry::name, "real")));
  EXPECT_EQ((*entries)[0].stat.kind, FileKind::kDirectory);
}

TEST_F(LocalFileSystemTest, ReadFileRefusesAFifoWithoutWaitingForAWriter) {
  ASSERT_EQ(::mkfifo(Path("fifo").c_str(), 0600), 0);
  EXPECT_THAT(fs_.ReadFile(Path("fifo"), 100),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(Path("fifo")), HasSubstr("not a regular file"))));
  EXPECT_THAT(fs_.Map(Path("fifo")), StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
}

TEST_F(LocalFileSystemTest, UnreadableFileIsPermissionDenied) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads every file";
  dir_.Write(Path("secret"), "x");
  ASSERT_EQ(::chmod(Path("secret").c_str(), 0), 0);
  EXPECT_THAT(fs_.ReadRange(Path("secret"), 0, 1),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       AllOf(HasSubstr("cannot open"), HasSubstr(Path("secret")))));
}

TEST_F(LocalFileSystemTest, MapIsAMemoryMappingOfTheFile) {
  // A mapping, not a copy: a write to the file through another descriptor shows through
  // (MAP_PRIVATE pages not yet touched by this process read the file's page cache).
  dir_.Write(Path("f"), std::string(4096 * 4, 'a'));
  auto mapped = fs_.Map(Path("f"));
  ASSERT_OK(mapped);
  {
    std::fstream out(Path("f"), std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(4096 * 2);
    out.write("b", 1);
  }
  EXPECT_EQ((*mapped)->bytes()[4096 * 2], 'b');
}

// What only the fake has: injected errors and call counts.
TEST(FakeFileSystemTest, InjectedErrorsFailTheNamedOperationUntilCleared) {
  FakeFileSystem fs;
  fs.WriteFile("/r/step_1/model.safetensors", "bytes");
  fs.InjectError(FakeFileSystem::Op::kRead, "/r/step_1/model.safetensors",
                 absl::UnavailableError("injected"));
  EXPECT_THAT(fs.ReadRange("/r/step_1/model.safetensors", 0, 1),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("injected")));
  EXPECT_THAT(fs.ReadFile("/r/step_1/model.safetensors", 100), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(fs.Map("/r/step_1/model.safetensors"), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_OK(fs.Stat("/r/step_1/model.safetensors"));
  EXPECT_EQ(fs.Calls(FakeFileSystem::Op::kRead, "/r/step_1/model.safetensors"), 3);

  // A stat error hides the entry from its folder's listing, as a local listing does.
  fs.InjectError(FakeFileSystem::Op::kStat, "/r/step_1", absl::PermissionDeniedError("no"));
  auto entries = fs.List("/r");
  ASSERT_OK(entries);
  EXPECT_TRUE(entries->empty());
  fs.InjectError(FakeFileSystem::Op::kList, "/r", absl::UnavailableError("listing down"));
  EXPECT_THAT(fs.List("/r/"), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("listing down")));

  fs.ClearErrors();
  EXPECT_THAT(fs.ReadRange("/r/step_1/model.safetensors", 1, 2), IsOkAndHolds(std::string("yt")));
  EXPECT_OK(fs.List("/r"));
}

TEST(FakeFileSystemTest, WritesResizesAndRemovals) {
  FakeFileSystem fs;
  fs.WriteFile("/r/a/f", "abc");
  const int64_t first = fs.Stat("/r/a/f")->mtime_nanos;
  fs.AppendFile("/r/a/f", "de");
  EXPECT_THAT(fs.ReadFile("/r/a/f", 10), IsOkAndHolds(std::string("abcde")));
  EXPECT_GT(fs.Stat("/r/a/f")->mtime_nanos, first);
  fs.Resize("/r/a/f", 2);
  EXPECT_THAT(fs.ReadFile("/r/a/f", 10), IsOkAndHolds(std::string("ab")));
  fs.Resize("/r/a/f", 4);
  EXPECT_THAT(fs.ReadFile("/r/a/f", 10), IsOkAndHolds(std::string("ab\0\0", 4)));
  fs.Remove("/r/a");
  EXPECT_THAT(fs.Stat("/r/a/f"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_THAT(fs.Stat("/r/a"), StatusIs(absl::StatusCode::kNotFound, ::testing::_));
  EXPECT_OK(fs.List("/r"));
  EXPECT_OK(fs.List("/"));
}

}  // namespace
}  // namespace steadyeval
