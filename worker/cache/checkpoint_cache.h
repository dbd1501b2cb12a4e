// CheckpointCache: the worker's bounded local copy of checkpoints it does not read in place
// (DESIGN §6; issue #18): checkpoints fetched from a bucket (any FileSystem, through its
// CopyToLocalFile: an S3FileSystem streams each object with its client's GetToFile) and converters' outputs
// (converter.h).
//
// Entries are folders keyed by checkpoint identity: a hash of where the checkpoint is (its
// FileSystem's origin and folder) and of every file's relative name, size and version (ETag,
// else mtime), so a rewritten checkpoint is a new entry. A converted entry's key also
// covers the converter's name and command line.
//
// Bytes: the entries on disk plus the space reserved for fetches and conversions in
// progress never exceed options.limit_bytes (--cache_bytes). Room is made by evicting the
// least recently used entries that no CacheEntry pins; an entry that cannot fit even then
// fails with RESOURCE_EXHAUSTED naming the sizes and --cache_bytes. A fetch reserves the
// checkpoint's listed size before it starts. A conversion reserves its source's size and
// grows the reservation as its output is measured while it runs (every poll of
// ConverterRunOptions); output that cannot fit stops the converter with RESOURCE_EXHAUSTED,
// so the converter can overshoot only by what it writes between two polls.
//
// Crash safety: an entry is written under <dir>/tmp/ and renamed into <dir>/entries/<key>
// only once complete: every file's size checked against the listing (DATA_LOSS on a
// mismatch) and synced. Create() removes whatever is left in <dir>/tmp/ and takes the
// complete entries found in <dir>/entries/ with their sizes (least recently used first by
// their folders' mtimes, which every use touches). <dir>/lock (flock) keeps a second
// process from using the same folder.
//
// Thread-safe. Two callers asking for the same entry at once share one fetch or conversion.
// Every CacheEntry must be destroyed before the cache.
#ifndef STEADYEVAL_WORKER_CACHE_CHECKPOINT_CACHE_H_
#define STEADYEVAL_WORKER_CACHE_CHECKPOINT_CACHE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/file_system.h"
#include "worker/cache/converter.h"

namespace steadyeval {

inline constexpr uint64_t kDefaultCacheBytes = 100ull << 30;  // 100G
inline constexpr int kDefaultFetchConcurrency = 4;

// "123", "64K", "100G", "2T" (binary: K = 1024); lowercase accepted. INVALID_ARGUMENT
// otherwise (or on overflow), naming `flag`.
absl::StatusOr<uint64_t> ParseByteSize(const std::string& text, const std::string& flag);
// "1.5 GiB", "512 B", for messages.
std::string FormatBytes(uint64_t bytes);

// --cache_dir's default: $XDG_CACHE_HOME/steadyeval, else $HOME/.cache/steadyeval.
// NOT_FOUND when neither variable is set (then --cache_dir must be given).
absl::StatusOr<std::string> DefaultCacheDir(const std::function<const char*(const char*)>& getenv_fn);

// One file of a checkpoint folder, as its FileSystem lists it.
struct CheckpointFile {
  std::string name;     // relative to the folder, '/'-separated ("sub/x.bin")
  uint64_t size = 0;
  std::string version;  // "etag:<ETag>", or "mtime:<nanoseconds>" where there is no ETag
};

// What a checkpoint folder holds, and the cache key that follows from it.
struct CheckpointIdentity {
  std::string origin;  // where `dir` is looked up: "local", "s3 http://127.0.0.1:9000"
  std::string dir;     // the folder in its FileSystem's namespace
  std::vector<CheckpointFile> files;  // sorted by name
  uint64_t bytes = 0;                 // all files together
  std::string key;                    // lowercase hex SHA-256 of all of the above
};

// Lists the checkpoint folder `dir` of `fs` as discovery does: its regular files and those
// of its immediate subfolders. NOT_FOUND (naming the folder) when it does not exist or
// holds no file; the FileSystem's errors otherwise.
absl::StatusOr<CheckpointIdentity> IdentifyCheckpoint(FileSystem& fs, const std::string& origin,
                                                      const std::string& dir);

// The key of `checkpoint` converted by `converter`.
std::string ConvertedKey(const CheckpointIdentity& checkpoint, const ConverterSpec& converter);

// Sees the cache's events, for metrics. Implementations are thread-safe.
class CacheObserver {
 public:
  virtual ~CacheObserver() = default;
  // The bytes in use (entries plus reservations) changed, or the limit was set.
  virtual void OnCacheBytes(uint64_t /*bytes*/, uint64_t /*limit_bytes*/) {}
  virtual void OnHit() {}
  virtual void OnMiss() {}
  virtual void OnEviction(uint64_t /*bytes*/) {}
  // A file of `bytes` was fetched into the cache.
  virtual void OnFetched(uint64_t /*bytes*/) {}
  // A conversion ended: "ok", "failed" or "timeout".
  virtual void OnConversion(const char* /*result*/) {}
};

class CheckpointCache;

// A pinned complete entry: never evicted while this lives. Move-only; destroying it (or
// moving another into it) unpins. Not thread-safe itself (the cache is).
class CacheEntry {
 public:
  CacheEntry() = default;
  CacheEntry(CacheEntry&& other) noexcept { *this = std::move(other); }
  CacheEntry& operator=(CacheEntry&& other) noexcept;
  CacheEntry(const CacheEntry&) = delete;
  CacheEntry& operator=(const CacheEntry&) = delete;
  ~CacheEntry() { Release(); }

  const std::string& path() const { return path_; }  // the entry's folder
  const std::string& key() const { return key_; }
  uint64_t bytes() const { return bytes_; }

 private:
  friend class CheckpointCache;
  CacheEntry(CheckpointCache* cache, std::string key, std::string path, uint64_t bytes)
      : cache_(cache), key_(std::move(key)), path_(std::move(path)), bytes_(bytes) {}
  void Release();

  CheckpointCache* cache_ = nullptr;
  std::string key_;
  std::string path_;
  uint64_t bytes_ = 0;
};

struct CheckpointCacheOptions {
  std::string dir;                        // --cache_dir
  uint64_t limit_bytes = kDefaultCacheBytes;  // --cache_bytes
  int fetch_concurrency = kDefaultFetchConcurrency;  // files copied at once per fetch
  uint64_t chunk_bytes = 8ull << 20;      // ReadRange size of a generic FileSystem's copy
  CacheObserver* observer = nullptr;      // not owned; may be null
};

class CheckpointCache {
 public:
  // Returns true when the work in progress must stop (the job's lease is gone).
  using CancelFn = std::function<bool()>;

  // Creates <dir> (and its parents) if needed, locks it and re-scans it (see the file
  // comment). FAILED_PRECONDITION naming the folder when it cannot be created, written or
  // locked (another worker uses it: give each its own --cache_dir); INVALID_ARGUMENT for a
  // zero limit or concurrency.
  static absl::StatusOr<std::unique_ptr<CheckpointCache>> Create(CheckpointCacheOptions options);
  ~CheckpointCache();

  // The entry of `checkpoint` (identified on `fs`), fetched through `fs` unless cached.
  // RESOURCE_EXHAUSTED when it cannot fit; DATA_LOSS when a file's fetched size differs
  // from the listed one; CANCELLED when `cancelled` said so (checked between chunks and
  // files); the FileSystem's errors (NOT_FOUND: a file is gone) annotated with the file.
  // Nothing of a failed fetch stays behind.
  absl::StatusOr<CacheEntry> Fetch(FileSystem& fs, const CheckpointIdentity& checkpoint,
                                   const CancelFn& cancelled = {});

  // The folder a conversion reads, and the pin that keeps it there while it runs.
  struct ConvertSource {
    std::string dir;
    std::optional<CacheEntry> pin;
  };
  // The entry of `checkpoint` converted by `converter` unless cached: then `source` is
  // called (e.g. Fetch) for the folder to convert, and the converter runs into a fresh
  // temporary folder with `run` (its `check` is set here: cancellation and the byte
  // limit). The output must hold config.json and no symbolic links (FAILED_PRECONDITION
  // otherwise, quoting the converter's output). RunConverter's errors otherwise;
  // RESOURCE_EXHAUSTED when the output cannot fit.
  absl::StatusOr<CacheEntry> Convert(const CheckpointIdentity& checkpoint,
                                     const ConverterSpec& converter, ConverterRunOptions run,
                                     const std::function<absl::StatusOr<ConvertSource>()>& source,
                                     const CancelFn& cancelled = {});

  // Whether a complete entry `key` is cached (it may be evicted right after).
  bool Contains(const std::string& key) const;
  // Entries plus reservations, in bytes; never above limit_bytes().
  uint64_t bytes() const;
  uint64_t limit_bytes() const { return options_.limit_bytes; }
  size_t entry_count() const;
  uint64_t evictions() const;
  const std::string& dir() const { return options_.dir; }

 private:
  friend class CacheEntry;
  struct Entry {
    uint64_t bytes = 0;
    int pins = 0;
    uint64_t last_use = 0;  // use_counter_ when last pinned; smallest evicted first
  };

  explicit CheckpointCache(CheckpointCacheOptions options) : options_(std::move(options)) {}
  absl::Status Open();
  std::string EntryPath(const std::string& key) const;
  // A new empty folder under <dir>/tmp/.
  absl::StatusOr<std::string> NewTempDir(const std::string& key);

  // Waits while `key` is being made by another caller; then pins it (a hit) or claims it
  // (nullopt: the caller makes it and ends with Commit or Abandon).
  std::optional<CacheEntry> PinOrClaim(const std::string& key) ABSL_LOCKS_EXCLUDED(mu_);
  // Makes room for `bytes` more by evicting unpinned entries, least recently used first,
  // and reserves them. RESOURCE_EXHAUSTED describing `what` when they cannot fit.
  absl::Status Reserve(uint64_t bytes, const std::string& what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves the finished `tmp` folder (`bytes`, of the `reserved` bytes) into place as `key`,
  // pinned.
  absl::StatusOr<CacheEntry> Commit(const std::string& key, const std::string& tmp,
                                    uint64_t reserved, uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  // Drops the claim on `key`, its `reserved` bytes and the folder `tmp` (if any).
  void Abandon(const std::string& key, const std::string& tmp, uint64_t reserved)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Unpin(const std::string& key) ABSL_LOCKS_EXCLUDED(mu_);
  void Evict(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReportBytes() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Copies one file of `checkpoint` into `tmp`.
  absl::Status CopyFile(FileSystem& fs, const CheckpointIdentity& checkpoint,
                        const CheckpointFile& file, const std::string& tmp,
                        const CancelFn& cancelled);

  const CheckpointCacheOptions options_;
  int lock_fd_ = -1;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);  // complete entries
  std::set<std::string> in_progress_ ABSL_GUARDED_BY(mu_);     // claimed keys being made
  uint64_t entry_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reserved_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t use_counter_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t evictions_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t temp_counter_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_CACHE_CHECKPOINT_CACHE_H_
