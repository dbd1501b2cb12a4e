// Where an S3-compatible store is: its endpoint URL and the region requests are signed for.
// One parser of the endpoint URL's parts for the client (S3Client::Create) and for the
// coordinator's check of the endpoints it allows (server/ingest/run_inputs.h).
#ifndef STEADYEVAL_S3_S3_ENDPOINT_H_
#define STEADYEVAL_S3_S3_ENDPOINT_H_

#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace steadyeval {

// The region used when none is given (a run's s3_region, AWS_REGION, AWS_DEFAULT_REGION).
inline constexpr char kDefaultS3Region[] = "us-east-1";

// The region of requests that name none: `region_from_environment` (AWS_REGION /
// AWS_DEFAULT_REGION, credentials.h RegionFromEnvironment) when set, else kDefaultS3Region.
// The coordinator and the worker resolve it once at start-up.
std::string DefaultS3Region(const std::string& region_from_environment);

// An http(s):// URL split up, nothing checked but the scheme.
struct HttpUrlParts {
  std::string scheme;     // "http" or "https", lower-case
  std::string authority;  // what follows "://" up to the first '/' (host[:port]), as given
  std::string path;       // from that '/' on, as given; empty when there is none
};

// `url` split up; nullopt when it does not start with http:// or https:// (any case).
std::optional<HttpUrlParts> SplitHttpUrl(absl::string_view url);

}  // namespace steadyeval

#endif  // STEADYEVAL_S3_S3_ENDPOINT_H_
