#include "common/text.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

namespace steadyeval {

std::string NormalizeNfkc(absl::string_view text) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfkc = icu::Normalizer2::getNFKCInstance(status);
  if (U_FAILURE(status)) return std::string(text);
  icu::UnicodeString in = icu::UnicodeString::fromUTF8(
      icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  icu::UnicodeString out = nfkc->normalize(in, status);
  if (U_FAILURE(status)) return std::string(text);
  std::string result;
  out.toUTF8String(result);
  return result;
}

std::string StripUnicode(absl::string_view text) {
  icu::UnicodeString s = icu::UnicodeString::fromUTF8(
      icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  int32_t begin = 0, end = s.length();
  while (begin < end && IsPythonSpace(s.char32At(begin))) begin = s.moveIndex32(begin, 1);
  while (end > begin) {
    int32_t prev = s.moveIndex32(end, -1);
    if (!IsPythonSpace(s.char32At(prev))) break;
    end = prev;
  }
  std::string result;
  s.tempSubStringBetween(begin, end).toUTF8String(result);
  return result;
}

std::string NormalizeGenerated(absl::string_view text) {
  size_t cut = text.find("\n\n");
  absl::string_view head = cut == absl::string_view::npos ? text : text.substr(0, cut);
  return StripUnicode(NormalizeNfkc(head));
}

bool IsPythonSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
         c == 0x202f || c == 0x205f || c == 0x3000;
}

std::pair<std::string, std::string> MoveTrailingWhitespace(const std::string& context,
                                                           const std::string& continuation) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(context.data());
  int32_t end = static_cast<int32_t>(context.size());
  while (end > 0) {
    int32_t start = end;
    UChar32 c;
    U8_PREV(bytes, 0, start, c);  // malformed: c < 0, never whitespace
    if (c < 0 || !IsPythonSpace(static_cast<uint32_t>(c))) break;
    end = start;
  }
  return {context.substr(0, end), context.substr(end) + continuation};
}

size_t CodePointCount(absl::string_view text) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  const int32_t length = static_cast<int32_t>(text.size());
  size_t count = 0;
  for (int32_t i = 0; i < length; ++count) {
    UChar32 c;
    U8_NEXT(bytes, i, length, c);
  }
  return count;
}

std::string BlankDigits(absl::string_view text) {
  std::string blanked;
  for (char c : text) {
    if (c < '0' || c > '9') {
      blanked.push_back(c);
    } else if (blanked.empty() || blanked.back() != '#') {
      blanked.push_back('#');
    }
  }
  return blanked;
}

}  // namespace steadyeval
