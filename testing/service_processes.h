// The real binaries as an end-to-end test runs them: a coordinator on 127.0.0.1 (free
// ports, its data and logs in a test's folder), workers connected to it, and the CLI.
// Every process is killed when the object dies.
//
// Not thread-safe: use it from the test's thread.
#ifndef STEADYEVAL_TESTING_SERVICE_PROCESSES_H_
#define STEADYEVAL_TESTING_SERVICE_PROCESSES_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "testing/process.h"

namespace steadyeval::testing {

// Runs BinDir()/steadyeval-fixtures with `args` (e.g. {"tokenizer", "--out", DIR}).
CommandResult RunFixtures(std::vector<std::string> args);
// A checkpoint folder's name as trainers write it: "step_000100" for 100.
std::string StepFolderName(uint64_t step);
// How many checkpoints of a `checkpoints RUN` listing (CLI JSON) are in `state`.
size_t CountCheckpoints(const nlohmann::json& listing, const std::string& state);

class ServiceProcesses {
 public:
  // Data, ready files and logs go under `dir`; binaries come from BinDir().
  explicit ServiceProcesses(std::string dir);

  // Starts steadyeval-server with --data_dir DIR/data, gRPC and metrics on free ports,
  // --poll_interval_ms 200 and `flags` (which may override any of them), and waits until
  // it serves. UNAVAILABLE with its logs when it does not come up within 30 s.
  absl::Status StartCoordinator(const std::vector<std::string>& flags = {});

  // Starts steadyeval-worker `name` against the coordinator with one thread, a 500 ms
  // long poll and `flags`; its logs go to DIR/NAME.{out,err}.
  absl::StatusOr<ChildProcess*> StartWorker(const std::string& name,
                                            const std::vector<std::string>& flags = {});

  // The CLI with --server ADDRESS --json prepended.
  CommandResult RunCli(std::vector<std::string> args) const;
  // As RunCli, expecting success and JSON (a gtest failure otherwise; then null).
  nlohmann::json Cli(std::vector<std::string> args) const;
  // `scores RUN` as (step, task) -> score.
  std::map<std::pair<uint64_t, std::string>, double> Scores(const std::string& run) const;

  const std::string& address() const { return address_; }
  ChildProcess& coordinator() { return coordinator_; }
  std::deque<ChildProcess>& workers() { return workers_; }  // references stay valid
  // Everything the coordinator and the workers printed, for failure messages.
  std::string Logs() const;

 private:
  std::string dir_;
  std::string bin_;
  std::string address_;
  int coordinator_starts_ = 0;
  ChildProcess coordinator_;
  std::deque<ChildProcess> workers_;
};

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_SERVICE_PROCESSES_H_
