// The worker's Prometheus metrics (docs/metrics.md, "Worker"): the series every
// steadyeval-worker exports, each labelled `worker` = its --name.
//
// WorkerMetrics owns a registry of the counters and gauges the daemon updates as it runs
// jobs, and a DeviceMemoryCollector that reads the evaluation device's memory only when
// scraped. No libtorch: the daemon includes this.
//
// Thread-safety: every method may be called from any thread (prometheus-cpp metrics are
// atomic; the collector keeps no mutable state but a log-once flag).
#ifndef STEADYEVAL_WORKER_DAEMON_WORKER_METRICS_H_
#define STEADYEVAL_WORKER_DAEMON_WORKER_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "s3/s3_client.h"
#include "worker/cache/checkpoint_cache.h"
#include "worker/eval/eval_backend.h"

namespace steadyeval {

// The resident set of a process, as /proc/<pid>/status reports it.
struct ProcessMemory {
  uint64_t resident_bytes = 0;       // VmRSS
  uint64_t peak_resident_bytes = 0;  // VmHWM, the high-water mark of VmRSS
};

// Parses the text of /proc/<pid>/status: the `VmRSS:` and `VmHWM:` lines ("VmRSS:  1234 kB"),
// converted from kB (KiB, as the kernel means it) to bytes. NOT_FOUND when either line is
// missing (a kernel thread, or not Linux); INVALID_ARGUMENT when one is not "<digits> kB".
absl::StatusOr<ProcessMemory> ParseProcStatus(absl::string_view status_text);

// Reads a whole file: the OS boundary the collector goes through, so tests can inject one.
using ReadFileFn = std::function<absl::StatusOr<std::string>(const std::string& path)>;
// The real one. NOT_FOUND / PERMISSION_DENIED / UNAVAILABLE from errno.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// steadyeval_worker_device_memory_bytes{worker, device, kind=used|peak}, read at each
// scrape.
//
// Every device reports this process's resident set (used) and its high-water mark (peak)
// from /proc/self/status. That is the device's memory on `cpu`. On `cuda`/`cuda:K` the
// model lives in GPU memory, which this does not see: the CUDA caching allocator's figures
// (c10::cuda::CUDACachingAllocator::getDeviceStats: allocated_bytes current / peak) need a
// libtorch built with CUDA, and Debian's is CPU-only (it ships the header
// c10/cuda/CUDACachingAllocator.h but no libc10_cuda to link). The series then still carries
// the configured `device` label, with the process figures.
//
// A status file that cannot be read or parsed yields no series (logged once), not an error
// for the scrape.
class DeviceMemoryCollector : public prometheus::Collectable {
 public:
  DeviceMemoryCollector(std::string worker, std::string device, ReadFileFn read_file,
                        std::string status_path = "/proc/self/status");

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::string worker_;
  const std::string device_;
  const ReadFileFn read_file_;
  const std::string status_path_;
  mutable std::atomic<bool> logged_failure_{false};
};

struct WorkerMetricsOptions {
  std::string worker;         // the `worker` label: the worker's --name
  std::string device = "cpu"; // the `device` label of device_memory_bytes
  ReadFileFn read_file = ReadWholeFile;
  std::string proc_status_path = "/proc/self/status";
  uint64_t cache_limit_bytes = 0;  // steadyeval_worker_cache_limit_bytes (--cache_bytes)
};

// Also the checkpoint cache's and the S3 clients' observer: the cache_* series, conversions
// and S3 request errors.
class WorkerMetrics : public CacheObserver, public S3Observer {
 public:
  explicit WorkerMetrics(const WorkerMetricsOptions& options);

  // What an exposer serves: the registry of counters and gauges, and the device-memory
  // collector. Shared so an exposer may hold them past this object.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  std::shared_ptr<prometheus::Collectable> device_memory() const { return device_memory_; }
  // Both, as one scrape would see them (for tests and for serializing without an exposer).
  std::vector<prometheus::MetricFamily> Collect() const;

  // steadyeval_worker_busy.
  void SetBusy(bool busy);
  // A job's model was loaded: the load histogram and the bytes counter.
  void RecordLoad(const LoadStats& load);
  // Progress inside a job's evaluation, added as it happens so the totals move during long
  // jobs: examples and tokens evaluated, and evaluation time in nanoseconds.
  void AddExamples(uint64_t examples);
  void AddTokens(uint64_t tokens);
  void AddEvalNanos(int64_t nanos);
  // A job's evaluation ran to its end (every task evaluated) with these totals: sets the
  // per-second gauges to examples / seconds and tokens / seconds. Ignored when seconds <= 0
  // (no rate can be measured; the gauges keep the previous job's values).
  void RecordEvaluationRates(uint64_t examples, uint64_t tokens, double seconds);
  // steadyeval_worker_jobs_total{outcome="done"|"failed"}.
  void JobDone();
  void JobFailed();

  // CacheObserver: steadyeval_worker_cache_{bytes,limit_bytes,evictions_total,
  // fetched_bytes_total,hits_total,misses_total}, steadyeval_worker_conversions_total.
  void OnCacheBytes(uint64_t bytes, uint64_t limit_bytes) override;
  void OnHit() override;
  void OnMiss() override;
  void OnEviction(uint64_t bytes) override;
  void OnFetched(uint64_t bytes) override;
  void OnConversion(const char* result) override;
  // S3Observer: steadyeval_worker_s3_request_errors_total{op, kind} for failed attempts.
  void OnAttempt(const char* op, double seconds, S3ErrorKind error) override;

 private:
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  std::shared_ptr<DeviceMemoryCollector> device_memory_;
  prometheus::Counter* tokens_ = nullptr;
  prometheus::Counter* examples_ = nullptr;
  prometheus::Counter* load_bytes_ = nullptr;
  prometheus::Histogram* load_seconds_ = nullptr;
  prometheus::Counter* eval_seconds_ = nullptr;
  prometheus::Gauge* tokens_per_second_ = nullptr;
  prometheus::Gauge* examples_per_second_ = nullptr;
  prometheus::Counter* jobs_done_ = nullptr;
  prometheus::Counter* jobs_failed_ = nullptr;
  prometheus::Gauge* busy_ = nullptr;
  std::string worker_;
  prometheus::Gauge* cache_bytes_ = nullptr;
  prometheus::Gauge* cache_limit_bytes_ = nullptr;
  prometheus::Counter* cache_evictions_ = nullptr;
  prometheus::Counter* cache_fetched_bytes_ = nullptr;
  prometheus::Counter* cache_hits_ = nullptr;
  prometheus::Counter* cache_misses_ = nullptr;
  prometheus::Family<prometheus::Counter>* conversions_ = nullptr;
  prometheus::Family<prometheus::Counter>* s3_errors_ = nullptr;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_DAEMON_WORKER_METRICS_H_
