// LanguageModel: the interface the evaluator scores and generates through, one
// implementation per model family (DESIGN §6), plus the per-sequence KV cache.
//
// Forward(input_ids [B, T] int64, cache) returns logits [B, T, V] float32 on CPU. With a
// cache, the tokens continue the cached sequence: their positions start at
// cache->length(), they attend to everything cached, and their keys/values are appended.
// Without a cache, the tokens are a whole sequence starting at position 0.
//
// Thread-safety: models are immutable after creation; Forward() may run concurrently
// from several threads as long as each uses its own KVCache.
#ifndef STEADYEVAL_WORKER_LANGUAGE_MODEL_H_
#define STEADYEVAL_WORKER_LANGUAGE_MODEL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"

namespace steadyeval {

class TensorSource;

// Per-layer keys and values of the tokens seen so far ([B, n_kv_heads, length, head_dim]
// each, after RoPE). A model replaces the stored tensors by new ones when appending and
// never modifies them in place, so copying a cache (Fork) is cheap and the copies evolve
// independently: compute a shared prefix once, then Fork() it per continuation.
// Not thread-safe: one cache per thread.
class KVCache {
 public:
  KVCache() = default;

  int64_t length() const { return length_; }
  bool empty() const { return length_ == 0; }
  // An independent cache that starts from this one's contents (shares storage).
  KVCache Fork() const { return *this; }
  void Clear() {
    keys_.clear();
    values_.clear();
    length_ = 0;
  }

  // For model implementations.
  std::vector<torch::Tensor>& keys() { return keys_; }
  std::vector<torch::Tensor>& values() { return values_; }
  void set_length(int64_t length) { length_ = length; }

 private:
  std::vector<torch::Tensor> keys_;
  std::vector<torch::Tensor> values_;
  int64_t length_ = 0;
};

class LanguageModel {
 public:
  virtual ~LanguageModel() = default;

  // See the file comment. INVALID_ARGUMENT for a bad shape/dtype, a token id outside
  // [0, vocab_size) or a cache of another batch size; INTERNAL for libtorch failures.
  // The cache is unchanged when an error is returned.
  virtual absl::StatusOr<torch::Tensor> Forward(const torch::Tensor& input_ids,
                                                KVCache* cache) const = 0;

  virtual int64_t vocab_size() const = 0;
  // Token ids that end generation according to config.json (may be empty).
  virtual const std::vector<int64_t>& eos_token_ids() const = 0;
};

// Builds the model for the source's config.json `model_type` and loads its weights from
// `source` (a CheckpointReader, or a TensorMap such as a window average); the source may
// be destroyed afterwards. UNIMPLEMENTED naming the model_type for an unsupported family.
absl::StatusOr<std::unique_ptr<LanguageModel>> LoadLanguageModel(const TensorSource& source);

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_LANGUAGE_MODEL_H_
