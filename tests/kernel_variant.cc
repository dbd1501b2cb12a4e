// steadyeval-kernel-variant: runs a numeric test binary under one BLAS / ATen kernel set,
// or skips it when this CPU cannot execute that set.
//
//   steadyeval-kernel-variant openblas=Haswell  build/bin/worker_llama_model_test [args]
//   steadyeval-kernel-variant aten=avx512       build/bin/worker_llama_model_test [args]
//
// openblas=CORE sets OPENBLAS_CORETYPE (OpenBLAS, built with DYNAMIC_ARCH as Debian's is,
// picks its kernels from it when it loads); aten=LEVEL sets ATEN_CPU_CAPABILITY (libtorch's
// own vectorised kernels). The check must happen here, before the test binary loads
// OpenBLAS: a kernel set the CPU lacks the instructions for faults (SIGILL) instead of
// failing a test. When the CPU lacks them this prints why and exits with kSkipExitCode,
// which CTest's SKIP_RETURN_CODE reports as skipped; otherwise it execs the binary, whose
// main (worker/numeric_test_main.cc) checks that the set asked for is the set in use.
//
// Deliberately free of libtorch and BLAS, so that it can run on any x86-64 CPU.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr int kSkipExitCode = 77;

struct KernelSet {
  const char* kind;  // "openblas" or "aten"
  const char* name;  // value of OPENBLAS_CORETYPE / ATEN_CPU_CAPABILITY
  // Instruction set extensions the kernels use, as __builtin_cpu_supports names them.
  std::vector<const char*> needs;
};

// The OpenBLAS cores are those of its DYNAMIC_ARCH x86-64 build (driver/others/dynamic.c);
// ATen's levels are those of aten/src/ATen/native/DispatchStub.cpp. Requirements follow
// what each one's kernels execute: OpenBLAS enables SkylakeX only with AVX-512 F/BW/DQ/VL
// and Cooperlake additionally needs AVX-512 BF16; ATen's avx512 level needs F, BW, DQ, VL
// and FMA; Haswell, Zen and ATen's avx2 need AVX2 and FMA.
const std::vector<KernelSet>& KnownSets() {
  static const std::vector<KernelSet> sets = {
      {"openblas", "Prescott", {"sse3"}},
      {"openblas", "Nehalem", {"sse4.2"}},
      {"openblas", "Sandybridge", {"avx"}},
      {"openblas", "Haswell", {"avx2", "fma"}},
      {"openblas", "Zen", {"avx2", "fma"}},
      {"openblas", "SkylakeX", {"avx512f", "avx512bw", "avx512dq", "avx512vl"}},
      {"openblas", "Cooperlake", {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512bf16"}},
      {"aten", "default", {}},
      {"aten", "avx2", {"avx2", "fma"}},
      {"aten", "avx512", {"avx512f", "avx512bw", "avx512dq", "avx512vl", "fma"}},
  };
  return sets;
}

// __builtin_cpu_supports needs a string literal; this maps the names used above.
bool CpuSupports(const std::string& feature) {
  __builtin_cpu_init();
  if (feature == "sse3") return __builtin_cpu_supports("sse3");
  if (feature == "sse4.2") return __builtin_cpu_supports("sse4.2");
  if (feature == "avx") return __builtin_cpu_supports("avx");
  if (feature == "avx2") return __builtin_cpu_supports("avx2");
  if (feature == "fma") return __builtin_cpu_supports("fma");
  if (feature == "avx512f") return __builtin_cpu_supports("avx512f");
  if (feature == "avx512bw") return __builtin_cpu_supports("avx512bw");
  if (feature == "avx512dq") return __builtin_cpu_supports("avx512dq");
  if (feature == "avx512vl") return __builtin_cpu_supports("avx512vl");
  if (feature == "avx512bf16") return __builtin_cpu_supports("avx512bf16");
  return false;
}

int Usage() {
  std::fprintf(stderr,
               "usage: steadyeval-kernel-variant openblas=CORE|aten=LEVEL TEST_BINARY [ARGS...]\n"
               "  runs TEST_BINARY with OPENBLAS_CORETYPE=CORE or ATEN_CPU_CAPABILITY=LEVEL,\n"
               "  or exits %d (skipped) when this CPU cannot run that kernel set.\n"
               "  CORE: Prescott Nehalem Sandybridge Haswell Zen SkylakeX Cooperlake\n"
               "  LEVEL: default avx2 avx512\n",
               kSkipExitCode);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return Usage();
  const std::string spec = argv[1];
  const size_t eq = spec.find('=');
  if (eq == std::string::npos) return Usage();
  const std::string kind = spec.substr(0, eq), name = spec.substr(eq + 1);

  const KernelSet* set = nullptr;
  for (const KernelSet& known : KnownSets()) {
    if (kind == known.kind && name == known.name) set = &known;
  }
  if (set == nullptr) {
    std::fprintf(stderr, "steadyeval-kernel-variant: unknown kernel set '%s'\n", spec.c_str());
    return Usage();
  }
  std::string missing;
  for (const char* feature : set->needs) {
    if (!CpuSupports(feature)) missing += std::string(missing.empty() ? "" : ", ") + feature;
  }
  if (!missing.empty()) {
    std::printf("SKIPPED: %s kernels '%s' need %s, which this CPU lacks\n", set->kind, set->name,
                missing.c_str());
    return kSkipExitCode;
  }
  const char* variable = kind == "openblas" ? "OPENBLAS_CORETYPE" : "ATEN_CPU_CAPABILITY";
  if (setenv(variable, set->name, /*overwrite=*/1) != 0) {
    std::perror("steadyeval-kernel-variant: setenv");
    return 1;
  }
  std::fflush(stdout);
  execv(argv[2], argv + 2);
  std::fprintf(stderr, "steadyeval-kernel-variant: cannot run %s: %s\n", argv[2],
               std::strerror(errno));
  return 1;
}
