#include "server/rpc/access_control.h"

#include <iostream>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/text_escape.h"

namespace steadyeval {
namespace {

std::optional<absl::string_view> AuthorizationOf(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::nullopt;
  return absl::string_view(it->second.data(), it->second.size());
}

}  // namespace

AccessControl::AccessControl(const Authenticator* auth, prometheus::Registry& registry)
    : auth_(auth),
      refused_(prometheus::BuildCounter()
                   .Name("steadyeval_auth_refused_total")
                   .Help("Calls refused by authentication or authorization, by method and "
                         "reason (unauthenticated, permission_denied, worker_identity)")
                   .Register(registry)),
      admin_actions_(prometheus::BuildCounter()
                         .Name("steadyeval_admin_actions_total")
                         .Help("Admin calls (run changes, requeues, pins, backups) by method and "
                               "result (ok or the status code)")
                         .Register(registry)) {
  // The admin methods' success series exist from the start at 0, so the first action
  // shows as an increase (alert SteadyevalAdminActionTaken).
  for (const char* method :
       {"EvalService/CreateRun", "EvalService/UpdateRun", "EvalService/Rescore",
        "EvalService/SetRunPaused", "EvalService/DeleteRun", "EvalService/RequeueJobs",
        "EvalService/ClearTokenizerPin", "EvalService/Backup"}) {
    admin_actions_.Add({{"method", method}, {"result", "ok"}});
  }
}

absl::Status AccessControl::Refuse(absl::string_view method, absl::string_view reason,
                                   absl::Status status) {
  refused_.Add({{"method", std::string(method)}, {"reason", std::string(reason)}}).Increment();
  return status;
}

absl::StatusOr<Identity> AccessControl::Authorize(const grpc::ServerContext& context,
                                                  absl::string_view method,
                                                  Permission permission) {
  absl::StatusOr<Identity> identity = auth_->Check(AuthorizationOf(context), permission);
  if (!identity.ok()) {
    const char* reason = identity.status().code() == absl::StatusCode::kPermissionDenied
                             ? "permission_denied"
                             : "unauthenticated";
    return Refuse(method, reason, identity.status());
  }
  return identity;
}

absl::Status AccessControl::BindWorker(const Identity& caller, absl::string_view method,
                                       const std::string& worker_id) {
  if (!caller.authenticated) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = worker_tokens_.emplace(worker_id, caller.name);
  if (!inserted && it->second != caller.name) {
    return Refuse(method, "worker_identity",
                  absl::PermissionDeniedError(absl::StrCat(
                      "worker id '", Printable(worker_id, 64),
                      "' is registered by another token; choose another id")));
  }
  return absl::OkStatus();
}

absl::Status AccessControl::CheckWorker(const Identity& caller, absl::string_view method,
                                        const std::string& worker_id) {
  if (!caller.authenticated) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  auto it = worker_tokens_.find(worker_id);
  if (it == worker_tokens_.end()) {
    return absl::NotFoundError(absl::StrCat("worker '", Printable(worker_id, 64),
                                            "' is not registered (call RegisterWorker again)"));
  }
  if (it->second != caller.name) {
    return Refuse(method, "worker_identity",
                  absl::PermissionDeniedError(absl::StrCat(
                      "worker '", Printable(worker_id, 64), "' belongs to another token")));
  }
  return absl::OkStatus();
}

std::string AccessControl::WorkerToken(const std::string& worker_id) const {
  absl::MutexLock lock(&mu_);
  auto it = worker_tokens_.find(worker_id);
  return it == worker_tokens_.end() ? "" : it->second;
}

void AccessControl::Audit(const Identity& caller, const grpc::ServerContext& context,
                          absl::string_view method, absl::string_view target,
                          const absl::Status& result) {
  const std::string outcome =
      result.ok() ? "ok" : std::string(absl::StatusCodeToString(result.code()));
  admin_actions_.Add({{"method", std::string(method)}, {"result", outcome}}).Increment();
  std::string line = absl::StrCat(
      "steadyeval-server: audit: ", caller.name, " (", RoleName(caller.role), ") ", method, " ",
      Printable(target, 256), " from ", Printable(context.peer(), 128), ": ",
      result.ok() ? "OK" : absl::StrCat(outcome, ": ", Printable(result.message(), 256)), "\n");
  std::cerr << line << std::flush;
}

}  // namespace steadyeval
