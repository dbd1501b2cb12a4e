// Scratch folders for tests, under gtest's temp dir (CTest gives each test its own
// TEST_TMPDIR, so tests and their kernel-set variants can run in parallel) and named after
// the running test, so a folder left behind says which test wrote it.
//
// Not thread-safe: create and use them on the test's thread.
#ifndef STEADYEVAL_TESTING_TEMP_DIR_H_
#define STEADYEVAL_TESTING_TEMP_DIR_H_

#include <string>

namespace steadyeval::testing {

// A fresh, empty folder (steadyeval_<Suite>_<Test>_XXXXXX), removed when the object dies
// unless the test failed or $STEADYEVAL_KEEP_TMP is set (then its path is printed, for
// inspection). A failure to create it is a fatal test failure and path() is "".
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // The path of `name` (may contain '/') in the folder; creates nothing.
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  // Writes `content` to `name` in the folder (creating its parent folders); returns its
  // path.
  std::string Write(const std::string& name, const std::string& content) const;

 private:
  std::string path_;
};

// A fresh, empty folder named after the running test and `label`, emptied if it exists,
// and kept when the test ends (for the rest of the run; the next run empties it). For
// helpers that hand out a folder path rather than an object; prefer TempDir.
std::string ScratchDir(const std::string& label);

// Copies the folder `from` (e.g. a committed fixture) into ScratchDir(label); returns it.
std::string CopyFixture(const std::string& from, const std::string& label);

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_TEMP_DIR_H_
