// RunSourceFactory: the CheckpointSource of each run, by its source's scheme (DESIGN §4;
// issue 18). A folder (a path or file:// URL) is a FileSystemSource on the local file
// system; an s3:// prefix is a FileSystemSource on an S3FileSystem, whose paths stay full
// s3:// URIs.
//
// One S3 file system (one S3Client) serves every run of the same (endpoint, region), and
// all of them report to one S3Observer. The client signs with the coordinator's own
// credentials (LoadAwsCredentials from its environment), read when the first run of an
// (endpoint, region) needs them; they are never stored in a run, logged, sent or shown.
// Without credentials an s3 run's source cannot be made: FAILED_PRECONDITION naming
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SHARED_CREDENTIALS_FILE, so CreateRun
// refuses the run and a stored run's status says why it is not polled.
//
// Thread-safe. The factory owns the S3 file systems: it must outlive every source it makes.
#ifndef STEADYEVAL_SERVER_DISCOVERY_SOURCE_FACTORY_H_
#define STEADYEVAL_SERVER_DISCOVERY_SOURCE_FACTORY_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/file_system.h"
#include "s3/credentials.h"
#include "s3/s3_client.h"
#include "s3/s3_endpoint.h"
#include "server/discovery/checkpoint_source.h"
#include "steadyeval/v1/types.pb.h"

namespace steadyeval {

struct RunSourceOptions {
  FileSystem* local = FileSystem::Local();  // folders; not owned
  S3Observer* s3_observer = nullptr;        // sees every S3 request; not owned, may be null
  Clock* clock = Clock::Real();             // S3 retry backoff; not owned
  // Where credentials are read; empty: the process's environment.
  GetEnvFn getenv;
  // The region of an s3 run that names none (runs are stored with one: CheckRunSource).
  std::string default_s3_region = kDefaultS3Region;
  // Timeouts, retries and backoff of every S3 client; its endpoint, region, credentials,
  // clock and observer are set per client from the run and the fields above.
  S3ClientOptions client_template;
  // Makes the file system of one (endpoint, region) from its client's options
  // (credentials loaded, observer and clock set). Empty: an S3FileSystem over
  // S3Client::Create. Tests pass fakes.
  std::function<absl::StatusOr<std::shared_ptr<FileSystem>>(const S3ClientOptions&)>
      make_s3_file_system;
};

class RunSourceFactory {
 public:
  explicit RunSourceFactory(RunSourceOptions options);

  // The source of `config` (its source, s3_endpoint and s3_region). Errors: those of
  // FileSystemSource::Create; for s3://, FAILED_PRECONDITION without credentials and
  // whatever making the client reports (INVALID_ARGUMENT for a bad endpoint). A failure
  // is not cached: the next call tries again (credentials may have been provided since).
  absl::StatusOr<std::unique_ptr<CheckpointSource>> Make(const v1::RunConfig& config);

  // Distinct (endpoint, region) pairs with a file system made so far.
  size_t s3_file_systems() const;

 private:
  absl::StatusOr<FileSystem*> S3FileSystemFor(const std::string& endpoint,
                                               const std::string& region);

  const RunSourceOptions options_;
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, std::shared_ptr<FileSystem>> s3_
      ABSL_GUARDED_BY(mu_);
};

// The scheme of a run's source, as metrics label it: "s3" or "file".
const char* SourceScheme(const std::string& source);

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_DISCOVERY_SOURCE_FACTORY_H_
