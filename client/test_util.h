// Test helpers shared by the client tests (cli_test, plot_test, watch_test): a canned
// server stream for the generated mock stub, a way to run the whole CLI (`RunCli`)
// against one mock stub while capturing its exit code, stdout and stderr, and a scratch
// folder per test.
//
// Header-only; for tests only. It includes the generated mock header, which has no include
// guard: a test that includes this header must not include that one again.
#ifndef STEADYEVAL_CLIENT_TEST_UTIL_H_
#define STEADYEVAL_CLIENT_TEST_UTIL_H_

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "client/cli.h"
#include "grpcpp/support/sync_stream.h"
#include "gtest/gtest.h"
#include "steadyeval/v1/eval_service_mock.grpc.pb.h"

namespace steadyeval::client::testing {

using MockStub = v1::MockEvalServiceStub;

// A server stream that yields `items` and then finishes with `status`.
template <typename T>
class FakeReader : public grpc::ClientReaderInterface<T> {
 public:
  FakeReader(std::vector<T> items, grpc::Status status)
      : items_(std::move(items)), status_(std::move(status)) {}
  bool Read(T* msg) override {
    if (next_ >= items_.size()) return false;
    *msg = items_[next_++];
    return true;
  }
  grpc::Status Finish() override { return status_; }
  bool NextMessageSize(uint32_t* size) override {
    if (next_ >= items_.size()) return false;
    *size = static_cast<uint32_t>(items_[next_].ByteSizeLong());
    return true;
  }
  void WaitForInitialMetadata() override {}

 private:
  std::vector<T> items_;
  grpc::Status status_;
  size_t next_ = 0;
};

// What one `RunCli` call did.
struct CliResult {
  int code = -1;
  std::string out;
  std::string err;
  std::string server;  // the address the stub was made for
};

// Runs the CLI on `args` with $STEADYEVAL_SERVER set to `env_server`; the stub factory
// hands out `stub` (once) whatever address it is asked for, and records that address.
inline CliResult RunWith(const std::vector<std::string>& args, std::unique_ptr<MockStub> stub,
                         const std::string& env_server = "") {
  CliResult result;
  std::ostringstream out, err;
  auto factory = [&](const std::string& server)
      -> std::unique_ptr<v1::EvalService::StubInterface> {
    result.server = server;
    return std::move(stub);
  };
  result.code = RunCli(args, env_server, factory, out, err);
  result.out = out.str();
  result.err = err.str();
  return result;
}

// A fresh folder for the running test (under gtest's temp dir, named after the process and
// the test), removed when it goes out of scope.
class TempDir {
 public:
  TempDir() {
    const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::path(::testing::TempDir()) /
            (std::string(test->test_suite_name()) + "_" + std::to_string(::getpid()) + "_" +
             test->name());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  // The path of `name` in the folder.
  std::string File(const std::string& name) const { return (path_ / name).string(); }
  // Writes `content` to `name` in the folder; returns its path.
  std::string Write(const std::string& name, const std::string& content) const {
    std::ofstream(path_ / name, std::ios::binary) << content;
    return File(name);
  }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace steadyeval::client::testing

#endif  // STEADYEVAL_CLIENT_TEST_UTIL_H_
