#include "server/discovery/checkpoint_source.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "s3/s3_uri.h"

namespace steadyeval {
namespace {

constexpr absl::string_view kFileScheme = "file://";

}  // namespace

absl::StatusOr<std::string> CheckpointSource::ReadRootFile(const std::string& name,
                                                           uint64_t /*max_bytes*/) {
  return absl::UnimplementedError(absl::StrCat("checkpoint source ", Describe(),
                                               " cannot read files beside its checkpoints (",
                                               name, ")"));
}

absl::StatusOr<std::unique_ptr<FileSystemSource>> FileSystemSource::Create(const std::string& root,
                                                                           FileSystem* fs) {
  if (fs == nullptr) return absl::InvalidArgumentError("checkpoint source needs a file system");
  std::string path = root;
  if (IsS3Uri(path)) {
    absl::StatusOr<S3Uri> uri = ParseS3Uri(path);
    if (!uri.ok()) return Annotate(uri.status(), "checkpoint source");
    if (fs == FileSystem::Local()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint source '", root,
          "' is in a bucket: it is read through an S3 file system, not the local one"));
    }
    return std::unique_ptr<FileSystemSource>(new FileSystemSource(fs, FormatS3Uri(*uri), root));
  }
  if (absl::StartsWith(path, kFileScheme)) {
    path = path.substr(kFileScheme.size());
    if (path.empty() || path[0] != '/') {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint source '", root,
          "': a file URL needs an absolute path and no host, e.g. file:///mnt/ckpt/run42"));
    }
  } else if (path.find("://") != std::string::npos) {
    return absl::UnimplementedError(absl::StrCat(
        "checkpoint source '", root,
        "': only local paths, file:/// URLs and s3:// URIs are read here"));
  }
  if (path.empty()) {
    return absl::InvalidArgumentError("checkpoint source is empty; pass the run's checkpoint folder");
  }
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return std::unique_ptr<FileSystemSource>(new FileSystemSource(fs, std::move(path), root));
}

absl::StatusOr<std::vector<SourceEntry>> FileSystemSource::List() {
  absl::StatusOr<std::vector<DirEntry>> listed = fs_->List(root_);
  if (!listed.ok()) return Annotate(listed.status(), absl::StrCat("checkpoint source ", described_));
  std::vector<SourceEntry> entries;
  entries.reserve(listed->size());
  for (DirEntry& e : *listed) {  // sorted by name; links followed, vanished entries left out
    SourceEntry entry;
    entry.path = JoinPath(root_, e.name);
    entry.is_dir = e.stat.kind == FileKind::kDirectory;
    entry.name = std::move(e.name);
    entries.push_back(std::move(entry));
  }
  return entries;
}

absl::Status FileSystemSource::AddFiles(const std::string& dir, const std::string& prefix,
                                        bool descend, CheckpointFingerprint& files) {
  ASSIGN_OR_RETURN(std::vector<DirEntry> entries, fs_->List(dir));
  for (const DirEntry& e : entries) {
    if (e.stat.kind == FileKind::kRegular) {
      files.push_back({absl::StrCat(prefix, e.name), e.stat.size, e.stat.mtime_nanos, e.stat.etag});
    } else if (e.stat.kind == FileKind::kDirectory && descend) {
      absl::Status status =
          AddFiles(JoinPath(dir, e.name), absl::StrCat(prefix, e.name, "/"), false, files);
      if (!status.ok() && !absl::IsNotFound(status)) return status;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CheckpointFingerprint> FileSystemSource::Fingerprint(const std::string& path) {
  CheckpointFingerprint files;
  RETURN_IF_ERROR(AddFiles(path, "", /*descend=*/true, files));
  std::sort(files.begin(), files.end(),
            [](const FileFingerprint& a, const FileFingerprint& b) { return a.name < b.name; });
  return files;
}

absl::StatusOr<std::string> FileSystemSource::ReadRange(const std::string& path,
                                                        const std::string& name, uint64_t offset,
                                                        uint64_t length) {
  return fs_->ReadRange(JoinPath(path, name), offset, length);
}

absl::StatusOr<std::string> FileSystemSource::ReadRootFile(const std::string& name,
                                                           uint64_t max_bytes) {
  if (name.empty() || name.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", name, "' is not a file name at the root of ", described_));
  }
  return fs_->ReadFile(JoinPath(root_, name), max_bytes);
}

}  // namespace steadyeval
