#include "common/text_escape.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace steadyeval {
namespace {

// The length of the valid UTF-8 sequence starting at text[i] (0 if invalid) and its
// code point.
size_t DecodeUtf8(absl::string_view text, size_t i, uint32_t* code_point) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t lead = byte(i);
  size_t length;
  uint32_t value;
  if (lead < 0x80) {
    *code_point = lead;
    return 1;
  } else if ((lead & 0xE0) == 0xC0) {
    length = 2;
    value = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    value = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    value = lead & 0x07;
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  for (size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    value = (value << 6) | (byte(i + k) & 0x3F);
  }
  static constexpr uint32_t kMinimum[] = {0, 0, 0x80, 0x800, 0x10000};
  if (value < kMinimum[length] || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) {
    return 0;
  }
  *code_point = value;
  return length;
}

}  // namespace

std::string Printable(absl::string_view text, size_t max_bytes) {
  const size_t total = text.size();
  const bool cut = max_bytes > 0 && total > max_bytes;
  absl::string_view body = cut ? text.substr(0, max_bytes) : text;
  std::string out;
  out.reserve(body.size());
  for (size_t i = 0; i < body.size();) {
    uint32_t code_point = 0;
    const size_t length = DecodeUtf8(body, i, &code_point);
    if (length == 0) {
      absl::StrAppend(&out, absl::StrFormat("\\x%02x", static_cast<uint8_t>(body[i])));
      ++i;
      continue;
    }
    if (code_point < 0x20 || code_point == 0x7F) {
      if (code_point == '\t') {
        out += "\\t";
      } else if (code_point == '\n') {
        out += "\\n";
      } else {
        absl::StrAppend(&out, absl::StrFormat("\\x%02x", code_point));
      }
    } else if (code_point >= 0x80 && code_point <= 0x9F) {
      absl::StrAppend(&out, absl::StrFormat("\\u{%02x}", code_point));
    } else {
      out.append(body.data() + i, length);
    }
    i += length;
  }
  if (cut) absl::StrAppend(&out, "…(", total, " bytes)");
  return out;
}

}  // namespace steadyeval
