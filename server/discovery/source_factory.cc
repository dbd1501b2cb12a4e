#include "server/discovery/source_factory.h"

#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "s3/s3_file_system.h"
#include "s3/s3_uri.h"

namespace steadyeval {
namespace {

absl::StatusOr<std::shared_ptr<FileSystem>> MakeS3FileSystem(const S3ClientOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<S3Client> client, S3Client::Create(options));
  return std::shared_ptr<FileSystem>(
      std::make_shared<S3FileSystem>(std::shared_ptr<S3Client>(std::move(client))));
}

}  // namespace

const char* SourceScheme(const std::string& source) { return IsS3Uri(source) ? "s3" : "file"; }

RunSourceFactory::RunSourceFactory(RunSourceOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<CheckpointSource>> RunSourceFactory::Make(
    const v1::RunConfig& config) {
  if (!IsS3Uri(config.source())) {
    ASSIGN_OR_RETURN(std::unique_ptr<FileSystemSource> source,
                     FileSystemSource::Create(config.source(), options_.local));
    return std::unique_ptr<CheckpointSource>(std::move(source));
  }
  const std::string region =
      config.s3_region().empty() ? options_.default_s3_region : config.s3_region();
  ASSIGN_OR_RETURN(FileSystem* const fs, S3FileSystemFor(config.s3_endpoint(), region));
  ASSIGN_OR_RETURN(std::unique_ptr<FileSystemSource> source,
                   FileSystemSource::Create(config.source(), fs));
  return std::unique_ptr<CheckpointSource>(std::move(source));
}

absl::StatusOr<FileSystem*> RunSourceFactory::S3FileSystemFor(const std::string& endpoint,
                                                              const std::string& region) {
  absl::MutexLock lock(&mu_);
  auto it = s3_.find({endpoint, region});
  if (it != s3_.end()) return it->second.get();

  const GetEnvFn getenv_fn =
      options_.getenv ? options_.getenv : GetEnvFn([](const char* name) { return std::getenv(name); });
  absl::StatusOr<AwsCredentials> credentials = LoadAwsCredentials(getenv_fn);
  if (!credentials.ok()) {
    // The message says what was looked at (names and paths, never a value).
    return absl::FailedPreconditionError(absl::StrCat(
        "the coordinator has no AWS credentials to read s3:// sources with (set "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_SHARED_CREDENTIALS_FILE, in "
        "steadyeval-server's environment and restart it): ",
        credentials.status().message()));
  }
  S3ClientOptions client = options_.client_template;
  client.endpoint = endpoint;
  client.region = region;
  client.credentials = *std::move(credentials);
  client.clock = options_.clock;
  client.observer = options_.s3_observer;
  absl::StatusOr<std::shared_ptr<FileSystem>> fs = options_.make_s3_file_system
                                                       ? options_.make_s3_file_system(client)
                                                       : MakeS3FileSystem(client);
  if (!fs.ok()) {
    return Annotate(fs.status(), absl::StrCat("S3 endpoint ", endpoint.empty() ? "AWS" : endpoint,
                                              " (region ", region, ")"));
  }
  FileSystem* const made = fs->get();
  s3_[{endpoint, region}] = *std::move(fs);
  return made;
}

size_t RunSourceFactory::s3_file_systems() const {
  absl::MutexLock lock(&mu_);
  return s3_.size();
}

}  // namespace steadyeval
