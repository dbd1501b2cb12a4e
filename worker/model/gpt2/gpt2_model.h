// The GPT-2 family (`model_type` gpt2, Hugging Face GPT2LMHeadModel layout) forward pass in
// libtorch.
//
// Computes the published architecture (MODELS.md, checked against transformers'
// modeling_gpt2.py): token + learned absolute position embeddings, pre-LayerNorm blocks
// (LayerNorm in float32), "Conv1D" projections stored [in, out] (transposed once at load,
// so y = x W + b runs as a Linear), c_attn's output split along the last axis into q, k, v
// of n_embd each and then into heads, causal softmax attention scaled by 1/sqrt(head_dim)
// (none when scale_attn_weights is false) and by 1/(layer + 1) when
// scale_attn_by_inverse_layer_idx, MLP with gelu_new (tanh approximation), exact gelu or
// relu, a final LayerNorm and an LM head tied to the token embedding unless
// tie_word_embeddings is false. reorder_and_upcast_attn only changes the order of float
// operations in transformers (and the dtype of the scores, always float32 here): ignored.
//
// Tensor names carry the `transformer.` prefix or not (both exist in the wild); the
// checkpoint's own spelling is detected from `wte.weight`. An untied head is
// `lm_head.weight` ([vocab, n_embd]) either way. The non-parameter buffers
// `h.N.attn.bias` / `h.N.attn.masked_bias` of older checkpoints are neither needed nor
// read.
//
// Positions: a real token's position is the number of real tokens before it in its row
// (language_model.h), so a row holds at most n_positions real tokens; Forward returns
// INVALID_ARGUMENT naming n_positions for more, before touching the cache.
//
// Thread-safety: see LanguageModel.
#ifndef STEADYEVAL_WORKER_MODEL_GPT2_GPT2_MODEL_H_
#define STEADYEVAL_WORKER_MODEL_GPT2_GPT2_MODEL_H_

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

// The MLP nonlinearity (`activation_function`).
enum class Gpt2Activation {
  kGeluTanh,  // gelu_new, gelu_pytorch_tanh, gelu_fast: 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))
  kGelu,      // gelu: exact, 0.5·x·(1 + erf(x/√2))
  kRelu,      // relu
};

// config.json of a GPT-2 checkpoint, with transformers' GPT2Config defaults for the
// optional fields.
struct Gpt2Config {
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_positions = 0;
  int64_t n_inner = 0;  // 4·n_embd when absent or null
  int64_t vocab_size = 0;
  double layer_norm_epsilon = 1e-5;
  Gpt2Activation activation = Gpt2Activation::kGeluTanh;  // "gelu_new" by default
  bool scale_attn_weights = true;
  bool scale_attn_by_inverse_layer_idx = false;
  bool tie_word_embeddings = true;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // eos_token_id given as an int or a list
  std::string torch_dtype;             // as stored ("float32", ...); informational

  int64_t head_dim() const { return n_embd / n_head; }
};

// Parses a gpt2 config.json. Required: n_embd, n_layer, n_head, n_positions, vocab_size
// (positive integers; n_embd a multiple of n_head). INVALID_ARGUMENT naming the field for
// a missing or ill-typed one (or text that is not a JSON object); UNIMPLEMENTED naming
// the value for another activation_function or a model_type other than gpt2.
// Thread-safe (pure function).
absl::StatusOr<Gpt2Config> ParseGpt2Config(absl::string_view config_json);

class Gpt2Model : public LanguageModel {
 public:
  // Loads every weight from `source` (it may be destroyed afterwards) and checks its shape
  // against `config`. NOT_FOUND naming a missing tensor (under the spelling the
  // checkpoint uses); INVALID_ARGUMENT for a shape that disagrees with config.json.
  static absl::StatusOr<std::unique_ptr<Gpt2Model>> Create(
      const Gpt2Config& config, const TensorSource& source,
      const WeightPlacement& placement = {});

  using LanguageModel::Forward;
  // Padded batches and the cache as LanguageModel describes. Also INVALID_ARGUMENT
  // (naming n_positions, cache unchanged) when a row would hold more than n_positions
  // real tokens.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& input_ids,
                                        const at::Tensor& token_mask,
                                        KVCache* cache) const override;
  absl::StatusOr<at::Tensor> ForwardPacked(const PackedBatch& batch,
                                              KVCache* cache) const override;
  int64_t vocab_size() const override { return config_.vocab_size; }
  const std::vector<int64_t>& eos_token_ids() const override { return config_.eos_token_ids; }
  const Gpt2Config& config() const { return config_; }

 private:
  struct Layer {
    at::Tensor ln1_weight, ln1_bias;    // [H] float32
    at::Tensor attn, attn_bias;         // [3H, H] (Linear layout) / [3H]
    at::Tensor attn_proj, attn_proj_bias;  // [H, H] / [H]
    at::Tensor ln2_weight, ln2_bias;    // [H] float32
    at::Tensor fc, fc_bias;             // [I, H] / [I]
    at::Tensor mlp_proj, mlp_proj_bias; // [H, I] / [H]
    double query_scale = 1.0;  // extra factor on q beyond CausalAttention's 1/sqrt(hd)
  };
  explicit Gpt2Model(Gpt2Config config) : config_(std::move(config)) {}
  at::Tensor LayerNorm(const at::Tensor& x, const at::Tensor& weight,
                          const at::Tensor& bias) const;
  at::Tensor Activation(const at::Tensor& x) const;
  // INVALID_ARGUMENT (naming n_positions) when a sequence would pass the learned positions.
  absl::Status CheckPositions(const AttentionPlan& plan) const;
  // `ids` valid everywhere (padding ids replaced), on the model's device. The logits of
  // every token ([B, T, V]) or, with `output_rows` defined, of those flattened rows
  // ([M, V]).
  at::Tensor ForwardUnchecked(const at::Tensor& ids, const AttentionPlan& plan,
                                 KVCache* cache, const at::Tensor& output_rows = {}) const;

  Gpt2Config config_;
  WeightPlacement placement_;
  at::Tensor wte_;                  // [V, H]
  at::Tensor wpe_;                  // [n_positions, H]
  std::vector<Layer> layers_;
  at::Tensor ln_f_weight_, ln_f_bias_;  // [H] float32
  at::Tensor lm_head_;              // [V, H]; wte_ when tied
};

// Parses `source`'s config.json and builds the model (for LoadLanguageModel's dispatch on
// model_type "gpt2"). Errors as ParseGpt2Config and Gpt2Model::Create, prefixed with the
// source's label for config errors.
absl::StatusOr<std::unique_ptr<LanguageModel>> LoadGpt2Model(const TensorSource& source,
                                                             const WeightPlacement& placement);

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_MODEL_GPT2_GPT2_MODEL_H_
