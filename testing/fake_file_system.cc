#include "testing/fake_file_system.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace steadyeval::testing {
namespace {

std::string Normalize(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

// "/a/b" -> "/a"; "/a" -> "/"; "/" -> "".
std::string Parent(const std::string& path) {
  if (path == "/") return "";
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return "";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// The name of `path` directly under `dir`, or "" when `path` is not a direct child.
std::string ChildName(const std::string& dir, const std::string& path) {
  const std::string prefix = dir == "/" ? "/" : dir + "/";
  if (!absl::StartsWith(path, prefix) || path.size() == prefix.size()) return "";
  std::string rest = path.substr(prefix.size());
  return rest.find('/') == std::string::npos ? rest : "";
}

}  // namespace

void FakeFileSystem::WriteFile(const std::string& path, std::string bytes) {
  absl::MutexLock lock(&mu_);
  Touch(Normalize(path)).bytes = std::move(bytes);
}

void FakeFileSystem::AppendFile(const std::string& path, const std::string& bytes) {
  absl::MutexLock lock(&mu_);
  Touch(Normalize(path)).bytes.append(bytes);
}

void FakeFileSystem::Resize(const std::string& path, uint64_t size) {
  absl::MutexLock lock(&mu_);
  Touch(Normalize(path)).bytes.resize(size, '\0');
}

void FakeFileSystem::SetMtime(const std::string& path, int64_t mtime_nanos) {
  absl::MutexLock lock(&mu_);
  Touch(Normalize(path)).mtime_nanos = mtime_nanos;
}

void FakeFileSystem::MakeDir(const std::string& path) {
  absl::MutexLock lock(&mu_);
  const std::string p = Normalize(path);
  AddAncestors(p);
  dirs_.insert(p);
}

void FakeFileSystem::Remove(const std::string& path) {
  absl::MutexLock lock(&mu_);
  const std::string p = Normalize(path);
  const std::string below = p == "/" ? "/" : p + "/";
  for (auto it = files_.begin(); it != files_.end();) {
    it = it->first == p || absl::StartsWith(it->first, below) ? files_.erase(it) : std::next(it);
  }
  for (auto it = dirs_.begin(); it != dirs_.end();) {
    it = *it == p || absl::StartsWith(*it, below) ? dirs_.erase(it) : std::next(it);
  }
  dirs_.insert("/");
}

void FakeFileSystem::InjectError(Op op, const std::string& path, absl::Status error) {
  absl::MutexLock lock(&mu_);
  errors_[{op, Normalize(path)}] = std::move(error);
}

void FakeFileSystem::ClearErrors() {
  absl::MutexLock lock(&mu_);
  errors_.clear();
}

int FakeFileSystem::Calls(Op op, const std::string& path) const {
  absl::MutexLock lock(&mu_);
  auto it = calls_.find({op, Normalize(path)});
  return it == calls_.end() ? 0 : it->second;
}

absl::StatusOr<std::vector<DirEntry>> FakeFileSystem::List(const std::string& dir) {
  absl::MutexLock lock(&mu_);
  const std::string d = Normalize(dir);
  if (absl::Status injected = Enter(Op::kList, d); !injected.ok()) return injected;
  if (files_.count(d) > 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot list ", d, ": not a folder"));
  }
  if (dirs_.count(d) == 0) {
    return absl::NotFoundError(absl::StrCat("cannot list ", d, ": no such folder"));
  }
  std::map<std::string, FileStat> by_name;
  for (const auto& [path, file] : files_) {
    std::string name = ChildName(d, path);
    if (name.empty() || errors_.count({Op::kStat, path}) > 0) continue;
    by_name[name] = {FileKind::kRegular, file.bytes.size(), file.mtime_nanos, ""};
  }
  for (const std::string& path : dirs_) {
    std::string name = ChildName(d, path);
    if (name.empty() || errors_.count({Op::kStat, path}) > 0) continue;
    by_name[name] = {FileKind::kDirectory, 0, 0, ""};
  }
  std::vector<DirEntry> entries;
  entries.reserve(by_name.size());
  for (auto& [name, stat] : by_name) entries.push_back({name, stat});
  return entries;
}

absl::StatusOr<FileStat> FakeFileSystem::Stat(const std::string& path) {
  absl::MutexLock lock(&mu_);
  const std::string p = Normalize(path);
  if (absl::Status injected = Enter(Op::kStat, p); !injected.ok()) return injected;
  if (auto it = files_.find(p); it != files_.end()) {
    return FileStat{FileKind::kRegular, it->second.bytes.size(), it->second.mtime_nanos, ""};
  }
  if (dirs_.count(p) > 0) return FileStat{FileKind::kDirectory, 0, 0, ""};
  return absl::NotFoundError(absl::StrCat("cannot stat ", p, ": no such file or folder"));
}

absl::StatusOr<std::string> FakeFileSystem::ReadRange(const std::string& path, uint64_t offset,
                                                      uint64_t length) {
  absl::MutexLock lock(&mu_);
  const std::string p = Normalize(path);
  if (absl::Status injected = Enter(Op::kRead, p); !injected.ok()) return injected;
  absl::StatusOr<const File*> file = FindFile(p, "read");
  if (!file.ok()) return file.status();
  const std::string& bytes = (*file)->bytes;
  if (offset >= bytes.size()) return std::string();
  return bytes.substr(offset, std::min<uint64_t>(length, bytes.size() - offset));
}

absl::StatusOr<std::string> FakeFileSystem::ReadFile(const std::string& path, uint64_t max_bytes) {
  absl::MutexLock lock(&mu_);
  const std::string p = Normalize(path);
  if (absl::Status injected = Enter(Op::kRead, p); !injected.ok()) return injected;
  absl::StatusOr<const File*> file = FindFile(p, "read");
  if (!file.ok()) return file.status();
  if ((*file)->bytes.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(p, " is ", (*file)->bytes.size(),
                                                   " bytes, over the ", max_bytes, "-byte limit"));
  }
  return (*file)->bytes;
}

absl::StatusOr<std::unique_ptr<MappedFile>> FakeFileSystem::Map(const std::string& path) {
  absl::MutexLock lock(&mu_);
  const std::string p = Normalize(path);
  if (absl::Status injected = Enter(Op::kRead, p); !injected.ok()) return injected;
  absl::StatusOr<const File*> file = FindFile(p, "map");
  if (!file.ok()) return file.status();
  return MappedFile::FromBytes((*file)->bytes);
}

absl::Status FakeFileSystem::Enter(Op op, const std::string& path) {
  ++calls_[{op, path}];
  auto it = errors_.find({op, path});
  return it == errors_.end() ? absl::OkStatus() : it->second;
}

absl::StatusOr<const FakeFileSystem::File*> FakeFileSystem::FindFile(const std::string& path,
                                                                     const char* operation) const {
  if (auto it = files_.find(path); it != files_.end()) return &it->second;
  if (dirs_.count(path) > 0) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is a folder, not a file"));
  }
  return absl::NotFoundError(absl::StrCat("cannot ", operation, " ", path, ": no such file"));
}

FakeFileSystem::File& FakeFileSystem::Touch(const std::string& path) {
  AddAncestors(path);
  File& file = files_[path];
  next_mtime_nanos_ += 1'000'000'000;
  file.mtime_nanos = next_mtime_nanos_;
  return file;
}

void FakeFileSystem::AddAncestors(const std::string& path) {
  for (std::string dir = Parent(path); !dir.empty(); dir = Parent(dir)) dirs_.insert(dir);
}

}  // namespace steadyeval::testing
