// `steadyeval`: the command-line client. All logic lives in client/cli.h; this file only
// opens the gRPC channel (TLS and token: common/grpc_channel.h).
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "client/cli.h"
#include "common/grpc_channel.h"
#include "steadyeval/v1/eval_service.grpc.pb.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const char* env_server = std::getenv("STEADYEVAL_SERVER");
  steadyeval::client::ConnectionStubFactory make_stub =
      [](const steadyeval::client::Connection& connection)
      -> absl::StatusOr<std::unique_ptr<steadyeval::v1::EvalService::StubInterface>> {
    steadyeval::ChannelOptions options;
    options.target = connection.server;
    options.token_file = connection.token_file;
    options.ca_cert = connection.ca_cert;
    options.client_cert = connection.client_cert;
    options.client_key = connection.client_key;
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = steadyeval::OpenChannel(options);
    if (!channel.ok()) return channel.status();
    return steadyeval::v1::EvalService::NewStub(*channel);
  };
  return steadyeval::client::RunCli(args, env_server == nullptr ? "" : env_server, make_stub,
                                    std::cout, std::cerr);
}
