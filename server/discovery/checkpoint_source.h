// CheckpointSource: where checkpoints appear (DESIGN §4). The OS boundary of discovery.
//
// A source lists the entries at the root of a training run's checkpoint folder, describes
// the files inside one entry (names, sizes, mtimes: its fingerprint), and reads byte ranges
// of those files. Everything above it (completeness check, watcher) goes through this
// interface. FileSystemSource is the production source: a folder on a FileSystem
// (common/file_system.h), so an object store (s3://) is one more FileSystem and tests
// inject faults with FakeFileSystem.
//
// Paths handed back by List() are opaque to callers: pass them back to the same source.
// Thread-safety: implementations are thread-compatible unless they say otherwise.
#ifndef STEADYEVAL_SERVER_DISCOVERY_CHECKPOINT_SOURCE_H_
#define STEADYEVAL_SERVER_DISCOVERY_CHECKPOINT_SOURCE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/file_system.h"

namespace steadyeval {

// One entry at the root of a source.
struct SourceEntry {
  std::string name;  // the entry's own name, e.g. "step_000100" (what the step parser sees)
  // Where the source finds it again, e.g. "/mnt/ckpt/run42/step_000100", or for a bucket
  // the full URI "s3://bucket/run42/step_000100".
  std::string path;
  bool is_dir = false;
};

// One file inside a checkpoint folder.
struct FileFingerprint {
  std::string name;  // relative to the checkpoint folder, '/'-separated ("sub/x.bin")
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  // An object store's ETag (FileStat::etag; empty for local files): an object rewritten
  // with the same size within one LastModified second still changes its fingerprint.
  std::string etag;

  bool operator==(const FileFingerprint& o) const {
    return name == o.name && size == o.size && mtime_ns == o.mtime_ns && etag == o.etag;
  }
  bool operator!=(const FileFingerprint& o) const { return !(*this == o); }
};

// All files of a checkpoint folder, sorted by name. Two equal fingerprints taken some time
// apart mean nobody wrote to the checkpoint in between (quiescence): names, sizes, mtimes
// and, on an object store, ETags unchanged.
using CheckpointFingerprint = std::vector<FileFingerprint>;

class CheckpointSource {
 public:
  virtual ~CheckpointSource() = default;

  // The entries at the root, sorted by name. An error when the root cannot be listed
  // (NOT_FOUND when it does not exist): the caller retries on its next poll.
  virtual absl::StatusOr<std::vector<SourceEntry>> List() = 0;

  // The regular files in the folder at `path` and in its immediate subfolders (deeper
  // levels are not visited), sorted by name. Entries that vanish while being listed are
  // left out. NOT_FOUND when `path` is gone.
  virtual absl::StatusOr<CheckpointFingerprint> Fingerprint(const std::string& path) = 0;

  // Up to `length` bytes of the file `name` (relative, as in a fingerprint) inside the
  // checkpoint folder at `path`, starting at `offset`. Fewer bytes only at end of file.
  // NOT_FOUND when the file is gone.
  virtual absl::StatusOr<std::string> ReadRange(const std::string& path, const std::string& name,
                                                uint64_t offset, uint64_t length) = 0;

  // The whole file `name` at the root of the source, beside the checkpoint folders (where
  // trainers keep their tracker files, e.g. Megatron's latest_checkpointed_iteration.txt),
  // of at most `max_bytes` (INVALID_ARGUMENT otherwise). NOT_FOUND when there is no such
  // file; FAILED_PRECONDITION when `name` is not a regular file (e.g. a folder). This
  // default implementation has no root files to read (UNIMPLEMENTED); sources that hold
  // training-framework checkpoints override it.
  virtual absl::StatusOr<std::string> ReadRootFile(const std::string& name, uint64_t max_bytes);

  // The source as the user gave it, for messages.
  virtual std::string Describe() const = 0;
};

// A folder on a FileSystem: the local one (also NFS, Lustre mounts) unless told otherwise,
// or a bucket prefix on an S3FileSystem (s3/s3_file_system.h), whose paths are full s3://
// URIs. Thread-compatible; the FileSystem is not owned and must outlive the source.
class FileSystemSource : public CheckpointSource {
 public:
  // `root` is a path ("/mnt/ckpt/run42", relative paths allowed), a file URL
  // ("file:///mnt/ckpt/run42"), or an s3:// URI ("s3://bucket/run42", kept as a URI: the
  // paths handed back are "s3://bucket/run42/step_000100") read through `fs`, which must
  // then be an object store's FileSystem, not the local one. The folder need not exist
  // yet: List() reports that. INVALID_ARGUMENT for an empty root, a file URL with a host,
  // a malformed s3:// URI, an s3:// root on the local file system or a null `fs`;
  // UNIMPLEMENTED for other URL schemes.
  static absl::StatusOr<std::unique_ptr<FileSystemSource>> Create(
      const std::string& root, FileSystem* fs = FileSystem::Local());

  absl::StatusOr<std::vector<SourceEntry>> List() override;
  absl::StatusOr<CheckpointFingerprint> Fingerprint(const std::string& path) override;
  absl::StatusOr<std::string> ReadRange(const std::string& path, const std::string& name,
                                        uint64_t offset, uint64_t length) override;
  absl::StatusOr<std::string> ReadRootFile(const std::string& name, uint64_t max_bytes) override;
  std::string Describe() const override { return described_; }

  const std::string& root() const { return root_; }

 private:
  FileSystemSource(FileSystem* fs, std::string root, std::string described)
      : fs_(fs), root_(std::move(root)), described_(std::move(described)) {}

  // Appends the regular files in `dir` (named `prefix` + name) to `files`, and those of
  // its subfolders when `descend`.
  absl::Status AddFiles(const std::string& dir, const std::string& prefix, bool descend,
                        CheckpointFingerprint& files);

  FileSystem* const fs_;
  std::string root_;       // file-system path or s3:// URI, no trailing '/'
  std::string described_;  // as given
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_DISCOVERY_CHECKPOINT_SOURCE_H_
