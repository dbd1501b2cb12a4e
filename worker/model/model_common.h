// Building blocks the model families share (llama_model.cc, gpt_neox_model.cc,
// gpt2_model.cc): weight loading with shape checks, Forward's input validation, the
// positions and attention masks of a (possibly padded, possibly cached) batch, rotary
// tables, KV-cache appends and causal softmax attention. They implement the padding and
// cache contract of language_model.h once, so every family behaves the same way.
//
// Device: tensors are created on the device of the ids / weights they derive from, so
// the same code runs on CPU and CUDA.
// Thread-safety: pure functions (AppendSlots writes only into the cache it is given).
#ifndef STEADYEVAL_WORKER_MODEL_MODEL_COMMON_H_
#define STEADYEVAL_WORKER_MODEL_MODEL_COMMON_H_

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/ArrayRef.h>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/model/language_model.h"
#include "worker/checkpoint/tensor_source.h"

namespace steadyeval {

// "[2, 3]".
std::string ShapeString(c10::IntArrayRef shape);

// Loads tensor `name` of `source`, checks it has `shape` (INVALID_ARGUMENT naming the
// tensor, the file that holds it and both shapes otherwise; NOT_FOUND naming it when
// absent) and places it per `placement`.
absl::StatusOr<at::Tensor> LoadWeight(const TensorSource& source, const std::string& name,
                                         const std::vector<int64_t>& shape,
                                         const WeightPlacement& placement = {});

// Validated Forward() inputs, on the model's device: `ids` with padding ids replaced by 0;
// `mask` undefined when every new token is real, else the [B, T] bool token mask.
struct ForwardInputs {
  at::Tensor ids;
  at::Tensor mask;
};

// Checks Forward()'s arguments against the contract in language_model.h: `family` names
// the model in messages ("gpt2 forward: ..."). INVALID_ARGUMENT for a bad shape/dtype, a
// real token outside [0, vocab_size) or a cache of another batch size. Runs libtorch ops:
// call inside GuardTorch.
absl::StatusOr<ForwardInputs> CheckForwardInputs(absl::string_view family,
                                                 const at::Tensor& input_ids,
                                                 const at::Tensor& token_mask,
                                                 const KVCache* cache, int64_t vocab_size,
                                                 at::Device device);
// The shape/dtype/batch checks of CheckForwardInputs that need no libtorch op (call
// before GuardTorch so the message is not wrapped).
absl::Status CheckForwardShapes(absl::string_view family, const at::Tensor& input_ids,
                                const at::Tensor& token_mask, const KVCache* cache);

// Where each new token sits and what it may attend to, for B rows of T new tokens after
// `past` cached slots (total = past + T slots).
struct AttentionPlan {
  int64_t batch = 0, tokens = 0, past = 0, total = 0;
  // The position of every new token: [T] int64 when no slot is padding (positions
  // past..total-1, shared by all rows), else [B, T] int64 (real tokens before it in its
  // row, cached ones included).
  at::Tensor positions;
  // Undefined when no slot is padding, else [B, total] bool: real slots (cache + new).
  at::Tensor key_mask;
  // Additive float mask (0 or -inf): [T, total] when no slot is padding, else
  // [B, 1, T, total]; a padding query always sees itself (stays finite).
  at::Tensor mask;
  // Packed batches (PlanPacked): query rows [q_begin, q_end) see keys only among the
  // cached slots [0, past_keys) and the batch's slots past + [key_begin, q_end), so
  // attention runs chunk by chunk over those keys instead of over every slot (a packed
  // batch's rows mostly belong to unrelated sequences). Empty: one block over all keys.
  struct Chunk {
    int64_t q_begin, q_end, past_keys, key_begin;
  };
  std::vector<Chunk> chunks;
  // The longest row in real tokens after this call (cached ones included); for a packed
  // batch (PlanPacked) the longest sequence any of its tokens belongs to so far, i.e. the
  // largest position + 1. Computed lazily for padded batches (a device sync).
  int64_t Longest() const;
  // Real tokens per row after this call: [B] int64.
  at::Tensor RowLengths() const;
  int64_t longest = -1;  // set by PlanAttention (unpadded) and PlanPacked; -1: Longest() computes
};

// The plan for `inputs` continuing `cache` (null: no cache). Call inside GuardTorch.
AttentionPlan PlanAttention(const ForwardInputs& inputs, const KVCache* cache);

// The plan for a packed batch (LanguageModel::ForwardPacked): one row of N tokens after
// the P slots of `cache` (null or empty: P = 0), positions [1, N] from batch.positions,
// additive mask [1, 1, N, P + N] from batch.visible (each token also sees itself), no key
// mask. Call inside GuardTorch, after CheckPackedInputs.
AttentionPlan PlanPacked(const PackedBatch& batch, const KVCache* cache, at::Device device);

// Prepares `cache` (may be null) for a forward through `layers` layers: an empty cache
// gets one (undefined) key and value slot per layer.
void BeginCache(KVCache* cache, size_t layers);
// Records the plan's new length and key mask in `cache` (may be null) after every layer
// appended its keys and values.
void FinishCache(KVCache* cache, const AttentionPlan& plan);

// Appends `fresh` ([B, heads, T, hd]) after the `past` valid slots of a cache buffer and
// returns the valid [B, heads, past + T, hd] view (see the KVCache layout contract: writes
// in place only into spare slots of a buffer the cache alone holds, grows by a margin).
at::Tensor AppendSlots(at::Tensor& buffer, int64_t past, const at::Tensor& fresh);

// cos and sin of the rotate-half RoPE angles positions ⊗ inv_freq, duplicated to
// 2·len(inv_freq) dims and shaped to broadcast against [B, heads, T, dims]:
// [T, dims] for [T] positions, [B, 1, T, dims] for [B, T] positions. `inv_freq` is
// [dims/2] or, per row, [B, 1, dims/2] (float32).
struct RotaryTables {
  at::Tensor cos, sin;
};
RotaryTables RopeTables(const at::Tensor& positions, const at::Tensor& inv_freq);
// x·cos + rotate_half(x)·sin over x's last dim (rotate_half(x) = cat(-x2, x1)).
at::Tensor ApplyRope(const at::Tensor& x, const RotaryTables& tables);

// inv_freq[j] = base^(-2j/dims), j < dims/2, in double (round to float32 once, with
// FloatTensor, after any rescaling).
std::vector<double> RopeInvFreq(int64_t dims, double base);
at::Tensor FloatTensor(const std::vector<double>& values, at::Device device);

// Causal softmax attention: q [B, nh, T, hd] against k, v [B, nkv, total, hd] (nh a
// multiple of nkv: each kv head serves nh/nkv consecutive query heads, without copying
// k/v), scaled by 1/sqrt(hd), plan.mask added, softmax in float32. Returns
// [B, T, nh·hd] in q's dtype.
at::Tensor CausalAttention(const at::Tensor& q, const at::Tensor& k,
                              const at::Tensor& v, const AttentionPlan& plan);

// y = x Wᵀ (+ b); `b` may be undefined.
at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

// LayerNorm over x's last dim with `weight` and `bias` ([dim]), computed in float32
// whatever the dtype of x and the weights; returned in x's dtype.
at::Tensor LayerNormFloat32(const at::Tensor& x, const at::Tensor& weight,
                               const at::Tensor& bias, double eps);

// The part of a family's Forward after its inputs are validated and its attention
// planned: the logits, or an error the family detects before touching the cache (e.g. a
// sequence longer than its positions allow). Runs inside GuardTorch and InferenceMode.
using ForwardBody =
    absl::FunctionRef<absl::StatusOr<at::Tensor>(const ForwardInputs&, const AttentionPlan&)>;

// Whether a forward records autograd history: never for evaluation (kOff, run under
// c10::InferenceMode); kOn for training (LlamaModel::ForwardForTraining).
enum class Autograd { kOff, kOn };

// ForwardPacked's frame, shared by every family: checks `batch` against the contract in
// language_model.h (shapes, ids in [0, vocab_size), a batch-1 cache without padding),
// then in GuardTorch("<family> packed forward") under c10::InferenceMode plans it
// (PlanPacked) and runs `body` with ForwardInputs{ids as [1, N] on `device`}. The body
// returns the logits of batch.outputs' rows, [M, V]. Errors: INVALID_ARGUMENT for a bad
// batch; those of `body`; INTERNAL for a libtorch exception (the cache keeps its length).
absl::StatusOr<at::Tensor> RunPackedForward(absl::string_view family, const PackedBatch& batch,
                                               KVCache* cache, int64_t vocab_size,
                                               at::Device device, ForwardBody body);

// The final norm's input x [B, T, H] reduced to the rows a forward returns: all of them
// (undefined `rows`), or rows.numel() of the flattened B·T tokens ([M, H]).
at::Tensor OutputRows(const at::Tensor& x, const at::Tensor& rows);

// The frame every family's LanguageModel::Forward shares: CheckForwardShapes, then in
// GuardTorch("<family> forward") under c10::InferenceMode unless `autograd` is kOn,
// CheckForwardInputs against `vocab_size` and `device`, PlanAttention with `cache`, and
// `body`. Errors: those of the
// checks and of `body`; INTERNAL for a libtorch exception (the cache then keeps its length
// and mask; its buffers may have grown and have scratch slots written, which changes
// nothing it holds).
absl::StatusOr<at::Tensor> RunForward(absl::string_view family,
                                         const at::Tensor& input_ids,
                                         const at::Tensor& token_mask, KVCache* cache,
                                         int64_t vocab_size, at::Device device,
                                         ForwardBody body, Autograd autograd = Autograd::kOff);

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_MODEL_MODEL_COMMON_H_
