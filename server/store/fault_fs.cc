#include "server/store/fault_fs.h"

#include <utility>

#include "absl/strings/match.h"

namespace steadyeval {
namespace {

using rocksdb::FileOptions;
using rocksdb::FSWritableFile;
using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Slice;

// Asks the file system before each write whether it must fail.
class FaultyWritableFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FaultyWritableFile(std::unique_ptr<FSWritableFile> file, FaultInjectingFileSystem* fs,
                     std::string fname)
      : FSWritableFileOwnerWrapper(std::move(file)), fs_(fs), fname_(std::move(fname)) {}

  IOStatus Append(const Slice& data, const IOOptions& options, IODebugContext* dbg) override {
    IOStatus fault = fs_->FaultFor(fname_, FaultInjectingFileSystem::kWrite);
    return fault.ok() ? target()->Append(data, options, dbg) : fault;
  }
  IOStatus Append(const Slice& data, const IOOptions& options,
                  const rocksdb::DataVerificationInfo& info, IODebugContext* dbg) override {
    IOStatus fault = fs_->FaultFor(fname_, FaultInjectingFileSystem::kWrite);
    return fault.ok() ? target()->Append(data, options, info, dbg) : fault;
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions& options,
                            IODebugContext* dbg) override {
    IOStatus fault = fs_->FaultFor(fname_, FaultInjectingFileSystem::kWrite);
    return fault.ok() ? target()->PositionedAppend(data, offset, options, dbg) : fault;
  }
  IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions& options,
                            const rocksdb::DataVerificationInfo& info,
                            IODebugContext* dbg) override {
    IOStatus fault = fs_->FaultFor(fname_, FaultInjectingFileSystem::kWrite);
    return fault.ok() ? target()->PositionedAppend(data, offset, options, info, dbg) : fault;
  }
  IOStatus Flush(const IOOptions& options, IODebugContext* dbg) override {
    IOStatus fault = fs_->FaultFor(fname_, FaultInjectingFileSystem::kWrite);
    return fault.ok() ? target()->Flush(options, dbg) : fault;
  }
  IOStatus Sync(const IOOptions& options, IODebugContext* dbg) override {
    fs_->MaybeHoldSync(fname_);
    IOStatus fault = fs_->FaultFor(fname_, FaultInjectingFileSystem::kSync);
    return fault.ok() ? target()->Sync(options, dbg) : fault;
  }
  IOStatus Fsync(const IOOptions& options, IODebugContext* dbg) override {
    fs_->MaybeHoldSync(fname_);
    IOStatus fault = fs_->FaultFor(fname_, FaultInjectingFileSystem::kSync);
    return fault.ok() ? target()->Fsync(options, dbg) : fault;
  }
  IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const IOOptions& options,
                     IODebugContext* dbg) override {
    IOStatus fault = fs_->FaultFor(fname_, FaultInjectingFileSystem::kSync);
    return fault.ok() ? target()->RangeSync(offset, nbytes, options, dbg) : fault;
  }

 private:
  FaultInjectingFileSystem* const fs_;
  const std::string fname_;
};

}  // namespace

FaultInjectingFileSystem::FaultInjectingFileSystem(std::shared_ptr<rocksdb::FileSystem> target)
    : FileSystemWrapper(target) {}

void FaultInjectingFileSystem::FailWrites(IOStatus fault, std::string suffix, Ops ops) {
  absl::MutexLock lock(&mu_);
  fault_ = std::move(fault);
  suffix_ = std::move(suffix);
  ops_ = ops;
}

void FaultInjectingFileSystem::Heal() {
  absl::MutexLock lock(&mu_);
  fault_.reset();
}

void FaultInjectingFileSystem::SetFreeSpace(std::optional<uint64_t> bytes) {
  absl::MutexLock lock(&mu_);
  free_space_ = bytes;
}

uint64_t FaultInjectingFileSystem::failed_writes() const {
  absl::MutexLock lock(&mu_);
  return failed_writes_;
}

void FaultInjectingFileSystem::HoldSyncs(std::string suffix) {
  absl::MutexLock lock(&mu_);
  hold_suffix_ = std::move(suffix);
}

void FaultInjectingFileSystem::ReleaseSyncs() {
  absl::MutexLock lock(&mu_);
  hold_suffix_.reset();
}

void FaultInjectingFileSystem::WaitForHeldSyncs(int n) const {
  absl::MutexLock lock(&mu_);
  const auto enough = [this, n] {
    mu_.AssertHeld();  // Await evaluates it under mu_; clang cannot see that
    return held_syncs_ >= n;
  };
  mu_.Await(absl::Condition(&enough));
}

void FaultInjectingFileSystem::MaybeHoldSync(const std::string& fname) {
  absl::MutexLock lock(&mu_);
  const auto held = [this, &fname] {
    mu_.AssertHeld();
    return hold_suffix_.has_value() && absl::EndsWith(fname, *hold_suffix_);
  };
  if (!held()) return;
  ++held_syncs_;
  const auto released = [&held] { return !held(); };
  mu_.Await(absl::Condition(&released));
  --held_syncs_;
}

IOStatus FaultInjectingFileSystem::FaultFor(const std::string& fname, Ops op) {
  absl::MutexLock lock(&mu_);
  if (!fault_.has_value() || (ops_ & op) == 0 || !absl::EndsWith(fname, suffix_)) {
    return IOStatus::OK();
  }
  ++failed_writes_;
  return *fault_;
}

IOStatus FaultInjectingFileSystem::NewWritableFile(const std::string& fname,
                                                   const FileOptions& options,
                                                   std::unique_ptr<FSWritableFile>* result,
                                                   IODebugContext* dbg) {
  std::unique_ptr<FSWritableFile> file;
  IOStatus s = target()->NewWritableFile(fname, options, &file, dbg);
  if (s.ok()) result->reset(new FaultyWritableFile(std::move(file), this, fname));
  return s;
}

IOStatus FaultInjectingFileSystem::ReopenWritableFile(const std::string& fname,
                                                      const FileOptions& options,
                                                      std::unique_ptr<FSWritableFile>* result,
                                                      IODebugContext* dbg) {
  std::unique_ptr<FSWritableFile> file;
  IOStatus s = target()->ReopenWritableFile(fname, options, &file, dbg);
  if (s.ok()) result->reset(new FaultyWritableFile(std::move(file), this, fname));
  return s;
}

IOStatus FaultInjectingFileSystem::ReuseWritableFile(const std::string& fname,
                                                     const std::string& old_fname,
                                                     const FileOptions& options,
                                                     std::unique_ptr<FSWritableFile>* result,
                                                     IODebugContext* dbg) {
  std::unique_ptr<FSWritableFile> file;
  IOStatus s = target()->ReuseWritableFile(fname, old_fname, options, &file, dbg);
  if (s.ok()) result->reset(new FaultyWritableFile(std::move(file), this, fname));
  return s;
}

IOStatus FaultInjectingFileSystem::GetFreeSpace(const std::string& path, const IOOptions& options,
                                                uint64_t* diskfree, IODebugContext* dbg) {
  {
    absl::MutexLock lock(&mu_);
    if (free_space_.has_value()) {
      *diskfree = *free_space_;
      return IOStatus::OK();
    }
  }
  return target()->GetFreeSpace(path, options, diskfree, dbg);
}

}  // namespace steadyeval
