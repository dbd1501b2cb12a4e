// Benchmark (not a test) for issue 15 part 6: the coordinator at scale, driven over gRPC
// against the built `steadyeval-server` binary, started as a child process on 127.0.0.1.
//
// Setup: a run of C checkpoint folders (tiny but complete safetensors checkpoints, found by
// the server's own watcher), T multiple-choice tasks of E examples (4 options each) and
// three ensemble window sizes (ens@n and ens-soft@n of each). Then, in order:
//   (a) ingestion: P client processes (this binary, --role ingest) register as workers and
//       loop AcquireJob -> ReportResults (one message per task, E outputs with option
//       log-likelihoods) until every raw job is done: C x T x E predictions, scored,
//       stored, with the ensembles and stability pairs each report implies. Baseline: the
//       bare RocksDB Store (linked in-process, a separate folder) writing the same
//       Prediction records, one synced batch per job, one thread.
//   (a') the same ingestion into a second run without ensemble windows (skip with
//       --no_plain_ingest): what scoring and storing alone sustain.
//   (b) integration: K new checkpoints are written, admitted by the watcher, leased and
//       reported one at a time; the ReportResults RPC is timed (scores of T tasks, the
//       ensemble windows the step completes, pair figures). Baseline: `Rescore` (re-scores
//       every stored raw value from its outputs, recomputes every ensemble window and the
//       pair figures that change): the server's only full recompute; by default timed on
//       one task and scaled to T (--rescore_tasks). Also timed: two restarts (the first
//       after the writes above, the second right after a clean stop).
//   (c) `GetStability` over Q random inclusive step ranges, all tasks (the CLI's
//       `stability --steps A:B`), one client, idle server. Baseline: a trivial RPC
//       (ListRuns, page of 1) in the same run.
//   (d) dispatch: N clients (threads in D processes, --role dispatch, one channel and one
//       TCP connection each) register and long-poll AcquireJob; then UpdateRun adds W
//       averaging window sizes, creating ~W x C avg@n jobs at once, and every client
//       keeps acquiring (holding its leases) until no job is pending. Baseline: one
//       client acquiring the jobs of one window size back to back.
//
// Every figure comes with a baseline measured in the same run; the Markdown says how much
// CPU other processes used meanwhile (the machine is shared).
//
//   steadyeval-bench-coordinator-scale [--checkpoints C] [--tasks T] [--examples E] ...
//   (--help lists every flag; the defaults take about 4 minutes on 2 cores)
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_flags.h"
#include "bench/bench_machine.h"
#include "common/safetensors.h"
#include "nlohmann/json.hpp"
#include "server/store/store.h"
#include "steadyeval/v1/eval_service.grpc.pb.h"
#include "api/protocol.h"
#include "steadyeval/v1/worker_service.grpc.pb.h"

namespace steadyeval {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------
// Flags

struct Flags {
  std::string role;  // "" (the benchmark), "ingest", "dispatch"
  // benchmark
  int checkpoints = 1000;
  int tasks = 10;
  int examples = 100;  // the issue's 1,000 does not fit 10 minutes on 2 cores (results_part6.md)
  int choices = 4;
  std::vector<uint32_t> ensembles = {3, 5, 10};
  int ingest_clients = 4;
  int ingest_timeout = 420;
  int new_checkpoints = 5;
  int rescore_tasks = 1;  // 0: one Rescore of the whole run
  int stability_queries = 500;
  int dispatch_clients = 1000;
  int dispatch_procs = 4;
  int dispatch_windows = 10;
  std::string server_bin;
  std::string dir;
  std::string out;
  bool keep = false;
  bool no_plain_ingest = false;
  // children
  std::string server;
  std::string worker_id;
  std::string stop_file;
  std::string ready_file;
  std::string result_file;
  int threads = 1;
};

[[noreturn]] void Usage(const std::string& why) {
  std::ostream& os = why == "help" ? std::cout : std::cerr;
  if (why != "help") os << "steadyeval-bench-coordinator-scale: " << why << "\n";
  os << "usage: steadyeval-bench-coordinator-scale [flags]\n"
        "\n"
        "Starts the built steadyeval-server on 127.0.0.1 (a child process, a fresh data dir)\n"
        "and measures, over gRPC: prediction ingestion from several client processes, the\n"
        "cost of integrating one new checkpoint vs the full recompute (Rescore), GetStability\n"
        "latency over random step ranges, and job dispatch to many long-polling clients.\n"
        "Prints a Markdown section (also written to FILE with --out).\n"
        "\n"
        "  --checkpoints C        checkpoints in the run (default 1000)\n"
        "  --tasks T              multiple-choice tasks (default 10)\n"
        "  --examples E           examples per task (default 100; the issue's scale is 1000,\n"
        "                         which takes far longer than 10 minutes on 2 cores)\n"
        "  --ensembles A,B,C      ensemble window sizes (default 3,5,10)\n"
        "  --ingest_clients P     ingesting client processes (default 4)\n"
        "  --ingest_timeout S     stop ingesting after S seconds and say so (default 420)\n"
        "  --no_plain_ingest      skip the second ingestion, into a run without ensembles\n"
        "  --new_checkpoints K    checkpoints integrated one at a time (default 5)\n"
        "  --rescore_tasks N      Rescore the first N tasks, one RPC each, and scale the time to\n"
        "                         T tasks (said so in the output; default 1); 0: one Rescore of\n"
        "                         the whole run\n"
        "  --stability_queries Q  GetStability calls over random ranges (default 500)\n"
        "  --dispatch_clients N   long-polling clients (default 1000)\n"
        "  --dispatch_procs D     processes they are spread over (default 4)\n"
        "  --dispatch_windows W   averaging window sizes added to create ~W x C jobs (default 10)\n"
        "  --server_bin PATH      default: steadyeval-server beside this binary\n"
        "  --dir DIR              work folder (default: a new one in $TMPDIR, removed at exit)\n"
        "  --keep                 keep the work folder\n"
        "  --out FILE             also write the Markdown here\n";
  std::exit(why == "help" ? 0 : 2);
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  BenchFlags flags(argc, argv, Usage);
  while (flags.Next()) {
    const std::string& a = flags.flag();
    if (a == "--role") f.role = flags.Value();
    else if (a == "--checkpoints") f.checkpoints = flags.Positive();
    else if (a == "--tasks") f.tasks = flags.Positive();
    else if (a == "--examples") f.examples = flags.Positive();
    else if (a == "--choices") f.choices = flags.Positive();
    else if (a == "--ensembles") {
      f.ensembles.clear();
      for (absl::string_view piece : absl::StrSplit(flags.Value(), ',', absl::SkipEmpty())) {
        uint32_t n = 0;
        if (!absl::SimpleAtoi(piece, &n) || n < 2) Usage("bad --ensembles entry");
        f.ensembles.push_back(n);
      }
    } else if (a == "--ingest_clients") f.ingest_clients = flags.Positive();
    else if (a == "--ingest_timeout") f.ingest_timeout = flags.Positive();
    else if (a == "--new_checkpoints") f.new_checkpoints = flags.Positive();
    else if (a == "--rescore_tasks") {
      const std::string v = flags.Value();
      if (!absl::SimpleAtoi(v, &f.rescore_tasks) || f.rescore_tasks < 0) {
        Usage("bad value for --rescore_tasks: " + v);
      }
    }
    else if (a == "--stability_queries") f.stability_queries = flags.Positive();
    else if (a == "--dispatch_clients") f.dispatch_clients = flags.Positive();
    else if (a == "--dispatch_procs") f.dispatch_procs = flags.Positive();
    else if (a == "--dispatch_windows") f.dispatch_windows = flags.Positive();
    else if (a == "--server_bin") f.server_bin = flags.Value();
    else if (a == "--dir") f.dir = flags.Value();
    else if (a == "--keep") f.keep = true;
    else if (a == "--no_plain_ingest") f.no_plain_ingest = true;
    else if (a == "--out") f.out = flags.Value();
    else if (a == "--server") f.server = flags.Value();
    else if (a == "--worker_id") f.worker_id = flags.Value();
    else if (a == "--stop_file") f.stop_file = flags.Value();
    else if (a == "--ready_file") f.ready_file = flags.Value();
    else if (a == "--result_file") f.result_file = flags.Value();
    else if (a == "--threads") f.threads = flags.Positive();
    else flags.Unknown();
  }
  if (f.rescore_tasks > f.tasks) Usage("--rescore_tasks must be <= --tasks");
  return f;
}

// ---------------------------------------------------------------------------------------
// Small helpers

int64_t MonoNanos() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
double SecondsBetween(int64_t a, int64_t b) { return (b - a) / 1e9; }

std::string Fmt(const char* format, double x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, x);
  return buf;
}

std::string Thousands(double x) {
  std::string digits = Fmt("%.0f", x);
  std::string out;
  int count = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    if (count > 0 && count % 3 == 0 && *it != '-') out.insert(out.begin(), ',');
    out.insert(out.begin(), *it);
    ++count;
  }
  return out;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const double rank = p / 100.0 * (v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank)), hi = static_cast<size_t>(std::ceil(rank));
  return v[lo] + (v[hi] - v[lo]) * (rank - lo);
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

void Touch(const std::string& path) { std::ofstream(path, std::ios::app); }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// splitmix64
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The output of example `e` of task `task` at `step`: the gold option (e % choices) 60% of
// the time, another at random otherwise, so neighbouring checkpoints flip some examples.
void FillOutput(uint64_t step, uint32_t task, uint32_t e, int choices, v1::ExampleOutput* out) {
  const uint64_t u = Mix(step * 0x100000001b3ull ^ (static_cast<uint64_t>(task) << 40) ^ e);
  const int gold = static_cast<int>(e % choices);
  const int chosen = (u % 100) < 60 ? gold : static_cast<int>((u >> 8) % choices);
  out->set_index(e);
  out->set_output(std::to_string(chosen));
  out->clear_option_logliks();
  for (int k = 0; k < choices; ++k) {
    out->add_option_logliks(k == chosen ? -0.5 : -1.0 - static_cast<double>(Mix(u + k) % 1000) / 100.0);
  }
}

std::unique_ptr<v1::WorkerService::Stub> WorkerStub(const std::string& server, bool own_connection,
                                                    int index = 0) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  if (own_connection) {
    // A channel of its own with its own TCP connection, as a separate worker would have.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("steadyeval.bench.client", index);
  }
  return v1::WorkerService::NewStub(
      grpc::CreateCustomChannel(server, grpc::InsecureChannelCredentials(), args));
}

std::unique_ptr<v1::EvalService::Stub> EvalStub(const std::string& server) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return v1::EvalService::NewStub(
      grpc::CreateCustomChannel(server, grpc::InsecureChannelCredentials(), args));
}

void SetDeadline(grpc::ClientContext& ctx, double seconds) {
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
}

// Streams one job's outputs (one message per task) and returns the RPC status.
grpc::Status Report(v1::WorkerService::Stub& stub, const std::string& worker_id,
                    const v1::LeasedJob& lease, int examples, int choices,
                    v1::ReportResultsResponse* response) {
  const v1::Job& job = lease.job();
  const uint64_t step = job.steps(job.steps_size() - 1);
  grpc::ClientContext ctx;
  SetDeadline(ctx, 600);
  auto writer = stub.ReportResults(&ctx, response);
  v1::ReportResultsRequest req;
  for (int t = 0; t < job.tasks_size(); ++t) {
    req.Clear();
    req.set_worker_id(worker_id);
    req.set_job_id(job.id());
    req.set_epoch(job.epoch());
    req.set_lease_secret(lease.lease_secret());
    req.set_step(step);
    *req.mutable_task() = job.tasks(t);
    // The task's index in the run is its name's suffix (task00, task01, ...).
    uint32_t task_index = 0;
    absl::SimpleAtoi(job.tasks(t).name().substr(4), &task_index);
    for (int e = 0; e < examples; ++e) {
      FillOutput(step, task_index, static_cast<uint32_t>(e), choices, req.add_outputs());
    }
    req.set_task_complete(true);
    if (!writer->Write(req)) break;
  }
  writer->WritesDone();
  return writer->Finish();
}

// CPU-seconds the whole machine has been busy (all cores; /proc/stat).
double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  return (user + nice + system + irq + softirq + steal) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// CPU-seconds of this process and of its children waited for so far.
double OwnCpuSeconds() {
  double total = 0;
  for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    struct rusage u {};
    ::getrusage(who, &u);
    total += u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
  }
  return total;
}

double CpuSecondsOfPid(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return NAN;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// ---------------------------------------------------------------------------------------
// Child roles

// --role ingest: one worker; acquires and reports raw jobs until the stop file appears.
// Writes "jobs predictions first_ns last_ns" to --result_file.
int IngestMain(const Flags& f) {
  auto stub = WorkerStub(f.server, false);
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx, 30);
    v1::RegisterWorkerRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_worker_id(f.worker_id);
    req.set_name(f.worker_id);
    req.set_device("bench");
    v1::RegisterWorkerResponse resp;
    grpc::Status s = stub->RegisterWorker(&ctx, req, &resp);
    if (!s.ok()) {
      std::cerr << f.worker_id << ": RegisterWorker: " << s.error_message() << "\n";
      return 1;
    }
  }
  uint64_t jobs = 0, predictions = 0, failures = 0;
  int64_t first = 0, last = 0;
  while (true) {
    const int64_t t0 = MonoNanos();
    v1::AcquireJobRequest req;
    req.set_worker_id(f.worker_id);
    req.set_wait_ms(1000);
    v1::AcquireJobResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx, 30);
    grpc::Status s = stub->AcquireJob(&ctx, req, &resp);
    if (!s.ok()) {
      std::cerr << f.worker_id << ": AcquireJob: " << s.error_message() << "\n";
      return 1;
    }
    if (!resp.has_job()) {
      if (FileExists(f.stop_file)) break;
      continue;
    }
    if (first == 0) first = t0;
    v1::ReportResultsResponse report;
    s = Report(*stub, f.worker_id, resp.lease(), f.examples, f.choices, &report);
    if (!s.ok()) {
      std::cerr << f.worker_id << ": ReportResults job " << resp.lease().job().id() << ": "
                << s.error_message() << "\n";
      if (++failures > 3) return 1;
      continue;
    }
    last = MonoNanos();
    ++jobs;
    predictions += report.predictions_written();
  }
  std::ofstream(f.result_file) << jobs << " " << predictions << " " << first << " " << last << "\n";
  return 0;
}

// --role dispatch: --threads clients, each with its own channel, registered as its own
// worker; each long-polls AcquireJob (keeping every lease) until the stop file appears.
// Writes every grant's CLOCK_MONOTONIC time (ns), one a line, to --result_file.
int DispatchMain(const Flags& f) {
  const int n = f.threads;
  std::vector<std::vector<int64_t>> grants(n);
  std::atomic<int> registered{0}, errors{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      const std::string id = f.worker_id + "-" + std::to_string(i);
      auto stub = WorkerStub(f.server, true, i);
      for (int attempt = 0;; ++attempt) {
        grpc::ClientContext ctx;
        SetDeadline(ctx, 60);
        v1::RegisterWorkerRequest req;
        req.set_protocol_version(kProtocolVersion);
        req.set_worker_id(id);
        req.set_name(id);
        req.set_device("bench");
        v1::RegisterWorkerResponse resp;
        grpc::Status s = stub->RegisterWorker(&ctx, req, &resp);
        if (s.ok()) break;
        if (attempt == 5) {
          std::cerr << id << ": RegisterWorker: " << s.error_message() << "\n";
          ++errors;
          return;
        }
      }
      ++registered;
      while (true) {
        v1::AcquireJobRequest req;
        req.set_worker_id(id);
        req.set_wait_ms(2000);
        v1::AcquireJobResponse resp;
        grpc::ClientContext ctx;
        SetDeadline(ctx, 30);
        grpc::Status s = stub->AcquireJob(&ctx, req, &resp);
        if (!s.ok()) {
          std::cerr << id << ": AcquireJob: " << s.error_message() << "\n";
          ++errors;
          if (FileExists(f.stop_file)) return;
          continue;
        }
        if (resp.has_job()) {
          grants[i].push_back(MonoNanos());
        } else if (FileExists(f.stop_file)) {
          return;
        }
      }
    });
  }
  while (registered + errors < n) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  Touch(f.ready_file);
  for (auto& t : threads) t.join();
  std::ofstream out(f.result_file);
  for (const auto& g : grants) {
    for (int64_t t : g) out << t << "\n";
  }
  out << "errors " << errors.load() << "\n";
  return 0;
}

// ---------------------------------------------------------------------------------------
// The benchmark

struct Child {
  pid_t pid = -1;
  double cpu_seconds = 0;  // user + system, after Wait
  int exit_code = -1;
};

// fork + exec `argv` with stdout/stderr appended to `log`.
Child Spawn(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  Child c;
  c.pid = ::fork();
  if (c.pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int in = ::open("/dev/null", O_RDONLY);
    ::dup2(in, 0);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execv(args[0], args.data());
    _exit(127);
  }
  return c;
}

void Wait(Child& c) {
  int status = 0;
  struct rusage usage {};
  if (::wait4(c.pid, &status, 0, &usage) == c.pid) {
    c.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    c.cpu_seconds = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec +
                    usage.ru_stime.tv_usec / 1e6;
  }
}

bool WaitUntil(const std::function<bool()>& cond, double timeout_seconds, int poll_ms = 100) {
  const int64_t deadline = MonoNanos() + static_cast<int64_t>(timeout_seconds * 1e9);
  while (!cond()) {
    if (MonoNanos() > deadline) return cond();
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
  return true;
}

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "steadyeval-bench-coordinator-scale: " << what << "\n";
  std::exit(1);
}

std::string Self() { return fs::read_symlink("/proc/self/exe").string(); }

std::string CheckpointName(uint64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step_%07llu", static_cast<unsigned long long>(step));
  return name;
}

// A complete, tiny checkpoint folder (config.json + a one-tensor model.safetensors).
void WriteTinyCheckpoint(const std::string& dir) {
  fs::create_directories(dir);
  std::ofstream(dir + "/config.json") << R"({"model_type": "llama", "hidden_size": 8})";
  std::vector<TensorInfo> tensors(1);
  tensors[0].name = "model.norm.weight";
  tensors[0].dtype = DType::kF32;
  tensors[0].shape = {8};
  std::string bytes = BuildSafetensorsHeader(tensors);
  bytes.append(tensors[0].end, '\0');
  std::ofstream(dir + "/model.safetensors", std::ios::binary) << bytes;
}

std::string TaskName(int t) {
  char name[16];
  std::snprintf(name, sizeof(name), "task%02d", t);
  return name;
}

std::string TaskJsonl(int t, int examples, int choices) {
  std::string out;
  for (int e = 0; e < examples; ++e) {
    nlohmann::json line;
    line["id"] = std::to_string(e);
    line["query"] = "Task " + std::to_string(t) + ", question " + std::to_string(e) + ": which?";
    std::vector<std::string> options;
    for (int k = 0; k < choices; ++k) {
      options.push_back("option " + std::string(1 + (e + k) % 5, static_cast<char>('a' + k)));
    }
    line["choices"] = options;
    line["gold"] = e % choices;
    out += line.dump() + "\n";
  }
  return out;
}

class Server {
 public:
  Server(std::string bin, std::string root) : bin_(std::move(bin)), root_(std::move(root)) {}
  ~Server() { Stop(); }

  // Starts it and waits for its ready file; returns the seconds until ready.
  double Start() {
    const std::string ready = root_ + "/server.ready";
    std::error_code ec;
    fs::remove(ready, ec);
    const int64_t t0 = MonoNanos();
    child_ = Spawn({bin_, "--data_dir", root_ + "/db", "--listen", "127.0.0.1:0",
                    "--metrics_listen", "127.0.0.1:0", "--poll_interval_ms", "200",
                    "--settle_seconds", "0", "--lease_ttl_ms", "3600000", "--ready_file", ready},
                   root_ + "/server.log");
    if (!WaitUntil([&] { return FileExists(ready); }, 600, 10)) {
      Die("the server did not become ready; see " + root_ + "/server.log");
    }
    const double seconds = SecondsBetween(t0, MonoNanos());
    address_ = nlohmann::json::parse(ReadAll(ready))["grpc"].get<std::string>();
    return seconds;
  }
  // SIGTERM; returns the seconds until it exited.
  double Stop() {
    if (child_.pid <= 0) return 0;
    const int64_t t0 = MonoNanos();
    ::kill(child_.pid, SIGTERM);
    Wait(child_);
    child_.pid = -1;
    return SecondsBetween(t0, MonoNanos());
  }
  double CpuSeconds() const { return CpuSecondsOfPid(child_.pid); }
  const std::string& address() const { return address_; }
  pid_t pid() const { return child_.pid; }

 private:
  std::string bin_, root_, address_;
  Child child_;
};

v1::GetRunResponse GetRun(v1::EvalService::Stub& eval, const std::string& run) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, 60);
  v1::GetRunRequest req;
  req.set_name(run);
  v1::GetRunResponse resp;
  grpc::Status s = eval.GetRun(&ctx, req, &resp);
  if (!s.ok()) Die("GetRun: " + s.error_message());
  return resp;
}

uint32_t JobsIn(const v1::GetRunResponse& r, const std::string& state) {
  auto it = r.jobs_by_state().find(state);
  return it == r.jobs_by_state().end() ? 0 : it->second;
}


struct IngestStats {
  uint64_t jobs = 0, predictions = 0;
  double seconds = 0, server_cpu = 0, client_cpu = 0;
  bool complete = true;
  double rate() const { return seconds > 0 ? predictions / seconds : 0; }
};

struct Results {
  // setup
  double admit_seconds = 0;
  // (a)
  IngestStats ingest, plain_ingest;
  double store_rate = 0;
  uint64_t store_predictions = 0;
  // (b)
  std::vector<double> integrate_seconds;
  double rescore_seconds = 0;
  bool rescore_extrapolated = false;
  v1::RescoreResponse rescore;
  double restart_seconds = 0, second_restart_seconds = 0, stop_seconds = 0;
  // (c)
  std::vector<double> stability_ms, trivial_ms;
  int stability_rows = 0;
  // (d)
  uint64_t solo_grants = 0;
  double solo_seconds = 0;
  uint64_t grants = 0, dispatch_jobs = 0;
  double dispatch_seconds = 0, dispatch_steady_rate = 0, update_run_seconds = 0;
  int dispatch_errors = 0;
  std::vector<std::string> dispatch_error_lines;  // distinct, from the clients' logs
  double dispatch_server_cpu = 0;
  double idle_poll_cores = 0;  // server CPU while every client waits and no job exists
};

// The bare-store baseline of (a): the same Prediction records, one synced batch per job.
void MeasureStore(const Flags& f, const std::string& dir, Results& r) {
  auto store = Store::Open(dir);
  if (!store.ok()) Die("Store::Open: " + std::string(store.status().message()));
  // About half a million records (50 jobs at the default scale).
  const int jobs = std::max(1, std::min(f.checkpoints, 500000 / (f.tasks * f.examples)));
  v1::ExampleOutput out;
  const int64_t t0 = MonoNanos();
  for (int j = 0; j < jobs; ++j) {
    const uint64_t step = 100ull * (j + 1);
    Store::Batch batch = (*store)->NewBatch();
    for (int t = 0; t < f.tasks; ++t) {
      for (int e = 0; e < f.examples; ++e) {
        FillOutput(step, t, e, f.choices, &out);
        v1::Prediction p;
        p.set_output(out.output());
        p.set_normalized(out.output());
        const double correct = out.output() == std::to_string(e % f.choices) ? 1 : 0;
        p.set_score(correct);
        *p.mutable_option_logliks() = out.option_logliks();
        p.set_example(e);
        (*p.mutable_metric_values())["acc"] = correct;
        (*p.mutable_metric_values())["acc_norm"] = correct;
        batch.PutPrediction("scale", TaskName(t), "raw", step, e, p);
      }
    }
    if (absl::Status s = (*store)->Commit(std::move(batch)); !s.ok()) {
      Die("Store::Commit: " + std::string(s.message()));
    }
  }
  const double seconds = SecondsBetween(t0, MonoNanos());
  r.store_predictions = static_cast<uint64_t>(jobs) * f.tasks * f.examples;
  r.store_rate = r.store_predictions / seconds;
}

int BenchMain(const Flags& f, int argc, char** argv) {
  const int64_t run_start = MonoNanos();
  const std::string load_start = LoadAverage();
  const double busy_start = MachineBusySeconds() - OwnCpuSeconds();
  std::string root = f.dir;
  bool remove_root = !f.keep;
  if (root.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "steadyeval-coord-scale-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) Die("mkdtemp failed");
    root = tmpl;
  } else {
    fs::create_directories(root);
    if (!fs::is_empty(root)) Die(root + " is not empty");
  }
  struct Cleanup {
    std::string dir;
    bool remove;
    ~Cleanup() {
      if (!remove) return;
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{root, remove_root};
  std::string server_bin = f.server_bin;
  if (server_bin.empty()) server_bin = (fs::path(Self()).parent_path() / "steadyeval-server").string();
  if (::access(server_bin.c_str(), X_OK) != 0) Die(server_bin + " is not an executable (built?)");
  const std::string self = Self();
  const std::string run = "scale";
  const uint64_t stride = 100;
  Results r;
  auto log = [&](const std::string& what) {
    std::cerr << "[" << Fmt("%6.1f", SecondsBetween(run_start, MonoNanos())) << " s] " << what
              << std::endl;
  };

  // ---- setup ----
  const std::string source = root + "/checkpoints";
  for (int i = 0; i < f.checkpoints; ++i) {
    WriteTinyCheckpoint(source + "/" + CheckpointName(stride * (i + 1)));
  }
  log("wrote " + std::to_string(f.checkpoints) + " checkpoint folders");
  MeasureStore(f, root + "/store-baseline", r);
  log("bare store: " + Thousands(r.store_rate) + " predictions/s");

  Server server(server_bin, root);
  server.Start();
  log("server ready at " + server.address());
  auto eval = EvalStub(server.address());
  auto create_run = [&](const std::string& name, const std::string& dir,
                        const std::vector<uint32_t>& ensemble_sizes) {
    v1::CreateRunRequest req;
    v1::RunConfig* config = req.mutable_config();
    config->set_name(name);
    config->set_source(dir);
    for (uint32_t n : ensemble_sizes) config->add_ensemble_windows(n);
    static const char* kCategories[] = {"MC", "NLI", "QA", "RC", "EL"};
    for (int t = 0; t < f.tasks; ++t) {
      v1::TaskContent* file = req.add_task_files();
      file->set_filename(TaskName(t) + ".jsonl");
      file->set_content(TaskJsonl(t, f.examples, f.choices));
      v1::TaskRef* ref = config->add_tasks();
      ref->set_name(TaskName(t));
      ref->set_category(kCategories[t % 5]);
    }
    grpc::ClientContext ctx;
    SetDeadline(ctx, 120);
    v1::Run created;
    grpc::Status s = eval->CreateRun(&ctx, req, &created);
    if (!s.ok()) Die("CreateRun: " + s.error_message());
  };
  create_run(run, source, f.ensembles);
  const int64_t t_admit = MonoNanos();
  if (!WaitUntil([&] { return GetRun(*eval, run).checkpoints() >= static_cast<uint32_t>(f.checkpoints); },
                 600, 100)) {
    Die("the watcher did not admit every checkpoint within 600 s");
  }
  r.admit_seconds = SecondsBetween(t_admit, MonoNanos());
  log("admitted " + std::to_string(f.checkpoints) + " checkpoints in " +
      Fmt("%.1f", r.admit_seconds) + " s");

  // ---- (a) ingestion ----
  // Ingests every raw job of `run_name` (C checkpoints) with P client processes.
  auto ingest = [&](const std::string& run_name, const std::string& tag, IngestStats& st) {
    const std::string stop = root + "/" + tag + ".stop";
    std::vector<Child> clients;
    const double cpu0 = server.CpuSeconds();
    for (int p = 0; p < f.ingest_clients; ++p) {
      const std::string name = tag + "-" + std::to_string(p);
      clients.push_back(Spawn({self, "--role", "ingest", "--server", server.address(), "--worker_id",
                               name, "--examples", std::to_string(f.examples), "--choices",
                               std::to_string(f.choices), "--stop_file", stop, "--result_file",
                               root + "/" + name + ".result"},
                              root + "/" + name + ".log"));
    }
    const int64_t t0 = MonoNanos();
    int64_t last_log = t0;
    st.complete = WaitUntil(
        [&] {
          const v1::GetRunResponse g = GetRun(*eval, run_name);
          if (MonoNanos() - last_log > 30'000'000'000) {
            last_log = MonoNanos();
            log(run_name + ": ingested " + std::to_string(g.evaluated()) + "/" +
                std::to_string(f.checkpoints));
          }
          return g.evaluated() + g.failed() >= static_cast<uint32_t>(f.checkpoints);
        },
        f.ingest_timeout, 250);
    st.server_cpu = server.CpuSeconds() - cpu0;
    Touch(stop);
    int64_t first = 0, last = 0;
    for (int p = 0; p < f.ingest_clients; ++p) {
      const std::string name = tag + "-" + std::to_string(p);
      Wait(clients[p]);
      st.client_cpu += clients[p].cpu_seconds;
      std::istringstream in(ReadAll(root + "/" + name + ".result"));
      uint64_t jobs = 0, predictions = 0;
      int64_t a = 0, b = 0;
      if (!(in >> jobs >> predictions >> a >> b) || clients[p].exit_code != 0) {
        Die("ingest client " + name + " failed; see " + root + "/" + name + ".log");
      }
      st.jobs += jobs;
      st.predictions += predictions;
      if (a != 0 && (first == 0 || a < first)) first = a;
      last = std::max(last, b);
    }
    st.seconds = SecondsBetween(first != 0 ? first : t0, last);
    log(run_name + ": ingested " + Thousands(st.predictions) + " predictions in " +
        Fmt("%.1f", st.seconds) + " s" + (st.complete ? "" : " (stopped at the timeout)"));
  };
  ingest(run, "ingest", r.ingest);

  // (a') the same ingestion into a run without ensemble windows (a second run, its own
  // checkpoint folder): what the scoring and storing path alone sustains.
  if (!f.no_plain_ingest) {
    const std::string plain_source = root + "/checkpoints-plain";
    for (int i = 0; i < f.checkpoints; ++i) {
      WriteTinyCheckpoint(plain_source + "/" + CheckpointName(stride * (i + 1)));
    }
    create_run(run + "-no-ensembles", plain_source, {});
    if (!WaitUntil([&] {
          return GetRun(*eval, run + "-no-ensembles").checkpoints() >=
                 static_cast<uint32_t>(f.checkpoints);
        }, 600, 100)) {
      Die("the watcher did not admit every checkpoint of the second run within 600 s");
    }
    ingest(run + "-no-ensembles", "plain-ingest", r.plain_ingest);
  }

  // ---- (b) integration of new checkpoints ----
  auto worker = WorkerStub(server.address(), false);
  {
    grpc::ClientContext ctx;
    SetDeadline(ctx, 30);
    v1::RegisterWorkerRequest req;
    req.set_protocol_version(kProtocolVersion);
    req.set_worker_id("integrator");
    v1::RegisterWorkerResponse resp;
    grpc::Status s = worker->RegisterWorker(&ctx, req, &resp);
    if (!s.ok()) Die("RegisterWorker: " + s.error_message());
  }
  for (int k = 0; k < f.new_checkpoints; ++k) {
    const uint64_t step = stride * (f.checkpoints + k + 1);
    WriteTinyCheckpoint(source + "/" + CheckpointName(step));
    const uint32_t want = static_cast<uint32_t>(f.checkpoints + k + 1);
    if (!WaitUntil([&] { return GetRun(*eval, run).checkpoints() >= want; }, 60, 50)) {
      Die("checkpoint " + std::to_string(step) + " was not admitted within 60 s");
    }
    v1::AcquireJobResponse acquired;
    {
      grpc::ClientContext ctx;
      SetDeadline(ctx, 30);
      v1::AcquireJobRequest req;
      req.set_worker_id("integrator");
      req.set_wait_ms(5000);
      grpc::Status s = worker->AcquireJob(&ctx, req, &acquired);
      if (!s.ok() || !acquired.has_job()) Die("AcquireJob for the new checkpoint: " + s.error_message());
    }
    const v1::Job& job = acquired.lease().job();
    if (job.kind() != "raw" || job.steps(0) != step) {
      Die("expected the raw job of step " + std::to_string(step) + ", got " + job.kind() +
          " of step " + std::to_string(job.steps(job.steps_size() - 1)));
    }
    v1::ReportResultsResponse report;
    const int64_t t0 = MonoNanos();
    grpc::Status s = Report(*worker, "integrator", acquired.lease(), f.examples, f.choices, &report);
    const double seconds = SecondsBetween(t0, MonoNanos());
    if (!s.ok()) Die("ReportResults for the new checkpoint: " + s.error_message());
    r.integrate_seconds.push_back(seconds);
  }
  log("integrated " + std::to_string(f.new_checkpoints) + " new checkpoints, median " +
      Fmt("%.3f", Percentile(r.integrate_seconds, 50)) + " s");
  {
    const int rescored_tasks = f.rescore_tasks == 0 ? f.tasks : f.rescore_tasks;
    r.rescore_extrapolated = f.rescore_tasks != 0 && f.rescore_tasks < f.tasks;
    const int64_t t0 = MonoNanos();
    for (int t = 0; t < (f.rescore_tasks == 0 ? 1 : f.rescore_tasks); ++t) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, 3600);
      v1::RescoreRequest req;
      req.set_run(run);
      if (f.rescore_tasks != 0) req.set_task(TaskName(t));
      v1::RescoreResponse resp;
      grpc::Status s = eval->Rescore(&ctx, req, &resp);
      if (!s.ok()) Die("Rescore: " + s.error_message());
      r.rescore.set_values(r.rescore.values() + resp.values());
      r.rescore.set_predictions(r.rescore.predictions() + resp.predictions());
      r.rescore.set_scores_changed(r.rescore.scores_changed() + resp.scores_changed());
    }
    r.rescore_seconds = SecondsBetween(t0, MonoNanos()) * f.tasks / rescored_tasks;
    log("Rescore: " + Fmt("%.1f", r.rescore_seconds) + " s" +
        (r.rescore_extrapolated ? " (extrapolated)" : ""));
  }

  // ---- (c) stability ----
  {
    const v1::GetRunResponse g = GetRun(*eval, run);
    std::vector<uint64_t> steps;
    for (uint32_t i = 0; i < g.checkpoints(); ++i) steps.push_back(stride * (i + 1));
    std::mt19937_64 rng(42);
    std::uniform_int_distribution<size_t> pick(0, steps.size() - 1);
    for (int q = 0; q < f.stability_queries + 10; ++q) {
      size_t a = pick(rng), b = pick(rng);
      if (a > b) std::swap(a, b);
      v1::GetStabilityRequest req;
      req.set_run(run);
      req.mutable_steps()->set_from_step(steps[a]);
      req.mutable_steps()->set_to_step(steps[b]);
      v1::GetStabilityResponse resp;
      grpc::ClientContext ctx;
      SetDeadline(ctx, 60);
      const int64_t t0 = MonoNanos();
      grpc::Status s = eval->GetStability(&ctx, req, &resp);
      const double ms = SecondsBetween(t0, MonoNanos()) * 1e3;
      if (!s.ok()) Die("GetStability: " + s.error_message());
      if (q >= 10) r.stability_ms.push_back(ms);  // the first 10 warm up
      r.stability_rows = resp.rows_size();

      v1::ListRunsRequest lr;
      lr.set_page_size(1);
      v1::ListRunsResponse lresp;
      grpc::ClientContext lctx;
      SetDeadline(lctx, 60);
      const int64_t t1 = MonoNanos();
      s = eval->ListRuns(&lctx, lr, &lresp);
      const double lms = SecondsBetween(t1, MonoNanos()) * 1e3;
      if (!s.ok()) Die("ListRuns: " + s.error_message());
      if (q >= 10) r.trivial_ms.push_back(lms);
    }
    log("stability p50 " + Fmt("%.2f", Percentile(r.stability_ms, 50)) + " ms, p99 " +
        Fmt("%.2f", Percentile(r.stability_ms, 99)) + " ms");
  }

  // ---- restart: the indexes rebuilt from stored scores and pairs ----
  // The first start after the writes above replays RocksDB's write-ahead log; the second
  // (right after a clean stop) shows the index rebuild alone.
  r.stop_seconds = server.Stop();
  r.restart_seconds = server.Start();
  server.Stop();
  r.second_restart_seconds = server.Start();
  eval = EvalStub(server.address());
  log("restart: ready after " + Fmt("%.2f", r.restart_seconds) + " s, then " +
      Fmt("%.2f", r.second_restart_seconds) + " s");

  // ---- (d) dispatch ----
  {
    auto update_windows = [&](int sizes) {
      v1::UpdateRunRequest req;
      req.set_name(run);
      req.set_set_average_windows(true);
      for (int i = 0; i < sizes; ++i) req.add_average_windows(2 + i);
      v1::Run updated;
      grpc::ClientContext ctx;
      SetDeadline(ctx, 600);
      grpc::Status s = eval->UpdateRun(&ctx, req, &updated);
      if (!s.ok()) Die("UpdateRun: " + s.error_message());
    };
    // Baseline: one client, back to back, over the avg@2 jobs.
    auto solo = WorkerStub(server.address(), false);
    {
      grpc::ClientContext ctx;
      SetDeadline(ctx, 30);
      v1::RegisterWorkerRequest req;
      req.set_protocol_version(kProtocolVersion);
      req.set_worker_id("dispatch-solo");
      v1::RegisterWorkerResponse resp;
      grpc::Status s = solo->RegisterWorker(&ctx, req, &resp);
      if (!s.ok()) Die("RegisterWorker: " + s.error_message());
    }
    update_windows(1);
    const int64_t t0 = MonoNanos();
    while (true) {
      grpc::ClientContext ctx;
      SetDeadline(ctx, 30);
      v1::AcquireJobRequest req;
      req.set_worker_id("dispatch-solo");
      req.set_wait_ms(0);
      v1::AcquireJobResponse resp;
      grpc::Status s = solo->AcquireJob(&ctx, req, &resp);
      if (!s.ok()) Die("AcquireJob: " + s.error_message());
      if (!resp.has_job()) break;
      ++r.solo_grants;
    }
    r.solo_seconds = SecondsBetween(t0, MonoNanos());
    log("one client: " + std::to_string(r.solo_grants) + " grants in " + Fmt("%.2f", r.solo_seconds) + " s");

    const std::string stop = root + "/dispatch.stop";
    std::vector<Child> procs;
    int assigned = 0;
    for (int p = 0; p < f.dispatch_procs; ++p) {
      const int n = (f.dispatch_clients - assigned) / (f.dispatch_procs - p);
      assigned += n;
      const std::string tag = "dispatch-" + std::to_string(p);
      procs.push_back(Spawn({self, "--role", "dispatch", "--server", server.address(), "--worker_id", tag,
                             "--threads", std::to_string(n), "--stop_file", stop, "--ready_file",
                             root + "/" + tag + ".ready", "--result_file", root + "/" + tag + ".result"},
                            root + "/" + tag + ".log"));
    }
    if (!WaitUntil(
            [&] {
              for (int p = 0; p < f.dispatch_procs; ++p) {
                if (!FileExists(root + "/dispatch-" + std::to_string(p) + ".ready")) return false;
              }
              return true;
            },
            300, 100)) {
      Die("dispatch clients did not all register within 300 s");
    }
    // Every client is registered and (within a moment) waiting in AcquireJob; what the
    // server spends on idle long polls is measured over the next 4 s.
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const double idle_cpu0 = server.CpuSeconds();
    std::this_thread::sleep_for(std::chrono::seconds(4));
    r.idle_poll_cores = (server.CpuSeconds() - idle_cpu0) / 4;
    log(std::to_string(f.dispatch_clients) + " clients long-polling");
    const double cpu0 = server.CpuSeconds();
    const int64_t t_update = MonoNanos();
    update_windows(1 + f.dispatch_windows);
    r.update_run_seconds = SecondsBetween(t_update, MonoNanos());
    const v1::GetRunResponse after = GetRun(*eval, run);
    r.dispatch_jobs = JobsIn(after, "pending") + JobsIn(after, "leased") - r.solo_grants;
    WaitUntil([&] { return JobsIn(GetRun(*eval, run), "pending") == 0; }, 300, 500);
    r.dispatch_server_cpu = server.CpuSeconds() - cpu0;
    Touch(stop);
    std::vector<int64_t> times;
    for (int p = 0; p < f.dispatch_procs; ++p) {
      Wait(procs[p]);
      std::istringstream in(ReadAll(root + "/dispatch-" + std::to_string(p) + ".result"));
      std::string word;
      while (in >> word) {
        if (word == "errors") {
          int e = 0;
          in >> e;
          r.dispatch_errors += e;
        } else {
          times.push_back(std::stoll(word));
        }
      }
    }
    for (int p = 0; p < f.dispatch_procs; ++p) {
      std::istringstream in(ReadAll(root + "/dispatch-" + std::to_string(p) + ".log"));
      for (std::string line; std::getline(in, line);) {
        // "dispatch-0-17: AcquireJob: message": keep the part after the client's name.
        const size_t colon = line.find(": ");
        const std::string what = colon == std::string::npos ? line : line.substr(colon + 2);
        if (!what.empty() && r.dispatch_error_lines.size() < 3 &&
            std::find(r.dispatch_error_lines.begin(), r.dispatch_error_lines.end(), what) ==
                r.dispatch_error_lines.end()) {
          r.dispatch_error_lines.push_back(what);
        }
      }
    }
    std::sort(times.begin(), times.end());
    r.grants = times.size();
    if (!times.empty()) {
      r.dispatch_seconds = SecondsBetween(t_update, times.back());
      const size_t lo = times.size() / 10, hi = times.size() * 9 / 10;
      if (hi > lo) r.dispatch_steady_rate = (hi - lo) / SecondsBetween(times[lo], times[hi]);
    }
    log(Thousands(r.grants) + " grants in " + Fmt("%.2f", r.dispatch_seconds) + " s");
  }
  server.Stop();
  const double total_seconds = SecondsBetween(run_start, MonoNanos());

  // ---- report ----
  std::string command = "steadyeval-bench-coordinator-scale";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  char date[32] = "?";
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::gmtime(&now));
  std::string ensembles;
  for (uint32_t n : f.ensembles) ensembles += (ensembles.empty() ? "" : ", ") + std::to_string(n);
  const uint64_t full_predictions = static_cast<uint64_t>(f.checkpoints) * f.tasks * f.examples;
  const double other_cpu = MachineBusySeconds() - busy_start - OwnCpuSeconds();

  const double ingest_rate = r.ingest.rate();
  const double integrate = Percentile(r.integrate_seconds, 50);
  const double p50 = Percentile(r.stability_ms, 50), p99 = Percentile(r.stability_ms, 99);
  const double trivial50 = Percentile(r.trivial_ms, 50);
  const double solo_rate = r.solo_grants / r.solo_seconds;
  const double grant_rate = r.dispatch_seconds > 0 ? r.grants / r.dispatch_seconds : 0;
  auto met = [](bool yes) { return yes ? "yes" : "**no**"; };

  std::ostringstream md;
  md << "# The coordinator at scale (gRPC, the built steadyeval-server)\n\n"
     << "Date: " << date << "\n\n"
     << "Machine: " << MachineLine()
     << ". The server, the client processes and this driver share these cores. Other "
        "processes used "
     << Fmt("%.0f", other_cpu) << " CPU-seconds during the " << Fmt("%.0f", total_seconds)
     << " s run (" << Fmt("%.2f", other_cpu / total_seconds)
     << " cores on average; 1-minute load average at the start " << load_start << ").\n\n"
     << "Command: `" << command << "`\n\n"
     << "Scale: " << f.checkpoints << " checkpoints × " << f.tasks << " tasks × " << f.examples
     << " examples = " << Thousands(full_predictions)
     << " raw predictions per run; multiple-choice tasks of " << f.choices
     << " options (option log-likelihoods reported; outputs flip between checkpoints); "
        "ensemble windows n = "
     << ensembles << " (ens@n and ens-soft@n each: every raw value implies up to "
     << 2 * f.ensembles.size() << " ensemble values). Server: `steadyeval-server --listen "
        "127.0.0.1:0 --poll_interval_ms 200 --settle_seconds 0 --lease_ttl_ms 3600000`, a fresh "
        "data dir on the local disk; its watcher admitted the "
     << f.checkpoints << " checkpoint folders in " << Fmt("%.1f", r.admit_seconds) << " s.\n\n";

  md << "| measure | figure | baseline (same run) | ratio | target | met |\n"
     << "|---|---:|---|---:|---|---|\n";
  md << "| (a) ingestion over gRPC, " << f.ingest_clients << " client processes | "
     << Thousands(ingest_rate) << " predictions/s | bare `Store` writes of the same records: "
     << Thousands(r.store_rate) << "/s | " << Fmt("%.3f", ingest_rate / r.store_rate)
     << "x | ≥ 200,000/s | " << met(ingest_rate >= 200000) << " |\n";
  if (!f.no_plain_ingest) {
    md << "| (a') the same, into a run without ensemble windows | "
       << Thousands(r.plain_ingest.rate()) << " predictions/s | bare `Store` writes: "
       << Thousands(r.store_rate) << "/s | " << Fmt("%.3f", r.plain_ingest.rate() / r.store_rate)
       << "x | (≥ 200,000/s) | " << met(r.plain_ingest.rate() >= 200000) << " |\n";
  }
  md << "| (b) integrate one new checkpoint (median of " << r.integrate_seconds.size() << ") | "
     << Fmt("%.3f", integrate) << " s | full recompute, `Rescore` of the run"
     << (r.rescore_extrapolated ? " (extrapolated from " + std::to_string(f.rescore_tasks) + " of " +
                                      std::to_string(f.tasks) + " tasks)"
                                : "")
     << ": " << Fmt("%.1f", r.rescore_seconds) << " s | " << Thousands(r.rescore_seconds / integrate)
     << "x faster | ≥ 100x | " << met(r.rescore_seconds / integrate >= 100) << " |\n";
  md << "| (c) `GetStability`, random step ranges, all tasks | p50 " << Fmt("%.2f", p50)
     << " ms, p99 " << Fmt("%.2f", p99) << " ms | trivial RPC (`ListRuns`, 1 run) p50 "
     << Fmt("%.2f", trivial50) << " ms | p99 = " << Fmt("%.0f", p99 / trivial50)
     << "x | p99 ≤ 20 ms | " << met(p99 <= 20) << " |\n";
  md << "| (d) dispatch to " << f.dispatch_clients << " long-polling clients | "
     << Thousands(grant_rate) << " grants/s | one client, back to back: " << Thousands(solo_rate)
     << "/s | " << Fmt("%.2f", grant_rate / solo_rate) << "x | ≥ 5,000/s | "
     << met(grant_rate >= 5000) << " |\n\n";

  auto ingest_details = [&](const IngestStats& st) {
    md << Thousands(st.predictions) << " predictions in " << st.jobs << " reports (one per "
       << "checkpoint: " << f.tasks << " messages of " << f.examples << " outputs) over "
       << Fmt("%.1f", st.seconds) << " s, from the first AcquireJob to the last report's answer"
       << (st.complete ? "" : " — STOPPED at --ingest_timeout: not every checkpoint was ingested")
       << "; server CPU " << Fmt("%.1f", st.server_cpu) << " s ("
       << Fmt("%.2f", st.server_cpu / st.seconds) << " cores busy on average), the clients' "
       << Fmt("%.1f", st.client_cpu) << " s";
  };
  md << "Details:\n\n- (a) ";
  ingest_details(r.ingest);
  md << ". Each report is scored and committed (predictions, score, pair figures, the ens@n and "
        "ens-soft@n values of the windows it completes, which read the n members' stored "
        "predictions back, job DONE) in one synced batch under the analytics lock, so commits "
        "are serial.";
  if (!f.no_plain_ingest) {
    md << " (a') ";
    ingest_details(r.plain_ingest);
    md << ".";
  }
  md << " The bare-store baseline writes " << Thousands(r.store_predictions)
     << " raw `Prediction` records with the same fields through `Store::Commit` (linked "
        "in-process, its own folder), one synced batch per "
     << f.tasks * f.examples << " records, one thread: no gRPC, no scoring, no ensembles.\n";
  md << "- (b) integrating: the `ReportResults` RPC for a new newest checkpoint (" << f.tasks
     << " × " << f.examples << " outputs), timed at the client once the watcher had admitted "
        "it and the job was leased: ";
  for (double x : r.integrate_seconds) md << Fmt("%.3f", x) << " ";
  md << "s. Full recompute: `Rescore` re-scores every stored raw value from its outputs and "
        "recomputes every ensemble window and the pair figures that follow ("
     << r.rescore.values() << " raw values, " << Thousands(r.rescore.predictions())
     << " predictions"
     << (r.rescore_extrapolated
             ? "; measured on " + std::to_string(f.rescore_tasks) + " of " +
                   std::to_string(f.tasks) + " tasks, one RPC each, the time scaled by " +
                   Fmt("%.1f", static_cast<double>(f.tasks) / f.rescore_tasks)
             : "")
     << "); it is the server's only way to recompute everything (a restart reloads the stored "
        "pair figures, it does not recompute them). Restart on this data dir: ready after "
     << Fmt("%.2f", r.restart_seconds) << " s the first time (RocksDB replays its log of the "
        "writes above), "
     << Fmt("%.2f", r.second_restart_seconds) << " s the second; the SIGTERM shutdown took "
     << Fmt("%.2f", r.stop_seconds) << " s.\n";
  md << "- (c) " << r.stability_ms.size() << " `GetStability` calls with `steps {A, B}`, A ≤ B "
        "drawn uniformly from the "
     << f.checkpoints + f.new_checkpoints << " checkpoints, every task (an answer has "
     << r.stability_rows << " rows: task × variant, category and AVG rows), one client, one "
        "call at a time, otherwise idle server, after 10 warm-up calls; mean "
     << Fmt("%.2f", std::accumulate(r.stability_ms.begin(), r.stability_ms.end(), 0.0) /
                        r.stability_ms.size())
     << " ms, max " << Fmt("%.2f", *std::max_element(r.stability_ms.begin(), r.stability_ms.end()))
     << " ms.\n";
  md << "- (d) " << f.dispatch_clients << " clients in " << f.dispatch_procs
     << " processes, one channel and TCP connection each, each registered as its own worker, "
        "long-polling `AcquireJob` (wait 2 s) and keeping every lease. While they all waited "
        "and no job existed the server used "
     << Fmt("%.2f", r.idle_poll_cores) << " cores. `UpdateRun` then added "
     << f.dispatch_windows << " averaging window sizes, creating " << Thousands(r.dispatch_jobs)
     << " avg@n jobs in one batch (the call took " << Fmt("%.2f", r.update_run_seconds) << " s); "
     << Thousands(r.grants) << " grants in " << Fmt("%.2f", r.dispatch_seconds)
     << " s from the UpdateRun call to the last grant (" << Thousands(r.dispatch_steady_rate)
     << "/s between the 10th and 90th percentile grant); server CPU "
     << Fmt("%.1f", r.dispatch_server_cpu) << " s ("
     << Fmt("%.2f", 1e3 * r.dispatch_server_cpu / std::max<uint64_t>(1, r.grants))
     << " ms per grant); client-side RPC errors: " << r.dispatch_errors;
  for (const std::string& line : r.dispatch_error_lines) md << "; `" << line << "`";
  md << ". Baseline: one client acquiring the " << r.solo_grants
     << " avg@2 jobs back to back (wait_ms 0) in " << Fmt("%.2f", r.solo_seconds) << " s.\n";

  std::cout << md.str();
  if (!f.out.empty()) {
    std::ofstream out(f.out, std::ios::trunc);
    out << md.str();
    if (!out) Die("cannot write " + f.out);
    std::cerr << "wrote " << f.out << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace steadyeval

int main(int argc, char** argv) {
  const steadyeval::Flags flags = steadyeval::ParseFlags(argc, argv);
  if (flags.role == "ingest") return steadyeval::IngestMain(flags);
  if (flags.role == "dispatch") return steadyeval::DispatchMain(flags);
  if (!flags.role.empty()) steadyeval::Usage("unknown --role " + flags.role);
  return steadyeval::BenchMain(flags, argc, argv);
}
