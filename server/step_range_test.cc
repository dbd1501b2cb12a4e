// Steps at the top of the uint64 range (issue 16: step 2^64-1 was reported out of order):
// checkpoints list in step order and windows take the right neighbours, including a late
// admission just below the largest step.
#include <cstdint>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/in_process_server.h"

namespace steadyeval {
namespace {

using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;
using ::steadyeval::testing::InProcessServerTest;
using ::steadyeval::testing::McTaskFile;

constexpr uint64_t kMax = 18446744073709551615ull;

class StepRangeTest : public InProcessServerTest {};

TEST_F(StepRangeTest, TheLargestStepsSortAndWindowLikeAnyOther) {
  v1::CreateRunRequest request;
  request.mutable_config()->set_name("r");
  request.mutable_config()->set_source((root_ / "ckpt").string());
  request.mutable_config()->add_average_windows(2);
  *request.add_task_files() = McTaskFile();
  {
    grpc::ClientContext ctx;
    v1::Run run;
    ASSERT_TRUE(eval_->CreateRun(&ctx, request, &run).ok());
  }
  for (uint64_t step : {uint64_t{5}, kMax, uint64_t{3}, kMax - 1}) {
    checkpoints_.Add("r", step);
    ASSERT_OK(server_->coordinator()->PollRunsOnce());
  }
  std::vector<uint64_t> steps;
  {
    grpc::ClientContext ctx;
    v1::ListCheckpointsRequest list;
    list.set_run("r");
    auto reader = eval_->ListCheckpoints(&ctx, list);
    v1::Checkpoint c;
    while (reader->Read(&c)) steps.push_back(c.step());
    ASSERT_TRUE(reader->Finish().ok());
  }
  EXPECT_THAT(steps, ElementsAre(3, 5, kMax - 1, kMax));

  // The live avg@2 windows: each checkpoint with its predecessor; the window (5, max) that
  // the late kMax - 1 split is superseded.
  std::vector<std::vector<uint64_t>> live, superseded;
  {
    grpc::ClientContext ctx;
    v1::ListJobsRequest list;
    list.set_run("r");
    auto reader = eval_->ListJobs(&ctx, list);
    v1::Job job;
    while (reader->Read(&job)) {
      if (job.kind() != "avg@2") continue;
      std::vector<uint64_t> members(job.steps().begin(), job.steps().end());
      (job.state() == v1::JOB_SUPERSEDED ? superseded : live).push_back(members);
    }
  }
  EXPECT_THAT(live, UnorderedElementsAre(std::vector<uint64_t>{3, 5},
                                         std::vector<uint64_t>{5, kMax - 1},
                                         std::vector<uint64_t>{kMax - 1, kMax}));
  EXPECT_THAT(superseded, ElementsAre(std::vector<uint64_t>{5, kMax}));
  grpc::ClientContext ctx;
  v1::GetRunRequest get;
  get.set_name("r");
  v1::GetRunResponse run;
  ASSERT_TRUE(eval_->GetRun(&ctx, get, &run).ok());
  EXPECT_EQ(run.newest_step(), kMax);
}

}  // namespace
}  // namespace steadyeval
