// Tokenizer: a SentencePiece model (`tokenizer.model`) plus the checkpoint's BOS rule.
//
// BOS rule (MODELS.md, Hugging Face's Llama behaviour): when the checkpoint folder has
// tokenizer_config.json with `add_bos_token`, that decides; otherwise a BOS is prepended
// when config.json has `bos_token_id`. The BOS id is config.json's `bos_token_id` when
// present, else the SentencePiece model's. Normalization, dummy prefix and byte fallback
// are the model's own, applied by libsentencepiece.
//
// Thread-safe after loading: all methods are const.
#ifndef STEADYEVAL_WORKER_TOKENIZER_H_
#define STEADYEVAL_WORKER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace steadyeval {

namespace internal {
class SentencePieceBackend;
}

struct BosRule {
  bool add_bos = false;
  int64_t bos_id = -1;
};

class Tokenizer {
 public:
  // Loads the SentencePiece model at `model_path` with an explicit BOS rule.
  // NOT_FOUND / INVALID_ARGUMENT naming the file when it is missing or not a model.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& model_path,
                                                         BosRule bos_rule);

  // The tokenizer for checkpoint folder `checkpoint_dir`: `tokenizer_path` when non-empty
  // (overrides the folder's file), else `<checkpoint_dir>/tokenizer.model`; the BOS rule
  // from the folder's tokenizer_config.json / config.json as described above.
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

 private:
  Tokenizer() = default;

  std::string path_;
  BosRule bos_rule_;
  std::unique_ptr<internal::SentencePieceBackend> backend_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_TOKENIZER_H_
