// Averaging streams: one window of 10 fp32 checkpoints of S bytes each must peak well below
// 3·S of resident memory (n models would be 10·S; so would keeping every member's mapped
// pages resident). Measured as the peak-RSS delta (VmHWM − VmRSS before) in a forked child,
// whose high-water mark is also reset through /proc/self/clear_refs where the kernel allows,
// so nothing the test process did earlier counts; free heap pages are returned first
// (malloc_trim) so reusing them cannot hide an allocation.
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <string>

#include <ATen/ATen.h>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/averaging/averager.h"
#include "worker/backend/offline.h"
#include "worker/checkpoint/test_checkpoints.h"
#include "worker/test_fixtures.h"

namespace steadyeval {
namespace {

using namespace testing_checkpoints;
using namespace testing_fixtures;

constexpr int kMembers = 10;
constexpr int kTensors = 8;
constexpr int64_t kRows = 768, kCols = 1024;  // 3 MiB per fp32 tensor
constexpr uint64_t kCheckpointBytes = kTensors * kRows * kCols * 4;  // S = 24 MiB

// "VmHWM" / "VmRSS" of this process in bytes (-1 when unreadable).
int64_t StatusBytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1)) * 1024;
  }
  return -1;
}

// Runs `work` in a forked child and returns the child's peak RSS growth in bytes
// (-1 when the child failed).
int64_t PeakRssDeltaInChild(const std::function<bool()>& work) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    // Free heap memory the parent left resident would be reused without growing RSS and
    // hide allocations: give it back first, then reset VmHWM (Linux >= 4.0).
    malloc_trim(0);
    { std::ofstream("/proc/self/clear_refs") << "5"; }
    const int64_t before = StatusBytes("VmRSS");
    const bool ok = work();
    const int64_t peak = StatusBytes("VmHWM");
    const int64_t delta = ok && before >= 0 && peak >= 0 ? peak - before : -1;
    (void)!write(fds[1], &delta, sizeof(delta));
    _exit(0);
  }
  close(fds[1]);
  int64_t delta = -1;
  if (read(fds[0], &delta, sizeof(delta)) != sizeof(delta)) delta = -1;
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return delta;
}

class AveragerMemoryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_OK(ConfigureThreads(1));  // no thread pools before fork()
    dir_ = new std::string(std::filesystem::path(::testing::TempDir()) / "steadyeval_avg_memory");
    std::filesystem::remove_all(*dir_);
    for (int m = 0; m < kMembers; ++m) {
      NamedTensors tensors;
      at::manual_seed(m);
      for (int t = 0; t < kTensors; ++t) {
        tensors.emplace_back("layer." + std::to_string(t) + ".weight", at::randn({kRows, kCols}));
      }
      tensors.emplace_back("step", at::tensor({int64_t{m}}));
      const std::string member = *dir_ + "/step_" + std::to_string(m);
      WriteTestCheckpoint(member, R"({"model_type": "llama"})", tensors, /*shards=*/1 + m % 2);
      members_.push_back({member, static_cast<uint64_t>(m + 1)});
    }
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  static std::string* dir_;
  static std::vector<WindowMember> members_;
};

std::string* AveragerMemoryTest::dir_ = nullptr;
std::vector<WindowMember> AveragerMemoryTest::members_;

TEST_F(AveragerMemoryTest, FromScratchAveragePeaksBelowThreeCheckpoints) {
  std::vector<std::string> dirs;
  for (const WindowMember& m : members_) dirs.push_back(m.dir);
  const int64_t delta = PeakRssDeltaInChild([&] {
    auto average = AverageCheckpoints(dirs);
    return average.ok() && (*average)->bytes() == kCheckpointBytes + 8;
  });
  ASSERT_GT(delta, 0) << "averaging failed in the child, or /proc/self/status is unreadable";
  fprintf(stderr, "peak RSS growth %.1f MiB for a window of %d checkpoints of %.1f MiB\n",
          delta / 1048576.0, kMembers, kCheckpointBytes / 1048576.0);
  // The result alone is S; a measurement below it means the probe is broken.
  EXPECT_GE(static_cast<uint64_t>(delta), kCheckpointBytes);
  EXPECT_LT(static_cast<uint64_t>(delta), 3 * kCheckpointBytes);
}

TEST_F(AveragerMemoryTest, CachedWindowSumPeaksBelowThreeCheckpointsBeyondTheModel) {
  // The held fp64 sum is 2·S by design; with the S-byte result (the model) that is 3·S,
  // so streaming must keep everything else small: < 3·S beyond the model itself.
  const int64_t delta = PeakRssDeltaInChild([&] {
    WindowSumCache cache({/*budget_bytes=*/4 * kCheckpointBytes, 8});
    auto average = cache.Average("run", members_);
    return average.ok() && cache.last_path() == WindowSumCache::Path::kRebuilt &&
           cache.held_bytes() == 2 * kCheckpointBytes;
  });
  ASSERT_GT(delta, 0) << "averaging failed in the child, or /proc/self/status is unreadable";
  fprintf(stderr, "peak RSS growth %.1f MiB with the window sum held\n", delta / 1048576.0);
  EXPECT_GE(static_cast<uint64_t>(delta), 3 * kCheckpointBytes);
  EXPECT_LT(static_cast<uint64_t>(delta), 4 * kCheckpointBytes);
}

}  // namespace
}  // namespace steadyeval
