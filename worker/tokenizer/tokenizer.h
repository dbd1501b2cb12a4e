// Tokenizer: a checkpoint's tokenizer — SentencePiece (`tokenizer.model`) or byte-level
// BPE (Hugging Face `tokenizer.json`, bpe_tokenizer.h) — plus its BOS/EOS rule and a
// content hash that pins a run to one tokenizer.
//
// Which file: an explicit path (".json" → BPE, anything else → SentencePiece), else the
// folder's tokenizer.model, else its tokenizer.json (Llama-family folders often carry
// both; SentencePiece is the model they were trained with).
//
// BOS rule (MODELS.md, Hugging Face's behaviour): tokenizer_config.json's `add_bos_token`
// decides when present; otherwise SentencePiece prepends a BOS when config.json has
// `bos_token_id` (LlamaTokenizer's default), and BPE prepends the token its
// post-processor template puts first (Llama-3's <|begin_of_text|>; GPT-2/NeoX add none).
// The BOS id is tokenizer_config.json's `bos_token` when it names a token, else
// config.json's `bos_token_id`, else the tokenizer's own. The EOS id (a generation stop in
// addition to config.json's eos_token_id) is tokenizer_config.json's `eos_token`, else
// the tokenizer's own. `add_eos_token` is not applied: an EOS appended to a prompt would
// end generation before it starts.
//
// Normalization, dummy prefix and byte fallback are SentencePiece's own, applied by
// libsentencepiece.
//
// Thread-safe after loading: all methods are const except SetAddBos.
#ifndef STEADYEVAL_WORKER_TOKENIZER_TOKENIZER_H_
#define STEADYEVAL_WORKER_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace steadyeval {

class BpeTokenizer;
namespace internal {
class SentencePieceBackend;
}

struct BosRule {
  bool add_bos = false;
  int64_t bos_id = -1;
};

class Tokenizer {
 public:
  // Loads the tokenizer file at `model_path` (SentencePiece, or BPE when it ends in
  // ".json") with an explicit BOS rule. NOT_FOUND / INVALID_ARGUMENT naming the file when
  // it is missing or not a tokenizer; UNIMPLEMENTED naming an unsupported BPE component.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& model_path,
                                                         BosRule bos_rule);

  // The tokenizer for checkpoint folder `checkpoint_dir`: `tokenizer_path` when non-empty
  // (overrides the folder's file), else the folder's tokenizer.model or tokenizer.json;
  // the BOS/EOS rule from the folder's tokenizer_config.json / config.json as described
  // above.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadForCheckpoint(
      const std::string& checkpoint_dir, const std::string& tokenizer_path = "");

  ~Tokenizer();

  // Token ids of `text`, no BOS.
  absl::StatusOr<std::vector<int64_t>> Encode(absl::string_view text) const;
  // Token ids of `text` with the BOS rule applied: what the model sees for a document.
  absl::StatusOr<std::vector<int64_t>> EncodeWithBos(absl::string_view text) const;
  // Text of `ids`. INVALID_ARGUMENT for an id outside the vocabulary.
  absl::StatusOr<std::string> Decode(const std::vector<int64_t>& ids) const;

  // Overrides whether EncodeWithBos prepends BOS (a run's `--bos add|none`).
  // FAILED_PRECONDITION naming the file when adding is asked of a tokenizer with no BOS.
  absl::Status SetAddBos(bool add);

  int64_t vocab_size() const;
  bool add_bos() const { return bos_rule_.add_bos; }
  int64_t bos_id() const { return bos_rule_.bos_id; }
  int64_t eos_id() const;  // -1 when the model has none
  std::string IdToPiece(int64_t id) const;
  const std::string& path() const { return path_; }
  // "sentencepiece" or "bpe".
  const char* kind() const;
  // sha256 (hex) over the tokenizer file's bytes and, for LoadForCheckpoint, the folder's
  // tokenizer_config.json (which changes BOS handling and special tokens): two
  // checkpoints tokenize alike when these agree.
  const std::string& content_sha256() const { return content_sha256_; }

 private:
  Tokenizer() = default;

  std::string path_;
  BosRule bos_rule_;
  int64_t eos_id_ = -1;
  std::string content_sha256_;
  std::unique_ptr<internal::SentencePieceBackend> spm_;  // one of these two
  std::unique_ptr<BpeTokenizer> bpe_;
};

// The SentencePiece plugin file this process loads (see sentencepiece_backend.h for where
// it is looked for); FAILED_PRECONDITION saying what was tried when it cannot be loaded.
absl::StatusOr<std::string> SentencePiecePluginPath();

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_TOKENIZER_TOKENIZER_H_
