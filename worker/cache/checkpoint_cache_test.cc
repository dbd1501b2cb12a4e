#include "worker/cache/checkpoint_cache.h"

#include <filesystem>
#include <map>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/fake_file_system.h"
#include "testing/files.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"
#include "testing/wait.h"

namespace steadyeval {
namespace {

namespace fs = std::filesystem;
using ::steadyeval::testing::FakeFileSystem;
using ::steadyeval::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// The "bucket": a FakeFileSystem whose files may carry ETags, and whose reads can be held
// until the test lets them go (to watch how many run at once).
class RemoteFileSystem : public FileSystem {
 public:
  FakeFileSystem files;

  void SetEtag(const std::string& path, const std::string& etag) {
    absl::MutexLock lock(&mu_);
    etags_[path] = etag;
  }
  // From now on every ReadRange waits for a permit (Release) before it returns.
  void HoldReads() {
    absl::MutexLock lock(&mu_);
    hold_ = true;
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    ++permits_;
  }
  int in_flight() const {
    absl::MutexLock lock(&mu_);
    return in_flight_;
  }
  int max_in_flight() const {
    absl::MutexLock lock(&mu_);
    return max_in_flight_;
  }
  int reads() const {
    absl::MutexLock lock(&mu_);
    return reads_;
  }

  absl::StatusOr<std::vector<DirEntry>> List(const std::string& dir) override {
    auto entries = files.List(dir);
    if (entries.ok()) {
      absl::MutexLock lock(&mu_);
      for (DirEntry& e : *entries) {
        auto it = etags_.find(JoinPath(dir, e.name));
        if (it != etags_.end()) e.stat.etag = it->second;
      }
    }
    return entries;
  }
  absl::StatusOr<FileStat> Stat(const std::string& path) override { return files.Stat(path); }
  absl::StatusOr<std::string> ReadRange(const std::string& path, uint64_t offset,
                                        uint64_t length) override {
    {
      absl::MutexLock lock(&mu_);
      ++reads_;
      ++in_flight_;
      max_in_flight_ = std::max(max_in_flight_, in_flight_);
      if (hold_) {
        mu_.Await(absl::Condition(+[](int* p) { return *p > 0; }, &permits_));
        --permits_;
      }
      --in_flight_;
    }
    return files.ReadRange(path, offset, length);
  }
  absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) override {
    return files.ReadFile(path, max_bytes);
  }
  absl::StatusOr<std::unique_ptr<MappedFile>> Map(const std::string& path) override {
    return files.Map(path);
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, std::string> etags_ ABSL_GUARDED_BY(mu_);
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  int permits_ ABSL_GUARDED_BY(mu_) = 0;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int reads_ ABSL_GUARDED_BY(mu_) = 0;
};

class CountingObserver : public CacheObserver {
 public:
  void OnCacheBytes(uint64_t bytes, uint64_t) override { last_bytes = bytes; }
  void OnHit() override { ++hits; }
  void OnMiss() override { ++misses; }
  void OnEviction(uint64_t) override { ++evictions; }
  void OnFetched(uint64_t bytes) override { fetched += bytes; }
  std::atomic<uint64_t> last_bytes{0};
  std::atomic<int> hits{0}, misses{0}, evictions{0};
  std::atomic<uint64_t> fetched{0};
};

// The bytes of regular files under `dir`, as `du` would count them.
uint64_t DiskBytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().filename() != "lock") total += e.file_size();
  }
  return total;
}

class CheckpointCacheTest : public ::testing::Test {
 protected:
  // A checkpoint of 600 bytes: config.json (100), model.safetensors (400) and
  // sub/extra.bin (100), the last one level down.
  std::string WriteCheckpoint(int step) {
    const std::string dir = "/bucket/run/step_" + std::to_string(step);
    remote_.files.WriteFile(dir + "/config.json", std::string(100, 'c'));
    remote_.files.WriteFile(dir + "/model.safetensors", std::string(400, static_cast<char>('0' + step % 10)));
    remote_.files.WriteFile(dir + "/sub/extra.bin", std::string(100, 'e'));
    remote_.files.WriteFile(dir + "/sub/deeper/ignored.bin", "not part of it");
    return dir;
  }
  std::unique_ptr<CheckpointCache> NewCache(uint64_t limit, int concurrency = 4) {
    CheckpointCacheOptions options;
    options.dir = dir_.path() + "/cache";
    options.limit_bytes = limit;
    options.fetch_concurrency = concurrency;
    options.chunk_bytes = 64;
    options.observer = &observer_;
    auto cache = CheckpointCache::Create(options);
    EXPECT_OK(cache);
    return cache.ok() ? std::move(*cache) : nullptr;
  }
  absl::StatusOr<CacheEntry> Fetch(CheckpointCache& cache, const std::string& dir) {
    ASSIGN_OR_RETURN(const CheckpointIdentity id, IdentifyCheckpoint(remote_, "test", dir));
    return cache.Fetch(remote_, id);
  }

  ::steadyeval::testing::TempDir dir_;
  RemoteFileSystem remote_;
  CountingObserver observer_;
};

TEST(ByteSizeTest, ParsesSuffixesAndRejectsTheRest) {
  EXPECT_EQ(*ParseByteSize("123", "--cache_bytes"), 123u);
  EXPECT_EQ(*ParseByteSize("64K", "--cache_bytes"), 64u << 10);
  EXPECT_EQ(*ParseByteSize("3m", "--cache_bytes"), 3u << 20);
  EXPECT_EQ(*ParseByteSize("100G", "--cache_bytes"), 100ull << 30);
  EXPECT_EQ(*ParseByteSize("2T", "--cache_bytes"), 2ull << 40);
  for (const char* bad : {"", "G", "1.5G", "-1", "12X", "99999999999999999999", "20000000T"}) {
    EXPECT_THAT(ParseByteSize(bad, "--cache_bytes"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--cache_bytes")))
        << bad;
  }
}

TEST(DefaultCacheDirTest, XdgCacheHomeThenHome) {
  std::map<std::string, const char*> env = {{"XDG_CACHE_HOME", "/xdg"}, {"HOME", "/home/u"}};
  auto getenv_fn = [&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second;
  };
  EXPECT_EQ(*DefaultCacheDir(getenv_fn), "/xdg/steadyeval");
  env.erase("XDG_CACHE_HOME");
  EXPECT_EQ(*DefaultCacheDir(getenv_fn), "/home/u/.cache/steadyeval");
  env.erase("HOME");
  EXPECT_THAT(DefaultCacheDir(getenv_fn), StatusIs(absl::StatusCode::kNotFound, HasSubstr("--cache_dir")));
}

TEST_F(CheckpointCacheTest, IdentityCoversEveryFilesNameSizeAndVersion) {
  const std::string dir = WriteCheckpoint(1);
  ASSERT_OK_AND_ASSIGN(const CheckpointIdentity first, IdentifyCheckpoint(remote_, "test", dir));
  EXPECT_EQ(first.bytes, 600u);
  ASSERT_EQ(first.files.size(), 3u);  // two levels only, as discovery lists them
  EXPECT_EQ(first.files[2].name, "sub/extra.bin");
  EXPECT_EQ(first.key.size(), 64u);
  // The same listing is the same key; another origin is another key.
  EXPECT_EQ(IdentifyCheckpoint(remote_, "test", dir)->key, first.key);
  EXPECT_NE(IdentifyCheckpoint(remote_, "other endpoint", dir)->key, first.key);
  // An ETag changes (the object rewritten, same size): a new key.
  remote_.SetEtag(dir + "/model.safetensors", "etag-1");
  ASSERT_OK_AND_ASSIGN(const CheckpointIdentity tagged, IdentifyCheckpoint(remote_, "test", dir));
  EXPECT_NE(tagged.key, first.key);
  remote_.SetEtag(dir + "/model.safetensors", "etag-2");
  EXPECT_NE(IdentifyCheckpoint(remote_, "test", dir)->key, tagged.key);
  // A size changes (under the same ETag): a new key.
  remote_.SetEtag(dir + "/model.safetensors", "etag-1");
  EXPECT_EQ(IdentifyCheckpoint(remote_, "test", dir)->key, tagged.key);
  remote_.files.Resize(dir + "/model.safetensors", 401);
  EXPECT_NE(IdentifyCheckpoint(remote_, "test", dir)->key, tagged.key);
  // Without ETags (a local folder), the mtime is the version.
  const std::string local = "/bucket/run/step_2";
  WriteCheckpoint(2);
  const std::string before = IdentifyCheckpoint(remote_, "test", local)->key;
  remote_.files.SetMtime(local + "/config.json", 42);
  EXPECT_NE(IdentifyCheckpoint(remote_, "test", local)->key, before);
  EXPECT_THAT(IdentifyCheckpoint(remote_, "test", "/bucket/run/step_9"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("step_9")));
}

TEST_F(CheckpointCacheTest, FetchesEveryFileAndReusesTheEntry) {
  const std::string dir = WriteCheckpoint(1);
  auto cache = NewCache(10'000);
  ASSERT_OK_AND_ASSIGN(CacheEntry entry, Fetch(*cache, dir));
  EXPECT_EQ(entry.bytes(), 600u);
  EXPECT_EQ(::steadyeval::testing::ReadFileOrEmpty(entry.path() + "/model.safetensors"), std::string(400, '1'));
  EXPECT_EQ(::steadyeval::testing::ReadFileOrEmpty(entry.path() + "/sub/extra.bin"), std::string(100, 'e'));
  EXPECT_FALSE(fs::exists(entry.path() + "/sub/deeper"));
  EXPECT_EQ(observer_.fetched, 600u);
  const int reads = remote_.reads();
  ASSERT_OK_AND_ASSIGN(CacheEntry again, Fetch(*cache, dir));  // pinned twice: fine
  EXPECT_EQ(again.path(), entry.path());
  EXPECT_EQ(remote_.reads(), reads);  // nothing fetched again
  EXPECT_EQ(observer_.hits, 1);
  EXPECT_EQ(observer_.misses, 1);
}

// The limit (1000 bytes) is smaller than two checkpoints (600 each): every new one evicts
// the previous, and the bytes on disk never pass the limit.
TEST_F(CheckpointCacheTest, NeverExceedsTheLimitAcrossASequenceOfCheckpoints) {
  constexpr uint64_t kLimit = 1000;
  auto cache = NewCache(kLimit);
  std::vector<std::string> dirs;
  for (int step = 1; step <= 6; ++step) dirs.push_back(WriteCheckpoint(step));
  for (int round = 0; round < 2; ++round) {
    for (size_t i = 0; i < dirs.size(); ++i) {
      {
        ASSERT_OK_AND_ASSIGN(CacheEntry entry, Fetch(*cache, dirs[i]));
        EXPECT_LE(cache->bytes(), kLimit);
        EXPECT_LE(DiskBytes(cache->dir()), kLimit) << "after fetching " << dirs[i];
        EXPECT_EQ(cache->entry_count(), 1u);
      }
      EXPECT_LE(DiskBytes(cache->dir()), kLimit);
      EXPECT_LE(observer_.last_bytes, kLimit);
    }
  }
  EXPECT_EQ(cache->evictions(), 11u);  // every fetch but the first evicted one
  EXPECT_EQ(observer_.evictions, 11);
}

TEST_F(CheckpointCacheTest, PinnedEntriesAreNeverEvicted) {
  const std::string a = WriteCheckpoint(1);
  const std::string b = WriteCheckpoint(2);
  const std::string c = WriteCheckpoint(3);
  {
    auto cache = NewCache(1000);
    ASSERT_OK_AND_ASSIGN(CacheEntry pinned, Fetch(*cache, a));
    // b cannot fit beside the pinned a.
    EXPECT_THAT(Fetch(*cache, b),
                StatusIs(absl::StatusCode::kResourceExhausted,
                         AllOf(HasSubstr("step_2"), HasSubstr("--cache_bytes"), HasSubstr("in use"))));
    EXPECT_TRUE(fs::exists(pinned.path() + "/model.safetensors"));
    EXPECT_EQ(cache->bytes(), 600u);
  }
  // Room for two: a (older, pinned) survives c; b (unpinned) goes.
  std::filesystem::remove_all(dir_.path() + "/cache");
  auto cache = NewCache(1300);
  ASSERT_OK_AND_ASSIGN(CacheEntry pinned, Fetch(*cache, a));
  ASSERT_OK(Fetch(*cache, b));
  ASSERT_OK_AND_ASSIGN(CacheEntry third, Fetch(*cache, c));
  EXPECT_TRUE(cache->Contains(pinned.key()));
  EXPECT_TRUE(fs::exists(pinned.path() + "/config.json"));
  EXPECT_EQ(cache->Contains(IdentifyCheckpoint(remote_, "test", b)->key), false);
  EXPECT_LE(DiskBytes(cache->dir()), 1300u);
}

TEST_F(CheckpointCacheTest, ACheckpointLargerThanTheLimitIsResourceExhausted) {
  const std::string dir = WriteCheckpoint(1);
  auto cache = NewCache(500);
  EXPECT_THAT(Fetch(*cache, dir),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("step_1"), HasSubstr("600 B"), HasSubstr("more than the whole"),
                             HasSubstr("500 B"),
                             HasSubstr("--cache_bytes"))));
  EXPECT_EQ(remote_.reads(), 0);
  EXPECT_EQ(cache->bytes(), 0u);
  EXPECT_EQ(DiskBytes(cache->dir()), 0u);
}

TEST_F(CheckpointCacheTest, AFailedFetchLeavesNothingAndAShortFileIsDataLoss) {
  const std::string dir = WriteCheckpoint(1);
  auto cache = NewCache(10'000);
  remote_.files.InjectError(FakeFileSystem::Op::kRead, dir + "/sub/extra.bin",
                            absl::NotFoundError("gone"));
  EXPECT_THAT(Fetch(*cache, dir), StatusIs(absl::StatusCode::kNotFound, HasSubstr("sub/extra.bin")));
  EXPECT_EQ(cache->bytes(), 0u);
  EXPECT_EQ(DiskBytes(cache->dir()), 0u);
  remote_.files.ClearErrors();
  // Listed at 600 bytes, then cut short before the copy: DATA_LOSS, nothing kept.
  ASSERT_OK_AND_ASSIGN(const CheckpointIdentity id, IdentifyCheckpoint(remote_, "test", dir));
  remote_.files.Resize(dir + "/model.safetensors", 100);
  EXPECT_THAT(cache->Fetch(remote_, id),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("model.safetensors"), HasSubstr("400 bytes"), HasSubstr("100 bytes"))));
  EXPECT_EQ(cache->entry_count(), 0u);
  EXPECT_EQ(DiskBytes(cache->dir()), 0u);
}

// A crash mid-fetch leaves a folder under tmp/: the next start removes it and never
// serves it; complete entries are kept with their sizes.
TEST_F(CheckpointCacheTest, ACrashesLeftoversAreRemovedAtStartAndNeverServed) {
  const std::string done = WriteCheckpoint(1);
  const std::string half = WriteCheckpoint(2);
  ASSERT_OK_AND_ASSIGN(const CheckpointIdentity half_id, IdentifyCheckpoint(remote_, "test", half));
  {
    auto cache = NewCache(10'000);
    ASSERT_OK(Fetch(*cache, done));
  }
  const std::string leftover = dir_.path() + "/cache/tmp/" + half_id.key + ".1";
  ::steadyeval::testing::WriteFile(leftover + "/config.json", std::string(100, 'c'));
  ::steadyeval::testing::WriteFile(leftover + "/model.safetensors", "partial");

  auto cache = NewCache(10'000);
  EXPECT_FALSE(fs::exists(leftover));
  EXPECT_EQ(cache->entry_count(), 1u);
  EXPECT_EQ(cache->bytes(), 600u);
  const int reads = remote_.reads();
  ASSERT_OK(Fetch(*cache, done));  // kept: a hit
  EXPECT_EQ(remote_.reads(), reads);
  ASSERT_OK_AND_ASSIGN(CacheEntry fetched, Fetch(*cache, half));  // fetched afresh, whole
  EXPECT_GT(remote_.reads(), reads);
  EXPECT_EQ(::steadyeval::testing::ReadFileOrEmpty(fetched.path() + "/model.safetensors"),
            std::string(400, '2'));
}

TEST_F(CheckpointCacheTest, ASecondCacheOnTheSameFolderIsRefused) {
  auto cache = NewCache(10'000);
  CheckpointCacheOptions options;
  options.dir = cache->dir();
  EXPECT_THAT(CheckpointCache::Create(options),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("--cache_dir")));
}

TEST_F(CheckpointCacheTest, FilesAreFetchedAtMostFetchConcurrencyAtOnce) {
  constexpr int kConcurrency = 3;
  constexpr int kFiles = 10;
  const std::string dir = "/bucket/run/step_1";
  for (int i = 0; i < kFiles; ++i) {
    remote_.files.WriteFile(dir + "/shard-" + std::to_string(i), std::string(10, 'x'));  // one read each
  }
  auto cache = NewCache(10'000, kConcurrency);
  remote_.HoldReads();
  absl::StatusOr<CacheEntry> fetched;
  std::thread fetch([&] { fetched = Fetch(*cache, dir); });
  // Let the reads go one by one; each time the pool refills to the bound (fewer at the end).
  bool refilled = true;
  for (int released = 0; released < kFiles && refilled; ++released) {
    const int expect = std::min(kConcurrency, kFiles - released);
    refilled = ::steadyeval::testing::WaitFor([&] { return remote_.in_flight() == expect; },
                                              std::chrono::seconds(10), std::chrono::milliseconds(1));
    EXPECT_TRUE(refilled) << "in flight: " << remote_.in_flight() << ", expected " << expect;
    remote_.Release();
  }
  for (int i = 0; i < kFiles; ++i) remote_.Release();  // whatever is left, so the fetch ends
  fetch.join();
  ASSERT_OK(fetched);
  EXPECT_EQ(remote_.max_in_flight(), kConcurrency);
}

}  // namespace
}  // namespace steadyeval
