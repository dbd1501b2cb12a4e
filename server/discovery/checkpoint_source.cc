#include "server/discovery/checkpoint_source.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace steadyeval {
namespace {

constexpr absl::string_view kFileScheme = "file://";

// An errno as a status whose code says what the caller should do next.
absl::Status ErrnoStatus(int err, absl::string_view what) {
  std::string message = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case ENOTDIR:
      return absl::FailedPreconditionError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    default:
      return absl::UnavailableError(message);
  }
}

// Names in the directory at `dir`, excluding "." and "..", unsorted.
absl::StatusOr<std::vector<std::string>> ReadDirNames(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, absl::StrCat("cannot list ", dir));
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    absl::string_view name(e->d_name);
    if (name != "." && name != "..") names.emplace_back(name);
    errno = 0;
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) return ErrnoStatus(err, absl::StrCat("cannot list ", dir));
  return names;
}

int64_t MtimeNanos(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// Appends the regular files in `dir` (named `prefix` + name) to `files`, and those of its
// subfolders when `descend`. Entries that vanish meanwhile, and dangling links, are skipped.
absl::Status AddFiles(const std::string& dir, const std::string& prefix, bool descend,
                      CheckpointFingerprint& files) {
  auto names = ReadDirNames(dir);
  if (!names.ok()) return names.status();
  for (const std::string& name : *names) {
    const std::string full = absl::StrCat(dir, "/", name);
    struct stat st;
    if (::stat(full.c_str(), &st) != 0) continue;
    if (S_ISREG(st.st_mode)) {
      files.push_back({absl::StrCat(prefix, name), static_cast<uint64_t>(st.st_size),
                       MtimeNanos(st)});
    } else if (S_ISDIR(st.st_mode) && descend) {
      absl::Status status = AddFiles(full, absl::StrCat(prefix, name, "/"), false, files);
      if (!status.ok() && !absl::IsNotFound(status)) return status;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalDirSource>> LocalDirSource::Create(const std::string& root) {
  std::string path = root;
  if (absl::StartsWith(path, kFileScheme)) {
    path = path.substr(kFileScheme.size());
    if (path.empty() || path[0] != '/') {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint source '", root,
          "': a file URL needs an absolute path and no host, e.g. file:///mnt/ckpt/run42"));
    }
  } else if (path.find("://") != std::string::npos) {
    return absl::UnimplementedError(absl::StrCat(
        "checkpoint source '", root, "': only local paths and file:/// URLs are read here"));
  }
  if (path.empty()) {
    return absl::InvalidArgumentError("checkpoint source is empty; pass the run's checkpoint folder");
  }
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return std::unique_ptr<LocalDirSource>(new LocalDirSource(std::move(path), root));
}

absl::StatusOr<std::vector<SourceEntry>> LocalDirSource::List() {
  auto names = ReadDirNames(root_);
  if (!names.ok()) {
    return absl::Status(names.status().code(),
                        absl::StrCat("checkpoint source ", described_, ": ", names.status().message()));
  }
  std::sort(names->begin(), names->end());
  std::vector<SourceEntry> entries;
  entries.reserve(names->size());
  for (std::string& name : *names) {
    SourceEntry entry;
    entry.path = root_ == "/" ? absl::StrCat("/", name) : absl::StrCat(root_, "/", name);
    struct stat st;
    // Follows symlinks: a linked checkpoint folder is a folder. Vanished entries are skipped.
    if (::stat(entry.path.c_str(), &st) != 0) continue;
    entry.is_dir = S_ISDIR(st.st_mode);
    entry.name = std::move(name);
    entries.push_back(std::move(entry));
  }
  return entries;
}

absl::StatusOr<CheckpointFingerprint> LocalDirSource::Fingerprint(const std::string& path) {
  CheckpointFingerprint files;
  absl::Status status = AddFiles(path, "", /*descend=*/true, files);
  if (!status.ok()) return status;
  std::sort(files.begin(), files.end(),
            [](const FileFingerprint& a, const FileFingerprint& b) { return a.name < b.name; });
  return files;
}

absl::StatusOr<std::string> LocalDirSource::ReadRange(const std::string& path,
                                                      const std::string& name, uint64_t offset,
                                                      uint64_t length) {
  const std::string full = absl::StrCat(path, "/", name);
  const int fd = ::open(full.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot open ", full));
  std::string out;
  out.resize(length);
  uint64_t got = 0;
  while (got < length) {
    const ssize_t n = ::pread(fd, out.data() + got, length - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return ErrnoStatus(err, absl::StrCat("cannot read ", full));
    }
    if (n == 0) break;  // end of file
    got += static_cast<uint64_t>(n);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

}  // namespace steadyeval
