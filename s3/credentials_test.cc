#include "s3/credentials.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kSecret[] = "SECRETvalue/do-not-print+1";
constexpr char kFileSecret[] = "FILEsecret/do-not-print+2";
constexpr char kOtherSecret[] = "OTHERsecret/do-not-print+3";

// A fake environment.
class Env {
 public:
  explicit Env(std::map<std::string, std::string> vars) : vars_(std::move(vars)) {}
  GetEnvFn fn() const {
    return [this](const char* name) -> const char* {
      auto it = vars_.find(name);
      return it == vars_.end() ? nullptr : it->second.c_str();
    };
  }

 private:
  std::map<std::string, std::string> vars_;
};

std::string CredentialsFile(const steadyeval::testing::TempDir& dir) {
  return dir.Write("credentials",
                   "# comment\n"
                   "[default]\n"
                   "aws_access_key_id = AKIDFILE\n"
                   "aws_secret_access_key = " + std::string(kFileSecret) + "\n"
                   "\n"
                   "[training]\n"
                   "aws_access_key_id=AKIDTRAIN\n"
                   "aws_secret_access_key=" + std::string(kOtherSecret) + "\n"
                   "aws_session_token = TOKEN3\n"
                   "s3 =\n"
                   "    max_concurrent_requests = 4\n");
}

TEST(Credentials, EnvironmentComesFirst) {
  steadyeval::testing::TempDir dir;
  Env env({{"AWS_ACCESS_KEY_ID", "AKIDENV"},
           {"AWS_SECRET_ACCESS_KEY", kSecret},
           {"AWS_SESSION_TOKEN", "TOKEN1"},
           {"AWS_SHARED_CREDENTIALS_FILE", CredentialsFile(dir)}});
  ASSERT_OK_AND_ASSIGN(AwsCredentials credentials, LoadAwsCredentials(env.fn()));
  EXPECT_EQ(credentials.access_key_id, "AKIDENV");
  EXPECT_EQ(credentials.secret_access_key, kSecret);
  EXPECT_EQ(credentials.session_token, "TOKEN1");
  EXPECT_EQ(credentials.origin, "environment");
}

TEST(Credentials, DefaultProfileOfTheSharedFile) {
  steadyeval::testing::TempDir dir;
  const std::string file = CredentialsFile(dir);
  Env env({{"AWS_SHARED_CREDENTIALS_FILE", file}, {"HOME", dir / "nowhere"}});
  ASSERT_OK_AND_ASSIGN(AwsCredentials credentials, LoadAwsCredentials(env.fn()));
  EXPECT_EQ(credentials.access_key_id, "AKIDFILE");
  EXPECT_EQ(credentials.secret_access_key, kFileSecret);
  EXPECT_EQ(credentials.session_token, "");
  EXPECT_EQ(credentials.origin, file + " [default]");
}

TEST(Credentials, ProfileChosenByAwsProfile) {
  steadyeval::testing::TempDir dir;
  Env env({{"AWS_SHARED_CREDENTIALS_FILE", CredentialsFile(dir)}, {"AWS_PROFILE", "training"}});
  ASSERT_OK_AND_ASSIGN(AwsCredentials credentials, LoadAwsCredentials(env.fn()));
  EXPECT_EQ(credentials.access_key_id, "AKIDTRAIN");
  EXPECT_EQ(credentials.secret_access_key, kOtherSecret);
  EXPECT_EQ(credentials.session_token, "TOKEN3");
}

TEST(Credentials, HomeFileWhenNoSharedFileIsNamed) {
  steadyeval::testing::TempDir dir;
  dir.Write("home/.aws/credentials",
            "[default]\naws_access_key_id = AKIDHOME\naws_secret_access_key = " +
                std::string(kSecret) + "\n");
  Env env(std::map<std::string, std::string>{{"HOME", dir / "home"}});
  ASSERT_OK_AND_ASSIGN(AwsCredentials credentials, LoadAwsCredentials(env.fn()));
  EXPECT_EQ(credentials.access_key_id, "AKIDHOME");
  EXPECT_EQ(credentials.origin, dir / "home/.aws/credentials [default]");
}

TEST(Credentials, MissingNamesTheVariablesAndFiles) {
  steadyeval::testing::TempDir dir;
  Env env(std::map<std::string, std::string>{{"HOME", dir.path()}});
  EXPECT_THAT(LoadAwsCredentials(env.fn()),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("AWS_ACCESS_KEY_ID"), HasSubstr("AWS_SECRET_ACCESS_KEY"),
                             HasSubstr("AWS_SHARED_CREDENTIALS_FILE"),
                             HasSubstr(dir / ".aws/credentials"), HasSubstr("AWS_PROFILE"))));
  Env named(std::map<std::string, std::string>{{"AWS_SHARED_CREDENTIALS_FILE", dir / "absent"}});
  EXPECT_THAT(LoadAwsCredentials(named.fn()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir / "absent")));
}

TEST(Credentials, UnknownProfileIsNotFound) {
  steadyeval::testing::TempDir dir;
  Env env({{"AWS_SHARED_CREDENTIALS_FILE", CredentialsFile(dir)}, {"AWS_PROFILE", "eval"}});
  EXPECT_THAT(LoadAwsCredentials(env.fn()),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("[eval]"), HasSubstr("AWS_PROFILE"),
                             Not(HasSubstr(kFileSecret)), Not(HasSubstr(kOtherSecret)))));
}

TEST(Credentials, HalfSetEnvironmentIsAnError) {
  Env env(std::map<std::string, std::string>{{"AWS_ACCESS_KEY_ID", "AKIDENV"}});
  EXPECT_THAT(LoadAwsCredentials(env.fn()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("AWS_SECRET_ACCESS_KEY")));
  Env other(std::map<std::string, std::string>{{"AWS_SECRET_ACCESS_KEY", kSecret}});
  EXPECT_THAT(LoadAwsCredentials(other.fn()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("AWS_ACCESS_KEY_ID"), Not(HasSubstr(kSecret)))));
}

TEST(Credentials, MalformedFileNamesTheLineNeverItsContent) {
  steadyeval::testing::TempDir dir;
  const std::string file = dir.Write(
      "credentials", "[default]\naws_access_key_id = AKID\n" + std::string(kSecret) + "\n");
  Env env(std::map<std::string, std::string>{{"AWS_SHARED_CREDENTIALS_FILE", file}});
  EXPECT_THAT(LoadAwsCredentials(env.fn()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(file + ":3"), Not(HasSubstr(kSecret)))));
}

TEST(Credentials, ProfileWithoutSecretIsAnError) {
  steadyeval::testing::TempDir dir;
  const std::string file =
      dir.Write("credentials", "[default]\naws_access_key_id = AKID\n");
  Env env(std::map<std::string, std::string>{{"AWS_SHARED_CREDENTIALS_FILE", file}});
  EXPECT_THAT(LoadAwsCredentials(env.fn()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("aws_secret_access_key")));
}

TEST(Credentials, Region) {
  EXPECT_EQ(RegionFromEnvironment(Env({{"AWS_REGION", "eu-west-1"},
                                       {"AWS_DEFAULT_REGION", "us-west-2"}}).fn()),
            "eu-west-1");
  EXPECT_EQ(RegionFromEnvironment(
                Env(std::map<std::string, std::string>{{"AWS_DEFAULT_REGION", "us-west-2"}}).fn()),
            "us-west-2");
  EXPECT_EQ(RegionFromEnvironment(Env(std::map<std::string, std::string>{}).fn()), "");
}

}  // namespace
}  // namespace steadyeval
