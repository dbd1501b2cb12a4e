// Internal: SentencePiece through the libsteadyeval_spm.so plugin (see
// sentencepiece_shim.cc for why sentencepiece must be isolated from the process's
// libprotobuf). Use Tokenizer instead of this class.
//
// The plugin is found, in order, at $STEADYEVAL_SPM_PLUGIN, next to the running
// executable, in ../lib/steadyeval/ relative to it, and in the build tree it was built
// in. Errors are strings so this header needs no Abseil.
// Thread-safe after Load (SentencePieceProcessor's encode/decode are const).
#ifndef STEADYEVAL_WORKER_TOKENIZER_SENTENCEPIECE_BACKEND_H_
#define STEADYEVAL_WORKER_TOKENIZER_SENTENCEPIECE_BACKEND_H_

#include <memory>
#include <string>
#include <vector>

namespace steadyeval {
namespace internal {

class SentencePieceBackend {
 public:
  // nullptr with `*error` set on failure (plugin not found, or not a model).
  static std::unique_ptr<SentencePieceBackend> Load(const std::string& path, std::string* error);
  ~SentencePieceBackend();
  // Loads the plugin (once per process) and returns the file it was loaded from; false with
  // `*error` set when it cannot be found or loaded.
  static bool PluginPath(std::string* path, std::string* error);

  bool Encode(const std::string& text, std::vector<int>* ids, std::string* error) const;
  bool Decode(const std::vector<int>& ids, std::string* text, std::string* error) const;
  int piece_size() const;
  int bos_id() const;  // -1 when the model has none
  int eos_id() const;
  std::string IdToPiece(int id) const;

 private:
  explicit SentencePieceBackend(void* handle) : handle_(handle) {}
  void* handle_;
};

}  // namespace internal
}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_TOKENIZER_SENTENCEPIECE_BACKEND_H_
