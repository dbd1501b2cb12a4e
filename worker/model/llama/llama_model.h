// The Llama family (llama, mistral, qwen2) forward pass in libtorch, CPU, float32.
//
// Computes exactly the published architecture (MODELS.md): RMSNorm in fp32, rotate-half
// RoPE, grouped-query attention (each kv head serves nh/nkv consecutive query heads),
// causal softmax attention in fp32, SwiGLU MLP, tied or untied LM head. Weights stored
// as fp32/bf16/fp16 are converted to fp32 at load. rope_scaling as transformers applies
// it: linear and llama3 rescale inv_freq once; dynamic (NTK) recomputes inv_freq from the
// row's total length L in real tokens (cached + new) whenever L > max_position_embeddings.
// With a KV cache, dynamic scaling rotates each chunk's keys/queries with the inv_freq for
// the length reached at that chunk and never re-rotates cached keys (what transformers'
// generate does), so a chunked forward past max_position_embeddings differs from one pass
// over the whole sequence; score a sequence in one pass (or reuse no prefix computed under
// another length) to get the reference logits. Not yet supported: mistral's sliding
// window beyond `sliding_window` tokens (Forward returns UNIMPLEMENTED for longer
// sequences).
//
// Cache appends write into spare slots of a buffer the cache alone holds and grow it by a
// quarter (at least 64 slots) when full, so a decoding step does not copy the cache;
// grouped-query attention runs each kv head against its group of query heads without
// repeating keys/values.
//
// Thread-safety: see LanguageModel.
#ifndef STEADYEVAL_WORKER_MODEL_LLAMA_LLAMA_MODEL_H_
#define STEADYEVAL_WORKER_MODEL_LLAMA_LLAMA_MODEL_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "worker/checkpoint/tensor_source.h"
#include "worker/model/language_model.h"
#include "worker/model/model_common.h"
#include "worker/model/model_config.h"

namespace steadyeval {

class LlamaModel : public LanguageModel {
 public:
  // Loads every weight from `reader` (a folder or tensors in memory; it may be destroyed
  // afterwards) and checks its
  // shape against `config`. NOT_FOUND naming a missing tensor; INVALID_ARGUMENT for a
  // shape that disagrees with config.json.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Create(
      const LlamaConfig& config, const TensorSource& reader,
      const WeightPlacement& placement = {});

  using LanguageModel::Forward;
  // Padded batches and the cache as LanguageModel describes; positions count only real
  // tokens, so mistral's sliding-window limit applies to each row's real tokens.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& input_ids,
                                        const at::Tensor& token_mask,
                                        KVCache* cache) const override;
  absl::StatusOr<at::Tensor> ForwardPacked(const PackedBatch& batch,
                                              KVCache* cache) const override;
  int64_t vocab_size() const override { return config_.vocab_size; }
  const std::vector<int64_t>& eos_token_ids() const override { return config_.eos_token_ids; }
  int64_t length_dependent_beyond() const override {
    return config_.rope_scaling.kind == RopeScaling::Kind::kDynamic
               ? config_.max_position_embeddings
               : 0;
  }
  const LlamaConfig& config() const { return config_; }

  // Training surface (examples/toy_pretrain). Every weight the forward reads, by its
  // Hugging Face name in checkpoint order; a tied LM head is listed once, as
  // model.embed_tokens.weight. The handles share their TensorImpl with the model, so
  // requires_grad_() and in-place optimizer updates on them change what Forward computes.
  // fp32 CPU weights share storage with the TensorSource the model was created from
  // (TensorSource contract): train a model created from tensors you own (a TensorMap).
  std::vector<std::pair<std::string, at::Tensor>> NamedWeights() const;
  // The logits [B, T, V] (float32, CPU) of `input_ids` ([B, T] int64, every token real,
  // positions 0..T-1, no cache) with autograd enabled: the same computation as Forward,
  // differentiable with respect to the weights that require grad. INVALID_ARGUMENT for
  // bad ids (as Forward); INTERNAL for a libtorch error. Not thread-safe with an optimizer
  // step on the weights.
  absl::StatusOr<at::Tensor> ForwardForTraining(const at::Tensor& input_ids) const;

 private:
  struct Layer {
    at::Tensor input_norm, q, k, v, o, q_bias, k_bias, v_bias, o_bias;
    at::Tensor post_norm, gate, up, down;
  };
  explicit LlamaModel(LlamaConfig config) : config_(std::move(config)) {}
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight) const;
  // inv_freq_ or, for dynamic rope_scaling past max_position_embeddings, the [hd/2]
  // frequencies for a sequence of `length` tokens.
  at::Tensor InvFreqForLength(int64_t length) const;
  // The sliding-window check, then ForwardUnchecked: the body Forward and
  // ForwardForTraining share.
  absl::StatusOr<at::Tensor> ForwardChecked(const ForwardInputs& in, const AttentionPlan& plan,
                                               KVCache* cache,
                                               const at::Tensor& output_rows = {}) const;
  // `ids` valid everywhere (padding ids replaced), on the model's device. The logits of
  // every token ([B, T, V]) or, with `output_rows` defined, of those flattened rows
  // ([M, V]).
  at::Tensor ForwardUnchecked(const at::Tensor& ids, const AttentionPlan& plan,
                                 KVCache* cache, const at::Tensor& output_rows = {}) const;

  LlamaConfig config_;
  WeightPlacement placement_;
  at::Tensor embed_;    // [V, H]
  std::vector<Layer> layers_;
  at::Tensor norm_;     // [H]
  at::Tensor lm_head_;  // [V, H]; the embedding when tied
  at::Tensor inv_freq_; // [hd/2], linear/llama3 scaling applied
};

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_MODEL_LLAMA_LLAMA_MODEL_H_
