#include "testing/s3rver.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "testing/files.h"
#include "testing/wait.h"

namespace steadyeval::testing {
namespace {

constexpr char kListening[] = "S3rver listening on 127.0.0.1:";

}  // namespace

std::string S3rver::BinaryPath() {
  const char* override_path = std::getenv("STEADYEVAL_S3RVER");
  if (override_path != nullptr && *override_path != '\0') return override_path;
  return SourceDir() + "/testing/s3rver/node_modules/.bin/s3rver";
}

absl::StatusOr<std::unique_ptr<S3rver>> S3rver::Start() {
  const std::string binary = BinaryPath();
  if (access(binary.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "s3rver is not installed (no executable ", binary,
        "): run scripts/install-s3rver.sh (scripts/test.sh runs it)"));
  }
  std::unique_ptr<S3rver> server(new S3rver());
  if (server->data_dir_.path().empty()) return absl::InternalError("no temp dir for s3rver");
  if (absl::Status started = server->Launch(0); !started.ok()) return started;
  return server;
}

S3rver::~S3rver() { Stop(); }

absl::Status S3rver::Launch(int port) {
  launches_ += 1;
  const std::string log_prefix = data_dir_ / absl::StrCat("s3rver-run", launches_);
  // s3rver's ListObjectsV2 continuation tokens are DES-encrypted, a cipher OpenSSL 3 keeps
  // in its legacy provider: without it, the second page of a listing is HTTP 500.
  absl::StatusOr<ChildProcess> child = ChildProcess::Start(
      {"/usr/bin/env", "NODE_OPTIONS=--openssl-legacy-provider", BinaryPath(), "--directory", data_dir_ / "data", "--address", "127.0.0.1", "--port",
       absl::StrCat(port), "--silent"},
      log_prefix);
  if (!child.ok()) return child.status();
  process_ = std::move(*child);
  int listening_port = 0;
  const bool up = WaitFor(
      [&] {
        const std::string out = ReadFileOrEmpty(log_prefix + ".out");
        const size_t at = out.find(kListening);
        if (at == std::string::npos) return !process_.running();
        const size_t start = at + sizeof(kListening) - 1;
        const size_t end = out.find_first_not_of("0123456789", start);
        if (end == std::string::npos) return false;  // the line is still being written
        return absl::SimpleAtoi(out.substr(start, end - start), &listening_port);
      },
      std::chrono::seconds(60), std::chrono::milliseconds(20));
  if (!up || listening_port == 0) {
    const std::string logs = process_.Logs();
    process_.Stop(SIGKILL);
    return absl::UnavailableError(
        absl::StrCat("s3rver did not start listening on 127.0.0.1:", port, "\n", logs));
  }
  port_ = listening_port;
  return absl::OkStatus();
}

void S3rver::Stop() { process_.Stop(SIGTERM, std::chrono::seconds(10)); }

absl::Status S3rver::Restart() {
  Stop();
  return Launch(port_);
}

std::string S3rver::endpoint() const { return absl::StrCat("http://127.0.0.1:", port_); }

AwsCredentials S3rver::Credentials() {
  AwsCredentials credentials;
  credentials.access_key_id = "S3RVER";
  credentials.secret_access_key = "S3RVER";
  credentials.origin = "the s3rver test fixture";
  return credentials;
}

S3ClientOptions S3rver::ClientOptions() const {
  S3ClientOptions options;
  options.endpoint = endpoint();
  options.region = "us-east-1";
  options.credentials = Credentials();
  options.connect_timeout_ms = 2'000;
  options.stall_timeout_ms = 10'000;
  options.max_attempts = 3;
  options.initial_backoff_ms = 10;
  options.max_backoff_ms = 50;
  return options;
}

std::unique_ptr<S3Client> S3rver::Client() const {
  absl::StatusOr<std::unique_ptr<S3Client>> client = S3Client::Create(ClientOptions());
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

std::string S3rver::Logs() const { return process_.Logs(); }

}  // namespace steadyeval::testing
