#include "worker/model_common.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "worker/torch_status.h"

namespace steadyeval {

std::string ShapeString(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape.begin(), shape.end(), ", "), "]");
}

absl::StatusOr<torch::Tensor> LoadWeight(const TensorSource& source, const std::string& name,
                                         const std::vector<int64_t>& shape,
                                         const WeightPlacement& placement) {
  ASSIGN_OR_RETURN(torch::Tensor t, source.Tensor(name));
  if (t.sizes() != c10::IntArrayRef(shape)) {
    return absl::InvalidArgumentError(absl::StrCat(
        source.label(), ": tensor '", name, "' has shape ", ShapeString(t.sizes()),
        " but config.json implies ", ShapeString(shape), " (stored in ", source.Origin(name),
        ")"));
  }
  if (placement.device.is_cpu() && placement.dtype == torch::kFloat32) return t;
  return GuardTorch(absl::StrCat(source.label(), ": placing tensor '", name, "'"),
                    [&]() -> absl::StatusOr<torch::Tensor> {
                      return t.to(placement.device, placement.dtype);
                    });
}

absl::Status CheckForwardShapes(absl::string_view family, const torch::Tensor& input_ids,
                                const torch::Tensor& token_mask, const KVCache* cache) {
  if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.scalar_type() != torch::kInt64 ||
      input_ids.size(1) == 0 || input_ids.size(0) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        family, " forward: input_ids must be a non-empty [batch, tokens] int64 tensor"));
  }
  if (token_mask.defined() &&
      (token_mask.scalar_type() != torch::kBool || token_mask.sizes() != input_ids.sizes())) {
    return absl::InvalidArgumentError(absl::StrCat(
        family, " forward: token_mask must be a bool tensor shaped like input_ids ",
        ShapeString(input_ids.sizes()), ", got ", ShapeString(token_mask.sizes()), " ",
        c10::toString(token_mask.scalar_type())));
  }
  if (cache != nullptr && !cache->empty() && cache->batch_size() != input_ids.size(0)) {
    return absl::InvalidArgumentError(absl::StrCat(family, " forward: batch size ",
                                                   input_ids.size(0),
                                                   " does not match the cache's ",
                                                   cache->batch_size()));
  }
  return absl::OkStatus();
}

absl::StatusOr<ForwardInputs> CheckForwardInputs(absl::string_view family,
                                                 const torch::Tensor& input_ids,
                                                 const torch::Tensor& token_mask,
                                                 const KVCache* cache, int64_t vocab_size,
                                                 torch::Device device) {
  RETURN_IF_ERROR(CheckForwardShapes(family, input_ids, token_mask, cache));
  ForwardInputs in;
  in.ids = input_ids.to(device);
  if (token_mask.defined() && !token_mask.all().item<bool>()) {
    in.mask = token_mask.to(device);
    in.ids = in.ids.masked_fill(in.mask.logical_not(), 0);  // padding ids are ignored
  }
  const int64_t lo = in.ids.min().item<int64_t>(), hi = in.ids.max().item<int64_t>();
  if (lo < 0 || hi >= vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(family, " forward: token id ",
                                                   lo < 0 ? lo : hi,
                                                   " is outside the vocabulary [0, ",
                                                   vocab_size, ")"));
  }
  return in;
}

torch::Tensor AttentionPlan::RowLengths() const {
  if (key_mask.defined()) return key_mask.sum(1, /*keepdim=*/false, torch::kInt64);
  return torch::full({batch}, total, positions.options().dtype(torch::kInt64));
}

AttentionPlan PlanAttention(const ForwardInputs& inputs, const KVCache* cache) {
  const torch::Tensor& ids = inputs.ids;
  const auto device = ids.device();
  const auto longs = torch::TensorOptions().dtype(torch::kInt64).device(device);
  const auto floats = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  AttentionPlan plan;
  plan.batch = ids.size(0);
  plan.tokens = ids.size(1);
  plan.past = cache != nullptr ? cache->length() : 0;
  plan.total = plan.past + plan.tokens;
  const int64_t B = plan.batch, T = plan.tokens, past = plan.past, total = plan.total;
  const torch::Tensor cached_mask =
      cache != nullptr && !cache->empty() ? cache->key_mask() : torch::Tensor();
  if (!inputs.mask.defined() && !cached_mask.defined()) {
    // No padding anywhere: token t of every row sits at position past + t and (slot
    // past + t) sees slots 0..past + t.
    plan.positions = torch::arange(past, total, longs);
    plan.mask = torch::full({T, total}, neg_inf, floats).triu(past + 1);
    return plan;
  }
  const torch::Tensor new_real = inputs.mask.defined() ? inputs.mask
                                                       : torch::ones({B, T}, longs.dtype(torch::kBool));
  const torch::Tensor past_real =
      cached_mask.defined() ? cached_mask.to(device)
                            : torch::ones({B, past}, longs.dtype(torch::kBool));
  plan.key_mask = torch::cat({past_real, new_real}, 1);  // [B, total]
  // A token's position = the real tokens before it in its row (a padding token gets the
  // position of the next real one; it is never attended to, so that does not matter).
  const torch::Tensor real = new_real.to(torch::kInt64);
  plan.positions = past_real.sum(1, /*keepdim=*/true, torch::kInt64) + real.cumsum(1) - real;
  // Query t (slot past + t) sees the real keys among slots 0..past + t, and always itself,
  // so a padding query has a non-empty softmax and stays finite.
  const torch::Tensor slots = torch::arange(total, longs).view({1, total});
  const torch::Tensor query_slots = torch::arange(past, total, longs).view({T, 1});
  const torch::Tensor allowed = ((slots <= query_slots).unsqueeze(0) &
                                 plan.key_mask.unsqueeze(1)) |
                                (slots == query_slots).unsqueeze(0);  // [B, T, total]
  plan.mask = torch::zeros({B, T, total}, floats)
                  .masked_fill(allowed.logical_not(), neg_inf)
                  .view({B, 1, T, total});
  return plan;
}

void BeginCache(KVCache* cache, size_t layers) {
  if (cache == nullptr || !cache->empty()) return;
  cache->keys().assign(layers, torch::Tensor());
  cache->values().assign(layers, torch::Tensor());
}

void FinishCache(KVCache* cache, const AttentionPlan& plan) {
  if (cache == nullptr) return;
  cache->set_length(plan.total);
  cache->set_key_mask(plan.key_mask);
}

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

RotaryTables RopeTables(const torch::Tensor& positions, const torch::Tensor& inv_freq) {
  const torch::Tensor pos = positions.to(torch::kFloat32);
  torch::Tensor emb;
  if (pos.dim() == 1) {
    const torch::Tensor angles = torch::outer(pos, inv_freq.to(pos.device()));  // [T, d/2]
    emb = torch::cat({angles, angles}, -1);                                    // [T, d]
  } else {
    const torch::Tensor freq =
        inv_freq.dim() == 1 ? inv_freq.view({1, 1, -1}) : inv_freq;  // [B or 1, 1, d/2]
    const torch::Tensor angles = pos.unsqueeze(-1) * freq.to(pos.device());  // [B, T, d/2]
    emb = torch::cat({angles, angles}, -1).unsqueeze(1);                   // [B, 1, T, d]
  }
  return {emb.cos(), emb.sin()};
}

torch::Tensor ApplyRope(const torch::Tensor& x, const RotaryTables& tables) {
  const int64_t half = x.size(-1) / 2;
  const torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  if (x.scalar_type() == torch::kFloat32) return x * tables.cos + rotated * tables.sin;
  return (x.to(torch::kFloat32) * tables.cos + rotated.to(torch::kFloat32) * tables.sin)
      .to(x.scalar_type());
}

std::vector<double> RopeInvFreq(int64_t dims, double base) {
  std::vector<double> inv_freq(dims / 2);
  for (int64_t j = 0; j < dims / 2; ++j) {
    inv_freq[j] = std::pow(base, -2.0 * static_cast<double>(j) / static_cast<double>(dims));
  }
  return inv_freq;
}

torch::Tensor FloatTensor(const std::vector<double>& values, torch::Device device) {
  return torch::tensor(values, torch::kFloat64).to(device, torch::kFloat32);
}

torch::Tensor CausalAttention(const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v, const AttentionPlan& plan) {
  const int64_t B = q.size(0), nh = q.size(1), T = q.size(2), hd = q.size(3);
  const int64_t nkv = k.size(1), total = k.size(2), group = nh / nkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  // The `group` query heads of one kv head become group x T rows against it.
  const torch::Tensor mask = plan.mask.dim() == 4 ? plan.mask.unsqueeze(2)  // [B,1,1,T,total]
                                                  : plan.mask;              // [T, total]
  const torch::Tensor qg = q.reshape({B, nkv, group * T, hd});
  const torch::Tensor scores =
      (torch::matmul(qg, k.transpose(-2, -1)) * scale).view({B, nkv, group, T, total}) + mask;
  const torch::Tensor probs = torch::softmax(scores, -1, torch::kFloat32)
                                  .view({B, nkv, group * T, total})
                                  .to(v.scalar_type());
  return torch::matmul(probs, v).view({B, nh, T, hd}).transpose(1, 2).reshape({B, T, nh * hd});
}

torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return torch::nn::functional::linear(x, w, b.defined() ? b : torch::Tensor());
}

torch::Tensor LayerNormFloat32(const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, double eps) {
  return torch::layer_norm(x.to(torch::kFloat32), {x.size(-1)}, weight.to(torch::kFloat32),
                           bias.to(torch::kFloat32), eps)
      .to(x.scalar_type());
}

absl::StatusOr<torch::Tensor> RunForward(absl::string_view family,
                                         const torch::Tensor& input_ids,
                                         const torch::Tensor& token_mask, KVCache* cache,
                                         int64_t vocab_size, torch::Device device,
                                         ForwardBody body, Autograd autograd) {
  RETURN_IF_ERROR(CheckForwardShapes(family, input_ids, token_mask, cache));
  return GuardTorch(absl::StrCat(family, " forward"), [&]() -> absl::StatusOr<torch::Tensor> {
    c10::InferenceMode inference(/*enabled=*/autograd == Autograd::kOff);
    ASSIGN_OR_RETURN(ForwardInputs in, CheckForwardInputs(family, input_ids, token_mask, cache,
                                                          vocab_size, device));
    return body(in, PlanAttention(in, cache));
  });
}

}  // namespace steadyeval
