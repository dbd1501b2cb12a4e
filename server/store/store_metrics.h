// The steadyeval_rocksdb_* Prometheus metrics (docs/metrics.md): a prometheus::Collectable
// that reads Store::GetStats() at scrape time, so the figures are current without a refresh
// thread.
#ifndef STEADYEVAL_SERVER_STORE_STORE_METRICS_H_
#define STEADYEVAL_SERVER_STORE_STORE_METRICS_H_

#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "server/store/store.h"

namespace steadyeval {

class StoreMetrics : public prometheus::Collectable {
 public:
  // `store` is not owned and must outlive every Collect() call: register this on an
  // Exposer that is destroyed (or from which it is removed) before the store closes.
  explicit StoreMetrics(const Store* store) : store_(store) {}

  // steadyeval_rocksdb_size_bytes{kind="sst"|"memtable"|"live_data"},
  // steadyeval_rocksdb_write_stall_seconds_total and steadyeval_rocksdb_write_stalled
  // (left out when the store cannot report its figures; the scrape goes on without them),
  // and the storage health: steadyeval_storage_healthy, steadyeval_storage_free_bytes,
  // steadyeval_storage_reserve_bytes and steadyeval_storage_writes_refused_total{reason}.
  // Thread-safe.
  std::vector<prometheus::MetricFamily> Collect() const override;

  // The families for `stats` and `health` (what Collect returns; exposed for tests).
  static std::vector<prometheus::MetricFamily> Families(const Store::Stats& stats);
  static std::vector<prometheus::MetricFamily> HealthFamilies(const Store::Health& health);

 private:
  const Store* store_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_STORE_STORE_METRICS_H_
