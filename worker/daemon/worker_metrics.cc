#include "worker/daemon/worker_metrics.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status.h"

namespace steadyeval {

namespace {

// "  1234 kB" → 1234 * 1024.
absl::StatusOr<uint64_t> ParseKilobytes(absl::string_view field, absl::string_view value) {
  value = absl::StripAsciiWhitespace(value);
  uint64_t kb = 0;
  if (!absl::ConsumeSuffix(&value, "kB") ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(value), &kb)) {
    return absl::InvalidArgumentError(
        absl::StrCat("/proc status field ", field, ": expected '<digits> kB'"));
  }
  return kb * 1024;
}

}  // namespace

absl::StatusOr<ProcessMemory> ParseProcStatus(absl::string_view status_text) {
  std::optional<uint64_t> rss;
  std::optional<uint64_t> hwm;
  for (absl::string_view line : absl::StrSplit(status_text, '\n')) {
    absl::string_view value = line;
    if (absl::ConsumePrefix(&value, "VmRSS:")) {
      ASSIGN_OR_RETURN(rss, ParseKilobytes("VmRSS", value));
    } else if (absl::ConsumePrefix(&value, "VmHWM:")) {
      ASSIGN_OR_RETURN(hwm, ParseKilobytes("VmHWM", value));
    }
  }
  if (!rss.has_value() || !hwm.has_value()) {
    return absl::NotFoundError(absl::StrCat(
        "/proc status has no ", rss.has_value() ? "" : "VmRSS ", hwm.has_value() ? "" : "VmHWM ",
        "line (not Linux, or a kernel thread?)"));
  }
  return ProcessMemory{*rss, *hwm};
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int err = errno;
    const std::string why = absl::StrCat(path, ": ", strerror(err));
    if (err == ENOENT) return absl::NotFoundError(why);
    if (err == EACCES) return absl::PermissionDeniedError(why);
    return absl::UnavailableError(why);
  }
  // /proc files report size 0: read until EOF rather than by size.
  std::string text;
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  const bool failed = ferror(f) != 0;
  fclose(f);
  if (failed) return absl::UnavailableError(absl::StrCat(path, ": read error"));
  return text;
}

DeviceMemoryCollector::DeviceMemoryCollector(std::string worker, std::string device,
                                             ReadFileFn read_file, std::string status_path)
    : worker_(std::move(worker)),
      device_(std::move(device)),
      read_file_(std::move(read_file)),
      status_path_(std::move(status_path)) {}

std::vector<prometheus::MetricFamily> DeviceMemoryCollector::Collect() const {
  absl::StatusOr<ProcessMemory> memory = [&]() -> absl::StatusOr<ProcessMemory> {
    ASSIGN_OR_RETURN(const std::string text, read_file_(status_path_));
    return ParseProcStatus(text);
  }();
  if (!memory.ok()) {
    if (!logged_failure_.exchange(true)) {
      fprintf(stderr, "steadyeval-worker: steadyeval_worker_device_memory_bytes not exported: %s\n",
              std::string(memory.status().message()).c_str());
    }
    return {};
  }
  prometheus::MetricFamily family;
  family.name = "steadyeval_worker_device_memory_bytes";
  family.help = "Memory of the evaluation device, read at scrape time (the process's resident set "
                "and its high-water mark)";
  family.type = prometheus::MetricType::Gauge;
  for (const auto& [kind, bytes] : {std::pair<const char*, uint64_t>{"used", memory->resident_bytes},
                                    std::pair<const char*, uint64_t>{"peak", memory->peak_resident_bytes}}) {
    prometheus::ClientMetric metric;
    metric.label = {{"device", device_}, {"kind", kind}, {"worker", worker_}};
    metric.gauge.value = static_cast<double>(bytes);
    family.metric.push_back(std::move(metric));
  }
  return {std::move(family)};
}

WorkerMetrics::WorkerMetrics(const WorkerMetricsOptions& options)
    : device_memory_(std::make_shared<DeviceMemoryCollector>(
          options.worker, options.device, options.read_file, options.proc_status_path)) {
  const prometheus::Labels labels = {{"worker", options.worker}};
  tokens_ = &prometheus::BuildCounter().Name("steadyeval_worker_tokens_total")
                 .Help("Tokens run through the model (shared prefixes once, plus generated tokens)").Register(*registry_).Add(labels);
  examples_ = &prometheus::BuildCounter().Name("steadyeval_worker_examples_total")
                   .Help("Examples evaluated").Register(*registry_).Add(labels);
  load_bytes_ = &prometheus::BuildCounter().Name("steadyeval_worker_checkpoint_load_bytes_total")
                     .Help("Checkpoint bytes read").Register(*registry_).Add(labels);
  load_seconds_ = &prometheus::BuildHistogram().Name("steadyeval_worker_checkpoint_load_seconds")
                       .Help("Time to load one job's model (one checkpoint, or a window average)")
                       .Register(*registry_)
                       .Add(labels, prometheus::Histogram::BucketBoundaries{0.01, 0.1, 0.5, 1, 5, 15, 60, 300});
  eval_seconds_ = &prometheus::BuildCounter().Name("steadyeval_worker_eval_seconds_total")
                       .Help("Time spent evaluating (model loaded, tasks running)")
                       .Register(*registry_).Add(labels);
  tokens_per_second_ = &prometheus::BuildGauge().Name("steadyeval_worker_tokens_per_second")
                            .Help("Tokens / evaluation seconds of the last finished job")
                            .Register(*registry_).Add(labels);
  examples_per_second_ = &prometheus::BuildGauge().Name("steadyeval_worker_examples_per_second")
                              .Help("Examples / evaluation seconds of the last finished job")
                              .Register(*registry_).Add(labels);
  auto& jobs = prometheus::BuildCounter().Name("steadyeval_worker_jobs_total")
                   .Help("Jobs this worker finished, by outcome").Register(*registry_);
  jobs_done_ = &jobs.Add({{"worker", options.worker}, {"outcome", "done"}});
  jobs_failed_ = &jobs.Add({{"worker", options.worker}, {"outcome", "failed"}});
  busy_ = &prometheus::BuildGauge().Name("steadyeval_worker_busy")
               .Help("1 while holding a job").Register(*registry_).Add(labels);
  worker_ = options.worker;
  cache_bytes_ = &prometheus::BuildGauge().Name("steadyeval_worker_cache_bytes")
                      .Help("Bytes in the checkpoint cache: entries plus space reserved for fetches and conversions in progress")
                      .Register(*registry_).Add(labels);
  cache_limit_bytes_ = &prometheus::BuildGauge().Name("steadyeval_worker_cache_limit_bytes")
                            .Help("The checkpoint cache's byte limit (--cache_bytes)")
                            .Register(*registry_).Add(labels);
  cache_limit_bytes_->Set(static_cast<double>(options.cache_limit_bytes));
  cache_evictions_ = &prometheus::BuildCounter().Name("steadyeval_worker_cache_evictions_total")
                          .Help("Checkpoint cache entries evicted to make room")
                          .Register(*registry_).Add(labels);
  cache_fetched_bytes_ = &prometheus::BuildCounter().Name("steadyeval_worker_cache_fetched_bytes_total")
                              .Help("Bytes fetched into the checkpoint cache (e.g. from a bucket)")
                              .Register(*registry_).Add(labels);
  cache_hits_ = &prometheus::BuildCounter().Name("steadyeval_worker_cache_hits_total")
                     .Help("Checkpoints (fetched or converted) found in the cache")
                     .Register(*registry_).Add(labels);
  cache_misses_ = &prometheus::BuildCounter().Name("steadyeval_worker_cache_misses_total")
                       .Help("Checkpoints (fetched or converted) not in the cache, so fetched or converted")
                       .Register(*registry_).Add(labels);
  conversions_ = &prometheus::BuildCounter().Name("steadyeval_worker_conversions_total")
                      .Help("Converter runs, by result").Register(*registry_);
  for (const char* result : {"ok", "failed", "timeout"}) {
    conversions_->Add({{"worker", worker_}, {"result", result}});
  }
  s3_errors_ = &prometheus::BuildCounter().Name("steadyeval_worker_s3_request_errors_total")
                    .Help("Failed S3 request attempts (retries included), by operation and kind")
                    .Register(*registry_);
}

std::vector<prometheus::MetricFamily> WorkerMetrics::Collect() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (prometheus::MetricFamily& f : device_memory_->Collect()) families.push_back(std::move(f));
  return families;
}

void WorkerMetrics::SetBusy(bool busy) { busy_->Set(busy ? 1 : 0); }

void WorkerMetrics::RecordLoad(const LoadStats& load) {
  load_seconds_->Observe(load.seconds);
  load_bytes_->Increment(static_cast<double>(load.bytes));
}

void WorkerMetrics::AddExamples(uint64_t examples) { examples_->Increment(static_cast<double>(examples)); }
void WorkerMetrics::AddTokens(uint64_t tokens) { tokens_->Increment(static_cast<double>(tokens)); }
void WorkerMetrics::AddEvalNanos(int64_t nanos) {
  if (nanos > 0) eval_seconds_->Increment(static_cast<double>(nanos) / 1e9);
}

void WorkerMetrics::RecordEvaluationRates(uint64_t examples, uint64_t tokens, double seconds) {
  if (!(seconds > 0)) return;
  examples_per_second_->Set(static_cast<double>(examples) / seconds);
  tokens_per_second_->Set(static_cast<double>(tokens) / seconds);
}

void WorkerMetrics::JobDone() { jobs_done_->Increment(); }
void WorkerMetrics::JobFailed() { jobs_failed_->Increment(); }

void WorkerMetrics::OnCacheBytes(uint64_t bytes, uint64_t limit_bytes) {
  cache_bytes_->Set(static_cast<double>(bytes));
  cache_limit_bytes_->Set(static_cast<double>(limit_bytes));
}
void WorkerMetrics::OnHit() { cache_hits_->Increment(); }
void WorkerMetrics::OnMiss() { cache_misses_->Increment(); }
void WorkerMetrics::OnEviction(uint64_t /*bytes*/) { cache_evictions_->Increment(); }
void WorkerMetrics::OnFetched(uint64_t bytes) { cache_fetched_bytes_->Increment(static_cast<double>(bytes)); }
void WorkerMetrics::OnConversion(const char* result) {
  conversions_->Add({{"worker", worker_}, {"result", result}}).Increment();
}
void WorkerMetrics::OnAttempt(const char* op, double /*seconds*/, S3ErrorKind error) {
  if (error == S3ErrorKind::kNone) return;
  s3_errors_->Add({{"worker", worker_}, {"op", op}, {"kind", S3ErrorKindName(error)}}).Increment();
}

}  // namespace steadyeval
