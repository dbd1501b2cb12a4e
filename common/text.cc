#include "common/text.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

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
  while (begin < end && u_isUWhiteSpace(s.char32At(begin))) begin = s.moveIndex32(begin, 1);
  while (end > begin) {
    int32_t prev = s.moveIndex32(end, -1);
    if (!u_isUWhiteSpace(s.char32At(prev))) break;
    end = prev;
  }
  std::string result;
  s.tempSubStringBetween(begin, end).toUTF8String(result);
  return result;
}

std::string NormalizeGenerated(absl::string_view text) {
  size_t cut = text.find("\n\n");
  absl::string_view head = cut == absl::string_view::npos ? text : text.substr(0, cut);
  return NormalizeNfkc(StripUnicode(head));
}

}  // namespace steadyeval
