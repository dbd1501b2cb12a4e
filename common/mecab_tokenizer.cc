#include "common/mecab_tokenizer.h"

#include <mecab.h>

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace steadyeval {
namespace {

struct TaggerDeleter {
  void operator()(MeCab::Tagger* tagger) const { MeCab::deleteTagger(tagger); }
};
struct LatticeDeleter {
  void operator()(MeCab::Lattice* lattice) const { MeCab::deleteLattice(lattice); }
};

}  // namespace

void MecabTokenizer::ModelDeleter::operator()(MeCab::Model* model) const {
  MeCab::deleteModel(model);
}

MecabTokenizer::MecabTokenizer(ModelPtr model, size_t dictionary_size)
    : model_(std::move(model)), dictionary_size_(dictionary_size) {}

absl::StatusOr<std::unique_ptr<MecabTokenizer>> MecabTokenizer::Create(const Options& options) {
  // MeCab parses argv itself; passing the paths as separate arguments keeps spaces in them.
  std::vector<std::string> args = {"mecab", "-d", options.dictionary_dir, "-r",
                                   options.rc_file};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  ModelPtr model(MeCab::createModel(static_cast<int>(argv.size()), argv.data()));
  if (model == nullptr) {
    const char* why = MeCab::getLastError();
    return absl::FailedPreconditionError(absl::StrCat(
        "MeCab cannot load the IPA dictionary from ", options.dictionary_dir, " (",
        why == nullptr ? "unknown error" : why,
        "); bleu_ja needs it: apt-get install mecab-ipadic-utf8"));
  }
  const MeCab::DictionaryInfo* info = model->dictionary_info();
  if (info == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("MeCab dictionary ", options.dictionary_dir, " has no system dictionary"));
  }
  const std::string charset = absl::AsciiStrToLower(info->charset == nullptr ? "" : info->charset);
  if (charset != "utf-8" && charset != "utf8") {
    return absl::FailedPreconditionError(absl::StrCat(
        "MeCab dictionary ", options.dictionary_dir, " is encoded in ", info->charset,
        ", not UTF-8: use /var/lib/mecab/dic/ipadic-utf8 (apt-get install mecab-ipadic-utf8)"));
  }
  return std::unique_ptr<MecabTokenizer>(new MecabTokenizer(std::move(model), info->size));
}

absl::StatusOr<std::string> MecabTokenizer::Wakati(absl::string_view text) const {
  std::unique_ptr<MeCab::Tagger, TaggerDeleter> tagger(model_->createTagger());
  std::unique_ptr<MeCab::Lattice, LatticeDeleter> lattice(model_->createLattice());
  if (tagger == nullptr || lattice == nullptr) {
    return absl::InternalError("MeCab could not create a tagger");
  }
  // The lattice keeps a pointer to the sentence; `sentence` outlives the parse.
  const std::string sentence(text);
  lattice->set_sentence(sentence.data(), sentence.size());
  if (!tagger->parse(lattice.get())) {
    return absl::InternalError(absl::StrCat("MeCab failed to parse: ", lattice->what()));
  }
  // Same as MeCab's wakati writer: each surface, then one space.
  std::string out;
  for (const MeCab::Node* node = lattice->bos_node()->next; node != nullptr && node->next != nullptr;
       node = node->next) {
    out.append(node->surface, node->length);
    out.push_back(' ');
  }
  return out;
}

absl::StatusOr<const MecabTokenizer*> DefaultMecabTokenizer() {
  // Loaded once; C++ guarantees the initialisation runs on one thread.
  static const absl::StatusOr<std::unique_ptr<MecabTokenizer>>* const loaded =
      new absl::StatusOr<std::unique_ptr<MecabTokenizer>>(MecabTokenizer::Create(MecabTokenizer::Options()));
  if (!loaded->ok()) return loaded->status();
  return loaded->value().get();
}

}  // namespace steadyeval
