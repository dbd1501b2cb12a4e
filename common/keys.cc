#include "common/keys.h"

#include "absl/strings/str_cat.h"

namespace steadyeval {

KeyBuilder& KeyBuilder::Str(absl::string_view s) {
  for (char c : s) {
    key_.push_back(c);
    if (c == '\0') key_.push_back('\xff');
  }
  key_.push_back('\0');
  key_.push_back('\x01');
  return *this;
}

KeyBuilder& KeyBuilder::U64(uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) key_.push_back(static_cast<char>((v >> shift) & 0xff));
  return *this;
}

KeyBuilder& KeyBuilder::U32(uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) key_.push_back(static_cast<char>((v >> shift) & 0xff));
  return *this;
}

absl::StatusOr<std::string> KeyReader::Str() {
  std::string out;
  size_t i = 0;
  while (i + 1 < rest_.size()) {
    char c = rest_[i];
    if (c != '\0') {
      out.push_back(c);
      ++i;
      continue;
    }
    char next = rest_[i + 1];
    if (next == '\x01') {
      rest_.remove_prefix(i + 2);
      return out;
    }
    if (next != '\xff') break;
    out.push_back('\0');
    i += 2;
  }
  return absl::DataLossError("stored key: unterminated or badly escaped string component");
}

absl::StatusOr<uint64_t> KeyReader::U64() {
  if (rest_.size() < 8) return absl::DataLossError("stored key: truncated 64-bit component");
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(rest_[i]);
  rest_.remove_prefix(8);
  return v;
}

absl::StatusOr<uint32_t> KeyReader::U32() {
  if (rest_.size() < 4) return absl::DataLossError("stored key: truncated 32-bit component");
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(rest_[i]);
  rest_.remove_prefix(4);
  return v;
}

std::string PrefixSuccessor(absl::string_view prefix) {
  std::string s(prefix);
  while (!s.empty()) {
    unsigned char last = static_cast<unsigned char>(s.back());
    if (last != 0xff) {
      s.back() = static_cast<char>(last + 1);
      return s;
    }
    s.pop_back();
  }
  return s;
}

}  // namespace steadyeval
