// steadyeval-worker: the evaluation worker daemon, plus offline commands for people and
// tests (`logprobs`, `eval`, `average`).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/cli_args.h"
#include "common/grpc_channel.h"
#include "common/status.h"
#include "s3/credentials.h"
#include "s3/s3_endpoint.h"
#include "worker/cache/checkpoint_cache.h"
#include "worker/cache/converter.h"
#include "worker/daemon/daemon.h"
#include "worker/eval/eval_backend.h"
#include "worker/backend/offline.h"

namespace steadyeval {
namespace {

// SIGINT and SIGTERM for the daemon. Blocking them in main() is not enough: OpenBLAS
// starts its thread pool when the library is loaded, before main, and a process-directed
// signal delivered to one of those threads would take the default action (death) there.
// So Start() installs a handler (process-wide, whichever thread takes the signal) that
// only writes the signal number to a pipe, and a thread of its own reads the pipe: the
// first signal prints a "stopping" line and calls the handler set by OnFirstSignal (Drain;
// remembered until one is set), a second one exits at once with 128 + its number (from
// the signal handler itself, with async-signal-safe calls only).
class StopSignals {
 public:
  void Start() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      perror("steadyeval-worker: pipe2");
      _exit(1);
    }
    write_fd_ = fds[1];
    struct sigaction action = {};
    action.sa_handler = &StopSignals::OnSignal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
    const int read_fd = fds[0];
    std::thread([this, read_fd] {
      unsigned char sig = 0;
      while (true) {
        const ssize_t n = read(read_fd, &sig, 1);
        if (n == 1) break;
        if (n < 0 && errno == EINTR) continue;
        return;
      }
      fprintf(stderr,
              "steadyeval-worker: signal %d, stopping (no new jobs; the current one is "
              "finished within the grace period or handed back; signal again to exit now)\n",
              sig);
      fflush(stderr);
      absl::MutexLock lock(&mu_);  // Clear() waits for the handler
      signalled_ = true;
      if (handler_) handler_();
    }).detach();
  }
  // Runs `handler` on the first signal, or now if it has come already.
  void OnFirstSignal(std::function<void()> handler) {
    bool now = false;
    {
      absl::MutexLock lock(&mu_);
      handler_ = handler;
      now = signalled_;
    }
    if (now) handler();
  }
  // Forgets the handler (before what it refers to goes away).
  void Clear() {
    absl::MutexLock lock(&mu_);
    handler_ = nullptr;
  }

 private:
  static void OnSignal(int sig) {
    if (received_.fetch_add(1) > 0) {
      static const char kExiting[] = "steadyeval-worker: second signal, exiting now\n";
      ssize_t ignored = write(STDERR_FILENO, kExiting, sizeof(kExiting) - 1);
      (void)ignored;
      _exit(128 + sig);
    }
    const unsigned char byte = static_cast<unsigned char>(sig);
    ssize_t ignored = write(write_fd_, &byte, 1);
    (void)ignored;
  }

  static inline std::atomic<int> received_{0};  // lock-free: usable in the handler
  static_assert(std::atomic<int>::is_always_lock_free);
  static inline int write_fd_ = -1;
  absl::Mutex mu_;
  bool signalled_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> handler_ ABSL_GUARDED_BY(mu_);
};

StopSignals& Signals() {
  static auto* signals = new StopSignals();
  return *signals;
}

const std::vector<FlagSpec>& DaemonFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"coordinator", false, "coordinator gRPC address (required)", "HOST:PORT"},
      {"device", false, "cpu, cuda or cuda:K (default cpu)", "DEVICE"},
      {"name", false, "worker name shown by `steadyeval workers` (default host-pid)", "NAME"},
      {"metrics_listen", false, "serve Prometheus /metrics here (port 0 picks one)", "HOST:PORT"},
      {"path_map", false, "rewrite checkpoint paths that start with FROM (repeatable)", "FROM=TO"},
      {"tokenizer_dirs", false,
       "folders a run's own tokenizer file (runs add --tokenizer) may be in, comma-separated; "
       "without it, jobs of runs that name a tokenizer file fail (default: none)",
       "DIR[,DIR...]"},
      {"drain_grace_s", false,
       "on SIGTERM/SIGINT, finish the current job if that takes at most this long, else hand "
       "it back after the packed batch in progress (default 20)",
       "S"},
      {"threads", false,
       "CPU threads for OpenBLAS's matrix products, whatever OPENBLAS_NUM_THREADS says; "
       "libtorch's own kernels keep one thread beside them (default: every CPU this process "
       "may run on)",
       "N"},
      {"batch_tokens", false,
       absl::StrCat("tokens per packed forward pass; bounds the activations' memory (default ",
                    kDefaultBatchTokens, ")"),
       "N"},
      {"acquire_wait_ms", false, "long-poll wait per AcquireJob (default 5000)", "MS"},
      {"batch_size", false,
       "generation examples decoded together, left-padded in one KV cache (default 8); "
       "outputs do not depend on it", "N"},
      {"window_cache_bytes", false,
       "memory for held avg@n window sums, all runs together (default 2147483648 = 2 GiB; "
       "0 disables); a window whose sum is larger is averaged from scratch",
       "BYTES"},
      {"window_rebuild_every", false,
       "re-sum a window from scratch after this many consecutive slides (default 8)", "K"},
      {"cache_dir", false,
       "folder of the checkpoint cache for s3:// runs and converted checkpoints; one worker "
       "per folder (default $XDG_CACHE_HOME/steadyeval, else ~/.cache/steadyeval; opened on "
       "the first job that needs it)",
       "DIR"},
      {"cache_bytes", false,
       "the checkpoint cache's hard byte limit, with K, M, G or T (powers of 1024); an "
       "averaging window needs all its members at once (default 100G)",
       "N"},
      {"fetch_concurrency", false,
       "files of one checkpoint fetched at once into the cache (default 4)", "N"},
      {"converter", false,
       "declare a converter runs may name (runs add --convert NAME): CMD is run without a "
       "shell, split at whitespace ('...' and \"...\" quote), {src} replaced by the "
       "checkpoint folder and {dst} by an empty folder it must fill with a Hugging Face "
       "layout (config.json, *.safetensors, tokenizer); repeatable",
       "NAME='CMD ARGS {src} {dst}'"},
      {"converter_timeout_s", false,
       "a converter still running after this long is killed with its process group and the "
       "job fails (default 3600)",
       "S"},
      {"token_file", false,
       "file whose first line is this worker's bearer token (a worker-role token)", "FILE"},
      {"ca_cert", false, "connect over TLS, trusting these PEM roots for the coordinator",
       "FILE"},
      {"client_cert", false, "PEM client certificate for a coordinator requiring mTLS", "FILE"},
      {"client_key", false, "PEM private key of --client_cert", "FILE"},
      {"help", true, "show this help"},
  };
  return *flags;
}

void PrintUsage() {
  fprintf(stdout,
          "steadyeval-worker: evaluates checkpoints leased by a steadyeval coordinator.\n\n"
          "Usage:\n"
          "  steadyeval-worker --coordinator HOST:PORT [--device cpu] [--name N]\n"
          "                    [--metrics_listen HOST:PORT] [--path_map FROM=TO]\n"
          "                    [--cache_dir DIR] [--cache_bytes 100G] [--converter NAME='CMD {src} {dst}']\n"
          "  steadyeval-worker logprobs --checkpoint DIR (--tokens 1,2,3 | --text \"...\") [--json]\n"
          "  steadyeval-worker eval --checkpoint DIR --task FILE [--few_shots K] [--json]\n"
          "  steadyeval-worker average --checkpoint DIR --checkpoint DIR ... --out DIR [--shards K]\n"
          "  steadyeval-worker check [--device cuda]   (plugin, device: run on each new node)\n\n"
          "Daemon flags:\n%s\n"
          "Run `steadyeval-worker logprobs --help`, `eval --help`, `average --help` or `check --help`\nfor the "
          "offline commands.\n",
          FlagsHelp(DaemonFlags()).c_str());
}

std::string DefaultName() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, "-", getpid());
}

std::string RandomSuffix() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(getpid()));
  char buf[17];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(gen()));
  return std::string(buf, 8);
}

// --cache_dir, --cache_bytes, --fetch_concurrency, --converter, --converter_timeout_s.
absl::Status CacheFlags(const ParsedArgs& parsed, DaemonOptions& options) {
  if (parsed.Has("cache_dir")) {
    options.cache.dir = parsed.Get("cache_dir");
  } else {
    // No default (no HOME): s3:// and --convert jobs fail naming --cache_dir; others run.
    absl::StatusOr<std::string> dir = DefaultCacheDir([](const char* name) { return getenv(name); });
    if (dir.ok()) options.cache.dir = *dir;
  }
  ASSIGN_OR_RETURN(options.cache.limit_bytes,
                   ParseByteSize(parsed.Get("cache_bytes", "100G"), "--cache_bytes"));
  if (options.cache.limit_bytes == 0) return absl::InvalidArgumentError("--cache_bytes must be above 0");
  auto concurrency = parsed.GetInt("fetch_concurrency", kDefaultFetchConcurrency);
  if (!concurrency.ok() || *concurrency < 1 || *concurrency > 256) {
    return absl::InvalidArgumentError("--fetch_concurrency must be in 1..256");
  }
  options.cache.fetch_concurrency = static_cast<int>(*concurrency);
  for (const std::string& value : parsed.GetAll("converter")) {
    ASSIGN_OR_RETURN(ConverterSpec spec, ParseConverterSpec(value));
    for (const ConverterSpec& other : options.converters) {
      if (other.name == spec.name) {
        return absl::InvalidArgumentError(absl::StrCat("--converter ", spec.name, " is declared twice"));
      }
    }
    options.converters.push_back(std::move(spec));
  }
  auto timeout = parsed.GetDouble("converter_timeout_s", 3600);
  if (!timeout.ok() || !(*timeout > 0) || *timeout > 7 * 86400) {
    return absl::InvalidArgumentError("--converter_timeout_s must be in (0, 604800] seconds");
  }
  options.converter_timeout_ms = static_cast<int64_t>(*timeout * 1000);
  return absl::OkStatus();
}

int RunDaemon(const std::vector<std::string>& args) {
  auto parsed = ParseArgs(args, DaemonFlags());
  if (!parsed.ok()) {
    fprintf(stderr, "steadyeval-worker: %s\n", std::string(parsed.status().message()).c_str());
    return 2;
  }
  if (parsed->Has("help")) {
    PrintUsage();
    return 0;
  }
  if (!parsed->positionals().empty()) {
    fprintf(stderr, "steadyeval-worker: unknown command '%s' (commands: logprobs, eval, average, check; see --help)\n",
            parsed->positionals()[0].c_str());
    return 2;
  }
  if (!parsed->Has("coordinator")) {
    fprintf(stderr, "steadyeval-worker: --coordinator HOST:PORT is required (see --help)\n");
    return 2;
  }
  DaemonOptions options;
  options.name = parsed->Get("name", DefaultName());
  options.worker_id = absl::StrCat(options.name, "-", RandomSuffix());
  options.device = parsed->Get("device", "cpu");
  options.metrics_listen = parsed->Get("metrics_listen");
  for (const std::string& spec : parsed->GetAll("path_map")) {
    auto m = ParsePathMapping(spec);
    if (!m.ok()) {
      fprintf(stderr, "steadyeval-worker: %s\n", std::string(m.status().message()).c_str());
      return 2;
    }
    options.path_map.push_back(*m);
  }
  for (const std::string& value : parsed->GetAll("tokenizer_dirs")) {
    for (absl::string_view dir : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
      if (dir.empty() || dir[0] != '/') {
        fprintf(stderr, "steadyeval-worker: --tokenizer_dirs: '%s' is not an absolute path\n",
                std::string(dir).c_str());
        return 2;
      }
      options.tokenizer_dirs.emplace_back(dir);
    }
  }
  auto grace = parsed->GetDouble("drain_grace_s", 20);
  if (!grace.ok() || !(*grace >= 0) || *grace > 86400) {
    fprintf(stderr, "steadyeval-worker: --drain_grace_s must be in 0..86400 seconds\n");
    return 2;
  }
  options.drain_grace_ms = static_cast<int64_t>(*grace * 1000);
  auto wait = parsed->GetInt("acquire_wait_ms", 5000);
  auto threads = parsed->GetInt("threads", DefaultThreads());
  if (!wait.ok() || !threads.ok()) {
    fprintf(stderr, "steadyeval-worker: %s\n",
            std::string((!wait.ok() ? wait.status() : threads.status()).message()).c_str());
    return 2;
  }
  options.acquire_wait_ms = *wait;
  auto batch_size = parsed->GetInt("batch_size", 8);
  if (!batch_size.ok() || *batch_size < 1 || *batch_size > 1024) {
    fprintf(stderr, "steadyeval-worker: --batch_size must be in 1..1024\n");
    return 2;
  }
  options.batch_size = static_cast<int>(*batch_size);
  auto batch_tokens = parsed->GetInt("batch_tokens", kDefaultBatchTokens);
  if (!batch_tokens.ok() || *batch_tokens < 1 || *batch_tokens > 1000000) {
    fprintf(stderr, "steadyeval-worker: --batch_tokens must be in 1..1000000\n");
    return 2;
  }
  if (*threads < 1 || *threads > 4096) {
    fprintf(stderr, "steadyeval-worker: --threads must be in 1..4096\n");
    return 2;
  }
  WindowCacheSettings window_cache;
  auto cache_bytes = parsed->GetInt("window_cache_bytes", static_cast<int64_t>(window_cache.budget_bytes));
  auto rebuild_every = parsed->GetInt("window_rebuild_every", window_cache.rebuild_every);
  if (!cache_bytes.ok() || !rebuild_every.ok()) {
    fprintf(stderr, "steadyeval-worker: %s\n",
            std::string((!cache_bytes.ok() ? cache_bytes.status() : rebuild_every.status()).message()).c_str());
    return 2;
  }
  if (*cache_bytes < 0 || *rebuild_every < 0 || *rebuild_every > 1000000) {
    fprintf(stderr, "steadyeval-worker: --window_cache_bytes and --window_rebuild_every must not be negative\n");
    return 2;
  }
  window_cache.budget_bytes = static_cast<uint64_t>(*cache_bytes);
  window_cache.rebuild_every = static_cast<int>(*rebuild_every);
  if (absl::Status s = CacheFlags(*parsed, options); !s.ok()) {
    fprintf(stderr, "steadyeval-worker: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  // Credentials for s3:// runs: this worker's own, never from the coordinator.
  options.s3_credentials = LoadAwsCredentials();
  options.default_s3_region =
      DefaultS3Region(RegionFromEnvironment([](const char* name) { return getenv(name); }));
  if (options.s3_credentials.ok()) {
    fprintf(stderr, "steadyeval-worker: AWS credentials for s3:// runs from %s\n",
            options.s3_credentials->origin.c_str());
  }

  auto backend = CreateTorchEvalBackend(options.device, static_cast<int>(*threads), window_cache,
                                        *batch_tokens);
  if (!backend.ok()) {
    fprintf(stderr, "steadyeval-worker: %s\n", std::string(backend.status().message()).c_str());
    return 1;
  }
  steadyeval::ChannelOptions channel_options;
  channel_options.target = parsed->Get("coordinator");
  channel_options.token_file = parsed->Get("token_file");
  channel_options.ca_cert = parsed->Get("ca_cert");
  channel_options.client_cert = parsed->Get("client_cert");
  channel_options.client_key = parsed->Get("client_key");
  channel_options.arguments.SetMaxReceiveMessageSize(64 << 20);
  channel_options.arguments.SetMaxSendMessageSize(64 << 20);
  // Reconnect quickly after a coordinator restart (gRPC's default backoff grows to 120 s).
  channel_options.arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  channel_options.arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  auto channel = steadyeval::OpenChannel(channel_options);
  if (!channel.ok()) {
    fprintf(stderr, "steadyeval-worker: %s\n", std::string(channel.status().message()).c_str());
    return 1;
  }
  std::shared_ptr<steadyeval::v1::WorkerService::StubInterface> stub =
      steadyeval::v1::WorkerService::NewStub(*channel);
  WorkerDaemon daemon(options, stub, std::move(*backend));
  auto metrics = daemon.StartMetrics();
  if (!metrics.ok()) {
    fprintf(stderr, "steadyeval-worker: %s\n", std::string(metrics.status().message()).c_str());
    return 1;
  }
  fprintf(stdout, "steadyeval-worker: %s on %s, coordinator %s%s\n", options.worker_id.c_str(),
          options.device.c_str(), parsed->Get("coordinator").c_str(),
          metrics->empty() ? "" : absl::StrCat(", metrics=", *metrics).c_str());
  fflush(stdout);

  // The signal thread (started first thing in main) drains the daemon.
  Signals().OnFirstSignal([&daemon] { daemon.Drain(); });
  absl::Status s = daemon.Run();
  Signals().Clear();
  if (!s.ok()) {
    fprintf(stderr, "steadyeval-worker: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace steadyeval

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "logprobs") {
    return steadyeval::RunLogprobsCommand({args.begin() + 1, args.end()});
  }
  if (!args.empty() && args[0] == "eval") {
    return steadyeval::RunEvalCommand({args.begin() + 1, args.end()});
  }
  if (!args.empty() && args[0] == "average") {
    return steadyeval::RunAverageCommand({args.begin() + 1, args.end()});
  }
  if (!args.empty() && args[0] == "check") {
    return steadyeval::RunCheckCommand({args.begin() + 1, args.end()});
  }
  // First thing in the daemon: see StopSignals.
  steadyeval::Signals().Start();
  return steadyeval::RunDaemon(args);
}
