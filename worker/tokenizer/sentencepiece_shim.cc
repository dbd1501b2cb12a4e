// The SentencePiece shim: a plugin (libsteadyeval_spm.so) that wraps libsentencepiece
// behind a C ABI. It is the only code that links libsentencepiece.
//
// Why a plugin: Debian's libsentencepiece.so.0 bundles and exports its own copy of
// protobuf-lite 3.14, while libtorch (and gRPC) load the system libprotobuf 3.21. Linked
// into one process, the two copies interpose each other's symbols and the process
// crashes at start-up or aborts with a protobuf version mismatch. SentencePieceBackend
// loads this plugin with dlopen(RTLD_LOCAL | RTLD_DEEPBIND), so sentencepiece binds to
// its own protobuf copy and nothing else sees it.
//
// No Abseil includes here either: sentencepiece_processor.h declares
// `namespace absl { using std::string_view; }`, which clashes with Debian's Abseil.
// Memory returned to the caller is malloc'ed; the caller free()s it.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

char* CopyString(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) std::memcpy(out, s.data(), s.size() + 1);
  return out;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* steadyeval_spm_load(const char* path,
                                                                 char** error) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  const auto status = processor->Load(path);
  if (!status.ok()) {
    *error = CopyString(status.ToString());
    delete processor;
    return nullptr;
  }
  return processor;
}

__attribute__((visibility("default"))) void steadyeval_spm_unload(void* handle) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

// On success returns 1 and sets *ids (malloc'ed) and *count.
__attribute__((visibility("default"))) int steadyeval_spm_encode(void* handle, const char* text,
                                                                size_t length, int** ids,
                                                                size_t* count, char** error) {
  std::vector<int> out;
  const auto status = static_cast<const sentencepiece::SentencePieceProcessor*>(handle)->Encode(
      std::string(text, length), &out);
  if (!status.ok()) {
    *error = CopyString(status.ToString());
    return 0;
  }
  *count = out.size();
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (out.empty() ? 1 : out.size())));
  if (!out.empty()) std::memcpy(*ids, out.data(), sizeof(int) * out.size());
  return 1;
}

// On success returns 1 and sets *text (malloc'ed, NUL-terminated) and *length.
__attribute__((visibility("default"))) int steadyeval_spm_decode(void* handle, const int* ids,
                                                                size_t count, char** text,
                                                                size_t* length, char** error) {
  std::string out;
  const auto status = static_cast<const sentencepiece::SentencePieceProcessor*>(handle)->Decode(
      std::vector<int>(ids, ids + count), &out);
  if (!status.ok()) {
    *error = CopyString(status.ToString());
    return 0;
  }
  *length = out.size();
  *text = CopyString(out);
  return 1;
}

__attribute__((visibility("default"))) int steadyeval_spm_piece_size(void* handle) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(handle)->GetPieceSize();
}

__attribute__((visibility("default"))) int steadyeval_spm_bos_id(void* handle) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(handle)->bos_id();
}

__attribute__((visibility("default"))) int steadyeval_spm_eos_id(void* handle) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(handle)->eos_id();
}

// malloc'ed piece text.
__attribute__((visibility("default"))) char* steadyeval_spm_id_to_piece(void* handle, int id) {
  return CopyString(
      static_cast<const sentencepiece::SentencePieceProcessor*>(handle)->IdToPiece(id));
}

}  // extern "C"
