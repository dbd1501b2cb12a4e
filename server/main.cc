// steadyeval-server: the coordinator (DESIGN §1, §9).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/cli_args.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "s3/credentials.h"
#include "server/config/config_apply.h"
#include "server/config/config_file.h"
#include "server/config/server_flags.h"
#include "server/coordinator.h"
#include "server/health_probe.h"
#include "server/rpc/auth.h"
#include "server/ingest/run_inputs.h"
#include "server/rpc/server.h"
#include "server/rpc/tls.h"

namespace steadyeval {
namespace {

const std::vector<FlagSpec>& TokensFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"tokens_file", false, "the tokens file to append to (created 0600 if missing)", "FILE"},
      {"help", true, "show this help", ""},
  };
  return *flags;
}

const std::vector<FlagSpec>& RestoreFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"from", false, "backup folder written by `steadyeval backup --to DIR` (required)", "DIR"},
      {"data_dir", false, "new data dir to restore into; must not exist or be empty (required)",
       "DIR"},
      {"help", true, "show this help", ""},
  };
  return *flags;
}

void Usage(std::ostream& out) {
  out << "usage: steadyeval-server [--config FILE] [--check] --data_dir DIR [--listen HOST:PORT] "
         "[--metrics_listen HOST:PORT] [--poll_interval_ms N] [--lease_ttl_ms N] "
         "[--settle_seconds S] [--ready_file FILE] [--tls_cert FILE --tls_key FILE "
         "[--client_ca FILE]] [--tokens_file FILE] [--insecure] [--source_roots DIR,...] "
         "[--s3_endpoints URL,...] "
         "[--storage_reserve_bytes N] [--storage_max_sst_bytes N]\n"
         "       steadyeval-server tokens add ROLE NAME --tokens_file FILE\n"
         "       steadyeval-server restore --from BACKUP_DIR --data_dir NEW_DIR\n"
         "       steadyeval-server health --server HOST:PORT [--ca_cert FILE] [--tls_server_name NAME]\n\n"
         "Serves until SIGTERM or SIGINT. SIGHUP re-reads --tokens_file and the TLS files (a "
         "file that does not parse is refused and the previous one stays) and re-applies "
         "--config: runs it declares anew are created, changed windows scheduled, runs it no "
         "longer declares paused (never deleted); a file that does not load, or changes a "
         "declared run's source or tasks, is refused with FILE:LINE and nothing changes.\n\n"
      << FlagsHelp(ServerFlags());
}

// `steadyeval-server tokens add ROLE NAME --tokens_file FILE`: prints a new token once.
absl::Status RunTokens(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(ParsedArgs args, ParseArgs(argv, TokensFlags()));
  const std::vector<std::string>& words = args.positionals();
  if (args.Has("help") || words.empty()) {
    std::cout << "usage: steadyeval-server tokens add ROLE NAME --tokens_file FILE\n\n"
                 "Makes a new random token for ROLE (worker, reader or admin) named NAME, "
                 "appends 'ROLE NAME SHA256_HEX' to FILE and prints the token on stdout: the "
                 "only time it is shown. Give it to the client in a file (--token_file); a "
                 "running server picks the new line up on SIGHUP.\n\n"
              << FlagsHelp(TokensFlags());
    return absl::OkStatus();
  }
  if (words.size() != 3 || words[0] != "add") {
    return absl::InvalidArgumentError(
        "usage: steadyeval-server tokens add ROLE NAME --tokens_file FILE");
  }
  if (!args.Has("tokens_file")) {
    return absl::InvalidArgumentError("tokens add needs --tokens_file FILE");
  }
  ASSIGN_OR_RETURN(Role role, ParseRole(words[1]));
  ASSIGN_OR_RETURN(std::string token, AddToken(args.Get("tokens_file"), role, words[2]));
  std::cout << token << std::endl;
  std::cerr << "steadyeval-server: added " << RoleName(role) << " token '" << words[2] << "' to "
            << args.Get("tokens_file")
            << "; this is the only time the token is shown (SIGHUP a running server to use it)\n";
  return absl::OkStatus();
}

// `steadyeval-server restore`: offline, the latest backup of BACKUP_DIR into NEW_DIR.
absl::Status Restore(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(ParsedArgs args, ParseArgs(argv, RestoreFlags()));
  if (args.Has("help")) {
    std::cout << "usage: steadyeval-server restore --from BACKUP_DIR --data_dir NEW_DIR\n\n"
                 "Restores the latest backup in BACKUP_DIR (made by `steadyeval backup --to "
                 "BACKUP_DIR` on a live server) into NEW_DIR, checks that it opens, and "
                 "exits; then start steadyeval-server with --data_dir NEW_DIR.\n\n"
              << FlagsHelp(RestoreFlags());
    return absl::OkStatus();
  }
  if (!args.positionals().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unexpected argument '", args.positionals().front(), "' (see restore --help)"));
  }
  const std::string from = args.Get("from");
  const std::string data_dir = args.Get("data_dir");
  if (from.empty() || data_dir.empty()) {
    return absl::InvalidArgumentError(
        "restore needs --from BACKUP_DIR and --data_dir NEW_DIR (see restore --help)");
  }
  ASSIGN_OR_RETURN(Store::RestoreResult restored, Store::Restore(from, data_dir));
  std::cout << "steadyeval-server: restored backup " << restored.backup_id << " (taken "
            << absl::FormatTime("%Y-%m-%d %H:%M:%S %Z", absl::FromUnixSeconds(restored.timestamp),
                                absl::LocalTimeZone())
            << ", " << restored.bytes << " bytes) from " << from << " into " << data_dir
            << "; start steadyeval-server --data_dir " << data_dir << std::endl;
  return absl::OkStatus();
}

// Writes `content` to `path` atomically (temporary file + rename).
absl::Status WriteFileAtomically(const std::string& path, const std::string& content) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << content;
    out.flush();
    if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ",
                                               ec.message()));
  }
  return absl::OkStatus();
}

// A setting: the flag when given, else the config file's entry, else absent.
class Settings {
 public:
  Settings(const ParsedArgs& args, const ConfigFile& file) : args_(args), file_(file) {}
  bool Has(const std::string& name) const {
    return args_.Has(name) || file_.settings.count(name) > 0;
  }
  std::string Get(const std::string& name, const std::string& fallback = "") const {
    if (args_.Has(name)) return args_.Get(name);
    auto it = file_.settings.find(name);
    return it == file_.settings.end() ? fallback : it->second;
  }
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t fallback) const {
    if (args_.Has(name) || !file_.settings.count(name)) return args_.GetInt(name, fallback);
    int64_t value = 0;
    if (!absl::SimpleAtoi(file_.settings.at(name), &value)) return NotANumber(name);
    return value;
  }
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback) const {
    if (args_.Has(name) || !file_.settings.count(name)) return args_.GetDouble(name, fallback);
    double value = 0;
    if (!absl::SimpleAtod(file_.settings.at(name), &value)) return NotANumber(name);
    return value;
  }
  bool GetBool(const std::string& name) const {
    if (args_.Has(name)) return true;
    auto it = file_.settings.find(name);
    return it != file_.settings.end() && (it->second == "true" || it->second == "yes");
  }

 private:
  absl::Status NotANumber(const std::string& name) const {
    return absl::InvalidArgumentError(absl::StrCat(file_.path, ":", file_.setting_lines.at(name),
                                                   ": '", name, "' is '", file_.settings.at(name),
                                                   "'; it must be a number"));
  }
  const ParsedArgs& args_;
  const ConfigFile& file_;
};

// The server's options from the flags and the config file's settings (a flag wins).
absl::StatusOr<ServerOptions> OptionsFrom(const Settings& settings) {
  ServerOptions options;
  options.data_dir = settings.Get("data_dir");
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("--data_dir is required (see --help)");
  }
  options.listen = settings.Get("listen", "127.0.0.1:50051");
  options.metrics_listen = settings.Get("metrics_listen", "127.0.0.1:9100");
  ASSIGN_OR_RETURN(options.coordinator.poll_interval_ms, settings.GetInt("poll_interval_ms", 1000));
  ASSIGN_OR_RETURN(options.coordinator.scheduler.lease_ttl_ms, settings.GetInt("lease_ttl_ms", 30000));
  ASSIGN_OR_RETURN(options.coordinator.default_settle_seconds,
                   settings.GetDouble("settle_seconds", 30));
  if (options.coordinator.poll_interval_ms <= 0 || options.coordinator.scheduler.lease_ttl_ms <= 0 ||
      options.coordinator.default_settle_seconds < 0) {
    return absl::InvalidArgumentError(
        "--poll_interval_ms and --lease_ttl_ms must be > 0, --settle_seconds >= 0");
  }
  ASSIGN_OR_RETURN(const int64_t reserve,
                   settings.GetInt("storage_reserve_bytes", StoreOptions::kDefaultReserveBytes));
  ASSIGN_OR_RETURN(const int64_t max_sst, settings.GetInt("storage_max_sst_bytes", 0));
  if (reserve < 0 || max_sst < 0) {
    return absl::InvalidArgumentError(
        "--storage_reserve_bytes and --storage_max_sst_bytes must be >= 0");
  }
  options.store.reserve_bytes = static_cast<uint64_t>(reserve);
  options.store.max_sst_bytes = static_cast<uint64_t>(max_sst);

  options.tls.cert = settings.Get("tls_cert");
  options.tls.key = settings.Get("tls_key");
  options.tls.client_ca = settings.Get("client_ca");
  options.tokens_file = settings.Get("tokens_file");
  options.insecure = settings.GetBool("insecure");
  ASSIGN_OR_RETURN(options.coordinator.source_roots,
                   ParseSourceRoots(settings.Get("source_roots")));
  if (options.coordinator.source_roots.empty()) {
    std::cerr << "steadyeval-server: warning: no --source_roots: a run may watch any folder "
                 "this process can read (pass --source_roots DIR to confine run sources)\n";
  }
  ASSIGN_OR_RETURN(options.coordinator.s3_endpoints,
                   ParseS3Endpoints(settings.Get("s3_endpoints")));
  options.coordinator.default_s3_region = DefaultS3Region(
      RegionFromEnvironment([](const char* name) { return std::getenv(name); }));
  return options;
}

// --check: the flags and --config as a start would take them, the declared runs checked as
// CreateRun would; nothing is opened, served or changed.
absl::Status CheckOnly(const ServerOptions& options, const ConfigFile& file) {
  ASSIGN_OR_RETURN(
      const std::vector<NewRun> runs,
      CheckDeclaredRuns(file, Coordinator::NewRunOptionsFor(options.coordinator)));
  std::cout << "steadyeval-server: ";
  if (file.path.empty()) {
    std::cout << "flags ok (no --config)";
  } else {
    std::cout << file.path << " ok: " << file.settings.size() << " setting(s), " << runs.size()
              << " run(s)";
    for (const NewRun& run : runs) {
      std::cout << (&run == &runs.front() ? ": " : ", ") << run.config.name();
    }
  }
  std::cout << "; data_dir " << options.data_dir << " (not opened)" << std::endl;
  return absl::OkStatus();
}

// Reads the config file again (SIGHUP) and applies its runs; on failure nothing changes.
absl::StatusOr<ConfigApplied> LoadAndApply(Coordinator& coordinator, const std::string& path) {
  ASSIGN_OR_RETURN(ConfigFile file, ReadConfigFile(path));
  return ApplyConfig(coordinator, file);
}

absl::Status Run(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "tokens") {
    return RunTokens(std::vector<std::string>(argv + 2, argv + argc));
  }
  if (argc >= 2 && std::string(argv[1]) == "health") {
    return RunHealthProbe(std::vector<std::string>(argv + 2, argv + argc));
  }
  if (argc >= 2 && std::string(argv[1]) == "restore") {
    return Restore(std::vector<std::string>(argv + 2, argv + argc));
  }
  ASSIGN_OR_RETURN(ParsedArgs args,
                   ParseArgs(std::vector<std::string>(argv + 1, argv + argc), ServerFlags()));
  if (args.Has("help")) {
    Usage(std::cout);
    return absl::OkStatus();
  }
  if (!args.positionals().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected argument '", args.positionals().front(), "' (see --help)"));
  }
  ConfigFile config_file;
  // Absolute, so runs it manages (Run.managed_by) stay its own whichever folder the server
  // is started from.
  const std::string config_path =
      args.Has("config")
          ? std::filesystem::absolute(args.Get("config")).lexically_normal().string()
          : "";
  if (!config_path.empty()) {
    ASSIGN_OR_RETURN(config_file, ReadConfigFile(config_path));
  }
  const Settings settings(args, config_file);
  ASSIGN_OR_RETURN(const ServerOptions options, OptionsFrom(settings));
  if (args.Has("check")) return CheckOnly(options, config_file);

  // Block the shutdown and reload signals in every thread; the main thread waits for them
  // below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorServer> server,
                   CoordinatorServer::Start(options));
  const std::string grpc_address = server->grpc_address();
  const std::string metrics_address = server->metrics_address();
  const std::string listen_address = server->grpc_listen_address();
  std::cout << "steadyeval-server: serving grpc=" << listen_address;
  if (listen_address != grpc_address) std::cout << " (connect via " << grpc_address << ")";
  std::cout << " metrics=" << metrics_address << " data_dir=" << options.data_dir
            << (options.tls.enabled()
                    ? (options.tls.client_ca.empty() ? " tls=on" : " tls=on mtls=on")
                    : " tls=off")
            << (options.tokens_file.empty() ? " tokens=off" : " tokens=on") << std::endl;
  if (options.tokens_file.empty() && !IsLoopbackListen(options.listen)) {
    std::cerr << "steadyeval-server: warning: no --tokens_file: anyone who reaches "
              << listen_address << " may register workers, report results and change runs\n";
  }
  if (!config_path.empty()) {
    // The file as read above, not read (with its task files) a second time.
    absl::StatusOr<ConfigApplied> applied = ApplyConfig(*server->coordinator(), config_file);
    if (!applied.ok()) {
      server->Shutdown(absl::Seconds(5));
      return applied.status();
    }
    std::cerr << "steadyeval-server: applied " << config_path << ": " << applied->Summary()
              << "\n";
  }
  if (settings.Has("ready_file")) {
    nlohmann::json ready = {{"grpc", grpc_address},
                            {"listen", listen_address},
                            {"metrics", metrics_address},
                            {"pid", static_cast<int>(getpid())}};
    RETURN_IF_ERROR(WriteFileAtomically(settings.Get("ready_file"), ready.dump() + "\n"));
  }

  int signal_number = 0;
  while (true) {
    sigwait(&signals, &signal_number);
    if (signal_number != SIGHUP) break;
    absl::Status reloaded = server->Reload();
    if (reloaded.ok()) {
      std::cerr << "steadyeval-server: SIGHUP: reloaded the tokens file and TLS files\n";
    } else {
      std::cerr << "steadyeval-server: SIGHUP: kept the previous configuration: "
                << reloaded.message() << "\n";
    }
    if (config_path.empty()) continue;
    absl::StatusOr<ConfigApplied> applied = LoadAndApply(*server->coordinator(), config_path);
    if (applied.ok()) {
      std::cerr << "steadyeval-server: SIGHUP: applied " << config_path << ": "
                << applied->Summary() << "\n";
    } else {
      std::cerr << "steadyeval-server: SIGHUP: refused " << config_path
                << ", the running config stays: " << applied.status().message() << "\n";
    }
  }
  std::cerr << "steadyeval-server: received signal " << signal_number << ", shutting down\n";
  server->Shutdown(absl::Seconds(5));
  return absl::OkStatus();
}

}  // namespace
}  // namespace steadyeval

int main(int argc, char** argv) {
  absl::Status status = steadyeval::Run(argc, argv);
  if (!status.ok()) {
    std::cerr << "steadyeval-server: " << status.message() << "\n";
    return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
