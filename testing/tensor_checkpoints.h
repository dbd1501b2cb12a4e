// Writes small Hugging Face-layout checkpoints from torch tensors, independently
// of the code under test (only common/safetensors.h's header builder is shared).
#ifndef STEADYEVAL_TESTING_TENSOR_CHECKPOINTS_H_
#define STEADYEVAL_TESTING_TENSOR_CHECKPOINTS_H_

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "common/safetensors.h"
#include "nlohmann/json.hpp"
#include "worker/checkpoint/tensor_source.h"

namespace steadyeval::testing {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

inline void WriteSafetensorsFile(const std::string& path, const NamedTensors& tensors) {
  std::vector<TensorInfo> infos;
  for (const auto& [name, t] : tensors) {
    TensorInfo info;
    info.name = name;
    info.dtype = DTypeOfTorch(t.scalar_type()).value();  // throws on an unstorable dtype
    info.shape.assign(t.sizes().begin(), t.sizes().end());
    infos.push_back(info);
  }
  std::string header = BuildSafetensorsHeader(infos);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  for (const auto& [name, t] : tensors) {
    at::Tensor c = t.contiguous();
    out.write(static_cast<const char*>(c.data_ptr()),
              static_cast<std::streamsize>(c.numel() * c.element_size()));
  }
}

// Writes `dir` (created) with config.json and the tensors: one model.safetensors when
// shards == 1, else `shards` files (round robin) plus model.safetensors.index.json.
inline void WriteTestCheckpoint(const std::string& dir, const std::string& config_json,
                                const NamedTensors& tensors, int shards = 1) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json", std::ios::trunc) << config_json;
  if (shards == 1) {
    WriteSafetensorsFile(dir + "/model.safetensors", tensors);
    return;
  }
  std::vector<NamedTensors> groups(shards);
  for (size_t i = 0; i < tensors.size(); ++i) groups[i % shards].push_back(tensors[i]);
  nlohmann::json index;
  index["metadata"] = {{"total_size", 0}};
  index["weight_map"] = nlohmann::json::object();
  for (int s = 0; s < shards; ++s) {
    char file[64];
    std::snprintf(file, sizeof(file), "model-%05d-of-%05d.safetensors", s + 1, shards);
    WriteSafetensorsFile(dir + "/" + file, groups[s]);
    for (const auto& [name, t] : groups[s]) index["weight_map"][name] = file;
  }
  std::ofstream(dir + "/model.safetensors.index.json", std::ios::trunc) << index.dump();
}

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_TENSOR_CHECKPOINTS_H_
