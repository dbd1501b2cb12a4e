#include "testing/service_processes.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "testing/files.h"
#include "testing/wait.h"

namespace steadyeval::testing {

namespace fs = std::filesystem;
using json = nlohmann::json;

CommandResult RunFixtures(std::vector<std::string> args) {
  args.insert(args.begin(), BinDir() + "/steadyeval-fixtures");
  return RunCommand(args);
}

std::string StepFolderName(uint64_t step) {
  char name[32];
  snprintf(name, sizeof(name), "step_%06llu", static_cast<unsigned long long>(step));
  return name;
}

size_t CountCheckpoints(const json& listing, const std::string& state) {
  // find(): a failed Cli() returns null, which counts as none (the Cli call already failed
  // the test).
  const auto checkpoints = listing.find("checkpoints");
  if (checkpoints == listing.end()) return 0;
  size_t n = 0;
  for (const auto& c : *checkpoints) n += c["state"] == state;
  return n;
}

ServiceProcesses::ServiceProcesses(std::string dir) : dir_(std::move(dir)), bin_(BinDir()) {
  fs::create_directories(dir_);
}

absl::Status ServiceProcesses::StartCoordinator(const std::vector<std::string>& flags) {
  const std::string ready = dir_ + "/ready.json";
  std::error_code ec;
  fs::remove(ready, ec);
  std::vector<std::string> argv = {bin_ + "/steadyeval-server", "--data_dir", dir_ + "/data",
                                   "--listen", "127.0.0.1:0", "--metrics_listen", "127.0.0.1:0",
                                   "--ready_file", ready, "--poll_interval_ms", "200"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  absl::StatusOr<ChildProcess> started =
      ChildProcess::Start(argv, absl::StrCat(dir_, "/server", ++coordinator_starts_));
  if (!started.ok()) return started.status();
  coordinator_ = std::move(*started);
  if (!WaitFor([&] { return fs::exists(ready) && fs::file_size(ready) > 0; },
               std::chrono::seconds(30))) {
    return absl::UnavailableError(
        absl::StrCat("steadyeval-server did not serve within 30 s:\n", coordinator_.Logs()));
  }
  json info = json::parse(ReadFileOrEmpty(ready), nullptr, false);
  if (info.is_discarded() || !info.contains("grpc")) {
    return absl::UnavailableError(absl::StrCat("unreadable ready file ", ready));
  }
  address_ = info["grpc"].get<std::string>();
  return absl::OkStatus();
}

absl::StatusOr<ChildProcess*> ServiceProcesses::StartWorker(const std::string& name,
                                                            const std::vector<std::string>& flags) {
  std::vector<std::string> argv = {bin_ + "/steadyeval-worker", "--coordinator", address_,
                                   "--name", name, "--threads", "1", "--acquire_wait_ms", "500"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  absl::StatusOr<ChildProcess> started = ChildProcess::Start(argv, dir_ + "/" + name);
  if (!started.ok()) return started.status();
  workers_.push_back(std::move(*started));
  return &workers_.back();
}

CommandResult ServiceProcesses::RunCli(std::vector<std::string> args) const {
  args.insert(args.begin(), {bin_ + "/steadyeval", "--server", address_, "--json"});
  return RunCommand(args);
}

json ServiceProcesses::Cli(std::vector<std::string> args) const {
  CommandResult r = RunCli(std::move(args));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  json doc = json::parse(r.out, nullptr, false);
  EXPECT_FALSE(doc.is_discarded()) << r.out;
  return doc.is_discarded() ? json() : doc;
}

std::map<std::pair<uint64_t, std::string>, double> ServiceProcesses::Scores(
    const std::string& run) const {
  std::map<std::pair<uint64_t, std::string>, double> out;
  const json scores = Cli({"scores", run});
  for (const auto& s : scores["scores"]) {
    out[{s["step"].get<uint64_t>(), s["task"].get<std::string>()}] = s["score"].get<double>();
  }
  return out;
}

std::string ServiceProcesses::Logs() const {
  std::string all = coordinator_.Logs();
  for (const ChildProcess& w : workers_) all += w.Logs();
  return all;
}

}  // namespace steadyeval::testing
