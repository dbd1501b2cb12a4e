// An S3 client over libcurl (DESIGN §4; issue #18): what checkpoint discovery and the
// worker's fetches need, for AWS and S3-compatible stores (GCS XML API, MinIO, Ceph RGW).
// Requests are signed with AWS Signature Version 4 (sigv4.h). Transient failures (5xx,
// throttling, connection errors, timeouts) are retried with exponential backoff on the
// options' Clock; every request's outcome is reported to the S3Observer.
//
// Errors are absl::Status in the FileSystem contract's codes (common/file_system.h), and
// every message names the operation, the bucket (and key) and the HTTP status or curl
// error, e.g. "S3 ListObjectsV2 s3://ckpt/run42/: HTTP 403 InvalidAccessKeyId (The AWS
// Access Key Id you provided does not exist in our records) at http://127.0.0.1:9000":
//   NOT_FOUND (404 NoSuchKey / NoSuchBucket), PERMISSION_DENIED (401/403), UNAVAILABLE
//   (retries exhausted: 5xx, throttling, network, timeout), INVALID_ARGUMENT (other 4xx).
// Credentials never appear in a message or a log line.
//
// Thread-safe: one client serves all threads. Each thread's requests share one curl handle
// (reset between requests), so a thread's connections to the store are reused.
#ifndef STEADYEVAL_S3_S3_CLIENT_H_
#define STEADYEVAL_S3_S3_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "s3/credentials.h"
#include "s3/s3_endpoint.h"

namespace steadyeval {

// Why a request failed, for metrics (steadyeval_*_s3_request_errors_total{kind}).
enum class S3ErrorKind {
  kNone,          // succeeded
  kNetwork,       // connection refused/reset, DNS
  kTimeout,       // connect or transfer timeout
  kThrottled,     // 429, 503 SlowDown
  kServerError,   // other 5xx
  kAccessDenied,  // 401, 403 (bad credentials, signature mismatch, policy)
  kNotFound,      // 404
  kClientError,   // other 4xx, malformed responses
};
const char* S3ErrorKindName(S3ErrorKind kind);  // "network", "timeout", "throttled", …

// Sees every HTTP attempt (retries included). Implementations are thread-safe.
class S3Observer {
 public:
  virtual ~S3Observer() = default;
  // `op`: "list", "head", "get", "put", "create_bucket", "delete".
  virtual void OnAttempt(const char* op, double seconds, S3ErrorKind error) = 0;
};

struct S3ClientOptions {
  // "http://127.0.0.1:9000" (path-style: http://host:port/bucket/key); empty: AWS
  // (https://BUCKET.s3.REGION.amazonaws.com/key, virtual-hosted).
  std::string endpoint;
  std::string region = kDefaultS3Region;
  AwsCredentials credentials;
  int64_t connect_timeout_ms = 5'000;
  // A request that moves no bytes for this long is abandoned (a slow but moving
  // transfer of a large object is not).
  int64_t stall_timeout_ms = 30'000;
  int max_attempts = 5;                // including the first
  int64_t initial_backoff_ms = 100;    // doubled per retry, with jitter
  int64_t max_backoff_ms = 5'000;
  Clock* clock = Clock::Real();        // backoff waits; not owned
  S3Observer* observer = nullptr;      // not owned; may be null
};

struct S3Object {
  std::string key;
  uint64_t size = 0;
  std::string etag;           // quotes removed
  int64_t mtime_nanos = 0;    // LastModified
};

struct S3Listing {
  std::vector<S3Object> objects;             // sorted by key
  std::vector<std::string> common_prefixes;  // with the trailing delimiter, sorted
};

class S3Client {
 public:
  // INVALID_ARGUMENT for an endpoint that is not an http(s):// URL with a host.
  static absl::StatusOr<std::unique_ptr<S3Client>> Create(S3ClientOptions options);
  ~S3Client();

  // ListObjectsV2 of `prefix` (with `delimiter` when not empty), following continuation
  // tokens to the end: every page, however many keys.
  absl::StatusOr<S3Listing> List(const std::string& bucket, const std::string& prefix,
                                 const std::string& delimiter = "/");

  // The first page only, of at most `max_keys` objects and common prefixes together: enough
  // to tell whether anything exists under `prefix` (NOT_FOUND only for a missing bucket).
  absl::StatusOr<S3Listing> ListFirstPage(const std::string& bucket, const std::string& prefix,
                                          const std::string& delimiter, int max_keys);

  absl::StatusOr<S3Object> Head(const std::string& bucket, const std::string& key);

  // Bytes [offset, offset + length) (fewer at the end of the object; none from or past
  // the end).
  absl::StatusOr<std::string> GetRange(const std::string& bucket, const std::string& key,
                                       uint64_t offset, uint64_t length);

  // The whole object, streamed into the file `path` (created or truncated) and fsynced.
  // When `expected_size` is set, DATA_LOSS unless exactly that many bytes arrived.
  absl::Status GetToFile(const std::string& bucket, const std::string& key,
                         const std::string& path, int64_t expected_size = -1);

  absl::Status Put(const std::string& bucket, const std::string& key, const std::string& bytes);
  absl::Status Delete(const std::string& bucket, const std::string& key);
  absl::Status CreateBucket(const std::string& bucket);

  const S3ClientOptions& options() const { return options_; }
  // The endpoint as messages show it ("http://127.0.0.1:9000", or "AWS (us-east-1)").
  std::string DescribeEndpoint() const;

 private:
  struct Request;   // one S3 operation (s3_client.cc)
  struct Response;  // what its last attempt got

  explicit S3Client(S3ClientOptions options);
  // Sends `request`, retrying transient failures with backoff; OK only for a success.
  absl::StatusOr<Response> Execute(const Request& request) const;
  // One HTTP attempt.
  Response Attempt(const Request& request) const;
  // ListObjectsV2 pages: every page, or (max_keys > 0) the first page of max_keys entries.
  absl::StatusOr<S3Listing> ListPages(const std::string& bucket, const std::string& prefix,
                                      const std::string& delimiter, int max_keys) const;
  // The URL of `request` and the value of its Host header.
  std::string Url(const Request& request, std::string* host, std::string* path) const;

  S3ClientOptions options_;
  // The custom endpoint split up ("http", "127.0.0.1:9000", a base path or ""); empty for AWS.
  std::string scheme_;
  std::string authority_;
  std::string base_path_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_S3_S3_CLIENT_H_
