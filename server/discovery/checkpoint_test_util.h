// Test helpers: a temporary folder and writers for Hugging Face checkpoint folders.
// Test-only (gtest); not thread-safe.
#ifndef STEADYEVAL_SERVER_DISCOVERY_CHECKPOINT_TEST_UTIL_H_
#define STEADYEVAL_SERVER_DISCOVERY_CHECKPOINT_TEST_UTIL_H_

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "gtest/gtest.h"

namespace steadyeval {
namespace testing_util {

// A fresh folder under the test temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "/steadyeval_XXXXXX";
    char* made = ::mkdtemp(tmpl.data());
    EXPECT_NE(made, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline void AppendFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

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

// Sets `path`'s mtime to `seconds` since the epoch.
inline void SetMtime(const std::string& path, int64_t seconds) {
  struct timespec times[2];
  times[0].tv_sec = seconds;
  times[0].tv_nsec = 0;
  times[1] = times[0];
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
}

}  // namespace testing_util
}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_DISCOVERY_CHECKPOINT_TEST_UTIL_H_
