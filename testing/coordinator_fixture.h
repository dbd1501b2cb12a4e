// A Coordinator under test: scripted checkpoint discovery (FakeCheckpoints), small task
// files, and a fixture that runs a coordinator over a fresh store with a FakeClock.
#ifndef STEADYEVAL_TESTING_COORDINATOR_FIXTURE_H_
#define STEADYEVAL_TESTING_COORDINATOR_FIXTURE_H_

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "gtest/gtest.h"
#include "server/coordinator.h"
#include "server/discovery/discovery.h"
#include "server/store/store.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"

namespace steadyeval::testing {

// Checkpoints to "discover", per run: tests Add() them, the next poll returns them.
// SetSeen() sets the folders a run's discovery reports as seen but not admitted.
class FakeCheckpoints {
 public:
  void Add(const std::string& run, uint64_t step) {
    absl::MutexLock lock(&mu_);
    pending_[run].push_back({step, "/ckpt/" + run + "/step_" + std::to_string(step)});
  }
  void SetSeen(const std::string& run, std::vector<PendingDiscovery> seen) {
    absl::MutexLock lock(&mu_);
    seen_[run] = std::move(seen);
  }
  std::set<uint64_t> known(const std::string& run) {
    absl::MutexLock lock(&mu_);
    return known_[run];
  }
  DiscoveryFactory Factory() {
    return [this](const v1::RunConfig& config)
               -> absl::StatusOr<std::unique_ptr<CheckpointDiscovery>> {
      return std::unique_ptr<CheckpointDiscovery>(new Discovery(this, config.name()));
    };
  }

 private:
  class Discovery : public CheckpointDiscovery {
   public:
    Discovery(FakeCheckpoints* owner, std::string run) : owner_(owner), run_(std::move(run)) {}
    absl::StatusOr<std::vector<DiscoveredCheckpoint>> Poll() override {
      absl::MutexLock lock(&owner_->mu_);
      std::vector<DiscoveredCheckpoint> out;
      out.swap(owner_->pending_[run_]);
      return out;
    }
    void MarkKnown(uint64_t step) override {
      absl::MutexLock lock(&owner_->mu_);
      owner_->known_[run_].insert(step);
    }
    std::vector<PendingDiscovery> Pending() const override {
      absl::MutexLock lock(&owner_->mu_);
      return owner_->seen_[run_];
    }

   private:
    FakeCheckpoints* owner_;
    std::string run_;
  };

  absl::Mutex mu_;
  std::map<std::string, std::vector<DiscoveredCheckpoint>> pending_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::set<uint64_t>> known_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<PendingDiscovery>> seen_ ABSL_GUARDED_BY(mu_);
};

// A folder seen at `first_seen_nanos` and not admitted, for FakeCheckpoints::SetSeen.
inline PendingDiscovery Seen(uint64_t step, int64_t first_seen_nanos,
                             const std::string& reason = "incomplete") {
  PendingDiscovery p;
  p.step = step;
  p.first_seen_nanos = first_seen_nanos;
  p.path = "/ckpt/step_" + std::to_string(step);
  p.reason = reason;
  return p;
}

// A multiple-choice task with golds 1, 0, 1 and a generation task with answers "2", "4".
inline v1::TaskContent McTaskFile() {
  v1::TaskContent t;
  t.set_filename("mc.jsonl");
  t.set_content(
      "{\"id\": 0, \"query\": \"q0\", \"choices\": [\"a\", \"b\"], \"gold\": 1}\n"
      "{\"id\": 1, \"query\": \"q1\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n"
      "{\"id\": 2, \"query\": \"q2\", \"choices\": [\"a\", \"b\", \"c\"], \"gold\": 1}\n");
  return t;
}
inline v1::TaskContent QaTaskFile() {
  v1::TaskContent t;
  t.set_filename("qa.json");
  t.set_content(
      R"({"instruction": "add", "output_length": 8, "metrics": ["exact_match"],
          "few_shots": [{"input": "0+0", "output": "0"}],
          "samples": [{"input": "1+1", "output": "2"}, {"input": "2+2", "output": "4"}]})");
  return t;
}

// A coordinator over a fresh RocksDB in a per-test temp folder (with an empty `ckpt/`
// source folder), a FakeClock and scripted discovery. Subclasses set options_ and call
// StartFresh() from SetUp(); Restart() reopens the store with a new coordinator, as a
// process restart would.
class CoordinatorFixture : public ::testing::Test {
 protected:
  void StartFresh(const std::string& prefix) {
    root_ = ScratchDir(prefix);
    std::filesystem::create_directories(root_ / "ckpt");
    Restart();
  }
  void TearDown() override {
    coordinator_.reset();
    store_.reset();
    std::filesystem::remove_all(root_);
  }
  virtual void Restart() {
    coordinator_.reset();
    store_.reset();
    auto store = Store::Open((root_ / "db").string());
    ASSERT_OK(store);
    store_ = std::move(*store);
    auto c = Coordinator::Create(store_.get(), &clock_, checkpoints_.Factory(), options_);
    ASSERT_OK(c);
    coordinator_ = std::move(*c);
  }

  std::filesystem::path root_;
  FakeClock clock_;
  FakeCheckpoints checkpoints_;
  CoordinatorOptions options_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Coordinator> coordinator_;
};

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_COORDINATOR_FIXTURE_H_
