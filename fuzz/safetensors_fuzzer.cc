// The safetensors header parser (common/safetensors.h), as the worker's checkpoint reader
// and the coordinator's completeness check use it.
//
// Input: the start of a safetensors file, u64 LE header length N then the N bytes of header
// JSON, optionally followed by a u64 LE data length D: the file is taken to be 8 + N + D
// bytes long (without D, as long as the input). The seeds are real headers with the D of
// their file, so they parse.
#include <cstdint>
#include <vector>

#include "common/safetensors.h"
#include "fuzz/fuzz_util.h"

using namespace steadyeval;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view in = fuzz::AsView(data, size);
  const uint64_t declared = fuzz::TakeLE(in, 8);
  const absl::string_view header_json = fuzz::TakeBytes(in, declared);
  uint64_t file_size = 8 + header_json.size();
  if (in.size() >= 8) {
    file_size += fuzz::TakeLE(in, 8);  // wraps for D near 2^64: a file "shorter" than its header
  } else {
    file_size += in.size();
  }
  auto header = ParseSafetensorsHeader(header_json, file_size, "fuzz.safetensors");
  if (!header.ok()) return 0;

  // What the readers rely on.
  FUZZ_CHECK(header->data_offset == 8 + header_json.size());
  FUZZ_CHECK(file_size >= header->data_offset);
  FUZZ_CHECK(file_size - header->data_offset == header->data_length);
  uint64_t previous_end = 0;
  uint64_t packed_bytes = 0;  // the tensors' bytes back to back, without gaps
  for (const TensorInfo& t : header->tensors) {
    FUZZ_CHECK(t.begin <= t.end);
    FUZZ_CHECK(t.end <= header->data_length);
    if (t.end > t.begin) {
      FUZZ_CHECK(t.begin >= previous_end);  // no overlap (sorted by begin)
      previous_end = t.end;
    }
    const int64_t numel = t.numel();
    FUZZ_CHECK(numel >= 0);
    FUZZ_CHECK(static_cast<uint64_t>(numel) * DTypeSize(t.dtype) == t.end - t.begin);
    FUZZ_CHECK(ParseDType(DTypeName(t.dtype)).ok());
    packed_bytes += t.end - t.begin;
  }

  // The averaging writer's round trip: a header built for the same tensors parses back.
  std::vector<TensorInfo> tensors = header->tensors;
  const std::string built = BuildSafetensorsHeader(tensors, header->metadata);
  absl::string_view rebuilt(built);
  const uint64_t n = fuzz::TakeLE(rebuilt, 8);
  FUZZ_CHECK(n == rebuilt.size());
  auto again = ParseSafetensorsHeader(rebuilt, built.size() + packed_bytes, "rebuilt");
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->tensors.size() == header->tensors.size());
  FUZZ_CHECK(again->metadata == header->metadata);
  return 0;
}
