// Runs the whole `steadyeval` CLI (RunCli) in the test's process against one generated mock
// EvalService stub, capturing its exit code, stdout and stderr. Canned server streams for
// the stub are testing/grpc_fakes.h's FakeReader.
//
// It includes the generated mock header, which has no include guard: a test that
// includes this header must not include that one again.
#ifndef STEADYEVAL_TESTING_CLI_RUNNER_H_
#define STEADYEVAL_TESTING_CLI_RUNNER_H_

#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "client/cli.h"
#include "steadyeval/v1/eval_service_mock.grpc.pb.h"

namespace steadyeval::testing {

using MockStub = v1::MockEvalServiceStub;

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
  result.code = client::RunCli(args, env_server, factory, out, err);
  result.out = out.str();
  result.err = err.str();
  return result;
}

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_CLI_RUNNER_H_
