#include "s3/s3_uri.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::StatusIs;
using ::testing::HasSubstr;

TEST(S3Uri, ParsesBucketAndKey) {
  ASSERT_OK_AND_ASSIGN(S3Uri uri, ParseS3Uri("s3://ckpt-bucket/run42/step_000100/model.safetensors"));
  EXPECT_EQ(uri.bucket, "ckpt-bucket");
  EXPECT_EQ(uri.key, "run42/step_000100/model.safetensors");
  EXPECT_EQ(FormatS3Uri(uri), "s3://ckpt-bucket/run42/step_000100/model.safetensors");
}

TEST(S3Uri, TrailingSlashNamesTheSameFolder) {
  ASSERT_OK_AND_ASSIGN(S3Uri with_slash, ParseS3Uri("s3://ckpt/run42/"));
  ASSERT_OK_AND_ASSIGN(S3Uri without, ParseS3Uri("s3://ckpt/run42"));
  EXPECT_EQ(with_slash.key, "run42");
  EXPECT_EQ(without.key, "run42");
}

TEST(S3Uri, BucketAlone) {
  for (const char* text : {"s3://ckpt", "s3://ckpt/"}) {
    ASSERT_OK_AND_ASSIGN(S3Uri uri, ParseS3Uri(text));
    EXPECT_EQ(uri.bucket, "ckpt");
    EXPECT_EQ(uri.key, "");
    EXPECT_EQ(FormatS3Uri(uri), "s3://ckpt");
  }
}

TEST(S3Uri, IsUnderS3PrefixComparesWholeKeyComponents) {
  const S3Uri run1{"b", "runs/run1"};
  EXPECT_TRUE(IsUnderS3Prefix(run1, S3Uri{"b", "runs/run1"}));
  EXPECT_TRUE(IsUnderS3Prefix(run1, S3Uri{"b", "runs/run1/step_100"}));
  EXPECT_FALSE(IsUnderS3Prefix(run1, S3Uri{"b", "runs/run10/step_100"}));
  EXPECT_FALSE(IsUnderS3Prefix(run1, S3Uri{"b", "runs"}));
  EXPECT_FALSE(IsUnderS3Prefix(run1, S3Uri{"c", "runs/run1/step_100"}));
  EXPECT_TRUE(IsUnderS3Prefix(S3Uri{"b", ""}, S3Uri{"b", "anything/below"}));
  EXPECT_FALSE(IsUnderS3Prefix(S3Uri{"b", ""}, S3Uri{"bb", "x"}));
}

TEST(S3Uri, IsS3Uri) {
  EXPECT_TRUE(IsS3Uri("s3://b/k"));
  EXPECT_FALSE(IsS3Uri("/ckpt/run"));
  EXPECT_FALSE(IsS3Uri("file:///ckpt"));
  EXPECT_FALSE(IsS3Uri("S3://b"));
}

TEST(S3Uri, RejectsWhatIsNotAnS3UriAndSaysWhy) {
  const std::pair<const char*, const char*> cases[] = {
      {"/local/path", "does not start with s3://"},
      {"s3://", "no bucket"},
      {"s3:///key", "no bucket"},
      {"s3://ab/key", "3 to 63 characters"},
      {"s3://Upper-Case/key", "lowercase"},
      {"s3://under_score/key", "lowercase"},
      {"s3://-dash-first/key", "start and end"},
      {"s3://two..dots/key", "two '.'"},
      {"s3://ckpt/run//step", "empty component"},
      {"s3://ckpt/run/../other", "\"..\" component"},
      {"s3://ckpt/./run", "\".\" component"},
  };
  for (const auto& [text, why] : cases) {
    EXPECT_THAT(ParseS3Uri(text),
                StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr(text), HasSubstr(why))))
        << text;
  }
  EXPECT_OK(ParseS3Uri(std::string("s3://") + std::string(63, 'a')));
  EXPECT_THAT(ParseS3Uri(std::string("s3://") + std::string(64, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("64")));
}

}  // namespace
}  // namespace steadyeval
