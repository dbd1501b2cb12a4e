#include "common/safetensors.h"

#include <algorithm>
#include <climits>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace steadyeval {
namespace {

struct DTypeEntry {
  DType dtype;
  absl::string_view name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kF64, "F64", 8}, {DType::kF32, "F32", 4},  {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2}, {DType::kI8, "I8", 1},    {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
};

std::string HumanBytes(uint64_t n) {
  if (n >= (1ull << 30)) return absl::StrFormat("%.1f GB", n / 1e9);
  if (n >= (1ull << 20)) return absl::StrFormat("%.1f MB", n / 1e6);
  return absl::StrCat(n, " bytes");
}

}  // namespace

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  for (const auto& e : kDTypes) {
    if (e.name == name) return e.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", name, "'"));
}

absl::string_view DTypeName(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e.name;
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e.size;
  }
  return 0;
}

bool IsFloating(DType dtype) {
  return dtype == DType::kF64 || dtype == DType::kF32 || dtype == DType::kF16 ||
         dtype == DType::kBF16;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view header_json,
                                                         uint64_t file_size,
                                                         absl::string_view label) {
  auto bad = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": ", parts...));
  };
  nlohmann::json doc = nlohmann::json::parse(header_json.begin(), header_json.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return bad("header is not valid JSON");
  if (!doc.is_object()) return bad("header JSON is not an object");

  SafetensorsHeader header;
  header.data_offset = 8 + header_json.size();
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return bad("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return bad("__metadata__ value '", m.key(), "' is not a string");
        header.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) return bad("tensor '", name, "' entry is not an object");
    TensorInfo t;
    t.name = name;
    if (!v.contains("dtype") || !v["dtype"].is_string()) return bad("tensor '", name, "' has no dtype");
    auto dtype = ParseDType(v["dtype"].get<std::string>());
    if (!dtype.ok()) return bad("tensor '", name, "': ", dtype.status().message());
    t.dtype = *dtype;
    if (!v.contains("shape") || !v["shape"].is_array()) return bad("tensor '", name, "' has no shape");
    uint64_t elements = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) return bad("tensor '", name, "' has a non-integer or negative dimension");
      const uint64_t dim = d.get<uint64_t>();
      // TensorInfo::numel() is an int64_t: the count must fit in 63 bits.
      if (dim > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(elements, dim, &elements) ||
          elements > static_cast<uint64_t>(INT64_MAX)) {
        return bad("tensor '", name, "' has a shape whose element count overflows 64 bits");
      }
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2 ||
        !v["data_offsets"][0].is_number_unsigned() || !v["data_offsets"][1].is_number_unsigned()) {
      return bad("tensor '", name, "' needs data_offsets [begin, end]");
    }
    t.begin = v["data_offsets"][0].get<uint64_t>();
    t.end = v["data_offsets"][1].get<uint64_t>();
    if (t.end < t.begin) return bad("tensor '", name, "' ends before it begins");
    uint64_t expected = 0;
    if (__builtin_mul_overflow(elements, static_cast<uint64_t>(DTypeSize(t.dtype)), &expected)) {
      return bad("tensor '", name, "' has a byte size that overflows 64 bits");
    }
    if (t.end - t.begin != expected) {
      return bad("tensor '", name, "' spans ", t.end - t.begin, " bytes but shape and dtype ",
                 DTypeName(t.dtype), " need ", expected);
    }
    header.tensors.push_back(std::move(t));
  }
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  uint64_t cursor = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo& t : header.tensors) {
    if (prev != nullptr && t.begin < cursor) {
      return bad("tensors '", prev->name, "' and '", t.name, "' overlap");
    }
    if (t.end > cursor) {
      cursor = t.end;
      prev = &t;
    }
  }
  header.data_length = cursor;
  uint64_t have = file_size >= header.data_offset ? file_size - header.data_offset : 0;
  if (file_size < header.data_offset || have < header.data_length) {
    return absl::FailedPreconditionError(absl::StrCat(
        label, " is ", HumanBytes(file_size), ", header says ",
        HumanBytes(header.data_offset + header.data_length), " (still being written?)"));
  }
  if (have > header.data_length) {
    return absl::FailedPreconditionError(absl::StrCat(
        label, " is ", HumanBytes(file_size), " but its header accounts for only ",
        HumanBytes(header.data_offset + header.data_length), " (trailing bytes: corrupt file?)"));
  }
  return header;
}

namespace {

// The header length N from the file's first 8 bytes (`prefix`, all of them when the file
// has that many), checked against the size of the whole file.
absl::StatusOr<uint64_t> HeaderLength(absl::string_view prefix, uint64_t file_size,
                                      absl::string_view label) {
  if (file_size < 8 || prefix.size() < 8) {
    return absl::FailedPreconditionError(absl::StrCat(
        label, " is ", file_size, " bytes, too short for a safetensors header (still being written?)"));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(prefix[i]);
  if (n > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        label, ": header length ", n, " is over the ", kMaxSafetensorsHeaderBytes, "-byte limit"));
  }
  if (n > file_size - 8) {
    return absl::FailedPreconditionError(absl::StrCat(
        label, " is ", HumanBytes(file_size), ", its header alone says ", HumanBytes(8 + n),
        " (still being written?)"));
  }
  return n;
}

}  // namespace

absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path, FileSystem* fs) {
  ASSIGN_OR_RETURN(FileStat stat, fs->Stat(path));
  ASSIGN_OR_RETURN(std::string prefix, fs->ReadRange(path, 0, 8));
  ASSIGN_OR_RETURN(uint64_t n, HeaderLength(prefix, stat.size, path));
  ASSIGN_OR_RETURN(std::string json, fs->ReadRange(path, 8, n));
  if (json.size() < n) return absl::DataLossError(absl::StrCat(path, ": short read of the header"));
  return ParseSafetensorsHeader(json, stat.size, path);
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsFile(absl::string_view file,
                                                       absl::string_view label) {
  ASSIGN_OR_RETURN(uint64_t n, HeaderLength(file.substr(0, 8), file.size(), label));
  return ParseSafetensorsHeader(file.substr(8, n), file.size(), label);
}

std::string BuildSafetensorsHeader(std::vector<TensorInfo>& tensors,
                                   const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json doc = nlohmann::ordered_json::object();
  if (!metadata.empty()) doc["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (TensorInfo& t : tensors) {
    t.begin = offset;
    t.end = offset + static_cast<uint64_t>(t.numel()) * DTypeSize(t.dtype);
    offset = t.end;
    doc[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                   {"shape", t.shape},
                   {"data_offsets", {t.begin, t.end}}};
  }
  std::string json = doc.dump();
  while ((8 + json.size()) % 8 != 0) json.push_back(' ');
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += json;
  return out;
}

}  // namespace steadyeval
