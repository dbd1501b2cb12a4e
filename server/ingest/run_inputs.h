// Checks on what a client sends to create a run, before any of it is parsed or stored
// (issue 16): sizes bounded by common/limits.h, and the source confined to the
// coordinator's --source_roots. A source is a local folder (a path or file:// URL) or an
// S3-compatible bucket prefix (s3://bucket/prefix, issue 18) whose endpoint must be in the
// coordinator's --s3_endpoints (AWS, the empty endpoint, always is).
#ifndef STEADYEVAL_SERVER_INGEST_RUN_INPUTS_H_
#define STEADYEVAL_SERVER_INGEST_RUN_INPUTS_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "s3/s3_endpoint.h"  // kDefaultS3Region, DefaultS3Region
#include "steadyeval/v1/types.pb.h"

namespace steadyeval {

// INVALID_ARGUMENT naming the field and the bound for oversized names, paths, patterns,
// markers (which must also stay inside the checkpoint: relative, no ".."), window lists,
// task counts and task files. Messages quote inputs cut and escaped (Printable).
absl::Status CheckRunInputLimits(const v1::RunConfig& config,
                                 const std::vector<v1::TaskContent>& task_files);

// What a run's source is checked against (the coordinator's flags).
struct SourceRules {
  // --source_roots as ParseSourceRoots gives them: resolved folders and normalised
  // s3://bucket[/prefix] URIs. Empty: any source the coordinator can read.
  std::vector<std::string> roots;
  // --s3_endpoints as ParseS3Endpoints gives them (normalised). AWS is always allowed.
  std::vector<std::string> s3_endpoints;
  // The region of s3 runs created without one: the coordinator's AWS_REGION /
  // AWS_DEFAULT_REGION, else us-east-1 (DefaultS3Region, s3/s3_endpoint.h).
  std::string default_s3_region = kDefaultS3Region;
};

// Checks `config`'s source and its S3 settings, and normalises them in place:
//   - a local source (path or file://) must resolve under a local root (ResolveSource);
//     s3_endpoint and s3_region must be empty (INVALID_ARGUMENT naming them);
//   - an s3:// source is parsed (ParseS3Uri) and stored normalised ("s3://bucket/prefix",
//     no trailing '/'); it need not hold any object yet. With roots, it must be one of the
//     s3 roots or below one, comparing bucket and key components (PERMISSION_DENIED naming
//     the roots). Its endpoint is stored normalised (NormalizeS3Endpoint) and must be empty
//     (AWS) or listed in rules.s3_endpoints (PERMISSION_DENIED naming the endpoint and
//     --s3_endpoints). An empty region is filled in with rules.default_s3_region, so the
//     run keeps the region it was created with whatever the coordinator's environment
//     later says, and leases carry it to workers.
// `convert`, when set, must be a converter name ([A-Za-z0-9._-], at most 64 bytes).
absl::Status CheckRunSource(v1::RunConfig& config, const SourceRules& rules);

// Resolves `source` (a path or file:// URI) to an existing directory, symlinks followed.
// With `roots`, the resolved folder must be one of them or below one (compared by path
// components after resolving the roots too); PERMISSION_DENIED names the roots otherwise.
// INVALID_ARGUMENT for a relative, missing or non-directory source.
absl::StatusOr<std::string> ResolveSource(const std::string& source,
                                          const std::vector<std::string>& roots);

// Parses --source_roots: comma-separated absolute folders, each resolved (they must
// exist), and s3://bucket[/prefix] URIs, each normalised. INVALID_ARGUMENT naming the entry
// otherwise.
absl::StatusOr<std::vector<std::string>> ParseSourceRoots(const std::string& flag_value);

// Whether `name` is 1 to `max_bytes` characters of [A-Za-z0-9._-] (run names: 128,
// converter names: 64), safe in a file name and a command line.
bool IsPlainName(absl::string_view name, size_t max_bytes);

// An S3 endpoint as runs and --s3_endpoints name it: "http(s)://host[:port]" with the
// scheme and host lower-cased, the scheme's default port and a trailing '/' dropped.
// INVALID_ARGUMENT for another scheme, no host, user info, a path, a query or a bad port.
absl::StatusOr<std::string> NormalizeS3Endpoint(absl::string_view url);

// Parses --s3_endpoints: comma-separated endpoint URLs, each normalised.
absl::StatusOr<std::vector<std::string>> ParseS3Endpoints(const std::string& flag_value);

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_INGEST_RUN_INPUTS_H_
