// Where the tree, the built binaries and the committed fixtures are, and small file
// reads and writes for tests (a failed write is a fatal test failure, so a test does not
// go on with a half-made input).
#ifndef STEADYEVAL_TESTING_FILES_H_
#define STEADYEVAL_TESTING_FILES_H_

#include <cstdint>
#include <string>

#include "nlohmann/json.hpp"

namespace steadyeval::testing {

// The repository root: $STEADYEVAL_SOURCE_DIR (CTest sets it), else the folder above this
// file's.
std::string SourceDir();
// The built binaries: $STEADYEVAL_BIN_DIR (CTest sets it), else ./bin.
std::string BinDir();

// The committed tiny Llama checkpoint tests/fixtures/llama/`name`.
std::string LlamaFixture(const std::string& name);
// The committed SentencePiece model tests/fixtures/tokenizer/tokenizer.model.
std::string TokenizerFixture();

// The bytes of `path`; "" when it cannot be read.
std::string ReadFileOrEmpty(const std::string& path);
// The JSON document in `path` (throws nlohmann::json::parse_error when it is not one).
nlohmann::json ReadJson(const std::string& path);

// Writes `bytes` to `path` (replacing it), creating its parent folders.
void WriteFile(const std::string& path, const std::string& bytes);
// Appends `bytes` to `path`.
void AppendFile(const std::string& path, const std::string& bytes);
// Sets `path`'s modification (and access) time to `seconds` since the epoch.
void SetMtime(const std::string& path, int64_t seconds);

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_FILES_H_
