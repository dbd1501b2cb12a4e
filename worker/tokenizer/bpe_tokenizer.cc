#include "worker/tokenizer/bpe_tokenizer.h"

#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <queue>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace steadyeval {
namespace {

using nlohmann::json;

// The pre-tokenizer regex of GPT-2 (and of every ByteLevel pre-tokenizer with use_regex).
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Ids above this are rejected as malformed: id_to_piece_ is a dense table.
constexpr int64_t kMaxTokenId = int64_t{1} << 24;

constexpr char kReplacementCharacter[] = "\xEF\xBF\xBD";  // U+FFFD

void AppendUtf8(UChar32 c, std::string& out) {
  char buffer[U8_MAX_LENGTH];
  int32_t length = 0;
  UBool error = false;
  U8_APPEND(buffer, length, U8_MAX_LENGTH, c, error);
  if (!error) out.append(buffer, static_cast<size_t>(length));
}

// Decodes the code point at `pos` of valid UTF-8 `text` and advances `pos`.
UChar32 NextCodePoint(absl::string_view text, size_t& pos) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  int32_t offset = static_cast<int32_t>(pos);
  UChar32 c;
  U8_NEXT(bytes, offset, static_cast<int32_t>(text.size()), c);
  pos = static_cast<size_t>(offset);
  return c;
}

// Decodes the code point that ends at `pos` of valid UTF-8 `text` (pos > 0) and moves `pos`
// to its start.
UChar32 PreviousCodePoint(absl::string_view text, size_t& pos) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  int32_t offset = static_cast<int32_t>(pos);
  UChar32 c;
  U8_PREV(bytes, 0, offset, c);
  pos = static_cast<size_t>(offset);
  return c;
}

bool IsValidUtf8(absl::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    if (NextCodePoint(text, pos) < 0) return false;
  }
  return true;
}

// Rust's `String::from_utf8_lossy`: each maximal prefix of an ill-formed sequence becomes one
// U+FFFD (Unicode's "substitution of maximal subparts").
std::string Utf8Lossy(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    const uint8_t lead = static_cast<uint8_t>(bytes[i]);
    if (lead < 0x80) {
      out.push_back(static_cast<char>(lead));
      ++i;
      continue;
    }
    size_t length = 0;
    uint8_t second_min = 0x80, second_max = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      if (lead == 0xE0) second_min = 0xA0;
      if (lead == 0xED) second_max = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      if (lead == 0xF0) second_min = 0x90;
      if (lead == 0xF4) second_max = 0x8F;
    }
    if (length == 0) {
      out += kReplacementCharacter;
      ++i;
      continue;
    }
    size_t valid = 1;  // bytes of the sequence that are well-formed so far
    while (valid < length && i + valid < bytes.size()) {
      const uint8_t b = static_cast<uint8_t>(bytes[i + valid]);
      const uint8_t min = valid == 1 ? second_min : 0x80;
      const uint8_t max = valid == 1 ? second_max : 0xBF;
      if (b < min || b > max) break;
      ++valid;
    }
    if (valid == length) {
      out.append(bytes.data() + i, length);
    } else {
      out += kReplacementCharacter;
    }
    i += valid;
  }
  return out;
}

bool IsWordCharacter(UChar32 c) {
  if (c == '_' || u_isalnum(c)) return true;
  const int8_t type = u_charType(c);
  return type == U_NON_SPACING_MARK || type == U_ENCLOSING_MARK ||
         type == U_COMBINING_SPACING_MARK || type == U_CONNECTOR_PUNCTUATION;
}

std::string ToUtf8(const icu::UnicodeString& text) {
  std::string out;
  text.toUTF8String(out);
  return out;
}

// Helpers reading tokenizer.json fields with errors that name the file and the field.
class JsonReader {
 public:
  explicit JsonReader(const std::string& label) : label_(label) {}

  absl::Status Invalid(absl::string_view field, absl::string_view problem) const {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": ", field, " ", problem));
  }
  absl::Status Unsupported(absl::string_view what) const {
    return absl::UnimplementedError(absl::StrCat(label_, ": ", what, " is not supported"));
  }

  // The object at `node[key]`; nullptr when absent or null. INVALID_ARGUMENT for a non-object.
  absl::StatusOr<const json*> OptionalObject(const json& node, const char* key,
                                             absl::string_view field) const {
    auto it = node.find(key);
    if (it == node.end() || it->is_null()) return nullptr;
    if (!it->is_object()) return Invalid(field, "is not an object");
    return &*it;
  }

  absl::StatusOr<bool> Bool(const json& node, const char* key, bool fallback,
                            absl::string_view field) const {
    auto it = node.find(key);
    if (it == node.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) return Invalid(field, "is not a boolean");
    return it->get<bool>();
  }

  absl::StatusOr<std::string> String(const json& node, const char* key, absl::string_view field,
                                     std::optional<std::string> fallback = std::nullopt) const {
    auto it = node.find(key);
    if (it == node.end() || it->is_null()) {
      if (fallback.has_value()) return *fallback;
      return Invalid(field, "is missing");
    }
    if (!it->is_string()) return Invalid(field, "is not a string");
    return it->get<std::string>();
  }

  absl::StatusOr<int64_t> Id(const json& node, const char* key, absl::string_view field) const {
    auto it = node.find(key);
    if (it == node.end() || !it->is_number_integer()) return Invalid(field, "is not an integer id");
    const int64_t id = it->get<int64_t>();
    if (id < 0 || id > kMaxTokenId)
      return Invalid(field, absl::StrCat("id ", id, " is out of range"));
    return id;
  }

  const std::string& label() const { return label_; }

 private:
  const std::string& label_;
};

// Flattens a pre-tokenizer / post-processor / decoder "Sequence" into its leaves.
absl::Status Flatten(const json& node, const char* list_key, const JsonReader& reader,
                     absl::string_view field, std::vector<const json*>& out) {
  if (!node.is_object()) return reader.Invalid(field, "is not an object");
  auto type = node.find("type");
  if (type == node.end() || !type->is_string()) return reader.Invalid(field, "has no type");
  if (type->get<std::string>() != "Sequence") {
    out.push_back(&node);
    return absl::OkStatus();
  }
  auto list = node.find(list_key);
  if (list == node.end() || !list->is_array()) {
    return reader.Invalid(absl::StrCat(field, ".", list_key), "is not an array");
  }
  for (size_t i = 0; i < list->size(); ++i) {
    RETURN_IF_ERROR(Flatten((*list)[i], list_key, reader,
                            absl::StrCat(field, ".", list_key, "[", i, "]"), out));
  }
  return absl::OkStatus();
}

// Reads the merges list: "left right" strings or [left, right] pairs.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ReadMerges(
    const json& merges, const JsonReader& reader) {
  if (!merges.is_array()) return reader.Invalid("model.merges", "is not an array");
  std::vector<std::pair<std::string, std::string>> pairs;
  pairs.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& merge = merges[i];
    const std::string field = absl::StrCat("model.merges[", i, "]");
    if (merge.is_string()) {
      const std::string& line = merge.get_ref<const std::string&>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        return reader.Invalid(
            field, absl::StrCat("'", line, "' is not two tokens separated by one space"));
      }
      pairs.emplace_back(line.substr(0, space), line.substr(space + 1));
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      pairs.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else {
      return reader.Invalid(field, "is neither \"a b\" nor [a, b]");
    }
  }
  return pairs;
}

}  // namespace

// One pre-tokenizer after flattening Sequences. Split cuts each piece on `pattern`;
// ByteLevel optionally prefixes a space, optionally splits on the GPT-2 regex (Isolated) and
// maps every byte to its printable character. RegexPattern is immutable and safe to share
// between threads; each call makes its own RegexMatcher.
class BpeTokenizer::PreTokenizeStep {
 public:
  enum class Kind { kSplit, kByteLevel };
  enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

  Kind kind = Kind::kSplit;
  std::unique_ptr<icu::RegexPattern> pattern;  // null: ByteLevel without regex
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;

  // Appends the pieces `text` splits into (before any byte mapping) to `out`.
  absl::Status Split(const std::string& text, std::vector<std::string>& out) const {
    if (pattern == nullptr) {
      if (!text.empty()) out.push_back(text);
      return absl::OkStatus();
    }
    const icu::UnicodeString input = icu::UnicodeString::fromUTF8(text);
    UErrorCode status = U_ZERO_ERROR;
    std::unique_ptr<icu::RegexMatcher> matcher(pattern->matcher(input, status));
    if (U_FAILURE(status)) {
      return absl::InternalError(absl::StrCat("pre-tokenizer regex: ", u_errorName(status)));
    }
    // (start, end, is_match) covering the whole input, in UTF-16 offsets.
    struct Span {
      int32_t start;
      int32_t end;
      bool is_match;
    };
    std::vector<Span> spans;
    int32_t previous_end = 0;
    while (matcher->find(status) && U_SUCCESS(status)) {
      const int32_t start = matcher->start(status);
      const int32_t end = matcher->end(status);
      if (previous_end != start) spans.push_back({previous_end, start, false});
      spans.push_back({start, end, true});
      previous_end = end;
    }
    if (U_FAILURE(status)) {
      return absl::InternalError(absl::StrCat("pre-tokenizer regex: ", u_errorName(status)));
    }
    if (previous_end != input.length()) spans.push_back({previous_end, input.length(), false});
    if (invert) {
      for (Span& span : spans) span.is_match = !span.is_match;
    }

    std::vector<Span> pieces;  // is_match now means "drop"
    switch (behavior) {
      case Behavior::kIsolated:
        for (const Span& span : spans) pieces.push_back({span.start, span.end, false});
        break;
      case Behavior::kRemoved:
        for (const Span& span : spans) pieces.push_back({span.start, span.end, span.is_match});
        break;
      case Behavior::kMergedWithPrevious: {
        bool previous_match = false;
        for (const Span& span : spans) {
          if (span.is_match && !previous_match && !pieces.empty()) {
            pieces.back().end = span.end;
          } else {
            pieces.push_back({span.start, span.end, false});
          }
          previous_match = span.is_match;
        }
        break;
      }
      case Behavior::kMergedWithNext: {
        bool previous_match = false;
        for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
          if (it->is_match && !previous_match && !pieces.empty()) {
            pieces.back().start = it->start;
          } else {
            pieces.push_back({it->start, it->end, false});
          }
          previous_match = it->is_match;
        }
        std::reverse(pieces.begin(), pieces.end());
        break;
      }
      case Behavior::kContiguous: {
        bool previous_match = false;
        for (size_t i = 0; i < spans.size(); ++i) {
          if (i > 0 && spans[i].is_match == previous_match) {
            pieces.back().end = spans[i].end;
          } else {
            pieces.push_back({spans[i].start, spans[i].end, false});
          }
          previous_match = spans[i].is_match;
        }
        break;
      }
    }
    for (const Span& piece : pieces) {
      if (piece.is_match || piece.start == piece.end) continue;
      out.push_back(ToUtf8(input.tempSubStringBetween(piece.start, piece.end)));
    }
    return absl::OkStatus();
  }
};

BpeTokenizer::BpeTokenizer() : added_by_first_byte_(256), byte_to_char_(256) {
  // GPT-2's table: printable Latin-1 bytes stand for themselves, the other 68 bytes for
  // U+0100 onwards in byte order.
  int next_unprintable = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const UChar32 c = printable ? b : 256 + next_unprintable++;
    AppendUtf8(c, byte_to_char_[b]);
    char_to_byte_[static_cast<uint32_t>(c)] = static_cast<uint8_t>(b);
  }
}

BpeTokenizer::~BpeTokenizer() = default;

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Load(
    const std::string& tokenizer_json_path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(tokenizer_json_path, error)) {
    return absl::NotFoundError(absl::StrCat(tokenizer_json_path, ": no such tokenizer.json file"));
  }
  std::ifstream in(tokenizer_json_path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof()) {
    return absl::DataLossError(absl::StrCat(tokenizer_json_path, ": read failed"));
  }
  return FromJson(text.str(), tokenizer_json_path);
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromJson(absl::string_view json_text,
                                                                     std::string label) {
  std::unique_ptr<BpeTokenizer> tokenizer(new BpeTokenizer());
  tokenizer->label_ = std::move(label);
  RETURN_IF_ERROR(tokenizer->Parse(json_text));
  return tokenizer;
}

absl::Status BpeTokenizer::Parse(absl::string_view json_text) {
  const JsonReader reader(label_);
  // Bounds the recursion over nested Sequences (Flatten) too.
  RETURN_IF_ERROR(CheckJsonNesting(label_, json_text));
  const json root = json::parse(json_text.begin(), json_text.end(), nullptr,
                                /*allow_exceptions=*/false);
  if (root.is_discarded()) return reader.Invalid("content", "is not valid JSON");
  if (!root.is_object()) return reader.Invalid("content", "is not a JSON object");
  RETURN_IF_ERROR(ParseModel(root));
  RETURN_IF_ERROR(ParseAddedTokens(root));
  RETURN_IF_ERROR(ParseNormalizer(root));
  RETURN_IF_ERROR(IndexAddedTokens());
  RETURN_IF_ERROR(ParsePreTokenizer(root));
  RETURN_IF_ERROR(ParseDecoder(root));
  return ParsePostProcessor(root);
}

absl::Status BpeTokenizer::ParseModel(const json& root) {
  const JsonReader reader(label_);
  auto model_it = root.find("model");
  if (model_it == root.end() || !model_it->is_object()) {
    return reader.Invalid("model", "is missing or not an object");
  }
  const json& model = *model_it;
  ASSIGN_OR_RETURN(const std::string model_type,
                   reader.String(model, "type", "model.type", std::string("BPE")));
  if (model_type != "BPE") return reader.Unsupported(absl::StrCat("model type '", model_type, "'"));
  if (auto dropout = model.find("dropout");
      dropout != model.end() && !dropout->is_null() &&
      !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return reader.Unsupported("model.dropout (BPE dropout)");
  }
  ASSIGN_OR_RETURN(const bool byte_fallback,
                   reader.Bool(model, "byte_fallback", false, "model.byte_fallback"));
  if (byte_fallback) return reader.Unsupported("model.byte_fallback true");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    ASSIGN_OR_RETURN(const std::string affix,
                     reader.String(model, key, absl::StrCat("model.", key), std::string()));
    if (!affix.empty()) return reader.Unsupported(absl::StrCat("model.", key, " '", affix, "'"));
  }
  ASSIGN_OR_RETURN(ignore_merges_,
                   reader.Bool(model, "ignore_merges", false, "model.ignore_merges"));

  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) {
    return reader.Invalid("model.vocab", "is missing or not an object");
  }
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0) {
      return reader.Invalid(absl::StrCat("model.vocab[\"", it.key(), "\"]"),
                            "is not a non-negative integer id");
    }
    const int64_t id = it.value().get<int64_t>();
    if (id > kMaxTokenId) {
      return reader.Invalid(absl::StrCat("model.vocab[\"", it.key(), "\"]"), "is too large");
    }
    vocab_[it.key()] = id;
  }
  ASSIGN_OR_RETURN(const std::string unk_token,
                   reader.String(model, "unk_token", "model.unk_token", std::string()));
  if (!unk_token.empty()) {
    auto unk = vocab_.find(unk_token);
    if (unk == vocab_.end()) {
      return reader.Invalid("model.unk_token",
                            absl::StrCat("'", unk_token, "' is not in the vocabulary"));
    }
    unk_id_ = unk->second;
  }

  auto merges_it = model.find("merges");
  if (merges_it == model.end()) return reader.Invalid("model.merges", "is missing");
  ASSIGN_OR_RETURN(const auto merge_pairs, ReadMerges(*merges_it, reader));
  for (size_t rank = 0; rank < merge_pairs.size(); ++rank) {
    const auto& [left, right] = merge_pairs[rank];
    auto left_id = vocab_.find(left);
    auto right_id = vocab_.find(right);
    auto merged_id = vocab_.find(left + right);
    if (left_id == vocab_.end() || right_id == vocab_.end() || merged_id == vocab_.end()) {
      return reader.Invalid(
          absl::StrCat("model.merges[", rank, "]"),
          absl::StrCat("'", left, " ", right, "' uses or makes a token missing from model.vocab"));
    }
    const uint64_t key =
        (static_cast<uint64_t>(left_id->second) << 32) | static_cast<uint64_t>(right_id->second);
    merges_[key] = MergeRule{static_cast<int32_t>(rank), merged_id->second};
  }
  return absl::OkStatus();
}

absl::Status BpeTokenizer::ParseAddedTokens(const json& root) {
  const JsonReader reader(label_);
  if (auto added = root.find("added_tokens"); added != root.end() && !added->is_null()) {
    if (!added->is_array()) return reader.Invalid("added_tokens", "is not an array");
    for (size_t i = 0; i < added->size(); ++i) {
      const json& entry = (*added)[i];
      const std::string field = absl::StrCat("added_tokens[", i, "]");
      if (!entry.is_object()) return reader.Invalid(field, "is not an object");
      AddedToken token;
      ASSIGN_OR_RETURN(token.id, reader.Id(entry, "id", field + ".id"));
      ASSIGN_OR_RETURN(token.content, reader.String(entry, "content", field + ".content"));
      ASSIGN_OR_RETURN(token.special, reader.Bool(entry, "special", false, field + ".special"));
      ASSIGN_OR_RETURN(token.lstrip, reader.Bool(entry, "lstrip", false, field + ".lstrip"));
      ASSIGN_OR_RETURN(token.rstrip, reader.Bool(entry, "rstrip", false, field + ".rstrip"));
      ASSIGN_OR_RETURN(token.single_word,
                       reader.Bool(entry, "single_word", false, field + ".single_word"));
      ASSIGN_OR_RETURN(token.normalized,
                       reader.Bool(entry, "normalized", !token.special, field + ".normalized"));
      if (token.content.empty()) return reader.Invalid(field + ".content", "is empty");
      added_by_id_[token.id] = added_tokens_.size();
      added_tokens_.push_back(std::move(token));
    }
  }
  return absl::OkStatus();
}

absl::Status BpeTokenizer::ParseNormalizer(const json& root) {
  const JsonReader reader(label_);
  if (auto normalizer = root.find("normalizer");
      normalizer != root.end() && !normalizer->is_null()) {
    std::vector<const json*> steps;
    RETURN_IF_ERROR(Flatten(*normalizer, "normalizers", reader, "normalizer", steps));
    if (steps.size() > 1) return reader.Unsupported("a normalizer Sequence of several steps");
    if (steps.size() == 1) {
      const std::string type = (*steps[0])["type"].get<std::string>();
      if (type == "NFC") {
        normalization_ = Normalization::kNfc;
      } else if (type == "NFKC") {
        normalization_ = Normalization::kNfkc;
      } else {
        return reader.Unsupported(absl::StrCat("normalizer type '", type, "'"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status BpeTokenizer::IndexAddedTokens() {
  const JsonReader reader(label_);
  // Tokens marked `normalized` are looked for in normalized text, so in normalized form.
  for (AddedToken& token : added_tokens_) {
    if (token.normalized) {
      ASSIGN_OR_RETURN(token.match_text, Normalize(token.content));
    } else {
      token.match_text = token.content;
    }
    if (token.match_text.empty()) {
      return reader.Invalid("added_tokens",
                            absl::StrCat("'", token.content, "' normalizes to \"\""));
    }
  }
  for (size_t i = 0; i < added_tokens_.size(); ++i) {
    const AddedToken& token = added_tokens_[i];
    (token.normalized ? has_normalized_added_tokens_ : has_unnormalized_added_tokens_) = true;
    added_by_first_byte_[static_cast<uint8_t>(token.match_text[0])].push_back(i);
  }
  for (auto& candidates : added_by_first_byte_) {
    std::stable_sort(candidates.begin(), candidates.end(), [this](size_t a, size_t b) {
      return added_tokens_[a].match_text.size() > added_tokens_[b].match_text.size();
    });
  }

  int64_t max_id = -1;
  for (const auto& [piece, id] : vocab_) max_id = std::max(max_id, id);
  for (const AddedToken& token : added_tokens_) max_id = std::max(max_id, token.id);
  id_to_piece_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [piece, id] : vocab_) id_to_piece_[static_cast<size_t>(id)] = piece;
  for (const AddedToken& token : added_tokens_) {
    id_to_piece_[static_cast<size_t>(token.id)] = token.content;
  }
  return absl::OkStatus();
}

absl::Status BpeTokenizer::ParsePreTokenizer(const json& root) {
  const JsonReader reader(label_);
  if (auto pre = root.find("pre_tokenizer"); pre != root.end() && !pre->is_null()) {
    std::vector<const json*> steps;
    RETURN_IF_ERROR(Flatten(*pre, "pretokenizers", reader, "pre_tokenizer", steps));
    for (size_t i = 0; i < steps.size(); ++i) {
      const json& node = *steps[i];
      const std::string field = absl::StrCat("pre_tokenizer step ", i);
      const std::string type = node["type"].get<std::string>();
      auto step = std::make_unique<PreTokenizeStep>();
      std::string pattern_text;
      uint32_t pattern_flags = 0;
      if (type == "ByteLevel") {
        step->kind = PreTokenizeStep::Kind::kByteLevel;
        ASSIGN_OR_RETURN(step->add_prefix_space,
                         reader.Bool(node, "add_prefix_space", true, field + ".add_prefix_space"));
        ASSIGN_OR_RETURN(const bool use_regex,
                         reader.Bool(node, "use_regex", true, field + ".use_regex"));
        if (use_regex) pattern_text = kGpt2Pattern;
      } else if (type == "Split") {
        step->kind = PreTokenizeStep::Kind::kSplit;
        ASSIGN_OR_RETURN(const json* pattern,
                         reader.OptionalObject(node, "pattern", field + ".pattern"));
        if (pattern == nullptr) return reader.Invalid(field + ".pattern", "is missing");
        if (auto regex = pattern->find("Regex"); regex != pattern->end() && regex->is_string()) {
          pattern_text = regex->get<std::string>();
        } else if (auto literal = pattern->find("String");
                   literal != pattern->end() && literal->is_string()) {
          pattern_text = literal->get<std::string>();
          pattern_flags = UREGEX_LITERAL;
        } else {
          return reader.Invalid(field + ".pattern", "has neither a Regex nor a String");
        }
        if (pattern_text.empty()) return reader.Invalid(field + ".pattern", "is empty");
        ASSIGN_OR_RETURN(step->invert, reader.Bool(node, "invert", false, field + ".invert"));
        ASSIGN_OR_RETURN(const std::string behavior,
                         reader.String(node, "behavior", field + ".behavior"));
        using Behavior = PreTokenizeStep::Behavior;
        static const std::pair<const char*, Behavior> kBehaviors[] = {
            {"Removed", Behavior::kRemoved},
            {"Isolated", Behavior::kIsolated},
            {"MergedWithPrevious", Behavior::kMergedWithPrevious},
            {"MergedWithNext", Behavior::kMergedWithNext},
            {"Contiguous", Behavior::kContiguous}};
        auto known = std::find_if(std::begin(kBehaviors), std::end(kBehaviors),
                                  [&](const auto& entry) { return behavior == entry.first; });
        if (known == std::end(kBehaviors)) {
          return reader.Invalid(field + ".behavior", absl::StrCat("'", behavior, "' is unknown"));
        }
        step->behavior = known->second;
      } else {
        return reader.Unsupported(absl::StrCat("pre_tokenizer type '", type, "'"));
      }
      if (!pattern_text.empty()) {
        UErrorCode status = U_ZERO_ERROR;
        UParseError parse_error;
        step->pattern.reset(icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(pattern_text),
                                                       pattern_flags, parse_error, status));
        if (U_FAILURE(status)) {
          return reader.Invalid(
              field + ".pattern",
              absl::StrCat("regex does not compile with ICU (", u_errorName(status), " at offset ",
                           parse_error.offset, ")"));
        }
      }
      pre_tokenizers_.push_back(std::move(step));
    }
  }
  return absl::OkStatus();
}

// With no decoder, ids decode as with ByteLevel (Hugging Face would join the token strings
// with spaces, which no byte-level model wants).
absl::Status BpeTokenizer::ParseDecoder(const json& root) {
  const JsonReader reader(label_);
  if (auto decoder = root.find("decoder"); decoder != root.end() && !decoder->is_null()) {
    std::vector<const json*> steps;
    RETURN_IF_ERROR(Flatten(*decoder, "decoders", reader, "decoder", steps));
    for (const json* step : steps) {
      const std::string type = (*step)["type"].get<std::string>();
      if (type != "ByteLevel") return reader.Unsupported(absl::StrCat("decoder type '", type, "'"));
    }
  }
  return absl::OkStatus();
}

// Only what the post-processor adds around a single sequence matters here.
absl::Status BpeTokenizer::ParsePostProcessor(const json& root) {
  const JsonReader reader(label_);
  if (auto post = root.find("post_processor"); post != root.end() && !post->is_null()) {
    std::vector<const json*> steps;
    RETURN_IF_ERROR(Flatten(*post, "processors", reader, "post_processor", steps));
    for (const json* step : steps) {
      const json& node = *step;
      const std::string type = node["type"].get<std::string>();
      if (type == "ByteLevel") continue;
      if (type == "RobertaProcessing" || type == "BertProcessing") {
        for (const char* key : {"cls", "sep"}) {
          const std::string field = absl::StrCat("post_processor.", key);
          auto it = node.find(key);
          if (it == node.end() || !it->is_array() || it->size() != 2 ||
              !(*it)[1].is_number_integer()) {
            return reader.Invalid(field, "is not a [token, id] pair");
          }
          (std::string(key) == "cls" ? template_bos_id_ : template_eos_id_) =
              (*it)[1].get<int64_t>();
        }
        continue;
      }
      if (type != "TemplateProcessing") {
        return reader.Unsupported(absl::StrCat("post_processor type '", type, "'"));
      }
      auto single = node.find("single");
      if (single == node.end() || !single->is_array()) {
        return reader.Invalid("post_processor.single", "is not an array");
      }
      ASSIGN_OR_RETURN(
          const json* special_tokens,
          reader.OptionalObject(node, "special_tokens", "post_processor.special_tokens"));
      std::vector<int64_t> before, after;
      bool seen_sequence = false;
      for (size_t i = 0; i < single->size(); ++i) {
        const json& piece = (*single)[i];
        const std::string field = absl::StrCat("post_processor.single[", i, "]");
        if (piece.is_object() && piece.contains("Sequence")) {
          seen_sequence = true;
          continue;
        }
        if (!piece.is_object() || !piece.contains("SpecialToken") ||
            !piece["SpecialToken"].is_object()) {
          return reader.Invalid(field, "is neither a Sequence nor a SpecialToken");
        }
        ASSIGN_OR_RETURN(const std::string name,
                         reader.String(piece["SpecialToken"], "id", field + ".SpecialToken.id"));
        const json* entry = nullptr;
        if (special_tokens != nullptr) {
          if (auto it = special_tokens->find(name); it != special_tokens->end()) entry = &*it;
        }
        if (entry == nullptr || !entry->is_object() || !entry->contains("ids") ||
            !(*entry)["ids"].is_array()) {
          return reader.Invalid(absl::StrCat("post_processor.special_tokens[\"", name, "\"].ids"),
                                "is missing");
        }
        for (const json& id : (*entry)["ids"]) {
          if (!id.is_number_integer()) {
            return reader.Invalid(absl::StrCat("post_processor.special_tokens[\"", name, "\"].ids"),
                                  "holds a non-integer");
          }
          (seen_sequence ? after : before).push_back(id.get<int64_t>());
        }
      }
      if (before.size() > 1 || after.size() > 1) {
        return reader.Unsupported(
            "a post_processor template with more than one special token on one side");
      }
      if (!before.empty()) template_bos_id_ = before[0];
      if (!after.empty()) template_eos_id_ = after[0];
    }
  }
  return absl::OkStatus();
}

std::vector<BpeTokenizer::Segment> BpeTokenizer::SplitOnAddedTokens(std::vector<Segment> segments,
                                                                    bool match_normalized) const {
  std::vector<Segment> out;
  for (Segment& segment : segments) {
    if (segment.added_id >= 0) {
      out.push_back(std::move(segment));
      continue;
    }
    const std::string& text = segment.text;
    size_t start_offset = 0;  // end of the previous split
    size_t pos = 0;
    while (pos < text.size()) {
      const AddedToken* match = nullptr;
      for (size_t index : added_by_first_byte_[static_cast<uint8_t>(text[pos])]) {
        const AddedToken& candidate = added_tokens_[index];
        if (candidate.normalized == match_normalized &&
            text.compare(pos, candidate.match_text.size(), candidate.match_text) == 0) {
          match = &candidate;
          break;
        }
      }
      if (match == nullptr) {
        ++pos;
        continue;
      }
      size_t start = pos;
      size_t stop = pos + match->match_text.size();
      pos = stop;
      if (match->single_word) {
        size_t before = start;
        size_t after = stop;
        const bool word_before = start > 0 && IsWordCharacter(PreviousCodePoint(text, before));
        const bool word_after = stop < text.size() && IsWordCharacter(NextCodePoint(text, after));
        if (word_before || word_after) continue;
      }
      if (match->lstrip) {
        size_t cursor = start;
        while (cursor > start_offset) {
          size_t previous = cursor;
          if (!u_isUWhiteSpace(PreviousCodePoint(text, previous))) break;
          cursor = previous;
        }
        start = cursor;
      }
      if (match->rstrip) {
        while (stop < text.size()) {
          size_t next = stop;
          if (!u_isUWhiteSpace(NextCodePoint(text, next))) break;
          stop = next;
        }
        pos = stop;
      }
      if (start_offset < start)
        out.push_back({text.substr(start_offset, start - start_offset), -1});
      out.push_back({text.substr(start, stop - start), match->id});
      start_offset = stop;
    }
    if (start_offset < text.size()) out.push_back({text.substr(start_offset), -1});
  }
  return out;
}

absl::StatusOr<std::string> BpeTokenizer::Normalize(const std::string& text) const {
  if (normalization_ == Normalization::kNone) return text;
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = normalization_ == Normalization::kNfc
                                           ? icu::Normalizer2::getNFCInstance(status)
                                           : icu::Normalizer2::getNFKCInstance(status);
  if (U_FAILURE(status)) {
    return absl::InternalError(absl::StrCat("ICU normalizer: ", u_errorName(status)));
  }
  const icu::UnicodeString normalized =
      normalizer->normalize(icu::UnicodeString::fromUTF8(text), status);
  if (U_FAILURE(status)) {
    return absl::InternalError(absl::StrCat("ICU normalize: ", u_errorName(status)));
  }
  return ToUtf8(normalized);
}

absl::StatusOr<std::vector<std::string>> BpeTokenizer::PreTokenize(const std::string& text) const {
  std::vector<std::string> pieces;
  if (!text.empty()) pieces.push_back(text);
  for (const auto& step : pre_tokenizers_) {
    std::vector<std::string> next;
    for (std::string& piece : pieces) {
      if (step->kind == PreTokenizeStep::Kind::kByteLevel && step->add_prefix_space &&
          piece[0] != ' ') {
        piece.insert(piece.begin(), ' ');
      }
      const size_t first_new = next.size();
      RETURN_IF_ERROR(step->Split(piece, next));
      if (step->kind != PreTokenizeStep::Kind::kByteLevel) continue;
      for (size_t i = first_new; i < next.size(); ++i) {
        std::string mapped;
        for (unsigned char byte : next[i]) mapped += byte_to_char_[byte];
        next[i] = std::move(mapped);
      }
    }
    pieces = std::move(next);
  }
  return pieces;
}

void BpeTokenizer::EncodeWord(const std::string& word, std::vector<int64_t>& ids) const {
  if (ignore_merges_) {
    if (auto whole = vocab_.find(word); whole != vocab_.end()) {
      ids.push_back(whole->second);
      return;
    }
  }
  // Symbols form a doubly linked list; merging folds the right symbol into the left one.
  struct Symbol {
    int64_t id;
    int32_t previous;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  for (size_t pos = 0; pos < word.size();) {
    const size_t start = pos;
    NextCodePoint(word, pos);
    auto it = vocab_.find(word.substr(start, pos - start));
    int64_t id;
    if (it != vocab_.end()) {
      id = it->second;
    } else if (unk_id_.has_value()) {
      id = *unk_id_;
    } else {
      continue;  // what Hugging Face does with an unknown character and no unk_token
    }
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1, true});
    if (index > 0) symbols[index - 1].next = index;
  }

  // Candidate merges ordered by rank, then by position (leftmost first).
  struct Candidate {
    int32_t rank;
    int32_t left;
    int64_t merged_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : left > other.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto find_rule = [&](int32_t left) -> const MergeRule* {
    const int32_t right = symbols[left].next;
    if (right < 0) return nullptr;
    const uint64_t key =
        (static_cast<uint64_t>(symbols[left].id) << 32) | static_cast<uint64_t>(symbols[right].id);
    auto it = merges_.find(key);
    return it == merges_.end() ? nullptr : &it->second;
  };
  auto push_candidate = [&](int32_t left) {
    if (const MergeRule* rule = find_rule(left)) queue.push({rule->rank, left, rule->merged_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_candidate(i);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.left];
    if (!left.alive) continue;
    const MergeRule* rule = find_rule(top.left);
    if (rule == nullptr || rule->rank != top.rank) continue;  // stale: the pair has changed
    Symbol& right = symbols[left.next];
    right.alive = false;
    left.id = rule->merged_id;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].previous = top.left;
    if (left.previous >= 0) push_candidate(left.previous);
    push_candidate(top.left);
  }
  for (const Symbol& symbol : symbols) {
    if (symbol.alive) ids.push_back(symbol.id);
  }
}

absl::StatusOr<std::vector<int64_t>> BpeTokenizer::Encode(absl::string_view text) const {
  if (!IsValidUtf8(text)) {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": text to encode is not valid UTF-8"));
  }
  std::vector<Segment> segments;
  segments.push_back({std::string(text), -1});
  if (has_unnormalized_added_tokens_) segments = SplitOnAddedTokens(std::move(segments), false);
  if (normalization_ != Normalization::kNone) {
    for (Segment& segment : segments) {
      if (segment.added_id < 0) {
        ASSIGN_OR_RETURN(segment.text, Normalize(segment.text));
      }
    }
  }
  if (has_normalized_added_tokens_) segments = SplitOnAddedTokens(std::move(segments), true);

  std::vector<int64_t> ids;
  for (const Segment& segment : segments) {
    if (segment.added_id >= 0) {
      ids.push_back(segment.added_id);
      continue;
    }
    ASSIGN_OR_RETURN(const std::vector<std::string> words, PreTokenize(segment.text));
    for (const std::string& word : words) EncodeWord(word, ids);
  }
  return ids;
}

void BpeTokenizer::AppendTokenBytes(const std::string& piece, std::string& bytes) const {
  for (size_t pos = 0; pos < piece.size();) {
    const size_t start = pos;
    const UChar32 c = NextCodePoint(piece, pos);
    auto it = c < 0 ? char_to_byte_.end() : char_to_byte_.find(static_cast<uint32_t>(c));
    if (it != char_to_byte_.end()) {
      bytes.push_back(static_cast<char>(it->second));
    } else {
      bytes.append(piece, start, pos - start);  // not a byte character: kept as written
    }
  }
}

absl::StatusOr<std::string> BpeTokenizer::Decode(const std::vector<int64_t>& ids) const {
  std::string bytes;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t id = ids[i];
    if (id < 0 || id >= vocab_size() || id_to_piece_[static_cast<size_t>(id)].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(label_, ": token id ", id, " at position ", i,
                                                     " is not in the vocabulary (size ",
                                                     vocab_size(), ")"));
    }
    AppendTokenBytes(id_to_piece_[static_cast<size_t>(id)], bytes);
  }
  return Utf8Lossy(bytes);
}

int64_t BpeTokenizer::vocab_size() const { return static_cast<int64_t>(id_to_piece_.size()); }

std::optional<int64_t> BpeTokenizer::TokenToId(absl::string_view token) const {
  for (const AddedToken& added : added_tokens_) {
    if (added.content == token) return added.id;
  }
  if (auto it = vocab_.find(std::string(token)); it != vocab_.end()) return it->second;
  return std::nullopt;
}

std::string BpeTokenizer::IdToPiece(int64_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return id_to_piece_[static_cast<size_t>(id)];
}

bool BpeTokenizer::IsSpecial(int64_t id) const {
  auto it = added_by_id_.find(id);
  return it != added_by_id_.end() && added_tokens_[it->second].special;
}

}  // namespace steadyeval
