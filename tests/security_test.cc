// Who may call what (issue 16): the auth matrix against a real in-process coordinator
// with a tokens file, over plaintext loopback and over TLS / mTLS with certificates made
// by `openssl` for the test; and the real binaries: `steadyeval-server tokens add`, the
// CLI's --token_file, a refused non-loopback plaintext listen.
#include <grpcpp/grpcpp.h>
#include <grpcpp/generic/generic_stub.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/grpc_channel.h"
#include "testing/certificates.h"
#include "testing/files.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"
#include "testing/http.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/rpc/auth.h"
#include "testing/coordinator_fixture.h"
#include "server/rpc/server.h"
#include "steadyeval/v1/eval_service.grpc.pb.h"
#include "steadyeval/v1/worker_service.grpc.pb.h"
#include "testing/process.h"
#include "testing/wait.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::BinDir;
using ::steadyeval::testing::Certificates;
using ::steadyeval::testing::CommandResult;
using ::steadyeval::testing::FakeCheckpoints;
using ::steadyeval::testing::HttpGet;
using ::steadyeval::testing::HttpOkBody;
using ::steadyeval::testing::McTaskFile;
using ::steadyeval::testing::RunCommand;
using ::steadyeval::testing::StatusIs;
using ::steadyeval::testing::TempDir;
using ::steadyeval::testing::TestCertificates;
using ::steadyeval::testing::WriteFile;
using ::testing::HasSubstr;

// Tokens of each role, written to a tokens file as their hashes.
struct Tokens {
  std::string admin = "se_admin-token-for-tests";
  std::string reader = "se_reader-token-for-tests";
  std::string worker_a = "se_worker-a-token";
  std::string worker_b = "se_worker-b-token";
  std::string FileContent() const {
    return absl::StrCat("# tokens of security_test\n",
                        TokenTable::Line(Role::kAdmin, "alice", admin), "\n",
                        TokenTable::Line(Role::kReader, "dash", reader), "  # grafana\n\n",
                        TokenTable::Line(Role::kWorker, "pool-a", worker_a), "\n",
                        TokenTable::Line(Role::kWorker, "pool-b", worker_b), "\n");
  }
};

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override { WriteFile(tmp_ / "tokens", tokens_.FileContent()); }

  // Starts the server; `tls` 0 plaintext, 1 TLS, 2 mTLS.
  void StartServer(int tls) {
    ServerOptions options;
    options.data_dir = tmp_ / "db";
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "127.0.0.1:0";
    options.discovery = checkpoints_.Factory();
    options.start_background = false;
    options.tokens_file = tmp_ / "tokens";
    if (tls > 0) {
      const Certificates& certs = TestCertificates();
      ASSERT_EQ(certs.error, "");
      options.tls.cert = certs.server_cert;
      options.tls.key = certs.server_key;
      if (tls == 2) options.tls.client_ca = certs.ca;
    }
    auto server = CoordinatorServer::Start(options);
    ASSERT_OK(server);
    server_ = std::move(*server);
  }

  std::shared_ptr<grpc::Channel> Channel(const std::string& token, bool tls = false,
                                         bool client_cert = false, bool rogue_cert = false) {
    ChannelOptions options;
    options.target = server_->grpc_address();
    if (!token.empty()) {
      const std::string file = tmp_ / ("token-" + std::to_string(token_files_++));
      WriteFile(file, token + "\n");
      options.token_file = file;
    }
    if (tls) {
      const Certificates& certs = TestCertificates();
      options.ca_cert = certs.ca;
      if (client_cert) {
        options.client_cert = rogue_cert ? certs.rogue_cert : certs.client_cert;
        options.client_key = rogue_cert ? certs.rogue_key : certs.client_key;
      }
    }
    auto channel = OpenChannel(options);
    EXPECT_OK(channel);
    return channel.ok() ? *channel : nullptr;
  }

  static grpc::StatusCode ListRuns(const std::shared_ptr<grpc::Channel>& channel) {
    auto stub = v1::EvalService::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::ListRunsResponse response;
    return stub->ListRuns(&ctx, v1::ListRunsRequest(), &response).error_code();
  }
  grpc::Status CreateRun(const std::shared_ptr<grpc::Channel>& channel, const std::string& name) {
    auto stub = v1::EvalService::NewStub(channel);
    grpc::ClientContext ctx;
    v1::CreateRunRequest request;
    request.mutable_config()->set_name(name);
    request.mutable_config()->set_source(tmp_.path());
    *request.add_task_files() = McTaskFile();
    v1::Run run;
    return stub->CreateRun(&ctx, request, &run);
  }
  static grpc::Status Register(const std::shared_ptr<grpc::Channel>& channel,
                               const std::string& worker_id) {
    auto stub = v1::WorkerService::NewStub(channel);
    grpc::ClientContext ctx;
    v1::RegisterWorkerRequest request;
    request.set_worker_id(worker_id);
    request.set_protocol_version(2);
    v1::RegisterWorkerResponse response;
    return stub->RegisterWorker(&ctx, request, &response);
  }
  static grpc::Status Acquire(const std::shared_ptr<grpc::Channel>& channel,
                              const std::string& worker_id, v1::AcquireJobResponse* response) {
    auto stub = v1::WorkerService::NewStub(channel);
    grpc::ClientContext ctx;
    v1::AcquireJobRequest request;
    request.set_worker_id(worker_id);
    request.set_wait_ms(0);
    return stub->AcquireJob(&ctx, request, response);
  }
  std::string Metrics() {
    return HttpOkBody(HttpGet(server_->metrics_port(), "/metrics"));
  }

  TempDir tmp_;
  Tokens tokens_;
  FakeCheckpoints checkpoints_;
  std::unique_ptr<CoordinatorServer> server_;
  int token_files_ = 0;
};

TEST_F(SecurityTest, CallsWithoutAValidTokenAreUnauthenticated) {
  StartServer(0);
  EXPECT_EQ(ListRuns(Channel("")), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ListRuns(Channel("se_not-a-token")), grpc::StatusCode::UNAUTHENTICATED);
  // A token's hash is not a token.
  const std::string line = TokenTable::Line(Role::kAdmin, "alice", tokens_.admin);
  EXPECT_EQ(ListRuns(Channel(line.substr(line.rfind(' ') + 1))),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Register(Channel(""), "w").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(Metrics(), HasSubstr("steadyeval_auth_refused_total{method=\"EvalService/ListRuns\""
                                   ",reason=\"unauthenticated\"} 3"));
}

TEST_F(SecurityTest, EachRoleMayCallWhatItShouldAndNothingElse) {
  StartServer(0);
  auto admin = Channel(tokens_.admin);
  auto reader = Channel(tokens_.reader);
  auto worker = Channel(tokens_.worker_a);

  EXPECT_EQ(ListRuns(reader), grpc::StatusCode::OK);
  EXPECT_EQ(ListRuns(admin), grpc::StatusCode::OK);
  EXPECT_EQ(ListRuns(worker), grpc::StatusCode::PERMISSION_DENIED);

  grpc::Status refused = CreateRun(reader, "r");
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(refused.error_message(), HasSubstr("role reader"));
  EXPECT_EQ(CreateRun(worker, "r").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(CreateRun(admin, "r").error_code(), grpc::StatusCode::OK);
  checkpoints_.Add("r", 100);
  ASSERT_OK(server_->coordinator()->PollRunsOnce());
  {
    auto stub = v1::EvalService::NewStub(reader);
    grpc::ClientContext ctx;
    v1::UpdateRunRequest update;
    update.set_name("r");
    v1::Run run;
    EXPECT_EQ(stub->UpdateRun(&ctx, update, &run).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    auto stub = v1::EvalService::NewStub(reader);
    grpc::ClientContext ctx;
    v1::RescoreRequest rescore;
    rescore.set_run("r");
    v1::RescoreResponse response;
    EXPECT_EQ(stub->Rescore(&ctx, rescore, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }

  // WorkerService is for worker tokens only, admin included.
  EXPECT_EQ(Register(reader, "w").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Register(admin, "w").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Register(worker, "w").error_code(), grpc::StatusCode::OK);
  v1::AcquireJobResponse acquired;
  EXPECT_EQ(Acquire(worker, "w", &acquired).error_code(), grpc::StatusCode::OK);
  ASSERT_TRUE(acquired.has_job());

  // Task contents: only for a registered worker of the caller's token.
  auto worker_stub = v1::WorkerService::NewStub(worker);
  {
    grpc::ClientContext ctx;
    v1::GetTaskRequest request;
    request.set_sha256(acquired.lease().job().tasks(0).sha256());
    v1::TaskContent content;
    EXPECT_EQ(worker_stub->GetTask(&ctx, request, &content).error_code(),
              grpc::StatusCode::NOT_FOUND);  // no worker id: not registered
  }
  {
    grpc::ClientContext ctx;
    v1::GetTaskRequest request;
    request.set_sha256(acquired.lease().job().tasks(0).sha256());
    request.set_worker_id("w");
    v1::TaskContent content;
    EXPECT_EQ(worker_stub->GetTask(&ctx, request, &content).error_code(), grpc::StatusCode::OK);
    EXPECT_FALSE(content.content().empty());
  }

  const std::string metrics = Metrics();
  EXPECT_THAT(metrics, HasSubstr("steadyeval_auth_refused_total{method=\"EvalService/CreateRun\","
                                 "reason=\"permission_denied\"} 2"));
  EXPECT_THAT(metrics, HasSubstr("steadyeval_admin_actions_total{method=\"EvalService/CreateRun\","
                                 "result=\"ok\"} 1"));
}

TEST_F(SecurityTest, AWorkerIdBelongsToTheTokenThatRegisteredIt) {
  StartServer(0);
  auto pool_a = Channel(tokens_.worker_a);
  auto pool_b = Channel(tokens_.worker_b);
  ASSERT_TRUE(Register(pool_a, "gpu-0").ok());
  // Many workers may share one token; another token cannot take a registered id.
  EXPECT_TRUE(Register(pool_a, "gpu-1").ok());
  EXPECT_EQ(Register(pool_b, "gpu-0").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  v1::AcquireJobResponse response;
  EXPECT_EQ(Acquire(pool_b, "gpu-0", &response).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Acquire(pool_a, "gpu-0", &response).error_code(), grpc::StatusCode::OK);
  // A report for another token's worker is refused before anything is read.
  auto stub = v1::WorkerService::NewStub(pool_b);
  grpc::ClientContext ctx;
  v1::ReportResultsResponse report_response;
  auto writer = stub->ReportResults(&ctx, &report_response);
  v1::ReportResultsRequest report;
  report.set_worker_id("gpu-0");
  report.set_job_id(1);
  report.set_epoch(1);
  writer->Write(report);
  writer->WritesDone();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);

  // ListWorkers names the token each worker registered with.
  auto eval = v1::EvalService::NewStub(Channel(tokens_.reader));
  grpc::ClientContext list_ctx;
  v1::ListWorkersResponse workers;
  ASSERT_TRUE(eval->ListWorkers(&list_ctx, v1::ListWorkersRequest(), &workers).ok());
  ASSERT_EQ(workers.workers_size(), 2);
  EXPECT_EQ(workers.workers(0).token(), "pool-a");
}

TEST_F(SecurityTest, AReportForgedFromListJobsIsRefused) {
  StartServer(0);
  ASSERT_TRUE(CreateRun(Channel(tokens_.admin), "r").ok());
  checkpoints_.Add("r", 100);
  ASSERT_OK(server_->coordinator()->PollRunsOnce());
  auto pool_a = Channel(tokens_.worker_a);
  ASSERT_TRUE(Register(pool_a, "gpu-0").ok());
  v1::AcquireJobResponse acquired;
  ASSERT_TRUE(Acquire(pool_a, "gpu-0", &acquired).ok());
  ASSERT_TRUE(acquired.has_job());

  // What a reader sees of the lease: job id, epoch and holder, never the secret.
  auto eval = v1::EvalService::NewStub(Channel(tokens_.reader));
  grpc::ClientContext list_ctx;
  v1::ListJobsRequest list;
  auto reader = eval->ListJobs(&list_ctx, list);
  v1::Job seen;
  v1::Job leased;
  while (reader->Read(&seen)) {
    if (seen.state() == v1::JOB_LEASED) leased = seen;
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(leased.id(), acquired.lease().job().id());
  EXPECT_EQ(leased.DebugString().find(acquired.lease().lease_secret()), std::string::npos);

  // Another process holding the same worker token forges the holder's report from that.
  auto report = [&](const std::string& secret) {
    auto stub = v1::WorkerService::NewStub(Channel(tokens_.worker_a));
    grpc::ClientContext ctx;
    v1::ReportResultsResponse response;
    auto writer = stub->ReportResults(&ctx, &response);
    v1::ReportResultsRequest r;
    r.set_worker_id(leased.worker_id());
    r.set_job_id(leased.id());
    r.set_epoch(leased.epoch());
    r.set_lease_secret(secret);
    r.set_step(100);
    *r.mutable_task() = acquired.lease().task_headers(0).ref();
    for (uint32_t i = 0; i < 3; ++i) {
      v1::ExampleOutput* o = r.add_outputs();
      o->set_index(i);
      o->set_output("1");
    }
    r.set_task_complete(true);
    writer->Write(r);
    writer->WritesDone();
    return writer->Finish();
  };
  EXPECT_EQ(report("").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(report(std::string(32, '0')).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  {
    auto stub = v1::WorkerService::NewStub(Channel(tokens_.worker_a));
    grpc::ClientContext ctx;
    v1::FailJobRequest fail;
    fail.set_worker_id(leased.worker_id());
    fail.set_job_id(leased.id());
    fail.set_epoch(leased.epoch());
    fail.set_reason("forged");
    v1::FailJobResponse response;
    EXPECT_EQ(stub->FailJob(&ctx, fail, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  // Nothing was written: the job is still leased to its holder.
  std::optional<v1::Job> job = server_->coordinator()->scheduler()->GetJob(leased.id());
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->state(), v1::JOB_LEASED);
}

TEST_F(SecurityTest, HealthNeedsNoToken) {
  StartServer(0);
  grpc::GenericStub stub(Channel(""));
  grpc::ClientContext ctx;
  grpc::Slice empty;
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status status) { done.set_value(std::move(status)); });
  ASSERT_TRUE(done.get_future().get().ok());
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // HealthCheckResponse{status: SERVING}
}

TEST_F(SecurityTest, SighupReloadsTokensAndKeepsThemWhenTheNewFileIsBad) {
  StartServer(0);
  auto reader = Channel(tokens_.reader);
  EXPECT_EQ(ListRuns(reader), grpc::StatusCode::OK);
  // A file that does not parse is refused; the old table stays.
  WriteFile(tmp_ / "tokens", "reader dash not-a-hash\n");
  absl::Status bad = server_->Reload();
  EXPECT_THAT(bad, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(":1: SHA256_HEX")));
  EXPECT_EQ(ListRuns(reader), grpc::StatusCode::OK);
  // Revoking the reader and adding another.
  const std::string fresh = "se_fresh-reader";
  WriteFile(tmp_ / "tokens", TokenTable::Line(Role::kReader, "fresh", fresh) + "\n");
  ASSERT_OK(server_->Reload());
  EXPECT_EQ(ListRuns(reader), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ListRuns(Channel(fresh)), grpc::StatusCode::OK);
}

TEST_F(SecurityTest, TlsRefusesPlaintextAndServesTlsClients) {
  StartServer(1);
  EXPECT_EQ(ListRuns(Channel(tokens_.reader, /*tls=*/false)), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ListRuns(Channel(tokens_.reader, /*tls=*/true)), grpc::StatusCode::OK);
  EXPECT_EQ(ListRuns(Channel("", /*tls=*/true)), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(SecurityTest, MutualTlsRefusesClientsWithoutAGoodCertificate) {
  StartServer(2);
  EXPECT_EQ(ListRuns(Channel(tokens_.reader, true, /*client_cert=*/false)),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ListRuns(Channel(tokens_.reader, true, true, /*rogue_cert=*/true)),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ListRuns(Channel(tokens_.reader, true, true)), grpc::StatusCode::OK);
}

TEST_F(SecurityTest, HugeInputsGetShortErrorsPromptly) {
  StartServer(0);
  auto admin = v1::EvalService::NewStub(Channel(tokens_.admin));
  const std::string huge(100 << 10, 'x');
  auto create = [&](const std::function<void(v1::CreateRunRequest&)>& edit) {
    v1::CreateRunRequest request;
    request.mutable_config()->set_name("r");
    request.mutable_config()->set_source(tmp_.path());
    *request.add_task_files() = McTaskFile();
    edit(request);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::Run run;
    return admin->CreateRun(&ctx, request, &run);
  };
  for (const auto& edit : std::vector<std::function<void(v1::CreateRunRequest&)>>{
           [&](v1::CreateRunRequest& r) { r.mutable_config()->set_name(huge); },
           [&](v1::CreateRunRequest& r) { r.mutable_config()->set_source("/" + huge); },
           [&](v1::CreateRunRequest& r) { r.mutable_config()->set_pattern(huge + "(\\d+)"); },
           [&](v1::CreateRunRequest& r) { r.mutable_config()->set_marker(huge); },
           // A task file whose first line is 100 KB of garbage: the parse error may quote it.
           [&](v1::CreateRunRequest& r) { r.mutable_task_files(0)->set_content(huge + "\n"); },
       }) {
    grpc::Status status = create(edit);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_LE(status.error_message().size(), 2200u);
  }
  auto worker = v1::WorkerService::NewStub(Channel(tokens_.worker_a));
  grpc::ClientContext ctx;
  v1::RegisterWorkerRequest request;
  request.set_worker_id("w");
  request.set_name(huge);
  v1::RegisterWorkerResponse response;
  grpc::Status status = worker->RegisterWorker(&ctx, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LE(status.error_message().size(), 200u);
}

TEST(SecurityReloadTest, SighupInstallsARenewedCertificate) {
  const Certificates& certs = TestCertificates();
  ASSERT_EQ(certs.error, "");
  TempDir tmp;
  // The server's own copies of its files, which the operator replaces on renewal.
  std::filesystem::copy_file(certs.server_cert, tmp / "tls.crt");
  std::filesystem::copy_file(certs.server_key, tmp / "tls.key");
  FakeCheckpoints checkpoints;
  ServerOptions options;
  options.data_dir = tmp / "db";
  options.metrics_listen = "";
  options.discovery = checkpoints.Factory();
  options.start_background = false;
  options.tls.cert = tmp / "tls.crt";
  options.tls.key = tmp / "tls.key";
  auto server = CoordinatorServer::Start(options);
  ASSERT_OK(server);
  auto list_runs_trusting = [&](const std::string& ca) {
    ChannelOptions channel_options;
    channel_options.target = (*server)->grpc_address();
    channel_options.ca_cert = ca;
    auto channel = OpenChannel(channel_options);
    if (!channel.ok()) return grpc::StatusCode::INTERNAL;
    auto stub = v1::EvalService::NewStub(*channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ListRunsResponse response;
    return stub->ListRuns(&ctx, v1::ListRunsRequest(), &response).error_code();
  };
  EXPECT_EQ(list_runs_trusting(certs.ca), grpc::StatusCode::OK);
  EXPECT_EQ(list_runs_trusting(certs.other_ca), grpc::StatusCode::UNAVAILABLE);

  // A broken renewal is refused and the served certificate stays.
  WriteFile(tmp / "tls.key", "not a key\n");
  EXPECT_THAT((*server)->Reload(), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("--tls_key")));
  EXPECT_EQ(list_runs_trusting(certs.ca), grpc::StatusCode::OK);

  // A good one is served after SIGHUP (Reload), within the provider's refresh period.
  std::filesystem::copy_file(certs.server2_cert, tmp / "tls.crt",
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(certs.server2_key, tmp / "tls.key",
                             std::filesystem::copy_options::overwrite_existing);
  ASSERT_OK((*server)->Reload());
  EXPECT_TRUE(steadyeval::testing::WaitFor(
      [&] { return list_runs_trusting(certs.other_ca) == grpc::StatusCode::OK; },
      std::chrono::seconds(30)));
  EXPECT_EQ(list_runs_trusting(certs.ca), grpc::StatusCode::UNAVAILABLE);
}

TEST(SecurityStartTest, PlaintextOnANonLoopbackAddressNeedsInsecure) {
  TempDir tmp;
  FakeCheckpoints checkpoints;
  ServerOptions options;
  options.data_dir = tmp / "db";
  options.listen = "0.0.0.0:0";
  options.metrics_listen = "";
  options.discovery = checkpoints.Factory();
  options.start_background = false;
  auto refused = CoordinatorServer::Start(options);
  EXPECT_THAT(refused.status(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                         HasSubstr("--tls_cert and --tls_key, or --insecure")));
  options.insecure = true;
  auto started = CoordinatorServer::Start(options);
  ASSERT_OK(started);
  EXPECT_THAT((*started)->grpc_listen_address(), ::testing::StartsWith("0.0.0.0:"));
}

TEST(SecurityStartTest, BadTlsFilesAreRefusedNamingTheFile) {
  const Certificates& certs = TestCertificates();
  ASSERT_EQ(certs.error, "");
  TempDir tmp;
  FakeCheckpoints checkpoints;
  ServerOptions options;
  options.data_dir = tmp / "db";
  options.metrics_listen = "";
  options.discovery = checkpoints.Factory();
  options.start_background = false;
  options.tls.cert = certs.server_cert;
  options.tls.key = certs.client_key;  // another certificate's key
  EXPECT_THAT(CoordinatorServer::Start(options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not belong to")));
  options.tls.key = certs.server_key;
  options.tls.client_ca = tmp / "missing.pem";
  EXPECT_THAT(CoordinatorServer::Start(options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--client_ca")));
}

// The binaries: tokens made by `steadyeval-server tokens add`, used by the CLI.
TEST(SecurityBinariesTest, TokensAddAndTheCliTokenFile) {
  TempDir tmp;
  const std::string server = BinDir() + "/steadyeval-server";
  const std::string cli = BinDir() + "/steadyeval";
  CommandResult added =
      RunCommand({server, "tokens", "add", "admin", "ops", "--tokens_file", tmp / "tokens"});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  const std::string token = added.out.substr(0, added.out.find('\n'));
  ASSERT_GE(token.size(), 40u);
  // The file holds the hash, never the token.
  const std::string file = steadyeval::testing::ReadFileOrEmpty(tmp / "tokens");
  EXPECT_EQ(file.find(token), std::string::npos);
  EXPECT_THAT(file, HasSubstr("admin ops "));
  EXPECT_EQ(std::filesystem::status(tmp / "tokens").permissions() &
                std::filesystem::perms::others_read,
            std::filesystem::perms::none);
  CommandResult again =
      RunCommand({server, "tokens", "add", "admin", "ops", "--tokens_file", tmp / "tokens"});
  EXPECT_NE(again.exit_code, 0);
  EXPECT_THAT(again.err, HasSubstr("already has"));

  auto child = steadyeval::testing::ChildProcess::Start(
      {server, "--data_dir", tmp / "db", "--listen", "127.0.0.1:0", "--metrics_listen",
       "127.0.0.1:0", "--tokens_file", tmp / "tokens", "--ready_file", tmp / "ready"},
      tmp / "server");
  ASSERT_OK(child);
  ASSERT_TRUE(steadyeval::testing::WaitFor(
      [&] { return !steadyeval::testing::ReadFileOrEmpty(tmp / "ready").empty(); },
      std::chrono::seconds(30)))
      << child->Logs();
  const std::string ready = steadyeval::testing::ReadFileOrEmpty(tmp / "ready");
  const size_t at = ready.find("\"grpc\":\"") + 8;
  const std::string address = ready.substr(at, ready.find('"', at) - at);

  CommandResult anonymous = RunCommand({cli, "--server", address, "runs", "list"});
  EXPECT_EQ(anonymous.exit_code, 1);
  EXPECT_THAT(anonymous.err, HasSubstr("needs a token"));
  WriteFile(tmp / "my-token", token + "  \n");
  CommandResult listed =
      RunCommand({cli, "--server", address, "--token_file", tmp / "my-token", "runs", "list"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  CommandResult missing =
      RunCommand({cli, "--server", address, "--token_file", tmp / "nope", "runs", "list"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("token file"));
  EXPECT_EQ(child->Stop(SIGTERM), 0) << child->Logs();
}

TEST(SecurityBinariesTest, APlaintextNonLoopbackListenExitsBeforeServing) {
  TempDir tmp;
  CommandResult r = RunCommand({BinDir() + "/steadyeval-server", "--data_dir", tmp / "db",
                                "--listen", "0.0.0.0:0", "--metrics_listen", "127.0.0.1:0"},
                               60);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("--insecure"));
}

}  // namespace
}  // namespace steadyeval
