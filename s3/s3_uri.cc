#include "s3/s3_uri.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace steadyeval {
namespace {

constexpr absl::string_view kScheme = "s3://";

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// What is wrong with `bucket` as an S3 bucket name (AWS's rules for new buckets), or "".
std::string BucketNameProblem(absl::string_view bucket) {
  if (bucket.size() < 3 || bucket.size() > 63) {
    return absl::StrCat("a bucket name has 3 to 63 characters, \"", bucket, "\" has ",
                        bucket.size());
  }
  for (char c : bucket) {
    if (!IsLowerAlnum(c) && c != '.' && c != '-') {
      return absl::StrCat("bucket \"", bucket,
                          "\" may hold only lowercase letters, digits, '.' and '-'");
    }
  }
  if (!IsLowerAlnum(bucket.front()) || !IsLowerAlnum(bucket.back())) {
    return absl::StrCat("bucket \"", bucket, "\" must start and end with a letter or digit");
  }
  if (absl::StrContains(bucket, "..")) {
    return absl::StrCat("bucket \"", bucket, "\" has two '.' in a row");
  }
  return "";
}

}  // namespace

bool IsS3Uri(absl::string_view text) { return absl::StartsWith(text, kScheme); }

bool IsUnderS3Prefix(const S3Uri& root, const S3Uri& uri) {
  if (uri.bucket != root.bucket) return false;
  if (root.key.empty() || uri.key == root.key) return true;
  return uri.key.size() > root.key.size() && absl::StartsWith(uri.key, root.key) &&
         uri.key[root.key.size()] == '/';
}

absl::StatusOr<S3Uri> ParseS3Uri(absl::string_view text) {
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("invalid S3 URI \"", text, "\": ", why));
  };
  if (!IsS3Uri(text)) return invalid("it does not start with s3://");
  absl::string_view rest = text.substr(kScheme.size());
  const size_t slash = rest.find('/');
  S3Uri uri;
  uri.bucket = std::string(rest.substr(0, slash));
  if (uri.bucket.empty()) return invalid("no bucket (expected s3://bucket/prefix)");
  if (std::string problem = BucketNameProblem(uri.bucket); !problem.empty()) {
    return invalid(problem);
  }
  if (slash == absl::string_view::npos) return uri;
  absl::string_view key = rest.substr(slash + 1);
  if (absl::EndsWith(key, "/")) key.remove_suffix(1);
  if (key.empty()) return uri;
  for (absl::string_view component : absl::StrSplit(key, '/')) {
    if (component.empty()) return invalid("the key has an empty component (\"//\")");
    if (component == "." || component == "..") {
      return invalid(absl::StrCat("the key has a \"", component, "\" component"));
    }
  }
  uri.key = std::string(key);
  return uri;
}

std::string FormatS3Uri(const S3Uri& uri) {
  if (uri.key.empty()) return absl::StrCat(kScheme, uri.bucket);
  return absl::StrCat(kScheme, uri.bucket, "/", uri.key);
}

}  // namespace steadyeval
