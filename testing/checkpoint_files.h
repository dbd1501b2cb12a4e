// Hugging Face checkpoint folders as files, without libtorch: small safetensors files
// (whole or cut short) and complete single-file or sharded checkpoints, for the discovery
// and completeness tests. testing/tensor_checkpoints.h writes real tensors instead.
#ifndef STEADYEVAL_TESTING_CHECKPOINT_FILES_H_
#define STEADYEVAL_TESTING_CHECKPOINT_FILES_H_

#include <string>
#include <vector>

#include "common/safetensors.h"
#include "testing/files.h"

namespace steadyeval::testing {

// A safetensors file of two small F32 tensors: header + data, `missing_bytes` short.
inline std::string SafetensorsBytes(size_t missing_bytes = 0) {
  std::vector<TensorInfo> tensors(2);
  tensors[0].name = "embed.weight";
  tensors[0].dtype = DType::kF32;
  tensors[0].shape = {4, 2};
  tensors[1].name = "lm_head.weight";
  tensors[1].dtype = DType::kBF16;
  tensors[1].shape = {3};
  std::string bytes = BuildSafetensorsHeader(tensors);
  const size_t data = tensors.back().end;
  bytes.append(data - missing_bytes, '\x01');
  return bytes;
}

inline constexpr char kConfigJson[] = R"({"model_type": "llama", "hidden_size": 8})";

// A complete single-file safetensors checkpoint at `dir`.
inline void WriteSafetensorsCheckpoint(const std::string& dir) {
  WriteFile(dir + "/config.json", kConfigJson);
  WriteFile(dir + "/model.safetensors", SafetensorsBytes());
}

// A complete sharded safetensors checkpoint at `dir` with `shards` shards.
inline void WriteShardedCheckpoint(const std::string& dir, int shards = 2) {
  WriteFile(dir + "/config.json", kConfigJson);
  std::string map;
  for (int i = 1; i <= shards; ++i) {
    const std::string name = "model-0000" + std::to_string(i) + "-of-0000" +
                             std::to_string(shards) + ".safetensors";
    WriteFile(dir + "/" + name, SafetensorsBytes());
    if (!map.empty()) map += ", ";
    map += "\"layer" + std::to_string(i) + ".weight\": \"" + name + "\"";
  }
  WriteFile(dir + "/model.safetensors.index.json",
            "{\"metadata\": {\"total_size\": 100}, \"weight_map\": {" + map + "}}");
}

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_CHECKPOINT_FILES_H_
