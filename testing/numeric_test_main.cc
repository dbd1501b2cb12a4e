// main() of the numeric worker tests (models, batching, KV cache, evaluator, averaging).
//
// Before the tests it prints the kernel sets that compute this run: OpenBLAS's core (the
// GEMMs) and ATen's CPU capability (libtorch's own vectorised kernels). When a kernel-set
// variant asked for one (OPENBLAS_CORETYPE / ATEN_CPU_CAPABILITY, set by
// steadyeval-kernel-variant) and another is in use, the variant would silently test the
// default set again: OpenBLAS ignoring the request fails the run; ATen falling back to a
// lower level (it does so when the CPU lacks the instructions) skips it with exit code 77.
//
// After the tests it writes every tolerance check the run made (testing/tolerance.h)
// to $STEADYEVAL_DEVIATION_LOG (replacing it), one JSON object a line, when that variable is
// set, and
// prints the closest calls, so that each run shows how much of its margin it used.
#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/Version.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "testing/tolerance.h"

namespace {

constexpr int kSkipExitCode = 77;

// OpenBLAS's name for the kernels it picked, or "" when libtorch's BLAS is not OpenBLAS.
std::string OpenBlasCore() {
  using CoreNameFn = char* (*)();
  auto fn = reinterpret_cast<CoreNameFn>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (fn == nullptr) return "";
  const char* name = fn();
  return name == nullptr ? "" : name;
}

// ATen's CPU capability as at::show_config() names it ("NO AVX", "AVX2", "AVX512"): the
// accessor at::native::get_cpu_capability() is not exported by libtorch.
std::string AtenCapability() {
  for (absl::string_view line : absl::StrSplit(at::show_config(), '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (absl::ConsumePrefix(&line, "- CPU capability usage:")) {
      return std::string(absl::StripAsciiWhitespace(line));
    }
  }
  return "unknown";
}

std::string EnvOr(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value ? value : fallback;
}

// Exits the process when the requested kernel sets are not the ones in use.
void CheckKernelSets(const std::string& core, const std::string& capability) {
  const std::string want_core = EnvOr("OPENBLAS_CORETYPE", "");
  if (!want_core.empty()) {
    if (core.empty()) {
      std::printf("SKIPPED: OPENBLAS_CORETYPE=%s asked for, but libtorch's BLAS is not OpenBLAS\n",
                  want_core.c_str());
      std::exit(kSkipExitCode);
    }
    if (!absl::EqualsIgnoreCase(core, want_core)) {
      std::fprintf(stderr,
                   "OPENBLAS_CORETYPE=%s asked for, but OpenBLAS runs '%s' kernels: this "
                   "variant would test the default kernels again\n",
                   want_core.c_str(), core.c_str());
      std::exit(1);
    }
  }
  const std::string want_level = EnvOr("ATEN_CPU_CAPABILITY", "");
  // ATEN_CPU_CAPABILITY=default is reported as "NO AVX".
  const std::string reported = absl::EqualsIgnoreCase(want_level, "default") ? "NO AVX" : want_level;
  if (!want_level.empty() && !absl::EqualsIgnoreCase(capability, reported)) {
    std::printf("SKIPPED: ATEN_CPU_CAPABILITY=%s asked for, but ATen runs %s kernels (this "
                "libtorch or CPU has no %s level)\n",
                want_level.c_str(), capability.c_str(), want_level.c_str());
    std::exit(kSkipExitCode);
  }
}

// The checks of the run, closest calls first.
std::vector<steadyeval::testing::DeviationRecord> SortedChecks() {
  auto records = steadyeval::testing::DeviationRecords();
  std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) {
    return a.deviation / a.tolerance > b.deviation / b.tolerance;
  });
  return records;
}

void ReportDeviations(const std::string& binary, const std::string& kernels) {
  const auto records = SortedChecks();
  std::printf("tolerance checks: %zu", records.size());
  if (!records.empty()) {
    const auto& worst = records.front();
    std::printf("; closest: %s [%s] used %.3g of its tolerance (%.3g of %.3g)", worst.test.c_str(),
                worst.what.c_str(), worst.deviation / worst.tolerance, worst.deviation,
                worst.tolerance);
  }
  std::printf("\n");
  const std::string path = EnvOr("STEADYEVAL_DEVIATION_LOG", "");
  if (path.empty()) return;
  std::ofstream out(path, std::ios::trunc);
  if (!out) {
    std::fprintf(stderr, "cannot write STEADYEVAL_DEVIATION_LOG=%s\n", path.c_str());
    return;
  }
  for (const auto& r : records) {
    out << nlohmann::json{{"binary", binary},        {"kernels", kernels},
                          {"test", r.test},          {"what", r.what},
                          {"deviation", r.deviation}, {"tolerance", r.tolerance},
                          {"magnitude", r.magnitude}}
               .dump()
        << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const std::string core = OpenBlasCore();
  const std::string capability = AtenCapability();
  const std::string kernels =
      absl::StrCat("openblas=", core.empty() ? "none" : core, " aten=", capability);
  std::printf("numeric kernels: OpenBLAS core %s, ATen CPU capability %s\n",
              core.empty() ? "(not OpenBLAS)" : core.c_str(), capability.c_str());
  CheckKernelSets(core, capability);
  const int result = RUN_ALL_TESTS();
  const std::string binary = argc > 0 ? std::string(argv[0]) : "test";
  ReportDeviations(binary.substr(binary.find_last_of('/') + 1), kernels);
  return result;
}
