// LanguageModel: the interface the evaluator scores and generates through, one
// implementation per model family (DESIGN §6), plus the per-sequence KV cache.
//
// Forward(input_ids [B, T] int64, token_mask, cache) returns logits [B, T, V] float32 on
// CPU, wherever the model computes (WeightPlacement). Row b of the batch is an independent sequence; its result never depends on the
// other rows (up to floating-point rounding of batched kernels, ~1e-6).
//
// Padding. `token_mask` is either undefined (every token is real: the unpadded form,
// also spelled Forward(input_ids, cache)) or a [B, T] bool tensor, true for a real token
// and false for padding. Padding may sit anywhere in a row (the evaluator left-pads) and a
// row may be all padding. A padding token
//   - takes no position: the RoPE / absolute position of a real token is the number of
//     real tokens before it in its row (cached ones included), so a left-padded row gives
//     the same logits as the same row run alone without padding;
//   - is never attended to by a real token (of this call or of any later call through the
//     cache), so its id is ignored (it may be any value, in or out of the vocabulary);
//   - still gets a finite query, key and value: it attends to the real tokens before it
//     and always to itself, so a row that is all padding cannot produce NaN (NaN in a
//     padding key/value would poison real rows through 0·NaN in the attention product).
//     Its logits are meaningless; callers read only the logits of real tokens.
//
// Cache. With a cache, the tokens continue the cached sequences: they attend to every
// cached real key of their row, and their keys/values (padding included) are appended, so
// cache->length() grows by T for every row. Without a cache, the tokens are whole
// sequences starting at position 0. A non-empty cache must have the batch size B of
// input_ids; KVCache::ExpandBatch turns a batch-1 cache (a shared prompt prefix) into B
// rows, KVCache::StackRows joins batch-1 caches of different lengths into one left-padded
// batch, and KVCache::SelectRows keeps a subset of rows (drop finished sequences).
//
// Thread-safety: models are immutable after creation; Forward() may run concurrently
// from several threads as long as each uses its own KVCache.
#ifndef STEADYEVAL_WORKER_MODEL_LANGUAGE_MODEL_H_
#define STEADYEVAL_WORKER_MODEL_LANGUAGE_MODEL_H_

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace steadyeval {

class TensorSource;

// Per-layer keys and values of the tokens seen so far, and which of them are padding.
//
// Layout contract (for model implementations): keys()[i] / values()[i] hold layer i's keys
// and values with the batch on dim 0 and the token slots on dim 2 (the attention families
// store [B, n_kv_heads, capacity, head_dim], after RoPE); every layer has both. Only the
// first length() slots are valid: a buffer may be longer (capacity >= length()), and slots
// beyond length() are scratch that nothing reads. key_mask() is undefined while no cached
// slot is padding; otherwise it is [B, length] bool, true where the slot holds a real
// token. A row's next position is the number of real slots in it (length() when
// key_mask() is undefined). A model appends along dim 2 and keeps key_mask() in step
// (set_key_mask after a forward that involved padding; leaving it undefined only when
// every slot is real). It never modifies valid slots, and it writes scratch slots in
// place only when this cache alone holds the buffer (no other tensor shares its storage,
// e.g. a fork, an ExpandBatch view or a caller's copy; the buffer is contiguous);
// otherwise it moves to a new buffer. So copying a cache (Fork) is cheap and the copies
// evolve independently: compute a shared prefix once, then Fork() or ExpandBatch() it per
// continuation. Padding slots' keys and values must be finite (a model's own padding
// tokens get finite ones; StackRows uses zeros).
// Not thread-safe: one cache per thread.
class KVCache {
 public:
  KVCache() = default;

  // Slots per row, padding included.
  int64_t length() const { return length_; }
  bool empty() const { return length_ == 0; }
  // Rows of the cached batch; 0 when empty (an empty cache takes the batch of its first
  // Forward).
  int64_t batch_size() const {
    return empty() || keys_.empty() || !keys_.front().defined() ? 0 : keys_.front().size(0);
  }
  // An independent cache that starts from this one's contents (shares storage).
  KVCache Fork() const { return *this; }
  void Clear() {
    keys_.clear();
    values_.clear();
    key_mask_ = at::Tensor();
    length_ = 0;
  }

  // An independent cache whose `rows` rows each equal this batch-1 cache's only row (e.g.
  // a shared prompt prefix, before a batch of continuations). No data is copied: the rows
  // are expanded views until the next Forward appends (which copies them). An empty cache
  // stays empty. INVALID_ARGUMENT when rows < 1 or this cache holds more than one row; INTERNAL for
  // libtorch failures.
  absl::StatusOr<KVCache> ExpandBatch(int64_t rows) const;

  // An independent cache holding rows `rows` of this one, in that order (e.g. the rows of
  // a batch that are still generating). Slots that are padding in every kept row are
  // dropped (they can never be attended to), so length() may shrink; if no kept row has a
  // real slot the result is empty. An empty cache stays empty. INVALID_ARGUMENT for an
  // empty `rows` or a row outside [0, batch_size()); INTERNAL for libtorch failures.
  absl::StatusOr<KVCache> SelectRows(const std::vector<int64_t>& rows) const;

  // One cache whose row b is rows[b]'s only row, left-padded to the longest with padding
  // slots (zero keys and values, false in key_mask()), e.g. prompts run one at a time and
  // then decoded together. Copies the data into buffers with `spare_slots` unused slots,
  // so that many appends (e.g. the decoding steps still to come) need not move them.
  // INVALID_ARGUMENT for no rows, negative spare_slots, or a row that is empty, holds
  // more than one row or has another number of layers; INTERNAL for libtorch failures
  // (e.g. layers of different shapes).
  static absl::StatusOr<KVCache> StackRows(const std::vector<KVCache>& rows,
                                           int64_t spare_slots = 0);

  // An independent batch-1 cache holding slots `slots` of this batch-1 cache, in that
  // order (e.g. the path from a token trie's root to one node), copied into buffers with
  // `spare_slots` unused slots for later appends. Empty `slots` gives an empty cache.
  // INVALID_ARGUMENT for a cache with other than one row or with padding slots, a slot
  // outside [0, length()) or negative spare_slots; INTERNAL for libtorch failures.
  absl::StatusOr<KVCache> SelectSlots(const std::vector<int64_t>& slots,
                                      int64_t spare_slots = 0) const;

  // For model implementations (see the layout contract above).
  std::vector<at::Tensor>& keys() { return keys_; }
  std::vector<at::Tensor>& values() { return values_; }
  const at::Tensor& key_mask() const { return key_mask_; }
  void set_key_mask(at::Tensor key_mask) { key_mask_ = std::move(key_mask); }
  void set_length(int64_t length) { length_ = length; }

 private:
  std::vector<at::Tensor> keys_;
  std::vector<at::Tensor> values_;
  at::Tensor key_mask_;  // [B, length] bool, or undefined: every slot is real
  int64_t length_ = 0;
};

// A packed batch: tokens of several sequences in one forward (the token scheduler's
// form, worker/eval/token_scheduler.h). Token n continues whatever it sees: the slots of the
// cache and of this batch that batch.visible marks (its ancestors in a token trie), and
// always itself; it never sees a neighbour it is not told to see. Its position is
// positions[n] (the number of tokens before it in its own sequence).
struct PackedBatch {
  at::Tensor ids;        // [N] int64, every token real (N >= 1)
  at::Tensor positions;  // [N] int64
  // [N, P + N] bool (CPU or the model's device): slot s (the P cached slots, then this
  // batch's N tokens in order) is visible to token n. A token may only see earlier slots.
  at::Tensor visible;
  at::Tensor outputs;  // [M] int64: the tokens whose logits are returned, in this order
};

class LanguageModel {
 public:
  virtual ~LanguageModel() = default;

  // Unpadded: every token of input_ids is real. See the file comment.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& input_ids, KVCache* cache) const {
    return Forward(input_ids, at::Tensor(), cache);
  }

  // See the file comment. `token_mask`: undefined, or [B, T] bool (true = real token).
  // INVALID_ARGUMENT for a bad shape/dtype of input_ids or token_mask, a real token's id
  // outside [0, vocab_size) or a non-empty cache of another batch size; INTERNAL for
  // libtorch failures. The cache's contents (length, valid slots, mask) are unchanged when
  // an error is returned.
  // Implementations override this overload and add `using LanguageModel::Forward;`.
  virtual absl::StatusOr<at::Tensor> Forward(const at::Tensor& input_ids,
                                                const at::Tensor& token_mask,
                                                KVCache* cache) const = 0;

  // Packed form: the logits [M, V] (float32, CPU) of batch.outputs' tokens. The cache
  // (batch 1, no padding slot; empty for none) holds the P slots batch.visible refers
  // to; the N new tokens' keys and values are appended, so cache->length() grows by N
  // (callers usually keep only the slots later tokens need: KVCache::SelectSlots). The
  // result equals running each token's own sequence unpadded, up to floating-point
  // rounding. Every sequence must be within length_dependent_beyond() (when that is
  // non-zero). INVALID_ARGUMENT for a malformed batch (shapes, an id outside the
  // vocabulary, an output index outside [0, N), a cache with several rows or padding);
  // INTERNAL for libtorch failures.
  virtual absl::StatusOr<at::Tensor> ForwardPacked(const PackedBatch& batch,
                                                      KVCache* cache) const = 0;

  virtual int64_t vocab_size() const = 0;
  // Token ids that end generation according to config.json (may be empty).
  virtual const std::vector<int64_t>& eos_token_ids() const = 0;

  // Sequences longer than this many tokens get positions that depend on the total length
  // (dynamic RoPE scaling): a prefix computed alone then differs from the same prefix
  // inside a longer sequence, so callers must not reuse such a prefix's cache for a longer
  // sequence they want to score exactly. 0 = no such dependence (the default).
  virtual int64_t length_dependent_beyond() const { return 0; }
};

// Where a model keeps its weights and computes: float32 on the CPU (the default); on a
// CUDA device, the checkpoint's own floating dtype (ChoosePlacement), with norms, softmax
// and the logits in float32.
struct WeightPlacement {
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
};

// Parses a `--device` value: "cpu", "cuda" (= cuda:0) or "cuda:K". INVALID_ARGUMENT for
// anything else; FAILED_PRECONDITION when CUDA is asked for and this libtorch has no CUDA
// or no such device (the message says how many there are).
absl::StatusOr<at::Device> ParseDevice(absl::string_view spec);

// The placement for `source` on `device`: float32 on CPU; on CUDA the dtype of the
// source's floating tensors when they all share fp16/bf16, else float32.
absl::StatusOr<WeightPlacement> ChoosePlacement(const TensorSource& source, at::Device device);

// Builds the model for the source's config.json `model_type` and loads its weights from
// `source` (a CheckpointReader, or a TensorMap such as a window average) per `placement`;
// the source may be destroyed afterwards. UNIMPLEMENTED naming the model_type for an
// unsupported family.
absl::StatusOr<std::unique_ptr<LanguageModel>> LoadLanguageModel(
    const TensorSource& source, const WeightPlacement& placement = {});

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_MODEL_LANGUAGE_MODEL_H_
