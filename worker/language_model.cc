#include "worker/language_model.h"

#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/gpt2_model.h"
#include "worker/gpt_neox_model.h"
#include "worker/llama_model.h"
#include "worker/model_config.h"
#include "worker/tensor_source.h"

namespace steadyeval {

absl::StatusOr<torch::Device> ParseDevice(absl::string_view spec) {
  if (spec == "cpu") return torch::Device(torch::kCPU);
  int index = 0;
  if (spec == "cuda") {
    index = 0;
  } else if (absl::StartsWith(spec, "cuda:") && absl::SimpleAtoi(spec.substr(5), &index) &&
             index >= 0) {
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("device '", spec, "' is not one of cpu, cuda, cuda:K"));
  }
  if (!torch::cuda::is_available()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device '", spec,
        "': this libtorch sees no CUDA device (built without CUDA, no GPU or no driver); "
        "use --device cpu"));
  }
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (index >= count) {
    return absl::FailedPreconditionError(absl::StrCat("device '", spec, "': only ", count,
                                                      " CUDA device(s), numbered from 0"));
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

absl::StatusOr<WeightPlacement> ChoosePlacement(const TensorSource& source,
                                                torch::Device device) {
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
  if (shared == DType::kBF16) placement.dtype = torch::kBFloat16;
  if (shared == DType::kF16) placement.dtype = torch::kFloat16;
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
