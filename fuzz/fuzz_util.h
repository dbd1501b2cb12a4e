// Small helpers shared by the fuzz targets (header-only: each target is one file).
#ifndef STEADYEVAL_FUZZ_FUZZ_UTIL_H_
#define STEADYEVAL_FUZZ_FUZZ_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/string_view.h"

namespace steadyeval::fuzz {

// An invariant of a parser's successful result does not hold: a finding. Aborts so that
// libFuzzer (and the replay tests) report the input.
[[noreturn]] inline void Fail(const char* what) {
  std::fprintf(stderr, "fuzz invariant violated: %s\n", what);
  std::abort();
}
#define FUZZ_CHECK(cond)                        \
  do {                                          \
    if (!(cond)) ::steadyeval::fuzz::Fail(#cond); \
  } while (0)

inline absl::string_view AsView(const uint8_t* data, size_t size) {
  return absl::string_view(reinterpret_cast<const char*>(data), size);
}

// Reads a little-endian integer of `bytes` bytes from the front of `in` and removes them;
// 0 (and `in` emptied) when fewer remain.
inline uint64_t TakeLE(absl::string_view& in, int bytes) {
  if (in.size() < static_cast<size_t>(bytes)) {
    in = absl::string_view();
    return 0;
  }
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  in.remove_prefix(bytes);
  return v;
}

// Takes the first `n` bytes of `in` (all of it when shorter).
inline absl::string_view TakeBytes(absl::string_view& in, uint64_t n) {
  const size_t take = n < in.size() ? static_cast<size_t>(n) : in.size();
  absl::string_view out = in.substr(0, take);
  in.remove_prefix(take);
  return out;
}

}  // namespace steadyeval::fuzz

#endif  // STEADYEVAL_FUZZ_FUZZ_UTIL_H_
