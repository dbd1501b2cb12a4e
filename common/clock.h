// Time as an interface (STYLE: "the OS is an interface"): logic asks a Clock, and waits
// through it; tests pass a FakeClock and advance it instead of sleeping.
#ifndef STEADYEVAL_COMMON_CLOCK_H_
#define STEADYEVAL_COMMON_CLOCK_H_

#include <atomic>
#include <chrono>
#include <cstdint>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace steadyeval {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic nanoseconds since an arbitrary origin (leases, quiescence, backoff).
  virtual int64_t MonotonicNanos() const = 0;
  // Wall-clock milliseconds since the Unix epoch (only for display and records).
  virtual int64_t UnixMillis() const = 0;

  double MonotonicSeconds() const { return MonotonicNanos() / 1e9; }

  // With `mu` held: waits until `cond` holds or `timeout_nanos` of this clock's time have
  // passed, releasing `mu` while it waits (absl::Mutex::AwaitWithTimeout). Returns whether
  // `cond` holds. `cond` is re-evaluated whenever `mu` is released by another thread, so
  // whatever makes it true must change under `mu`.
  virtual bool AwaitWithTimeout(absl::Mutex& mu, const absl::Condition& cond,
                                int64_t timeout_nanos) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) = 0;

  // Sleeps `nanos` of this clock's time (no early wake-up: use AwaitWithTimeout for that).
  void SleepFor(int64_t nanos) const {
    static constexpr bool kNever = false;
    absl::Mutex mu;
    absl::MutexLock lock(&mu);
    AwaitWithTimeout(mu, absl::Condition(&kNever), nanos);
  }

  // The process-wide real clock. Thread-safe.
  static Clock* Real();
};

class RealClock : public Clock {
 public:
  int64_t MonotonicNanos() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  int64_t UnixMillis() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  bool AwaitWithTimeout(absl::Mutex& mu, const absl::Condition& cond,
                        int64_t timeout_nanos) const override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return mu.AwaitWithTimeout(cond, absl::Nanoseconds(timeout_nanos > 0 ? timeout_nanos : 0));
  }
};

inline Clock* Clock::Real() {
  static RealClock* clock = new RealClock;
  return clock;
}

// A clock that moves only when told to. Thread-safe.
//
// AwaitWithTimeout returns when `cond` holds (as soon as `mu` is released, like the real
// clock) or once the clock has been advanced past the deadline; a waiter notices an Advance
// within about a millisecond of real time (it re-checks the fake time that often). Tests
// that need a waiter to be waiting before they advance call WaitForWaiters.
class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t start_nanos = 1'000'000'000, int64_t unix_ms = 1'700'000'000'000)
      : nanos_(start_nanos), unix_ms_(unix_ms) {}
  int64_t MonotonicNanos() const override { return nanos_.load(); }
  int64_t UnixMillis() const override { return unix_ms_.load(); }
  bool AwaitWithTimeout(absl::Mutex& mu, const absl::Condition& cond,
                        int64_t timeout_nanos) const override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const int64_t deadline = nanos_.load() + (timeout_nanos > 0 ? timeout_nanos : 0);
    waiters_ += 1;
    struct Args {
      const absl::Condition* cond;
      const std::atomic<int64_t>* now;
      int64_t deadline;
    } args{&cond, &nanos_, deadline};
    const absl::Condition done(
        +[](Args* a) { return a->cond->Eval() || a->now->load() >= a->deadline; }, &args);
    while (!mu.AwaitWithTimeout(done, absl::Milliseconds(1))) {
    }
    waiters_ -= 1;
    return cond.Eval();
  }
  // Blocks (in real time) until at least `n` threads are inside AwaitWithTimeout.
  void WaitForWaiters(int n) const {
    while (waiters_.load() < n) absl::SleepFor(absl::Microseconds(200));
  }
  int Waiters() const { return waiters_.load(); }
  void AdvanceSeconds(double s) { AdvanceNanos(static_cast<int64_t>(s * 1e9)); }
  void AdvanceNanos(int64_t n) {
    nanos_ += n;
    unix_ms_ += n / 1'000'000;
  }

 private:
  std::atomic<int64_t> nanos_;
  std::atomic<int64_t> unix_ms_;
  mutable std::atomic<int> waiters_{0};
};

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_CLOCK_H_
