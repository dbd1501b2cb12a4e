// The safetensors header: parsing and validation (no tensor data is read here).
//
// Layout: u64 little-endian N, N bytes of JSON, then the data buffer. Every tensor's
// `data_offsets` are relative to the data buffer, must not overlap, must be exactly
// numel × itemsize long, and the largest end must equal the data buffer's length — a file
// shorter than that is still being written (or truncated) and is rejected.
// Used by the coordinator's completeness check and by the worker's checkpoint reader.
// Thread-safe (pure functions; the file reader only reads, through a FileSystem).
#ifndef STEADYEVAL_COMMON_SAFETENSORS_H_
#define STEADYEVAL_COMMON_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/file_system.h"

namespace steadyeval {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// "F32" etc. INVALID_ARGUMENT for anything else.
absl::StatusOr<DType> ParseDType(absl::string_view name);
absl::string_view DTypeName(DType dtype);
size_t DTypeSize(DType dtype);
bool IsFloating(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data buffer
  uint64_t end = 0;
  int64_t numel() const;
};

struct SafetensorsHeader {
  uint64_t data_offset = 0;  // 8 + N: where the data buffer starts in the file
  uint64_t data_length = 0;  // largest end over all tensors
  std::map<std::string, std::string> metadata;
  std::vector<TensorInfo> tensors;  // sorted by begin offset
};

// Largest header JSON accepted (the format's own reference limit is 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

// Parses `header_json` (the N bytes after the length prefix) of a file of `file_size`
// bytes. `label` names the file in error messages. INVALID_ARGUMENT for malformed JSON,
// unknown dtype, bad shapes or offsets, overlaps; FAILED_PRECONDITION when the file is
// shorter or longer than the header says (a partial write).
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view header_json,
                                                         uint64_t file_size,
                                                         absl::string_view label);

// Reads and validates the header of the file at `path` on `fs` (reads only 8 + N bytes).
// The file system's errors as it reports them (NOT_FOUND for a missing file); otherwise
// as ParseSafetensorsHeader, plus FAILED_PRECONDITION for a file too short for its
// header and INVALID_ARGUMENT for a header length over kMaxSafetensorsHeaderBytes.
absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path,
                                                        FileSystem* fs = FileSystem::Local());

// Validates the header of a whole safetensors file whose bytes are `file` (e.g. a
// mapping: nothing is copied but the header's strings). `label` names it in errors; the
// codes are those of ReadSafetensorsHeader.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsFile(absl::string_view file,
                                                       absl::string_view label);

// Serializes a header for `tensors` (offsets filled in, in order, back to back) and
// returns the full prefix: length + JSON padded with spaces to 8-byte alignment.
// Used by the fixture writer and the averaging writer.
std::string BuildSafetensorsHeader(std::vector<TensorInfo>& tensors,
                                   const std::map<std::string, std::string>& metadata = {});

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_SAFETENSORS_H_
