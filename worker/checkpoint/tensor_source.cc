#include "worker/checkpoint/tensor_source.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/torch_status.h"
#include <ATen/ATen.h>

namespace steadyeval {

at::ScalarType TorchTypeOf(DType dtype) {
  switch (dtype) {
    case DType::kF64: return at::kDouble;
    case DType::kF32: return at::kFloat;
    case DType::kF16: return at::kHalf;
    case DType::kBF16: return at::kBFloat16;
    case DType::kI64: return at::kLong;
    case DType::kI32: return at::kInt;
    case DType::kI16: return at::kShort;
    case DType::kI8: return at::kChar;
    case DType::kU8: return at::kByte;
    case DType::kBool: return at::kBool;
  }
  return at::kFloat;  // unreachable: the switch is exhaustive
}

absl::StatusOr<DType> DTypeOfTorch(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return DType::kF64;
    case at::kFloat: return DType::kF32;
    case at::kHalf: return DType::kF16;
    case at::kBFloat16: return DType::kBF16;
    case at::kLong: return DType::kI64;
    case at::kInt: return DType::kI32;
    case at::kShort: return DType::kI16;
    case at::kChar: return DType::kI8;
    case at::kByte: return DType::kU8;
    case at::kBool: return DType::kBool;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("torch dtype ", c10::toString(type), " cannot be stored in safetensors"));
  }
}

absl::Status TensorMap::Add(const std::string& name, at::Tensor tensor) {
  RETURN_IF_ERROR(DTypeOfTorch(tensor.scalar_type()).status());
  return GuardTorch(absl::StrCat(label_, ": tensor '", name, "'"), [&]() -> absl::Status {
    tensors_[name] = tensor.to(at::kCPU).contiguous();
    return absl::OkStatus();
  });
}

absl::StatusOr<at::Tensor> TensorMap::Stored(absl::string_view name) const {
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
  ASSIGN_OR_RETURN(at::Tensor t, Stored(name));
  TensorInfo info;
  info.name = std::string(name);
  ASSIGN_OR_RETURN(info.dtype, DTypeOfTorch(t.scalar_type()));
  info.shape.assign(t.sizes().begin(), t.sizes().end());
  info.end = t.numel() * t.element_size();
  return info;
}

absl::StatusOr<at::Tensor> TensorMap::Tensor(absl::string_view name) const {
  ASSIGN_OR_RETURN(at::Tensor t, Stored(name));
  return GuardTorch(absl::StrCat(label_, ": tensor '", name, "'"),
                    [&]() -> absl::StatusOr<at::Tensor> { return t.to(at::kFloat); });
}

}  // namespace steadyeval
