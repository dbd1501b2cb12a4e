// RocksDB's info log ("LOG" in the data dir) for the Store, written without RocksDB's own
// file writer.
//
// Why: Debian 12's librocksdb 7.8 is built with assertions on, and its default info logger
// writes through a WritableFileWriter that aborts the process (assertion
// `sync_without_flush_called_` in AssertFalseAndGetStatusForPrevError) on the first log
// line after a write to LOG failed, e.g. with ENOSPC. A full disk must refuse writes, not
// kill the coordinator, so this logger writes each line with write(2) and drops the lines
// it cannot write (counted in dropped_lines()).
//
// It keeps LOG bounded: past max_bytes the file is renamed to LOG.old (replacing it) and a
// new LOG is started, so the two take at most about 2 * max_bytes. It also remembers the
// lines that report corruption (RocksDB names the damaged file there, e.g.
// "…/000004.log: dropping 14129 bytes; Corruption: bad record length"), which
// Store::Open uses to name the file when it refuses to open. Thread-safe.
#ifndef STEADYEVAL_SERVER_STORE_STORE_LOGGER_H_
#define STEADYEVAL_SERVER_STORE_STORE_LOGGER_H_

#include <cstdarg>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/env.h"

namespace steadyeval {

class StoreLogger : public rocksdb::Logger {
 public:
  // Appends to `dir`/LOG (created if missing; `dir` must exist). UNAVAILABLE when it
  // cannot be opened.
  static absl::StatusOr<std::shared_ptr<StoreLogger>> Open(const std::string& dir,
                                                           uint64_t max_bytes = 1 << 20);
  ~StoreLogger() override;

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override;

  // The lines logged so far that mention corruption (at most the first 16), verbatim.
  std::vector<std::string> CorruptionLines() const;
  uint64_t dropped_lines() const;

  // The file names ("000004.log", "000009.sst", "MANIFEST-000005") mentioned in `line`,
  // in order, without their folders.
  static std::vector<std::string> FilesNamedIn(const std::string& line);

 protected:
  rocksdb::Status CloseImpl() override;

 private:
  StoreLogger(std::string dir, uint64_t max_bytes, int fd, uint64_t size);
  void RotateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string dir_;
  const uint64_t max_bytes_;
  mutable absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_);
  uint64_t size_ ABSL_GUARDED_BY(mu_);
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> corruption_lines_ ABSL_GUARDED_BY(mu_);
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_STORE_STORE_LOGGER_H_
