#include "s3/s3_file_system.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "s3/s3_uri.h"

namespace steadyeval {
namespace {

FileStat ObjectStat(const S3Object& object) {
  FileStat stat;
  stat.kind = FileKind::kRegular;
  stat.size = object.size;
  stat.mtime_nanos = object.mtime_nanos;
  stat.etag = object.etag;
  return stat;
}

FileStat FolderStat() {
  FileStat stat;
  stat.kind = FileKind::kDirectory;
  return stat;
}

// Whether anything lies under the folder `key` ("" is the bucket itself, which exists
// when it can be listed).
absl::StatusOr<bool> IsFolder(S3Client& client, const S3Uri& uri) {
  const std::string prefix = uri.key.empty() ? "" : uri.key + "/";
  ASSIGN_OR_RETURN(S3Listing page, client.ListFirstPage(uri.bucket, prefix, "", 1));
  return uri.key.empty() || !page.objects.empty();
}

// The status for a read of `uri` that found no object (`not_found`): FAILED_PRECONDITION
// when it is a folder.
absl::Status MissingObject(S3Client& client, const S3Uri& uri, absl::Status not_found) {
  ASSIGN_OR_RETURN(bool folder, IsFolder(client, uri));
  if (!folder) return not_found;
  return absl::FailedPreconditionError(
      absl::StrCat("cannot read ", FormatS3Uri(uri), ": it is a folder, not an object"));
}

absl::Status BucketIsAFolder(const S3Uri& uri) {
  return absl::FailedPreconditionError(
      absl::StrCat("cannot read ", FormatS3Uri(uri), ": a bucket is a folder, not an object"));
}

}  // namespace

absl::StatusOr<std::vector<DirEntry>> S3FileSystem::List(const std::string& dir) {
  ASSIGN_OR_RETURN(S3Uri uri, ParseS3Uri(dir));
  const std::string prefix = uri.key.empty() ? "" : uri.key + "/";
  ASSIGN_OR_RETURN(S3Listing listing, client_->List(uri.bucket, prefix, "/"));
  // One entry per name; a name that is both an object and a prefix ("a" and "a/b") is the
  // folder, since there is something below it.
  std::map<std::string, FileStat> entries;
  for (const S3Object& object : listing.objects) {
    std::string name = object.key.substr(prefix.size());
    if (name.empty()) continue;  // a "folder marker" object named like the prefix itself
    entries.emplace(std::move(name), ObjectStat(object));
  }
  for (const std::string& common : listing.common_prefixes) {
    std::string name = common.substr(prefix.size());
    if (!name.empty() && name.back() == '/') name.pop_back();
    if (name.empty()) continue;
    entries[name] = FolderStat();
  }
  if (entries.empty() && !uri.key.empty()) {
    absl::StatusOr<S3Object> object = client_->Head(uri.bucket, uri.key);
    if (object.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot list ", FormatS3Uri(uri), ": it is an object, not a folder"));
    }
    if (!absl::IsNotFound(object.status())) return object.status();
    return absl::NotFoundError(absl::StrCat("cannot list ", FormatS3Uri(uri),
                                            ": no objects under ", FormatS3Uri(uri), "/ at ",
                                            client_->DescribeEndpoint()));
  }
  std::vector<DirEntry> result;
  result.reserve(entries.size());
  for (auto& [name, stat] : entries) result.push_back(DirEntry{name, std::move(stat)});
  return result;
}

absl::StatusOr<FileStat> S3FileSystem::Stat(const std::string& path) {
  ASSIGN_OR_RETURN(S3Uri uri, ParseS3Uri(path));
  if (!uri.key.empty()) {
    absl::StatusOr<S3Object> object = client_->Head(uri.bucket, uri.key);
    if (object.ok()) return ObjectStat(*object);
    if (!absl::IsNotFound(object.status())) return object.status();
  }
  ASSIGN_OR_RETURN(bool folder, IsFolder(*client_, uri));
  if (folder) return FolderStat();
  return absl::NotFoundError(absl::StrCat("cannot stat ", FormatS3Uri(uri),
                                          ": no such object or folder at ",
                                          client_->DescribeEndpoint()));
}

absl::StatusOr<std::string> S3FileSystem::ReadRange(const std::string& path, uint64_t offset,
                                                    uint64_t length) {
  ASSIGN_OR_RETURN(S3Uri uri, ParseS3Uri(path));
  if (uri.key.empty()) return BucketIsAFolder(uri);
  absl::StatusOr<std::string> bytes = client_->GetRange(uri.bucket, uri.key, offset, length);
  if (absl::IsNotFound(bytes.status())) return MissingObject(*client_, uri, bytes.status());
  return bytes;
}

absl::StatusOr<std::string> S3FileSystem::ReadFile(const std::string& path, uint64_t max_bytes) {
  ASSIGN_OR_RETURN(S3Uri uri, ParseS3Uri(path));
  if (uri.key.empty()) return BucketIsAFolder(uri);
  absl::StatusOr<S3Object> object = client_->Head(uri.bucket, uri.key);
  if (absl::IsNotFound(object.status())) return MissingObject(*client_, uri, object.status());
  if (!object.ok()) return object.status();
  if (object->size > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(FormatS3Uri(uri), " is ", object->size,
                                                   " bytes, over the limit of ", max_bytes));
  }
  if (object->size == 0) return std::string();  // no ranged GET of an empty object
  // One byte more than allowed, so an object rewritten larger since the HEAD is caught.
  const uint64_t want = max_bytes == UINT64_MAX ? max_bytes : max_bytes + 1;
  ASSIGN_OR_RETURN(std::string bytes, client_->GetRange(uri.bucket, uri.key, 0, want));
  if (bytes.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(FormatS3Uri(uri), " grew to over ", max_bytes,
                                                   " bytes (the limit) while being read"));
  }
  return bytes;
}

absl::StatusOr<std::unique_ptr<MappedFile>> S3FileSystem::Map(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(path, UINT64_MAX));
  return MappedFile::FromBytes(std::move(bytes));
}

absl::Status S3FileSystem::CopyToLocalFile(const std::string& path, const std::string& local_path,
                                           uint64_t expected_size,
                                           const LocalCopyOptions& /*options*/) {
  ASSIGN_OR_RETURN(const S3Uri uri, ParseS3Uri(path));
  return client_->GetToFile(uri.bucket, uri.key, local_path, static_cast<int64_t>(expected_size));
}

}  // namespace steadyeval
