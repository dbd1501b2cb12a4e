#include "testing/temp_dir.h"

#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "testing/files.h"

namespace steadyeval::testing {
namespace fs = std::filesystem;
namespace {

// "steadyeval_<Suite>_<Test>" for the running test ('/' of parameterised names replaced),
// "steadyeval" outside a test.
std::string TestLabel() {
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  if (test == nullptr) return "steadyeval";
  return absl::StrReplaceAll(
      absl::StrCat("steadyeval_", test->test_suite_name(), "_", test->name()), {{"/", "_"}});
}

bool CurrentTestFailed() {
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  return test != nullptr && test->result() != nullptr && test->result()->Failed();
}

}  // namespace

TempDir::TempDir() {
  std::string pattern = (fs::path(::testing::TempDir()) / (TestLabel() + "_XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    ADD_FAILURE() << "cannot create a temp folder " << pattern;
    return;
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  if (CurrentTestFailed() || std::getenv("STEADYEVAL_KEEP_TMP") != nullptr) {
    std::fprintf(stderr, "keeping %s for inspection\n", path_.c_str());
    return;
  }
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string TempDir::Write(const std::string& name, const std::string& content) const {
  const std::string path = *this / name;
  WriteFile(path, content);
  return path;
}

std::string ScratchDir(const std::string& label) {
  const fs::path dir = fs::path(::testing::TempDir()) / absl::StrCat(TestLabel(), "_", label);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string CopyFixture(const std::string& from, const std::string& label) {
  const std::string dir = ScratchDir(label);
  fs::copy(from, dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  return dir;
}

}  // namespace steadyeval::testing
