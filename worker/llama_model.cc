#include "worker/llama_model.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "worker/torch_status.h"

namespace steadyeval {
namespace {

std::string ShapeString(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape.begin(), shape.end(), ", "), "]");
}

// Loads `name` and checks its shape.
absl::StatusOr<torch::Tensor> LoadWeight(const TensorSource& reader, const std::string& name,
                                         std::vector<int64_t> shape) {
  ASSIGN_OR_RETURN(torch::Tensor t, reader.Tensor(name));
  if (t.sizes() != c10::IntArrayRef(shape)) {
    return absl::InvalidArgumentError(absl::StrCat(
        reader.label(), ": tensor '", name, "' has shape ", ShapeString(t.sizes()),
        " but config.json implies ", ShapeString(shape)));
  }
  return t;
}

torch::Tensor RotateHalf(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return torch::nn::functional::linear(x, w, b.defined() ? b : torch::Tensor());
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Create(const LlamaConfig& config,
                                                               const TensorSource& reader) {
  std::unique_ptr<LlamaModel> model(new LlamaModel(config));
  const int64_t H = config.hidden_size, I = config.intermediate_size, V = config.vocab_size;
  const int64_t q_dim = config.num_attention_heads * config.head_dim;
  const int64_t kv_dim = config.num_key_value_heads * config.head_dim;
  torch::NoGradGuard no_grad;
  ASSIGN_OR_RETURN(model->embed_, LoadWeight(reader, "model.embed_tokens.weight", {V, H}));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    Layer l;
    ASSIGN_OR_RETURN(l.input_norm, LoadWeight(reader, p + "input_layernorm.weight", {H}));
    ASSIGN_OR_RETURN(l.q, LoadWeight(reader, p + "self_attn.q_proj.weight", {q_dim, H}));
    ASSIGN_OR_RETURN(l.k, LoadWeight(reader, p + "self_attn.k_proj.weight", {kv_dim, H}));
    ASSIGN_OR_RETURN(l.v, LoadWeight(reader, p + "self_attn.v_proj.weight", {kv_dim, H}));
    ASSIGN_OR_RETURN(l.o, LoadWeight(reader, p + "self_attn.o_proj.weight", {H, q_dim}));
    if (config.qkv_bias) {
      ASSIGN_OR_RETURN(l.q_bias, LoadWeight(reader, p + "self_attn.q_proj.bias", {q_dim}));
      ASSIGN_OR_RETURN(l.k_bias, LoadWeight(reader, p + "self_attn.k_proj.bias", {kv_dim}));
      ASSIGN_OR_RETURN(l.v_bias, LoadWeight(reader, p + "self_attn.v_proj.bias", {kv_dim}));
    }
    if (config.o_bias) {
      ASSIGN_OR_RETURN(l.o_bias, LoadWeight(reader, p + "self_attn.o_proj.bias", {H}));
    }
    ASSIGN_OR_RETURN(l.post_norm, LoadWeight(reader, p + "post_attention_layernorm.weight", {H}));
    ASSIGN_OR_RETURN(l.gate, LoadWeight(reader, p + "mlp.gate_proj.weight", {I, H}));
    ASSIGN_OR_RETURN(l.up, LoadWeight(reader, p + "mlp.up_proj.weight", {I, H}));
    ASSIGN_OR_RETURN(l.down, LoadWeight(reader, p + "mlp.down_proj.weight", {H, I}));
    model->layers_.push_back(std::move(l));
  }
  ASSIGN_OR_RETURN(model->norm_, LoadWeight(reader, "model.norm.weight", {H}));
  if (config.tie_word_embeddings) {
    model->lm_head_ = model->embed_;
  } else {
    ASSIGN_OR_RETURN(model->lm_head_, LoadWeight(reader, "lm_head.weight", {V, H}));
  }
  // inv_freq[j] = theta^(-2j/hd), computed in double and rounded once.
  const int64_t half = config.head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int64_t j = 0; j < half; ++j) {
    inv_freq[j] = static_cast<float>(
        std::pow(config.rope_theta, -2.0 * static_cast<double>(j) / config.head_dim));
  }
  RETURN_IF_ERROR(GuardTorch("llama: rope tables", [&]() -> absl::Status {
    model->inv_freq_ = torch::tensor(inv_freq, torch::kFloat32);
    return absl::OkStatus();
  }));
  return model;
}

torch::Tensor LlamaModel::RmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const {
  torch::Tensor variance = x.pow(2).mean(-1, /*keepdim=*/true);
  return x * torch::rsqrt(variance + config_.rms_norm_eps) * weight;
}

absl::StatusOr<torch::Tensor> LlamaModel::Forward(const torch::Tensor& input_ids,
                                                  KVCache* cache) const {
  if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.scalar_type() != torch::kInt64 ||
      input_ids.size(1) == 0 || input_ids.size(0) == 0) {
    return absl::InvalidArgumentError(
        "llama forward: input_ids must be a non-empty [batch, tokens] int64 tensor");
  }
  const int64_t past = cache != nullptr ? cache->length() : 0;
  if (cache != nullptr && !cache->empty() && cache->keys().front().size(0) != input_ids.size(0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "llama forward: batch size ", input_ids.size(0), " does not match the cache's ",
        cache->keys().front().size(0)));
  }
  if (config_.sliding_window && past + input_ids.size(1) > *config_.sliding_window) {
    return absl::UnimplementedError(absl::StrCat(
        "llama forward: sequence of ", past + input_ids.size(1),
        " tokens exceeds mistral sliding_window ", *config_.sliding_window,
        " (sliding-window attention is not implemented)"));
  }
  return GuardTorch("llama forward", [&]() -> absl::StatusOr<torch::Tensor> {
    c10::InferenceMode inference;
    torch::Tensor ids = input_ids.to(torch::kCPU);
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "llama forward: token id ", lo < 0 ? lo : hi, " is outside the vocabulary [0, ",
          config_.vocab_size, ")"));
    }
    if (cache == nullptr) return ForwardUnchecked(ids, nullptr);
    KVCache updated = cache->Fork();  // the caller's cache changes only on success
    torch::Tensor logits = ForwardUnchecked(ids, &updated);
    *cache = std::move(updated);
    return logits;
  });
}

torch::Tensor LlamaModel::ForwardUnchecked(const torch::Tensor& ids, KVCache* cache) const {
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t nh = config_.num_attention_heads, nkv = config_.num_key_value_heads;
  const int64_t hd = config_.head_dim;
  const int64_t past = cache != nullptr ? cache->length() : 0;
  const int64_t total = past + T;
  if (cache != nullptr && cache->empty()) {
    cache->keys().assign(layers_.size(), torch::Tensor());
    cache->values().assign(layers_.size(), torch::Tensor());
  }

  torch::Tensor x = embed_.index_select(0, ids.reshape({-1})).view({B, T, -1});

  torch::Tensor positions = torch::arange(past, total, torch::kFloat32);
  torch::Tensor angles = torch::outer(positions, inv_freq_);  // [T, hd/2]
  torch::Tensor emb = torch::cat({angles, angles}, -1);        // [T, hd]
  torch::Tensor cos = emb.cos(), sin = emb.sin();
  // Query t (absolute position past + t) sees keys 0..past + t.
  torch::Tensor mask =
      torch::full({T, total}, -std::numeric_limits<float>::infinity(), torch::kFloat32)
          .triu(past + 1);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));

  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    torch::Tensor h = RmsNorm(x, l.input_norm);
    torch::Tensor q = Linear(h, l.q, l.q_bias).view({B, T, nh, hd}).transpose(1, 2);
    torch::Tensor k = Linear(h, l.k, l.k_bias).view({B, T, nkv, hd}).transpose(1, 2);
    torch::Tensor v = Linear(h, l.v, l.v_bias).view({B, T, nkv, hd}).transpose(1, 2);
    q = q * cos + RotateHalf(q) * sin;
    k = k * cos + RotateHalf(k) * sin;
    if (cache != nullptr) {
      torch::Tensor& ck = cache->keys()[i];
      torch::Tensor& cv = cache->values()[i];
      k = ck.defined() ? torch::cat({ck, k}, 2) : k.contiguous();
      v = cv.defined() ? torch::cat({cv, v}, 2) : v.contiguous();
      ck = k;
      cv = v;
    }
    if (nkv != nh) {
      k = k.repeat_interleave(nh / nkv, 1);
      v = v.repeat_interleave(nh / nkv, 1);
    }
    torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) * scale + mask;
    torch::Tensor probs = torch::softmax(scores, -1, torch::kFloat32);
    torch::Tensor attn = torch::matmul(probs, v).transpose(1, 2).reshape({B, T, nh * hd});
    x = x + Linear(attn, l.o, l.o_bias);
    torch::Tensor h2 = RmsNorm(x, l.post_norm);
    x = x + Linear(torch::silu(Linear(h2, l.gate, {})) * Linear(h2, l.up, {}), l.down, {});
  }
  if (cache != nullptr) cache->set_length(total);
  return Linear(RmsNorm(x, norm_), lm_head_, {});
}

}  // namespace steadyeval
