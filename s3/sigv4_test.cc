// AWS Signature V4 against the vectors AWS publishes: the S3 examples of "Signature
// Calculations for the Authorization Header" (examplebucket, 2013-05-24) and cases of the
// Signature Version 4 test suite (aws-sig-v4-test-suite, 2015-08-30).
#include "s3/sigv4.h"

#include <string>

#include "common/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kEmptySha256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// --- The S3 examples ------------------------------------------------------------------

AwsCredentials S3ExampleCredentials() {
  AwsCredentials credentials;
  credentials.access_key_id = "AKIAIOSFODNN7EXAMPLE";
  credentials.secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
  return credentials;
}

constexpr char kS3Date[] = "20130524T000000Z";
constexpr char kS3Host[] = "examplebucket.s3.amazonaws.com";

SigV4Request S3ExampleGet(const std::string& path,
                          std::vector<std::pair<std::string, std::string>> query) {
  SigV4Request request;
  request.method = "GET";
  request.path = path;
  request.query = std::move(query);
  request.headers = {{"Host", kS3Host},
                     {"x-amz-date", kS3Date},
                     {"x-amz-content-sha256", kEmptySha256}};
  request.payload_sha256 = kEmptySha256;
  return request;
}

TEST(SigV4S3Examples, GetObjectWithRange) {
  SigV4Request request = S3ExampleGet("/test.txt", {});
  request.headers.emplace_back("Range", "bytes=0-9");
  const SigV4Signature signature =
      SignV4(request, S3ExampleCredentials(), "us-east-1", "s3", kS3Date);
  EXPECT_EQ(signature.canonical_request,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
            "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
            "x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(signature.string_to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  EXPECT_EQ(signature.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(SigV4S3Examples, PutObjectWithEncodedKey) {
  const std::string payload = "Welcome to Amazon S3.";
  ASSERT_EQ(Sha256Hex(payload), "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  ASSERT_EQ(UriEncode("/test$file.text", /*keep_slash=*/true), "/test%24file.text");
  SigV4Request request;
  request.method = "PUT";
  request.path = "/test%24file.text";
  request.headers = {{"Host", kS3Host},
                     {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                     {"x-amz-date", kS3Date},
                     {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
                     {"x-amz-content-sha256", Sha256Hex(payload)}};
  request.payload_sha256 = Sha256Hex(payload);
  EXPECT_THAT(SignV4(request, S3ExampleCredentials(), "us-east-1", "s3", kS3Date).authorization,
              EndsWith("SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;"
                       "x-amz-storage-class, "
                       "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"));
}

TEST(SigV4S3Examples, GetBucketLifecycleHasAQueryKeyWithoutValue) {
  const SigV4Signature signature =
      SignV4(S3ExampleGet("/", {{"lifecycle", ""}}), S3ExampleCredentials(), "us-east-1", "s3",
             kS3Date);
  EXPECT_THAT(signature.canonical_request, HasSubstr("\n/\nlifecycle=\n"));
  EXPECT_THAT(signature.authorization,
              EndsWith("Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"));
}

TEST(SigV4S3Examples, ListObjectsSortsTheQuery) {
  // Given out of order: the signer sorts by name.
  const SigV4Signature signature =
      SignV4(S3ExampleGet("/", {{"prefix", "J"}, {"max-keys", "2"}}), S3ExampleCredentials(),
             "us-east-1", "s3", kS3Date);
  EXPECT_THAT(signature.canonical_request, HasSubstr("\n/\nmax-keys=2&prefix=J\n"));
  EXPECT_THAT(signature.authorization,
              EndsWith("Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"));
}

// --- The SigV4 test suite ---------------------------------------------------------------

constexpr char kSuiteDate[] = "20150830T123600Z";

AwsCredentials SuiteCredentials() {
  AwsCredentials credentials;
  credentials.access_key_id = "AKIDEXAMPLE";
  credentials.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
  return credentials;
}

struct SuiteCase {
  const char* name;
  const char* method;
  std::string path;
  std::vector<std::pair<std::string, std::string>> query;
  std::vector<std::pair<std::string, std::string>> extra_headers;
  std::string body;
  const char* signed_headers;
  const char* signature;
};

std::string SuiteAuthorization(const SuiteCase& c) {
  SigV4Request request;
  request.method = c.method;
  request.path = c.path;
  request.query = c.query;
  request.headers = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", kSuiteDate}};
  for (const auto& header : c.extra_headers) request.headers.push_back(header);
  request.payload_sha256 = Sha256Hex(c.body);
  return SignV4(request, SuiteCredentials(), "us-east-1", "service", kSuiteDate).authorization;
}

TEST(SigV4TestSuite, PublishedSignatures) {
  const std::string unreserved =
      "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  const std::string session_token =
      "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXm"
      "xfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy"
      "0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64"
      "lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
  const std::vector<SuiteCase> cases = {
      {"get-vanilla", "GET", "/", {}, {}, "", "host;x-amz-date",
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"get-vanilla-query-order-key-case", "GET", "/", {{"Param2", "value2"}, {"Param1", "value1"}},
       {}, "", "host;x-amz-date",
       "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
      {"get-vanilla-empty-query-key", "GET", "/", {{"Param1", "value1"}}, {}, "", "host;x-amz-date",
       "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"},
      {"get-vanilla-query-unreserved", "GET", "/", {{unreserved, unreserved}}, {}, "",
       "host;x-amz-date", "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"},
      {"get-vanilla-utf8-query", "GET", "/", {{"\xE1\x88\xB4", "bar"}}, {}, "", "host;x-amz-date",
       "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"},
      {"get-unreserved", "GET", UriEncode("/" + unreserved, true), {}, {}, "", "host;x-amz-date",
       "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"},
      {"get-utf8", "GET", UriEncode("/\xE1\x88\xB4", true), {}, {}, "", "host;x-amz-date",
       "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"},
      {"get-header-key-duplicate", "GET", "/", {},
       {{"My-Header1", "value2"}, {"My-Header1", "value2"}, {"My-Header1", "value1"}}, "",
       "host;my-header1;x-amz-date",
       "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"},
      {"get-header-value-trim", "GET", "/", {},
       {{"My-Header1", " value1"}, {"My-Header2", "\"a   b   c\""}}, "",
       "host;my-header1;my-header2;x-amz-date",
       "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"},
      {"post-vanilla", "POST", "/", {}, {}, "", "host;x-amz-date",
       "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
      {"post-header-key-sort", "POST", "/", {}, {{"My-Header1", "value1"}}, "",
       "host;my-header1;x-amz-date",
       "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"},
      {"post-sts-header-before", "POST", "/", {}, {{"X-Amz-Security-Token", session_token}}, "",
       "host;x-amz-date;x-amz-security-token",
       "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"},
      {"post-x-www-form-urlencoded", "POST", "/", {},
       {{"Content-Type", "application/x-www-form-urlencoded"}}, "Param1=value1",
       "content-type;host;x-amz-date",
       "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"},
  };
  for (const SuiteCase& c : cases) {
    EXPECT_EQ(SuiteAuthorization(c),
              std::string("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
                          "aws4_request, SignedHeaders=") +
                  c.signed_headers + ", Signature=" + c.signature)
        << c.name;
  }
}

TEST(SigV4TestSuite, CanonicalRequestAndStringToSign) {
  SigV4Request request;
  request.method = "GET";
  request.path = "/";
  request.query = {{"Param2", "value2"}, {"Param1", "value1"}};
  request.headers = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", kSuiteDate}};
  request.payload_sha256 = kEmptySha256;
  const SigV4Signature signature =
      SignV4(request, SuiteCredentials(), "us-east-1", "service", kSuiteDate);
  EXPECT_EQ(signature.canonical_request,
            "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\n"
            "x-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(signature.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
            "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0");
}

// --- What S3 listings need beyond the vectors --------------------------------------------

TEST(SigV4, ContinuationTokenIsEncodedAndSortedAfterEncoding) {
  // Tokens are base64: '+', '/' and '=' must be percent-encoded in the canonical query, and
  // parameters sorted by their encoded names ("continuation-token" < "list-type" < "prefix").
  SigV4Request request = S3ExampleGet("/ckpt", {{"list-type", "2"},
                                                {"prefix", "run 1/step_0001/"},
                                                {"continuation-token", "a+b/c=="}});
  const SigV4Signature signature =
      SignV4(request, S3ExampleCredentials(), "us-east-1", "s3", kS3Date);
  EXPECT_THAT(signature.canonical_request,
              HasSubstr("\ncontinuation-token=a%2Bb%2Fc%3D%3D&list-type=2&"
                        "prefix=run%201%2Fstep_0001%2F\n"));
}

TEST(SigV4, UriEncode) {
  EXPECT_EQ(UriEncode("a b+c/d~e_f.g-h", false), "a%20b%2Bc%2Fd~e_f.g-h");
  EXPECT_EQ(UriEncode("run42/step 1/model.safetensors", true),
            "run42/step%201/model.safetensors");
  EXPECT_EQ(UriEncode("\xC3\xA9", false), "%C3%A9");
}

TEST(SigV4, TheSecretIsNeverInTheOutput) {
  const SigV4Signature signature =
      SignV4(S3ExampleGet("/test.txt", {}), S3ExampleCredentials(), "us-east-1", "s3", kS3Date);
  for (const std::string* text :
       {&signature.canonical_request, &signature.string_to_sign, &signature.authorization}) {
    EXPECT_THAT(*text, Not(HasSubstr("wJalrXUtnFEMI")));
  }
}

}  // namespace
}  // namespace steadyeval
