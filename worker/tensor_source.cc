#include "worker/tensor_source.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/torch_status.h"

namespace steadyeval {

torch::ScalarType TorchTypeOf(DType dtype) {
  switch (dtype) {
    case DType::kF64: return torch::kFloat64;
    case DType::kF32: return torch::kFloat32;
    case DType::kF16: return torch::kFloat16;
    case DType::kBF16: return torch::kBFloat16;
    case DType::kI64: return torch::kInt64;
    case DType::kI32: return torch::kInt32;
    case DType::kI16: return torch::kInt16;
    case DType::kI8: return torch::kInt8;
    case DType::kU8: return torch::kUInt8;
    case DType::kBool: return torch::kBool;
  }
  return torch::kFloat32;  // unreachable: the switch is exhaustive
}

absl::StatusOr<DType> DTypeOfTorch(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat64: return DType::kF64;
    case torch::kFloat32: return DType::kF32;
    case torch::kFloat16: return DType::kF16;
    case torch::kBFloat16: return DType::kBF16;
    case torch::kInt64: return DType::kI64;
    case torch::kInt32: return DType::kI32;
    case torch::kInt16: return DType::kI16;
    case torch::kInt8: return DType::kI8;
    case torch::kUInt8: return DType::kU8;
    case torch::kBool: return DType::kBool;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("torch dtype ", c10::toString(type), " cannot be stored in safetensors"));
  }
}

absl::Status TensorMap::Add(const std::string& name, torch::Tensor tensor) {
  RETURN_IF_ERROR(DTypeOfTorch(tensor.scalar_type()).status());
  return GuardTorch(absl::StrCat(label_, ": tensor '", name, "'"), [&]() -> absl::Status {
    tensors_[name] = tensor.to(torch::kCPU).contiguous();
    return absl::OkStatus();
  });
}

absl::StatusOr<torch::Tensor> TensorMap::Stored(absl::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(label_, ": tensor '", name, "' not found (",
                                            tensors_.size(), " tensors present)"));
  }
  return it->second;
}

uint64_t TensorMap::bytes() const {
  uint64_t total = 0;
  for (const auto& [name, t] : tensors_) total += t.numel() * t.element_size();
  return total;
}

std::vector<std::string> TensorMap::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, t] : tensors_) names.push_back(name);
  return names;
}

absl::StatusOr<TensorInfo> TensorMap::Info(absl::string_view name) const {
  ASSIGN_OR_RETURN(torch::Tensor t, Stored(name));
  TensorInfo info;
  info.name = std::string(name);
  ASSIGN_OR_RETURN(info.dtype, DTypeOfTorch(t.scalar_type()));
  info.shape.assign(t.sizes().begin(), t.sizes().end());
  info.end = t.numel() * t.element_size();
  return info;
}

absl::StatusOr<torch::Tensor> TensorMap::Tensor(absl::string_view name) const {
  ASSIGN_OR_RETURN(torch::Tensor t, Stored(name));
  return GuardTorch(absl::StrCat(label_, ": tensor '", name, "'"),
                    [&]() -> absl::StatusOr<torch::Tensor> { return t.to(torch::kFloat32); });
}

}  // namespace steadyeval
