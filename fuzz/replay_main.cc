// main() of the replay executables (fuzz_<name>_replay, default build): runs the target's
// LLVMFuzzerTestOneInput once on every file of the folders (or files) given, so CTest
// checks that every committed corpus entry and regression input still passes. A crash
// or sanitizer report aborts with the input's path printed just before it.
//
//   fuzz_<name>_replay DIR_OR_FILE...
//
// Files whose names start with '.' (.gitkeep) are skipped; a folder that does not exist
// counts as empty. Exits 1 when no input at all was found (a missing corpus would
// otherwise pass silently).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

bool RunFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "replay: cannot read %s\n", path.c_str());
    return false;
  }
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
  std::fprintf(stderr, "replay: %s (%zu bytes)\n", path.c_str(), bytes.size());
  // A copy of exactly `size` bytes, as libFuzzer passes it (reads past the end trip ASan).
  std::vector<uint8_t> input(bytes.begin(), bytes.end());
  LLVMFuzzerTestOneInput(input.empty() ? nullptr : input.data(), input.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR_OR_FILE...\n", argv[0]);
    return 2;
  }
  size_t runs = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path arg(argv[i]);
    std::error_code error;
    if (std::filesystem::is_regular_file(arg, error)) {
      if (!RunFile(arg)) return 1;
      ++runs;
      continue;
    }
    if (!std::filesystem::is_directory(arg, error)) {
      std::fprintf(stderr, "replay: %s does not exist; nothing to replay there\n", argv[i]);
      continue;
    }
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(arg)) {
      if (entry.is_regular_file() && entry.path().filename().string()[0] != '.') {
        files.push_back(entry.path());
      }
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      if (!RunFile(file)) return 1;
      ++runs;
    }
  }
  if (runs == 0) {
    std::fprintf(stderr, "replay: no inputs found in the folders given (corpus missing?)\n");
    return 1;
  }
  std::fprintf(stderr, "replay: %zu inputs passed\n", runs);
  return 0;
}
