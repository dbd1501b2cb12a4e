#include "server/discovery/completeness.h"

#include <map>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace steadyeval {
namespace {

constexpr char kConfig[] = "config.json";
constexpr char kSafetensors[] = "model.safetensors";
constexpr char kSafetensorsIndex[] = "model.safetensors.index.json";
constexpr char kBin[] = "pytorch_model.bin";
constexpr char kBinIndex[] = "pytorch_model.bin.index.json";

// config.json and index files are small; anything larger is not one.
constexpr uint64_t kMaxJsonBytes = 64ull << 20;

std::string BaseName(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// Reads a whole small JSON file listed in `files` and parses it. INVALID_ARGUMENT when it
// is not JSON (a half-written file reads that way too).
absl::StatusOr<nlohmann::json> ReadJson(CheckpointSource& source, const std::string& path,
                                        const FileFingerprint& file) {
  if (file.size > kMaxJsonBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.name, " is ", file.size, " bytes, over the ", kMaxJsonBytes,
                     "-byte limit for a JSON file"));
  }
  ASSIGN_OR_RETURN(std::string text, source.ReadRange(path, file.name, 0, file.size));
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.name, " is not valid JSON (still being written?)"));
  }
  return doc;
}

// The shard file names of an index file's weight_map, deduplicated.
absl::StatusOr<std::set<std::string>> ReadIndexShards(CheckpointSource& source,
                                                      const std::string& path,
                                                      const FileFingerprint& index) {
  ASSIGN_OR_RETURN(nlohmann::json doc, ReadJson(source, path, index));
  if (!doc.is_object() || !doc.contains("weight_map") || !doc["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index.name, " has no \"weight_map\" object"));
  }
  std::set<std::string> shards;
  for (auto it = doc["weight_map"].begin(); it != doc["weight_map"].end(); ++it) {
    if (!it.value().is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          index.name, ": weight_map entry '", it.key(), "' is not a file name"));
    }
    std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard[0] == '/' || absl::StrContains(shard, "..")) {
      return absl::InvalidArgumentError(absl::StrCat(
          index.name, ": shard '", shard, "' is not a file inside the checkpoint folder"));
    }
    shards.insert(std::move(shard));
  }
  if (shards.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(index.name, ": weight_map is empty"));
  }
  return shards;
}

// Reads `file`'s safetensors header through `source` and validates it against the
// fingerprint's size (the same rules as ReadSafetensorsHeader).
absl::Status CheckSafetensors(CheckpointSource& source, const std::string& path,
                              const FileFingerprint& file) {
  if (file.size < 8) {
    return absl::FailedPreconditionError(absl::StrCat(
        file.name, " is ", file.size,
        " bytes, too short for a safetensors header (still being written?)"));
  }
  ASSIGN_OR_RETURN(std::string prefix, source.ReadRange(path, file.name, 0, 8));
  if (prefix.size() < 8) {
    return absl::FailedPreconditionError(
        absl::StrCat(file.name, " shrank while being read (being rewritten?)"));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(prefix[i]);
  if (n > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        file.name, ": header length ", n, " is over the ", kMaxSafetensorsHeaderBytes,
        "-byte limit"));
  }
  if (n > file.size - 8) {
    return absl::FailedPreconditionError(absl::StrCat(
        file.name, " is ", file.size, " bytes, its header alone says ", 8 + n,
        " (still being written?)"));
  }
  ASSIGN_OR_RETURN(std::string json, source.ReadRange(path, file.name, 8, n));
  if (json.size() < n) {
    return absl::FailedPreconditionError(
        absl::StrCat(file.name, " shrank while being read (being rewritten?)"));
  }
  return ParseSafetensorsHeader(json, file.size, file.name).status();
}

absl::Status CheckFolder(CheckpointSource& source, const std::string& path,
                         const CheckpointFingerprint& files, const std::string& marker) {
  std::map<std::string, const FileFingerprint*> by_name;
  for (const FileFingerprint& f : files) by_name[f.name] = &f;
  auto find = [&](const std::string& name) -> const FileFingerprint* {
    auto it = by_name.find(name);
    return it == by_name.end() ? nullptr : it->second;
  };
  auto require_shards = [&](const FileFingerprint& index) -> absl::Status {
    ASSIGN_OR_RETURN(std::set<std::string> shards, ReadIndexShards(source, path, index));
    for (const std::string& shard : shards) {
      if (find(shard) == nullptr) {
        return absl::FailedPreconditionError(
            absl::StrCat("shard ", shard, " listed in ", index.name, " is missing"));
      }
    }
    return absl::OkStatus();
  };

  const FileFingerprint* config = find(kConfig);
  if (config == nullptr) return absl::FailedPreconditionError("config.json is missing");
  ASSIGN_OR_RETURN(nlohmann::json config_doc, ReadJson(source, path, *config));
  if (!config_doc.is_object()) {
    return absl::InvalidArgumentError("config.json is not a JSON object");
  }

  if (const FileFingerprint* index = find(kSafetensorsIndex)) {
    RETURN_IF_ERROR(require_shards(*index));
  } else if (find(kSafetensors) != nullptr) {
    // Checked with every other safetensors file below.
  } else if (const FileFingerprint* bin_index = find(kBinIndex)) {
    RETURN_IF_ERROR(require_shards(*bin_index));
  } else if (find(kBin) == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no ", kSafetensors, " or ", kSafetensorsIndex, " (nor ", kBin, " or ", kBinIndex, ")"));
  }

  for (const FileFingerprint& f : files) {
    if (absl::EndsWith(f.name, ".safetensors")) RETURN_IF_ERROR(CheckSafetensors(source, path, f));
  }

  if (!marker.empty() && find(marker) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("marker file ", marker, " is missing (the trainer writes it last)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CompletenessCheck::Check(CheckpointSource& source, const std::string& path,
                                      const CheckpointFingerprint& files) const {
  return Annotate(CheckFolder(source, path, files, marker_), BaseName(path));
}

absl::Status CompletenessCheck::Check(CheckpointSource& source, const std::string& path) const {
  auto files = source.Fingerprint(path);
  if (!files.ok()) return Annotate(files.status(), BaseName(path));
  return Check(source, path, *files);
}

absl::Status CheckLocalCheckpoint(const std::string& path, const std::string& marker) {
  ASSIGN_OR_RETURN(std::unique_ptr<FileSystemSource> source, FileSystemSource::Create(path));
  return CompletenessCheck(marker).Check(*source, source->root());
}

}  // namespace steadyeval
