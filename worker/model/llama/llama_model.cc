#include "worker/model/llama/llama_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "worker/model/model_common.h"
#include "worker/torch_status.h"

namespace steadyeval {
namespace {

constexpr double kPi = 3.14159265358979323846;

}  // namespace

at::Tensor LlamaModel::InvFreqForLength(int64_t length) const {
  const int64_t max_positions = config_.max_position_embeddings;
  if (config_.rope_scaling.kind != RopeScaling::Kind::kDynamic || length <= max_positions) {
    return inv_freq_;
  }
  // transformers' _compute_dynamic_ntk_parameters:
  // base' = theta * (factor * L / M - (factor - 1)) ^ (hd / (hd - 2)).
  const double factor = config_.rope_scaling.factor;
  const double hd = static_cast<double>(config_.head_dim);
  const double base =
      config_.rope_theta *
      std::pow(factor * static_cast<double>(length) / static_cast<double>(max_positions) -
                   (factor - 1.0),
               hd / (hd - 2.0));
  return FloatTensor(RopeInvFreq(config_.head_dim, base), inv_freq_.device());
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Create(
    const LlamaConfig& config, const TensorSource& reader, const WeightPlacement& placement) {
  std::unique_ptr<LlamaModel> model(new LlamaModel(config));
  model->placement_ = placement;
  auto load = [&](const std::string& name, std::vector<int64_t> shape) {
    return LoadWeight(reader, name, shape, placement);
  };
  const int64_t H = config.hidden_size, I = config.intermediate_size, V = config.vocab_size;
  const int64_t q_dim = config.num_attention_heads * config.head_dim;
  const int64_t kv_dim = config.num_key_value_heads * config.head_dim;
  at::NoGradGuard no_grad;
  ASSIGN_OR_RETURN(model->embed_, load("model.embed_tokens.weight", {V, H}));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    Layer l;
    ASSIGN_OR_RETURN(l.input_norm, load(p + "input_layernorm.weight", {H}));
    ASSIGN_OR_RETURN(l.q, load(p + "self_attn.q_proj.weight", {q_dim, H}));
    ASSIGN_OR_RETURN(l.k, load(p + "self_attn.k_proj.weight", {kv_dim, H}));
    ASSIGN_OR_RETURN(l.v, load(p + "self_attn.v_proj.weight", {kv_dim, H}));
    ASSIGN_OR_RETURN(l.o, load(p + "self_attn.o_proj.weight", {H, q_dim}));
    if (config.qkv_bias) {
      ASSIGN_OR_RETURN(l.q_bias, load(p + "self_attn.q_proj.bias", {q_dim}));
      ASSIGN_OR_RETURN(l.k_bias, load(p + "self_attn.k_proj.bias", {kv_dim}));
      ASSIGN_OR_RETURN(l.v_bias, load(p + "self_attn.v_proj.bias", {kv_dim}));
    }
    if (config.o_bias) {
      ASSIGN_OR_RETURN(l.o_bias, load(p + "self_attn.o_proj.bias", {H}));
    }
    ASSIGN_OR_RETURN(l.post_norm, load(p + "post_attention_layernorm.weight", {H}));
    ASSIGN_OR_RETURN(l.gate, load(p + "mlp.gate_proj.weight", {I, H}));
    ASSIGN_OR_RETURN(l.up, load(p + "mlp.up_proj.weight", {I, H}));
    ASSIGN_OR_RETURN(l.down, load(p + "mlp.down_proj.weight", {H, I}));
    model->layers_.push_back(std::move(l));
  }
  ASSIGN_OR_RETURN(model->norm_, load("model.norm.weight", {H}));
  if (config.tie_word_embeddings) {
    model->lm_head_ = model->embed_;
  } else {
    ASSIGN_OR_RETURN(model->lm_head_, load("lm_head.weight", {V, H}));
  }
  // Static scaling (linear, llama3) is folded into inv_freq_ here; dynamic NTK scaling
  // depends on the sequence length and is applied per forward (InvFreqForLength).
  std::vector<double> inv_freq = RopeInvFreq(config.head_dim, config.rope_theta);
  const RopeScaling& scaling = config.rope_scaling;
  if (scaling.kind == RopeScaling::Kind::kLinear) {
    for (double& f : inv_freq) f /= scaling.factor;
  } else if (scaling.kind == RopeScaling::Kind::kLlama3) {
    // transformers' _compute_llama3_parameters: wavelengths shorter than
    // original_max / high_freq_factor keep their frequency, longer than
    // original_max / low_freq_factor are divided by factor, and in between blend
    // smoothly with s = (original_max / wavelen - low) / (high - low).
    const double original_max = static_cast<double>(scaling.original_max_position_embeddings);
    const double low_freq_wavelen = original_max / scaling.low_freq_factor;
    const double high_freq_wavelen = original_max / scaling.high_freq_factor;
    for (double& f : inv_freq) {
      const double wavelen = 2.0 * kPi / f;
      if (wavelen > low_freq_wavelen) {
        f /= scaling.factor;
      } else if (wavelen >= high_freq_wavelen) {
        const double s = (original_max / wavelen - scaling.low_freq_factor) /
                         (scaling.high_freq_factor - scaling.low_freq_factor);
        f = (1.0 - s) * f / scaling.factor + s * f;
      }
    }
  }
  RETURN_IF_ERROR(GuardTorch("llama: rope tables", [&]() -> absl::Status {
    model->inv_freq_ = FloatTensor(inv_freq, placement.device);
    return absl::OkStatus();
  }));
  return model;
}

at::Tensor LlamaModel::RmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
  // In float32 whatever the weights' dtype (what transformers' LlamaRMSNorm does).
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  return (x32 * at::rsqrt(variance + config_.rms_norm_eps)).to(x.scalar_type()) * weight;
}

absl::StatusOr<at::Tensor> LlamaModel::Forward(const at::Tensor& input_ids,
                                                  const at::Tensor& token_mask,
                                                  KVCache* cache) const {
  return RunForward(
      "llama", input_ids, token_mask, cache, config_.vocab_size, placement_.device,
      [&](const ForwardInputs& in, const AttentionPlan& plan) -> absl::StatusOr<at::Tensor> {
        return ForwardChecked(in, plan, cache);
      });
}

absl::StatusOr<at::Tensor> LlamaModel::ForwardPacked(const PackedBatch& batch,
                                                        KVCache* cache) const {
  return RunPackedForward(
      "llama", batch, cache, config_.vocab_size, placement_.device,
      [&](const ForwardInputs& in, const AttentionPlan& plan) -> absl::StatusOr<at::Tensor> {
        return ForwardChecked(in, plan, cache, batch.outputs);
      });
}

absl::StatusOr<at::Tensor> LlamaModel::ForwardForTraining(const at::Tensor& input_ids) const {
  return RunForward(
      "llama", input_ids, at::Tensor(), /*cache=*/nullptr, config_.vocab_size,
      placement_.device,
      [&](const ForwardInputs& in, const AttentionPlan& plan) -> absl::StatusOr<at::Tensor> {
        return ForwardChecked(in, plan, /*cache=*/nullptr);
      },
      Autograd::kOn);
}

absl::StatusOr<at::Tensor> LlamaModel::ForwardChecked(const ForwardInputs& in,
                                                         const AttentionPlan& plan,
                                                         KVCache* cache,
                                                         const at::Tensor& output_rows) const {
  if (config_.sliding_window) {
    // The longest row in real tokens (positions count only those).
    const int64_t longest = plan.Longest();
    if (longest > *config_.sliding_window) {
      return absl::UnimplementedError(absl::StrCat(
          "llama forward: sequence of ", longest, " tokens exceeds mistral sliding_window ",
          *config_.sliding_window, " (sliding-window attention is not implemented)"));
    }
  }
  return ForwardUnchecked(in.ids, plan, cache, output_rows);
}

std::vector<std::pair<std::string, at::Tensor>> LlamaModel::NamedWeights() const {
  std::vector<std::pair<std::string, at::Tensor>> weights;
  auto add = [&](std::string name, const at::Tensor& t) {
    if (t.defined()) weights.emplace_back(std::move(name), t);
  };
  add("model.embed_tokens.weight", embed_);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    add(p + "input_layernorm.weight", l.input_norm);
    add(p + "self_attn.q_proj.weight", l.q);
    add(p + "self_attn.k_proj.weight", l.k);
    add(p + "self_attn.v_proj.weight", l.v);
    add(p + "self_attn.o_proj.weight", l.o);
    add(p + "self_attn.q_proj.bias", l.q_bias);
    add(p + "self_attn.k_proj.bias", l.k_bias);
    add(p + "self_attn.v_proj.bias", l.v_bias);
    add(p + "self_attn.o_proj.bias", l.o_bias);
    add(p + "post_attention_layernorm.weight", l.post_norm);
    add(p + "mlp.gate_proj.weight", l.gate);
    add(p + "mlp.up_proj.weight", l.up);
    add(p + "mlp.down_proj.weight", l.down);
  }
  add("model.norm.weight", norm_);
  if (!config_.tie_word_embeddings) add("lm_head.weight", lm_head_);
  return weights;
}

at::Tensor LlamaModel::ForwardUnchecked(const at::Tensor& ids, const AttentionPlan& plan,
                                           KVCache* cache, const at::Tensor& output_rows) const {
  const int64_t B = plan.batch, T = plan.tokens;
  const int64_t nh = config_.num_attention_heads, nkv = config_.num_key_value_heads;
  const int64_t hd = config_.head_dim;
  BeginCache(cache, layers_.size());

  at::Tensor x = embed_.index_select(0, ids.reshape({-1})).view({B, T, -1});

  at::Tensor inv_freq = config_.rope_scaling.kind == RopeScaling::Kind::kDynamic
                            ? InvFreqForLength(plan.Longest())
                            : inv_freq_;
  if (plan.key_mask.defined() && config_.rope_scaling.kind == RopeScaling::Kind::kDynamic) {
    // Dynamic NTK scaling uses each row's own length in real tokens (what one unpadded
    // forward of that row computes), so a row does not depend on its batchmates.
    const at::Tensor lengths = plan.RowLengths().to(at::kCPU);
    std::vector<at::Tensor> rows;
    for (int64_t b = 0; b < B; ++b) rows.push_back(InvFreqForLength(lengths[b].item<int64_t>()));
    inv_freq = at::stack(rows).unsqueeze(1);  // [B, 1, hd/2]
  }
  const RotaryTables rope = RopeTables(plan.positions, inv_freq);

  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    at::Tensor h = RmsNorm(x, l.input_norm);
    at::Tensor q = Linear(h, l.q, l.q_bias).view({B, T, nh, hd}).transpose(1, 2);
    at::Tensor k = Linear(h, l.k, l.k_bias).view({B, T, nkv, hd}).transpose(1, 2);
    at::Tensor v = Linear(h, l.v, l.v_bias).view({B, T, nkv, hd}).transpose(1, 2);
    q = ApplyRope(q, rope);
    k = ApplyRope(k, rope);
    if (cache != nullptr) {
      k = AppendSlots(cache->keys()[i], plan.past, k);
      v = AppendSlots(cache->values()[i], plan.past, v);
    }
    x = x + Linear(CausalAttention(q, k, v, plan), l.o, l.o_bias);
    at::Tensor h2 = RmsNorm(x, l.post_norm);
    x = x + Linear(at::silu(Linear(h2, l.gate, {})) * Linear(h2, l.up, {}), l.down, {});
  }
  FinishCache(cache, plan);
  return Linear(RmsNorm(OutputRows(x, output_rows), norm_), lm_head_, {})
      .to(at::kCPU, at::kFloat);
}

}  // namespace steadyeval
