// Japanese word segmentation with MeCab and the IPA dictionary: what sacrebleu's ja-mecab
// tokenizer (used by llm-jp-eval's bleu_ja) gets from `MeCab -Owakati`.
#ifndef STEADYEVAL_COMMON_MECAB_TOKENIZER_H_
#define STEADYEVAL_COMMON_MECAB_TOKENIZER_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace MeCab {
class Model;
}  // namespace MeCab

namespace steadyeval {

// Owns one MeCab::Model (the loaded dictionary). Wakati() builds a Tagger and a Lattice per
// call, so one MecabTokenizer may be used from any number of threads at once.
class MecabTokenizer {
 public:
  struct Options {
    // Debian's mecab-ipadic-utf8 (IPA dictionary 2.7.0-20070801, the one sacrebleu wants).
    std::string dictionary_dir = "/var/lib/mecab/dic/ipadic-utf8";
    // Like pip's `ipadic` package, which sacrebleu uses: no mecabrc, so nothing but the
    // dictionary directory configures MeCab.
    std::string rc_file = "/dev/null";
  };

  // FAILED_PRECONDITION when the dictionary cannot be loaded (message names the directory
  // and the Debian package) or is not UTF-8.
  static absl::StatusOr<std::unique_ptr<MecabTokenizer>> Create(const Options& options);

  MecabTokenizer(const MecabTokenizer&) = delete;
  MecabTokenizer& operator=(const MecabTokenizer&) = delete;

  // MeCab's -Owakati output for `text` without its line end: every morpheme's surface form
  // followed by one space (so a non-empty result ends in ' '). MeCab skips whitespace
  // between morphemes. INTERNAL if MeCab fails.
  absl::StatusOr<std::string> Wakati(absl::string_view text) const;

  // Number of entries in the system dictionary (pip's ipadic: 392126; Debian's: 392127).
  size_t dictionary_size() const { return dictionary_size_; }

 private:
  struct ModelDeleter {
    void operator()(MeCab::Model* model) const;
  };
  using ModelPtr = std::unique_ptr<MeCab::Model, ModelDeleter>;

  MecabTokenizer(ModelPtr model, size_t dictionary_size);

  ModelPtr model_;
  size_t dictionary_size_;
};

// The process-wide tokenizer with default Options, loaded on first use (thread-safe). A load
// failure is returned on every call.
absl::StatusOr<const MecabTokenizer*> DefaultMecabTokenizer();

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_MECAB_TOKENIZER_H_
