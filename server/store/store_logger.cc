#include "server/store/store_logger.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace steadyeval {
namespace {

constexpr size_t kMaxCorruptionLines = 16;

int OpenLog(const std::string& path) {
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

// "2026/12/06-07:52:58.715006" (local time), as RocksDB's own LOG lines start.
std::string Timestamp() {
  struct timeval now;
  gettimeofday(&now, nullptr);
  struct tm t;
  localtime_r(&now.tv_sec, &t);
  char buf[96];
  snprintf(buf, sizeof(buf), "%04d/%02d/%02d-%02d:%02d:%02d.%06ld", t.tm_year + 1900,
           t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
           static_cast<long>(now.tv_usec));
  return buf;
}

bool EndsWithDigitsAnd(absl::string_view name, absl::string_view suffix) {
  if (!absl::EndsWith(name, suffix)) return false;
  name.remove_suffix(suffix.size());
  if (name.empty()) return false;
  for (char c : name) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::shared_ptr<StoreLogger>> StoreLogger::Open(const std::string& dir,
                                                               uint64_t max_bytes) {
  const std::string path = dir + "/LOG";
  int fd = OpenLog(path);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot open RocksDB's log ", path, ": ", strerror(errno)));
  }
  struct stat st;
  const uint64_t size = fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return std::shared_ptr<StoreLogger>(new StoreLogger(dir, max_bytes, fd, size));
}

StoreLogger::StoreLogger(std::string dir, uint64_t max_bytes, int fd, uint64_t size)
    : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL),
      dir_(std::move(dir)),
      max_bytes_(max_bytes),
      fd_(fd),
      size_(size) {}

StoreLogger::~StoreLogger() { CloseImpl().PermitUncheckedError(); }

rocksdb::Status StoreLogger::CloseImpl() {
  absl::MutexLock lock(&mu_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  return rocksdb::Status::OK();
}

void StoreLogger::RotateLocked() {
  if (fd_ >= 0) ::close(fd_);
  // A failed rename (e.g. no space for the directory entry) keeps appending to LOG.
  ::rename((dir_ + "/LOG").c_str(), (dir_ + "/LOG.old").c_str());
  fd_ = OpenLog(dir_ + "/LOG");
  struct stat st;
  size_ = fd_ >= 0 && fstat(fd_, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

void StoreLogger::Logv(const char* format, va_list ap) {
  char body[4096];
  va_list copy;
  va_copy(copy, ap);
  const int n = vsnprintf(body, sizeof(body), format, copy);
  va_end(copy);
  if (n < 0) return;
  std::string line = absl::StrCat(Timestamp(), " ", static_cast<long>(gettid()), " ", body);
  if (line.empty() || line.back() != '\n') line.push_back('\n');

  absl::MutexLock lock(&mu_);
  if (absl::StrContains(line, "orruption") && corruption_lines_.size() < kMaxCorruptionLines) {
    corruption_lines_.push_back(line.substr(0, line.size() - 1));
  }
  if (size_ + line.size() > max_bytes_ && size_ > 0) RotateLocked();
  if (fd_ < 0) {
    ++dropped_;
    return;
  }
  const ssize_t written = ::write(fd_, line.data(), line.size());
  if (written != static_cast<ssize_t>(line.size())) {
    ++dropped_;
    // A partial line is left as it is: the next line starts after it.
    if (written > 0) size_ += static_cast<uint64_t>(written);
    return;
  }
  size_ += line.size();
}

std::vector<std::string> StoreLogger::CorruptionLines() const {
  absl::MutexLock lock(&mu_);
  return corruption_lines_;
}

uint64_t StoreLogger::dropped_lines() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

std::vector<std::string> StoreLogger::FilesNamedIn(const std::string& line) {
  std::vector<std::string> files;
  for (absl::string_view token : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
    while (!token.empty() && (token.back() == ':' || token.back() == ',' ||
                              token.back() == ';' || token.back() == '.')) {
      token.remove_suffix(1);
    }
    const size_t slash = token.rfind('/');
    absl::string_view name = slash == absl::string_view::npos ? token : token.substr(slash + 1);
    if (EndsWithDigitsAnd(name, ".log") || EndsWithDigitsAnd(name, ".sst") ||
        EndsWithDigitsAnd(name, ".blob") ||
        (absl::StartsWith(name, "MANIFEST-") && name.size() > 9)) {
      files.emplace_back(name);
    }
  }
  return files;
}

}  // namespace steadyeval
