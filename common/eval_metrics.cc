#include "common/eval_metrics.h"

#include <unicode/locid.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <unordered_map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/mecab_tokenizer.h"
#include "common/status.h"

namespace steadyeval {
namespace {

// ---- Python str semantics over code points --------------------------------------------------

using U32 = std::u32string;

U32 Decode(absl::string_view text) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  const int32_t length = static_cast<int32_t>(text.size());
  U32 out;
  out.reserve(text.size());
  for (int32_t i = 0; i < length;) {
    UChar32 c;
    U8_NEXT(bytes, i, length, c);
    out.push_back(c < 0 ? U'\uFFFD' : static_cast<char32_t>(c));
  }
  return out;
}

std::string Encode(const U32& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    uint8_t buf[U8_MAX_LENGTH];
    int32_t n = 0;
    UBool error = false;
    U8_APPEND(buf, n, U8_MAX_LENGTH, static_cast<UChar32>(c), error);
    if (error) {  // unreachable for code points that came from Decode()
      n = 0;
      U8_APPEND_UNSAFE(buf, n, 0xFFFD);
    }
    out.append(reinterpret_cast<const char*>(buf), n);
  }
  return out;
}

// str.isspace(): bidirectional class WS, B or S, or category Zs (CPython 3.11's table).
bool PyIsSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
         c == 0x202f || c == 0x205f || c == 0x3000;
}

U32 PyStrip(const U32& s) {
  size_t begin = 0, end = s.size();
  while (begin < end && PyIsSpace(s[begin])) ++begin;
  while (end > begin && PyIsSpace(s[end - 1])) --end;
  return s.substr(begin, end - begin);
}

U32 PyRstrip(const U32& s) {
  size_t end = s.size();
  while (end > 0 && PyIsSpace(s[end - 1])) --end;
  return s.substr(0, end);
}

// str.split() with no separator: runs of whitespace separate, no empty pieces.
std::vector<U32> PySplit(const U32& s) {
  std::vector<U32> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && PyIsSpace(s[i])) ++i;
    size_t start = i;
    while (i < s.size() && !PyIsSpace(s[i])) ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

// str.split(sep) for a one-character separator: keeps empty pieces.
std::vector<U32> PySplitOn(const U32& s, char32_t sep) {
  std::vector<U32> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

// str.lower(): full Unicode lowercase mapping (SpecialCasing, final sigma), no locale.
U32 PyLower(const U32& s) {
  icu::UnicodeString us =
      icu::UnicodeString::fromUTF32(reinterpret_cast<const UChar32*>(s.data()),
                                    static_cast<int32_t>(s.size()));
  us.toLower(icu::Locale::getRoot());
  U32 out;
  out.reserve(s.size());
  for (int32_t i = 0; i < us.length(); i = us.moveIndex32(i, 1)) {
    out.push_back(static_cast<char32_t>(us.char32At(i)));
  }
  return out;
}

// `\w` of Python's re for str patterns: str.isalnum() (letters L*, or any numeric type) or '_'.
bool PyIsWordChar(char32_t c) {
  if (c == U'_') return true;
  const UChar32 cp = static_cast<UChar32>(c);
  return u_isalpha(cp) || u_getIntPropertyValue(cp, UCHAR_NUMERIC_TYPE) != U_NT_NONE;
}

bool IsAsciiDigit(char32_t c) { return c >= U'0' && c <= U'9'; }

// ---- fuzzywuzzy ----------------------------------------------------------------------------

U32 FullProcess(const U32& s) {
  U32 out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c >= 128 && c <= 255) continue;    // utils.asciidammit (force_ascii=True)
    out.push_back(PyIsWordChar(c) ? c : U' ');  // re.sub(r"(?ui)\W", " ", s)
  }
  return PyStrip(PyLower(out));
}

U32 ProcessAndSort(const U32& s) {
  std::vector<U32> tokens = PySplit(FullProcess(s));
  std::sort(tokens.begin(), tokens.end());
  U32 joined;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0) joined.push_back(U' ');
    joined += tokens[i];
  }
  return PyStrip(joined);
}

size_t LongestCommonSubsequence(const U32& a, const U32& b) {
  std::vector<size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// fuzz.ratio with its decorators in order: check_for_equivalence, then check_empty_string.
int FuzzRatio(const U32& a, const U32& b) {
  if (a == b) return 100;
  if (a.empty() || b.empty()) return 0;
  // python-Levenshtein's ratio: (lensum - indel distance) / lensum, indel = lensum - 2 LCS.
  const size_t lensum = a.size() + b.size();
  const size_t distance = lensum - 2 * LongestCommonSubsequence(a, b);
  const double ratio =
      (static_cast<double>(lensum) - static_cast<double>(distance)) / static_cast<double>(lensum);
  return static_cast<int>(std::nearbyint(100.0 * ratio));  // int(round(x)): half to even
}

// ---- Exact mean (statistics.mean) ----------------------------------------------------------

// Unsigned integer of arbitrary size, little-endian 32-bit limbs.
class BigUint {
 public:
  // Adds m * 2^shift.
  void AddShifted(uint64_t m, int shift) {
    const size_t limb = static_cast<size_t>(shift / 32);
    unsigned __int128 v = static_cast<unsigned __int128>(m) << (shift % 32);
    if (limbs_.size() < limb + 4) limbs_.resize(limb + 4, 0);
    uint64_t carry = 0;
    for (size_t i = limb; i < limbs_.size() && (v != 0 || carry != 0); ++i) {
      const uint64_t sum = static_cast<uint64_t>(limbs_[i]) + static_cast<uint32_t>(v) + carry;
      limbs_[i] = static_cast<uint32_t>(sum);
      carry = sum >> 32;
      v >>= 32;
      if (i + 1 == limbs_.size() && (v != 0 || carry != 0)) limbs_.push_back(0);
    }
  }
  int Compare(const BigUint& o) const {
    const size_t n = std::max(limbs_.size(), o.limbs_.size());
    for (size_t i = n; i-- > 0;) {
      const uint32_t a = Limb(i), b = o.Limb(i);
      if (a != b) return a < b ? -1 : 1;
    }
    return 0;
  }
  // *this -= o; requires *this >= o.
  void Subtract(const BigUint& o) {
    int64_t borrow = 0;
    for (size_t i = 0; i < limbs_.size(); ++i) {
      int64_t d = static_cast<int64_t>(limbs_[i]) - o.Limb(i) - borrow;
      borrow = d < 0 ? 1 : 0;
      limbs_[i] = static_cast<uint32_t>(d + (borrow << 32));
    }
  }
  void ShiftLeftLimbs(size_t count) { limbs_.insert(limbs_.begin(), count, 0); }
  // *this /= d; returns the remainder.
  uint32_t Divide(uint32_t d) {
    uint64_t rem = 0;
    for (size_t i = limbs_.size(); i-- > 0;) {
      const uint64_t cur = (rem << 32) | limbs_[i];
      limbs_[i] = static_cast<uint32_t>(cur / d);
      rem = cur % d;
    }
    return static_cast<uint32_t>(rem);
  }
  size_t BitLength() const {
    for (size_t i = limbs_.size(); i-- > 0;) {
      if (limbs_[i] != 0) return i * 32 + (32 - static_cast<size_t>(__builtin_clz(limbs_[i])));
    }
    return 0;
  }
  bool Bit(size_t i) const { return (Limb(i / 32) >> (i % 32)) & 1u; }
  bool AnyBitBelow(size_t n) const {
    for (size_t i = 0; i < n / 32; ++i) {
      if (Limb(i) != 0) return true;
    }
    return n % 32 != 0 && (Limb(n / 32) & ((1u << (n % 32)) - 1)) != 0;
  }

 private:
  uint32_t Limb(size_t i) const { return i < limbs_.size() ? limbs_[i] : 0; }
  std::vector<uint32_t> limbs_;
};

// ---- numpy-style summation -----------------------------------------------------------------

// numpy's pairwise summation (the inner loop of np.add.reduce on contiguous doubles).
double PairwiseSum(const double* a, size_t n) {
  if (n < 8) {
    double res = 0.;
    for (size_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (size_t j = 0; j < 8; ++j) r[j] = a[j];
    size_t i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (size_t j = 0; j < 8; ++j) r[j] += a[i + j];
    }
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return PairwiseSum(a, n2) + PairwiseSum(a + n2, n - n2);
}

double NumpyMean(const std::vector<double>& v) {
  return PairwiseSum(v.data(), v.size()) / static_cast<double>(v.size());
}

double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

bool IsConstant(const std::vector<double>& v) {
  return std::all_of(v.begin(), v.end(), [&](double x) { return x == v[0]; });
}

bool HasNan(const std::vector<double>& v) {
  return std::any_of(v.begin(), v.end(), [](double x) { return std::isnan(x); });
}

// scipy.stats.rankdata(method='average').
std::vector<double> AverageRanks(const std::vector<double>& v) {
  std::vector<size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> ranks(v.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i + 1;
    while (j < order.size() && v[order[j]] == v[order[i]]) ++j;
    const double rank = 0.5 * static_cast<double>(j + i + 1);
    for (size_t k = i; k < j; ++k) ranks[order[k]] = rank;
    i = j;
  }
  return ranks;
}

// ---- sacrebleu -----------------------------------------------------------------------------

// re.sub over a pattern of two one-character classes, replacing group1 group2 by
// `before` group1 `middle` group2 `after`; matches do not overlap (left to right).
template <typename First, typename Second>
U32 SubstitutePairs(const U32& s, First first, Second second, const U32& before,
                    const U32& middle, const U32& after) {
  U32 out;
  out.reserve(s.size() * 2);
  size_t i = 0;
  while (i < s.size()) {
    if (i + 1 < s.size() && first(s[i]) && second(s[i + 1])) {
      out += before;
      out.push_back(s[i]);
      out += middle;
      out.push_back(s[i + 1]);
      out += after;
      i += 2;
    } else {
      out.push_back(s[i]);
      ++i;
    }
  }
  return out;
}

// The class of sacrebleu's first 13a regexp: ASCII punctuation other than ' , - . and space.
bool Is13aSymbol(char32_t c) {
  return (c >= 0x7b && c <= 0x7e) || (c >= 0x5b && c <= 0x60) || (c >= 0x20 && c <= 0x26) ||
         (c >= 0x28 && c <= 0x2b) || (c >= 0x3a && c <= 0x40) || c == 0x2f;
}

U32 JoinTokens(const std::vector<U32>& tokens) {
  U32 out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0) out.push_back(U' ');
    out += tokens[i];
  }
  return out;
}

U32 Tokenize13aU32(const U32& input) {
  std::string line = Encode(input);
  // Language-independent part (ASCII patterns, so byte-wise replacement is exact).
  line = absl::StrReplaceAll(line, {{"<skipped>", ""}});
  line = absl::StrReplaceAll(line, {{"-\n", ""}});
  line = absl::StrReplaceAll(line, {{"\n", " "}});
  if (line.find('&') != std::string::npos) {
    line = absl::StrReplaceAll(line, {{"&quot;", "\""}});
    line = absl::StrReplaceAll(line, {{"&amp;", "&"}});
    line = absl::StrReplaceAll(line, {{"&lt;", "<"}});
    line = absl::StrReplaceAll(line, {{"&gt;", ">"}});
  }
  U32 s = Decode(absl::StrCat(" ", line, " "));
  U32 spaced;
  spaced.reserve(s.size() * 2);
  for (char32_t c : s) {
    if (Is13aSymbol(c)) {
      spaced.push_back(U' ');
      spaced.push_back(c);
      spaced.push_back(U' ');
    } else {
      spaced.push_back(c);
    }
  }
  auto not_digit = [](char32_t c) { return !IsAsciiDigit(c); };
  auto is_period_comma = [](char32_t c) { return c == U'.' || c == U','; };
  auto is_dash = [](char32_t c) { return c == U'-'; };
  // Period and comma unless preceded by a digit, then unless followed by a digit.
  s = SubstitutePairs(spaced, not_digit, is_period_comma, U"", U" ", U" ");
  s = SubstitutePairs(s, is_period_comma, not_digit, U" ", U" ", U"");
  // Dash preceded by a digit.
  s = SubstitutePairs(s, IsAsciiDigit, is_dash, U"", U" ", U" ");
  return JoinTokens(PySplit(s));
}

absl::StatusOr<U32> TokenizeJaMecabU32(const U32& line) {
  ASSIGN_OR_RETURN(const MecabTokenizer* mecab, DefaultMecabTokenizer());
  ASSIGN_OR_RETURN(std::string wakati, mecab->Wakati(Encode(PyStrip(line))));
  return PyStrip(Decode(wakati + "\n"));
}

absl::StatusOr<U32> TokenizeFor(BleuTokenizer tokenizer, const U32& line) {
  if (tokenizer == BleuTokenizer::k13a) return Tokenize13aU32(line);
  return TokenizeJaMecabU32(line);
}

// sacrebleu's BLEU._preprocess_segment: tokenize(sent.rstrip()).
absl::StatusOr<U32> Preprocess(BleuTokenizer tokenizer, const U32& segment) {
  return TokenizeFor(tokenizer, PyRstrip(segment));
}

using NgramCounts = std::map<std::vector<U32>, int64_t>;

NgramCounts CountNgrams(const std::vector<U32>& tokens) {
  NgramCounts counts;
  for (size_t n = 1; n <= 4; ++n) {
    for (size_t i = 0; i + n <= tokens.size(); ++i) {
      ++counts[std::vector<U32>(tokens.begin() + i, tokens.begin() + i + n)];
    }
  }
  return counts;
}

BleuStats SegmentStats(const U32& hyp_tokens, const U32& ref_tokens) {
  const std::vector<U32> hyp = PySplit(hyp_tokens);
  const std::vector<U32> ref = PySplit(ref_tokens);
  const NgramCounts hyp_counts = CountNgrams(hyp);
  const NgramCounts ref_counts = CountNgrams(ref);
  BleuStats stats;
  stats.sys_len = static_cast<int64_t>(hyp.size());
  stats.ref_len = static_cast<int64_t>(ref.size());  // the closest of one reference length
  for (const auto& [ngram, count] : hyp_counts) {
    const size_t order = ngram.size() - 1;
    stats.total[order] += count;
    auto it = ref_counts.find(ngram);
    if (it != ref_counts.end()) stats.correct[order] += std::min(count, it->second);
  }
  return stats;
}

absl::Status CheckSameSize(size_t a, size_t b, absl::string_view what) {
  if (a != b) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", a, " predictions but ", b, " gold answers"));
  }
  if (a == 0) return absl::InvalidArgumentError(absl::StrCat(what, ": no examples"));
  return absl::OkStatus();
}

// ---- GenerationMetric objects --------------------------------------------------------------

using ExampleFn = absl::StatusOr<double> (*)(absl::string_view, absl::string_view);

class PerExampleMetric final : public GenerationMetric {
 public:
  PerExampleMetric(absl::string_view name, ExampleFn fn) : name_(name), fn_(fn) {}
  absl::string_view name() const override { return name_; }
  bool per_example() const override { return true; }
  absl::StatusOr<double> Example(absl::string_view pred, absl::string_view gold) const override {
    return fn_(pred, gold);
  }

 private:
  absl::string_view name_;
  ExampleFn fn_;
};

using CorrelationFn = absl::StatusOr<double> (*)(const std::vector<double>&,
                                                 const std::vector<double>&);

// pearson / spearman: corr(float(gold), parse_float(pred)) over the task, NaN -> 0.0.
class CorrelationMetric final : public GenerationMetric {
 public:
  CorrelationMetric(absl::string_view name, CorrelationFn fn) : name_(name), fn_(fn) {}
  absl::string_view name() const override { return name_; }
  bool per_example() const override { return false; }
  absl::StatusOr<double> Example(absl::string_view, absl::string_view) const override {
    return std::numeric_limits<double>::quiet_NaN();
  }
  absl::StatusOr<double> Aggregate(const std::vector<std::string>& preds,
                                   const std::vector<std::string>& golds) const override {
    RETURN_IF_ERROR(CheckSameSize(preds.size(), golds.size(), name_));
    std::vector<double> gold_values, pred_values;
    for (size_t i = 0; i < golds.size(); ++i) {
      std::optional<double> gold = PythonFloat(golds[i]);
      if (!gold.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat(
            name_, ": gold answer of example ", i, " (\"", golds[i],
            "\") is not a number; the metric needs numeric gold answers"));
      }
      gold_values.push_back(*gold);
      pred_values.push_back(LlmJpEvalParseFloat(preds[i]));
    }
    ASSIGN_OR_RETURN(double r, fn_(gold_values, pred_values));
    return std::isnan(r) ? 0.0 : r;
  }

 private:
  absl::string_view name_;
  CorrelationFn fn_;
};

absl::StatusOr<double> ExactMatchExample(absl::string_view pred, absl::string_view gold) {
  return pred == gold ? 1.0 : 0.0;
}

absl::StatusOr<double> ExactMatchFigureExample(absl::string_view pred, absl::string_view gold) {
  std::optional<double> p = PythonFloat(pred);
  std::optional<double> g = PythonFloat(gold);
  return p.has_value() && g.has_value() && *p == *g ? 1.0 : 0.0;
}

absl::StatusOr<double> CharF1Example(absl::string_view pred, absl::string_view gold) {
  return FuzzTokenSortRatio(pred, gold) / 100.0;
}

absl::StatusOr<double> SetF1Example(absl::string_view pred, absl::string_view gold) {
  return SetF1(pred, gold);
}

absl::StatusOr<double> BleuEnExample(absl::string_view pred, absl::string_view gold) {
  return LlmJpEvalBleu(pred, gold, BleuTokenizer::k13a);
}

absl::StatusOr<double> BleuJaExample(absl::string_view pred, absl::string_view gold) {
  return LlmJpEvalBleu(pred, gold, BleuTokenizer::kJaMecab);
}

const std::vector<const GenerationMetric*>& AllGenerationMetrics() {
  // Sorted by name. Never destroyed (the objects live for the program).
  static const auto* const metrics = new std::vector<const GenerationMetric*>{
      new PerExampleMetric("bleu_en", BleuEnExample),
      new PerExampleMetric("bleu_ja", BleuJaExample),
      new PerExampleMetric("char_f1", CharF1Example),
      new PerExampleMetric("exact_match", ExactMatchExample),
      new PerExampleMetric("exact_match_figure", ExactMatchFigureExample),
      new CorrelationMetric("pearson", PearsonR),
      new PerExampleMetric("set_f1", SetF1Example),
      new CorrelationMetric("spearman", SpearmanR),
  };
  return *metrics;
}

}  // namespace

// ---- Public API ----------------------------------------------------------------------------

absl::StatusOr<double> GenerationMetric::Aggregate(const std::vector<std::string>& preds,
                                                   const std::vector<std::string>& golds) const {
  RETURN_IF_ERROR(CheckSameSize(preds.size(), golds.size(), name()));
  std::vector<double> values;
  values.reserve(preds.size());
  for (size_t i = 0; i < preds.size(); ++i) {
    absl::StatusOr<double> value = Example(preds[i], golds[i]);
    if (!value.ok()) return Annotate(value.status(), absl::StrCat(name(), ": example ", i));
    values.push_back(*value);
  }
  return PythonMean(values);
}

const GenerationMetric* FindGenerationMetric(absl::string_view name) {
  for (const GenerationMetric* metric : AllGenerationMetrics()) {
    if (metric->name() == name) return metric;
  }
  return nullptr;
}

std::vector<std::string> GenerationMetricNames() {
  std::vector<std::string> names;
  for (const GenerationMetric* metric : AllGenerationMetrics()) names.emplace_back(metric->name());
  return names;
}

int FuzzTokenSortRatio(absl::string_view a, absl::string_view b) {
  return FuzzRatio(ProcessAndSort(Decode(a)), ProcessAndSort(Decode(b)));
}

std::string FuzzFullProcess(absl::string_view s) { return Encode(FullProcess(Decode(s))); }

double SetF1(absl::string_view pred, absl::string_view gold) {
  std::set<U32> pred_lines;
  for (const U32& line : PySplitOn(Decode(pred), U'\n')) pred_lines.insert(PyStrip(line));
  std::vector<U32> gold_lines;
  for (const U32& line : PySplitOn(Decode(gold), U'\n')) gold_lines.push_back(PyStrip(line));
  int64_t hits = 0;
  for (const U32& line : pred_lines) {
    if (std::find(gold_lines.begin(), gold_lines.end(), line) != gold_lines.end()) ++hits;
  }
  const double precision = static_cast<double>(hits) / static_cast<double>(pred_lines.size());
  const double recall = static_cast<double>(hits) / static_cast<double>(gold_lines.size());
  return precision + recall != 0 ? 2 * (precision * recall) / (precision + recall) : 0.0;
}

std::optional<double> PythonFloat(absl::string_view text) {
  // Non-ASCII whitespace -> ' ', Unicode decimal digits -> ASCII, anything else non-ASCII
  // is invalid (CPython's _PyUnicode_TransformDecimalAndSpaceToASCII).
  std::string ascii;
  for (char32_t c : Decode(text)) {
    if (c < 128) {
      ascii.push_back(static_cast<char>(c));
    } else if (PyIsSpace(c)) {
      ascii.push_back(' ');
    } else if (u_charType(static_cast<UChar32>(c)) == U_DECIMAL_DIGIT_NUMBER) {
      ascii.push_back(static_cast<char>('0' + u_charDigitValue(static_cast<UChar32>(c))));
    } else {
      return std::nullopt;
    }
  }
  auto is_ascii_space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
  };
  size_t begin = 0, end = ascii.size();
  while (begin < end && is_ascii_space(ascii[begin])) ++begin;
  while (end > begin && is_ascii_space(ascii[end - 1])) --end;
  const std::string trimmed = ascii.substr(begin, end - begin);
  // Underscores only between two digits; then dropped.
  std::string s;
  for (size_t i = 0; i < trimmed.size(); ++i) {
    if (trimmed[i] == '_') {
      const bool ok = i > 0 && i + 1 < trimmed.size() &&
                      std::isdigit(static_cast<unsigned char>(trimmed[i - 1])) &&
                      std::isdigit(static_cast<unsigned char>(trimmed[i + 1]));
      if (!ok) return std::nullopt;
      continue;
    }
    s.push_back(trimmed[i]);
  }
  // [sign] (inf | infinity | nan | digits [. digits] [exponent] | . digits [exponent])
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  std::string rest = s.substr(i);
  for (char& c : rest) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const bool negative = i > 0 && s[0] == '-';
  if (rest == "inf" || rest == "infinity") {
    return negative ? -std::numeric_limits<double>::infinity()
                    : std::numeric_limits<double>::infinity();
  }
  if (rest == "nan") return std::numeric_limits<double>::quiet_NaN();
  size_t digits = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++digits;
  }
  if (digits == 0) return std::nullopt;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    size_t exponent_digits = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i, ++exponent_digits;
    if (exponent_digits == 0) return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  return std::strtod(s.c_str(), nullptr);  // correctly rounded, like Python
}

double LlmJpEvalParseFloat(absl::string_view text) {
  std::string cleaned;
  for (char c : text) {
    if ((c >= '0' && c <= '9') || c == '.') cleaned.push_back(c);
  }
  // Only digits and dots remain: float() accepts them with at most one dot and a digit.
  const size_t dots = static_cast<size_t>(std::count(cleaned.begin(), cleaned.end(), '.'));
  if (dots > 1 || cleaned.size() == dots) return -2.0;
  return std::strtod(cleaned.c_str(), nullptr);
}

absl::StatusOr<double> PythonMean(const std::vector<double>& values) {
  if (values.empty()) return absl::InvalidArgumentError("mean of no values");
  BigUint positive, negative;
  for (double v : values) {
    if (!std::isfinite(v)) {  // Python gives nan/inf too; exactness is moot
      double sum = 0;
      for (double w : values) sum += w;
      return sum / static_cast<double>(values.size());
    }
    if (v == 0) continue;
    int exponent = 0;
    const double fraction = std::frexp(std::fabs(v), &exponent);  // |v| = fraction * 2^exponent
    uint64_t mantissa = static_cast<uint64_t>(std::ldexp(fraction, 53));
    int shift = exponent - 53 + 1074;  // in units of 2^-1074, the smallest subnormal
    if (shift < 0) {
      mantissa >>= -shift;  // subnormal: the dropped bits are zero
      shift = 0;
    }
    (v > 0 ? positive : negative).AddShifted(mantissa, shift);
  }
  bool result_negative = false;
  BigUint sum = positive;
  if (positive.Compare(negative) >= 0) {
    sum.Subtract(negative);
  } else {
    sum = negative;
    sum.Subtract(positive);
    result_negative = true;
  }
  if (sum.BitLength() == 0) return 0.0;
  // sum * 2^96 / n keeps more than 56 significant bits in the quotient.
  sum.ShiftLeftLimbs(3);
  const bool inexact = sum.Divide(static_cast<uint32_t>(values.size())) != 0;
  const size_t bits = sum.BitLength();
  const size_t low = bits - 56;
  uint64_t top = 0;
  for (size_t i = 0; i < 56; ++i) top |= static_cast<uint64_t>(sum.Bit(low + i)) << i;
  if (inexact || sum.AnyBitBelow(low)) top |= 1;  // sticky bit below the rounding bits
  const double magnitude =
      std::ldexp(static_cast<double>(top), static_cast<int>(low) - 1074 - 96);
  return result_negative ? -magnitude : magnitude;
}

absl::StatusOr<double> PearsonR(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size()) return absl::InvalidArgumentError("pearson: x and y differ in length");
  const size_t n = x.size();
  if (n < 2) {
    return absl::InvalidArgumentError(
        "pearson: needs at least 2 examples (scipy.stats.pearsonr raises otherwise)");
  }
  if (IsConstant(x) || IsConstant(y)) return std::numeric_limits<double>::quiet_NaN();
  if (n == 2) {
    auto sign = [](double v) { return v > 0 ? 1.0 : v < 0 ? -1.0 : v == 0 ? 0.0 : v; };
    return sign(x[1] - x[0]) * sign(y[1] - y[0]);
  }
  const double xmean = NumpyMean(x), ymean = NumpyMean(y);
  std::vector<double> xm(n), ym(n);
  for (size_t i = 0; i < n; ++i) {
    xm[i] = x[i] - xmean;
    ym[i] = y[i] - ymean;
  }
  const double normxm = std::sqrt(Dot(xm, xm)), normym = std::sqrt(Dot(ym, ym));
  for (size_t i = 0; i < n; ++i) {
    xm[i] /= normxm;
    ym[i] /= normym;
  }
  const double r = Dot(xm, ym);
  if (std::isnan(r)) return r;
  return std::max(std::min(r, 1.0), -1.0);
}

absl::StatusOr<double> SpearmanR(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size()) return absl::InvalidArgumentError("spearman: x and y differ in length");
  const size_t n = x.size();
  if (n <= 1 || IsConstant(x) || IsConstant(y) || HasNan(x) || HasNan(y)) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  // np.corrcoef of the average ranks.
  std::vector<double> rx = AverageRanks(x), ry = AverageRanks(y);
  const double mx = NumpyMean(rx), my = NumpyMean(ry);
  for (size_t i = 0; i < n; ++i) {
    rx[i] -= mx;
    ry[i] -= my;
  }
  const double scale = 1.0 / static_cast<double>(n - 1);
  const double cxy = Dot(rx, ry) * scale;
  const double cxx = Dot(rx, rx) * scale, cyy = Dot(ry, ry) * scale;
  const double r = cxy / std::sqrt(cyy) / std::sqrt(cxx);
  if (std::isnan(r)) return r;
  return std::max(std::min(r, 1.0), -1.0);
}

std::string Tokenize13a(absl::string_view line) { return Encode(Tokenize13aU32(Decode(line))); }

absl::StatusOr<std::string> TokenizeJaMecab(absl::string_view line) {
  ASSIGN_OR_RETURN(U32 tokens, TokenizeJaMecabU32(Decode(line)));
  return Encode(tokens);
}

BleuStats& BleuStats::operator+=(const BleuStats& other) {
  sys_len += other.sys_len;
  ref_len += other.ref_len;
  for (size_t i = 0; i < 4; ++i) {
    correct[i] += other.correct[i];
    total[i] += other.total[i];
  }
  return *this;
}

BleuStats BleuSegmentStats(absl::string_view hyp_tokens, absl::string_view ref_tokens) {
  return SegmentStats(Decode(hyp_tokens), Decode(ref_tokens));
}

double BleuFromStats(BleuStats stats, bool effective_order) {
  double bp = 1.0;
  if (stats.sys_len < stats.ref_len) {
    bp = stats.sys_len > 0 ? std::exp(1 - static_cast<double>(stats.ref_len) /
                                              static_cast<double>(stats.sys_len))
                           : 0.0;
  }
  if (std::all_of(stats.correct.begin(), stats.correct.end(), [](int64_t c) { return c == 0; })) {
    return 0.0;
  }
  std::array<double, 4> precisions{};
  double smooth_mteval = 1.;
  size_t eff_order = 4;
  for (size_t n = 1; n <= 4; ++n) {
    if (stats.total[n - 1] == 0) break;
    if (effective_order) eff_order = n;
    if (stats.correct[n - 1] == 0) {
      smooth_mteval *= 2;
      precisions[n - 1] = 100. / (smooth_mteval * static_cast<double>(stats.total[n - 1]));
    } else {
      precisions[n - 1] = 100. * static_cast<double>(stats.correct[n - 1]) /
                          static_cast<double>(stats.total[n - 1]);
    }
  }
  double log_sum = 0;
  for (size_t i = 0; i < eff_order; ++i) {
    log_sum += precisions[i] == 0.0 ? -9999999999.0 : std::log(precisions[i]);  // my_log
  }
  return bp * std::exp(log_sum / static_cast<double>(eff_order));
}

absl::StatusOr<double> SentenceBleu(absl::string_view hyp, absl::string_view ref,
                                    BleuTokenizer tokenizer) {
  ASSIGN_OR_RETURN(U32 hyp_tokens, Preprocess(tokenizer, Decode(hyp)));
  ASSIGN_OR_RETURN(U32 ref_tokens, Preprocess(tokenizer, Decode(ref)));
  return BleuFromStats(SegmentStats(hyp_tokens, ref_tokens), /*effective_order=*/true);
}

absl::StatusOr<double> CorpusBleu(const std::vector<std::string>& hyps,
                                  const std::vector<std::string>& refs, BleuTokenizer tokenizer,
                                  bool effective_order) {
  RETURN_IF_ERROR(CheckSameSize(hyps.size(), refs.size(), "corpus BLEU"));
  BleuStats stats;
  for (size_t i = 0; i < hyps.size(); ++i) {
    ASSIGN_OR_RETURN(U32 hyp_tokens, Preprocess(tokenizer, Decode(hyps[i])));
    ASSIGN_OR_RETURN(U32 ref_tokens, Preprocess(tokenizer, Decode(refs[i])));
    stats += SegmentStats(hyp_tokens, ref_tokens);
  }
  return BleuFromStats(stats, effective_order);
}

absl::StatusOr<double> LlmJpEvalBleu(absl::string_view pred, absl::string_view gold,
                                     BleuTokenizer tokenizer) {
  const U32 hyp = PyStrip(Decode(pred));
  const U32 ref = PyStrip(Decode(gold));
  if (hyp.empty() || ref.empty()) return hyp == ref ? 1.0 : 0.0;
  // corpus_score(hyp_string, [ref_string]): segment i is hyp[i] against ref[i]; zip() stops
  // at the shorter string. Tokenizing one code point at a time, memoised per character.
  std::unordered_map<char32_t, U32> tokenized;
  auto preprocess_char = [&](char32_t c) -> absl::StatusOr<U32> {
    auto it = tokenized.find(c);
    if (it != tokenized.end()) return it->second;
    ASSIGN_OR_RETURN(U32 tokens, Preprocess(tokenizer, U32(1, c)));
    tokenized.emplace(c, tokens);
    return tokens;
  };
  BleuStats stats;
  const size_t segments = std::min(hyp.size(), ref.size());
  for (size_t i = 0; i < segments; ++i) {
    ASSIGN_OR_RETURN(U32 hyp_tokens, preprocess_char(hyp[i]));
    ASSIGN_OR_RETURN(U32 ref_tokens, preprocess_char(ref[i]));
    stats += SegmentStats(hyp_tokens, ref_tokens);
  }
  return BleuFromStats(stats, /*effective_order=*/true);
}

}  // namespace steadyeval
