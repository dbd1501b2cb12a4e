// The file system as an interface (STYLE: "the OS is an interface"; LevelDB's Env): what
// checkpoint discovery (server/discovery/) and the checkpoint reader (worker/checkpoint/)
// need to read a checkpoint folder. LocalFileSystem is the POSIX implementation; tests use
// FakeFileSystem (testing/fake_file_system.h); an object store (s3://) is one more
// implementation.
//
// The contract, for every implementation:
//   - Paths are '/'-separated strings in the implementation's own namespace (a local path;
//     for an object store, a key). A folder is whatever has entries below it: an object
//     store lists the keys under "dir/" and reports each next path component once, a
//     common prefix as kDirectory. Trailing '/' on a folder path is ignored.
//   - List gives a folder's direct entries sorted by name, each with its kind, size and
//     mtime as Stat would report them. Entries that vanish while being listed are left out
//     (not an error), and so are entries that cannot be described (a dangling link).
//     Links are followed: a linked folder is a kDirectory.
//   - ReadRange returns up to `length` bytes from `offset`; fewer only at end of file (a
//     read that starts at or past the end returns nothing). It never allocates more than
//     the file holds, whatever `length` says.
//   - Map returns the whole file read-only. LocalFileSystem memory-maps it (no copy; pages
//     are faulted in on access); an implementation without mmap reads the file into memory
//     (MappedFile::FromBytes). Either way the bytes stay valid while the MappedFile lives,
//     and never change under the reader: a local file rewritten in place is the writer's
//     fault (DESIGN §4: trainers write a new folder), as with any mapping.
//   - Errors are absl::Status whose message names the operation and the path ("cannot
//     open /ckpt/step_1/config.json: Permission denied"), and whose code says what the
//     caller does next: NOT_FOUND (the path does not exist, yet or any more),
//     PERMISSION_DENIED, FAILED_PRECONDITION (the path is the wrong kind of thing: a file
//     where a folder is needed, a folder where a file is), INVALID_ARGUMENT (a file over
//     the caller's size bound), UNAVAILABLE (anything else: I/O error, network, retry
//     later).
//
// Thread-safety: implementations are thread-safe; one FileSystem serves all threads.
#ifndef STEADYEVAL_COMMON_FILE_SYSTEM_H_
#define STEADYEVAL_COMMON_FILE_SYSTEM_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace steadyeval {

enum class FileKind { kRegular, kDirectory, kOther };

struct FileStat {
  FileKind kind = FileKind::kOther;
  uint64_t size = 0;        // bytes; meaningful for kRegular only
  int64_t mtime_nanos = 0;  // last modification, nanoseconds since the Unix epoch
  // An object store's entity tag (S3 ETag, quotes removed): changes when the content does.
  // Empty where there is none (local files).
  std::string etag;
};

// One entry of a folder listing.
struct DirEntry {
  std::string name;  // the entry's own name, no '/'
  FileStat stat;
};

// The whole content of a file, read-only, valid while this object lives. Thread-safe.
class MappedFile {
 public:
  virtual ~MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  absl::string_view bytes() const {
    return absl::string_view(reinterpret_cast<const char*>(data_), size_);
  }

  // A hint that [offset, offset + length) will not be read again soon: a memory mapping
  // gives those pages back to the OS (a later read faults them in again from the file), so
  // streaming over many large files keeps little resident. No-op for a copy in memory.
  virtual void DropPages(uint64_t /*offset*/, uint64_t /*length*/) const {}

  // A MappedFile over `bytes`, for implementations without mmap.
  static std::unique_ptr<MappedFile> FromBytes(std::string bytes);

 protected:
  MappedFile(const uint8_t* data, uint64_t size) : data_(data), size_(size) {}

 private:
  const uint8_t* const data_;
  const uint64_t size_;
};

// How CopyToLocalFile copies.
struct LocalCopyOptions {
  // The ReadRange size of the default (chunked) copy.
  uint64_t chunk_bytes = 8 << 20;
  // Called before each chunk of the default copy; a non-OK status abandons the copy and is
  // returned as is (a cancelled job). Empty: never called.
  std::function<absl::Status()> before_chunk;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // The direct entries of the folder `dir`, sorted by name. NOT_FOUND when `dir` does not
  // exist; FAILED_PRECONDITION when it is not a folder.
  virtual absl::StatusOr<std::vector<DirEntry>> List(const std::string& dir) = 0;

  // What `path` is, following links. NOT_FOUND when it does not exist.
  virtual absl::StatusOr<FileStat> Stat(const std::string& path) = 0;

  // Up to `length` bytes of the file `path` from `offset` (see the contract above).
  // NOT_FOUND when the file does not exist; FAILED_PRECONDITION for a folder.
  virtual absl::StatusOr<std::string> ReadRange(const std::string& path, uint64_t offset,
                                                uint64_t length) = 0;

  // The whole regular file `path`, of at most `max_bytes` (INVALID_ARGUMENT naming the
  // size and the bound otherwise, before anything is read). FAILED_PRECONDITION when it is
  // not a regular file (a folder, a FIFO, a device: never waited on).
  virtual absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) = 0;

  // The whole regular file `path`, read-only (see the contract above). FAILED_PRECONDITION
  // when it is not a regular file.
  virtual absl::StatusOr<std::unique_ptr<MappedFile>> Map(const std::string& path) = 0;

  // Copies the file `path`, listed as `expected_size` bytes, into the local file
  // `local_path` (created or truncated) and fsyncs it. DATA_LOSS unless exactly
  // `expected_size` bytes arrived (rewritten or cut short meanwhile); UNAVAILABLE when the
  // local file cannot be created or written; otherwise the read's error. The default reads
  // `options.chunk_bytes` at a time with ReadRange; an object store overrides it to stream
  // the object in one request.
  virtual absl::Status CopyToLocalFile(const std::string& path, const std::string& local_path,
                                       uint64_t expected_size, const LocalCopyOptions& options);

  // The process-wide LocalFileSystem. Never null; lives for the whole process.
  static FileSystem* Local();
};

// POSIX: open/pread/fstat/mmap, opendir/readdir. Stateless, so thread-safe.
class LocalFileSystem : public FileSystem {
 public:
  absl::StatusOr<std::vector<DirEntry>> List(const std::string& dir) override;
  absl::StatusOr<FileStat> Stat(const std::string& path) override;
  absl::StatusOr<std::string> ReadRange(const std::string& path, uint64_t offset,
                                        uint64_t length) override;
  absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) override;
  absl::StatusOr<std::unique_ptr<MappedFile>> Map(const std::string& path) override;
};

// `dir` + "/" + `name`, without doubling the '/' after a root "/" or a trailing '/'.
std::string JoinPath(absl::string_view dir, absl::string_view name);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_FILE_SYSTEM_H_
