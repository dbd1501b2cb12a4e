// Waiting in real time for a condition that other threads or processes make true.
#ifndef STEADYEVAL_TESTING_WAIT_H_
#define STEADYEVAL_TESTING_WAIT_H_

#include <chrono>
#include <functional>

namespace steadyeval::testing {

// Polls `condition` every `poll` until it returns true or `timeout` passes; returns the
// last result. This waits for a state; it assumes no timing (a test fails only when the
// state never comes). Logic under a Clock is tested with FakeClock instead.
bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
             std::chrono::milliseconds poll = std::chrono::milliseconds(100));

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_WAIT_H_
