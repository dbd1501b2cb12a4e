#include "server/rpc/services.h"

#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grpc_status.h"
#include "common/limits.h"

namespace steadyeval {
namespace {

// gRPC carries a status message in trailing metadata, which a peer refuses past ~8 KiB:
// cut long messages (an error quoting a huge input) rather than lose the status.
constexpr size_t kMaxStatusMessageBytes = 2048;

// Authorizes the call or answers it with the refusal.
#define AUTHORIZE_OR_RETURN(identity, context, method, permission)                      \
  absl::StatusOr<Identity> identity##_or = access_->Authorize(*(context), method, permission); \
  if (!identity##_or.ok()) return ToGrpcStatus(identity##_or.status());                 \
  const Identity& identity = *identity##_or

// Authorizes a call whose handler does not need the caller, or answers it with the refusal.
#define REQUIRE_PERMISSION(context, method, permission)                             \
  do {                                                                              \
    absl::StatusOr<Identity> caller_ = access_->Authorize(*(context), method, permission); \
    if (!caller_.ok()) return ToGrpcStatus(caller_.status());                       \
  } while (false)

#define RETURN_GRPC_IF_ERROR(expr)                        \
  do {                                                    \
    absl::Status status_ = (expr);                        \
    if (!status_.ok()) return ToGrpcStatus(status_);      \
  } while (false)

// Stores a StatusOr's value in `*out` and maps its status.
template <typename T>
grpc::Status Respond(absl::StatusOr<T> result, T* out) {
  if (result.ok()) *out = std::move(*result);
  return ToGrpcStatus(result.status());
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.message().size() <= kMaxStatusMessageBytes) return ToGrpc(status);
  std::string message(status.message().substr(0, kMaxStatusMessageBytes));
  absl::StrAppend(&message, "…(message cut at ", kMaxStatusMessageBytes, " of ",
                  status.message().size(), " bytes)");
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), message);
}

// ---- WorkerService ----

grpc::Status WorkerServiceImpl::RegisterWorker(grpc::ServerContext* context,
                                               const v1::RegisterWorkerRequest* request,
                                               v1::RegisterWorkerResponse* response) {
  static constexpr char kMethod[] = "WorkerService/RegisterWorker";
  AUTHORIZE_OR_RETURN(caller, context, kMethod, Permission::kWorkerCall);
  for (const std::string* field : {&request->worker_id(), &request->name(), &request->device()}) {
    if (field->size() > kMaxNameBytes) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          absl::StrCat("worker id, name and device are at most ", kMaxNameBytes,
                       " bytes each; got ", field->size())));
    }
  }
  RETURN_GRPC_IF_ERROR(access_->BindWorker(caller, kMethod, request->worker_id()));
  return Respond(coordinator_->RegisterWorker(*request), response);
}

grpc::Status WorkerServiceImpl::AcquireJob(grpc::ServerContext* context,
                                           const v1::AcquireJobRequest* request,
                                           v1::AcquireJobResponse* response) {
  static constexpr char kMethod[] = "WorkerService/AcquireJob";
  AUTHORIZE_OR_RETURN(caller, context, kMethod, Permission::kWorkerCall);
  RETURN_GRPC_IF_ERROR(access_->CheckWorker(caller, kMethod, request->worker_id()));
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

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* context,
                                          const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  static constexpr char kMethod[] = "WorkerService/Heartbeat";
  AUTHORIZE_OR_RETURN(caller, context, kMethod, Permission::kWorkerCall);
  RETURN_GRPC_IF_ERROR(access_->CheckWorker(caller, kMethod, request->worker_id()));
  return Respond(coordinator_->Heartbeat(*request), response);
}

grpc::Status WorkerServiceImpl::ReportResults(grpc::ServerContext* context,
                                              grpc::ServerReader<v1::ReportResultsRequest>* reader,
                                              v1::ReportResultsResponse* response) {
  static constexpr char kMethod[] = "WorkerService/ReportResults";
  AUTHORIZE_OR_RETURN(caller, context, kMethod, Permission::kWorkerCall);
  std::vector<v1::ReportResultsRequest> chunks;
  v1::ReportResultsRequest chunk;
  while (reader->Read(&chunk)) {
    if (chunks.empty()) {
      // Refuse a foreign worker, a stale or foreign lease before reading (and buffering)
      // the rest.
      RETURN_GRPC_IF_ERROR(access_->CheckWorker(caller, kMethod, chunk.worker_id()));
      RETURN_GRPC_IF_ERROR(coordinator_->CheckReportStart(chunk));
    } else if (chunk.worker_id() != chunks.front().worker_id() ||
               chunk.job_id() != chunks.front().job_id() ||
               chunk.epoch() != chunks.front().epoch()) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          "every message of a ReportResults stream must name the same worker, job and epoch"));
    }
    chunks.push_back(std::move(chunk));
    chunk.Clear();
  }
  return Respond(coordinator_->ReportResults(chunks), response);
}

grpc::Status WorkerServiceImpl::FailJob(grpc::ServerContext* context,
                                        const v1::FailJobRequest* request,
                                        v1::FailJobResponse* response) {
  static constexpr char kMethod[] = "WorkerService/FailJob";
  AUTHORIZE_OR_RETURN(caller, context, kMethod, Permission::kWorkerCall);
  RETURN_GRPC_IF_ERROR(access_->CheckWorker(caller, kMethod, request->worker_id()));
  if (request->reason().size() > kMaxReasonBytes) {
    // Kept (stored on the job and shown), so cut rather than refused.
    v1::FailJobRequest cut = *request;
    cut.set_reason(absl::StrCat(request->reason().substr(0, kMaxReasonBytes), "…(",
                                request->reason().size(), " bytes)"));
    return Respond(coordinator_->FailJob(cut), response);
  }
  return Respond(coordinator_->FailJob(*request), response);
}

grpc::Status WorkerServiceImpl::GetTask(grpc::ServerContext* context,
                                        const v1::GetTaskRequest* request,
                                        v1::TaskContent* response) {
  static constexpr char kMethod[] = "WorkerService/GetTask";
  AUTHORIZE_OR_RETURN(caller, context, kMethod, Permission::kWorkerCall);
  RETURN_GRPC_IF_ERROR(access_->CheckWorker(caller, kMethod, request->worker_id()));
  return Respond(coordinator_->GetTask(request->sha256()), response);
}

// ---- EvalService ----

grpc::Status EvalServiceImpl::CreateRun(grpc::ServerContext* context,
                                        const v1::CreateRunRequest* request, v1::Run* response) {
  static constexpr char kMethod[] = "EvalService/CreateRun";
  AUTHORIZE_OR_RETURN(caller, context, kMethod, Permission::kAdminCall);
  std::vector<v1::TaskContent> files(request->task_files().begin(), request->task_files().end());
  absl::StatusOr<v1::Run> result = coordinator_->CreateRun(request->config(), files);
  access_->Audit(caller, *context, kMethod,
                 absl::StrCat("run=", request->config().name(),
                              " source=", request->config().source()),
                 result.status());
  return Respond(std::move(result), response);
}

grpc::Status EvalServiceImpl::ListRuns(grpc::ServerContext* context,
                                       const v1::ListRunsRequest* request,
                                       v1::ListRunsResponse* response) {
  REQUIRE_PERMISSION(context, "EvalService/ListRuns", Permission::kQuery);
  return Respond(coordinator_->ListRuns(request->page_size(), request->page_token()), response);
}

grpc::Status EvalServiceImpl::GetRun(grpc::ServerContext* context,
                                     const v1::GetRunRequest* request,
                                     v1::GetRunResponse* response) {
  REQUIRE_PERMISSION(context, "EvalService/GetRun", Permission::kQuery);
  return Respond(coordinator_->GetRun(request->name()), response);
}

grpc::Status EvalServiceImpl::ListCheckpoints(grpc::ServerContext* context,
                                              const v1::ListCheckpointsRequest* request,
                                              grpc::ServerWriter<v1::Checkpoint>* writer) {
  REQUIRE_PERMISSION(context, "EvalService/ListCheckpoints", Permission::kQuery);
  return ToGrpcStatus(coordinator_->ListCheckpoints(
      request->run(), [writer](const v1::Checkpoint& c) { return writer->Write(c); }));
}

grpc::Status EvalServiceImpl::ListJobs(grpc::ServerContext* context,
                                       const v1::ListJobsRequest* request,
                                       grpc::ServerWriter<v1::Job>* writer) {
  REQUIRE_PERMISSION(context, "EvalService/ListJobs", Permission::kQuery);
  return ToGrpcStatus(coordinator_->ListJobs(
      request->run(), [writer](const v1::Job& j) { return writer->Write(j); }));
}

grpc::Status EvalServiceImpl::ListWorkers(grpc::ServerContext* context,
                                          const v1::ListWorkersRequest*,
                                          v1::ListWorkersResponse* response) {
  REQUIRE_PERMISSION(context, "EvalService/ListWorkers", Permission::kQuery);
  *response = coordinator_->ListWorkers();
  for (v1::WorkerInfo& worker : *response->mutable_workers()) {
    worker.set_token(access_->WorkerToken(worker.id()));
  }
  return grpc::Status::OK;
}

grpc::Status EvalServiceImpl::GetScores(grpc::ServerContext* context,
                                        const v1::GetScoresRequest* request,
                                        grpc::ServerWriter<v1::Score>* writer) {
  REQUIRE_PERMISSION(context, "EvalService/GetScores", Permission::kQuery);
  return ToGrpcStatus(coordinator_->GetScores(
      *request, [writer](const v1::Score& s) { return writer->Write(s); }));
}

grpc::Status EvalServiceImpl::UpdateRun(grpc::ServerContext* context,
                                        const v1::UpdateRunRequest* request, v1::Run* response) {
  static constexpr char kMethod[] = "EvalService/UpdateRun";
  AUTHORIZE_OR_RETURN(caller, context, kMethod, Permission::kAdminCall);
  absl::StatusOr<v1::Run> result = coordinator_->UpdateRun(*request);
  access_->Audit(caller, *context, kMethod, absl::StrCat("run=", request->name()),
                 result.status());
  return Respond(std::move(result), response);
}

grpc::Status EvalServiceImpl::Rescore(grpc::ServerContext* context,
                                      const v1::RescoreRequest* request,
                                      v1::RescoreResponse* response) {
  static constexpr char kMethod[] = "EvalService/Rescore";
  AUTHORIZE_OR_RETURN(caller, context, kMethod, Permission::kAdminCall);
  absl::StatusOr<v1::RescoreResponse> result = coordinator_->Rescore(*request);
  access_->Audit(caller, *context, kMethod,
                 absl::StrCat("run=", request->run(), " task=", request->task()),
                 result.status());
  return Respond(std::move(result), response);
}

grpc::Status EvalServiceImpl::Backup(grpc::ServerContext* context,
                                     const v1::BackupRequest* request,
                                     v1::BackupResponse* response) {
  static constexpr char kMethod[] = "EvalService/Backup";
  AUTHORIZE_OR_RETURN(caller, context, kMethod, Permission::kAdminCall);
  absl::StatusOr<v1::BackupResponse> result = coordinator_->Backup(*request);
  access_->Audit(caller, *context, kMethod, absl::StrCat("to=", request->to_dir()),
                 result.status());
  return Respond(std::move(result), response);
}

grpc::Status EvalServiceImpl::ListPendingCheckpoints(
    grpc::ServerContext* context, const v1::ListPendingCheckpointsRequest* request,
    v1::ListPendingCheckpointsResponse* response) {
  REQUIRE_PERMISSION(context, "EvalService/ListPendingCheckpoints", Permission::kQuery);
  return Respond(coordinator_->ListPendingCheckpoints(request->run()), response);
}

grpc::Status EvalServiceImpl::SetRunPaused(grpc::ServerContext* context,
                                           const v1::SetRunPausedRequest* request,
                                           v1::Run* response) {
  static constexpr char kMethod[] = "EvalService/SetRunPaused";
  AUTHORIZE_OR_RETURN(caller, context, kMethod, Permission::kAdminCall);
  absl::StatusOr<v1::Run> result = coordinator_->SetRunPaused(request->name(), request->paused());
  access_->Audit(caller, *context, kMethod,
                 absl::StrCat("run=", request->name(), " paused=", request->paused()),
                 result.status());
  return Respond(std::move(result), response);
}

grpc::Status EvalServiceImpl::DeleteRun(grpc::ServerContext* context,
                                        const v1::DeleteRunRequest* request,
                                        v1::DeleteRunResponse* response) {
  static constexpr char kMethod[] = "EvalService/DeleteRun";
  AUTHORIZE_OR_RETURN(caller, context, kMethod, Permission::kAdminCall);
  absl::StatusOr<v1::DeleteRunResponse> result = coordinator_->DeleteRun(request->name());
  access_->Audit(caller, *context, kMethod,
                 absl::StrCat("run=", request->name(),
                              result.ok() ? absl::StrCat(" keys_deleted=", result->keys_deleted())
                                          : ""),
                 result.status());
  return Respond(std::move(result), response);
}

grpc::Status EvalServiceImpl::RequeueJobs(grpc::ServerContext* context,
                                          const v1::RequeueJobsRequest* request,
                                          v1::RequeueJobsResponse* response) {
  static constexpr char kMethod[] = "EvalService/RequeueJobs";
  AUTHORIZE_OR_RETURN(caller, context, kMethod, Permission::kAdminCall);
  if (request->job_ids_size() > 10000) {
    return ToGrpcStatus(absl::InvalidArgumentError("at most 10000 job ids per requeue"));
  }
  absl::StatusOr<v1::RequeueJobsResponse> result = coordinator_->RequeueJobs(*request);
  access_->Audit(
      caller, *context, kMethod,
      absl::StrCat(request->job_ids_size() > 0
                       ? absl::StrCat("jobs=", absl::StrJoin(request->job_ids(), ","))
                       : absl::StrCat("run=", request->run(), " state=",
                                      v1::JobState_Name(request->state())),
                   result.ok() ? absl::StrCat(" requeued=", result->requeued_size()) : ""),
      result.status());
  return Respond(std::move(result), response);
}

grpc::Status EvalServiceImpl::ClearTokenizerPin(grpc::ServerContext* context,
                                                const v1::ClearTokenizerPinRequest* request,
                                                v1::Run* response) {
  static constexpr char kMethod[] = "EvalService/ClearTokenizerPin";
  AUTHORIZE_OR_RETURN(caller, context, kMethod, Permission::kAdminCall);
  absl::StatusOr<v1::Run> result = coordinator_->ClearTokenizerPin(request->name());
  access_->Audit(caller, *context, kMethod, absl::StrCat("run=", request->name()),
                 result.status());
  return Respond(std::move(result), response);
}

grpc::Status EvalServiceImpl::GetStability(grpc::ServerContext* context,
                                           const v1::GetStabilityRequest* request,
                                           v1::GetStabilityResponse* response) {
  REQUIRE_PERMISSION(context, "EvalService/GetStability", Permission::kQuery);
  return Respond(coordinator_->GetStability(*request), response);
}

grpc::Status EvalServiceImpl::GetExamples(grpc::ServerContext* context,
                                          const v1::GetExamplesRequest* request,
                                          v1::GetExamplesResponse* response) {
  REQUIRE_PERMISSION(context, "EvalService/GetExamples", Permission::kQuery);
  return Respond(coordinator_->GetExamples(*request), response);
}

grpc::Status EvalServiceImpl::ExportPredictions(
    grpc::ServerContext* context, const v1::ExportPredictionsRequest* request,
    grpc::ServerWriter<v1::ExportedPrediction>* writer) {
  REQUIRE_PERMISSION(context, "EvalService/ExportPredictions", Permission::kQuery);
  return ToGrpcStatus(coordinator_->ExportPredictions(
      *request, [writer](const v1::ExportedPrediction& p) { return writer->Write(p); }));
}

}  // namespace steadyeval
