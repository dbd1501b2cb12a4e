// Reading the state dicts Python's torch.save writes (`pytorch_model.bin` and its shards).
//
// torch.save (PyTorch >= 1.6) writes a zip archive: `<archive>/data.pkl`, a pickle (protocol
// 2) of the saved object in which every tensor is a call to torch._utils._rebuild_tensor_v2
// on a storage given by persistent id ('storage', torch.<Type>Storage, key, location, numel);
// the storage's bytes are the record `<archive>/data/<key>`, little-endian.
//
// The zip container is read with libtorch's caffe2::serialize::PyTorchStreamReader. The
// pickle is interpreted here, not by torch::pickle_load / torch::jit::Unpickler: libtorch
// 1.13's unpickler turns every collections.OrderedDict into None (it expects one only as a
// tensor's empty backward-hooks argument), so it cannot read torch.save(model.state_dict()).
// The interpreter below knows only the opcodes and globals a state dict uses; it never
// calls anything named in the file (other globals become opaque objects, reported as such
// if they are a top-level entry), so a hostile file can do no more than fail to load.
//
// Thread-safe: a pure function of the file. The file is mapped (FileSystem::Map) while it
// is read, and each tensor's storage is copied out of it.
#ifndef STEADYEVAL_WORKER_CHECKPOINT_PYTORCH_CHECKPOINT_H_
#define STEADYEVAL_WORKER_CHECKPOINT_PYTORCH_CHECKPOINT_H_

#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "common/file_system.h"

namespace steadyeval {

using NamedTensorList = std::vector<std::pair<std::string, at::Tensor>>;

// The tensors of the state dict (a dict or collections.OrderedDict of name -> tensor) that
// torch.save wrote to `path` on `fs`, in the file's order. Each tensor is a CPU tensor in its stored
// dtype and geometry, owning its memory: tensors that were views of one storage in Python
// (tied weights, slices of a flat buffer, transposes) are views of one shared storage here
// too, so they may be non-contiguous and must not be written to. Dtypes: those safetensors
// can store (float64/32/16, bfloat16, int64/32/16/8, uint8, bool). nn.Parameter entries
// load as their data. The OrderedDict's `_metadata` attribute is ignored.
//
// Errors, each message starting with `path` and naming the entry where one is involved:
//   the file system's error (NOT_FOUND, PERMISSION_DENIED, ...) when it cannot be read;
//   DATA_LOSS: not a zip archive, truncated or corrupt archive or pickle, a missing storage
//     record, a tensor reaching outside its storage;
//   INVALID_ARGUMENT: the legacy (non-zip, PyTorch < 1.6 or
//     _use_new_zipfile_serialization=False) format, a big-endian file, a top level that is
//     not a dict, an entry that is not a tensor (e.g. a training checkpoint {"model": ...,
//     "step": ...}), a tensor of an unsupported dtype (complex, quantized, ...).
absl::StatusOr<NamedTensorList> ReadPytorchStateDict(const std::string& path,
                                                     FileSystem* fs = FileSystem::Local());

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_CHECKPOINT_PYTORCH_CHECKPOINT_H_
