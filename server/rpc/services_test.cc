// The coordinator's gRPC services in-process: a real server on 127.0.0.1:0, real stubs.
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/coordinator_fixture.h"
#include "server/rpc/server.h"
#include "testing/in_process_server.h"
#include "api/protocol.h"
#include "testing/http.h"

namespace steadyeval {
namespace {

using ::testing::HasSubstr;
using ::steadyeval::testing::HttpGet;
using ::steadyeval::testing::InProcessServerTest;
using ::steadyeval::testing::McTaskFile;

class ServicesTest : public InProcessServerTest {
 protected:
  v1::CreateRunRequest RunRequest(const std::string& name) {
    v1::CreateRunRequest request;
    request.mutable_config()->set_name(name);
    request.mutable_config()->set_source((root_ / "ckpt").string());
    *request.add_task_files() = McTaskFile();
    return request;
  }
  grpc::Status CreateRun(const v1::CreateRunRequest& request, v1::Run* run = nullptr) {
    grpc::ClientContext ctx;
    v1::Run ignored;
    return eval_->CreateRun(&ctx, request, run ? run : &ignored);
  }
  void Register(const std::string& id) {
    grpc::ClientContext ctx;
    v1::RegisterWorkerRequest request;
    request.set_worker_id(id);
    request.set_protocol_version(kProtocolVersion);
    v1::RegisterWorkerResponse response;
    ASSERT_TRUE(worker_->RegisterWorker(&ctx, request, &response).ok());
    EXPECT_EQ(response.coordinator_instance(), server_->coordinator()->instance_id());
  }
  grpc::Status Acquire(const std::string& id, int64_t wait_ms, v1::AcquireJobResponse* response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::AcquireJobRequest request;
    request.set_worker_id(id);
    request.set_wait_ms(wait_ms);
    return worker_->AcquireJob(&ctx, request, response);
  }
  // Reports outputs "1", "0", "0" for the mc task of `lease` as `worker`.
  grpc::Status ReportMc(const v1::LeasedJob& lease, const std::string& worker,
                        v1::ReportResultsResponse* response) {
    grpc::ClientContext ctx;
    auto writer = worker_->ReportResults(&ctx, response);
    for (uint32_t i = 0; i < 3; ++i) {
      v1::ReportResultsRequest r;
      r.set_worker_id(worker);
      r.set_job_id(lease.job().id());
      r.set_epoch(lease.job().epoch());
      r.set_lease_secret(lease.lease_secret());
      r.set_step(lease.job().steps(0));
      *r.mutable_task() = lease.task_headers(0).ref();
      v1::ExampleOutput* o = r.add_outputs();
      o->set_index(i);
      o->set_output(i == 0 ? "1" : "0");
      r.set_task_complete(i == 2);
      if (!writer->Write(r)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }
};

TEST_F(ServicesTest, ServesGrpcAndMetricsOnPickedPorts) {
  EXPECT_GT(server_->grpc_port(), 0);
  EXPECT_GT(server_->metrics_port(), 0);
  EXPECT_EQ(server_->grpc_address(), "127.0.0.1:" + std::to_string(server_->grpc_port()));
  std::string metrics = HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_THAT(metrics, HasSubstr("200 OK"));
  EXPECT_THAT(metrics, HasSubstr("steadyeval_predictions_ingested_total"));
  EXPECT_THAT(metrics, HasSubstr("steadyeval_workers{state=\"idle\"}"));
}

TEST_F(ServicesTest, CreateRunRejectsBadInput) {
  grpc::Status s = CreateRun(RunRequest("bad/name"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("run name 'bad/name' is invalid"));

  v1::CreateRunRequest malformed = RunRequest("r");
  malformed.mutable_task_files(0)->set_filename("broken.jsonl");
  malformed.mutable_task_files(0)->set_content(
      "{\"id\": 0, \"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n"
      "{\"id\": 1, \"query\": \"q\", \"choices\": [\"a\"], \"gold\": 0}\n");
  s = CreateRun(malformed);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("broken.jsonl:2:"));

  v1::CreateRunRequest missing = RunRequest("r");
  missing.mutable_config()->set_source((root_ / "does-not-exist").string());
  s = CreateRun(missing);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("is not an existing directory"));

  v1::Run run;
  ASSERT_TRUE(CreateRun(RunRequest("r"), &run).ok());
  EXPECT_EQ(run.config().tasks(0).name(), "mc");
  EXPECT_EQ(CreateRun(RunRequest("r")).error_code(), grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(ServicesTest, UnknownRunIsNotFound) {
  grpc::ClientContext ctx;
  v1::GetRunRequest request;
  request.set_name("ghost");
  v1::GetRunResponse response;
  grpc::Status s = eval_->GetRun(&ctx, request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "run 'ghost' not found (see `steadyeval runs list`)");

  grpc::ClientContext ctx2;
  v1::ListCheckpointsRequest list;
  list.set_run("ghost");
  auto reader = eval_->ListCheckpoints(&ctx2, list);
  v1::Checkpoint c;
  EXPECT_FALSE(reader->Read(&c));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServicesTest, WorkerFlowAndReportsForJobsNotHeld) {
  ASSERT_TRUE(CreateRun(RunRequest("r")).ok());
  Register("w1");
  Register("w2");

  // A long poll over gRPC gets the checkpoint admitted while it waits (or before it
  // started: that the admission wakes a waiting poll is coordinator_test's
  // AnAdmissionWakesAWaitingLongPollWithoutTimePassing, where a FakeClock makes it fail
  // without the wake-up; on the real clock here the poll would also find the job at its
  // next periodic re-check).
  v1::AcquireJobResponse acquired;
  grpc::Status acquire_status;
  std::thread poller([&] { acquire_status = Acquire("w1", 20'000, &acquired); });
  checkpoints_.Add("r", 100);
  ASSERT_OK(server_->coordinator()->PollRunsOnce());
  poller.join();
  ASSERT_TRUE(acquire_status.ok()) << acquire_status.error_message();
  ASSERT_TRUE(acquired.has_job());
  const v1::LeasedJob& lease = acquired.lease();
  EXPECT_EQ(lease.job().steps(0), 100u);

  // w2 does not hold the job.
  v1::ReportResultsResponse response;
  grpc::Status s = ReportMc(lease, "w2", &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("does not prove the lease"));

  grpc::ClientContext hb_ctx;
  v1::HeartbeatRequest hb;
  hb.set_worker_id("w1");
  hb.set_job_id(lease.job().id());
  hb.set_epoch(lease.job().epoch());
  hb.set_lease_secret(lease.lease_secret());
  v1::HeartbeatResponse hb_response;
  ASSERT_TRUE(worker_->Heartbeat(&hb_ctx, hb, &hb_response).ok());

  grpc::ClientContext task_ctx;
  v1::GetTaskRequest task_request;
  task_request.set_sha256(lease.task_headers(0).ref().sha256());
  v1::TaskContent task;
  ASSERT_TRUE(worker_->GetTask(&task_ctx, task_request, &task).ok());
  EXPECT_EQ(task.content(), McTaskFile().content());

  ASSERT_TRUE(ReportMc(lease, "w1", &response).ok());
  EXPECT_EQ(response.predictions_written(), 3u);
  ASSERT_TRUE(ReportMc(lease, "w1", &response).ok());
  EXPECT_TRUE(response.replay());

  grpc::ClientContext scores_ctx;
  v1::GetScoresRequest scores_request;
  scores_request.set_run("r");
  auto scores = eval_->GetScores(&scores_ctx, scores_request);
  std::vector<v1::Score> got;
  v1::Score score;
  while (scores->Read(&score)) got.push_back(score);
  ASSERT_TRUE(scores->Finish().ok());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_DOUBLE_EQ(got[0].score(), 2.0 / 3);

  grpc::ClientContext jobs_ctx;
  auto jobs = eval_->ListJobs(&jobs_ctx, v1::ListJobsRequest());
  v1::Job job;
  int n = 0;
  while (jobs->Read(&job)) {
    ++n;
    EXPECT_EQ(job.state(), v1::JOB_DONE);
  }
  ASSERT_TRUE(jobs->Finish().ok());
  EXPECT_EQ(n, 1);

  grpc::ClientContext workers_ctx;
  v1::ListWorkersResponse workers;
  ASSERT_TRUE(eval_->ListWorkers(&workers_ctx, v1::ListWorkersRequest(), &workers).ok());
  EXPECT_EQ(workers.workers_size(), 2);

  // Unregistered workers are told to register.
  v1::AcquireJobResponse none;
  s = Acquire("ghost", 0, &none);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "worker ghost is not registered (register again)");
}

TEST_F(ServicesTest, WindowAndStabilityRpcsAreServed) {
  ASSERT_TRUE(CreateRun(RunRequest("r")).ok());
  {
    grpc::ClientContext ctx;
    v1::UpdateRunRequest update;
    update.set_name("r");
    update.set_set_ensemble_windows(true);
    update.add_ensemble_windows(2);
    v1::Run run;
    ASSERT_TRUE(eval_->UpdateRun(&ctx, update, &run).ok());
    EXPECT_EQ(run.config().ensemble_windows_size(), 1);
  }
  {
    grpc::ClientContext ctx;
    v1::GetStabilityRequest request;
    request.set_run("r");
    v1::GetStabilityResponse response;
    ASSERT_TRUE(eval_->GetStability(&ctx, request, &response).ok());
    EXPECT_FALSE(response.has_range());  // no raw points yet
    ASSERT_GE(response.rows_size(), 1);
    EXPECT_EQ(response.rows(0).variant(), "raw");
  }
  {
    grpc::ClientContext ctx;
    v1::GetExamplesRequest request;
    request.set_run("r");
    request.set_task("mc");
    request.set_example(9);
    v1::GetExamplesResponse response;
    EXPECT_EQ(eval_->GetExamples(&ctx, request, &response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::ExportPredictionsRequest request;
    request.set_run("nope");
    auto reader = eval_->ExportPredictions(&ctx, request);
    v1::ExportedPrediction p;
    EXPECT_FALSE(reader->Read(&p));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
}

}  // namespace
}  // namespace steadyeval
