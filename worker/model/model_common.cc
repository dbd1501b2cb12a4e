#include "worker/model/model_common.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "worker/torch_status.h"

namespace steadyeval {

std::string ShapeString(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape.begin(), shape.end(), ", "), "]");
}

absl::StatusOr<at::Tensor> LoadWeight(const TensorSource& source, const std::string& name,
                                         const std::vector<int64_t>& shape,
                                         const WeightPlacement& placement) {
  ASSIGN_OR_RETURN(at::Tensor t, source.Tensor(name));
  if (t.sizes() != c10::IntArrayRef(shape)) {
    return absl::InvalidArgumentError(absl::StrCat(
        source.label(), ": tensor '", name, "' has shape ", ShapeString(t.sizes()),
        " but config.json implies ", ShapeString(shape), " (stored in ", source.Origin(name),
        ")"));
  }
  if (placement.device.is_cpu() && placement.dtype == at::kFloat) return t;
  return GuardTorch(absl::StrCat(source.label(), ": placing tensor '", name, "'"),
                    [&]() -> absl::StatusOr<at::Tensor> {
                      return t.to(placement.device, placement.dtype);
                    });
}

absl::Status CheckForwardShapes(absl::string_view family, const at::Tensor& input_ids,
                                const at::Tensor& token_mask, const KVCache* cache) {
  if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.scalar_type() != at::kLong ||
      input_ids.size(1) == 0 || input_ids.size(0) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        family, " forward: input_ids must be a non-empty [batch, tokens] int64 tensor"));
  }
  if (token_mask.defined() &&
      (token_mask.scalar_type() != at::kBool || token_mask.sizes() != input_ids.sizes())) {
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
                                                 const at::Tensor& input_ids,
                                                 const at::Tensor& token_mask,
                                                 const KVCache* cache, int64_t vocab_size,
                                                 at::Device device) {
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

int64_t AttentionPlan::Longest() const {
  if (longest >= 0) return longest;
  return RowLengths().max().item<int64_t>();
}

at::Tensor AttentionPlan::RowLengths() const {
  if (key_mask.defined()) return key_mask.sum(1, /*keepdim=*/false, at::kLong);
  return at::full({batch}, total, positions.options().dtype(at::kLong));
}

AttentionPlan PlanAttention(const ForwardInputs& inputs, const KVCache* cache) {
  const at::Tensor& ids = inputs.ids;
  const auto device = ids.device();
  const auto longs = at::TensorOptions().dtype(at::kLong).device(device);
  const auto floats = at::TensorOptions().dtype(at::kFloat).device(device);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  AttentionPlan plan;
  plan.batch = ids.size(0);
  plan.tokens = ids.size(1);
  plan.past = cache != nullptr ? cache->length() : 0;
  plan.total = plan.past + plan.tokens;
  const int64_t B = plan.batch, T = plan.tokens, past = plan.past, total = plan.total;
  const at::Tensor cached_mask =
      cache != nullptr && !cache->empty() ? cache->key_mask() : at::Tensor();
  if (!inputs.mask.defined() && !cached_mask.defined()) {
    // No padding anywhere: token t of every row sits at position past + t and (slot
    // past + t) sees slots 0..past + t.
    plan.positions = at::arange(past, total, longs);
    plan.mask = at::full({T, total}, neg_inf, floats).triu(past + 1);
    plan.longest = total;
    return plan;
  }
  const at::Tensor new_real = inputs.mask.defined() ? inputs.mask
                                                       : at::ones({B, T}, longs.dtype(at::kBool));
  const at::Tensor past_real =
      cached_mask.defined() ? cached_mask.to(device)
                            : at::ones({B, past}, longs.dtype(at::kBool));
  plan.key_mask = at::cat({past_real, new_real}, 1);  // [B, total]
  // A token's position = the real tokens before it in its row (a padding token gets the
  // position of the next real one; it is never attended to, so that does not matter).
  const at::Tensor real = new_real.to(at::kLong);
  plan.positions = past_real.sum(1, /*keepdim=*/true, at::kLong) + real.cumsum(1) - real;
  // Query t (slot past + t) sees the real keys among slots 0..past + t, and always itself,
  // so a padding query has a non-empty softmax and stays finite.
  const at::Tensor slots = at::arange(total, longs).view({1, total});
  const at::Tensor query_slots = at::arange(past, total, longs).view({T, 1});
  const at::Tensor allowed = ((slots <= query_slots).unsqueeze(0) &
                                 plan.key_mask.unsqueeze(1)) |
                                (slots == query_slots).unsqueeze(0);  // [B, T, total]
  plan.mask = at::zeros({B, T, total}, floats)
                  .masked_fill(allowed.logical_not(), neg_inf)
                  .view({B, 1, T, total});
  return plan;
}

// Query rows per attention chunk of a packed batch: small enough that a chunk's keys are
// mostly its own rows' ancestors, large enough that the per-chunk overhead stays small.
constexpr int64_t kPackedAttentionChunk = 64;

AttentionPlan PlanPacked(const PackedBatch& batch, const KVCache* cache, at::Device device) {
  AttentionPlan plan;
  plan.batch = 1;
  plan.tokens = batch.ids.size(0);
  plan.past = cache != nullptr ? cache->length() : 0;
  plan.total = plan.past + plan.tokens;
  plan.positions = batch.positions.to(device).view({1, plan.tokens});
  plan.longest = batch.positions.max().item<int64_t>() + 1;
  // Each token sees its own slot whatever `visible` says (a finite softmax row).
  at::Tensor visible = batch.visible.clone();
  visible.narrow(1, plan.past, plan.tokens).diagonal().fill_(true);
  // The keys each chunk of rows can see: a prefix of the cached slots and a range of the
  // batch's slots ending at the chunk's last row (a token sees no later slot).
  const at::Tensor cpu_visible = visible.to(at::kCPU);
  for (int64_t q = 0; q < plan.tokens; q += kPackedAttentionChunk) {
    const int64_t end = std::min(plan.tokens, q + kPackedAttentionChunk);
    const at::Tensor rows = cpu_visible.narrow(0, q, end - q).any(0);  // [P + N]
    const at::Tensor cached = rows.narrow(0, 0, plan.past).nonzero();
    const at::Tensor fresh = rows.narrow(0, plan.past, plan.tokens).nonzero();
    AttentionPlan::Chunk chunk{q, end, 0, q};
    if (cached.numel() > 0) chunk.past_keys = cached.max().item<int64_t>() + 1;
    if (fresh.numel() > 0) chunk.key_begin = fresh.min().item<int64_t>();
    plan.chunks.push_back(chunk);
  }
  visible = visible.to(device);
  plan.mask = at::zeros({plan.tokens, plan.total},
                        at::TensorOptions().dtype(at::kFloat).device(device))
                  .masked_fill(visible.logical_not(), -std::numeric_limits<float>::infinity())
                  .view({1, 1, plan.tokens, plan.total});
  return plan;
}

at::Tensor OutputRows(const at::Tensor& x, const at::Tensor& rows) {
  if (!rows.defined()) return x;
  return x.reshape({-1, x.size(-1)}).index_select(0, rows.to(x.device()));
}

void BeginCache(KVCache* cache, size_t layers) {
  if (cache == nullptr || !cache->empty()) return;
  cache->keys().assign(layers, at::Tensor());
  cache->values().assign(layers, at::Tensor());
}

void FinishCache(KVCache* cache, const AttentionPlan& plan) {
  if (cache == nullptr) return;
  cache->set_length(plan.total);
  cache->set_key_mask(plan.key_mask);
}

at::Tensor AppendSlots(at::Tensor& buffer, int64_t past, const at::Tensor& fresh) {
  const int64_t total = past + fresh.size(2);
  const bool owned = buffer.defined() && buffer.is_contiguous() && buffer.use_count() == 1 &&
                     buffer.storage().use_count() == 1;
  if (!owned || buffer.size(2) < total) {
    std::vector<int64_t> sizes(fresh.sizes().begin(), fresh.sizes().end());
    sizes[2] = total + std::max<int64_t>(64, total / 4);
    at::Tensor grown = at::empty(sizes, fresh.options());
    if (past > 0) grown.narrow(2, 0, past).copy_(buffer.narrow(2, 0, past));
    buffer = grown;
  }
  buffer.narrow(2, past, fresh.size(2)).copy_(fresh);
  return buffer.narrow(2, 0, total);
}

RotaryTables RopeTables(const at::Tensor& positions, const at::Tensor& inv_freq) {
  const at::Tensor pos = positions.to(at::kFloat);
  at::Tensor emb;
  if (pos.dim() == 1) {
    const at::Tensor angles = at::outer(pos, inv_freq.to(pos.device()));  // [T, d/2]
    emb = at::cat({angles, angles}, -1);                                    // [T, d]
  } else {
    const at::Tensor freq =
        inv_freq.dim() == 1 ? inv_freq.view({1, 1, -1}) : inv_freq;  // [B or 1, 1, d/2]
    const at::Tensor angles = pos.unsqueeze(-1) * freq.to(pos.device());  // [B, T, d/2]
    emb = at::cat({angles, angles}, -1).unsqueeze(1);                   // [B, 1, T, d]
  }
  return {emb.cos(), emb.sin()};
}

at::Tensor ApplyRope(const at::Tensor& x, const RotaryTables& tables) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  if (x.scalar_type() == at::kFloat) return x * tables.cos + rotated * tables.sin;
  return (x.to(at::kFloat) * tables.cos + rotated.to(at::kFloat) * tables.sin)
      .to(x.scalar_type());
}

std::vector<double> RopeInvFreq(int64_t dims, double base) {
  std::vector<double> inv_freq(dims / 2);
  for (int64_t j = 0; j < dims / 2; ++j) {
    inv_freq[j] = std::pow(base, -2.0 * static_cast<double>(j) / static_cast<double>(dims));
  }
  return inv_freq;
}

at::Tensor FloatTensor(const std::vector<double>& values, at::Device device) {
  return at::tensor(values, at::kDouble).to(device, at::kFloat);
}

namespace {

// Softmax attention of q [B, nh, T, hd] over k, v [B, nkv, total, hd] with the additive
// `mask` ([T, total] or [B, 1, T, total]); returns [B, nh, T, hd] in v's dtype.
at::Tensor AttentionBlock(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& mask) {
  const int64_t B = q.size(0), nh = q.size(1), T = q.size(2), hd = q.size(3);
  const int64_t nkv = k.size(1), total = k.size(2), group = nh / nkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  // The `group` query heads of one kv head become group x T rows against it.
  const at::Tensor m = mask.dim() == 4 ? mask.unsqueeze(2)  // [B,1,1,T,total]
                                       : mask;              // [T, total]
  const at::Tensor qg = q.reshape({B, nkv, group * T, hd});
  const at::Tensor scores =
      (at::matmul(qg, k.transpose(-2, -1)) * scale).view({B, nkv, group, T, total}) + m;
  const at::Tensor probs = at::softmax(scores, -1, at::kFloat)
                               .view({B, nkv, group * T, total})
                               .to(v.scalar_type());
  return at::matmul(probs, v).view({B, nh, T, hd});
}

}  // namespace

at::Tensor CausalAttention(const at::Tensor& q, const at::Tensor& k,
                              const at::Tensor& v, const AttentionPlan& plan) {
  const int64_t B = q.size(0), nh = q.size(1), T = q.size(2), hd = q.size(3);
  at::Tensor out;
  if (plan.chunks.empty()) {
    out = AttentionBlock(q, k, v, plan.mask);
  } else {
    // Packed: each chunk of rows against the keys it can see (PlanPacked).
    std::vector<at::Tensor> parts;
    for (const AttentionPlan::Chunk& c : plan.chunks) {
      const int64_t rows = c.q_end - c.q_begin, fresh = c.q_end - c.key_begin;
      const at::Tensor mask = plan.mask.narrow(2, c.q_begin, rows);  // [1, 1, rows, P + N]
      auto keys = [&](const at::Tensor& t, int64_t dim) {
        const at::Tensor batch_part = t.narrow(dim, plan.past + c.key_begin, fresh);
        if (c.past_keys == 0) return batch_part;
        return at::cat({t.narrow(dim, 0, c.past_keys), batch_part}, dim);
      };
      parts.push_back(
          AttentionBlock(q.narrow(2, c.q_begin, rows), keys(k, 2), keys(v, 2), keys(mask, 3)));
    }
    out = at::cat(parts, 2);
  }
  return out.transpose(1, 2).reshape({B, T, nh * hd});
}

at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return at::linear(x, w, b.defined() ? b : at::Tensor());
}

at::Tensor LayerNormFloat32(const at::Tensor& x, const at::Tensor& weight,
                               const at::Tensor& bias, double eps) {
  return at::layer_norm(x.to(at::kFloat), {x.size(-1)}, weight.to(at::kFloat),
                           bias.to(at::kFloat), eps)
      .to(x.scalar_type());
}

absl::StatusOr<at::Tensor> RunPackedForward(absl::string_view family, const PackedBatch& batch,
                                               KVCache* cache, int64_t vocab_size,
                                               at::Device device, ForwardBody body) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(family, " packed forward: ", what));
  };
  const at::Tensor& ids = batch.ids;
  if (!ids.defined() || ids.dim() != 1 || ids.scalar_type() != at::kLong || ids.size(0) == 0) {
    return bad("ids must be a non-empty [N] int64 tensor");
  }
  const int64_t n = ids.size(0);
  const int64_t past = cache != nullptr ? cache->length() : 0;
  if (cache != nullptr && !cache->empty() &&
      (cache->batch_size() != 1 || cache->key_mask().defined())) {
    return bad(absl::StrCat("the cache must hold one row without padding (it has ",
                            cache->batch_size(), " rows)"));
  }
  if (!batch.positions.defined() || batch.positions.sizes() != ids.sizes() ||
      batch.positions.scalar_type() != at::kLong) {
    return bad("positions must be an int64 tensor shaped like ids");
  }
  if (!batch.visible.defined() || batch.visible.scalar_type() != at::kBool ||
      batch.visible.dim() != 2 || batch.visible.size(0) != n ||
      batch.visible.size(1) != past + n) {
    return bad(absl::StrCat("visible must be a [", n, ", ", past + n,
                            "] bool tensor (tokens x cached + new slots), got ",
                            batch.visible.defined() ? ShapeString(batch.visible.sizes())
                                                    : std::string("none")));
  }
  if (!batch.outputs.defined() || batch.outputs.dim() != 1 ||
      batch.outputs.scalar_type() != at::kLong) {
    return bad("outputs must be a [M] int64 tensor");
  }
  return GuardTorch(absl::StrCat(family, " packed forward"), [&]() -> absl::StatusOr<at::Tensor> {
    c10::InferenceMode inference;
    if (batch.outputs.numel() > 0 &&
        (batch.outputs.min().item<int64_t>() < 0 || batch.outputs.max().item<int64_t>() >= n)) {
      return bad(absl::StrCat("an output index is outside [0, ", n, ")"));
    }
    if (batch.positions.min().item<int64_t>() < 0) return bad("a position is negative");
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= vocab_size) {
      return bad(absl::StrCat("token id ", lo < 0 ? lo : hi, " is outside the vocabulary [0, ",
                              vocab_size, ")"));
    }
    ForwardInputs in;
    in.ids = ids.to(device).view({1, n});
    return body(in, PlanPacked(batch, cache, device));
  });
}

absl::StatusOr<at::Tensor> RunForward(absl::string_view family,
                                         const at::Tensor& input_ids,
                                         const at::Tensor& token_mask, KVCache* cache,
                                         int64_t vocab_size, at::Device device,
                                         ForwardBody body, Autograd autograd) {
  RETURN_IF_ERROR(CheckForwardShapes(family, input_ids, token_mask, cache));
  return GuardTorch(absl::StrCat(family, " forward"), [&]() -> absl::StatusOr<at::Tensor> {
    c10::InferenceMode inference(/*enabled=*/autograd == Autograd::kOff);
    ASSIGN_OR_RETURN(ForwardInputs in, CheckForwardInputs(family, input_ids, token_mask, cache,
                                                          vocab_size, device));
    return body(in, PlanAttention(in, cache));
  });
}

}  // namespace steadyeval
