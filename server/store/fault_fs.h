// A rocksdb::FileSystem for tests that fails writes on command, like a disk that fills up
// or goes bad (StoreOptions::file_system).
//
// It wraps another file system (POSIX by default). While a fault is set, the chosen
// operations (writes and/or syncs) of a writable file whose name ends with the given
// suffix return the fault (e.g. IOStatus::NoSpace(), what ENOSPC gives);
// creating files still works, as on a full disk. GetFreeSpace reports a set figure
// instead of the real one when asked to, so free-space checks can be driven without
// filling a disk. Syncs can also be held (HoldSyncs): the syncing thread waits until
// released, like a disk that stalls mid-commit, so tests can look at what the rest of
// the server does meanwhile. Thread-safe. Not linked into the server binary.
#ifndef STEADYEVAL_SERVER_STORE_FAULT_FS_H_
#define STEADYEVAL_SERVER_STORE_FAULT_FS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/file_system.h"

namespace steadyeval {

class FaultInjectingFileSystem : public rocksdb::FileSystemWrapper {
 public:
  explicit FaultInjectingFileSystem(
      std::shared_ptr<rocksdb::FileSystem> target = rocksdb::FileSystem::Default());
  const char* Name() const override { return "FaultInjectingFileSystem"; }

  // Which operations of a writable file fail: kWrite = Append, PositionedAppend, Flush;
  // kSync = Sync, Fsync, RangeSync.
  enum Ops : int { kWrite = 1, kSync = 2, kWriteAndSync = 3 };
  // From now on, `ops` on files whose name ends with `suffix` ("" = every file; ".log" =
  // the write-ahead logs) fail with `fault`.
  void FailWrites(rocksdb::IOStatus fault, std::string suffix = "", Ops ops = kWriteAndSync);
  // Writes go through again.
  void Heal();
  // GetFreeSpace answers `bytes` (nullopt: the wrapped file system's answer).
  void SetFreeSpace(std::optional<uint64_t> bytes);
  // Writes failed so far.
  uint64_t failed_writes() const;

  // From now on, syncs (Sync, Fsync) of files whose name ends with `suffix` wait until
  // ReleaseSyncs; their writes have gone through.
  void HoldSyncs(std::string suffix);
  // Lets the held syncs, and later ones, go through.
  void ReleaseSyncs();
  // Blocks until at least `n` syncs are held.
  void WaitForHeldSyncs(int n) const;
  // Called by the files before each sync: waits while syncs of `fname` are held.
  void MaybeHoldSync(const std::string& fname);

  // The fault for operation `op` (kWrite or kSync) on `fname` now (OK when none),
  // counting it when not OK.
  rocksdb::IOStatus FaultFor(const std::string& fname, Ops op);

  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname,
                                       const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                      const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus GetFreeSpace(const std::string& path, const rocksdb::IOOptions& options,
                                 uint64_t* diskfree, rocksdb::IODebugContext* dbg) override;

 private:
  mutable absl::Mutex mu_;
  std::optional<rocksdb::IOStatus> fault_ ABSL_GUARDED_BY(mu_);
  std::string suffix_ ABSL_GUARDED_BY(mu_);
  Ops ops_ ABSL_GUARDED_BY(mu_) = kWriteAndSync;
  std::optional<uint64_t> free_space_ ABSL_GUARDED_BY(mu_);
  uint64_t failed_writes_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<std::string> hold_suffix_ ABSL_GUARDED_BY(mu_);
  int held_syncs_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_STORE_FAULT_FS_H_
