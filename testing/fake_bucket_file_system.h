// FakeBucketFileSystem: a FileSystem whose paths are s3:// URIs, as S3FileSystem's are
// (s3/s3_file_system.h), held in memory by a FakeFileSystem: "s3://bucket/run/x" is the
// fake's "/bucket/run/x". Tests of what reads buckets through the FileSystem interface
// (discovery's sources, the coordinator's source factory) use it where no S3 server is
// needed. Like an object store it reports an ETag per file (SetEtag; by default one
// derived from the file's size and mtime) and counts the bytes read (BytesRead), so a test
// can check that only headers are fetched. Thread-safe.
#ifndef STEADYEVAL_TESTING_FAKE_BUCKET_FILE_SYSTEM_H_
#define STEADYEVAL_TESTING_FAKE_BUCKET_FILE_SYSTEM_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/file_system.h"
#include "testing/fake_file_system.h"

namespace steadyeval::testing {

class FakeBucketFileSystem : public FileSystem {
 public:
  // The FakeFileSystem path of an s3:// URI ("s3://b/k" -> "/b/k").
  static std::string Local(const std::string& uri) {
    return absl::StartsWith(uri, "s3://") ? uri.substr(4) : uri;
  }

  FakeFileSystem& files() { return files_; }
  void WriteFile(const std::string& uri, std::string bytes) {
    files_.WriteFile(Local(uri), std::move(bytes));
  }
  // The ETag `uri` reports from now on (until set again).
  void SetEtag(const std::string& uri, const std::string& etag) {
    absl::MutexLock lock(&mu_);
    etags_[Local(uri)] = etag;
  }
  uint64_t BytesRead() const {
    absl::MutexLock lock(&mu_);
    return bytes_read_;
  }

  absl::StatusOr<std::vector<DirEntry>> List(const std::string& dir) override {
    Check(dir);
    absl::StatusOr<std::vector<DirEntry>> entries = files_.List(Local(dir));
    if (!entries.ok()) return entries;
    for (DirEntry& e : *entries) AddEtag(JoinPath(Local(dir), e.name), e.stat);
    return entries;
  }
  absl::StatusOr<FileStat> Stat(const std::string& path) override {
    Check(path);
    absl::StatusOr<FileStat> stat = files_.Stat(Local(path));
    if (stat.ok()) AddEtag(Local(path), *stat);
    return stat;
  }
  absl::StatusOr<std::string> ReadRange(const std::string& path, uint64_t offset,
                                        uint64_t length) override {
    Check(path);
    return Counted(files_.ReadRange(Local(path), offset, length));
  }
  absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) override {
    Check(path);
    return Counted(files_.ReadFile(Local(path), max_bytes));
  }
  absl::StatusOr<std::unique_ptr<MappedFile>> Map(const std::string& path) override {
    Check(path);
    absl::StatusOr<std::string> bytes = Counted(files_.ReadFile(Local(path), ~uint64_t{0}));
    if (!bytes.ok()) return bytes.status();
    return MappedFile::FromBytes(*std::move(bytes));
  }

  // Paths that were not s3:// URIs (a caller that lost the scheme), most recent last.
  std::vector<std::string> NonUriPaths() const {
    absl::MutexLock lock(&mu_);
    return non_uri_paths_;
  }

 private:
  void Check(const std::string& path) {
    if (absl::StartsWith(path, "s3://")) return;
    absl::MutexLock lock(&mu_);
    non_uri_paths_.push_back(path);
  }
  void AddEtag(const std::string& local, FileStat& stat) {
    if (stat.kind != FileKind::kRegular) return;
    absl::MutexLock lock(&mu_);
    auto it = etags_.find(local);
    stat.etag = it != etags_.end() ? it->second
                                   : absl::StrCat("etag-", stat.size, "-", stat.mtime_nanos);
  }
  absl::StatusOr<std::string> Counted(absl::StatusOr<std::string> bytes) {
    if (bytes.ok()) {
      absl::MutexLock lock(&mu_);
      bytes_read_ += bytes->size();
    }
    return bytes;
  }

  FakeFileSystem files_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::string> etags_ ABSL_GUARDED_BY(mu_);
  uint64_t bytes_read_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> non_uri_paths_ ABSL_GUARDED_BY(mu_);
};

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_FAKE_BUCKET_FILE_SYSTEM_H_
