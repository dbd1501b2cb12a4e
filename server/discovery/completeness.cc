#include "server/discovery/completeness.h"

#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
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

// The converted layouts' files (DESIGN §4).
constexpr char kDcpMetadata[] = ".metadata";
constexpr char kDcpShardSuffix[] = ".distcp";
constexpr char kMegatronTracker[] = "latest_checkpointed_iteration.txt";
constexpr char kDeepSpeedTracker[] = "latest";

// A tracker file holds one number or tag; anything larger is not one.
constexpr uint64_t kMaxTrackerBytes = 4096;

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

// kHuggingFace: config, weights, safetensors headers (see completeness.h).
absl::Status CheckFolder(CheckpointSource& source, const std::string& path,
                         const CheckpointFingerprint& files) {
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

  return absl::OkStatus();
}

absl::Status RequireMarker(const CheckpointFingerprint& files, const std::string& marker) {
  if (marker.empty()) return absl::OkStatus();
  for (const FileFingerprint& f : files) {
    if (f.name == marker) return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("marker file ", marker, " is missing (the trainer writes it last)"));
}

// The tracker file `name` at the source's root, trimmed; nullopt when there is none (or
// it is not a regular file, e.g. a `latest` link to a folder). `listing`, when not null,
// is the root as just listed: a tracker not shown there as a file is not read.
absl::StatusOr<std::optional<std::string>> ReadTracker(CheckpointSource& source,
                                                       const std::string& name,
                                                       const std::vector<SourceEntry>* listing) {
  if (listing != nullptr &&
      std::none_of(listing->begin(), listing->end(), [&](const SourceEntry& e) {
        return e.name == name && !e.is_dir;
      })) {
    return std::optional<std::string>();
  }
  absl::StatusOr<std::string> text = source.ReadRootFile(name, kMaxTrackerBytes);
  if (absl::IsNotFound(text.status()) || absl::IsFailedPrecondition(text.status())) {
    return std::optional<std::string>();
  }
  if (!text.ok()) return Annotate(text.status(), absl::StrCat(name, " beside the checkpoints"));
  return std::optional<std::string>(std::string(absl::StripAsciiWhitespace(*text)));
}

// The step a tracker names: the digits that end `text` ("1200", "global_step1200").
std::optional<uint64_t> TrailingStep(const std::string& text) {
  size_t begin = text.size();
  while (begin > 0 && absl::ascii_isdigit(static_cast<unsigned char>(text[begin - 1]))) --begin;
  uint64_t step = 0;
  if (begin == text.size() || !absl::SimpleAtoi(text.substr(begin), &step)) return std::nullopt;
  return step;
}

// The tracker `name`, whose content is `text`, written by `framework`, must name `step` or
// a later one.
absl::Status RequireTrackerAtLeast(const std::string& name, const std::string& text,
                                   const char* framework, std::optional<uint64_t> step) {
  if (text.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        name, " beside the checkpoints is empty (", framework, " is writing it?)"));
  }
  const std::optional<uint64_t> named = TrailingStep(text);
  if (!named.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " beside the checkpoints says '", text, "', which names no step"));
  }
  if (!step.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the checkpoint's step is unknown, so ", name, " cannot be compared with it"));
  }
  if (*named < *step) {
    return absl::FailedPreconditionError(absl::StrCat(
        name, " beside the checkpoints names step ", *named, " ('", text, "'); waiting for ",
        framework, " to record step ", *step, " or later (it does once the checkpoint is written)"));
  }
  return absl::OkStatus();
}

// kConverted: the trainer's "written last" signal (see completeness.h).
absl::Status CheckConvertedFolder(const TrackerFiles& trackers, const CheckpointFingerprint& files,
                                  std::optional<uint64_t> step) {
  bool has_metadata = false;
  bool has_shards = false;
  for (const FileFingerprint& f : files) {
    if (f.name == kDcpMetadata) has_metadata = true;
    if (absl::EndsWith(f.name, kDcpShardSuffix)) has_shards = true;
  }

  RETURN_IF_ERROR(trackers.megatron.status());
  if (const std::optional<std::string>& megatron = *trackers.megatron; megatron.has_value()) {
    RETURN_IF_ERROR(RequireTrackerAtLeast(kMegatronTracker, *megatron, "Megatron", step));
    if (has_shards && !has_metadata) {
      return absl::FailedPreconditionError(absl::StrCat(
          "has *", kDcpShardSuffix, " files (Megatron torch_dist) but no ", kDcpMetadata,
          " (written last)"));
    }
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(trackers.deepspeed.status());
  if (const std::optional<std::string>& deepspeed = *trackers.deepspeed; deepspeed.has_value()) {
    return RequireTrackerAtLeast(kDeepSpeedTracker, *deepspeed, "DeepSpeed", step);
  }
  if (has_metadata) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "not a complete training-framework checkpoint yet: expected ", kDcpMetadata,
      " in the folder (PyTorch DCP writes it last), or beside the checkpoint folders ",
      kMegatronTracker, " (Megatron) or ", kDeepSpeedTracker,
      " (DeepSpeed) naming this step or a later one",
      has_shards ? absl::StrCat("; it has *", kDcpShardSuffix, " files") : ""));
}

}  // namespace

TrackerFiles CompletenessCheck::ReadTrackers(CheckpointSource& source,
                                             const std::vector<SourceEntry>* listing) const {
  TrackerFiles trackers;
  if (layout_ != CheckpointLayout::kConverted) return trackers;
  trackers.megatron = ReadTracker(source, kMegatronTracker, listing);
  if (trackers.megatron.ok() && !trackers.megatron->has_value()) {
    trackers.deepspeed = ReadTracker(source, kDeepSpeedTracker, listing);
  }
  return trackers;
}

absl::Status CompletenessCheck::CheckWithStep(CheckpointSource& source, const std::string& path,
                                              std::optional<uint64_t> step,
                                              const CheckpointFingerprint& files,
                                              const TrackerFiles* trackers) const {
  absl::Status status;
  if (layout_ == CheckpointLayout::kConverted) {
    status = trackers != nullptr ? CheckConvertedFolder(*trackers, files, step)
                                 : CheckConvertedFolder(ReadTrackers(source), files, step);
  } else {
    status = CheckFolder(source, path, files);
  }
  if (status.ok()) status = RequireMarker(files, marker_);
  return Annotate(status, BaseName(path));
}

absl::Status CompletenessCheck::Check(CheckpointSource& source, const std::string& path,
                                      uint64_t step, const CheckpointFingerprint& files) const {
  return CheckWithStep(source, path, step, files, nullptr);
}

absl::Status CompletenessCheck::Check(CheckpointSource& source, const std::string& path,
                                      uint64_t step, const CheckpointFingerprint& files,
                                      const TrackerFiles& trackers) const {
  return CheckWithStep(source, path, step, files, &trackers);
}

absl::Status CompletenessCheck::Check(CheckpointSource& source, const std::string& path,
                                      uint64_t step) const {
  auto files = source.Fingerprint(path);
  if (!files.ok()) return Annotate(files.status(), BaseName(path));
  return CheckWithStep(source, path, step, *files, nullptr);
}

absl::Status CompletenessCheck::Check(CheckpointSource& source, const std::string& path,
                                      const CheckpointFingerprint& files) const {
  return CheckWithStep(source, path, std::nullopt, files, nullptr);
}

absl::Status CompletenessCheck::Check(CheckpointSource& source, const std::string& path) const {
  auto files = source.Fingerprint(path);
  if (!files.ok()) return Annotate(files.status(), BaseName(path));
  return CheckWithStep(source, path, std::nullopt, *files, nullptr);
}

absl::Status CheckLocalCheckpoint(const std::string& path, const std::string& marker) {
  ASSIGN_OR_RETURN(std::unique_ptr<FileSystemSource> source, FileSystemSource::Create(path));
  return CompletenessCheck(marker).Check(*source, source->root());
}

}  // namespace steadyeval
