#include "server/health_probe.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <future>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/cli_args.h"
#include "common/grpc_channel.h"
#include "common/status.h"

namespace steadyeval {
namespace {

constexpr char kUsage[] =
    "usage: steadyeval-server health --server HOST:PORT [--ca_cert FILE] "
    "[--tls_server_name NAME] [--timeout_seconds S]";

const std::vector<FlagSpec>& HealthFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"server", false, "the coordinator's gRPC address (required)", "HOST:PORT"},
      {"ca_cert", false,
       "PEM roots that sign the server's certificate: check over TLS (without it: plaintext)",
       "FILE"},
      {"tls_server_name", false,
       "check the server's certificate for NAME instead of the --server host (a probe "
       "dialling 127.0.0.1 of a server whose certificate names its Service)",
       "NAME"},
      {"timeout_seconds", false, "give up after this long (default 5)", "S"},
      {"help", true, "show this help", ""},
  };
  return *flags;
}

const char* StatusName(ServingStatus status) {
  switch (status) {
    case ServingStatus::kUnknown: return "UNKNOWN";
    case ServingStatus::kServing: return "SERVING";
    case ServingStatus::kNotServing: return "NOT_SERVING";
    case ServingStatus::kServiceUnknown: return "SERVICE_UNKNOWN";
  }
  return "an unknown status";
}

// Decodes a HealthCheckResponse without generated code (Debian ships none for the health
// proto): empty (proto3 default UNKNOWN) or the two bytes 0x08 STATUS.
absl::StatusOr<ServingStatus> DecodeResponse(const grpc::ByteBuffer& response) {
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return absl::DataLossError("unreadable health response");
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  if (bytes.empty()) return ServingStatus::kUnknown;
  if (bytes.size() != 2 || bytes[0] != 0x08 || bytes[1] < 0 || bytes[1] > 3) {
    return absl::DataLossError("the health response is not a grpc.health.v1 HealthCheckResponse");
  }
  return static_cast<ServingStatus>(bytes[1]);
}


}  // namespace

absl::StatusOr<ServingStatus> CheckServing(const std::shared_ptr<grpc::Channel>& channel,
                                           double timeout_seconds) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000)));
  grpc::Slice empty("", 0);
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status status) { done.set_value(std::move(status)); });
  grpc::Status status = done.get_future().get();
  if (!status.ok()) {
    return absl::UnavailableError(status.error_message());
  }
  return DecodeResponse(response);
}

absl::Status RunHealthProbe(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(ParsedArgs args, ParseArgs(argv, HealthFlags()));
  if (args.Has("help")) {
    std::cout << kUsage
              << "\n\nAsks the coordinator's gRPC health service whether it serves; exits 0 "
                 "when it answers SERVING, 1 otherwise (unreachable, TLS refused, or "
                 "NOT_SERVING while its store refuses writes). Needs no token. For container "
                 "readiness/liveness probes.\n\n"
              << FlagsHelp(HealthFlags());
    return absl::OkStatus();
  }
  if (!args.positionals().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unexpected argument '", args.positionals().front(), "' (", kUsage, ")"));
  }
  const std::string address = args.Get("server");
  if (address.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("health needs --server HOST:PORT (", kUsage,
                                                   ")"));
  }
  ASSIGN_OR_RETURN(const double timeout_seconds, args.GetDouble("timeout_seconds", 5));
  if (timeout_seconds <= 0) {
    return absl::InvalidArgumentError("--timeout_seconds must be > 0");
  }
  ChannelOptions options;
  options.target = address;
  options.ca_cert = args.Get("ca_cert");
  const std::string server_name = args.Get("tls_server_name");
  if (!server_name.empty()) {
    if (options.ca_cert.empty()) {
      return absl::InvalidArgumentError("--tls_server_name needs --ca_cert (it is for TLS)");
    }
    options.arguments.SetSslTargetNameOverride(server_name);
  }
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, OpenChannel(options));
  const std::string how = options.ca_cert.empty() ? "plaintext" : "TLS";
  absl::StatusOr<ServingStatus> status = CheckServing(channel, timeout_seconds);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "health check of ", address, " (", how, ") failed: ", status.status().message(),
        options.ca_cert.empty() ? " (a server with TLS on needs --ca_cert FILE)" : ""));
  }
  if (*status != ServingStatus::kServing) {
    return absl::UnavailableError(absl::StrCat(
        address, " answers ", StatusName(*status),
        *status == ServingStatus::kNotServing
            ? " (its store refuses writes: see its log and steadyeval_store_* metrics)"
            : ""));
  }
  std::cout << "steadyeval-server: " << address << " serving (" << how << ")" << std::endl;
  return absl::OkStatus();
}

}  // namespace steadyeval
