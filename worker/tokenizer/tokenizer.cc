#include "worker/tokenizer/tokenizer.h"

#include <sys/stat.h>

#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "common/sha256.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizer/bpe_tokenizer.h"
#include "worker/tokenizer/sentencepiece_backend.h"

namespace steadyeval {
namespace {

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("tokenizer ", path, ": cannot open"));
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("tokenizer ", path, ": read error"));
  return buf.str();
}

// The parsed JSON object in `path`, or a discarded value when the file is absent.
absl::StatusOr<nlohmann::json> ReadJsonIfPresent(const std::string& path) {
  if (!FileExists(path)) return nlohmann::json(nlohmann::json::value_t::discarded);
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  // tokenizer_config.json is dumped (recursively) into the tokenizer's hash.
  RETURN_IF_ERROR(CheckJsonNesting(path, text));
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a readable JSON object"));
  }
  return doc;
}

bool IsBpePath(const std::string& path) { return absl::EndsWith(path, ".json"); }

// A special token named in tokenizer_config.json: a string, or {"content": string}.
std::optional<std::string> TokenContent(const nlohmann::json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return std::nullopt;
  const nlohmann::json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& model_path,
                                                           BosRule bos_rule) {
  if (!FileExists(model_path)) {
    return absl::NotFoundError(absl::StrCat("tokenizer ", model_path, ": no such file"));
  }
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  tokenizer->path_ = model_path;
  // Read once: the bytes are hashed, and a tokenizer.json is parsed from them.
  ASSIGN_OR_RETURN(const std::string bytes, ReadFile(model_path));
  tokenizer->content_sha256_ = Sha256Hex(bytes);
  if (IsBpePath(model_path)) {
    ASSIGN_OR_RETURN(tokenizer->bpe_, BpeTokenizer::FromJson(bytes, model_path));
  } else {
    std::string error;
    tokenizer->spm_ = internal::SentencePieceBackend::Load(model_path, &error);
    if (tokenizer->spm_ == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer ", model_path, ": not a SentencePiece model (", error, ")"));
    }
    tokenizer->eos_id_ = tokenizer->spm_->eos_id();
  }
  if (bos_rule.add_bos && (bos_rule.bos_id < 0 || bos_rule.bos_id >= tokenizer->vocab_size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer ", model_path, ": BOS id ", bos_rule.bos_id, " is outside its vocabulary of ",
        tokenizer->vocab_size()));
  }
  tokenizer->bos_rule_ = bos_rule;
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadForCheckpoint(
    const std::string& checkpoint_dir, const std::string& tokenizer_path) {
  std::string model_path = tokenizer_path;
  if (model_path.empty()) {
    model_path = absl::StrCat(checkpoint_dir, "/tokenizer.model");
    if (!FileExists(model_path)) model_path = absl::StrCat(checkpoint_dir, "/tokenizer.json");
    if (!FileExists(model_path)) {
      return absl::NotFoundError(absl::StrCat(
          "checkpoint ", checkpoint_dir,
          ": neither tokenizer.model nor tokenizer.json found (give the tokenizer file "
          "explicitly with --tokenizer)"));
    }
  } else if (!FileExists(model_path)) {
    return absl::NotFoundError(absl::StrCat("tokenizer ", model_path, ": no such file"));
  }
  const std::string config_path = absl::StrCat(checkpoint_dir, "/tokenizer_config.json");
  ASSIGN_OR_RETURN(nlohmann::json config,
                   ReadJsonIfPresent(absl::StrCat(checkpoint_dir, "/config.json")));
  ASSIGN_OR_RETURN(nlohmann::json tokenizer_config, ReadJsonIfPresent(config_path));
  std::optional<int64_t> config_bos;
  if (config.is_object() && config.contains("bos_token_id") &&
      config["bos_token_id"].is_number_integer()) {
    config_bos = config["bos_token_id"].get<int64_t>();
  }

  // Load without BOS first: the rule needs the vocabulary.
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Load(model_path, BosRule{}));
  std::optional<int64_t> named_bos, named_eos;
  if (auto content = TokenContent(tokenizer_config, "bos_token"); content.has_value()) {
    named_bos = tokenizer->bpe_ != nullptr ? tokenizer->bpe_->TokenToId(*content) : std::nullopt;
  }
  if (auto content = TokenContent(tokenizer_config, "eos_token"); content.has_value()) {
    named_eos = tokenizer->bpe_ != nullptr ? tokenizer->bpe_->TokenToId(*content) : std::nullopt;
  }
  BosRule rule;
  if (named_bos) {
    rule.bos_id = *named_bos;
  } else if (config_bos) {
    rule.bos_id = *config_bos;
  } else if (tokenizer->spm_ != nullptr) {
    rule.bos_id = tokenizer->spm_->bos_id();
  } else if (auto id = tokenizer->bpe_->template_bos_id(); id.has_value()) {
    rule.bos_id = *id;
  }
  if (tokenizer_config.is_object() && tokenizer_config.contains("add_bos_token") &&
      tokenizer_config["add_bos_token"].is_boolean()) {
    rule.add_bos = tokenizer_config["add_bos_token"].get<bool>();
  } else if (tokenizer->spm_ != nullptr) {
    rule.add_bos = config_bos.has_value();
  } else if (auto id = tokenizer->bpe_->template_bos_id(); id.has_value()) {
    rule.add_bos = true;
    rule.bos_id = *id;
  }
  if (rule.add_bos && (rule.bos_id < 0 || rule.bos_id >= tokenizer->vocab_size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer ", model_path, ": BOS id ", rule.bos_id, " is outside its vocabulary of ",
        tokenizer->vocab_size(), " (check tokenizer_config.json's bos_token and config.json's "
        "bos_token_id)"));
  }
  tokenizer->bos_rule_ = rule;
  if (named_eos) tokenizer->eos_id_ = *named_eos;
  if (tokenizer->bpe_ != nullptr && !named_eos) {
    if (auto id = tokenizer->bpe_->template_eos_id(); id.has_value()) tokenizer->eos_id_ = *id;
  }
  if (tokenizer_config.is_object()) {
    // The pin covers what shapes tokenization: the tokenizer file and its config.
    tokenizer->content_sha256_ =
        Sha256Hex(absl::StrCat(tokenizer->content_sha256_, " ", Sha256Hex(tokenizer_config.dump())));
  }
  return tokenizer;
}

absl::Status Tokenizer::SetAddBos(bool add) {
  if (add && (bos_rule_.bos_id < 0 || bos_rule_.bos_id >= vocab_size())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "tokenizer ", path_, " has no BOS token (neither tokenizer_config.json, config.json's "
        "bos_token_id nor the tokenizer defines one); create the run with --bos auto or "
        "--bos none"));
  }
  bos_rule_.add_bos = add;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> Tokenizer::Encode(absl::string_view text) const {
  if (bpe_ != nullptr) return bpe_->Encode(text);
  std::vector<int> ids;
  std::string error;
  if (!spm_->Encode(std::string(text), &ids, &error)) {
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
  if (bpe_ != nullptr) return bpe_->Decode(ids);
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
  if (!spm_->Decode(narrow, &text, &error)) {
    return absl::InternalError(absl::StrCat("tokenizer ", path_, ": decode failed: ", error));
  }
  return text;
}

int64_t Tokenizer::vocab_size() const {
  return bpe_ != nullptr ? bpe_->vocab_size() : spm_->piece_size();
}

int64_t Tokenizer::eos_id() const { return eos_id_; }

const char* Tokenizer::kind() const { return bpe_ != nullptr ? "bpe" : "sentencepiece"; }

std::string Tokenizer::IdToPiece(int64_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  if (bpe_ != nullptr) return bpe_->IdToPiece(id);
  return spm_->IdToPiece(static_cast<int>(id));
}

absl::StatusOr<std::string> SentencePiecePluginPath() {
  std::string path;
  std::string error;
  if (!internal::SentencePieceBackend::PluginPath(&path, &error)) {
    return absl::FailedPreconditionError(error);
  }
  return path;
}

}  // namespace steadyeval
