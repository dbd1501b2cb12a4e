#include "common/file_system.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace steadyeval {
namespace {

// An errno as a status whose code says what the caller should do next, naming the
// operation and the path: "cannot open /x/y: No such file or directory".
absl::Status ErrnoStatus(int err, absl::string_view operation, absl::string_view path) {
  std::string message = absl::StrCat("cannot ", operation, " ", path, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case ENOTDIR:
    case EISDIR:
      return absl::FailedPreconditionError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    default:
      return absl::UnavailableError(message);
  }
}

absl::Status WriteAll(int fd, absl::string_view bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::UnavailableError(absl::StrCat("writing ", path, ": ", std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

FileStat StatOf(const struct stat& st) {
  FileStat out;
  out.kind = S_ISREG(st.st_mode)   ? FileKind::kRegular
             : S_ISDIR(st.st_mode) ? FileKind::kDirectory
                                   : FileKind::kOther;
  out.size = static_cast<uint64_t>(st.st_size);
  out.mtime_nanos = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  return out;
}

// A descriptor closed when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Opens `path` for reading and checks on the descriptor that it is a regular file.
// O_NONBLOCK: opening a FIFO must not wait for a writer before fstat can refuse it.
absl::StatusOr<Fd> OpenRegular(const std::string& path, struct stat& st) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) return ErrnoStatus(errno, "open", path);
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "stat", path);
  if (S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is a folder, not a file"));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file"));
  }
  return fd;
}

// Reads `length` bytes at `offset` into `out`; fewer when the file ends first. Returns the
// number read.
absl::StatusOr<uint64_t> PreadFully(int fd, const std::string& path, uint64_t offset,
                                    uint64_t length, char* out) {
  uint64_t got = 0;
  while (got < length) {
    const ssize_t n = ::pread(fd, out + got, length - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "read", path);
    }
    if (n == 0) break;  // end of file (it shrank since fstat)
    got += static_cast<uint64_t>(n);
  }
  return got;
}

class BytesMapping : public MappedFile {
 public:
  // `bytes` is moved into a heap string first, so data() stays put.
  explicit BytesMapping(std::unique_ptr<std::string> bytes)
      : MappedFile(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()),
        bytes_(std::move(bytes)) {}

 private:
  const std::unique_ptr<std::string> bytes_;
};

class PosixMapping : public MappedFile {
 public:
  PosixMapping(void* base, uint64_t size)
      : MappedFile(static_cast<const uint8_t*>(base), size), base_(base) {}
  ~PosixMapping() override { ::munmap(base_, size()); }

  void DropPages(uint64_t offset, uint64_t length) const override {
    static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    if (offset >= size()) return;
    length = std::min(length, size() - offset);
    // Whole pages only, rounded outwards; the last page of the mapping may be partial.
    const uint64_t begin = offset / page * page;
    const uint64_t end = std::min((offset + length + page - 1) / page * page,
                                  (size() + page - 1) / page * page);
    if (end <= begin) return;
    // Clean private file pages: dropping them loses nothing; a later read re-faults them.
    ::madvise(static_cast<char*>(base_) + begin, end - begin, MADV_DONTNEED);
  }

 private:
  void* const base_;
};

}  // namespace

std::unique_ptr<MappedFile> MappedFile::FromBytes(std::string bytes) {
  return std::make_unique<BytesMapping>(std::make_unique<std::string>(std::move(bytes)));
}

FileSystem* FileSystem::Local() {
  static LocalFileSystem* local = new LocalFileSystem;
  return local;
}

absl::Status FileSystem::CopyToLocalFile(const std::string& path, const std::string& local_path,
                                         uint64_t expected_size,
                                         const LocalCopyOptions& options) {
  const int fd = ::open(local_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", local_path, ": ", std::strerror(errno)));
  }
  uint64_t offset = 0;
  absl::Status copied = [&]() -> absl::Status {
    while (offset < expected_size) {
      if (options.before_chunk) {
        if (absl::Status go_on = options.before_chunk(); !go_on.ok()) return go_on;
      }
      const uint64_t want = std::min(options.chunk_bytes, expected_size - offset);
      absl::StatusOr<std::string> chunk = ReadRange(path, offset, want);
      if (!chunk.ok()) return chunk.status();
      if (chunk->empty()) break;  // shorter than listed: reported below
      RETURN_IF_ERROR(WriteAll(fd, *chunk, local_path));
      offset += chunk->size();
    }
    if (offset != expected_size) {
      return absl::DataLossError(absl::StrCat(
          "listed as ", expected_size, " bytes but ", offset,
          " bytes arrived (rewritten or cut short while being fetched?)"));
    }
    if (::fsync(fd) != 0) {
      return absl::UnavailableError(absl::StrCat("fsync ", local_path, ": ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }();
  ::close(fd);
  return copied;
}

std::string JoinPath(absl::string_view dir, absl::string_view name) {
  if (!dir.empty() && dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

absl::StatusOr<std::vector<DirEntry>> LocalFileSystem::List(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "list", dir);
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    absl::string_view name(e->d_name);
    if (name != "." && name != "..") names.emplace_back(name);
    errno = 0;
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) return ErrnoStatus(err, "list", dir);

  std::sort(names.begin(), names.end());
  std::vector<DirEntry> entries;
  entries.reserve(names.size());
  for (std::string& name : names) {
    struct stat st;
    // Follows links; entries that vanished meanwhile and dangling links are left out.
    if (::stat(JoinPath(dir, name).c_str(), &st) != 0) continue;
    entries.push_back({std::move(name), StatOf(st)});
  }
  return entries;
}

absl::StatusOr<FileStat> LocalFileSystem::Stat(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat", path);
  return StatOf(st);
}

absl::StatusOr<std::string> LocalFileSystem::ReadRange(const std::string& path, uint64_t offset,
                                                       uint64_t length) {
  struct stat st;
  absl::StatusOr<Fd> fd = OpenRegular(path, st);
  if (!fd.ok()) return fd.status();
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (offset >= size) return std::string();
  std::string out(std::min(length, size - offset), '\0');
  absl::StatusOr<uint64_t> got = PreadFully(fd->get(), path, offset, out.size(), out.data());
  if (!got.ok()) return got.status();
  out.resize(*got);
  return out;
}

absl::StatusOr<std::string> LocalFileSystem::ReadFile(const std::string& path,
                                                      uint64_t max_bytes) {
  struct stat st;
  absl::StatusOr<Fd> fd = OpenRegular(path, st);
  if (!fd.ok()) return fd.status();
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is ", size, " bytes, over the ", max_bytes, "-byte limit"));
  }
  std::string out(size, '\0');
  absl::StatusOr<uint64_t> got = PreadFully(fd->get(), path, 0, size, out.data());
  if (!got.ok()) return got.status();
  out.resize(*got);
  return out;
}

absl::StatusOr<std::unique_ptr<MappedFile>> LocalFileSystem::Map(const std::string& path) {
  struct stat st;
  absl::StatusOr<Fd> fd = OpenRegular(path, st);
  if (!fd.ok()) return fd.status();
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size == 0) return MappedFile::FromBytes("");  // mmap refuses an empty range
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd->get(), 0);
  if (base == MAP_FAILED) return ErrnoStatus(errno, "map", path);
  return std::unique_ptr<MappedFile>(new PosixMapping(base, size));
}

}  // namespace steadyeval
