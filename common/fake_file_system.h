// FakeFileSystem: a FileSystem (common/file_system.h) held in memory, for tests. Test-only
// (library steadyeval_fake_file_system; no production binary links it).
//
// Tests write files, grow or shrink them, set their mtimes, remove them, and make chosen
// operations fail, all without touching the disk or sleeping:
//
//   FakeFileSystem fs;
//   fs.WriteFile("/ckpt/step_1/config.json", "{}");
//   fs.InjectError(FakeFileSystem::Op::kRead, "/ckpt/step_1/config.json",
//                  absl::UnavailableError("injected"));
//
// Paths are absolute ('/'-separated); a trailing '/' is ignored. Every file method below
// creates the file when it is absent. Folders exist when made
// with MakeDir or implicitly as ancestors of a written file, and stay until removed. Every
// write sets the file's mtime from a counter that advances one second per write, unless
// the test sets it (SetMtime). Map copies the file (MappedFile::FromBytes), as an object
// store's implementation would. Thread-safe.
#ifndef STEADYEVAL_COMMON_FAKE_FILE_SYSTEM_H_
#define STEADYEVAL_COMMON_FAKE_FILE_SYSTEM_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/file_system.h"

namespace steadyeval {

class FakeFileSystem : public FileSystem {
 public:
  // Operations an injected error applies to: kList (List), kStat (Stat), kRead
  // (ReadRange, ReadFile, Map).
  enum class Op { kList, kStat, kRead };

  // Creates or replaces the file `path` (and its missing ancestor folders).
  void WriteFile(const std::string& path, std::string bytes);
  // Appends to `path`, creating it when absent.
  void AppendFile(const std::string& path, const std::string& bytes);
  // Cuts `path` to its first `size` bytes (or pads it with zero bytes up to `size`).
  void Resize(const std::string& path, uint64_t size);
  // Sets the file's mtime (the next write sets it from the counter again).
  void SetMtime(const std::string& path, int64_t mtime_nanos);
  void MakeDir(const std::string& path);
  // Removes the file or the folder `path` with everything below it.
  void Remove(const std::string& path);

  // Until cleared, every `op` on exactly `path` fails with `error` (for kList: listing
  // the folder `path`; for kStat: also the entry `path` in its parent's listing, which is
  // then left out, as a local listing leaves out what it cannot stat).
  void InjectError(Op op, const std::string& path, absl::Status error);
  void ClearErrors();
  // How many times `op` was called on `path` (errors included).
  int Calls(Op op, const std::string& path) const;

  absl::StatusOr<std::vector<DirEntry>> List(const std::string& dir) override;
  absl::StatusOr<FileStat> Stat(const std::string& path) override;
  absl::StatusOr<std::string> ReadRange(const std::string& path, uint64_t offset,
                                        uint64_t length) override;
  absl::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) override;
  absl::StatusOr<std::unique_ptr<MappedFile>> Map(const std::string& path) override;

 private:
  struct File {
    std::string bytes;
    int64_t mtime_nanos = 0;
  };

  // Counts the call and returns the injected error for (op, path), if any.
  absl::Status Enter(Op op, const std::string& path) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The file at `path`, or NOT_FOUND / FAILED_PRECONDITION (a folder) naming `operation`.
  absl::StatusOr<const File*> FindFile(const std::string& path, const char* operation) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  File& Touch(const std::string& path) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddAncestors(const std::string& path) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, File> files_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> dirs_ ABSL_GUARDED_BY(mu_){"/"};
  std::map<std::pair<Op, std::string>, absl::Status> errors_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<Op, std::string>, int> calls_ ABSL_GUARDED_BY(mu_);
  int64_t next_mtime_nanos_ ABSL_GUARDED_BY(mu_) = 1'700'000'000'000'000'000;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_FAKE_FILE_SYSTEM_H_
