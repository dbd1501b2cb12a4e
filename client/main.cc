// `steadyeval`: the command-line client. All logic lives in client/cli.h; this file only
// opens the gRPC channel.
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "client/cli.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "steadyeval/v1/eval_service.grpc.pb.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const char* env_server = std::getenv("STEADYEVAL_SERVER");
  auto make_stub = [](const std::string& server)
      -> std::unique_ptr<steadyeval::v1::EvalService::StubInterface> {
    auto channel = grpc::CreateChannel(server, grpc::InsecureChannelCredentials());
    return steadyeval::v1::EvalService::NewStub(channel);
  };
  return steadyeval::client::RunCli(args, env_server == nullptr ? "" : env_server, make_stub,
                                    std::cout, std::cerr);
}
