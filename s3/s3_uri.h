// s3:// URIs (DESIGN §4): "s3://bucket/prefix/…", the form a run's source, the checkpoint
// paths the coordinator leases and the paths of S3FileSystem all take.
#ifndef STEADYEVAL_S3_S3_URI_H_
#define STEADYEVAL_S3_S3_URI_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace steadyeval {

struct S3Uri {
  std::string bucket;  // a valid S3 bucket name (3-63 of [a-z0-9.-])
  std::string key;     // the object key or prefix, no leading '/'; may be empty (the bucket)
};

// True when `text` starts with "s3://".
bool IsS3Uri(absl::string_view text);

// Parses "s3://bucket[/key]". Trailing '/' on the key is dropped (a prefix names a folder).
// INVALID_ARGUMENT naming the text and what is wrong (no bucket, a bad bucket name, "//"
// or "." / ".." components in the key).
absl::StatusOr<S3Uri> ParseS3Uri(absl::string_view text);

// Whether `uri` is `root` or below it: the same bucket, and root's key (empty: the whole
// bucket) is uri's key or a prefix of it ending at a '/' (whole key components, so
// s3://b/run1 does not hold s3://b/run10).
bool IsUnderS3Prefix(const S3Uri& root, const S3Uri& uri);

// "s3://bucket/key" ("s3://bucket" for an empty key).
std::string FormatS3Uri(const S3Uri& uri);

}  // namespace steadyeval

#endif  // STEADYEVAL_S3_S3_URI_H_
