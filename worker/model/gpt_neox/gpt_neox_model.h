// The GPT-NeoX family (`model_type` gpt_neox: Pythia, GPT-NeoX-20B) forward pass in
// libtorch, with the padding and KV-cache contract of language_model.h.
//
// Computes the published architecture (MODELS.md, checked against transformers'
// modeling_gpt_neox.py): one fused query_key_value projection laid out per head (its
// output viewed as [nh, 3·hd] holds q, k, v of each head in turn), partial rotate-half
// RoPE on the first rotary_ndims = int(hd · rotary_pct) dims of q and k, causal softmax
// attention scaled by 1/sqrt(hd), LayerNorm with bias (computed in float32), a biased MLP
// with GELU (exact erf; tanh approximation or ReLU when config.json says so), parallel
// (x + attn(ln1 x) + mlp(ln2 x)) or sequential residuals, final LayerNorm, then
// embed_out or, when tied, the input embedding.
//
// Thread-safety: see LanguageModel.
#ifndef STEADYEVAL_WORKER_MODEL_GPT_NEOX_GPT_NEOX_MODEL_H_
#define STEADYEVAL_WORKER_MODEL_GPT_NEOX_GPT_NEOX_MODEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/model/language_model.h"
#include "worker/model/model_common.h"
#include "worker/checkpoint/tensor_source.h"

namespace steadyeval {

struct GptNeoxConfig {
  enum class Activation {
    kGelu,      // "gelu": exact, 0.5·x·(1 + erf(x/√2))
    kGeluTanh,  // "gelu_new", "gelu_fast", "gelu_pytorch_tanh": the tanh approximation
    kRelu,      // "relu"
  };
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t head_dim = 0;       // hidden_size / num_attention_heads
  int64_t vocab_size = 0;
  double rotary_pct = 0.25;
  int64_t rotary_ndims = 0;   // int(head_dim · rotary_pct); even
  double rotary_emb_base = 10000.0;
  double layer_norm_eps = 1e-5;
  bool use_parallel_residual = true;
  Activation hidden_act = Activation::kGelu;
  bool tie_word_embeddings = false;
  bool attention_bias = true;  // biases on query_key_value and dense
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // eos_token_id given as an int or a list
  std::string torch_dtype;             // as stored ("float16", ...); informational
  int64_t max_position_embeddings = 0; // 0 when absent
};

// Parses a gpt_neox config.json, with Hugging Face's defaults for absent or null fields:
// rotary_pct 0.25, rotary_emb_base 10000 (else `rope_theta`), layer_norm_eps 1e-5,
// use_parallel_residual true, hidden_act "gelu", tie_word_embeddings false,
// attention_bias true, bos_token_id 0, eos_token_id 2. Newer transformers spell the rotary
// settings inside `rope_parameters` / `rope_scaling` (rope_theta, partial_rotary_factor);
// those are read too, and win as they do in transformers.
// Errors: INVALID_ARGUMENT naming the field (missing, wrong type, hidden_size not a
// multiple of num_attention_heads, an odd rotary_ndims); UNIMPLEMENTED for another
// model_type, another hidden_act or a rope scaling other than "default" (named).
// Thread-safe (pure function).
absl::StatusOr<GptNeoxConfig> ParseGptNeoxConfig(absl::string_view config_json);

class GptNeoxModel : public LanguageModel {
 public:
  // Loads every weight from `source` (it may be destroyed afterwards) per `placement` and
  // checks its shape against `config`. NOT_FOUND naming a missing tensor;
  // INVALID_ARGUMENT for a shape that disagrees with config.json.
  static absl::StatusOr<std::unique_ptr<GptNeoxModel>> Create(
      const GptNeoxConfig& config, const TensorSource& source,
      const WeightPlacement& placement = {});

  using LanguageModel::Forward;
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& input_ids,
                                        const at::Tensor& token_mask,
                                        KVCache* cache) const override;
  absl::StatusOr<at::Tensor> ForwardPacked(const PackedBatch& batch,
                                              KVCache* cache) const override;
  int64_t vocab_size() const override { return config_.vocab_size; }
  const std::vector<int64_t>& eos_token_ids() const override { return config_.eos_token_ids; }
  const GptNeoxConfig& config() const { return config_; }

 private:
  struct Layer {
    at::Tensor input_norm, input_norm_bias;
    at::Tensor qkv, qkv_bias, dense, dense_bias;  // biases undefined without attention_bias
    at::Tensor post_norm, post_norm_bias;
    at::Tensor up, up_bias, down, down_bias;      // dense_h_to_4h, dense_4h_to_h
  };
  explicit GptNeoxModel(GptNeoxConfig config) : config_(std::move(config)) {}
  at::Tensor LayerNorm(const at::Tensor& x, const at::Tensor& weight,
                          const at::Tensor& bias) const;
  at::Tensor Mlp(const Layer& l, const at::Tensor& x) const;
  // `ids` valid everywhere (padding ids replaced), on the model's device. The logits of
  // every token ([B, T, V]) or, with `output_rows` defined, of those flattened rows
  // ([M, V]).
  at::Tensor ForwardUnchecked(const at::Tensor& ids, const AttentionPlan& plan,
                                 KVCache* cache, const at::Tensor& output_rows = {}) const;

  GptNeoxConfig config_;
  WeightPlacement placement_;
  at::Tensor embed_;  // [V, H]
  std::vector<Layer> layers_;
  at::Tensor final_norm_, final_norm_bias_;  // [H]
  at::Tensor lm_head_;   // [V, H]; the embedding when tied
  at::Tensor inv_freq_;  // [rotary_ndims / 2]; undefined when rotary_ndims is 0
};

// Parses `source.config_json()` (ParseGptNeoxConfig) and creates the model
// (GptNeoxModel::Create); errors as those.
absl::StatusOr<std::unique_ptr<LanguageModel>> LoadGptNeoxModel(const TensorSource& source,
                                                                 const WeightPlacement& placement);

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_MODEL_GPT_NEOX_GPT_NEOX_MODEL_H_
