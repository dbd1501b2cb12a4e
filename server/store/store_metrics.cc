#include "server/store/store_metrics.h"

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

std::vector<prometheus::MetricFamily> StoreMetrics::HealthFamilies(const Store::Health& health) {
  prometheus::MetricFamily healthy;
  healthy.name = "steadyeval_storage_healthy";
  healthy.help =
      "1 while the store accepts writes, 0 while it refuses them (disk full, below the free "
      "space reserve, or RocksDB stopped after a write error)";
  healthy.type = prometheus::MetricType::Gauge;
  healthy.metric.push_back(GaugeSample(health.healthy ? 1 : 0));

  prometheus::MetricFamily free;
  free.name = "steadyeval_storage_free_bytes";
  free.help = "Free space of the data dir's filesystem for unprivileged writers, at the last check";
  free.type = prometheus::MetricType::Gauge;
  free.metric.push_back(GaugeSample(static_cast<double>(health.free_bytes)));

  prometheus::MetricFamily reserve;
  reserve.name = "steadyeval_storage_reserve_bytes";
  reserve.help = "Writes are refused when they would leave less free space than this (0: off)";
  reserve.type = prometheus::MetricType::Gauge;
  reserve.metric.push_back(GaugeSample(static_cast<double>(health.reserve_bytes)));

  prometheus::MetricFamily refused;
  refused.name = "steadyeval_storage_writes_refused_total";
  refused.help =
      "Writes refused by the store, by reason: reserve (free space below the reserve), "
      "sst_limit (table files at --storage_max_sst_bytes), no_space (RocksDB hit ENOSPC), "
      "write_error (any other RocksDB write error, or not resumed yet)";
  refused.type = prometheus::MetricType::Counter;
  for (int r = 0; r < static_cast<int>(Store::Refusal::kNumRefusals); ++r) {
    prometheus::ClientMetric sample;
    sample.label = {{"reason", Store::RefusalName(static_cast<Store::Refusal>(r))}};
    sample.counter.value = static_cast<double>(health.refused[r]);
    refused.metric.push_back(std::move(sample));
  }

  std::vector<prometheus::MetricFamily> families;
  families.push_back(std::move(healthy));
  families.push_back(std::move(free));
  families.push_back(std::move(reserve));
  families.push_back(std::move(refused));
  return families;
}

std::vector<prometheus::MetricFamily> StoreMetrics::Collect() const {
  std::vector<prometheus::MetricFamily> families = HealthFamilies(store_->GetHealth());
  absl::StatusOr<Store::Stats> stats = store_->GetStats();
  if (stats.ok()) {
    for (prometheus::MetricFamily& f : Families(*stats)) families.push_back(std::move(f));
  }
  return families;
}

}  // namespace steadyeval
