// Time as an interface (STYLE: "the OS is an interface"): logic asks a Clock, tests pass
// a FakeClock and advance it instead of sleeping.
#ifndef STEADYEVAL_COMMON_CLOCK_H_
#define STEADYEVAL_COMMON_CLOCK_H_

#include <atomic>
#include <chrono>
#include <cstdint>

namespace steadyeval {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic nanoseconds since an arbitrary origin (leases, quiescence, backoff).
  virtual int64_t MonotonicNanos() const = 0;
  // Wall-clock milliseconds since the Unix epoch (only for display and records).
  virtual int64_t UnixMillis() const = 0;

  double MonotonicSeconds() const { return MonotonicNanos() / 1e9; }

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
};

inline Clock* Clock::Real() {
  static RealClock* clock = new RealClock;
  return clock;
}

// A clock that moves only when told to. Thread-safe.
class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t start_nanos = 1'000'000'000, int64_t unix_ms = 1'700'000'000'000)
      : nanos_(start_nanos), unix_ms_(unix_ms) {}
  int64_t MonotonicNanos() const override { return nanos_.load(); }
  int64_t UnixMillis() const override { return unix_ms_.load(); }
  void AdvanceSeconds(double s) { AdvanceNanos(static_cast<int64_t>(s * 1e9)); }
  void AdvanceNanos(int64_t n) {
    nanos_ += n;
    unix_ms_ += n / 1'000'000;
  }

 private:
  std::atomic<int64_t> nanos_;
  std::atomic<int64_t> unix_ms_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_CLOCK_H_
