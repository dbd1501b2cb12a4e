// A fixture for in-process coordinator servers: a CoordinatorServer on 127.0.0.1 (gRPC
// and /metrics on free ports) over a fresh folder, with scripted checkpoint discovery
// (checkpoints_) and the background threads off, and stubs for both services.
#ifndef STEADYEVAL_TESTING_IN_PROCESS_SERVER_H_
#define STEADYEVAL_TESTING_IN_PROCESS_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "server/rpc/server.h"
#include "testing/coordinator_fixture.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"

namespace steadyeval::testing {

class InProcessServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ScratchDir("server");
    std::filesystem::create_directories(root_ / "ckpt");
    ServerOptions options;
    options.data_dir = (root_ / "db").string();
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "127.0.0.1:0";
    options.discovery = checkpoints_.Factory();
    options.start_background = false;  // the test drives checkpoint polling
    auto server = CoordinatorServer::Start(options);
    ASSERT_OK(server);
    server_ = std::move(*server);
    channel_ = grpc::CreateChannel(server_->grpc_address(), grpc::InsecureChannelCredentials());
    eval_ = v1::EvalService::NewStub(channel_);
    worker_ = v1::WorkerService::NewStub(channel_);
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(root_);
  }

  std::filesystem::path root_;
  FakeCheckpoints checkpoints_;
  std::unique_ptr<CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::EvalService::Stub> eval_;
  std::unique_ptr<v1::WorkerService::Stub> worker_;
};

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_IN_PROCESS_SERVER_H_
