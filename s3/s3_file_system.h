// A bucket as a FileSystem (common/file_system.h): paths are s3:// URIs
// ("s3://bucket/run42/step_000100/model.safetensors"), folders are key prefixes ending in
// '/', listed with the '/' delimiter. Stat is a HEAD (or, for a folder, a one-key listing);
// ReadRange a ranged GET; ReadFile and Map GET the object into memory (Map:
// MappedFile::FromBytes); CopyToLocalFile one GET streamed to disk. FileStat::etag carries the object's ETag and mtime its
// LastModified, so a checkpoint's fingerprint changes when any object is rewritten.
// A path that is not an s3:// URI is INVALID_ARGUMENT. Thread-safe.
#ifndef STEADYEVAL_S3_S3_FILE_SYSTEM_H_
#define STEADYEVAL_S3_S3_FILE_SYSTEM_H_

#include <memory>
#include <string>
#include <vector>

#include "common/file_system.h"
#include "s3/s3_client.h"

namespace steadyeval {

class S3FileSystem : public FileSystem {
 public:
  explicit S3FileSystem(std::shared_ptr<S3Client> client) : client_(std::move(client)) {}

  absl::StatusOr<std::vector<DirEntry>> List(const std::string& dir) override;
  absl::StatusOr<FileStat> Stat(const std::string& path) override;
  absl::StatusOr<std::string> ReadRange(const std::string& path, uint64_t offset,
                                        uint64_t length) override;
  absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) override;
  absl::StatusOr<std::unique_ptr<MappedFile>> Map(const std::string& path) override;
  // One GET streamed to disk by the client (S3Client::GetToFile); `options` is not used.
  absl::Status CopyToLocalFile(const std::string& path, const std::string& local_path,
                               uint64_t expected_size, const LocalCopyOptions& options) override;

  S3Client& client() const { return *client_; }

 private:
  std::shared_ptr<S3Client> client_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_S3_S3_FILE_SYSTEM_H_
