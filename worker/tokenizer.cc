#include "worker/tokenizer.h"

#include <sys/stat.h>

#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "worker/sentencepiece_backend.h"

namespace steadyeval {
namespace {

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The parsed JSON object in `path`, or a discarded value when the file is absent.
absl::StatusOr<nlohmann::json> ReadJsonIfPresent(const std::string& path) {
  if (!FileExists(path)) return nlohmann::json(nlohmann::json::value_t::discarded);
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  nlohmann::json doc = nlohmann::json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
  if (!in || doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a readable JSON object"));
  }
  return doc;
}

}  // namespace

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& model_path,
                                                           BosRule bos_rule) {
  if (!FileExists(model_path)) {
    return absl::NotFoundError(absl::StrCat("tokenizer ", model_path, ": no such file"));
  }
  std::string error;
  auto backend = internal::SentencePieceBackend::Load(model_path, &error);
  if (backend == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer ", model_path, ": not a SentencePiece model (", error, ")"));
  }
  if (bos_rule.add_bos && (bos_rule.bos_id < 0 || bos_rule.bos_id >= backend->piece_size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer ", model_path, ": BOS id ", bos_rule.bos_id, " is outside its vocabulary of ",
        backend->piece_size()));
  }
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  tokenizer->path_ = model_path;
  tokenizer->bos_rule_ = bos_rule;
  tokenizer->backend_ = std::move(backend);
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadForCheckpoint(
    const std::string& checkpoint_dir, const std::string& tokenizer_path) {
  const std::string model_path =
      tokenizer_path.empty() ? absl::StrCat(checkpoint_dir, "/tokenizer.model") : tokenizer_path;
  if (!FileExists(model_path)) {
    return absl::NotFoundError(absl::StrCat(
        "tokenizer ", model_path, ": no such file",
        tokenizer_path.empty() ? " (give the tokenizer file explicitly with --tokenizer)" : ""));
  }
  ASSIGN_OR_RETURN(nlohmann::json config,
                   ReadJsonIfPresent(absl::StrCat(checkpoint_dir, "/config.json")));
  ASSIGN_OR_RETURN(nlohmann::json tokenizer_config,
                   ReadJsonIfPresent(absl::StrCat(checkpoint_dir, "/tokenizer_config.json")));
  std::optional<int64_t> config_bos;
  if (config.is_object() && config.contains("bos_token_id") &&
      config["bos_token_id"].is_number_integer()) {
    config_bos = config["bos_token_id"].get<int64_t>();
  }
  BosRule rule;
  if (tokenizer_config.is_object() && tokenizer_config.contains("add_bos_token") &&
      tokenizer_config["add_bos_token"].is_boolean()) {
    rule.add_bos = tokenizer_config["add_bos_token"].get<bool>();
  } else {
    rule.add_bos = config_bos.has_value();
  }
  if (config_bos) {
    rule.bos_id = *config_bos;
  } else {
    std::string error;
    auto backend = internal::SentencePieceBackend::Load(model_path, &error);
    if (backend != nullptr) rule.bos_id = backend->bos_id();
  }
  return Load(model_path, rule);
}

absl::Status Tokenizer::SetAddBos(bool add) {
  if (add && (bos_rule_.bos_id < 0 || bos_rule_.bos_id >= backend_->piece_size())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "tokenizer ", path_, " has no BOS token (neither config.json's bos_token_id nor the "
        "model defines one); create the run with --bos auto or --bos none"));
  }
  bos_rule_.add_bos = add;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> Tokenizer::Encode(absl::string_view text) const {
  std::vector<int> ids;
  std::string error;
  if (!backend_->Encode(std::string(text), &ids, &error)) {
    return absl::InternalError(absl::StrCat("tokenizer ", path_, ": encode failed: ", error));
  }
  return std::vector<int64_t>(ids.begin(), ids.end());
}

absl::StatusOr<std::vector<int64_t>> Tokenizer::EncodeWithBos(absl::string_view text) const {
  ASSIGN_OR_RETURN(std::vector<int64_t> ids, Encode(text));
  if (bos_rule_.add_bos) ids.insert(ids.begin(), bos_rule_.bos_id);
  return ids;
}

absl::StatusOr<std::string> Tokenizer::Decode(const std::vector<int64_t>& ids) const {
  std::vector<int> narrow;
  narrow.reserve(ids.size());
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer ", path_, ": token id ", id,
                                                     " is outside the vocabulary of ",
                                                     vocab_size()));
    }
    narrow.push_back(static_cast<int>(id));
  }
  std::string text, error;
  if (!backend_->Decode(narrow, &text, &error)) {
    return absl::InternalError(absl::StrCat("tokenizer ", path_, ": decode failed: ", error));
  }
  return text;
}

int64_t Tokenizer::vocab_size() const { return backend_->piece_size(); }
int64_t Tokenizer::eos_id() const { return backend_->eos_id(); }

std::string Tokenizer::IdToPiece(int64_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return backend_->IdToPiece(static_cast<int>(id));
}

}  // namespace steadyeval
