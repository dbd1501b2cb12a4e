#include "server/services.h"

#include <chrono>
#include <vector>

#include "common/grpc_status.h"

namespace steadyeval {
namespace {

// Stores a StatusOr's value in `*out` and maps its status.
template <typename T>
grpc::Status Respond(absl::StatusOr<T> result, T* out) {
  if (result.ok()) *out = std::move(*result);
  return ToGrpcStatus(result.status());
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) { return ToGrpc(status); }

// ---- WorkerService ----

grpc::Status WorkerServiceImpl::RegisterWorker(grpc::ServerContext*,
                                               const v1::RegisterWorkerRequest* request,
                                               v1::RegisterWorkerResponse* response) {
  return Respond(coordinator_->RegisterWorker(*request), response);
}

grpc::Status WorkerServiceImpl::AcquireJob(grpc::ServerContext* context,
                                           const v1::AcquireJobRequest* request,
                                           v1::AcquireJobResponse* response) {
  v1::AcquireJobRequest bounded = *request;
  // Answer (has_job=false) a little before the client's deadline rather than after it.
  const auto deadline = context->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    const int64_t left_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                deadline - std::chrono::system_clock::now())
                                .count() - 200;
    bounded.set_wait_ms(std::max<int64_t>(0, std::min<int64_t>(bounded.wait_ms(), left_ms)));
  }
  return Respond(coordinator_->AcquireJob(bounded, [context] { return context->IsCancelled(); }),
                 response);
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext*,
                                          const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  return Respond(coordinator_->Heartbeat(*request), response);
}

grpc::Status WorkerServiceImpl::ReportResults(grpc::ServerContext*,
                                              grpc::ServerReader<v1::ReportResultsRequest>* reader,
                                              v1::ReportResultsResponse* response) {
  std::vector<v1::ReportResultsRequest> chunks;
  v1::ReportResultsRequest chunk;
  while (reader->Read(&chunk)) {
    if (chunks.empty()) {
      // Refuse a stale or foreign lease before reading (and buffering) the rest.
      absl::Status start = coordinator_->CheckReportStart(chunk);
      if (!start.ok()) return ToGrpcStatus(start);
    }
    chunks.push_back(std::move(chunk));
    chunk.Clear();
  }
  return Respond(coordinator_->ReportResults(chunks), response);
}

grpc::Status WorkerServiceImpl::FailJob(grpc::ServerContext*, const v1::FailJobRequest* request,
                                        v1::FailJobResponse* response) {
  return Respond(coordinator_->FailJob(*request), response);
}

grpc::Status WorkerServiceImpl::GetTask(grpc::ServerContext*, const v1::GetTaskRequest* request,
                                        v1::TaskContent* response) {
  return Respond(coordinator_->GetTask(request->sha256()), response);
}

// ---- EvalService ----

grpc::Status EvalServiceImpl::CreateRun(grpc::ServerContext*, const v1::CreateRunRequest* request,
                                        v1::Run* response) {
  std::vector<v1::TaskContent> files(request->task_files().begin(), request->task_files().end());
  return Respond(coordinator_->CreateRun(request->config(), files), response);
}

grpc::Status EvalServiceImpl::ListRuns(grpc::ServerContext*, const v1::ListRunsRequest* request,
                                       v1::ListRunsResponse* response) {
  return Respond(coordinator_->ListRuns(request->page_size(), request->page_token()), response);
}

grpc::Status EvalServiceImpl::GetRun(grpc::ServerContext*, const v1::GetRunRequest* request,
                                     v1::GetRunResponse* response) {
  return Respond(coordinator_->GetRun(request->name()), response);
}

grpc::Status EvalServiceImpl::ListCheckpoints(grpc::ServerContext*,
                                              const v1::ListCheckpointsRequest* request,
                                              grpc::ServerWriter<v1::Checkpoint>* writer) {
  return ToGrpcStatus(coordinator_->ListCheckpoints(
      request->run(), [writer](const v1::Checkpoint& c) { return writer->Write(c); }));
}

grpc::Status EvalServiceImpl::ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                                       grpc::ServerWriter<v1::Job>* writer) {
  return ToGrpcStatus(coordinator_->ListJobs(
      request->run(), [writer](const v1::Job& j) { return writer->Write(j); }));
}

grpc::Status EvalServiceImpl::ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest*,
                                          v1::ListWorkersResponse* response) {
  *response = coordinator_->ListWorkers();
  return grpc::Status::OK;
}

grpc::Status EvalServiceImpl::GetScores(grpc::ServerContext*, const v1::GetScoresRequest* request,
                                        grpc::ServerWriter<v1::Score>* writer) {
  return ToGrpcStatus(coordinator_->GetScores(
      *request, [writer](const v1::Score& s) { return writer->Write(s); }));
}

grpc::Status EvalServiceImpl::UpdateRun(grpc::ServerContext*, const v1::UpdateRunRequest* request,
                                        v1::Run* response) {
  return Respond(coordinator_->UpdateRun(*request), response);
}

grpc::Status EvalServiceImpl::Rescore(grpc::ServerContext*, const v1::RescoreRequest* request,
                                      v1::RescoreResponse* response) {
  return Respond(coordinator_->Rescore(*request), response);
}

grpc::Status EvalServiceImpl::ListPendingCheckpoints(
    grpc::ServerContext*, const v1::ListPendingCheckpointsRequest* request,
    v1::ListPendingCheckpointsResponse* response) {
  return Respond(coordinator_->ListPendingCheckpoints(request->run()), response);
}

grpc::Status EvalServiceImpl::SetRunPaused(grpc::ServerContext*,
                                           const v1::SetRunPausedRequest* request,
                                           v1::Run* response) {
  return Respond(coordinator_->SetRunPaused(request->name(), request->paused()), response);
}

grpc::Status EvalServiceImpl::DeleteRun(grpc::ServerContext*, const v1::DeleteRunRequest* request,
                                        v1::DeleteRunResponse* response) {
  return Respond(coordinator_->DeleteRun(request->name()), response);
}

grpc::Status EvalServiceImpl::RequeueJobs(grpc::ServerContext*,
                                          const v1::RequeueJobsRequest* request,
                                          v1::RequeueJobsResponse* response) {
  return Respond(coordinator_->RequeueJobs(*request), response);
}

grpc::Status EvalServiceImpl::ClearTokenizerPin(grpc::ServerContext*,
                                                const v1::ClearTokenizerPinRequest* request,
                                                v1::Run* response) {
  return Respond(coordinator_->ClearTokenizerPin(request->name()), response);
}

grpc::Status EvalServiceImpl::GetStability(grpc::ServerContext*,
                                           const v1::GetStabilityRequest* request,
                                           v1::GetStabilityResponse* response) {
  return Respond(coordinator_->GetStability(*request), response);
}

grpc::Status EvalServiceImpl::GetExamples(grpc::ServerContext*,
                                          const v1::GetExamplesRequest* request,
                                          v1::GetExamplesResponse* response) {
  return Respond(coordinator_->GetExamples(*request), response);
}

grpc::Status EvalServiceImpl::ExportPredictions(
    grpc::ServerContext*, const v1::ExportPredictionsRequest* request,
    grpc::ServerWriter<v1::ExportedPrediction>* writer) {
  return ToGrpcStatus(coordinator_->ExportPredictions(
      *request, [writer](const v1::ExportedPrediction& p) { return writer->Write(p); }));
}

}  // namespace steadyeval
