#include "worker/model/language_model.h"

#include <algorithm>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/torch_status.h"
#include "worker/model/gpt2/gpt2_model.h"
#include "worker/model/gpt_neox/gpt_neox_model.h"
#include "worker/model/llama/llama_model.h"
#include "worker/model/model_config.h"
#include "worker/checkpoint/tensor_source.h"

namespace steadyeval {

absl::StatusOr<KVCache> KVCache::ExpandBatch(int64_t rows) const {
  if (rows < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache: cannot expand to ", rows, " rows"));
  }
  if (empty()) return KVCache();
  if (batch_size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache: only a batch-1 cache can be expanded; this one has ",
                     batch_size(), " rows"));
  }
  return GuardTorch("KV cache expand", [&]() -> absl::StatusOr<KVCache> {
    KVCache out = *this;
    auto expand = [rows](at::Tensor& t) {
      if (!t.defined()) return;
      std::vector<int64_t> sizes(t.sizes().begin(), t.sizes().end());
      sizes[0] = rows;
      t = t.expand(sizes);
    };
    for (at::Tensor& k : out.keys_) expand(k);
    for (at::Tensor& v : out.values_) expand(v);
    expand(out.key_mask_);
    return out;
  });
}

absl::StatusOr<KVCache> KVCache::SelectRows(const std::vector<int64_t>& rows) const {
  if (rows.empty()) return absl::InvalidArgumentError("KV cache: no rows to select");
  if (empty()) return KVCache();
  for (int64_t r : rows) {
    if (r < 0 || r >= batch_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KV cache: row ", r, " is outside the cached batch of ", batch_size()));
    }
  }
  return GuardTorch("KV cache select rows", [&]() -> absl::StatusOr<KVCache> {
    c10::InferenceMode inference;
    KVCache out = *this;
    const at::Tensor index =
        at::tensor(rows, at::kLong).to(out.keys_.front().device());
    for (at::Tensor& k : out.keys_) k = k.narrow(2, 0, length_).index_select(0, index);
    for (at::Tensor& v : out.values_) v = v.narrow(2, 0, length_).index_select(0, index);
    if (!key_mask_.defined()) return out;
    out.key_mask_ = key_mask_.index_select(0, index);
    const at::Tensor used = out.key_mask_.any(0);  // [length]: real in some kept row
    if (used.all().item<bool>()) return out;
    const at::Tensor slots = used.nonzero().view({-1});
    if (slots.numel() == 0) return KVCache();
    for (at::Tensor& k : out.keys_) k = k.index_select(2, slots);
    for (at::Tensor& v : out.values_) v = v.index_select(2, slots);
    out.key_mask_ = out.key_mask_.index_select(1, slots);
    out.length_ = slots.numel();
    if (out.key_mask_.all().item<bool>()) out.key_mask_ = at::Tensor();
    return out;
  });
}

absl::StatusOr<KVCache> KVCache::StackRows(const std::vector<KVCache>& rows,
                                           int64_t spare_slots) {
  if (rows.empty()) return absl::InvalidArgumentError("KV cache: no rows to stack");
  if (spare_slots < 0) return absl::InvalidArgumentError("KV cache: negative spare slots");
  int64_t longest = 0;
  for (size_t b = 0; b < rows.size(); ++b) {
    if (rows[b].batch_size() != 1 || rows[b].keys_.size() != rows[0].keys_.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KV cache: cannot stack row ", b, ": ", rows[b].batch_size(), " rows and ",
          rows[b].keys_.size(), " layers (need 1 row and ", rows[0].keys_.size(), ")"));
    }
    longest = std::max(longest, rows[b].length());
  }
  return GuardTorch("KV cache stack rows", [&]() -> absl::StatusOr<KVCache> {
    c10::InferenceMode inference;
    const int64_t n = static_cast<int64_t>(rows.size());
    // Row b's valid slots go to the end of [0, longest); the rest stays zero.
    auto stack = [&](const std::vector<at::Tensor> KVCache::*member, size_t layer) {
      const at::Tensor& first = (rows[0].*member)[layer];
      std::vector<int64_t> sizes(first.sizes().begin(), first.sizes().end());
      sizes[0] = n;
      sizes[2] = longest + spare_slots;
      at::Tensor out = at::zeros(sizes, first.options());
      for (int64_t b = 0; b < n; ++b) {
        const KVCache& row = rows[b];
        out.narrow(0, b, 1)
            .narrow(2, longest - row.length_, row.length_)
            .copy_((row.*member)[layer].narrow(2, 0, row.length_));
      }
      return out;
    };
    KVCache out;
    out.length_ = longest;
    const size_t layers = rows[0].keys_.size();
    for (size_t i = 0; i < layers; ++i) {
      out.keys_.push_back(stack(&KVCache::keys_, i));
      out.values_.push_back(stack(&KVCache::values_, i));
    }
    bool padded = false;
    for (const KVCache& row : rows) padded |= row.length_ != longest || row.key_mask_.defined();
    if (padded) {
      out.key_mask_ = at::zeros(
          {n, longest}, at::TensorOptions().dtype(at::kBool).device(
                            rows[0].keys_.front().device()));
      for (int64_t b = 0; b < n; ++b) {
        const KVCache& row = rows[b];
        at::Tensor real = out.key_mask_[b].narrow(0, longest - row.length_, row.length_);
        if (row.key_mask_.defined()) {
          real.copy_(row.key_mask_[0]);
        } else {
          real.fill_(true);
        }
      }
    }
    return out;
  });
}

absl::StatusOr<KVCache> KVCache::SelectSlots(const std::vector<int64_t>& slots,
                                            int64_t spare_slots) const {
  if (spare_slots < 0) return absl::InvalidArgumentError("KV cache: negative spare slots");
  if (slots.empty()) return KVCache();
  if (empty() || batch_size() != 1 || key_mask_.defined()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache: slots can only be selected from one row without padding (this cache has ",
        batch_size(), " rows of ", length_, " slots", key_mask_.defined() ? ", padded" : "",
        ")"));
  }
  for (int64_t s : slots) {
    if (s < 0 || s >= length_) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV cache: slot ", s, " is outside [0, ", length_, ")"));
    }
  }
  return GuardTorch("KV cache select slots", [&]() -> absl::StatusOr<KVCache> {
    c10::InferenceMode inference;
    const int64_t n = static_cast<int64_t>(slots.size());
    const at::Tensor index = at::tensor(slots, at::kLong).to(keys_.front().device());
    auto select = [&](const at::Tensor& t) {
      std::vector<int64_t> sizes(t.sizes().begin(), t.sizes().end());
      sizes[2] = n + spare_slots;
      at::Tensor out = at::empty(sizes, t.options());
      out.narrow(2, 0, n).copy_(t.narrow(2, 0, length_).index_select(2, index));
      return out;
    };
    KVCache out;
    for (const at::Tensor& k : keys_) out.keys_.push_back(select(k));
    for (const at::Tensor& v : values_) out.values_.push_back(select(v));
    out.length_ = n;
    return out;
  });
}

absl::StatusOr<at::Device> ParseDevice(absl::string_view spec) {
  if (spec == "cpu") return at::Device(at::kCPU);
  int index = 0;
  if (spec == "cuda") {
    index = 0;
  } else if (absl::StartsWith(spec, "cuda:") && absl::SimpleAtoi(spec.substr(5), &index) &&
             index >= 0) {
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("device '", spec, "' is not one of cpu, cuda, cuda:K"));
  }
  // What torch::cuda::device_count() reports, without the libtorch C++ API headers.
  const int64_t count = static_cast<int64_t>(at::detail::getCUDAHooks().getNumGPUs());
  if (count == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device '", spec,
        "': this libtorch sees no CUDA device (built without CUDA, no GPU or no driver); "
        "use --device cpu"));
  }
  if (index >= count) {
    return absl::FailedPreconditionError(absl::StrCat("device '", spec, "': only ", count,
                                                      " CUDA device(s), numbered from 0"));
  }
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
}

absl::StatusOr<WeightPlacement> ChoosePlacement(const TensorSource& source,
                                                at::Device device) {
  WeightPlacement placement;
  placement.device = device;
  if (device.is_cpu()) return placement;  // float32 on the CPU
  std::optional<DType> shared;
  for (const std::string& name : source.TensorNames()) {
    ASSIGN_OR_RETURN(TensorInfo info, source.Info(name));
    if (!IsFloating(info.dtype)) continue;
    if (shared.has_value() && *shared != info.dtype) return placement;  // mixed: float32
    shared = info.dtype;
  }
  if (shared == DType::kBF16) placement.dtype = at::kBFloat16;
  if (shared == DType::kF16) placement.dtype = at::kHalf;
  return placement;
}

absl::StatusOr<std::unique_ptr<LanguageModel>> LoadLanguageModel(
    const TensorSource& reader, const WeightPlacement& placement) {
  const std::string& context = reader.label();
  auto model_type = ModelTypeOf(reader.config_json());
  if (!model_type.ok()) return Annotate(model_type.status(), context);
  if (*model_type == "llama" || *model_type == "mistral" || *model_type == "qwen2") {
    auto config = ParseLlamaConfig(reader.config_json());
    if (!config.ok()) return Annotate(config.status(), context);
    ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model,
                     LlamaModel::Create(*config, reader, placement));
    return std::unique_ptr<LanguageModel>(std::move(model));
  }
  if (*model_type == "gpt_neox") return LoadGptNeoxModel(reader, placement);
  if (*model_type == "gpt2") return LoadGpt2Model(reader, placement);
  return absl::UnimplementedError(absl::StrCat(
      context, ": model_type '", *model_type,
      "' is not supported (supported: llama, mistral, qwen2, gpt_neox, gpt2)"));
}

}  // namespace steadyeval
