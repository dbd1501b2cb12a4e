// The worker daemon's view of "a model that evaluates tasks" (DESIGN §6).
//
// The daemon (gRPC, leases, heartbeats) is written against this interface so it carries no
// libtorch dependency and can be tested with a fake; TorchEvalBackend (torch_backend.h)
// is the real one. Not thread-safe: one job at a time per backend.
#ifndef STEADYEVAL_WORKER_EVAL_BACKEND_H_
#define STEADYEVAL_WORKER_EVAL_BACKEND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/task.h"

namespace steadyeval {

struct ExampleResult {
  uint32_t index = 0;
  std::string output;                  // generated text, or chosen option index
  std::vector<double> option_logliks;  // multiple choice only
};

struct LoadStats {
  double seconds = 0;
  uint64_t bytes = 0;
};

// Called after each example; return false to cancel (the evaluation then fails with
// CANCELLED).
using ProgressFn = std::function<bool(size_t done, size_t total)>;

class EvalBackend {
 public:
  virtual ~EvalBackend() = default;

  // Loads the Hugging Face checkpoint folder `dir`; `tokenizer_path` (may be empty)
  // overrides the folder's tokenizer.model. Errors: NOT_FOUND / INVALID_ARGUMENT /
  // FAILED_PRECONDITION / DATA_LOSS for a missing, malformed or partial checkpoint
  // (permanent), others are retryable.
  virtual absl::StatusOr<LoadStats> Load(const std::string& dir, const std::string& tokenizer_path) = 0;

  // Evaluates every example of `task` with the loaded model.
  virtual absl::StatusOr<std::vector<ExampleResult>> Evaluate(const Task& task, int few_shots,
                                                              const ProgressFn& progress) = 0;

  // Tokens processed (prompt + generated) since creation, for metrics.
  virtual uint64_t tokens_processed() const = 0;
};

// Creates the libtorch backend on `device` ("cpu", "cuda", "cuda:1") with `threads`
// intra-op threads. Defined in torch_backend.cc.
absl::StatusOr<std::unique_ptr<EvalBackend>> CreateTorchEvalBackend(const std::string& device,
                                                                    int threads);

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_EVAL_BACKEND_H_
