// AWS credentials as the AWS CLI finds them, from the process's own environment: they are
// never sent over steadyeval's API, logged, stored or shown (DESIGN §4; issue #18).
#ifndef STEADYEVAL_S3_CREDENTIALS_H_
#define STEADYEVAL_S3_CREDENTIALS_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"

namespace steadyeval {

// Deliberately has no operator<< / AbslStringify: printing one is a bug.
struct AwsCredentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // optional (temporary credentials)
  std::string origin;         // where they came from, for messages: "environment", a file path
};

// getenv, injectable for tests.
using GetEnvFn = std::function<const char*(const char*)>;

// In order: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN); else the
// profile AWS_PROFILE (default "default") of AWS_SHARED_CREDENTIALS_FILE, else of
// $HOME/.aws/credentials. NOT_FOUND saying what was looked at and how to provide them;
// INVALID_ARGUMENT for a credentials file that does not parse (file:line, never a value).
absl::StatusOr<AwsCredentials> LoadAwsCredentials(const GetEnvFn& getenv_fn);
absl::StatusOr<AwsCredentials> LoadAwsCredentials();  // from the real environment

// The region from AWS_REGION, else AWS_DEFAULT_REGION, else "" (callers default it).
std::string RegionFromEnvironment(const GetEnvFn& getenv_fn);

}  // namespace steadyeval

#endif  // STEADYEVAL_S3_CREDENTIALS_H_
