// Test-only helpers: where the committed fixtures are, and scratch folders.
#ifndef STEADYEVAL_WORKER_TEST_FIXTURES_H_
#define STEADYEVAL_WORKER_TEST_FIXTURES_H_

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace steadyeval {
namespace testing_fixtures {

// The repository root: $STEADYEVAL_SOURCE_DIR (set by CTest), else derived from this file.
inline std::string SourceDir() {
  if (const char* dir = std::getenv("STEADYEVAL_SOURCE_DIR"); dir != nullptr && *dir) return dir;
  return std::filesystem::path(__FILE__).parent_path().parent_path().string();
}

inline std::string LlamaFixture(const std::string& name) {
  return SourceDir() + "/tests/fixtures/llama/" + name;
}

inline std::string TokenizerFixture() {
  return SourceDir() + "/tests/fixtures/tokenizer/tokenizer.model";
}

inline std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

inline nlohmann::json ReadJson(const std::string& path) {
  return nlohmann::json::parse(ReadText(path));
}

inline void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// A fresh empty folder under the test temp dir, unique per test.
inline std::string ScratchDir(const std::string& label) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                              (std::string("steadyeval_worker_") + info->test_suite_name() + "_" +
                               info->name() + "_" + label);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Copies fixture folder `from` into a fresh scratch folder and returns it.
inline std::string CopyFixture(const std::string& from, const std::string& label) {
  std::string dir = ScratchDir(label);
  std::filesystem::copy(from, dir, std::filesystem::copy_options::recursive |
                                       std::filesystem::copy_options::overwrite_existing);
  return dir;
}

}  // namespace testing_fixtures
}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_TEST_FIXTURES_H_
