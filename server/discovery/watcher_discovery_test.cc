// WatcherDiscoveryFactory (discovery.h) hands its FileSystem to every run's watcher: the
// run's source below exists only in a FakeFileSystem.
#include <string>

#include "common/clock.h"
#include "common/fake_file_system.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/discovery/checkpoint_test_util.h"
#include "server/discovery/discovery.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing_util::kConfigJson;
using ::steadyeval::testing_util::SafetensorsBytes;
using ::testing::IsEmpty;

TEST(WatcherDiscoveryFactoryTest, ReadsTheRunsSourceThroughItsFileSystem) {
  FakeFileSystem fs;
  FakeClock clock;
  const std::string ckpt = "/bucket/run42/step_000500";
  fs.WriteFile(ckpt + "/config.json", kConfigJson);
  fs.WriteFile(ckpt + "/model.safetensors", SafetensorsBytes());
  v1::RunConfig config;
  config.set_source("file:///bucket/run42");
  auto discovery = WatcherDiscoveryFactory(&clock, &fs)(config);
  ASSERT_OK(discovery);
  auto first = (*discovery)->Poll();
  ASSERT_OK(first);
  EXPECT_THAT(*first, IsEmpty());
  ASSERT_EQ((*discovery)->Pending().size(), 1u);
  auto second = (*discovery)->Poll();
  ASSERT_OK(second);
  ASSERT_EQ(second->size(), 1u);
  EXPECT_EQ((*second)[0].step, 500u);
  EXPECT_EQ((*second)[0].path, ckpt);
}

}  // namespace
}  // namespace steadyeval
