// `steadyeval-server health --server HOST:PORT [--ca_cert FILE] [--tls_server_name NAME]
// [--timeout_seconds S]`:
// asks a running coordinator's standard gRPC health service (grpc.health.v1.Health/Check,
// service "": the whole server) whether it serves. Made for container probes (Kubernetes
// exec probes, Docker HEALTHCHECK): it needs no token (the health service asks for none)
// and speaks TLS when given the CA that signs the server's certificate.
#ifndef STEADYEVAL_SERVER_HEALTH_PROBE_H_
#define STEADYEVAL_SERVER_HEALTH_PROBE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace steadyeval {

// Runs the subcommand on `argv` (the words after "health"). OK when the server answers
// SERVING, after printing "steadyeval-server: ADDRESS serving" on stdout. Otherwise:
// INVALID_ARGUMENT for bad flags; UNAVAILABLE naming the address when it cannot be reached
// or answers NOT_SERVING (the store refuses writes) or anything else. `--help` prints usage
// and returns OK.
absl::Status RunHealthProbe(const std::vector<std::string>& argv);

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_HEALTH_PROBE_H_
