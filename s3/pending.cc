// Placeholder bodies so the layers above link while the client is written (issue #18).
// Every call fails with UNIMPLEMENTED. Replaced by the real implementation files.
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "s3/credentials.h"
#include "s3/s3_client.h"
#include "s3/s3_file_system.h"
#include "s3/s3_uri.h"
#include "s3/sigv4.h"

namespace steadyeval {
namespace {
absl::Status Pending() { return absl::UnimplementedError("S3 support is not built yet"); }
}  // namespace

bool IsS3Uri(absl::string_view text) { return absl::StartsWith(text, "s3://"); }
absl::StatusOr<S3Uri> ParseS3Uri(absl::string_view) { return Pending(); }
std::string FormatS3Uri(const S3Uri& uri) { return "s3://" + uri.bucket + "/" + uri.key; }
absl::StatusOr<AwsCredentials> LoadAwsCredentials(const GetEnvFn&) { return Pending(); }
absl::StatusOr<AwsCredentials> LoadAwsCredentials() { return Pending(); }
std::string RegionFromEnvironment(const GetEnvFn&) { return ""; }
const char* S3ErrorKindName(S3ErrorKind) { return "other"; }
absl::StatusOr<std::unique_ptr<S3Client>> S3Client::Create(S3ClientOptions) { return Pending(); }
S3Client::~S3Client() = default;
absl::StatusOr<S3Listing> S3Client::List(const std::string&, const std::string&, const std::string&) { return Pending(); }
absl::StatusOr<S3Object> S3Client::Head(const std::string&, const std::string&) { return Pending(); }
absl::StatusOr<std::string> S3Client::GetRange(const std::string&, const std::string&, uint64_t, uint64_t) { return Pending(); }
absl::Status S3Client::GetToFile(const std::string&, const std::string&, const std::string&, int64_t) { return Pending(); }
absl::Status S3Client::Put(const std::string&, const std::string&, const std::string&) { return Pending(); }
absl::Status S3Client::Delete(const std::string&, const std::string&) { return Pending(); }
absl::Status S3Client::CreateBucket(const std::string&) { return Pending(); }
std::string S3Client::DescribeEndpoint() const { return options_.endpoint; }
absl::StatusOr<std::vector<DirEntry>> S3FileSystem::List(const std::string&) { return Pending(); }
absl::StatusOr<FileStat> S3FileSystem::Stat(const std::string&) { return Pending(); }
absl::StatusOr<std::string> S3FileSystem::ReadRange(const std::string&, uint64_t, uint64_t) { return Pending(); }
absl::StatusOr<std::string> S3FileSystem::ReadFile(const std::string&, uint64_t) { return Pending(); }
absl::StatusOr<std::unique_ptr<MappedFile>> S3FileSystem::Map(const std::string&) { return Pending(); }
SigV4Signature SignV4(const SigV4Request&, const AwsCredentials&, const std::string&, const std::string&, const std::string&) { return {}; }
std::string UriEncode(const std::string& text, bool) { return text; }

}  // namespace steadyeval
