// CompletenessCheck: is a checkpoint folder fully written? (DESIGN §4)
//
// A Hugging Face checkpoint folder is complete when:
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
// Quiescence (files unchanged over time) is the watcher's job, not this check's.
//
// Every read goes through a CheckpointSource. Thread-safe (const, no state) as long as the
// source passed in may be used from the calling thread.
#ifndef STEADYEVAL_SERVER_DISCOVERY_COMPLETENESS_H_
#define STEADYEVAL_SERVER_DISCOVERY_COMPLETENESS_H_

#include <string>

#include "absl/status/status.h"
#include "server/discovery/checkpoint_source.h"

namespace steadyeval {

class CompletenessCheck {
 public:
  // `marker`: the file name that must be present (empty: none required).
  explicit CompletenessCheck(std::string marker = "") : marker_(std::move(marker)) {}

  // Checks the checkpoint folder at `path` of `source`, whose files are `files` (its
  // fingerprint, taken just before; sizes are taken from it). OK when complete; otherwise
  // a status whose message starts with the folder's name and names the offending file:
  //   FAILED_PRECONDITION: something is missing or shorter than its header says (not yet
  //     written: check again later);
  //   INVALID_ARGUMENT: a file is malformed (bad JSON, bad safetensors header);
  //   other codes: the source could not read a file.
  absl::Status Check(CheckpointSource& source, const std::string& path,
                     const CheckpointFingerprint& files) const;

  // As above, taking the fingerprint itself.
  absl::Status Check(CheckpointSource& source, const std::string& path) const;

  const std::string& marker() const { return marker_; }

 private:
  std::string marker_;
};

// Checks the local checkpoint folder at `path` (a FileSystemSource on the local file
// system).
absl::Status CheckLocalCheckpoint(const std::string& path, const std::string& marker = "");

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_DISCOVERY_COMPLETENESS_H_
