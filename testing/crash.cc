#include "testing/crash.h"

#include <filesystem>
#include <regex>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace steadyeval::testing {
namespace fs = std::filesystem;

void PauseFor(std::chrono::microseconds duration) { std::this_thread::sleep_for(duration); }

uint64_t WalBytes(const std::string& data_dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (fs::directory_iterator it(data_dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() != ".log") continue;
    std::error_code size_ec;
    const uintmax_t size = fs::file_size(it->path(), size_ec);
    if (!size_ec) total += size;
  }
  return total;
}

bool WaitForWalGrowth(const std::string& data_dir, uint64_t min_bytes,
                      std::chrono::milliseconds timeout, std::chrono::microseconds poll) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  uint64_t baseline = WalBytes(data_dir);
  while (true) {
    const uint64_t now = WalBytes(data_dir);
    if (now < baseline) baseline = now;  // an old log was deleted
    if (now - baseline >= min_bytes) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(poll);
  }
}

WorkerJobLog ParseWorkerJobLog(const std::string& log) {
  static const std::regex kLeased(R"(job (\d+) \(.*\) leased, epoch (\d+)$)");
  static const std::regex kDone(R"(job (\d+) done$)");
  WorkerJobLog parsed;
  std::istringstream lines(log);
  std::string line;
  std::smatch m;
  while (std::getline(lines, line)) {
    uint64_t job = 0;
    uint64_t epoch = 0;
    if (std::regex_search(line, m, kLeased) && absl::SimpleAtoi(m[1].str(), &job) &&
        absl::SimpleAtoi(m[2].str(), &epoch)) {
      parsed.leased_epochs[job].push_back(epoch);
    } else if (std::regex_search(line, m, kDone) && absl::SimpleAtoi(m[1].str(), &job)) {
      ++parsed.acknowledged[job];
    }
  }
  return parsed;
}

}  // namespace steadyeval::testing
