#include "worker/model/gpt_neox/gpt_neox_model.h"

#include <string>
#include <utility>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/model/config_fields.h"
#include "worker/torch_status.h"

namespace steadyeval {
namespace {

using nlohmann::json;

// An integer token id, or a list of them when `list_ok`; `fallback` when absent or null.
absl::StatusOr<std::vector<int64_t>> TokenIds(const json& doc, const char* field,
                                              int64_t fallback, bool list_ok) {
  if (ConfigFieldAbsent(doc, field)) return std::vector<int64_t>{fallback};
  const json& v = doc[field];
  std::vector<int64_t> ids;
  const absl::Status bad = ConfigFieldError(
      field, list_ok ? "must be a non-negative integer or a list of them"
                     : "must be a non-negative integer");
  if (v.is_array() && list_ok) {
    for (const json& id : v) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0) return bad;
      ids.push_back(id.get<int64_t>());
    }
    return ids;
  }
  if (!v.is_number_integer() || v.get<int64_t>() < 0) return bad;
  return std::vector<int64_t>{v.get<int64_t>()};
}

absl::StatusOr<GptNeoxConfig::Activation> ParseActivation(const json& doc) {
  if (ConfigFieldAbsent(doc, "hidden_act")) return GptNeoxConfig::Activation::kGelu;
  if (!doc["hidden_act"].is_string()) return ConfigFieldError("hidden_act", "must be a string");
  const std::string act = doc["hidden_act"].get<std::string>();
  if (act == "gelu") return GptNeoxConfig::Activation::kGelu;
  // gelu_fast is gelu_new's formula with its constant folded in.
  if (act == "gelu_new" || act == "gelu_fast" || act == "gelu_pytorch_tanh") {
    return GptNeoxConfig::Activation::kGeluTanh;
  }
  if (act == "relu") return GptNeoxConfig::Activation::kRelu;
  return absl::UnimplementedError(absl::StrCat(
      "config.json: hidden_act '", act,
      "' is not supported for gpt_neox (supported: gelu, gelu_new, gelu_fast, "
      "gelu_pytorch_tanh, relu)"));
}

// Rotary settings. Older configs: rotary_pct, rotary_emb_base and rope_scaling null or
// {"type": ..., "factor": ...}. Newer transformers fold them into `rope_parameters` (or a
// `rope_scaling` given in its place) as rope_theta / partial_rotary_factor, which take
// precedence there over the top-level names.
absl::Status ParseRotary(const json& doc, GptNeoxConfig& c) {
  ASSIGN_OR_RETURN(c.rotary_pct, ConfigPositiveNumber(doc, "rotary_pct", 0.25, /*max=*/1.0));
  ASSIGN_OR_RETURN(double rope_theta, ConfigPositiveNumber(doc, "rope_theta", 10000.0));
  ASSIGN_OR_RETURN(c.rotary_emb_base, ConfigPositiveNumber(doc, "rotary_emb_base", rope_theta));
  const char* key =
      !ConfigFieldAbsent(doc, "rope_parameters") ? "rope_parameters" : "rope_scaling";
  if (!ConfigFieldAbsent(doc, key)) {
    const json& rope = doc[key];
    if (!rope.is_object()) return ConfigFieldError(key, "must be an object or null");
    const char* kind_key = !ConfigFieldAbsent(rope, "rope_type") ? "rope_type" : "type";
    if (!ConfigFieldAbsent(rope, kind_key)) {
      if (!rope[kind_key].is_string()) {
        return ConfigFieldError(absl::StrCat(key, ".", kind_key), "must be a string");
      }
      const std::string kind = rope[kind_key].get<std::string>();
      if (kind != "default") {
        return absl::UnimplementedError(absl::StrCat(
            "config.json: ", key, " type '", kind,
            "' is not supported for gpt_neox (only unscaled rotary embeddings)"));
      }
    }
    ASSIGN_OR_RETURN(c.rotary_emb_base,
                     ConfigPositiveNumber(rope, "rope_theta", c.rotary_emb_base, /*max=*/0,
                                          absl::StrCat(key, ".rope_theta")));
    ASSIGN_OR_RETURN(c.rotary_pct,
                     ConfigPositiveNumber(rope, "partial_rotary_factor", c.rotary_pct,
                                          /*max=*/1.0,
                                          absl::StrCat(key, ".partial_rotary_factor")));
  }
  // int() of the product as Python computes it (double, truncation).
  c.rotary_ndims = static_cast<int64_t>(static_cast<double>(c.head_dim) * c.rotary_pct);
  if (c.rotary_ndims % 2 != 0) {
    return ConfigFieldError("rotary_pct",
                            absl::StrCat("gives an odd number of rotary dims (", c.rotary_ndims,
                                         " of head_dim ", c.head_dim,
                                         "); rotate-half RoPE needs an even one"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GptNeoxConfig> ParseGptNeoxConfig(absl::string_view config_json) {
  ASSIGN_OR_RETURN(json doc, ParseConfigObject(config_json));
  ASSIGN_OR_RETURN(const std::string type, ConfigModelType(doc));
  if (type != "gpt_neox") {
    return absl::UnimplementedError(
        absl::StrCat("config.json: model_type '", type, "' is not gpt_neox"));
  }
  GptNeoxConfig c;
  ASSIGN_OR_RETURN(c.hidden_size, ConfigPositiveInt(doc, "hidden_size"));
  ASSIGN_OR_RETURN(c.intermediate_size, ConfigPositiveInt(doc, "intermediate_size"));
  ASSIGN_OR_RETURN(c.num_hidden_layers, ConfigPositiveInt(doc, "num_hidden_layers"));
  ASSIGN_OR_RETURN(c.num_attention_heads, ConfigPositiveInt(doc, "num_attention_heads"));
  if (c.hidden_size % c.num_attention_heads != 0) {
    return ConfigFieldError("hidden_size",
                            absl::StrCat("(", c.hidden_size,
                                         ") must be a multiple of num_attention_heads (",
                                         c.num_attention_heads, ")"));
  }
  c.head_dim = c.hidden_size / c.num_attention_heads;
  ASSIGN_OR_RETURN(c.vocab_size, ConfigPositiveInt(doc, "vocab_size"));
  RETURN_IF_ERROR(ParseRotary(doc, c));
  ASSIGN_OR_RETURN(c.layer_norm_eps, ConfigPositiveNumber(doc, "layer_norm_eps", 1e-5));
  ASSIGN_OR_RETURN(c.use_parallel_residual, ConfigBool(doc, "use_parallel_residual", true));
  ASSIGN_OR_RETURN(c.hidden_act, ParseActivation(doc));
  ASSIGN_OR_RETURN(c.tie_word_embeddings, ConfigBool(doc, "tie_word_embeddings", false));
  ASSIGN_OR_RETURN(c.attention_bias, ConfigBool(doc, "attention_bias", true));
  // transformers' GPTNeoXConfig defaults: bos_token_id 0, eos_token_id 2.
  ASSIGN_OR_RETURN(std::vector<int64_t> bos, TokenIds(doc, "bos_token_id", 0, false));
  c.bos_token_id = bos.front();
  ASSIGN_OR_RETURN(c.eos_token_ids, TokenIds(doc, "eos_token_id", 2, true));
  if (!ConfigFieldAbsent(doc, "torch_dtype")) {
    if (!doc["torch_dtype"].is_string()) {
      return ConfigFieldError("torch_dtype", "must be a string");
    }
    c.torch_dtype = doc["torch_dtype"].get<std::string>();
  }
  ASSIGN_OR_RETURN(c.max_position_embeddings,
                   ConfigPositiveInt(doc, "max_position_embeddings", 0));
  return c;
}

absl::StatusOr<std::unique_ptr<GptNeoxModel>> GptNeoxModel::Create(
    const GptNeoxConfig& config, const TensorSource& source, const WeightPlacement& placement) {
  std::unique_ptr<GptNeoxModel> model(new GptNeoxModel(config));
  model->placement_ = placement;
  auto load = [&](const std::string& name, std::vector<int64_t> shape) {
    return LoadWeight(source, name, shape, placement);
  };
  const int64_t H = config.hidden_size, I = config.intermediate_size, V = config.vocab_size;
  at::NoGradGuard no_grad;
  ASSIGN_OR_RETURN(model->embed_, load("gpt_neox.embed_in.weight", {V, H}));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("gpt_neox.layers.", i, ".");
    Layer l;
    ASSIGN_OR_RETURN(l.input_norm, load(p + "input_layernorm.weight", {H}));
    ASSIGN_OR_RETURN(l.input_norm_bias, load(p + "input_layernorm.bias", {H}));
    ASSIGN_OR_RETURN(l.qkv, load(p + "attention.query_key_value.weight", {3 * H, H}));
    ASSIGN_OR_RETURN(l.dense, load(p + "attention.dense.weight", {H, H}));
    if (config.attention_bias) {
      ASSIGN_OR_RETURN(l.qkv_bias, load(p + "attention.query_key_value.bias", {3 * H}));
      ASSIGN_OR_RETURN(l.dense_bias, load(p + "attention.dense.bias", {H}));
    }
    ASSIGN_OR_RETURN(l.post_norm, load(p + "post_attention_layernorm.weight", {H}));
    ASSIGN_OR_RETURN(l.post_norm_bias, load(p + "post_attention_layernorm.bias", {H}));
    ASSIGN_OR_RETURN(l.up, load(p + "mlp.dense_h_to_4h.weight", {I, H}));
    ASSIGN_OR_RETURN(l.up_bias, load(p + "mlp.dense_h_to_4h.bias", {I}));
    ASSIGN_OR_RETURN(l.down, load(p + "mlp.dense_4h_to_h.weight", {H, I}));
    ASSIGN_OR_RETURN(l.down_bias, load(p + "mlp.dense_4h_to_h.bias", {H}));
    model->layers_.push_back(std::move(l));
  }
  ASSIGN_OR_RETURN(model->final_norm_, load("gpt_neox.final_layer_norm.weight", {H}));
  ASSIGN_OR_RETURN(model->final_norm_bias_, load("gpt_neox.final_layer_norm.bias", {H}));
  if (config.tie_word_embeddings) {
    model->lm_head_ = model->embed_;
  } else {
    ASSIGN_OR_RETURN(model->lm_head_, load("embed_out.weight", {V, H}));
  }
  if (config.rotary_ndims > 0) {
    RETURN_IF_ERROR(GuardTorch("gpt_neox: rope tables", [&]() -> absl::Status {
      model->inv_freq_ = FloatTensor(RopeInvFreq(config.rotary_ndims, config.rotary_emb_base),
                                     placement.device);
      return absl::OkStatus();
    }));
  }
  return model;
}

at::Tensor GptNeoxModel::LayerNorm(const at::Tensor& x, const at::Tensor& weight,
                                      const at::Tensor& bias) const {
  return LayerNormFloat32(x, weight, bias, config_.layer_norm_eps);
}

at::Tensor GptNeoxModel::Mlp(const Layer& l, const at::Tensor& x) const {
  at::Tensor h = Linear(x, l.up, l.up_bias);
  switch (config_.hidden_act) {
    case GptNeoxConfig::Activation::kGelu:
      h = at::gelu(h);
      break;
    case GptNeoxConfig::Activation::kGeluTanh:
      h = at::gelu(h, "tanh");
      break;
    case GptNeoxConfig::Activation::kRelu:
      h = at::relu(h);
      break;
  }
  return Linear(h, l.down, l.down_bias);
}

absl::StatusOr<at::Tensor> GptNeoxModel::Forward(const at::Tensor& input_ids,
                                                    const at::Tensor& token_mask,
                                                    KVCache* cache) const {
  return RunForward(
      "gpt_neox", input_ids, token_mask, cache, config_.vocab_size, placement_.device,
      [&](const ForwardInputs& in, const AttentionPlan& plan) -> absl::StatusOr<at::Tensor> {
        return ForwardUnchecked(in.ids, plan, cache);
      });
}

absl::StatusOr<at::Tensor> GptNeoxModel::ForwardPacked(const PackedBatch& batch,
                                                          KVCache* cache) const {
  return RunPackedForward(
      "gpt_neox", batch, cache, config_.vocab_size, placement_.device,
      [&](const ForwardInputs& in, const AttentionPlan& plan) -> absl::StatusOr<at::Tensor> {
        return ForwardUnchecked(in.ids, plan, cache, batch.outputs);
      });
}

at::Tensor GptNeoxModel::ForwardUnchecked(const at::Tensor& ids,
                                             const AttentionPlan& plan, KVCache* cache,
    const at::Tensor& output_rows) const {
  const int64_t B = plan.batch, T = plan.tokens;
  const int64_t nh = config_.num_attention_heads, hd = config_.head_dim;
  const int64_t rot = config_.rotary_ndims;
  BeginCache(cache, layers_.size());

  at::Tensor x = embed_.index_select(0, ids.reshape({-1})).view({B, T, -1});
  RotaryTables rope;
  if (rot > 0) rope = RopeTables(plan.positions, inv_freq_);
  // RoPE on the first `rot` dims of [B, nh, T, hd]; the rest pass through.
  auto rotate = [&](const at::Tensor& t) {
    if (rot == 0) return t;
    if (rot == hd) return ApplyRope(t, rope);
    return at::cat({ApplyRope(t.narrow(-1, 0, rot), rope), t.narrow(-1, rot, hd - rot)}, -1);
  };

  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    // Per head: [q | k | v] of hd each.
    const at::Tensor qkv =
        Linear(LayerNorm(x, l.input_norm, l.input_norm_bias), l.qkv, l.qkv_bias)
            .view({B, T, nh, 3 * hd});
    at::Tensor q = rotate(qkv.narrow(-1, 0, hd).transpose(1, 2));
    at::Tensor k = rotate(qkv.narrow(-1, hd, hd).transpose(1, 2));
    at::Tensor v = qkv.narrow(-1, 2 * hd, hd).transpose(1, 2);
    if (cache != nullptr) {
      k = AppendSlots(cache->keys()[i], plan.past, k);
      v = AppendSlots(cache->values()[i], plan.past, v);
    }
    const at::Tensor attn = Linear(CausalAttention(q, k, v, plan), l.dense, l.dense_bias);
    if (config_.use_parallel_residual) {
      x = x + attn + Mlp(l, LayerNorm(x, l.post_norm, l.post_norm_bias));
    } else {
      x = x + attn;
      x = x + Mlp(l, LayerNorm(x, l.post_norm, l.post_norm_bias));
    }
  }
  FinishCache(cache, plan);
  return Linear(LayerNorm(OutputRows(x, output_rows), final_norm_, final_norm_bias_), lm_head_, {})
      .to(at::kCPU, at::kFloat);
}

absl::StatusOr<std::unique_ptr<LanguageModel>> LoadGptNeoxModel(const TensorSource& source,
                                                                 const WeightPlacement& placement) {
  auto config = ParseGptNeoxConfig(source.config_json());
  if (!config.ok()) return Annotate(config.status(), source.label());
  ASSIGN_OR_RETURN(std::unique_ptr<GptNeoxModel> model,
                   GptNeoxModel::Create(*config, source, placement));
  return std::unique_ptr<LanguageModel>(std::move(model));
}

}  // namespace steadyeval
