#include "worker/llama_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
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

// Appends `fresh` ([B, nkv, T, hd]) after the `past` valid slots of a cache buffer and
// returns the valid [B, nkv, past + T, hd] view. Writes in place into the buffer's spare
// slots when this cache alone holds it (no fork, expansion or view shares its storage);
// otherwise, or when it is full, moves to a new buffer with room to grow, so decoding
// does not copy the whole cache at every token. Slots < past are never written.
torch::Tensor AppendSlots(torch::Tensor& buffer, int64_t past, const torch::Tensor& fresh) {
  const int64_t total = past + fresh.size(2);
  const bool owned = buffer.defined() && buffer.is_contiguous() && buffer.use_count() == 1 &&
                     buffer.storage().use_count() == 1;
  if (!owned || buffer.size(2) < total) {
    std::vector<int64_t> sizes(fresh.sizes().begin(), fresh.sizes().end());
    sizes[2] = total + std::max<int64_t>(64, total / 4);
    torch::Tensor grown = torch::empty(sizes, fresh.options());
    if (past > 0) grown.narrow(2, 0, past).copy_(buffer.narrow(2, 0, past));
    buffer = grown;
  }
  buffer.narrow(2, past, fresh.size(2)).copy_(fresh);
  return buffer.narrow(2, 0, total);
}

constexpr double kPi = 3.14159265358979323846;

// inv_freq[j] = base^(-2j/hd), j < hd/2, in double.
std::vector<double> RopeInvFreq(const LlamaConfig& config, double base) {
  const int64_t half = config.head_dim / 2;
  std::vector<double> inv_freq(half);
  for (int64_t j = 0; j < half; ++j) {
    inv_freq[j] = std::pow(base, -2.0 * static_cast<double>(j) / config.head_dim);
  }
  return inv_freq;
}

// Rounded to float32 once.
torch::Tensor ToFloatTensor(const std::vector<double>& values) {
  return torch::tensor(values, torch::kFloat64).to(torch::kFloat32);
}

}  // namespace

torch::Tensor LlamaModel::InvFreqForLength(int64_t length) const {
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
  return ToFloatTensor(RopeInvFreq(config_, base));
}

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
  // Static scaling (linear, llama3) is folded into inv_freq_ here; dynamic NTK scaling
  // depends on the sequence length and is applied per forward (InvFreqForLength).
  std::vector<double> inv_freq = RopeInvFreq(config, config.rope_theta);
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
    model->inv_freq_ = ToFloatTensor(inv_freq);
    return absl::OkStatus();
  }));
  return model;
}

torch::Tensor LlamaModel::RmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const {
  torch::Tensor variance = x.pow(2).mean(-1, /*keepdim=*/true);
  return x * torch::rsqrt(variance + config_.rms_norm_eps) * weight;
}

absl::StatusOr<torch::Tensor> LlamaModel::Forward(const torch::Tensor& input_ids,
                                                  const torch::Tensor& token_mask,
                                                  KVCache* cache) const {
  if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.scalar_type() != torch::kInt64 ||
      input_ids.size(1) == 0 || input_ids.size(0) == 0) {
    return absl::InvalidArgumentError(
        "llama forward: input_ids must be a non-empty [batch, tokens] int64 tensor");
  }
  if (token_mask.defined() &&
      (token_mask.scalar_type() != torch::kBool || token_mask.sizes() != input_ids.sizes())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "llama forward: token_mask must be a bool tensor shaped like input_ids ",
        ShapeString(input_ids.sizes()), ", got ", ShapeString(token_mask.sizes()), " ",
        c10::toString(token_mask.scalar_type())));
  }
  if (cache != nullptr && !cache->empty() && cache->batch_size() != input_ids.size(0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "llama forward: batch size ", input_ids.size(0), " does not match the cache's ",
        cache->batch_size()));
  }
  return GuardTorch("llama forward", [&]() -> absl::StatusOr<torch::Tensor> {
    c10::InferenceMode inference;
    torch::Tensor ids = input_ids.to(torch::kCPU);
    torch::Tensor mask;
    if (token_mask.defined() && !token_mask.all().item<bool>()) {
      mask = token_mask.to(torch::kCPU);
      ids = ids.masked_fill(mask.logical_not(), 0);  // padding ids are ignored
    }
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "llama forward: token id ", lo < 0 ? lo : hi, " is outside the vocabulary [0, ",
          config_.vocab_size, ")"));
    }
    if (config_.sliding_window) {
      // The longest row in real tokens (positions count only those).
      const int64_t past = cache != nullptr ? cache->length() : 0;
      int64_t longest = past + ids.size(1);
      if (mask.defined() || (cache != nullptr && cache->key_mask().defined())) {
        torch::Tensor real = mask.defined()
                                 ? mask.sum(1)
                                 : torch::full({ids.size(0)}, ids.size(1), torch::kInt64);
        if (cache != nullptr && cache->key_mask().defined()) {
          real = real + cache->key_mask().sum(1);
        } else {
          real = real + past;
        }
        longest = real.max().item<int64_t>();
      }
      if (longest > *config_.sliding_window) {
        return absl::UnimplementedError(absl::StrCat(
            "llama forward: sequence of ", longest, " tokens exceeds mistral sliding_window ",
            *config_.sliding_window, " (sliding-window attention is not implemented)"));
      }
    }
    // On a libtorch failure part-way the cache keeps its length and mask; its buffers may
    // have grown and have scratch slots written, which changes nothing it holds.
    return ForwardUnchecked(ids, mask, cache);
  });
}

torch::Tensor LlamaModel::ForwardUnchecked(const torch::Tensor& ids,
                                           const torch::Tensor& token_mask,
                                           KVCache* cache) const {
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t nh = config_.num_attention_heads, nkv = config_.num_key_value_heads;
  const int64_t hd = config_.head_dim;
  const int64_t past = cache != nullptr ? cache->length() : 0;
  const int64_t total = past + T;
  const torch::Tensor cached_mask =
      cache != nullptr && !cache->empty() ? cache->key_mask() : torch::Tensor();
  if (cache != nullptr && cache->empty()) {
    cache->keys().assign(layers_.size(), torch::Tensor());
    cache->values().assign(layers_.size(), torch::Tensor());
  }

  torch::Tensor x = embed_.index_select(0, ids.reshape({-1})).view({B, T, -1});

  torch::Tensor cos, sin, mask;
  torch::Tensor key_mask;  // [B, total] bool when any slot is padding
  if (!token_mask.defined() && !cached_mask.defined()) {
    // No padding anywhere: every row's token t sits at position past + t.
    torch::Tensor positions = torch::arange(past, total, torch::kFloat32);
    torch::Tensor angles = torch::outer(positions, InvFreqForLength(total));  // [T, hd/2]
    torch::Tensor emb = torch::cat({angles, angles}, -1);        // [T, hd]
    cos = emb.cos();
    sin = emb.sin();
    // Query t (slot past + t) sees keys 0..past + t.
    mask = torch::full({T, total}, -std::numeric_limits<float>::infinity(), torch::kFloat32)
               .triu(past + 1);
  } else {
    torch::Tensor new_real =
        token_mask.defined() ? token_mask : torch::ones({B, T}, torch::kBool);
    torch::Tensor past_real = cached_mask.defined()
                                  ? cached_mask
                                  : torch::ones({B, past}, torch::kBool);
    key_mask = torch::cat({past_real, new_real}, 1);  // [B, total]
    // A token's position = the real tokens before it in its row (a padding token gets the
    // position of the next real one; it is never attended to, so that does not matter).
    torch::Tensor real = new_real.to(torch::kInt64);
    torch::Tensor positions =
        (past_real.sum(1, /*keepdim=*/true, torch::kInt64) + real.cumsum(1) - real)
            .to(torch::kFloat32);                                       // [B, T]
    // Dynamic NTK scaling uses each row's own length in real tokens (what one unpadded
    // forward of that row computes), so a row does not depend on its batchmates.
    torch::Tensor inv_freq = inv_freq_.view({1, 1, -1});
    if (config_.rope_scaling.kind == RopeScaling::Kind::kDynamic) {
      torch::Tensor row_lengths = past_real.sum(1, /*keepdim=*/false, torch::kInt64) +
                                  new_real.sum(1, /*keepdim=*/false, torch::kInt64);
      std::vector<torch::Tensor> rows;
      for (int64_t b = 0; b < B; ++b) {
        rows.push_back(InvFreqForLength(row_lengths[b].item<int64_t>()));
      }
      inv_freq = torch::stack(rows).unsqueeze(1);                       // [B, 1, hd/2]
    }
    torch::Tensor angles = positions.unsqueeze(-1) * inv_freq;          // [B, T, hd/2]
    torch::Tensor emb = torch::cat({angles, angles}, -1).unsqueeze(1);  // [B, 1, T, hd]
    cos = emb.cos();
    sin = emb.sin();
    // Query t (slot past + t) sees the real keys among slots 0..past + t, and always
    // itself, so a padding query has a non-empty softmax and stays finite.
    torch::Tensor slots = torch::arange(total, torch::kInt64).view({1, total});
    torch::Tensor query_slots = torch::arange(past, total, torch::kInt64).view({T, 1});
    torch::Tensor allowed = ((slots <= query_slots).unsqueeze(0) & key_mask.unsqueeze(1)) |
                            (slots == query_slots).unsqueeze(0);  // [B, T, total]
    mask = torch::zeros({B, T, total}, torch::kFloat32)
               .masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity())
               .view({B, 1, 1, T, total});
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const int64_t group = nh / nkv;

  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    torch::Tensor h = RmsNorm(x, l.input_norm);
    torch::Tensor q = Linear(h, l.q, l.q_bias).view({B, T, nh, hd}).transpose(1, 2);
    torch::Tensor k = Linear(h, l.k, l.k_bias).view({B, T, nkv, hd}).transpose(1, 2);
    torch::Tensor v = Linear(h, l.v, l.v_bias).view({B, T, nkv, hd}).transpose(1, 2);
    q = q * cos + RotateHalf(q) * sin;
    k = k * cos + RotateHalf(k) * sin;
    if (cache != nullptr) {
      k = AppendSlots(cache->keys()[i], past, k);
      v = AppendSlots(cache->values()[i], past, v);
    }
    // Grouped-query attention without repeating k/v: the `group` query heads of one kv
    // head (consecutive, as in repeat_interleave) become `group` x T rows against it.
    torch::Tensor qg = q.reshape({B, nkv, group * T, hd});
    torch::Tensor scores =
        (torch::matmul(qg, k.transpose(-2, -1)) * scale).view({B, nkv, group, T, total}) +
        mask;
    torch::Tensor probs =
        torch::softmax(scores, -1, torch::kFloat32).view({B, nkv, group * T, total});
    torch::Tensor attn = torch::matmul(probs, v)
                             .view({B, nh, T, hd})
                             .transpose(1, 2)
                             .reshape({B, T, nh * hd});
    x = x + Linear(attn, l.o, l.o_bias);
    torch::Tensor h2 = RmsNorm(x, l.post_norm);
    x = x + Linear(torch::silu(Linear(h2, l.gate, {})) * Linear(h2, l.up, {}), l.down, {});
  }
  if (cache != nullptr) {
    cache->set_length(total);
    cache->set_key_mask(key_mask);
  }
  return Linear(RmsNorm(x, norm_), lm_head_, {});
}

}  // namespace steadyeval
