#include "server/jobs/worker_registry.h"

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"

namespace steadyeval {
namespace {

absl::Status NotRegistered(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("worker ", id, " is not registered (register again)"));
}

}  // namespace

void WorkerRegistry::Register(const std::string& id, const std::string& name,
                              const std::string& device) {
  absl::MutexLock lock(&mu_);
  Entry& w = workers_[id];
  w.info.set_id(id);
  w.info.set_name(name);
  w.info.set_device(device);
  w.last_seen_nanos = clock_->MonotonicNanos();
}

absl::Status WorkerRegistry::Touch(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  if (it == workers_.end()) return NotRegistered(id);
  it->second.last_seen_nanos = clock_->MonotonicNanos();
  return absl::OkStatus();
}

absl::Status WorkerRegistry::BeginPoll(const std::string& id, std::vector<HeldWindow> window_sums) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  if (it == workers_.end()) return NotRegistered(id);
  it->second.last_seen_nanos = clock_->MonotonicNanos();
  it->second.window_sums = std::move(window_sums);
  ++it->second.polling;
  return absl::OkStatus();
}

void WorkerRegistry::EndPoll(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  if (it != workers_.end()) --it->second.polling;
}

LeaseAffinity WorkerRegistry::AffinityFor(
    const std::string& id, const std::map<std::string, uint64_t>& leased_by_worker) const {
  const int64_t now = clock_->MonotonicNanos();
  const int64_t ttl = lease_ttl_ms_ * 1'000'000;
  LeaseAffinity affinity;
  absl::MutexLock lock(&mu_);
  std::set<std::pair<std::string, uint32_t>> own;
  if (auto it = workers_.find(id); it != workers_.end()) {
    affinity.held = it->second.window_sums;
    for (const HeldWindow& h : affinity.held) own.emplace(h.run, h.window);
  }
  for (const auto& [other, w] : workers_) {
    if (other == id || w.window_sums.empty() || leased_by_worker.count(other)) continue;  // busy
    const bool idle_polling = w.polling > 0 || now - w.last_seen_nanos <= ttl;
    if (!idle_polling) continue;  // lost, or gone quiet: others may take its windows
    for (const HeldWindow& h : w.window_sums) {
      if (!own.count({h.run, h.window})) affinity.reserved.emplace(h.run, h.window);
    }
  }
  return affinity;
}

v1::ListWorkersResponse WorkerRegistry::List(
    const std::map<std::string, uint64_t>& leased_by_worker) const {
  const int64_t now = clock_->MonotonicNanos();
  const int64_t lost_after = 3 * lease_ttl_ms_ * 1'000'000;
  v1::ListWorkersResponse response;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, w] : workers_) {
    v1::WorkerInfo info = w.info;
    auto job = leased_by_worker.find(id);
    info.set_current_job(job == leased_by_worker.end() ? 0 : job->second);
    info.set_last_seen_seconds_ago((now - w.last_seen_nanos) / 1e9);
    if (now - w.last_seen_nanos > lost_after) {
      info.set_state(v1::WORKER_LOST);
    } else {
      info.set_state(job == leased_by_worker.end() ? v1::WORKER_IDLE : v1::WORKER_BUSY);
    }
    *response.add_workers() = std::move(info);
  }
  return response;
}

}  // namespace steadyeval
