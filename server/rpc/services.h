// gRPC front ends of the coordinator (DESIGN §9). Handlers stay thin: they pass the
// AccessControl gate (authentication, role, worker identity; audit of admin calls), call
// Coordinator, and map its absl::Status with ToGrpcStatus. Thread-safe.
#ifndef STEADYEVAL_SERVER_RPC_SERVICES_H_
#define STEADYEVAL_SERVER_RPC_SERVICES_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "server/rpc/access_control.h"
#include "server/coordinator.h"
#include "steadyeval/v1/eval_service.grpc.pb.h"
#include "steadyeval/v1/worker_service.grpc.pb.h"

namespace steadyeval {

// The one place absl codes become gRPC codes (their numbering is the same).
// Messages longer than 2 KiB are cut (gRPC sends them as metadata).
grpc::Status ToGrpcStatus(const absl::Status& status);

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  // Neither is owned; both outlive the service.
  WorkerServiceImpl(Coordinator* coordinator, AccessControl* access)
      : coordinator_(coordinator), access_(access) {}

  grpc::Status RegisterWorker(grpc::ServerContext*, const v1::RegisterWorkerRequest* request,
                              v1::RegisterWorkerResponse* response) override;
  grpc::Status AcquireJob(grpc::ServerContext* context, const v1::AcquireJobRequest* request,
                          v1::AcquireJobResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override;
  grpc::Status ReportResults(grpc::ServerContext*,
                             grpc::ServerReader<v1::ReportResultsRequest>* reader,
                             v1::ReportResultsResponse* response) override;
  grpc::Status FailJob(grpc::ServerContext*, const v1::FailJobRequest* request,
                       v1::FailJobResponse* response) override;
  grpc::Status GetTask(grpc::ServerContext*, const v1::GetTaskRequest* request,
                       v1::TaskContent* response) override;

 private:
  Coordinator* const coordinator_;
  AccessControl* const access_;
};

class EvalServiceImpl final : public v1::EvalService::Service {
 public:
  EvalServiceImpl(Coordinator* coordinator, AccessControl* access)
      : coordinator_(coordinator), access_(access) {}

  grpc::Status CreateRun(grpc::ServerContext*, const v1::CreateRunRequest* request,
                         v1::Run* response) override;
  grpc::Status ListRuns(grpc::ServerContext*, const v1::ListRunsRequest* request,
                        v1::ListRunsResponse* response) override;
  grpc::Status GetRun(grpc::ServerContext*, const v1::GetRunRequest* request,
                      v1::GetRunResponse* response) override;
  grpc::Status ListCheckpoints(grpc::ServerContext*, const v1::ListCheckpointsRequest* request,
                               grpc::ServerWriter<v1::Checkpoint>* writer) override;
  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                        grpc::ServerWriter<v1::Job>* writer) override;
  grpc::Status ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest* request,
                           v1::ListWorkersResponse* response) override;
  grpc::Status GetScores(grpc::ServerContext*, const v1::GetScoresRequest* request,
                         grpc::ServerWriter<v1::Score>* writer) override;
  grpc::Status UpdateRun(grpc::ServerContext*, const v1::UpdateRunRequest* request,
                         v1::Run* response) override;
  grpc::Status GetStability(grpc::ServerContext*, const v1::GetStabilityRequest* request,
                            v1::GetStabilityResponse* response) override;
  grpc::Status GetExamples(grpc::ServerContext*, const v1::GetExamplesRequest* request,
                           v1::GetExamplesResponse* response) override;
  grpc::Status ExportPredictions(grpc::ServerContext*, const v1::ExportPredictionsRequest* request,
                                 grpc::ServerWriter<v1::ExportedPrediction>* writer) override;
  grpc::Status Rescore(grpc::ServerContext*, const v1::RescoreRequest* request,
                       v1::RescoreResponse* response) override;
  grpc::Status Backup(grpc::ServerContext*, const v1::BackupRequest* request,
                      v1::BackupResponse* response) override;
  grpc::Status ListPendingCheckpoints(grpc::ServerContext*,
                                      const v1::ListPendingCheckpointsRequest* request,
                                      v1::ListPendingCheckpointsResponse* response) override;
  grpc::Status SetRunPaused(grpc::ServerContext*, const v1::SetRunPausedRequest* request,
                            v1::Run* response) override;
  grpc::Status DeleteRun(grpc::ServerContext*, const v1::DeleteRunRequest* request,
                         v1::DeleteRunResponse* response) override;
  grpc::Status RequeueJobs(grpc::ServerContext*, const v1::RequeueJobsRequest* request,
                           v1::RequeueJobsResponse* response) override;
  grpc::Status ClearTokenizerPin(grpc::ServerContext*, const v1::ClearTokenizerPinRequest* request,
                                 v1::Run* response) override;

 private:
  Coordinator* const coordinator_;
  AccessControl* const access_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_RPC_SERVICES_H_
