#include "common/clock.h"

#include <thread>

#include "gtest/gtest.h"

namespace steadyeval {
namespace {

TEST(FakeClockTest, AwaitReturnsFalseOnlyOnceAdvancedPastTheDeadline) {
  FakeClock clock;
  absl::Mutex mu;
  bool ready = false;
  bool result = true;
  std::thread waiter([&] {
    absl::MutexLock lock(&mu);
    result = clock.AwaitWithTimeout(mu, absl::Condition(&ready), 5'000'000'000);
  });
  clock.WaitForWaiters(1);
  clock.AdvanceSeconds(4.9);
  absl::SleepFor(absl::Milliseconds(20));  // more than the waiter's re-check period
  EXPECT_EQ(clock.Waiters(), 1) << "returned before its deadline";
  clock.AdvanceSeconds(0.2);
  waiter.join();
  EXPECT_FALSE(result);
}

TEST(FakeClockTest, AwaitReturnsTrueWhenTheConditionIsSet) {
  FakeClock clock;
  absl::Mutex mu;
  bool ready = false;
  bool result = false;
  std::thread waiter([&] {
    absl::MutexLock lock(&mu);
    result = clock.AwaitWithTimeout(mu, absl::Condition(&ready), 5'000'000'000);
  });
  clock.WaitForWaiters(1);
  {
    absl::MutexLock lock(&mu);
    ready = true;
  }
  waiter.join();
  EXPECT_TRUE(result);
  EXPECT_EQ(clock.Waiters(), 0);
}

TEST(RealClockTest, AwaitTimesOutInRealTime) {
  absl::Mutex mu;
  bool ready = false;
  const int64_t start = Clock::Real()->MonotonicNanos();
  absl::MutexLock lock(&mu);
  EXPECT_FALSE(Clock::Real()->AwaitWithTimeout(mu, absl::Condition(&ready), 20'000'000));
  EXPECT_GE(Clock::Real()->MonotonicNanos() - start, 20'000'000);
}

}  // namespace
}  // namespace steadyeval
