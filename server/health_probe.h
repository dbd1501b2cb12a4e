// `steadyeval-server health --server HOST:PORT [--ca_cert FILE] [--tls_server_name NAME]
// [--timeout_seconds S]`:
// asks a running coordinator's standard gRPC health service (grpc.health.v1.Health/Check,
// service "": the whole server) whether it serves. Made for container probes (Kubernetes
// exec probes, Docker HEALTHCHECK): it needs no token (the health service asks for none)
// and speaks TLS when given the CA that signs the server's certificate.
#ifndef STEADYEVAL_SERVER_HEALTH_PROBE_H_
#define STEADYEVAL_SERVER_HEALTH_PROBE_H_

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace steadyeval {

// The serving status field of grpc.health.v1.HealthCheckResponse (field 1, an enum).
enum class ServingStatus { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };

// One Check call for service "" (the whole server) on `channel`. UNAVAILABLE with gRPC's
// message when the call fails; DATA_LOSS for a response that is not a HealthCheckResponse.
absl::StatusOr<ServingStatus> CheckServing(const std::shared_ptr<grpc::Channel>& channel,
                                           double timeout_seconds);

// Runs the subcommand on `argv` (the words after "health"). OK when the server answers
// SERVING, after printing "steadyeval-server: ADDRESS serving" on stdout. Otherwise:
// INVALID_ARGUMENT for bad flags; UNAVAILABLE naming the address when it cannot be reached
// or answers NOT_SERVING (the store refuses writes) or anything else. `--help` prints usage
// and returns OK.
absl::Status RunHealthProbe(const std::vector<std::string>& argv);

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_HEALTH_PROBE_H_
