// CompletenessCheck: is a checkpoint folder fully written? (DESIGN §4)
//
// The rules depend on the run's layout (CheckpointLayout).
//
// kHuggingFace (read natively): a checkpoint folder is complete when:
//   - config.json is present and is a JSON object;
//   - its weights are present, by the first format found of:
//       model.safetensors.index.json: valid JSON with a "weight_map" object; every shard it
//         names is present;
//       model.safetensors;
//       pytorch_model.bin.index.json: as above, shards present (accepted by presence);
//       pytorch_model.bin (accepted by presence);
//   - every *.safetensors file in the folder has a header that parses and whose tensors
//     end exactly at the end of the file (common/safetensors.h);
//   - the run's marker file (e.g. ".complete", "_SUCCESS"), if one is set, is present.
//
// kConverted (a training framework's layout, made HF by the run's converter on the worker):
// the trainer's own "written last" signal, by the first of these that applies:
//   - Megatron (legacy or torch_dist): the source root holds
//     latest_checkpointed_iteration.txt; it must name an iteration >= the checkpoint's
//     step, and a folder holding *.distcp files (torch_dist) must also hold .metadata;
//   - DeepSpeed: the source root holds a regular file `latest`; it must name a tag ending
//     in a step (e.g. global_step1200) >= the checkpoint's step;
//   - PyTorch DCP: the folder holds .metadata (torch.distributed.checkpoint writes it
//     after every *.distcp file);
//   - otherwise the folder is not complete, and the reason names what each layout needs;
//   - the run's marker file, if one is set, is present (as above).
// Trackers live outside the checkpoint folder, so a converted verdict can change while the
// folder's files do not: a caller that caches a negative verdict keys it on the trackers'
// text too (ReadTrackers reads them once for many checks).
//
// Quiescence (files unchanged over time) is the watcher's job, not this check's.
//
// Every read goes through a CheckpointSource. Thread-safe (const, no state) as long as the
// source passed in may be used from the calling thread.
#ifndef STEADYEVAL_SERVER_DISCOVERY_COMPLETENESS_H_
#define STEADYEVAL_SERVER_DISCOVERY_COMPLETENESS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/discovery/checkpoint_source.h"

namespace steadyeval {

// How a run's checkpoints are written (see the rules above).
enum class CheckpointLayout {
  kHuggingFace,  // config.json + safetensors (or pytorch_model.bin): read natively
  kConverted,    // PyTorch DCP, Megatron or DeepSpeed: read through the run's converter
};

// The kConverted tracker files beside the checkpoint folders, as read once by ReadTrackers.
// Each is nullopt when absent (or not a regular file, e.g. a `latest` folder), otherwise
// its text trimmed of whitespace, or the error reading it.
struct TrackerFiles {
  absl::StatusOr<std::optional<std::string>> megatron = std::optional<std::string>();
  absl::StatusOr<std::optional<std::string>> deepspeed = std::optional<std::string>();

  bool operator==(const TrackerFiles& o) const {
    return megatron == o.megatron && deepspeed == o.deepspeed;
  }
  bool operator!=(const TrackerFiles& o) const { return !(*this == o); }
};

class CompletenessCheck {
 public:
  // `marker`: the file name that must be present (empty: none required).
  explicit CompletenessCheck(std::string marker = "",
                             CheckpointLayout layout = CheckpointLayout::kHuggingFace)
      : marker_(std::move(marker)), layout_(layout) {}

  // Checks the checkpoint folder at `path` of `source`, whose files are `files` (its
  // fingerprint, taken just before; sizes are taken from it) and whose name parses to
  // `step` (the converted layouts compare it with a tracker file). OK when complete;
  // otherwise a status whose message starts with the folder's name and names the
  // offending file:
  //   FAILED_PRECONDITION: something is missing, shorter than its header says, or a
  //     tracker names an earlier step (not yet written: check again later);
  //   INVALID_ARGUMENT: a file is malformed (bad JSON, bad safetensors header, a tracker
  //     that names no step);
  //   other codes: the source could not read a file.
  absl::Status Check(CheckpointSource& source, const std::string& path, uint64_t step,
                     const CheckpointFingerprint& files) const;

  // As above with the trackers already read (ReadTrackers on the same source), so that
  // checking many folders reads them once.
  absl::Status Check(CheckpointSource& source, const std::string& path, uint64_t step,
                     const CheckpointFingerprint& files, const TrackerFiles& trackers) const;

  // Reads the tracker files the kConverted rules consult (kHuggingFace: none, all absent).
  // `listing`, when not null, is the source's root as just listed (List()): a tracker it
  // does not show as a file is taken as absent without a read. The DeepSpeed tracker is
  // read only when there is no Megatron one (the rules consult it only then).
  TrackerFiles ReadTrackers(CheckpointSource& source,
                            const std::vector<SourceEntry>* listing = nullptr) const;

  // As above, taking the fingerprint itself.
  absl::Status Check(CheckpointSource& source, const std::string& path, uint64_t step) const;

  // As above without a step: enough for kHuggingFace; in kConverted a tracker's rule then
  // fails with INVALID_ARGUMENT.
  absl::Status Check(CheckpointSource& source, const std::string& path,
                     const CheckpointFingerprint& files) const;
  absl::Status Check(CheckpointSource& source, const std::string& path) const;

  const std::string& marker() const { return marker_; }
  CheckpointLayout layout() const { return layout_; }

 private:
  // `trackers` null: read them here when the layout needs them.
  absl::Status CheckWithStep(CheckpointSource& source, const std::string& path,
                             std::optional<uint64_t> step, const CheckpointFingerprint& files,
                             const TrackerFiles* trackers) const;

  std::string marker_;
  CheckpointLayout layout_;
};

// Checks the local Hugging Face checkpoint folder at `path` (a FileSystemSource on the
// local file system).
absl::Status CheckLocalCheckpoint(const std::string& path, const std::string& marker = "");

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_DISCOVERY_COMPLETENESS_H_
