// TensorSource: where a model's weights come from — a checkpoint folder (CheckpointReader)
// or tensors held in memory (TensorMap, e.g. the average of a window, averager.h).
//
// Contract: config_json() is the config.json text the tensors belong to; TensorNames() are
// the parameter names, sorted; Info() gives the stored dtype and shape (offsets are
// meaningful only for files); Tensor() returns the tensor as a contiguous float32 CPU
// tensor. A Tensor() result may share storage with the source (TensorMap does for fp32
// tensors), so callers must never modify it in place. label() names the source in error
// messages ("checkpoint /ckpt/step_000100", "average of 4 checkpoints ending ...").
//
// Thread-safety: implementations are immutable after construction; all methods are const
// and may be called concurrently.
#ifndef STEADYEVAL_WORKER_CHECKPOINT_TENSOR_SOURCE_H_
#define STEADYEVAL_WORKER_CHECKPOINT_TENSOR_SOURCE_H_

#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/safetensors.h"

namespace steadyeval {

class TensorSource {
 public:
  virtual ~TensorSource() = default;

  virtual const std::string& label() const = 0;
  virtual const std::string& config_json() const = 0;
  virtual std::vector<std::string> TensorNames() const = 0;
  // NOT_FOUND naming the tensor when absent.
  virtual absl::StatusOr<TensorInfo> Info(absl::string_view name) const = 0;
  // See the file comment. NOT_FOUND naming the tensor when absent.
  virtual absl::StatusOr<at::Tensor> Tensor(absl::string_view name) const = 0;
  // Where tensor `name` is stored, for error messages: the file path for a checkpoint
  // folder (the shard that holds it), label() otherwise or when the tensor is absent.
  virtual std::string Origin(absl::string_view /*name*/) const { return label(); }
};

// The torch dtype of a safetensors dtype, and back (INVALID_ARGUMENT for a torch dtype
// safetensors cannot store).
at::ScalarType TorchTypeOf(DType dtype);
absl::StatusOr<DType> DTypeOfTorch(at::ScalarType type);

// Named tensors held in memory, in their own dtypes, plus the config.json text.
class TensorMap : public TensorSource {
 public:
  TensorMap(std::string label, std::string config_json)
      : label_(std::move(label)), config_json_(std::move(config_json)) {}

  // Adds or replaces `name` (made contiguous, on CPU). INVALID_ARGUMENT for a dtype
  // safetensors cannot store. Not thread-safe: fill the map before sharing it.
  absl::Status Add(const std::string& name, at::Tensor tensor);

  // The tensor in its stored dtype (shares storage; do not modify).
  absl::StatusOr<at::Tensor> Stored(absl::string_view name) const;
  // Sum of every tensor's byte size.
  uint64_t bytes() const;

  const std::string& label() const override { return label_; }
  const std::string& config_json() const override { return config_json_; }
  std::vector<std::string> TensorNames() const override;
  absl::StatusOr<TensorInfo> Info(absl::string_view name) const override;
  absl::StatusOr<at::Tensor> Tensor(absl::string_view name) const override;

 private:
  std::string label_;
  std::string config_json_;
  std::map<std::string, at::Tensor, std::less<>> tensors_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_CHECKPOINT_TENSOR_SOURCE_H_
