// Order-preserving binary key encodings for RocksDB (DESIGN §8).
//
// A key is a concatenation of components. Each component encodes so that comparing the
// encoded bytes (memcmp, RocksDB's default comparator) orders keys like comparing the
// component tuples:
//   - unsigned integers: fixed-width big-endian;
//   - strings: bytes with 0x00 escaped as 0x00 0xFF, terminated by 0x00 0x01, so a string
//     sorts before any longer string it prefixes and arbitrary bytes are allowed.
// Thread-safe (pure functions).
#ifndef STEADYEVAL_COMMON_KEYS_H_
#define STEADYEVAL_COMMON_KEYS_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace steadyeval {

class KeyBuilder {
 public:
  KeyBuilder& Str(absl::string_view s);
  KeyBuilder& U64(uint64_t v);
  KeyBuilder& U32(uint32_t v);
  const std::string& key() const { return key_; }
  std::string Release() { return std::move(key_); }

 private:
  std::string key_;
};

// Reads components back in the order they were written. Each getter returns DATA_LOSS
// when the bytes do not hold that component (corrupt stored key).
class KeyReader {
 public:
  explicit KeyReader(absl::string_view key) : rest_(key) {}
  absl::StatusOr<std::string> Str();
  absl::StatusOr<uint64_t> U64();
  absl::StatusOr<uint32_t> U32();
  bool done() const { return rest_.empty(); }
  absl::string_view rest() const { return rest_; }

 private:
  absl::string_view rest_;
};

// The smallest key greater than every key that starts with `prefix` (for range-scan upper
// bounds). Empty when no such key exists (prefix is all 0xFF).
std::string PrefixSuccessor(absl::string_view prefix);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_KEYS_H_
