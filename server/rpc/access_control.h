// The gate every coordinator RPC handler passes first (issue 16): authenticates the caller
// from the call's metadata (server/rpc/auth.h), checks the permission the method needs, binds
// worker ids to the token that registered them, counts refusals and admin actions
// (steadyeval_auth_refused_total, steadyeval_admin_actions_total) and writes one audit
// line per admin action to stderr. Thread-safe.
#ifndef STEADYEVAL_SERVER_RPC_ACCESS_CONTROL_H_
#define STEADYEVAL_SERVER_RPC_ACCESS_CONTROL_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/registry.h"
#include "server/rpc/auth.h"

namespace steadyeval {

class AccessControl {
 public:
  // `auth` (not owned) outlives this; its series go into `registry`.
  AccessControl(const Authenticator* auth, prometheus::Registry& registry);

  bool enabled() const { return auth_->enabled(); }

  // The caller of `method` (e.g. "EvalService/DeleteRun") if it may call it; otherwise
  // UNAUTHENTICATED or PERMISSION_DENIED, counted by reason.
  absl::StatusOr<Identity> Authorize(const grpc::ServerContext& context, absl::string_view method,
                                     Permission permission);

  // RegisterWorker: binds `worker_id` to the caller's token name. PERMISSION_DENIED when
  // another token registered that id in this process's lifetime. No-op without tokens.
  absl::Status BindWorker(const Identity& caller, absl::string_view method,
                          const std::string& worker_id);
  // The other WorkerService calls: the caller's token must have registered `worker_id`.
  // NOT_FOUND when nobody has (register again), PERMISSION_DENIED for another token's id.
  absl::Status CheckWorker(const Identity& caller, absl::string_view method,
                           const std::string& worker_id);
  // The token name that registered `worker_id`; empty when none (or without tokens).
  std::string WorkerToken(const std::string& worker_id) const;

  // After an admin call: counts it by result and writes the audit line
  // "steadyeval-server: audit: NAME (ROLE) METHOD TARGET from PEER: OK|CODE: message".
  void Audit(const Identity& caller, const grpc::ServerContext& context, absl::string_view method,
             absl::string_view target, const absl::Status& result);

 private:
  absl::Status Refuse(absl::string_view method, absl::string_view reason, absl::Status status);

  const Authenticator* const auth_;
  prometheus::Family<prometheus::Counter>& refused_;
  prometheus::Family<prometheus::Counter>& admin_actions_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::string> worker_tokens_ ABSL_GUARDED_BY(mu_);
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_RPC_ACCESS_CONTROL_H_
