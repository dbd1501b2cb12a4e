// Benchmark (not a test) for issue 15 part 6: averaging windows of n = 2, 5, 10, 20
// checkpoints of about 200 MB each, against a plain read-and-sum loop over the same bytes.
//
// Writes M = max(n) + S fp32 checkpoints (a Llama-shaped layout: hidden 1024, FFN 2816,
// vocab 8000, untied lm_head, 3 layers: ~50M parameters, ~201 MB) with the project's
// checkpoint writer (worker/checkpoint/checkpoint_writer.h, the offline `average` command's writer),
// then for each n times, interleaved, R times each:
//   plain:   the baseline. Reads the data section of each member's model.safetensors with
//            pread(2), in chunks of 1 Mi floats taken from every member in turn, adds them
//            into an fp64 chunk accumulator and writes sum / n as fp32 into a fresh output
//            buffer. The same bytes, the same fp64 accumulation and the same output as the
//            averager, in the simplest cache-friendly loop; one thread.
//   scratch: AverageCheckpoints() of the window (worker/averaging/averager.h), from scratch.
// and, per n, one WindowSumCache (rebuild_every larger than the sweep) that averages the
// window ending at checkpoint n (a rebuild: reads all n), then slides it S times by one
// checkpoint (each slide reads the newest and the oldest member).
//
// The checkpoints were just written, so they sit in the page cache: the figures are the
// cost of reading the members from memory (copies, conversion, accumulation), not disk
// I/O. The plain loop over one checkpoint (n = 1) is "reading one checkpoint".
//
//   steadyeval-bench-window-scale [--windows 2,5,10,20] [--slides S] [--layers L]
//                                 [--repeats R] [--threads T] [--dir DIR] [--out FILE]
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

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
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <torch/version.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_flags.h"
#include "bench/bench_tensors.h"
#include "bench/bench_machine.h"
#include "common/safetensors.h"
#include "worker/averaging/averager.h"
#include "worker/checkpoint/checkpoint_writer.h"
#include "worker/backend/offline.h"

namespace steadyeval {
namespace {

constexpr int64_t kHidden = 1024, kKv = 256, kFfn = 2816, kVocab = 8000;
constexpr int64_t kChunkFloats = 1 << 20;  // plain loop: 4 MiB per member per chunk

struct Flags {
  std::vector<int> windows = {2, 5, 10, 20};
  int slides = 5;
  int layers = 3;
  int repeats = 5;
  int threads = 1;
  std::string dir;
  std::string out;
};

[[noreturn]] void Usage(const std::string& why) {
  std::ostream& os = why == "help" ? std::cout : std::cerr;
  if (why != "help") os << "steadyeval-bench-window-scale: " << why << "\n";
  os << "usage: steadyeval-bench-window-scale [--windows 2,5,10,20] [--slides S] [--layers L]\n"
        "                                     [--repeats R] [--threads T] [--dir DIR] [--out FILE]\n"
        "\n"
        "Averaging windows of n checkpoints (~201 MB fp32 each with --layers 3) from scratch\n"
        "(AverageCheckpoints) and slid by one (WindowSumCache), against a plain pread-and-sum\n"
        "loop over the same bytes. Writes max(n) + S checkpoints under DIR (default: a new\n"
        "folder in $TMPDIR, removed at the end); needs that much free disk space. Prints a\n"
        "Markdown section (also written to FILE with --out).\n"
        "  --windows  window sizes, comma-separated (default 2,5,10,20)\n"
        "  --slides   slides timed per window size (default 5)\n"
        "  --layers   decoder layers per checkpoint: ~11.3M parameters each, plus 16.4M of\n"
        "             embeddings (default 3: ~201 MB)\n"
        "  --repeats  repeats of the plain loop and of AverageCheckpoints (default 5)\n"
        "  --threads  libtorch intra-op threads (default 1; the plain loop uses one)\n";
  std::exit(why == "help" ? 0 : 2);
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  BenchFlags flags(argc, argv, Usage);
  while (flags.Next()) {
    const std::string& arg = flags.flag();
    if (arg == "--windows") {
      f.windows.clear();
      for (absl::string_view piece : absl::StrSplit(flags.Value(), ',')) {
        int n = 0;
        if (!absl::SimpleAtoi(piece, &n) || n < 1 || n > 1000) Usage("bad --windows entry");
        f.windows.push_back(n);
      }
      std::sort(f.windows.begin(), f.windows.end());
    } else if (arg == "--slides") {
      f.slides = flags.Positive();
    } else if (arg == "--layers") {
      f.layers = flags.Positive();
    } else if (arg == "--repeats") {
      f.repeats = flags.Positive();
    } else if (arg == "--threads") {
      f.threads = flags.Positive();
    } else if (arg == "--dir") {
      f.dir = flags.Value();
    } else if (arg == "--out") {
      f.out = flags.Value();
    } else {
      flags.Unknown();
    }
  }
  if (f.windows.empty()) Usage("--windows is empty");
  return f;
}

std::string Fmt(const char* format, double x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, x);
  return buf;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string ConfigJson(int layers) {
  std::ostringstream c;
  c << R"({"model_type": "llama", "hidden_size": )" << kHidden
    << R"(, "intermediate_size": )" << kFfn << R"(, "num_hidden_layers": )" << layers
    << R"(, "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": )" << kVocab
    << R"(, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false,)"
    << R"( "torch_dtype": "float32", "transformers_version": "4.40.0"})";
  return c.str();
}

// One checkpoint's tensors (random, std 0.02; norms 1 + noise).
absl::StatusOr<std::unique_ptr<TensorMap>> MakeTensors(int layers, uint64_t seed,
                                                       const std::string& config) {
  at::manual_seed(seed);
  auto map = std::make_unique<TensorMap>("bench checkpoint", config);
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool norm) {
    at::Tensor t = at::randn(shape, at::kFloat).mul_(0.02);
    if (norm) t.add_(1.0);
    return map->Add(name, t);
  };
  absl::Status s = add("model.embed_tokens.weight", {kVocab, kHidden}, false);
  if (s.ok()) s = add("lm_head.weight", {kVocab, kHidden}, false);
  if (s.ok()) s = add("model.norm.weight", {kHidden}, true);
  for (int l = 0; s.ok() && l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s = add(p + "self_attn.q_proj.weight", {kHidden, kHidden}, false);
    if (s.ok()) s = add(p + "self_attn.k_proj.weight", {kKv, kHidden}, false);
    if (s.ok()) s = add(p + "self_attn.v_proj.weight", {kKv, kHidden}, false);
    if (s.ok()) s = add(p + "self_attn.o_proj.weight", {kHidden, kHidden}, false);
    if (s.ok()) s = add(p + "mlp.gate_proj.weight", {kFfn, kHidden}, false);
    if (s.ok()) s = add(p + "mlp.up_proj.weight", {kFfn, kHidden}, false);
    if (s.ok()) s = add(p + "mlp.down_proj.weight", {kHidden, kFfn}, false);
    if (s.ok()) s = add(p + "input_layernorm.weight", {kHidden}, true);
    if (s.ok()) s = add(p + "post_attention_layernorm.weight", {kHidden}, true);
  }
  if (!s.ok()) return s;
  return map;
}

// A member's model.safetensors: an open descriptor and where its data section lies.
struct MemberFile {
  int fd = -1;
  uint64_t data_offset = 0;
  uint64_t data_length = 0;
  std::vector<TensorInfo> tensors;
};

// The baseline (see the file comment). `acc` and `buf` are scratch space the caller keeps
// (kChunkFloats each); the result is fresh, uninitialised memory, as the averager's is.
std::unique_ptr<float[]> PlainAverage(const std::vector<MemberFile*>& members,
                                      std::vector<double>& acc, std::vector<float>& buf) {
  const uint64_t floats = members[0]->data_length / 4;
  std::unique_ptr<float[]> out(new float[floats]);
  const double n = static_cast<double>(members.size());
  for (uint64_t begin = 0; begin < floats; begin += kChunkFloats) {
    const uint64_t len = std::min<uint64_t>(kChunkFloats, floats - begin);
    std::fill(acc.begin(), acc.begin() + len, 0.0);
    for (MemberFile* m : members) {
      const ssize_t want = static_cast<ssize_t>(len * 4);
      ssize_t got = ::pread(m->fd, buf.data(), want, m->data_offset + begin * 4);
      if (got != want) {
        std::perror("pread");
        std::exit(1);
      }
      for (uint64_t i = 0; i < len; ++i) acc[i] += buf[i];
    }
    for (uint64_t i = 0; i < len; ++i) out[begin + i] = static_cast<float>(acc[i] / n);
  }
  return out;
}

// Reads the data section only (no arithmetic): the raw copy cost from the page cache.
void PlainRead(MemberFile& m, std::vector<float>& buf) {
  const uint64_t floats = m.data_length / 4;
  for (uint64_t begin = 0; begin < floats; begin += kChunkFloats) {
    const uint64_t len = std::min<uint64_t>(kChunkFloats, floats - begin);
    if (::pread(m.fd, buf.data(), len * 4, m.data_offset + begin * 4) !=
        static_cast<ssize_t>(len * 4)) {
      std::perror("pread");
      std::exit(1);
    }
  }
}

// max |a - plain| over every tensor of `a`, reading `plain` by the file's data offsets.
double MaxAbsDiff(const TensorMap& a, const float* plain, const MemberFile& layout) {
  double worst = 0;
  for (const TensorInfo& info : layout.tensors) {
    auto t = a.Stored(info.name);
    if (!t.ok()) return INFINITY;
    at::Tensor p = at::from_blob(const_cast<float*>(plain) + info.begin / 4,
                                 {info.numel()}, at::kFloat);
    worst = std::max(worst, (t->reshape({-1}) - p).abs().max().item<double>());
  }
  return worst;
}

// CPU-seconds the whole machine has been busy (all cores; /proc/stat).
double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  return (user + nice + system + irq + softirq + steal) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double OwnCpuSeconds() {
  struct rusage u {};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}


using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int Main(int argc, char** argv) {
  const Flags flags = ParseFlags(argc, argv);
  if (absl::Status s = ConfigureThreads(flags.threads); !s.ok()) {
    std::cerr << "ConfigureThreads: " << s << "\n";
    return 1;
  }
  at::NoGradGuard no_grad;
  const auto run_start = Clock::now();
  const std::string load_start = LoadAverage();
  const double busy_start = MachineBusySeconds() - OwnCpuSeconds();

  std::string root = flags.dir;
  bool remove_root = false;
  if (root.empty()) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "steadyeval-window-scale-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp");
      return 1;
    }
    root = tmpl;
    remove_root = true;
  } else {
    std::filesystem::create_directories(root);
  }
  struct Cleanup {
    std::string dir;
    bool remove;
    ~Cleanup() {
      if (!remove) return;
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{root, remove_root};

  // ---- write the checkpoints ----
  const int max_n = flags.windows.back();
  const int M = max_n + flags.slides;
  const std::string config = ConfigJson(flags.layers);
  std::vector<WindowMember> all;
  auto t_write = Clock::now();
  for (int i = 0; i < M; ++i) {
    const uint64_t step = 1000ull * (i + 1);
    char name[32];
    std::snprintf(name, sizeof(name), "step_%07llu", static_cast<unsigned long long>(step));
    const std::string dir = root + "/" + name;
    if (!std::filesystem::exists(dir + "/model.safetensors")) {
      auto tensors = MakeTensors(flags.layers, 1000 + i, config);
      if (!tensors.ok()) {
        std::cerr << "making tensors: " << tensors.status() << "\n";
        return 1;
      }
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
      if (absl::Status s = WriteCheckpoint(**tensors, dir, 1, ""); !s.ok()) {
        std::cerr << "WriteCheckpoint: " << s << "\n";
        return 1;
      }
    }
    all.push_back({dir, step});
    std::cerr << "\rcheckpoints ready: " << (i + 1) << "/" << M << std::flush;
  }
  const double write_seconds = SecondsSince(t_write);
  std::cerr << " (" << Fmt("%.1f", write_seconds) << " s)\n";

  std::vector<MemberFile> files(M);
  for (int i = 0; i < M; ++i) {
    const std::string path = all[i].dir + "/model.safetensors";
    auto header = ReadSafetensorsHeader(path);
    if (!header.ok()) {
      std::cerr << path << ": " << header.status() << "\n";
      return 1;
    }
    for (const TensorInfo& t : header->tensors) {
      if (t.dtype != DType::kF32) {
        std::cerr << path << ": tensor " << t.name << " is not F32\n";
        return 1;
      }
    }
    files[i].fd = ::open(path.c_str(), O_RDONLY);
    if (files[i].fd < 0) {
      std::perror(path.c_str());
      return 1;
    }
    files[i].data_offset = header->data_offset;
    files[i].data_length = header->data_length;
    files[i].tensors = header->tensors;
  }
  const uint64_t ckpt_bytes = files[0].data_length;
  const double ckpt_mb = ckpt_bytes / 1e6;

  std::vector<double> acc(kChunkFloats);
  std::vector<float> buf(kChunkFloats);

  // Warm-up: read every file once (page cache, buffers).
  for (MemberFile& f : files) PlainRead(f, buf);

  // ---- reading one checkpoint ----
  std::vector<double> read_only_s, one_s;
  for (int r = 0; r < flags.repeats; ++r) {
    for (int i = 0; i < M; ++i) {
      auto t0 = Clock::now();
      PlainRead(files[i], buf);
      read_only_s.push_back(SecondsSince(t0));
    }
    for (int i = 0; i < M; ++i) {
      auto t0 = Clock::now();
      std::unique_ptr<float[]> out = PlainAverage({&files[i]}, acc, buf);
      one_s.push_back(SecondsSince(t0));
    }
  }
  const double read_only = Median(read_only_s), one = Median(one_s);
  std::cerr << "one checkpoint: read " << Fmt("%.3f", read_only) << " s, read+sum "
            << Fmt("%.3f", one) << " s\n";

  struct Row {
    int n = 0;
    double plain = 0, scratch = 0, rebuild = 0, slide = 0;
    std::string slide_paths;
    double diff_plain = 0, diff_slide = 0;
  };
  std::vector<Row> rows;
  for (int n : flags.windows) {
    Row row;
    row.n = n;
    // The window that the last slide ends on: members S .. S+n-1.
    const int first = flags.slides;
    std::vector<MemberFile*> members;
    std::vector<std::string> dirs;
    for (int i = first; i < first + n; ++i) {
      members.push_back(&files[i]);
      dirs.push_back(all[i].dir);
    }
    std::vector<double> plain_s, scratch_s;
    std::unique_ptr<float[]> plain_out;
    std::unique_ptr<TensorMap> scratch_out;
    for (int r = 0; r < flags.repeats; ++r) {
      plain_out.reset();
      auto t0 = Clock::now();
      plain_out = PlainAverage(members, acc, buf);
      plain_s.push_back(SecondsSince(t0));
      scratch_out.reset();
      t0 = Clock::now();
      auto avg = AverageCheckpoints(dirs);
      scratch_s.push_back(SecondsSince(t0));
      if (!avg.ok()) {
        std::cerr << "AverageCheckpoints: " << avg.status() << "\n";
        return 1;
      }
      scratch_out = std::move(*avg);
    }
    row.plain = Median(plain_s);
    row.scratch = Median(scratch_s);
    row.diff_plain = MaxAbsDiff(*scratch_out, plain_out.get(), files[first]);
    plain_out.reset();

    WindowSumCache::Options options;
    options.budget_bytes = 64ull << 30;
    options.rebuild_every = flags.slides + 1000;
    WindowSumCache cache(options);
    std::vector<double> slide_s;
    std::unique_ptr<TensorMap> slid_out;
    for (int w = 0; w <= flags.slides; ++w) {
      std::vector<WindowMember> window(all.begin() + w, all.begin() + w + n);
      slid_out.reset();
      auto t0 = Clock::now();
      auto avg = cache.Average("bench-run", window);
      const double s = SecondsSince(t0);
      if (!avg.ok()) {
        std::cerr << "WindowSumCache::Average: " << avg.status() << "\n";
        return 1;
      }
      slid_out = std::move(*avg);
      const std::string path = PathName(cache.last_path());
      if (w == 0) {
        row.rebuild = s;
        if (path != "rebuilt") row.slide_paths += "first window " + path + "; ";
      } else {
        slide_s.push_back(s);
        if (path != "slid") row.slide_paths += "window " + std::to_string(w) + " " + path + "; ";
      }
    }
    row.slide = Median(slide_s);
    row.diff_slide = MaxAbsDiff(*slid_out, *scratch_out);
    if (row.slide_paths.empty()) row.slide_paths = "all slid";
    std::cerr << "n=" << n << ": plain " << Fmt("%.3f", row.plain) << " s, scratch "
              << Fmt("%.3f", row.scratch) << " s, rebuild " << Fmt("%.3f", row.rebuild)
              << " s, slide " << Fmt("%.3f", row.slide) << " s (" << row.slide_paths << ")\n";
    rows.push_back(row);
  }
  for (MemberFile& f : files) ::close(f.fd);
  const double total_seconds = SecondsSince(run_start);
  const double other_cpu = MachineBusySeconds() - busy_start - OwnCpuSeconds();

  // ---- report ----
  std::string command = "steadyeval-bench-window-scale";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  char date[32] = "?";
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::gmtime(&now));

  std::ostringstream md;
  md << "# Averaging windows at scale: from scratch and slid, vs a plain read-and-sum loop\n\n"
     << "Date: " << date << "\n\n"
     << "Machine: " << MachineLine() << ", CPU only, libtorch " << TORCH_VERSION
     << ". Other processes used " << Fmt("%.0f", other_cpu)
     << " CPU-seconds during the run (" << Fmt("%.2f", other_cpu / total_seconds)
     << " cores on average; 1-minute load average at the start " << load_start << ").\n\n"
     << "Command: `" << command << "` (whole run " << Fmt("%.0f", total_seconds)
     << " s, of which writing the checkpoints " << Fmt("%.0f", write_seconds) << " s)\n\n"
     << M << " fp32 checkpoints of " << Fmt("%.1f", ckpt_mb) << " MB of tensor data ("
     << Fmt("%.1f", ckpt_bytes / 4e6) << "M parameters: Llama layout, hidden " << kHidden
     << ", " << flags.layers << " layers, FFN " << kFfn << ", vocab " << kVocab
     << ", untied lm_head), written by WriteCheckpoint (worker/checkpoint/checkpoint_writer.h). "
     << "libtorch intra-op threads: " << flags.threads
     << "; the plain loop uses one thread. Times are medians of " << flags.repeats
     << " repeats (plain, scratch) or of " << flags.slides << " slides; the files are in the "
     << "page cache (just written and read once), so this is memory traffic and arithmetic, "
     << "not disk I/O.\n\n"
     << "- **plain** (the baseline): pread(2) of the data section of each member, 1 Mi floats "
     << "(4 MiB) of every member in turn, summed into an fp64 chunk accumulator, written out "
     << "as fp32 sum/n into a fresh (uninitialised) buffer: the same bytes, accumulation and "
     << "output as the averager in the simplest cache-friendly loop.\n"
     << "- **scratch**: `AverageCheckpoints(members)` (mmap'd safetensors, per tensor).\n"
     << "- **slide**: `WindowSumCache::Average` when the held sum is the previous window "
     << "(sum + newest − oldest, then sum/n into a new map); **rebuild**: its first window.\n"
     << "- One checkpoint (the reference for the sliding target): pread only "
     << Fmt("%.3f", read_only) << " s (" << Fmt("%.2f", ckpt_bytes / read_only / 1e9)
     << " GB/s); plain read-and-sum of one member " << Fmt("%.3f", one) << " s ("
     << Fmt("%.2f", ckpt_bytes / one / 1e9) << " GB/s).\n\n"
     << "| n | plain s | plain GB/s | scratch s | scratch GB/s | scratch throughput / plain "
        "| rebuild s | slide s | slide / plain one ckpt | slide / pread one ckpt "
        "| max abs diff scratch vs plain, slid vs scratch |\n"
     << "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (const Row& r : rows) {
    const double bytes = static_cast<double>(r.n) * ckpt_bytes;
    md << "| " << r.n << " | " << Fmt("%.3f", r.plain) << " | " << Fmt("%.2f", bytes / r.plain / 1e9)
       << " | " << Fmt("%.3f", r.scratch) << " | " << Fmt("%.2f", bytes / r.scratch / 1e9) << " | "
       << Fmt("%.2f", r.plain / r.scratch) << "x | " << Fmt("%.3f", r.rebuild) << " | "
       << Fmt("%.3f", r.slide) << " | " << Fmt("%.2f", r.slide / one) << "x | "
       << Fmt("%.2f", r.slide / read_only) << "x | " << Fmt("%.3g", r.diff_plain) << ", "
       << Fmt("%.3g", r.diff_slide) << " |\n";
  }
  md << "\nTargets (issue 15): sliding an n = " << max_n
     << " window ≤ 3× reading one checkpoint; from-scratch averaging ≥ 70% of the plain "
        "loop's throughput.\n\n";
  const Row& last = rows.back();
  md << "- sliding n = " << last.n << ": " << Fmt("%.3f", last.slide) << " s = "
     << Fmt("%.2f", last.slide / one) << "× the plain read-and-sum of one checkpoint ("
     << Fmt("%.2f", last.slide / read_only) << "× a bare pread of it): "
     << (last.slide <= 3 * one ? "met" : "missed") << " against read-and-sum, "
     << (last.slide <= 3 * read_only ? "met" : "missed") << " against a bare pread.\n";
  for (const Row& r : rows) {
    md << "- from scratch n = " << r.n << ": " << Fmt("%.0f", 100 * r.plain / r.scratch)
       << "% of the plain loop's throughput: " << (r.plain / r.scratch >= 0.7 ? "met" : "missed")
       << ".\n";
  }
  md << "- slide paths: ";
  for (const Row& r : rows) md << "n = " << r.n << " " << r.slide_paths << "; ";
  md << "\n";

  std::cout << md.str();
  if (!flags.out.empty()) {
    std::ofstream out(flags.out, std::ios::trunc);
    out << md.str();
    if (!out) {
      std::cerr << "cannot write " << flags.out << "\n";
      return 1;
    }
    std::cerr << "wrote " << flags.out << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace steadyeval

int main(int argc, char** argv) { return steadyeval::Main(argc, argv); }
