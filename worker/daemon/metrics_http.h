// The worker's /metrics endpoint: a minimal HTTP/1.0 server that answers `GET /metrics`
// with the Prometheus text format of its collectables, and 404 / 405 otherwise.
//
// Why not prometheus-cpp's Exposer (the coordinator uses it): its web server (civetweb)
// starts threads with a fixed 100 KiB stack, and glibc places every library's static TLS
// on each thread's stack; in a process with libtorch and OpenBLAS that TLS is about
// 106 KiB, so the Exposer cannot start its threads there (pthread_create: EINVAL).
//
// One thread serves one connection at a time (Prometheus scrapes a target sequentially);
// a client that stalls is dropped after a timeout. Thread-safe to destroy from any thread:
// the destructor stops and joins the serving thread.
#ifndef STEADYEVAL_WORKER_DAEMON_METRICS_HTTP_H_
#define STEADYEVAL_WORKER_DAEMON_METRICS_HTTP_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/collectable.h>

#include "absl/status/statusor.h"

namespace steadyeval {

class MetricsHttpServer {
 public:
  // Listens on `listen` ("HOST:PORT"; port 0 picks one). UNAVAILABLE naming the address
  // when it cannot bind; INVALID_ARGUMENT for an address without a port.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& listen, std::vector<std::shared_ptr<prometheus::Collectable>> collectables);
  ~MetricsHttpServer();

  int port() const { return port_; }

 private:
  MetricsHttpServer(int listen_fd, int port, int wake_fd_read, int wake_fd_write,
                    std::vector<std::shared_ptr<prometheus::Collectable>> collectables);
  void Serve();
  void Answer(int client_fd) const;

  const int listen_fd_;
  const int port_;
  const int wake_read_;   // becomes readable when the destructor asks Serve() to return
  const int wake_write_;
  const std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  std::thread thread_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_DAEMON_METRICS_HTTP_H_
