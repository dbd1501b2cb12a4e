// The worker daemon's view of "a model that evaluates tasks" (DESIGN §6).
//
// The daemon (gRPC, leases, heartbeats) is written against this interface so it carries no
// libtorch dependency and can be tested with a fake; TorchEvalBackend (torch_backend.h)
// is the real one. Not thread-safe: one job at a time per backend.
#ifndef STEADYEVAL_WORKER_EVAL_EVAL_BACKEND_H_
#define STEADYEVAL_WORKER_EVAL_EVAL_BACKEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/prompt.h"
#include "common/task.h"

namespace steadyeval {

// The default token budget of a packed forward (token_scheduler.h), chosen by measurement
// (bench/RESULTS.md, "Evaluation engine"): large enough that the matrix products run at
// the GEMM rate on every core, small enough that attention over a batch's masked
// neighbours stays a small share of the work and activations stay small.
inline constexpr int64_t kDefaultBatchTokens = 512;

// How a job's tasks are evaluated (from the run's configuration).
struct EvalSettings {
  PromptOptions prompt;
  int max_new_tokens_delta = 0;  // added to each generation task's output_length
  int batch_size = 8;            // generation examples decoded together
  BosMode bos = BosMode::kAuto;
};

struct ExampleResult {
  uint32_t index = 0;
  std::string output;                  // generated text, or chosen option index
  std::vector<double> option_logliks;  // multiple choice only
};

struct LoadStats {
  double seconds = 0;
  uint64_t bytes = 0;
};

// ||θ_to − θ_from||₂ over all floating parameters, and its ratio to ||θ_from||₂ (DESIGN §3
// "Parameter drift").
struct ParameterDriftResult {
  double l2 = 0;
  double relative = 0;
};

// A window sum the backend holds (DESIGN §6): avg@n jobs of `run` whose window is
// `steps` shifted by one are cheap on this worker.
struct WindowSumInfo {
  std::string run;
  uint32_t window = 0;
  std::vector<uint64_t> steps;  // the members the sum covers, oldest first
};

// Called with (examples done, total) as examples finish and after every forward batch of
// the model (`done` may then repeat). It is the cancel point: return false and Evaluate()
// fails with CANCELLED, returning no results, before another batch runs.
using ProgressFn = std::function<bool(size_t done, size_t total)>;

class EvalBackend {
 public:
  virtual ~EvalBackend() = default;

  // Loads the Hugging Face checkpoint folder `dir`; `tokenizer_path` (may be empty)
  // overrides the folder's tokenizer.model. Errors: NOT_FOUND / INVALID_ARGUMENT /
  // FAILED_PRECONDITION / DATA_LOSS for a missing, malformed or partial checkpoint
  // (permanent), others are retryable.
  virtual absl::StatusOr<LoadStats> Load(const std::string& dir, const std::string& tokenizer_path) = 0;

  // Loads the uniform average of the window `member_dirs` (oldest first, at
  // `member_steps`) of `run`, through the backend's window-sum cache when it has one; the
  // tokenizer is `tokenizer_path`, else the newest member's. Errors as Load(); a member
  // folder that no longer exists is MembersGoneError (common/job_failure.h); members
  // that disagree (tensor names, shapes, dtypes, config.json) are FAILED_PRECONDITION.
  virtual absl::StatusOr<LoadStats> LoadAverage(const std::string& /*run*/, uint32_t /*window*/,
                                                const std::vector<std::string>& /*member_dirs*/,
                                                const std::vector<uint64_t>& /*member_steps*/,
                                                const std::string& /*tokenizer_path*/) {
    return absl::UnimplementedError("this backend cannot average checkpoints");
  }

  // The window sums held now (reported in AcquireJob so avg@n jobs are routed here).
  virtual std::vector<WindowSumInfo> WindowSums() const { return {}; }

  // Parameter drift from checkpoint folder `from_dir` to `to_dir`, streamed tensor by
  // tensor (does not touch the loaded model). Errors as Load(); FAILED_PRECONDITION when
  // the two checkpoints' parameters differ in names or shapes.
  virtual absl::StatusOr<ParameterDriftResult> ComputeDrift(const std::string& /*from_dir*/,
                                                            const std::string& /*to_dir*/) {
    return absl::UnimplementedError("this backend cannot compute parameter drift");
  }

  // Evaluates every example of `task` with the loaded model. CANCELLED when `progress`
  // returned false (see ProgressFn).
  virtual absl::StatusOr<std::vector<ExampleResult>> Evaluate(const Task& task,
                                                              const EvalSettings& settings,
                                                              const ProgressFn& progress) = 0;

  // How the loaded tokenizer handles BOS under the last Evaluate()'s settings, for the
  // job record: "bos <id>" or "no bos".
  virtual std::string BosDescription() const { return ""; }

  // The loaded tokenizer's content hash (Tokenizer::content_sha256), and the file it came
  // from, for pinning a run to one tokenizer; empty when none is loaded.
  virtual std::string TokenizerSha256() const { return ""; }
  virtual std::string TokenizerPath() const { return ""; }

  // Tokens run through the model since creation (each shared prefix once, plus the
  // generated ones), for metrics.
  virtual uint64_t tokens_processed() const = 0;
};

// Window-sum cache settings of the libtorch backend (averager.h WindowSumCache).
struct WindowCacheSettings {
  uint64_t budget_bytes = 2ull << 30;  // all held sums together; 0 disables the cache
  int rebuild_every = 8;               // after this many consecutive slides, re-sum
};

// Creates the libtorch backend on `device` ("cpu", "cuda", "cuda:1") with `threads` CPU
// threads (libtorch's and OpenBLAS's, ConfigureThreads) and packed forwards of
// `batch_tokens` tokens (>= 1). Defined in torch_backend.cc.
absl::StatusOr<std::unique_ptr<EvalBackend>> CreateTorchEvalBackend(
    const std::string& device, int threads, const WindowCacheSettings& window_cache = {},
    int64_t batch_tokens = kDefaultBatchTokens);

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_EVAL_EVAL_BACKEND_H_
