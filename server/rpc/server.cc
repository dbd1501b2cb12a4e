#include "server/rpc/server.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "server/discovery/source_factory.h"

namespace steadyeval {
namespace {

// "HOST:PORT" -> HOST ("[::]:1" -> "[::]").
std::string HostOf(const std::string& address) {
  size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

std::string ConnectableHost(const std::string& address) {
  std::string host = HostOf(address);
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::" || host == "*") {
    return "127.0.0.1";
  }
  return host;
}

// Destroys the exposer promptly. Its civetweb accept loop sees the stop request only when
// its poll() returns, which an idle one does every 2 s (civetweb 1.15's socket timeout
// quantum): that was most of the time SIGTERM took. A connection to its port wakes the
// poll at once, so one is made every few milliseconds until the destructor returns.
void StopExposer(std::unique_ptr<prometheus::Exposer>& exposer, const std::string& host,
                 int port) {
  if (!exposer) return;
  std::atomic<bool> stopped{false};
  std::thread waker([&] {
    addrinfo hints = {};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* addresses = nullptr;
    std::string bare = host;
    if (bare.size() > 2 && bare.front() == '[' && bare.back() == ']') {
      bare = bare.substr(1, bare.size() - 2);
    }
    if (port <= 0 ||
        getaddrinfo(bare.c_str(), std::to_string(port).c_str(), &hints, &addresses) != 0) {
      return;  // no shortcut: the destructor takes its time
    }
    while (!stopped.load()) {
      const int fd = socket(addresses->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd >= 0) {
        (void)connect(fd, addresses->ai_addr, addresses->ai_addrlen);
        close(fd);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    freeaddrinfo(addresses);
  });
  exposer.reset();
  stopped = true;
  waker.join();
}

}  // namespace

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    ServerOptions options) {
  std::unique_ptr<CoordinatorServer> s(new CoordinatorServer);
  if (options.clock == nullptr) options.clock = Clock::Real();
  s->source_metrics_ = std::make_shared<SourceMetrics>();
  if (!options.discovery) {
    RunSourceOptions sources;
    sources.clock = options.clock;
    sources.s3_observer = s->source_metrics_.get();
    sources.default_s3_region = options.coordinator.default_s3_region;
    options.discovery =
        WatcherDiscoveryFactory(options.clock, std::make_shared<RunSourceFactory>(sources),
                                s->source_metrics_.get());
  }
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("no data directory given (pass --data_dir DIR)");
  }
  s->options_ = options;
  RETURN_IF_ERROR(CheckTlsFiles(options.tls));
  if (!options.tls.enabled() && !options.insecure && !IsLoopbackListen(options.listen)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing to serve plaintext gRPC on ", options.listen,
        ", which is not a loopback address: give --tls_cert and --tls_key, or --insecure on a "
        "network you trust"));
  }
  ASSIGN_OR_RETURN(s->authenticator_, Authenticator::Create(options.tokens_file));
  if (options.tls.enabled()) {
    RETURN_IF_ERROR(InstallTlsFiles(options.tls, s->TlsWatchDir()));
  }
  ASSIGN_OR_RETURN(s->store_, Store::Open(options.data_dir, options.store));
  ASSIGN_OR_RETURN(s->coordinator_, Coordinator::Create(s->store_.get(), options.clock,
                                                        options.discovery, options.coordinator));

  s->access_ = std::make_unique<AccessControl>(s->authenticator_.get(),
                                              *s->coordinator_->metrics()->registry());
  s->rpc_metrics_ =
      std::make_unique<RpcMetrics>(s->coordinator_->metrics()->registry(), options.clock);
  s->store_metrics_ = std::make_shared<StoreMetrics>(s->store_.get());

  if (!options.metrics_listen.empty()) {
    try {
      s->exposer_ = std::make_unique<prometheus::Exposer>(options.metrics_listen);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("cannot serve metrics on ",
                                                 options.metrics_listen, ": ", e.what(),
                                                 " (is the port in use?)"));
    }
    s->exposer_->RegisterCollectable(s->coordinator_->metrics()->registry());
    s->exposer_->RegisterCollectable(s->store_metrics_);
    s->exposer_->RegisterCollectable(s->source_metrics_->registry());
    std::vector<int> ports = s->exposer_->GetListeningPorts();
    s->metrics_port_ = ports.empty() ? 0 : ports.front();
  }

  grpc::EnableDefaultHealthCheckService(true);
  s->worker_service_ =
      std::make_unique<WorkerServiceImpl>(s->coordinator_.get(), s->access_.get());
  s->eval_service_ = std::make_unique<EvalServiceImpl>(s->coordinator_.get(), s->access_.get());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen,
                           options.tls.enabled()
                               ? WatchedTlsCredentials(s->TlsWatchDir(),
                                                       !options.tls.client_ca.empty())
                               : grpc::InsecureServerCredentials(),
                           &s->grpc_port_);
  builder.RegisterService(s->worker_service_.get());
  builder.RegisterService(s->eval_service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(s->rpc_metrics_->NewInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->grpc_port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve gRPC on ", options.listen,
                                               " (is the port in use, or the address wrong?)"));
  }
  // Health follows the store: NOT_SERVING while it refuses writes.
  grpc::HealthCheckServiceInterface* health = s->server_->GetHealthCheckService();
  if (health != nullptr) {
    s->store_->SetHealthObserver(
        [health](bool healthy, const std::string&) { health->SetServingStatus(healthy); });
    s->store_->RefreshHealth();
    health->SetServingStatus(s->store_->GetHealth().healthy);
  }
  if (options.start_background) s->coordinator_->Start();
  return s;
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

std::string CoordinatorServer::TlsWatchDir() const { return options_.data_dir + "/tls"; }

absl::Status CoordinatorServer::Reload() {
  absl::Status status = authenticator_->Reload();
  if (options_.tls.enabled()) {
    absl::Status tls = InstallTlsFiles(options_.tls, TlsWatchDir());
    if (status.ok()) status = tls;
  }
  return status;
}

void CoordinatorServer::Shutdown(absl::Duration deadline) {
  if (shut_down_) return;
  shut_down_ = true;
  if (store_) store_->SetHealthObserver(nullptr);  // before the health service goes
  if (coordinator_) coordinator_->Stop();  // wakes long polls, stops polling loops
  if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now() + deadline));
  // No scrape reads store_metrics_ after this.
  StopExposer(exposer_, ConnectableHost(options_.metrics_listen), metrics_port_);
  server_.reset();   // no interceptor records into rpc_metrics_ after this
  rpc_metrics_.reset();
  access_.reset();
  store_metrics_.reset();
  coordinator_.reset();
  store_.reset();
}

std::string CoordinatorServer::grpc_listen_address() const {
  return absl::StrCat(HostOf(options_.listen), ":", grpc_port_);
}

std::string CoordinatorServer::grpc_address() const {
  return absl::StrCat(ConnectableHost(options_.listen), ":", grpc_port_);
}

std::string CoordinatorServer::metrics_address() const {
  if (!exposer_) return "";
  return absl::StrCat(ConnectableHost(options_.metrics_listen), ":", metrics_port_);
}

}  // namespace steadyeval
