// Writes tensors held in memory as a Hugging Face-layout checkpoint folder: the offline
// `average` command's output (DESIGN §6: ship the averaged model).
//
// The folder gets config.json (the source's text), the weights as `model.safetensors`
// (shards == 1) or `model-0000i-of-0000K.safetensors` plus `model.safetensors.index.json`,
// and copies of the tokenizer / generation files found in `extra_files_dir`. It is written
// to a sibling temporary folder, every file fsync'ed, then renamed into place, so `out_dir`
// either does not exist or is complete. Thread-compatible (no shared state).
#ifndef STEADYEVAL_WORKER_CHECKPOINT_CHECKPOINT_WRITER_H_
#define STEADYEVAL_WORKER_CHECKPOINT_CHECKPOINT_WRITER_H_

#include <string>

#include "absl/status/status.h"
#include "worker/checkpoint/tensor_source.h"

namespace steadyeval {

// Files copied from `extra_files_dir` when present (config.json comes from the tensors).
inline constexpr const char* kCheckpointSideFiles[] = {
    "tokenizer.model",         "tokenizer.json",        "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json",     "vocab.json",
    "merges.txt",              "generation_config.json"};

// ALREADY_EXISTS when `out_dir` exists; INVALID_ARGUMENT when shards < 1 or exceeds the
// tensor count; INTERNAL / PERMISSION_DENIED-like errors from the file system otherwise
// (the temporary folder is removed on failure).
absl::Status WriteCheckpoint(const TensorMap& tensors, const std::string& out_dir, int shards,
                             const std::string& extra_files_dir);

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_CHECKPOINT_CHECKPOINT_WRITER_H_
