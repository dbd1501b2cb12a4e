// BpeTokenizer: a byte-level BPE tokenizer read from a Hugging Face `tokenizer.json`
// (GPT-2, GPT-NeoX, Pythia, Llama-3 and Qwen-style files).
//
// Encoding follows the `tokenizers` library (MODELS.md "Tokenizers"): added tokens are cut
// out of the text first (leftmost-longest match; lstrip / rstrip / single_word honoured),
// the rest is normalized (none, NFC or NFKC), pre-tokenized (ByteLevel with or without the
// GPT-2 regex, Split on a regex or string, or a Sequence of those), byte-mapped through GPT-2's
// byte-to-unicode table, and merged by merge rank. Decoding maps the token strings back to
// bytes; bytes that are not valid UTF-8 become U+FFFD, one per maximal invalid subsequence
// (what the Rust `from_utf8_lossy` behind Hugging Face's ByteLevel decoder does).
//
// Unsupported pieces fail at load time with UNIMPLEMENTED naming the component, so a model
// never silently gets a different tokenization: models other than BPE, BPE dropout,
// byte_fallback, subword prefixes/suffixes, normalizers other than NFC/NFKC, pre-tokenizers
// other than ByteLevel/Split, decoders other than ByteLevel.
//
// Thread-safe after loading: every method is const and the object is immutable.
#ifndef STEADYEVAL_WORKER_TOKENIZER_BPE_TOKENIZER_H_
#define STEADYEVAL_WORKER_TOKENIZER_BPE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"

namespace steadyeval {

class BpeTokenizer {
 public:
  // Parses the Hugging Face tokenizer.json at `tokenizer_json_path`. NOT_FOUND naming the
  // file when it is missing; INVALID_ARGUMENT naming the file and the field for malformed
  // content; UNIMPLEMENTED naming the component for an unsupported model, normalizer,
  // pre-tokenizer, decoder or post-processor type.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Load(const std::string& tokenizer_json_path);
  // Same, from the file's text; `label` names the source in error messages.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromJson(absl::string_view json_text,
                                                                std::string label);

  ~BpeTokenizer();
  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  // Ids of `text` as Hugging Face's `tokenizer.encode(text, add_special_tokens=False)`.
  // INVALID_ARGUMENT when `text` is not valid UTF-8.
  absl::StatusOr<std::vector<int64_t>> Encode(absl::string_view text) const;
  // Text of `ids` with special tokens kept (skip_special_tokens=False) and no
  // clean-up of spaces. INVALID_ARGUMENT naming the first id outside the vocabulary.
  absl::StatusOr<std::string> Decode(const std::vector<int64_t>& ids) const;

  // Largest id over the vocabulary and the added tokens, plus one.
  int64_t vocab_size() const;
  // The id of a vocabulary entry or added token's content, as stored ("Ġthe", "<|eot_id|>").
  std::optional<int64_t> TokenToId(absl::string_view token) const;
  // The stored string of `id` ("Ġthe"); "" when no token has that id.
  std::string IdToPiece(int64_t id) const;
  // Whether `id` is an added token marked special.
  bool IsSpecial(int64_t id) const;

  // The special token the post-processor puts before / after a single sequence
  // (TemplateProcessing's "single" template, Roberta/Bert's cls/sep); nullopt when it adds
  // none (ByteLevel or no post-processor).
  std::optional<int64_t> template_bos_id() const { return template_bos_id_; }
  std::optional<int64_t> template_eos_id() const { return template_eos_id_; }

 private:
  struct AddedToken {
    std::string content;
    std::string match_text;  // content, normalized when `normalized` is set
    int64_t id = 0;
    bool special = false;
    bool lstrip = false;
    bool rstrip = false;
    bool single_word = false;
    bool normalized = false;
  };
  // A piece of the input: either an added token already resolved to `added_id`, or text
  // still to be tokenized (added_id < 0).
  struct Segment {
    std::string text;
    int64_t added_id = -1;
  };
  struct MergeRule {
    int32_t rank = 0;
    int64_t merged_id = 0;
  };
  class PreTokenizeStep;  // One pre-tokenizer of the (flattened) sequence; holds ICU state.
  enum class Normalization { kNone, kNfc, kNfkc };

  BpeTokenizer();

  // Parse() reads the file's sections in this order; each fills the members it names.
  absl::Status Parse(absl::string_view json_text);
  absl::Status ParseModel(const nlohmann::json& root);        // vocab_, merges_, unk_id_
  absl::Status ParseAddedTokens(const nlohmann::json& root);  // added_tokens_
  absl::Status ParseNormalizer(const nlohmann::json& root);   // normalization_
  absl::Status IndexAddedTokens();  // match_text, added_by_first_byte_, id_to_piece_
  absl::Status ParsePreTokenizer(const nlohmann::json& root);
  absl::Status ParseDecoder(const nlohmann::json& root);
  absl::Status ParsePostProcessor(const nlohmann::json& root);  // template_*_id_
  // Cuts the added tokens with `normalized == match_normalized` out of the text segments.
  std::vector<Segment> SplitOnAddedTokens(std::vector<Segment> segments,
                                          bool match_normalized) const;
  absl::StatusOr<std::string> Normalize(const std::string& text) const;
  absl::StatusOr<std::vector<std::string>> PreTokenize(const std::string& text) const;
  // Appends the ids of one pre-token (already byte-mapped when the pre-tokenizer does it).
  void EncodeWord(const std::string& word, std::vector<int64_t>& ids) const;
  // Appends the bytes a decoded token string stands for.
  void AppendTokenBytes(const std::string& piece, std::string& bytes) const;

  std::string label_;
  std::unordered_map<std::string, int64_t> vocab_;  // the model's vocabulary
  std::vector<std::string> id_to_piece_;            // vocab and added tokens, by id
  std::unordered_map<uint64_t, MergeRule> merges_;  // key: left id << 32 | right id
  std::vector<AddedToken> added_tokens_;
  std::unordered_map<int64_t, size_t> added_by_id_;  // id -> index in added_tokens_
  // Indices into added_tokens_ by the content's first byte, longest content first.
  std::vector<std::vector<size_t>> added_by_first_byte_;
  bool has_normalized_added_tokens_ = false;
  bool has_unnormalized_added_tokens_ = false;
  Normalization normalization_ = Normalization::kNone;
  std::vector<std::unique_ptr<PreTokenizeStep>> pre_tokenizers_;
  bool ignore_merges_ = false;
  std::optional<int64_t> unk_id_;
  std::optional<int64_t> template_bos_id_;
  std::optional<int64_t> template_eos_id_;
  // GPT-2's byte-to-unicode table: the UTF-8 of the character byte b stands for, and back.
  std::vector<std::string> byte_to_char_;
  std::unordered_map<uint32_t, uint8_t> char_to_byte_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_TOKENIZER_BPE_TOKENIZER_H_
