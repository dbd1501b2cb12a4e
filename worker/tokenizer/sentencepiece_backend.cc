#include "worker/tokenizer/sentencepiece_backend.h"

#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>

namespace steadyeval {
namespace internal {
namespace {

constexpr char kPluginName[] = "libsteadyeval_spm.so";

struct Plugin {
  void* (*load)(const char*, char**) = nullptr;
  void (*unload)(void*) = nullptr;
  int (*encode)(void*, const char*, size_t, int**, size_t*, char**) = nullptr;
  int (*decode)(void*, const int*, size_t, char**, size_t*, char**) = nullptr;
  int (*piece_size)(void*) = nullptr;
  int (*bos_id)(void*) = nullptr;
  int (*eos_id)(void*) = nullptr;
  char* (*id_to_piece)(void*, int) = nullptr;
  std::string error;  // why loading failed; empty when loaded
  std::string path;   // the file loaded
};

std::string ExecutableDir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string path(buf, n);
  return path.substr(0, path.rfind('/'));
}

template <typename Fn>
bool Resolve(void* lib, const char* name, Fn* fn, std::string* error) {
  *fn = reinterpret_cast<Fn>(::dlsym(lib, name));
  if (*fn == nullptr) *error = std::string("missing symbol ") + name;
  return *fn != nullptr;
}

Plugin LoadPlugin() {
  Plugin p;
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("STEADYEVAL_SPM_PLUGIN"); env != nullptr && *env) {
    candidates.push_back(env);
  }
  const std::string exe_dir = ExecutableDir();
  if (!exe_dir.empty()) {
    candidates.push_back(exe_dir + "/" + kPluginName);
    candidates.push_back(exe_dir + "/../lib/steadyeval/" + kPluginName);
  }
#ifdef STEADYEVAL_SPM_PLUGIN_BUILD_PATH
  candidates.push_back(STEADYEVAL_SPM_PLUGIN_BUILD_PATH);
#endif
  void* lib = nullptr;
  std::string tried;
  for (const std::string& path : candidates) {
    if (::access(path.c_str(), R_OK) != 0) {
      tried += " " + path;
      continue;
    }
    lib = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (lib == nullptr) {
      const char* why = ::dlerror();
      p.error = "cannot load the SentencePiece plugin " + path + ": " + (why ? why : "?");
      return p;
    }
    p.path = path;
    break;
  }
  if (lib == nullptr) {
    p.error = std::string("SentencePiece plugin ") + kPluginName +
              " not found (tried:" + tried + "); set STEADYEVAL_SPM_PLUGIN to its path";
    return p;
  }
  std::string error;
  if (!Resolve(lib, "steadyeval_spm_load", &p.load, &error) ||
      !Resolve(lib, "steadyeval_spm_unload", &p.unload, &error) ||
      !Resolve(lib, "steadyeval_spm_encode", &p.encode, &error) ||
      !Resolve(lib, "steadyeval_spm_decode", &p.decode, &error) ||
      !Resolve(lib, "steadyeval_spm_piece_size", &p.piece_size, &error) ||
      !Resolve(lib, "steadyeval_spm_bos_id", &p.bos_id, &error) ||
      !Resolve(lib, "steadyeval_spm_eos_id", &p.eos_id, &error) ||
      !Resolve(lib, "steadyeval_spm_id_to_piece", &p.id_to_piece, &error)) {
    p.error = "SentencePiece plugin: " + error;
  }
  return p;  // the library stays loaded for the life of the process
}

const Plugin& GetPlugin() {
  static const Plugin* plugin = new Plugin(LoadPlugin());
  return *plugin;
}

std::string TakeError(char* error) {
  std::string out = error != nullptr ? error : "unknown error";
  std::free(error);
  return out;
}

}  // namespace

bool SentencePieceBackend::PluginPath(std::string* path, std::string* error) {
  const Plugin& plugin = GetPlugin();
  if (!plugin.error.empty()) {
    *error = plugin.error;
    return false;
  }
  *path = plugin.path;
  return true;
}

std::unique_ptr<SentencePieceBackend> SentencePieceBackend::Load(const std::string& path,
                                                                 std::string* error) {
  const Plugin& plugin = GetPlugin();
  if (!plugin.error.empty()) {
    *error = plugin.error;
    return nullptr;
  }
  char* err = nullptr;
  void* handle = plugin.load(path.c_str(), &err);
  if (handle == nullptr) {
    *error = TakeError(err);
    return nullptr;
  }
  return std::unique_ptr<SentencePieceBackend>(new SentencePieceBackend(handle));
}

SentencePieceBackend::~SentencePieceBackend() { GetPlugin().unload(handle_); }

bool SentencePieceBackend::Encode(const std::string& text, std::vector<int>* ids,
                                  std::string* error) const {
  int* out = nullptr;
  size_t count = 0;
  char* err = nullptr;
  if (!GetPlugin().encode(handle_, text.data(), text.size(), &out, &count, &err)) {
    *error = TakeError(err);
    return false;
  }
  ids->assign(out, out + count);
  std::free(out);
  return true;
}

bool SentencePieceBackend::Decode(const std::vector<int>& ids, std::string* text,
                                  std::string* error) const {
  char* out = nullptr;
  size_t length = 0;
  char* err = nullptr;
  if (!GetPlugin().decode(handle_, ids.data(), ids.size(), &out, &length, &err)) {
    *error = TakeError(err);
    return false;
  }
  text->assign(out, length);
  std::free(out);
  return true;
}

int SentencePieceBackend::piece_size() const { return GetPlugin().piece_size(handle_); }
int SentencePieceBackend::bos_id() const { return GetPlugin().bos_id(handle_); }
int SentencePieceBackend::eos_id() const { return GetPlugin().eos_id(handle_); }

std::string SentencePieceBackend::IdToPiece(int id) const {
  char* piece = GetPlugin().id_to_piece(handle_, id);
  std::string out = piece != nullptr ? piece : "";
  std::free(piece);
  return out;
}

}  // namespace internal
}  // namespace steadyeval
