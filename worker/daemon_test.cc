#include "worker/daemon.h"

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval {
namespace {

TEST(PathMapTest, ParsesFromEqualsTo) {
  auto m = ParsePathMapping("/mnt/ckpt=/data/ckpt");
  ASSERT_OK(m);
  EXPECT_EQ(m->from, "/mnt/ckpt");
  EXPECT_EQ(m->to, "/data/ckpt");
  EXPECT_THAT(ParsePathMapping("/mnt/ckpt"), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("FROM=TO")));
  EXPECT_THAT(ParsePathMapping("=/x"), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(PathMapTest, RewritesOnlyAtComponentBoundaries) {
  std::vector<PathMapping> maps = {{"/mnt/ckpt", "/data/ckpt"}, {"/srv/", "/local/"}};
  EXPECT_EQ(MapPath(maps, "/mnt/ckpt/run1/step_000100"), "/data/ckpt/run1/step_000100");
  EXPECT_EQ(MapPath(maps, "/mnt/ckpt"), "/data/ckpt");
  EXPECT_EQ(MapPath(maps, "/mnt/ckpt2/run1"), "/mnt/ckpt2/run1");
  EXPECT_EQ(MapPath(maps, "/srv/a"), "/local/a");
  EXPECT_EQ(MapPath(maps, "/other/a"), "/other/a");
}

}  // namespace
}  // namespace steadyeval
