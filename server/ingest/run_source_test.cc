// CheckRunSource, ParseSourceRoots' s3 entries and --s3_endpoints (run_inputs.h): where a
// run's source may be, which endpoints it may name, and what is stored.
#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/ingest/run_config.h"
#include "server/ingest/run_inputs.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"

namespace steadyeval {
namespace {

namespace fs = std::filesystem;
using ::steadyeval::testing::StatusIs;
using ::steadyeval::testing::TempDir;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::RunConfig S3Run(const std::string& source, const std::string& endpoint = "",
                    const std::string& region = "") {
  v1::RunConfig config;
  config.set_name("r");
  config.set_source(source);
  config.set_s3_endpoint(endpoint);
  config.set_s3_region(region);
  return config;
}

TEST(S3EndpointTest, NormalisedToSchemeHostAndPort) {
  EXPECT_EQ(*NormalizeS3Endpoint("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
  EXPECT_EQ(*NormalizeS3Endpoint("HTTP://MinIO.Internal:9000/"), "http://minio.internal:9000");
  EXPECT_EQ(*NormalizeS3Endpoint("https://storage.googleapis.com:443"),
            "https://storage.googleapis.com");
  EXPECT_EQ(*NormalizeS3Endpoint("http://h:80"), "http://h");
  EXPECT_EQ(*NormalizeS3Endpoint("http://[::1]:9000"), "http://[::1]:9000");
  for (const char* bad : {"ftp://h", "h:9000", "http://", "http://h:0", "http://h:99999",
                          "http://h:x", "http://h/bucket", "http://u:p@h", "http://h?x=1"}) {
    EXPECT_THAT(NormalizeS3Endpoint(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("S3 endpoint")))
        << bad;
  }
  auto list = ParseS3Endpoints("http://a:9000, http://A:9000/,https://b");
  ASSERT_OK(list);
  EXPECT_THAT(*list, ElementsAre("http://a:9000", "https://b"));
  EXPECT_THAT(ParseS3Endpoints("http://a/x").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--s3_endpoints")));
  EXPECT_EQ(DefaultS3Region(""), "us-east-1");
  EXPECT_EQ(DefaultS3Region("eu-west-1"), "eu-west-1");
}

TEST(RunSourceTest, AnS3RunIsNormalisedAndGetsTheDefaultRegion) {
  SourceRules rules;
  rules.default_s3_region = "eu-central-1";
  v1::RunConfig config = S3Run("s3://ckpt/run42/");
  ASSERT_OK(CheckRunSource(config, rules));  // no objects needed: nothing is listed
  EXPECT_EQ(config.source(), "s3://ckpt/run42");
  EXPECT_EQ(config.s3_endpoint(), "");  // AWS, always allowed
  EXPECT_EQ(config.s3_region(), "eu-central-1");

  v1::RunConfig own = S3Run("s3://ckpt/run42", "", "ap-northeast-1");
  ASSERT_OK(CheckRunSource(own, rules));
  EXPECT_EQ(own.s3_region(), "ap-northeast-1");
  v1::RunConfig bad_region = S3Run("s3://ckpt/run42", "", "US East");
  EXPECT_THAT(CheckRunSource(bad_region, rules),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("s3_region")));
  v1::RunConfig bad_uri = S3Run("s3://ckpt/a/../b");
  EXPECT_THAT(CheckRunSource(bad_uri, rules),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("source")));
}

TEST(RunSourceTest, CustomEndpointsMustBeAllowed) {
  SourceRules rules;
  v1::RunConfig refused = S3Run("s3://ckpt/run", "http://127.0.0.1:9000");
  EXPECT_THAT(CheckRunSource(refused, rules),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       AllOf(HasSubstr("http://127.0.0.1:9000"), HasSubstr("--s3_endpoints"))));
  rules.s3_endpoints = {"http://127.0.0.1:9000"};
  v1::RunConfig allowed = S3Run("s3://ckpt/run", "HTTP://127.0.0.1:9000/");
  ASSERT_OK(CheckRunSource(allowed, rules));
  EXPECT_EQ(allowed.s3_endpoint(), "http://127.0.0.1:9000");
  EXPECT_EQ(allowed.s3_region(), "us-east-1");
  v1::RunConfig other = S3Run("s3://ckpt/run", "http://127.0.0.1:9001");
  EXPECT_THAT(CheckRunSource(other, rules),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       AllOf(HasSubstr("http://127.0.0.1:9001"), HasSubstr("--s3_endpoints"))));
  v1::RunConfig malformed = S3Run("s3://ckpt/run", "minio:9000");
  EXPECT_THAT(CheckRunSource(malformed, rules),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("s3_endpoint")));
}

TEST(RunSourceTest, S3SettingsApplyOnlyToS3Sources) {
  TempDir dir;
  for (const auto& [endpoint, region] :
       {std::pair<std::string, std::string>{"http://127.0.0.1:9000", ""}, {"", "us-east-1"}}) {
    v1::RunConfig config = S3Run(dir.path(), endpoint, region);
    EXPECT_THAT(CheckRunSource(config, {}),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         AllOf(HasSubstr("only to s3://"), HasSubstr(dir.path()))));
  }
  v1::RunConfig local = S3Run(dir.path());
  ASSERT_OK(CheckRunSource(local, {}));
  EXPECT_EQ(local.s3_region(), "");  // folders get no region
}

TEST(RunSourceTest, SourceRootsConfineBucketsByKeyComponents) {
  TempDir dir;
  fs::create_directories(dir.path() + "/data/run1");
  auto roots = ParseSourceRoots(dir.path() + "/data,s3://ckpt/team-a/,s3://whole");
  ASSERT_OK(roots);
  EXPECT_THAT(*roots, ElementsAre(fs::canonical(dir.path() + "/data").string(), "s3://ckpt/team-a",
                                  "s3://whole"));
  SourceRules rules;
  rules.roots = *roots;
  for (const char* inside : {"s3://ckpt/team-a", "s3://ckpt/team-a/run1", "s3://whole/x/y",
                             "s3://whole"}) {
    v1::RunConfig config = S3Run(inside);
    EXPECT_OK(CheckRunSource(config, rules)) << inside;
  }
  for (const char* outside : {"s3://ckpt/team-ab", "s3://ckpt", "s3://ckpt/team-b/run1",
                              "s3://wholesale/x", "s3://other/team-a"}) {
    v1::RunConfig config = S3Run(outside);
    EXPECT_THAT(CheckRunSource(config, rules),
                StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("--source_roots")))
        << outside;
  }
  // Local sources still go by the local roots only.
  v1::RunConfig local = S3Run(dir.path() + "/data/run1");
  EXPECT_OK(CheckRunSource(local, rules));
  SourceRules only_buckets;
  only_buckets.roots = {"s3://ckpt/team-a"};
  v1::RunConfig folder = S3Run(dir.path() + "/data/run1");
  EXPECT_THAT(CheckRunSource(folder, only_buckets),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("--source_roots")));
  EXPECT_THAT(ParseSourceRoots("s3://x").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--source_roots")));
}

TEST(RunSourceTest, ConverterNamesAreChecked) {
  v1::RunConfig config = S3Run("s3://ckpt/run");
  config.set_convert("dcp-to-hf_v1.2");
  ASSERT_OK(CheckRunSource(config, {}));
  config.set_convert("rm -rf /");
  EXPECT_THAT(CheckRunSource(config, {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("converter name")));
}

}  // namespace
}  // namespace steadyeval
