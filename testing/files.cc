#include "testing/files.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace steadyeval::testing {

std::string SourceDir() {
  if (const char* dir = std::getenv("STEADYEVAL_SOURCE_DIR"); dir != nullptr && *dir) return dir;
  return std::filesystem::path(__FILE__).parent_path().parent_path().string();
}

std::string BinDir() {
  if (const char* dir = std::getenv("STEADYEVAL_BIN_DIR"); dir != nullptr && *dir) return dir;
  return "./bin";
}

std::string LlamaFixture(const std::string& name) {
  return SourceDir() + "/tests/fixtures/llama/" + name;
}

std::string TokenizerFixture() {
  return SourceDir() + "/tests/fixtures/tokenizer/tokenizer.model";
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

nlohmann::json ReadJson(const std::string& path) {
  return nlohmann::json::parse(ReadFileOrEmpty(path));
}

void WriteFile(const std::string& path, const std::string& bytes) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

void AppendFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot append to " << path;
}

void SetMtime(const std::string& path, int64_t seconds) {
  struct timespec times[2];
  times[0].tv_sec = seconds;
  times[0].tv_nsec = 0;
  times[1] = times[0];
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
}

}  // namespace steadyeval::testing
