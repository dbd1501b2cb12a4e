#include "server/store_metrics.h"

#include <string>
#include <utility>

#include "prometheus/client_metric.h"
#include "prometheus/metric_type.h"

namespace steadyeval {
namespace {

prometheus::ClientMetric GaugeSample(double value,
                                     std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  metric.gauge.value = value;
  return metric;
}

}  // namespace

std::vector<prometheus::MetricFamily> StoreMetrics::Families(const Store::Stats& stats) {
  prometheus::MetricFamily size;
  size.name = "steadyeval_rocksdb_size_bytes";
  size.help =
      "RocksDB's total-sst-files-size (sst), cur-size-all-mem-tables (memtable) and "
      "estimate-live-data-size (live_data), summed over column families";
  size.type = prometheus::MetricType::Gauge;
  size.metric.push_back(GaugeSample(static_cast<double>(stats.sst_bytes), {{"kind", "sst"}}));
  size.metric.push_back(
      GaugeSample(static_cast<double>(stats.memtable_bytes), {{"kind", "memtable"}}));
  size.metric.push_back(
      GaugeSample(static_cast<double>(stats.live_data_bytes), {{"kind", "live_data"}}));

  prometheus::MetricFamily stall_seconds;
  stall_seconds.name = "steadyeval_rocksdb_write_stall_seconds_total";
  stall_seconds.help = "Time writes spent stalled or stopped by RocksDB (ticker STALL_MICROS)";
  stall_seconds.type = prometheus::MetricType::Counter;
  prometheus::ClientMetric stall_sample;
  stall_sample.counter.value = static_cast<double>(stats.stall_micros) / 1e6;
  stall_seconds.metric.push_back(std::move(stall_sample));

  prometheus::MetricFamily stalled;
  stalled.name = "steadyeval_rocksdb_write_stalled";
  stalled.help = "1 while RocksDB delays or stops writes, else 0";
  stalled.type = prometheus::MetricType::Gauge;
  stalled.metric.push_back(GaugeSample(stats.write_stalled ? 1 : 0));

  std::vector<prometheus::MetricFamily> families;
  families.push_back(std::move(size));
  families.push_back(std::move(stall_seconds));
  families.push_back(std::move(stalled));
  return families;
}

std::vector<prometheus::MetricFamily> StoreMetrics::Collect() const {
  absl::StatusOr<Store::Stats> stats = store_->GetStats();
  if (!stats.ok()) return {};
  return Families(*stats);
}

}  // namespace steadyeval
