// S3Client against a real S3-compatible server (s3rver, testing/s3rver.h) on 127.0.0.1.
#include "s3/s3_client.h"

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/files.h"
#include "testing/s3rver.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::S3rver;
using ::steadyeval::testing::StatusIs;
using ::testing::AllOf;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

// Every attempt the client reports.
class RecordingObserver : public S3Observer {
 public:
  void OnAttempt(const char* op, double /*seconds*/, S3ErrorKind error) override {
    absl::MutexLock lock(&mu_);
    attempts_.emplace_back(op, S3ErrorKindName(error));
  }
  std::vector<std::pair<std::string, std::string>> attempts() const {
    absl::MutexLock lock(&mu_);
    return attempts_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::pair<std::string, std::string>> attempts_ ABSL_GUARDED_BY(mu_);
};

// Real time, but waits return at once and are recorded (the backoff, without sleeping).
class NoWaitClock : public Clock {
 public:
  int64_t MonotonicNanos() const override { return Clock::Real()->MonotonicNanos(); }
  int64_t UnixMillis() const override { return Clock::Real()->UnixMillis(); }
  bool AwaitWithTimeout(absl::Mutex& /*mu*/, const absl::Condition& cond,
                        int64_t timeout_nanos) const override {
    absl::MutexLock lock(&waits_mu_);
    waits_.push_back(timeout_nanos);
    return cond.Eval();
  }
  std::vector<int64_t> waits() const {
    absl::MutexLock lock(&waits_mu_);
    return waits_;
  }

 private:
  mutable absl::Mutex waits_mu_;
  mutable std::vector<int64_t> waits_ ABSL_GUARDED_BY(waits_mu_);
};

std::string Bytes(size_t n) {
  std::string bytes(n, '\0');
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<char>((i * 131 + 7) % 256);
  return bytes;
}

std::unique_ptr<S3Client> MakeClient(S3ClientOptions options) {
  absl::StatusOr<std::unique_ptr<S3Client>> client = S3Client::Create(std::move(options));
  EXPECT_OK(client);
  return client.ok() ? std::move(*client) : nullptr;
}

TEST(S3Client, PutHeadRangeGetToFileDelete) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<S3rver> server, S3rver::Start());
  std::unique_ptr<S3Client> client = server->Client();
  ASSERT_OK(client->CreateBucket("roundtrip"));
  // A key that needs encoding: spaces, '+', '=' and a non-ASCII letter.
  const std::string key = "run 1/step+2/model=\xC3\xA9.safetensors";
  const std::string bytes = Bytes(100'000);
  ASSERT_OK(client->Put("roundtrip", key, bytes));

  ASSERT_OK_AND_ASSIGN(S3Object head, client->Head("roundtrip", key));
  EXPECT_EQ(head.key, key);
  EXPECT_EQ(head.size, bytes.size());
  EXPECT_FALSE(head.etag.empty());
  EXPECT_THAT(head.etag, Not(HasSubstr("\"")));
  EXPECT_GT(head.mtime_nanos, 0);

  EXPECT_THAT(client->GetRange("roundtrip", key, 10, 20),
              ::testing::Eq(absl::StatusOr<std::string>(bytes.substr(10, 20))));
  ASSERT_OK_AND_ASSIGN(std::string tail, client->GetRange("roundtrip", key, bytes.size() - 5, 100));
  EXPECT_EQ(tail, bytes.substr(bytes.size() - 5));
  ASSERT_OK_AND_ASSIGN(std::string at_end, client->GetRange("roundtrip", key, bytes.size(), 10));
  EXPECT_EQ(at_end, "");
  ASSERT_OK_AND_ASSIGN(std::string past_end,
                       client->GetRange("roundtrip", key, bytes.size() + 10, 10));
  EXPECT_EQ(past_end, "");

  steadyeval::testing::TempDir dir;
  ASSERT_OK(client->GetToFile("roundtrip", key, dir / "copy", bytes.size()));
  EXPECT_EQ(steadyeval::testing::ReadFileOrEmpty(dir / "copy"), bytes);
  EXPECT_THAT(client->GetToFile("roundtrip", key, dir / "short", bytes.size() + 1),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("received 100000 bytes, expected 100001"),
                             HasSubstr(dir / "short"))));

  ASSERT_OK_AND_ASSIGN(S3Listing listing, client->List("roundtrip", "run 1/", ""));
  ASSERT_THAT(listing.objects, SizeIs(1));
  EXPECT_EQ(listing.objects[0].key, key);
  EXPECT_EQ(listing.objects[0].size, bytes.size());
  EXPECT_EQ(listing.objects[0].etag, head.etag);
  EXPECT_EQ(listing.objects[0].mtime_nanos, head.mtime_nanos);

  ASSERT_OK(client->Delete("roundtrip", key));
  EXPECT_THAT(client->Head("roundtrip", key),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("HeadObject"), HasSubstr("s3://roundtrip/run 1/step+2/"),
                             HasSubstr("HTTP 404"), HasSubstr(server->endpoint()))));
  EXPECT_THAT(client->GetToFile("roundtrip", key, dir / "gone"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("NoSuchKey")));
}

TEST(S3Client, ListWithDelimiterGivesObjectsAndCommonPrefixes) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<S3rver> server, S3rver::Start());
  std::unique_ptr<S3Client> client = server->Client();
  ASSERT_OK(client->CreateBucket("ckpt"));
  for (const char* key : {"run/step_2/a", "run/step_1/a", "run/step_1/b", "run/notes.txt",
                          "other/x"}) {
    ASSERT_OK(client->Put("ckpt", key, key));
  }
  ASSERT_OK_AND_ASSIGN(S3Listing listing, client->List("ckpt", "run/", "/"));
  EXPECT_THAT(listing.common_prefixes, ElementsAre("run/step_1/", "run/step_2/"));
  ASSERT_THAT(listing.objects, SizeIs(1));
  EXPECT_EQ(listing.objects[0].key, "run/notes.txt");
  EXPECT_EQ(listing.objects[0].size, 13u);

  ASSERT_OK_AND_ASSIGN(S3Listing empty, client->List("ckpt", "nothing/", "/"));
  EXPECT_TRUE(empty.objects.empty());
  EXPECT_TRUE(empty.common_prefixes.empty());
}

TEST(S3Client, ListingOfMoreThan1000KeysFollowsContinuationTokens) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<S3rver> server, S3rver::Start());
  RecordingObserver observer;
  S3ClientOptions options = server->ClientOptions();
  options.observer = &observer;
  std::unique_ptr<S3Client> client = MakeClient(options);
  ASSERT_OK(client->CreateBucket("many"));
  constexpr int kKeys = 1'205;
  // One client, eight threads: it is thread-safe.
  std::atomic<int> next{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = next++; i < kKeys; i = next++) {
        if (!client->Put("many", absl::StrFormat("shards/%05d.bin", i), "x").ok()) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  ASSERT_EQ(failures.load(), 0);

  ASSERT_OK_AND_ASSIGN(S3Listing listing, client->List("many", "shards/", ""));
  ASSERT_THAT(listing.objects, SizeIs(kKeys));
  std::set<std::string> keys;
  for (const S3Object& object : listing.objects) keys.insert(object.key);
  EXPECT_EQ(keys.size(), static_cast<size_t>(kKeys)) << "a key was listed twice";
  EXPECT_EQ(*keys.begin(), "shards/00000.bin");
  EXPECT_EQ(*keys.rbegin(), "shards/01204.bin");
  int list_requests = 0;
  for (const auto& [op, kind] : observer.attempts()) {
    if (op == "list") ++list_requests;
  }
  EXPECT_EQ(list_requests, 2) << "1,205 keys are two pages of at most 1,000";
}

TEST(S3Client, WrongCredentialsArePermissionDeniedNamingBucketAndStatus) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<S3rver> server, S3rver::Start());
  ASSERT_OK(server->Client()->CreateBucket("private"));
  RecordingObserver observer;
  S3ClientOptions options = server->ClientOptions();
  options.credentials.access_key_id = "AKIDWRONGKEY";
  options.credentials.secret_access_key = "wrong-secret/do-not-print";
  options.credentials.origin = "the test";
  options.observer = &observer;
  std::unique_ptr<S3Client> client = MakeClient(options);
  const absl::Status status = client->List("private", "run/", "/").status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kPermissionDenied,
                               AllOf(HasSubstr("s3://private/run/"), HasSubstr("HTTP 403"),
                                     HasSubstr("InvalidAccessKeyId"),
                                     HasSubstr(server->endpoint()),
                                     Not(HasSubstr("wrong-secret")))));
  // Not retried: credentials do not get better by asking again.
  EXPECT_THAT(observer.attempts(),
              ElementsAre(std::pair<std::string, std::string>("list", "access_denied")));
  EXPECT_THAT(client->Put("private", "k", "v"),
              StatusIs(absl::StatusCode::kPermissionDenied, Not(HasSubstr("wrong-secret"))));
}

TEST(S3Client, MissingBucketIsNotFound) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<S3rver> server, S3rver::Start());
  EXPECT_THAT(server->Client()->List("absent-bucket", "", "/"),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("s3://absent-bucket"), HasSubstr("NoSuchBucket"))));
}

TEST(S3Client, EndpointDownIsRetriedThenUnavailableAndRecoversAfterRestart) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<S3rver> server, S3rver::Start());
  RecordingObserver observer;
  NoWaitClock clock;
  S3ClientOptions options = server->ClientOptions();
  options.observer = &observer;
  options.clock = &clock;
  options.max_attempts = 4;
  options.initial_backoff_ms = 100;
  options.max_backoff_ms = 300;
  std::unique_ptr<S3Client> client = MakeClient(options);
  ASSERT_OK(client->CreateBucket("ckpt"));
  ASSERT_OK(client->Put("ckpt", "run/a", "a"));

  server->Stop();
  const absl::Status down = client->List("ckpt", "run/", "/").status();
  EXPECT_THAT(down, StatusIs(absl::StatusCode::kUnavailable,
                             AllOf(HasSubstr("ListObjectsV2 s3://ckpt/run/"),
                                   HasSubstr("curl error"), HasSubstr(server->endpoint()),
                                   HasSubstr("after 4 attempts"))));
  std::vector<std::pair<std::string, std::string>> attempts = observer.attempts();
  ASSERT_THAT(attempts, SizeIs(2 + 4));  // CreateBucket and Put, then the four tries
  for (size_t i = 2; i < attempts.size(); ++i) {
    EXPECT_EQ(attempts[i], (std::pair<std::string, std::string>("list", "network")));
  }
  // Exponential backoff with jitter, capped: 100, 200, 300 ms, each jittered into its upper
  // half.
  const std::vector<int64_t> waits = clock.waits();
  ASSERT_THAT(waits, SizeIs(3));
  const int64_t ms = 1'000'000;
  EXPECT_TRUE(waits[0] >= 50 * ms && waits[0] <= 100 * ms) << waits[0];
  EXPECT_TRUE(waits[1] >= 100 * ms && waits[1] <= 200 * ms) << waits[1];
  EXPECT_TRUE(waits[2] >= 150 * ms && waits[2] <= 300 * ms) << waits[2];

  ASSERT_OK(server->Restart());
  ASSERT_OK_AND_ASSIGN(S3Listing listing, client->List("ckpt", "run/", "/"));
  ASSERT_THAT(listing.objects, SizeIs(1));
  EXPECT_EQ(listing.objects[0].key, "run/a");
}

TEST(S3Client, CreateRejectsAnEndpointThatIsNotAnHttpUrl) {
  for (const char* endpoint : {"127.0.0.1:9000", "ftp://host", "http://", "http://:9000"}) {
    S3ClientOptions options;
    options.endpoint = endpoint;
    EXPECT_THAT(S3Client::Create(options),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(endpoint)))
        << endpoint;
  }
  S3ClientOptions aws;
  aws.region = "eu-west-1";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<S3Client> client, S3Client::Create(aws));
  EXPECT_EQ(client->DescribeEndpoint(), "AWS (eu-west-1)");
  S3ClientOptions custom;
  custom.endpoint = "http://minio.internal:9000/";
  ASSERT_OK_AND_ASSIGN(client, S3Client::Create(custom));
  EXPECT_EQ(client->DescribeEndpoint(), "http://minio.internal:9000");
}

}  // namespace
}  // namespace steadyeval
