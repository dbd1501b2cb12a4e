// CheckpointReader: read access to one Hugging Face-layout checkpoint folder.
//
// The folder holds config.json and either `model.safetensors` or
// `model.safetensors.index.json` whose weight_map names the shards. Open() validates the
// whole checkpoint up front: config.json is readable, every shard exists, every shard's
// header is well-formed and agrees with the file's size (a shard still being written is
// FAILED_PRECONDITION), and every tensor the index names is in its shard. Shards are
// memory-mapped read-only and stay mapped for the reader's lifetime.
//
// Non-parameter buffers of older checkpoints (`*.rotary_emb.inv_freq`, `*.attn.bias`,
// `*.attn.masked_bias`) are left out of TensorNames(); Tensor() still returns them.
//
// Thread-safe: all methods are const after Open() and may be called concurrently.
#ifndef STEADYEVAL_WORKER_CHECKPOINT_READER_H_
#define STEADYEVAL_WORKER_CHECKPOINT_READER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/safetensors.h"

namespace steadyeval {

class CheckpointReader {
 public:
  // Opens and validates the checkpoint folder `dir`. NOT_FOUND when config.json, the
  // weights or a shard listed in the index is missing (the message names it);
  // FAILED_PRECONDITION for a truncated shard; INVALID_ARGUMENT / DATA_LOSS for malformed
  // headers or an index that disagrees with its shards.
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> Open(const std::string& dir);

  ~CheckpointReader();
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  const std::string& dir() const { return dir_; }
  // The raw text of config.json.
  const std::string& config_json() const { return config_json_; }

  // Parameter names, sorted, without the ignored buffers.
  std::vector<std::string> TensorNames() const;
  bool HasTensor(absl::string_view name) const;
  // Stored dtype, shape and offsets. NOT_FOUND naming the tensor when absent.
  absl::StatusOr<TensorInfo> Info(absl::string_view name) const;

  // The tensor converted to a contiguous float32 CPU tensor (always a copy owned by the
  // caller; the mapping is never written). NOT_FOUND naming the tensor when absent.
  absl::StatusOr<torch::Tensor> Tensor(absl::string_view name) const;

 private:
  struct Shard;
  struct Entry {
    size_t shard;
    TensorInfo info;
  };
  CheckpointReader() = default;
  absl::Status AddShard(const std::string& file_name);

  std::string dir_;
  std::string config_json_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::map<std::string, Entry, std::less<>> tensors_;
};

// True for the non-parameter buffers checkpoints may carry (see above).
bool IsIgnoredBuffer(absl::string_view tensor_name);

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_CHECKPOINT_READER_H_
