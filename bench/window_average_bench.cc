// Benchmark (not a test) for DESIGN §6's claim that keeping the window sum makes the next
// avg@n window cost reading the newest and the oldest member instead of all n.
//
// Writes M fp32 checkpoints of about S MiB each into a temp folder, then slides an n-wide
// window over them (windows ending at checkpoints n..M) and times, per window:
//   (a) baseline: AverageCheckpoints() of the window's n members from scratch;
//   (b) cached:   WindowSumCache::Average() with rebuild_every large enough that every
//                 window after the first slides (the first window is a rebuild).
// The whole sweep is repeated R times (a fresh cache each time); per-window medians are
// reported. The checkpoints sit in the page cache (they were just written), so this
// measures the compute + memory-traffic cost of the reads, not disk I/O.
//
//   steadyeval-bench-window-average [--checkpoints M] [--window n] [--mib S]
//                                   [--repeats R] [--out FILE]
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <torch/version.h>

#include "bench/bench_flags.h"
#include "bench/bench_tensors.h"
#include "worker/averaging/averager.h"
#include "worker/backend/offline.h"
#include "worker/checkpoint/test_checkpoints.h"

namespace steadyeval {
namespace {

using testing_checkpoints::NamedTensors;
using testing_checkpoints::WriteTestCheckpoint;

constexpr char kConfig[] = R"({"model_type": "llama", "hidden_size": 512,
  "rope_theta": 10000.0, "transformers_version": "4.40.0"})";
constexpr int64_t kRows = 512, kCols = 512;  // one 1 MiB fp32 matrix
constexpr int64_t kNormSize = 512;

struct Flags {
  int checkpoints = 14;
  int window = 8;
  int mib = 16;
  int repeats = 3;
  std::string out;
};

[[noreturn]] void Usage(const std::string& why) {
  std::cerr << "steadyeval-bench-window-average: " << why << "\n"
            << "usage: steadyeval-bench-window-average [--checkpoints M] [--window n] "
               "[--mib S] [--repeats R] [--out FILE]\n";
  std::exit(2);
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  BenchFlags flags(argc, argv, Usage);
  while (flags.Next()) {
    const std::string& arg = flags.flag();
    if (arg == "--checkpoints") f.checkpoints = flags.Positive();
    else if (arg == "--window") f.window = flags.Positive();
    else if (arg == "--mib") f.mib = flags.Positive();
    else if (arg == "--repeats") f.repeats = flags.Positive();
    else if (arg == "--out") f.out = flags.Value();
    else flags.Unknown();
  }
  if (f.window > f.checkpoints) Usage("--window must be <= --checkpoints");
  return f;
}

// `mib` 512x512 fp32 matrices named like Llama MLP weights, plus one small norm vector.
NamedTensors BenchTensors(int mib, uint64_t seed) {
  at::manual_seed(seed);
  NamedTensors tensors;
  for (int i = 0; i < mib; ++i) {
    static const char* kKinds[] = {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
                                   "self_attn.o_proj"};
    tensors.emplace_back("model.layers." + std::to_string(i / 4) + "." + kKinds[i % 4] +
                             ".weight",
                         at::randn({kRows, kCols}, at::kFloat));
  }
  tensors.emplace_back("model.norm.weight", at::ones({kNormSize}, at::kFloat));
  return tensors;
}

uint64_t DataBytes(int mib) {
  return static_cast<uint64_t>(mib) * kRows * kCols * 4 + kNormSize * 4;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string Fmt(const char* format, double x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, x);
  return buf;
}

int Main(int argc, char** argv) {
  const Flags flags = ParseFlags(argc, argv);
  if (absl::Status s = ConfigureThreads(1); !s.ok()) {
    std::cerr << "ConfigureThreads: " << s << "\n";
    return 1;
  }
  at::NoGradGuard no_grad;

  std::string tmpl = (std::filesystem::temp_directory_path() / "steadyeval-bench-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string root = tmpl;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{root};

  const int M = flags.checkpoints, n = flags.window;
  const uint64_t ckpt_bytes = DataBytes(flags.mib);
  std::cout << "writing " << M << " fp32 checkpoints of "
            << Fmt("%.1f", ckpt_bytes / 1048576.0) << " MiB into " << root << "\n";
  std::vector<WindowMember> all;
  for (int i = 0; i < M; ++i) {
    const uint64_t step = 1000ull * (i + 1);
    const std::string dir = root + "/step_" + std::to_string(step);
    WriteTestCheckpoint(dir, kConfig, BenchTensors(flags.mib, 1000 + i));
    all.push_back({dir, step});
  }

  const int windows = M - n + 1;
  // times[w][r]
  std::vector<std::vector<double>> base_ms(windows), cached_ms(windows);
  std::vector<std::string> paths(windows);
  double worst_diff = 0;
  using Clock = std::chrono::steady_clock;
  auto ms_since = [](Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };

  for (int r = 0; r < flags.repeats; ++r) {
    WindowSumCache::Options options;
    options.rebuild_every = M + 1;  // never re-sum during the sweep
    WindowSumCache cache(options);
    for (int w = 0; w < windows; ++w) {
      std::vector<WindowMember> members(all.begin() + w, all.begin() + w + n);
      std::vector<std::string> dirs;
      for (const WindowMember& m : members) dirs.push_back(m.dir);

      auto t0 = Clock::now();
      auto baseline = AverageCheckpoints(dirs);
      base_ms[w].push_back(ms_since(t0));
      if (!baseline.ok()) {
        std::cerr << "AverageCheckpoints: " << baseline.status() << "\n";
        return 1;
      }

      t0 = Clock::now();
      auto cached = cache.Average("bench-run", members);
      cached_ms[w].push_back(ms_since(t0));
      if (!cached.ok()) {
        std::cerr << "WindowSumCache::Average: " << cached.status() << "\n";
        return 1;
      }
      const std::string path = PathName(cache.last_path());
      if (r == 0) {
        paths[w] = path;
        worst_diff = std::max(worst_diff, MaxAbsDiff(**baseline, **cached));
      } else if (paths[w] != path) {
        paths[w] += "/" + path;
      }
    }
    std::cout << "repeat " << (r + 1) << "/" << flags.repeats << " done\n";
  }

  // Members read per window (tensor data, from the mmapped safetensors): the baseline
  // reads all n; a rebuild reads all n; a slide reads the newest and the oldest (2). Both
  // also read the newest's non-floating tensors (none here) and headers/config.json.
  auto members_read = [&](const std::string& path) -> int {
    if (path == "slid") return 2;
    if (path == "reused") return 0;
    return n;
  };

  std::ostringstream table;
  table << "| window (steps) | cached path | baseline ms | cached ms | baseline/cached "
           "| MiB read baseline | MiB read cached |\n"
        << "|---|---|---:|---:|---:|---:|---:|\n";
  std::vector<double> slid_base, slid_cached;
  double sum_base = 0, sum_cached = 0;
  uint64_t bytes_base = 0, bytes_cached = 0;
  for (int w = 0; w < windows; ++w) {
    const double b = Median(base_ms[w]), c = Median(cached_ms[w]);
    sum_base += b;
    sum_cached += c;
    const uint64_t bb = static_cast<uint64_t>(n) * ckpt_bytes;
    const uint64_t cb = static_cast<uint64_t>(members_read(paths[w])) * ckpt_bytes;
    bytes_base += bb;
    bytes_cached += cb;
    if (paths[w] == "slid") {
      slid_base.push_back(b);
      slid_cached.push_back(c);
    }
    table << "| " << all[w].step << ".." << all[w + n - 1].step << " | " << paths[w] << " | "
          << Fmt("%.1f", b) << " | " << Fmt("%.1f", c) << " | " << Fmt("%.2f", b / c) << "x | "
          << Fmt("%.0f", bb / 1048576.0) << " | " << Fmt("%.0f", cb / 1048576.0) << " |\n";
  }

  std::ostringstream summary;
  if (!slid_base.empty()) {
    const double b = Median(slid_base), c = Median(slid_cached);
    summary << "- steady state (slid windows, median of per-window medians): baseline "
            << Fmt("%.1f", b) << " ms, cached " << Fmt("%.1f", c) << " ms, ratio "
            << Fmt("%.2f", b / c) << "x (ideal read ratio n/2 = " << Fmt("%.1f", n / 2.0)
            << "x)\n";
  }
  summary << "- whole sweep of " << windows << " windows (sum of per-window medians): baseline "
          << Fmt("%.1f", sum_base) << " ms, cached " << Fmt("%.1f", sum_cached) << " ms, ratio "
          << Fmt("%.2f", sum_base / sum_cached) << "x; checkpoint data read "
          << Fmt("%.0f", bytes_base / 1048576.0) << " MiB vs "
          << Fmt("%.0f", bytes_cached / 1048576.0) << " MiB\n"
          << "- max |baseline - cached| over all averaged values (repeat 1): "
          << Fmt("%.3g", worst_diff) << "\n";

  std::ostringstream params;
  params << "M = " << M << " checkpoints, window n = " << n << ", "
         << Fmt("%.2f", ckpt_bytes / 1048576.0) << " MiB fp32 tensor data per checkpoint ("
         << flags.mib << " x 512x512 + norm), repeats = " << flags.repeats
         << ", torch intra-op threads = 1; times are medians over the repeats\n";

  std::cout << "\n" << params.str() << "\n" << table.str() << "\n" << summary.str();

  if (!flags.out.empty()) {
    std::ofstream out(flags.out, std::ios::trunc);
    if (!out) {
      std::cerr << "cannot write " << flags.out << "\n";
      return 1;
    }
    std::string command = "steadyeval-bench-window-average";
    for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
    char date[32] = "?";
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof(date), "%Y-%m-%d", std::gmtime(&now));
    out << "# Window averaging: from scratch vs. WindowSumCache\n\n"
        << "Date: " << date << "\n\n"
        << "Machine: " << std::thread::hardware_concurrency()
        << " cores, CPU only, libtorch " << TORCH_VERSION << "\n\n"
        << "Command: `" << command << "`\n\n"
        << params.str() << "\n"
        << "Checkpoints were just written, so they are in the page cache: the times are the "
           "compute and memory traffic of reading the members, not disk I/O. \"MiB read\" is "
           "derived: checkpoint tensor data accumulated per window (baseline and rebuild: n "
           "members; slide: newest + oldest).\n\n"
        << table.str() << "\n" << summary.str();
    std::cout << "\nwrote " << flags.out << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace steadyeval

int main(int argc, char** argv) { return steadyeval::Main(argc, argv); }
