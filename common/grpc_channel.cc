#include "common/grpc_channel.h"

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/file_read.h"
#include "common/status.h"
#include "grpcpp/support/client_interceptor.h"

namespace steadyeval {
namespace {

constexpr size_t kMaxTokenFileBytes = 64 << 10;
constexpr size_t kMaxPemBytes = 1 << 20;

// Adds the bearer token to every call's initial metadata.
class BearerTokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", *header_);
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

class BearerTokenInterceptorFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(std::string token)
      : header_(absl::StrCat("Bearer ", token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new BearerTokenInterceptor(&header_);
  }

 private:
  const std::string header_;  // lives as long as the channel (which owns the factory)
};

}  // namespace

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string content, ReadRegularFile(path, kMaxTokenFileBytes, "token file"));
  std::string first = content.substr(0, content.find('\n'));
  absl::StripTrailingAsciiWhitespace(&first);
  if (first.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, " has an empty first line (it must hold the token)"));
  }
  return first;
}

absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& flag) {
  return ReadRegularFile(path, kMaxPemBytes, absl::StrCat("--", flag));
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const ChannelOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.ca_cert.empty()) {
    if (!options.client_cert.empty() || !options.client_key.empty()) {
      return absl::InvalidArgumentError(
          "--client_cert/--client_key need --ca_cert (a client certificate is only sent over "
          "TLS)");
    }
    credentials = grpc::InsecureChannelCredentials();
  } else {
    if (options.client_cert.empty() != options.client_key.empty()) {
      return absl::InvalidArgumentError("--client_cert and --client_key go together");
    }
    grpc::SslCredentialsOptions ssl;
    ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPemFile(options.ca_cert, "ca_cert"));
    if (!options.client_cert.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPemFile(options.client_cert, "client_cert"));
      ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPemFile(options.client_key, "client_key"));
    }
    credentials = grpc::SslCredentials(ssl);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  if (!options.token_file.empty()) {
    ASSIGN_OR_RETURN(std::string token, ReadTokenFile(options.token_file));
    factories.push_back(std::make_unique<BearerTokenInterceptorFactory>(std::move(token)));
  }
  grpc::ChannelArguments arguments = options.arguments;
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      options.target, credentials, arguments, std::move(factories));
}

}  // namespace steadyeval
