// RunSourceFactory (source_factory.h) and the discovery factory over it: folders on the
// local file system, s3:// prefixes on one file system per (endpoint, region) made with
// the coordinator's credentials, and the run's converter passed on.
#include "server/discovery/source_factory.h"

#include <map>
#include <string>
#include <vector>

#include "common/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/discovery/discovery.h"
#include "testing/checkpoint_files.h"
#include "testing/fake_bucket_file_system.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::FakeBucketFileSystem;
using ::steadyeval::testing::SafetensorsBytes;
using ::steadyeval::testing::StatusIs;
using ::steadyeval::testing::TempDir;
using ::steadyeval::testing::kConfigJson;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// An environment with (or without) credentials.
GetEnvFn Env(std::map<std::string, std::string> vars) {
  auto held = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [held](const char* name) -> const char* {
    auto it = held->find(name);
    return it == held->end() ? nullptr : it->second.c_str();
  };
}

const std::map<std::string, std::string> kCredentials = {{"AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"},
                                                         {"AWS_SECRET_ACCESS_KEY", "sekrit"}};

// Records the client options each file system was made with, and serves `bucket`.
struct MadeFileSystems {
  std::shared_ptr<FakeBucketFileSystem> bucket = std::make_shared<FakeBucketFileSystem>();
  std::vector<S3ClientOptions> made;

  RunSourceOptions Options(GetEnvFn env, S3Observer* observer = nullptr) {
    RunSourceOptions options;
    options.getenv = std::move(env);
    options.s3_observer = observer;
    options.make_s3_file_system =
        [this](const S3ClientOptions& client) -> absl::StatusOr<std::shared_ptr<FileSystem>> {
      made.push_back(client);
      return std::shared_ptr<FileSystem>(bucket);
    };
    return options;
  }
};

v1::RunConfig RunOn(const std::string& source, const std::string& endpoint = "",
                  const std::string& region = "") {
  v1::RunConfig config;
  config.set_name("r");
  config.set_source(source);
  config.set_s3_endpoint(endpoint);
  config.set_s3_region(region);
  return config;
}

class CountingObserver : public S3Observer, public SourceListObserver {
 public:
  void OnAttempt(const char*, double, S3ErrorKind) override {}
  void OnSourceList(const char* scheme, double, bool ok) override {
    lists.push_back(std::string(scheme) + (ok ? ":ok" : ":error"));
  }
  std::vector<std::string> lists;
};

TEST(RunSourceFactoryTest, FoldersAreReadLocallyWithoutCredentials) {
  TempDir dir;
  MadeFileSystems made;
  RunSourceFactory factory(made.Options(Env({})));
  auto source = factory.Make(RunOn(dir.path()));
  ASSERT_OK(source);
  EXPECT_EQ((*source)->Describe(), dir.path());
  EXPECT_THAT((*source)->List(), ::steadyeval::testing::IsOk());
  EXPECT_TRUE(made.made.empty());
  EXPECT_EQ(SourceScheme(dir.path()), std::string("file"));
  EXPECT_EQ(SourceScheme("file:///x"), std::string("file"));
  EXPECT_EQ(SourceScheme("s3://b/x"), std::string("s3"));
}

TEST(RunSourceFactoryTest, OneFileSystemPerEndpointAndRegionWithTheCoordinatorsCredentials) {
  MadeFileSystems made;
  CountingObserver observer;
  RunSourceFactory factory(made.Options(Env(kCredentials), &observer));
  made.bucket->WriteFile("s3://ckpt/run1/notes.txt", "x");
  auto a = factory.Make(RunOn("s3://ckpt/run1", "http://127.0.0.1:9000", "us-east-1"));
  ASSERT_OK(a);
  auto b = factory.Make(RunOn("s3://ckpt/run2", "http://127.0.0.1:9000", "us-east-1"));
  ASSERT_OK(b);
  auto c = factory.Make(RunOn("s3://ckpt/run3", "", "eu-west-1"));
  ASSERT_OK(c);
  ASSERT_EQ(made.made.size(), 2u);
  EXPECT_EQ(factory.s3_file_systems(), 2u);
  EXPECT_EQ(made.made[0].endpoint, "http://127.0.0.1:9000");
  EXPECT_EQ(made.made[0].region, "us-east-1");
  EXPECT_EQ(made.made[0].credentials.access_key_id, "AKIDEXAMPLE");
  EXPECT_EQ(made.made[0].observer, &observer);
  EXPECT_EQ(made.made[1].endpoint, "");
  EXPECT_EQ(made.made[1].region, "eu-west-1");
  // Paths stay URIs.
  auto listed = (*a)->List();
  ASSERT_OK(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].path, "s3://ckpt/run1/notes.txt");
  // A run without a region (not stored by an old coordinator) gets the default.
  ASSERT_OK(factory.Make(RunOn("s3://ckpt/run4", "http://127.0.0.1:9000")));
  EXPECT_EQ(made.made.size(), 2u);
}

TEST(RunSourceFactoryTest, NoCredentialsRefusesS3RunsNamingWhatToSet) {
  MadeFileSystems made;
  RunSourceFactory factory(made.Options(Env({})));
  EXPECT_THAT(factory.Make(RunOn("s3://ckpt/run1", "", "us-east-1")),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("AWS_ACCESS_KEY_ID"), HasSubstr("AWS_SECRET_ACCESS_KEY"),
                             HasSubstr("AWS_SHARED_CREDENTIALS_FILE"),
                             HasSubstr("steadyeval-server's environment"))));
  EXPECT_TRUE(made.made.empty());
  EXPECT_EQ(factory.s3_file_systems(), 0u);
}

TEST(RunSourceFactoryTest, AFailedClientIsNotCached) {
  MadeFileSystems made;
  RunSourceOptions options = made.Options(Env(kCredentials));
  int calls = 0;
  options.make_s3_file_system =
      [&](const S3ClientOptions&) -> absl::StatusOr<std::shared_ptr<FileSystem>> {
    if (++calls == 1) return absl::InvalidArgumentError("bad endpoint");
    return std::shared_ptr<FileSystem>(made.bucket);
  };
  RunSourceFactory factory(options);
  EXPECT_THAT(factory.Make(RunOn("s3://ckpt/run1", "http://h:1", "us-east-1")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("http://h:1"), HasSubstr("bad endpoint"))));
  ASSERT_OK(factory.Make(RunOn("s3://ckpt/run1", "http://h:1", "us-east-1")));
  EXPECT_EQ(calls, 2);
}

TEST(RunSourceFactoryTest, TheDiscoveryFactoryWatchesABucketAndReportsListings) {
  MadeFileSystems made;
  CountingObserver observer;
  auto sources = std::make_shared<RunSourceFactory>(made.Options(Env(kCredentials), &observer));
  FakeClock clock;
  DiscoveryFactory factory = WatcherDiscoveryFactory(&clock, sources, &observer);
  const std::string ckpt = "s3://ckpt/run42/step_000500";
  made.bucket->WriteFile(ckpt + "/config.json", kConfigJson);
  made.bucket->WriteFile(ckpt + "/model.safetensors", SafetensorsBytes());
  auto discovery = factory(RunOn("s3://ckpt/run42", "", "us-east-1"));
  ASSERT_OK(discovery);
  auto first = (*discovery)->Poll();
  ASSERT_OK(first);
  EXPECT_THAT(*first, IsEmpty());
  auto second = (*discovery)->Poll();
  ASSERT_OK(second);
  ASSERT_EQ(second->size(), 1u);
  EXPECT_EQ((*second)[0].step, 500u);
  EXPECT_EQ((*second)[0].path, ckpt);
  EXPECT_THAT(observer.lists, ElementsAre("s3:ok", "s3:ok"));

  // A prefix that lists nothing yet (or fails) is reported too, by scheme.
  made.bucket->files().InjectError(testing::FakeFileSystem::Op::kList, "/ckpt/down",
                                   absl::UnavailableError("S3 ListObjectsV2 s3://ckpt/down/: "
                                                          "HTTP 503"));
  auto down = factory(RunOn("s3://ckpt/down", "", "us-east-1"));
  ASSERT_OK(down);
  EXPECT_THAT((*down)->Poll(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("HTTP 503")));
  EXPECT_EQ(observer.lists.back(), "s3:error");

  // Without credentials the discovery (and so the run) cannot be made.
  auto no_credentials = std::make_shared<RunSourceFactory>(made.Options(Env({})));
  EXPECT_THAT(WatcherDiscoveryFactory(&clock, no_credentials, nullptr)(RunOn("s3://ckpt/x")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("AWS_ACCESS_KEY_ID")));
}

}  // namespace
}  // namespace steadyeval
