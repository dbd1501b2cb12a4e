#include "worker/cache/checkpoint_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/sha256.h"
#include "common/status.h"

namespace steadyeval {

namespace fs = std::filesystem;

namespace {

void Log(const std::string& line) { fprintf(stderr, "steadyeval-worker: cache: %s\n", line.c_str()); }

std::string ErrnoText() { return strerror(errno); }

bool IsKey(const std::string& name) {
  if (name.size() != 64) return false;
  for (char c : name) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// The bytes of the regular files below `dir` (links not followed).
uint64_t FolderBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code stat_ec;
    if (it->is_regular_file(stat_ec) && !it->is_symlink(stat_ec)) {
      const uintmax_t size = it->file_size(stat_ec);
      if (!stat_ec) total += size;
    }
  }
  return total;
}

// fsync of a file or a folder; best effort on folders (some file systems refuse).
absl::Status SyncPath(const std::string& path, bool is_dir) {
  const int fd = open(path.c_str(), (is_dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot open ", path, ": ", ErrnoText()));
  const int rc = fsync(fd);
  const std::string why = rc != 0 ? ErrnoText() : "";
  close(fd);
  if (rc != 0 && !is_dir) return absl::UnavailableError(absl::StrCat("fsync ", path, ": ", why));
  return absl::OkStatus();
}

std::string Describe(const CheckpointIdentity& checkpoint) {
  return absl::StrCat("checkpoint ", checkpoint.dir, " (", checkpoint.files.size(), " files, ",
                      FormatBytes(checkpoint.bytes), ")");
}

absl::Status AddFiles(FileSystem& fs, const std::string& dir, const std::string& prefix,
                      bool descend, std::vector<CheckpointFile>& files) {
  ASSIGN_OR_RETURN(const std::vector<DirEntry> entries, fs.List(dir));
  for (const DirEntry& e : entries) {
    if (e.stat.kind == FileKind::kRegular) {
      const std::string version = e.stat.etag.empty()
                                      ? absl::StrCat("mtime:", e.stat.mtime_nanos)
                                      : absl::StrCat("etag:", e.stat.etag);
      files.push_back({absl::StrCat(prefix, e.name), e.stat.size, version});
    } else if (e.stat.kind == FileKind::kDirectory && descend) {
      absl::Status listed = AddFiles(fs, JoinPath(dir, e.name), absl::StrCat(prefix, e.name, "/"),
                                     /*descend=*/false, files);
      if (!listed.ok() && !absl::IsNotFound(listed)) return listed;  // gone meanwhile: skipped
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<uint64_t> ParseByteSize(const std::string& text, const std::string& flag) {
  std::string digits = text;
  uint64_t scale = 1;
  if (!digits.empty() && !absl::ascii_isdigit(static_cast<unsigned char>(digits.back()))) {
    switch (absl::ascii_toupper(static_cast<unsigned char>(digits.back()))) {
      case 'K': scale = 1ull << 10; break;
      case 'M': scale = 1ull << 20; break;
      case 'G': scale = 1ull << 30; break;
      case 'T': scale = 1ull << 40; break;
      default: scale = 0;
    }
    digits.pop_back();
  }
  uint64_t value = 0;
  if (scale == 0 || digits.empty() || !absl::SimpleAtoi(digits, &value) || digits[0] == '-' ||
      digits[0] == '+' || value > UINT64_MAX / scale) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " '", text, "': expected a byte count, optionally with a K, M, G or T suffix "
        "(powers of 1024), e.g. 500G"));
  }
  return value * scale;
}

std::string FormatBytes(uint64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s (%d bytes)", value, kUnits[unit], bytes);
}

absl::StatusOr<std::string> DefaultCacheDir(const std::function<const char*(const char*)>& getenv_fn) {
  const char* xdg = getenv_fn("XDG_CACHE_HOME");
  if (xdg != nullptr && xdg[0] == '/') return JoinPath(xdg, "steadyeval");
  const char* home = getenv_fn("HOME");
  if (home != nullptr && home[0] == '/') return JoinPath(JoinPath(home, ".cache"), "steadyeval");
  return absl::NotFoundError(
      "neither XDG_CACHE_HOME nor HOME is set to an absolute path, so the checkpoint cache has "
      "no default folder: give one with --cache_dir DIR");
}

absl::StatusOr<CheckpointIdentity> IdentifyCheckpoint(FileSystem& fs, const std::string& origin,
                                                      const std::string& dir) {
  CheckpointIdentity id;
  id.origin = origin;
  id.dir = dir;
  RETURN_IF_ERROR(Annotate(AddFiles(fs, dir, "", /*descend=*/true, id.files),
                           absl::StrCat("listing checkpoint ", dir)));
  if (id.files.empty()) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", dir, " holds no files (deleted?)"));
  }
  std::sort(id.files.begin(), id.files.end(),
            [](const CheckpointFile& a, const CheckpointFile& b) { return a.name < b.name; });
  // Length-prefixed fields: no name can make two listings hash alike.
  std::string text = absl::StrCat("steadyeval checkpoint v1\n", origin.size(), ":", origin,
                                  dir.size(), ":", dir, "\n");
  for (const CheckpointFile& f : id.files) {
    id.bytes += f.size;
    absl::StrAppend(&text, f.name.size(), ":", f.name, f.size, ";", f.version.size(), ":",
                    f.version, "\n");
  }
  id.key = Sha256Hex(text);
  return id;
}

std::string ConvertedKey(const CheckpointIdentity& checkpoint, const ConverterSpec& converter) {
  return Sha256Hex(absl::StrCat("steadyeval converted v1\n", checkpoint.key, "\n",
                                converter.name.size(), ":", converter.name,
                                converter.command_line.size(), ":", converter.command_line));
}

CacheEntry& CacheEntry::operator=(CacheEntry&& other) noexcept {
  if (this != &other) {
    Release();
    cache_ = other.cache_;
    key_ = std::move(other.key_);
    path_ = std::move(other.path_);
    bytes_ = other.bytes_;
    other.cache_ = nullptr;
  }
  return *this;
}

void CacheEntry::Release() {
  if (cache_ != nullptr) cache_->Unpin(key_);
  cache_ = nullptr;
}

absl::StatusOr<std::unique_ptr<CheckpointCache>> CheckpointCache::Create(CheckpointCacheOptions options) {
  if (options.limit_bytes == 0 || options.fetch_concurrency < 1 || options.chunk_bytes == 0) {
    return absl::InvalidArgumentError(
        "checkpoint cache: --cache_bytes and --fetch_concurrency must be at least 1");
  }
  if (options.dir.empty()) {
    return absl::InvalidArgumentError(
        "checkpoint cache: no folder (neither XDG_CACHE_HOME nor HOME is set): start the "
        "worker with --cache_dir DIR");
  }
  std::unique_ptr<CheckpointCache> cache(new CheckpointCache(std::move(options)));
  RETURN_IF_ERROR(cache->Open());
  return cache;
}

CheckpointCache::~CheckpointCache() {
  if (lock_fd_ >= 0) close(lock_fd_);
}

std::string CheckpointCache::EntryPath(const std::string& key) const {
  return JoinPath(JoinPath(options_.dir, "entries"), key);
}

absl::Status CheckpointCache::Open() {
  const std::string& dir = options_.dir;
  std::error_code ec;
  fs::create_directories(JoinPath(dir, "entries"), ec);
  if (!ec) fs::create_directories(JoinPath(dir, "tmp"), ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint cache: cannot create ", dir, ": ", ec.message(), " (choose another --cache_dir)"));
  }
  const std::string lock_path = JoinPath(dir, "lock");
  lock_fd_ = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint cache: cannot open ", lock_path, ": ", ErrnoText(), " (choose another --cache_dir)"));
  }
  if (flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint cache: ", dir, " is in use by another process (", lock_path,
        " is locked); give each worker its own --cache_dir"));
  }
  // Leftovers of fetches and conversions that never finished: never entries.
  for (const auto& leftover : fs::directory_iterator(JoinPath(dir, "tmp"), ec)) {
    std::error_code rm_ec;
    fs::remove_all(leftover.path(), rm_ec);
    Log(absl::StrCat("removed unfinished ", leftover.path().string(),
                     rm_ec ? absl::StrCat(" (failed: ", rm_ec.message(), ")") : ""));
  }
  // Complete entries, least recently used first.
  std::vector<std::pair<fs::file_time_type, std::string>> found;
  for (const auto& entry : fs::directory_iterator(JoinPath(dir, "entries"), ec)) {
    const std::string name = entry.path().filename().string();
    std::error_code kind_ec;
    if (!IsKey(name) || !entry.is_directory(kind_ec) || entry.is_symlink(kind_ec)) {
      Log(absl::StrCat("ignoring ", entry.path().string(), " (not a cache entry)"));
      continue;
    }
    found.emplace_back(fs::last_write_time(entry.path(), kind_ec), name);
  }
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat("checkpoint cache: cannot list ", dir, ": ",
                                                      ec.message()));
  }
  std::sort(found.begin(), found.end());
  absl::MutexLock lock(&mu_);
  for (const auto& [mtime, key] : found) {
    Entry& e = entries_[key];
    e.bytes = FolderBytes(EntryPath(key));
    e.last_use = ++use_counter_;
    entry_bytes_ += e.bytes;
  }
  // A lower --cache_bytes than last time: evict down to it.
  while (entry_bytes_ > options_.limit_bytes) {
    auto lru = std::min_element(entries_.begin(), entries_.end(), [](const auto& a, const auto& b) {
      return a.second.last_use < b.second.last_use;
    });
    Evict(lru->first);
  }
  Log(absl::StrCat(dir, ": ", entries_.size(), " entries, ", FormatBytes(entry_bytes_), " of ",
                   FormatBytes(options_.limit_bytes), " (--cache_bytes)"));
  ReportBytes();
  return absl::OkStatus();
}

absl::StatusOr<std::string> CheckpointCache::NewTempDir(const std::string& key) {
  uint64_t n = 0;
  {
    absl::MutexLock lock(&mu_);
    n = ++temp_counter_;
  }
  const std::string path = JoinPath(JoinPath(options_.dir, "tmp"), absl::StrCat(key, ".", n));
  std::error_code ec;
  fs::remove_all(path, ec);
  if (!fs::create_directory(path, ec) || ec) {
    return absl::UnavailableError(absl::StrCat("checkpoint cache: cannot create ", path, ": ",
                                               ec ? ec.message() : "exists"));
  }
  return path;
}

std::optional<CacheEntry> CheckpointCache::PinOrClaim(const std::string& key) {
  absl::MutexLock lock(&mu_);
  struct Args {
    const std::set<std::string>* in_progress;
    const std::string* key;
  } args{&in_progress_, &key};
  mu_.Await(absl::Condition(+[](Args* a) { return a->in_progress->count(*a->key) == 0; }, &args));
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    ++it->second.pins;
    it->second.last_use = ++use_counter_;
    const std::string path = EntryPath(key);
    utimensat(AT_FDCWD, path.c_str(), nullptr, 0);  // the order the next start sees
    if (options_.observer != nullptr) options_.observer->OnHit();
    return CacheEntry(this, key, path, it->second.bytes);
  }
  in_progress_.insert(key);
  if (options_.observer != nullptr) options_.observer->OnMiss();
  return std::nullopt;
}

absl::Status CheckpointCache::Reserve(uint64_t bytes, const std::string& what) {
  const uint64_t limit = options_.limit_bytes;
  if (bytes > limit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, " needs ", FormatBytes(bytes), ", more than the whole checkpoint cache (",
        FormatBytes(limit), ", --cache_bytes); raise --cache_bytes"));
  }
  while (entry_bytes_ + reserved_bytes_ + bytes > limit) {
    auto victim = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->second.pins == 0 && (victim == entries_.end() || it->second.last_use < victim->second.last_use)) {
        victim = it;
      }
    }
    if (victim == entries_.end()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          what, " needs ", FormatBytes(bytes), ", but of the checkpoint cache's ",
          FormatBytes(limit), " (--cache_bytes) ", FormatBytes(entry_bytes_),
          " are held by entries in use and ", FormatBytes(reserved_bytes_),
          " by fetches and conversions in progress; raise --cache_bytes (an averaging window "
          "needs all its members at once)"));
    }
    Evict(victim->first);
  }
  reserved_bytes_ += bytes;
  ReportBytes();
  return absl::OkStatus();
}

void CheckpointCache::Evict(const std::string& key) {
  auto it = entries_.find(key);
  const uint64_t bytes = it->second.bytes;
  // Renamed out of entries/ first, so a crash while deleting leaves no partial entry.
  const std::string path = EntryPath(key);
  const std::string doomed =
      JoinPath(JoinPath(options_.dir, "tmp"), absl::StrCat(key, ".evicted.", ++temp_counter_));
  std::error_code ec;
  fs::rename(path, doomed, ec);
  fs::remove_all(ec ? path : doomed, ec);
  if (ec) Log(absl::StrCat("evicting ", path, ": ", ec.message()));
  entry_bytes_ -= bytes;
  entries_.erase(it);
  ++evictions_;
  if (options_.observer != nullptr) options_.observer->OnEviction(bytes);
  ReportBytes();
}

absl::StatusOr<CacheEntry> CheckpointCache::Commit(const std::string& key, const std::string& tmp,
                                                   uint64_t reserved, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  const std::string path = EntryPath(key);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  reserved_bytes_ -= reserved;
  in_progress_.erase(key);
  if (ec) {
    fs::remove_all(tmp, ec);
    ReportBytes();
    return absl::UnavailableError(absl::StrCat("checkpoint cache: cannot move ", tmp, " to ", path,
                                               ": ", ec.message()));
  }
  (void)SyncPath(JoinPath(options_.dir, "entries"), /*is_dir=*/true);
  Entry& e = entries_[key];
  e.bytes = bytes;
  e.pins = 1;
  e.last_use = ++use_counter_;
  entry_bytes_ += bytes;
  ReportBytes();
  return CacheEntry(this, key, path, bytes);
}

void CheckpointCache::Abandon(const std::string& key, const std::string& tmp, uint64_t reserved) {
  if (!tmp.empty()) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
  }
  absl::MutexLock lock(&mu_);
  reserved_bytes_ -= reserved;
  in_progress_.erase(key);
  ReportBytes();
}

void CheckpointCache::Unpin(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(key);
  if (it != entries_.end() && it->second.pins > 0) --it->second.pins;
}

void CheckpointCache::ReportBytes() {
  if (options_.observer != nullptr) {
    options_.observer->OnCacheBytes(entry_bytes_ + reserved_bytes_, options_.limit_bytes);
  }
}

bool CheckpointCache::Contains(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  return entries_.count(key) > 0;
}

uint64_t CheckpointCache::bytes() const {
  absl::MutexLock lock(&mu_);
  return entry_bytes_ + reserved_bytes_;
}

size_t CheckpointCache::entry_count() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

uint64_t CheckpointCache::evictions() const {
  absl::MutexLock lock(&mu_);
  return evictions_;
}

absl::Status CheckpointCache::CopyFile(FileSystem& fs, const CheckpointIdentity& checkpoint,
                                       const CheckpointFile& file, const std::string& tmp,
                                       const CancelFn& cancelled) {
  const std::string source = JoinPath(checkpoint.dir, file.name);
  const std::string target = JoinPath(tmp, file.name);
  const std::string what = absl::StrCat("fetching ", source);
  LocalCopyOptions copy;
  copy.chunk_bytes = options_.chunk_bytes;
  copy.before_chunk = [&]() -> absl::Status {
    if (cancelled && cancelled()) return absl::CancelledError(absl::StrCat(what, ": cancelled"));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(Annotate(fs.CopyToLocalFile(source, target, file.size, copy), what));
  if (options_.observer != nullptr) options_.observer->OnFetched(file.size);
  return absl::OkStatus();
}

absl::StatusOr<CacheEntry> CheckpointCache::Fetch(FileSystem& fs, const CheckpointIdentity& checkpoint,
                                                  const CancelFn& cancelled) {
  if (std::optional<CacheEntry> hit = PinOrClaim(checkpoint.key)) return std::move(*hit);
  {
    absl::MutexLock lock(&mu_);
    absl::Status reserved = Reserve(checkpoint.bytes, Describe(checkpoint));
    if (!reserved.ok()) {
      in_progress_.erase(checkpoint.key);
      return reserved;
    }
  }
  absl::StatusOr<std::string> tmp = NewTempDir(checkpoint.key);
  if (!tmp.ok()) {
    Abandon(checkpoint.key, "", checkpoint.bytes);
    return tmp.status();
  }
  absl::Status fetched = [&]() -> absl::Status {
    std::set<std::string> subfolders;
    for (const CheckpointFile& f : checkpoint.files) {
      const size_t slash = f.name.rfind('/');
      if (slash != std::string::npos) subfolders.insert(f.name.substr(0, slash));
    }
    for (const std::string& sub : subfolders) {
      std::error_code ec;
      fs::create_directories(JoinPath(*tmp, sub), ec);
      if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", JoinPath(*tmp, sub), ": ", ec.message()));
    }
    // Files copied at once: at most fetch_concurrency, each thread taking the next file.
    const size_t threads = std::min<size_t>(options_.fetch_concurrency, checkpoint.files.size());
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    std::vector<absl::Status> results(checkpoint.files.size());
    auto copy_files = [&] {
      for (size_t i = next++; i < checkpoint.files.size() && !failed; i = next++) {
        results[i] = CopyFile(fs, checkpoint, checkpoint.files[i], *tmp, cancelled);
        if (!results[i].ok()) failed = true;
      }
    };
    std::vector<std::thread> pool;
    for (size_t t = 1; t < threads; ++t) pool.emplace_back(copy_files);
    copy_files();
    for (std::thread& t : pool) t.join();
    for (const absl::Status& s : results) RETURN_IF_ERROR(s);
    for (const std::string& sub : subfolders) (void)SyncPath(JoinPath(*tmp, sub), /*is_dir=*/true);
    (void)SyncPath(*tmp, /*is_dir=*/true);
    return absl::OkStatus();
  }();
  if (!fetched.ok()) {
    Abandon(checkpoint.key, *tmp, checkpoint.bytes);
    return fetched;
  }
  return Commit(checkpoint.key, *tmp, checkpoint.bytes, checkpoint.bytes);
}

absl::StatusOr<CacheEntry> CheckpointCache::Convert(
    const CheckpointIdentity& checkpoint, const ConverterSpec& converter, ConverterRunOptions run,
    const std::function<absl::StatusOr<ConvertSource>()>& source, const CancelFn& cancelled) {
  const std::string key = ConvertedKey(checkpoint, converter);
  if (std::optional<CacheEntry> hit = PinOrClaim(key)) return std::move(*hit);
  const std::string what = absl::StrCat("the output of converter '", converter.name, "' for ",
                                        Describe(checkpoint));
  uint64_t reserved = 0;
  std::string tmp;
  auto fail = [&](absl::Status why) {
    Abandon(key, tmp, reserved);
    return why;
  };
  // The source first (it may be fetched), then room for the output: its size is guessed
  // as the source's until measured.
  absl::StatusOr<ConvertSource> src = source();
  if (!src.ok()) return fail(src.status());
  {
    absl::MutexLock lock(&mu_);
    absl::Status s = Reserve(checkpoint.bytes, what);
    if (!s.ok()) return fail(s);
    reserved = checkpoint.bytes;
  }
  absl::StatusOr<std::string> made = NewTempDir(key);
  if (!made.ok()) return fail(made.status());
  tmp = *made;
  // Grows (or shrinks) the reservation to the output's size; RESOURCE_EXHAUSTED when it
  // cannot grow.
  auto fit_to = [&](uint64_t bytes) -> absl::Status {
    absl::MutexLock lock(&mu_);
    if (bytes > reserved) {
      RETURN_IF_ERROR(Reserve(bytes - reserved, what));
    } else {
      reserved_bytes_ -= reserved - bytes;
      ReportBytes();
    }
    reserved = bytes;
    return absl::OkStatus();
  };
  run.check = [&]() -> absl::Status {
    if (cancelled && cancelled()) return absl::CancelledError("the job was cancelled");
    const uint64_t bytes = FolderBytes(tmp);
    return bytes > reserved ? fit_to(bytes) : absl::OkStatus();
  };
  absl::Status ran = RunConverter(converter, src->dir, tmp, run);
  if (options_.observer != nullptr) {
    options_.observer->OnConversion(ran.ok() ? "ok" : absl::IsDeadlineExceeded(ran) ? "timeout" : "failed");
  }
  if (!ran.ok()) return fail(ran);
  src->pin.reset();  // the source may go now
  // The output: a Hugging Face folder of real files.
  std::error_code ec;
  if (!fs::is_regular_file(JoinPath(tmp, "config.json"), ec)) {
    return fail(absl::FailedPreconditionError(absl::StrCat(
        "converter '", converter.name, "' exited 0 but wrote no config.json into its output folder "
        "for ", checkpoint.dir, ": it must write a Hugging Face layout folder (config.json, "
        "*.safetensors, tokenizer files) into {dst}")));
  }
  // One walk: no symbolic links, and the bytes of the files (as FolderBytes counts them).
  uint64_t bytes = 0;
  for (fs::recursive_directory_iterator it(tmp, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code stat_ec;
    if (it->is_symlink(stat_ec)) {
      return fail(absl::FailedPreconditionError(absl::StrCat(
          "converter '", converter.name, "' wrote a symbolic link (",
          fs::relative(it->path(), tmp).string(), ") into its output for ", checkpoint.dir,
          ": write real files (the source may be evicted from the cache)")));
    }
    if (it->is_regular_file(stat_ec)) {
      const uintmax_t size = it->file_size(stat_ec);
      if (!stat_ec) bytes += size;
    }
  }
  absl::Status fits = fit_to(bytes);
  if (!fits.ok()) return fail(fits);
  for (fs::recursive_directory_iterator it(tmp, ec), end; !ec && it != end; it.increment(ec)) {
    (void)SyncPath(it->path().string(), it->is_directory());
  }
  (void)SyncPath(tmp, /*is_dir=*/true);
  return Commit(key, tmp, reserved, bytes);
}

}  // namespace steadyeval
