// Test support for crash tests: the moments at which a test injects a fault (random pauses
// drawn from a seeded generator, and a trigger on a RocksDB commit reaching the write-ahead
// log), and the worker log lines that say which reports a coordinator acknowledged.
#ifndef STEADYEVAL_TESTING_CRASH_H_
#define STEADYEVAL_TESTING_CRASH_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace steadyeval::testing {

// Blocks the calling thread for `duration`. Only for a chaos test's input (the random
// moment at which it kills a process or writes a checkpoint), never to wait for a state:
// use WaitFor for that.
void PauseFor(std::chrono::microseconds duration);

// The total size of the RocksDB write-ahead logs (`*.log`) in `data_dir`.
uint64_t WalBytes(const std::string& data_dir);

// Polls `data_dir`'s write-ahead logs every `poll` until they grew by at least `min_bytes`
// since the call (a commit of that size reached the log: in this project a lease commit
// writes a few hundred bytes, a report commit several KB), or `timeout` passes. Returns
// whether they grew. When RocksDB drops an old log the count starts over from there.
bool WaitForWalGrowth(const std::string& data_dir, uint64_t min_bytes,
                      std::chrono::milliseconds timeout,
                      std::chrono::microseconds poll = std::chrono::microseconds(250));

// What a worker's log says about the jobs it was leased and the reports the coordinator
// acknowledged (steadyeval-worker prints "job N (...) leased, epoch E" when a lease
// arrives and "job N done" only after ReportResults returned OK).
struct WorkerJobLog {
  std::map<uint64_t, std::vector<uint64_t>> leased_epochs;  // job id -> epochs, in order
  std::map<uint64_t, int> acknowledged;                     // job id -> "done" lines
};
WorkerJobLog ParseWorkerJobLog(const std::string& log);

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_CRASH_H_
