// AWS Signature Version 4 (header form), with OpenSSL's SHA-256 and HMAC. A pure function
// of the request, so AWS's published test vectors are its tests (sigv4_test.cc).
#ifndef STEADYEVAL_S3_SIGV4_H_
#define STEADYEVAL_S3_SIGV4_H_

#include <string>
#include <utility>
#include <vector>

#include "s3/credentials.h"

namespace steadyeval {

struct SigV4Request {
  std::string method;  // "GET"
  std::string path;    // URI path as sent, already percent-encoded ("/bucket/a%20b")
  // Query parameters, not encoded and in any order: the signer encodes and sorts them.
  std::vector<std::pair<std::string, std::string>> query;
  // Headers to sign (name in any case, value as sent); must include "host".
  std::vector<std::pair<std::string, std::string>> headers;
  std::string payload_sha256;  // hex; "UNSIGNED-PAYLOAD" allowed
};

struct SigV4Signature {
  std::string canonical_request;  // for tests and debugging (holds no secret)
  std::string string_to_sign;
  std::string authorization;      // the Authorization header's value
};

// `amz_date` is "YYYYMMDDTHHMMSSZ" (also sent as x-amz-date, which the caller puts in
// `headers`); `service` is "s3" for S3.
SigV4Signature SignV4(const SigV4Request& request, const AwsCredentials& credentials,
                      const std::string& region, const std::string& service,
                      const std::string& amz_date);

// RFC 3986 percent-encoding as SigV4 wants it (unreserved kept; '/' kept when `keep_slash`).
std::string UriEncode(const std::string& text, bool keep_slash);

}  // namespace steadyeval

#endif  // STEADYEVAL_S3_SIGV4_H_
