// A running coordinator: store + coordinator + gRPC server + Prometheus exposer, wired
// together. The exposer serves the coordinator's registry (with the gRPC metrics of
// RpcMetrics) and the store's RocksDB figures (StoreMetrics, read at scrape time). The
// gRPC health service (grpc.health.v1) answers NOT_SERVING while the store refuses writes
// (Store::GetHealth) and SERVING otherwise. Used by steadyeval-server's main and by
// in-process tests.
#ifndef STEADYEVAL_SERVER_RPC_SERVER_H_
#define STEADYEVAL_SERVER_RPC_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "prometheus/exposer.h"
#include "server/rpc/access_control.h"
#include "server/rpc/auth.h"
#include "server/coordinator.h"
#include "server/coordinator_metrics.h"
#include "server/discovery/discovery.h"
#include "server/rpc/rpc_metrics.h"
#include "server/rpc/services.h"
#include "server/store/store.h"
#include "server/store/store_metrics.h"
#include "server/rpc/tls.h"

namespace steadyeval {

struct ServerOptions {
  std::string data_dir;                        // RocksDB folder (created if missing)
  std::string listen = "127.0.0.1:0";          // gRPC HOST:PORT; port 0 picks one
  std::string metrics_listen = "127.0.0.1:0";  // Prometheus HOST:PORT; empty: no exposer
  StoreOptions store;                          // free-space reserve, SST limit, test FS
  CoordinatorOptions coordinator;
  Clock* clock = nullptr;         // null: the real clock
  // Null: WatcherDiscoveryFactory over a RunSourceFactory (folders and s3:// prefixes,
  // credentials from this process's environment) reporting to the server's SourceMetrics.
  DiscoveryFactory discovery;
  bool start_background = true;   // polling loops and reaper (tests may drive them)
  int max_message_bytes = 64 << 20;
  // Security (issue 16). Without TLS a listen address that is not loopback is refused
  // unless `insecure`. Without a tokens file every caller may call everything.
  TlsFiles tls;
  std::string tokens_file;
  bool insecure = false;
};

class CoordinatorServer {
 public:
  // Opens the store, loads state, starts serving. Errors: the store's (schema version,
  // lock held by another server), UNAVAILABLE when a port cannot be bound.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(ServerOptions options);
  ~CoordinatorServer();

  // SIGHUP: re-reads the tokens file and the TLS files. A file that does not parse is
  // refused (the error is returned) and the previous one stays in force.
  absl::Status Reload();

  // Stops polling loops and long polls, shuts the gRPC server down (in-flight calls get
  // until `deadline`), closes the store. Idempotent.
  void Shutdown(absl::Duration deadline = absl::Seconds(5));

  // The address bound, as given ("0.0.0.0:PORT" stays so), with the port picked.
  std::string grpc_listen_address() const;
  // Connectable addresses ("127.0.0.1:PORT" for a wildcard host).
  std::string grpc_address() const;
  std::string metrics_address() const;  // empty without an exposer
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  Coordinator* coordinator() { return coordinator_.get(); }
  Store* store() { return store_.get(); }
  grpc::Server* grpc_server() { return server_.get(); }

 private:
  CoordinatorServer() = default;
  std::string TlsWatchDir() const;  // <data_dir>/tls: the copies gRPC reads

  ServerOptions options_;
  std::unique_ptr<Store> store_;
  // Fed by the production discovery's S3 clients and watchers (while the coordinator
  // polls: it outlives coordinator_); registered on exposer_.
  std::shared_ptr<SourceMetrics> source_metrics_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<Authenticator> authenticator_;
  std::unique_ptr<AccessControl> access_;        // outlives the services
  std::unique_ptr<RpcMetrics> rpc_metrics_;      // outlives server_ (its interceptors)
  std::shared_ptr<StoreMetrics> store_metrics_;  // registered on exposer_; reads store_
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<EvalServiceImpl> eval_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  bool shut_down_ = false;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_RPC_SERVER_H_
