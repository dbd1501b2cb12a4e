// Checkpoint averaging and parameter drift (DESIGN §3 "Averaging", "Parameter drift"; §6).
//
// Averaging is uniform, θ̄ = 1/n Σ_j θ_j, streamed tensor by tensor from the members'
// memory-mapped safetensors (pages are dropped once read), so memory holds the result
// plus about one tensor per member — never n models. fp32/fp64 members accumulate in
// fp64 (so the average of n identical fp32 checkpoints is bit-identical to it), bf16/fp16
// members in fp32; the result is cast back to the members' dtype. Non-floating tensors
// come from the newest member, as does config.json.
//
// Members must agree: the same parameter names, dtypes and shapes, and the same
// config.json apart from bookkeeping keys (kIgnoredConfigKeys). Disagreement is
// FAILED_PRECONDITION naming the tensor or key and both folders. A member folder that no
// longer exists (trainers rotate checkpoints) is MembersGoneError (common/job_failure.h:
// NOT_FOUND carrying JobFailure::kMembersGone) — the coordinator fails such windows
// permanently (DESIGN §4). Other errors are CheckpointReader::Open's.
#ifndef STEADYEVAL_WORKER_AVERAGING_AVERAGER_H_
#define STEADYEVAL_WORKER_AVERAGING_AVERAGER_H_

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/eval/eval_backend.h"
#include "worker/checkpoint/tensor_source.h"

namespace steadyeval {

// One checkpoint of a window: its folder and admitted step.
struct WindowMember {
  std::string dir;
  uint64_t step = 0;
};

// config.json keys that may differ between members of one run without changing the model.
inline constexpr const char* kIgnoredConfigKeys[] = {"_name_or_path", "transformers_version",
                                                     "_commit_hash", "use_cache", "torch_dtype"};

// Opens a window member; MembersGoneError when its folder does not exist.
absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenWindowMember(const std::string& dir);

// OK when `member` can be averaged with `reference` (see the file comment).
absl::Status CheckMembersAgree(const CheckpointReader& reference, const CheckpointReader& member);

// The average of `member_dirs` (oldest first; at least one), computed from scratch.
absl::StatusOr<std::unique_ptr<TensorMap>> AverageCheckpoints(
    const std::vector<std::string>& member_dirs);

// Parameter drift from `from_dir` to `to_dir` over every floating parameter, streamed
// with fp64 accumulation. relative is l2 / ||θ_from||₂ (0 when both are 0, +inf when only
// θ_from is 0). FAILED_PRECONDITION when the parameter names or shapes differ.
absl::StatusOr<ParameterDriftResult> ComputeParameterDrift(const std::string& from_dir,
                                                           const std::string& to_dir);

// Running window sums per (run, n), so the next window is sum + θ_new − θ_oldest: two
// checkpoint reads instead of n (DESIGN §6).
//
// Average() reuses the held sum when the requested window equals the held one, slides
// it when the held members are the requested ones shifted by one (oldest dropped, newest
// added, compared by step) and the oldest's folder still exists, and otherwise re-sums
// from scratch. After `rebuild_every` consecutive slides the next window is re-summed
// from scratch to bound rounding drift (0: never slide). Sums are held in the
// accumulation dtype (fp64 for fp32 members: twice the checkpoint's size) and all held
// sums together stay within `budget_bytes`: least recently used sums are evicted first,
// and a window whose sum alone exceeds the budget is averaged from scratch and not held.
// Any error while updating a sum drops that sum.
//
// Not thread-safe: one Average() at a time (the daemon runs one job at a time).
class WindowSumCache {
 public:
  struct Options {
    uint64_t budget_bytes = 2ull << 30;
    int rebuild_every = 8;
  };
  // How the last Average() got its sum (for tests and logs).
  enum class Path { kNone, kReused, kSlid, kRebuilt, kUncached };

  explicit WindowSumCache(Options options) : options_(options) {}

  // The average of `members` (oldest first, distinct increasing steps) of `run`. Errors
  // as AverageCheckpoints(); INVALID_ARGUMENT for an empty window.
  absl::StatusOr<std::unique_ptr<TensorMap>> Average(const std::string& run,
                                                     const std::vector<WindowMember>& members);

  // The sums held now, most recently used first.
  std::vector<WindowSumInfo> Held() const;
  uint64_t held_bytes() const;
  Path last_path() const { return last_path_; }

 private:
  struct Sum {
    std::string run;
    std::vector<WindowMember> members;
    std::string config_json;
    std::vector<TensorInfo> layout;             // the reference member's parameters
    std::map<std::string, at::Tensor> sums;  // floating parameters, accumulation dtype
    int slides_since_rebuild = 0;
    uint64_t bytes = 0;
  };
  using Key = std::pair<std::string, size_t>;

  absl::Status Rebuild(const std::vector<WindowMember>& members, Sum* sum);
  absl::Status Slide(const WindowMember& newest, const CheckpointReader& added, Sum* sum);
  // Makes room for `bytes` more by evicting least recently used sums (other than `keep`).
  void Evict(uint64_t bytes, const Sum* keep);

  Options options_;
  std::list<Sum> sums_;  // most recently used first
  Path last_path_ = Path::kNone;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_AVERAGING_AVERAGER_H_
