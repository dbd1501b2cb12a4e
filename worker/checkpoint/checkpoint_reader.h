// CheckpointReader: read access to one Hugging Face-layout checkpoint folder.
//
// The folder holds config.json and weights in the first of these formats present (the order
// of server/discovery/completeness.h):
//   model.safetensors.index.json  its weight_map names safetensors shards;
//   model.safetensors;
//   pytorch_model.bin.index.json  its weight_map names torch.save shards;
//   pytorch_model.bin             torch.save of a state dict (pytorch_checkpoint.h).
// Open() validates the whole checkpoint up front: config.json is readable, every shard
// exists and parses, and every tensor an index names is in its shard. Safetensors shards'
// headers must agree with the file's size (a shard still being written is
// FAILED_PRECONDITION); they are mapped read-only (FileSystem::Map: memory-mapped on the
// local file system, no copy) and stay mapped for the reader's lifetime. .bin shards are read whole into memory at Open() (the format cannot be mapped:
// a tensor may be a strided view of a storage shared with other tensors).
//
// Non-parameter buffers of older checkpoints (`*.rotary_emb.inv_freq`, `*.attn.bias`,
// `*.attn.masked_bias`) are left out of TensorNames(); Tensor() still returns them.
//
// Implements TensorSource (tensor_source.h), so a model loads from a folder or from memory.
// For streaming over many checkpoints (averaging, drift), MappedTensor() gives zero-copy
// views of the mapping and DropPages() returns a tensor's pages to the OS once read, so
// resident memory stays at about one tensor per open reader however large the folders
// (safetensors only: a .bin checkpoint stays wholly resident while its reader lives).
//
// Thread-safe: all methods are const after Open() and may be called concurrently.
#ifndef STEADYEVAL_WORKER_CHECKPOINT_CHECKPOINT_READER_H_
#define STEADYEVAL_WORKER_CHECKPOINT_CHECKPOINT_READER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/file_system.h"
#include "common/safetensors.h"
#include "worker/checkpoint/tensor_source.h"

namespace steadyeval {

class CheckpointReader : public TensorSource {
 public:
  // Opens and validates the checkpoint folder `dir`. NOT_FOUND when config.json, the
  // weights or a shard listed in the index is missing (the message names it);
  // FAILED_PRECONDITION for a truncated safetensors shard; INVALID_ARGUMENT / DATA_LOSS for
  // malformed headers, an unknown dtype, a damaged or unsupported .bin, or an index that
  // disagrees with its shards. Messages name the shard file and, where one is involved,
  // the tensor. Every file is read through `fs` (not owned; used only during Open: the
  // mappings it returns are the reader's).
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> Open(
      const std::string& dir, FileSystem* fs = FileSystem::Local());

  ~CheckpointReader();
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  const std::string& dir() const { return dir_; }
  // "checkpoint DIR".
  const std::string& label() const override { return label_; }
  // The raw text of config.json.
  const std::string& config_json() const override { return config_json_; }

  // Parameter names, sorted, without the ignored buffers.
  std::vector<std::string> TensorNames() const override;
  bool HasTensor(absl::string_view name) const;
  // Stored dtype, shape and offsets (for a .bin tensor: begin 0, end its byte size).
  // NOT_FOUND naming the tensor when absent.
  absl::StatusOr<TensorInfo> Info(absl::string_view name) const override;

  // The tensor converted to a contiguous float32 CPU tensor (always a copy owned by the
  // caller; the mapping is never written). NOT_FOUND naming the tensor when absent.
  absl::StatusOr<at::Tensor> Tensor(absl::string_view name) const override;

  // The path of the shard file holding `name`; label() when absent.
  std::string Origin(absl::string_view name) const override;

  // The tensor in its stored dtype as a view of the read-only mapping (no copy). Valid
  // only while this reader lives; never write to it (the mapping is PROT_READ: a write
  // faults). For a .bin checkpoint: the loaded tensor itself, possibly a non-contiguous
  // view sharing storage with other tensors (also no copy; never write to it either).
  // NOT_FOUND naming the tensor when absent.
  absl::StatusOr<at::Tensor> MappedTensor(absl::string_view name) const;
  // Gives the tensor's mapped pages back to the OS (madvise DONTNEED); a later read
  // faults them in again from the file. Drop whole tensors: with large page-cache folios a
  // fault may map a whole folio again, so dropping part of a tensor being read saves
  // little. No-op for an unknown name and for .bin checkpoints (held in memory).
  void DropPages(absl::string_view name) const;

 private:
  struct Shard;
  struct Entry {
    size_t shard;
    TensorInfo info;
    at::Tensor loaded;  // .bin shards: the tensor in memory; undefined for safetensors
  };
  explicit CheckpointReader(FileSystem* fs);
  absl::Status AddShard(const std::string& file_name);
  absl::Status AddPytorchShard(const std::string& file_name);
  absl::Status AddEntry(const std::string& name, Entry entry);
  // Reads the index at `index_name`, checks its shards exist and opens each with `add`,
  // then checks every tensor it names is in the shard it names.
  absl::Status OpenIndexed(const std::string& index_name,
                           absl::Status (CheckpointReader::*add)(const std::string&));

  FileSystem* const fs_;  // during Open only
  std::string dir_;
  std::string label_;
  std::string config_json_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::map<std::string, Entry, std::less<>> tensors_;
};

// True for the non-parameter buffers checkpoints may carry (see above).
bool IsIgnoredBuffer(absl::string_view tensor_name);

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_CHECKPOINT_CHECKPOINT_READER_H_
