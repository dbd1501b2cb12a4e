#include "server/discovery/watcher.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "common/text.h"

namespace steadyeval {
namespace {

// Far beyond any real use; keeps the settle time in int64 nanoseconds.
constexpr double kMaxSettleSeconds = 1e9;

// The first difference between two fingerprints, for a pending reason.
std::string DescribeChange(const CheckpointFingerprint& before, const CheckpointFingerprint& after) {
  size_t i = 0, j = 0;
  while (i < before.size() || j < after.size()) {
    if (j == after.size() || (i < before.size() && before[i].name < after[j].name)) {
      return absl::StrCat(before[i].name, " disappeared");
    }
    if (i == before.size() || after[j].name < before[i].name) {
      return absl::StrCat(after[j].name, " appeared");
    }
    if (before[i].size != after[j].size) {
      return absl::StrCat(after[j].name, " went from ", before[i].size, " to ", after[j].size,
                          " bytes");
    }
    if (before[i].mtime_ns != after[j].mtime_ns || before[i].etag != after[j].etag) {
      return absl::StrCat(after[j].name, " was modified");
    }
    ++i;
    ++j;
  }
  return "no change";
}

// A reason with its digits blanked: a shard that keeps growing, or a settle clock that
// ticks, keeps one reason. Every complete candidate is "settling".
std::string ReasonKey(const std::string& reason, bool complete) {
  return complete ? "settling" : BlankDigits(reason);
}

// Completeness verdicts that describe the files themselves; anything else (a read error)
// is worth retrying even when the files look the same.
bool IsVerdict(const absl::Status& status) {
  return status.ok() || absl::IsFailedPrecondition(status) || absl::IsInvalidArgument(status);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointWatcher>> CheckpointWatcher::Create(
    const WatcherOptions& options, Clock* clock, std::unique_ptr<CheckpointSource> source) {
  if (clock == nullptr) return absl::InvalidArgumentError("checkpoint watcher needs a clock");
  if (!(options.settle_seconds >= 0 && options.settle_seconds <= kMaxSettleSeconds)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "settle_seconds is ", options.settle_seconds, "; it must be between 0 and ",
        kMaxSettleSeconds));
  }
  if (options.marker.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "marker '", options.marker, "' must be a file name inside the checkpoint folder, e.g. .complete"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<StepParser> parser, StepParser::Create(options.pattern));
  if (source == nullptr) {
    ASSIGN_OR_RETURN(source, FileSystemSource::Create(options.source, options.file_system));
  }
  return std::unique_ptr<CheckpointWatcher>(
      new CheckpointWatcher(options, clock, std::move(parser), std::move(source)));
}

CheckpointWatcher::CheckpointWatcher(WatcherOptions options, Clock* clock,
                                     std::unique_ptr<StepParser> parser,
                                     std::unique_ptr<CheckpointSource> source)
    : options_(std::move(options)),
      clock_(clock),
      parser_(std::move(parser)),
      source_(std::move(source)),
      completeness_(options_.marker, options_.convert.empty() ? CheckpointLayout::kHuggingFace
                                                              : CheckpointLayout::kConverted),
      settle_nanos_(static_cast<int64_t>(std::ceil(options_.settle_seconds * 1e9))) {}

absl::StatusOr<std::vector<AdmittedCheckpoint>> CheckpointWatcher::Poll() {
  const int64_t now = clock_->MonotonicNanos();
  absl::StatusOr<std::vector<SourceEntry>> listed = source_->List();
  if (options_.on_list) {
    options_.on_list((clock_->MonotonicNanos() - now) / 1e9, listed.status());
  }
  ASSIGN_OR_RETURN(std::vector<SourceEntry> entries, std::move(listed));

  std::map<uint64_t, std::vector<const SourceEntry*>> folders_by_step;
  for (const SourceEntry& entry : entries) {
    if (!entry.is_dir) continue;
    std::optional<uint64_t> step = parser_->Parse(entry.name);
    if (!step.has_value() || admitted_.count(*step) > 0) continue;
    folders_by_step[*step].push_back(&entry);
  }

  // The trackers beside the folders (a run with a converter), read at most once per poll and
  // only when some candidate's check needs them.
  std::optional<TrackerFiles> trackers;
  auto read_trackers = [&]() -> const TrackerFiles& {
    if (!trackers.has_value()) trackers = completeness_.ReadTrackers(*source_, &entries);
    return *trackers;
  };

  std::vector<AdmittedCheckpoint> admitted;
  std::map<uint64_t, Candidate> still_pending;  // steps no longer listed are forgotten
  for (const auto& [step, folders] : folders_by_step) {
    Candidate candidate;
    candidate.first_seen_nanos = now;
    if (auto it = candidates_.find(step); it != candidates_.end()) {
      candidate = std::move(it->second);
    }
    if (folders.size() > 1) {
      const int64_t first_seen = candidate.first_seen_nanos;
      candidate = Candidate();
      candidate.first_seen_nanos = first_seen;
      candidate.path = folders[0]->path;
      candidate.reason = absl::StrCat("folders ", folders[0]->name, " and ", folders[1]->name,
                                      " both name step ", step, "; remove or rename one");
      still_pending[step] = std::move(candidate);
      continue;
    }
    if (Observe(candidate, folders[0]->path, step, now, read_trackers)) {
      admitted.push_back({step, folders[0]->path});
      admitted_.insert(step);
    } else {
      still_pending[step] = std::move(candidate);
    }
  }
  candidates_ = std::move(still_pending);
  std::map<uint64_t, ReasonSince> reasons;
  const int64_t now_unix_ms = clock_->UnixMillis();
  for (const auto& [step, candidate] : candidates_) {
    ReasonSince since;
    since.key = ReasonKey(candidate.reason, candidate.complete);
    if (auto it = reasons_.find(step); it != reasons_.end() && it->second.key == since.key) {
      since.since_unix_ms = it->second.since_unix_ms;
    } else {
      since.since_unix_ms = now_unix_ms;
      since.changed = true;
    }
    reasons[step] = std::move(since);
  }
  reasons_ = std::move(reasons);
  std::reverse(admitted.begin(), admitted.end());  // map order was ascending
  return admitted;
}

bool CheckpointWatcher::Observe(Candidate& candidate, const std::string& path, uint64_t step,
                                int64_t now_nanos,
                                absl::FunctionRef<const TrackerFiles&()> trackers) {
  absl::StatusOr<CheckpointFingerprint> fingerprint = source_->Fingerprint(path);
  if (!fingerprint.ok()) {
    const int64_t first_seen = candidate.first_seen_nanos;
    candidate = Candidate();
    candidate.first_seen_nanos = first_seen;
    candidate.path = path;
    candidate.reason = absl::StrCat("cannot list its files: ", fingerprint.status().message());
    return false;
  }
  const bool first_look = !candidate.seen || candidate.path != path;
  if (first_look || *fingerprint != candidate.fingerprint) {
    const std::string change =
        first_look ? "" : DescribeChange(candidate.fingerprint, *fingerprint);
    candidate.seen = true;
    candidate.path = path;
    candidate.fingerprint = *std::move(fingerprint);
    candidate.unchanged_since_nanos = now_nanos;
    candidate.trackers = trackers();
    candidate.completeness =
        completeness_.Check(*source_, path, step, candidate.fingerprint, candidate.trackers);
    candidate.complete = candidate.completeness.ok();
    if (!candidate.completeness.ok()) {
      candidate.reason = std::string(candidate.completeness.message());
    } else if (first_look) {
      candidate.reason = "complete; waiting for the next poll to confirm its files are unchanged";
    } else {
      candidate.reason = absl::StrCat("complete, but ", change,
                                      " since the last poll; waiting for its files to settle");
    }
    return false;
  }

  // Same files as last time: the cached verdict still holds, unless it was a read error or a
  // negative one and the trackers it read (outside the fingerprint) have changed since.
  if (!IsVerdict(candidate.completeness) ||
      (!candidate.completeness.ok() && trackers() != candidate.trackers)) {
    candidate.trackers = trackers();
    candidate.completeness =
        completeness_.Check(*source_, path, step, candidate.fingerprint, candidate.trackers);
  }
  candidate.complete = candidate.completeness.ok();
  if (!candidate.completeness.ok()) {
    candidate.reason = std::string(candidate.completeness.message());
    return false;
  }
  const int64_t unchanged_nanos = now_nanos - candidate.unchanged_since_nanos;
  if (unchanged_nanos < settle_nanos_) {
    candidate.reason = absl::StrFormat(
        "complete; files unchanged for %.1fs of the %.1fs settle time", unchanged_nanos / 1e9,
        options_.settle_seconds);
    return false;
  }
  return true;
}

std::vector<PendingCheckpoint> CheckpointWatcher::Pending() const {
  std::vector<PendingCheckpoint> pending;
  pending.reserve(candidates_.size());
  for (const auto& [step, candidate] : candidates_) {
    PendingCheckpoint p{step, candidate.path, candidate.reason, candidate.first_seen_nanos};
    p.incomplete = !candidate.complete;
    if (candidate.complete) p.reason = absl::StrCat("settling (", candidate.reason, ")");
    if (auto it = reasons_.find(step); it != reasons_.end()) {
      p.reason_since_unix_ms = it->second.since_unix_ms;
      p.reason_changed = it->second.changed;
    }
    pending.push_back(std::move(p));
  }
  return pending;
}

void CheckpointWatcher::MarkAdmitted(uint64_t step) {
  admitted_.insert(step);
  candidates_.erase(step);
  reasons_.erase(step);
}

}  // namespace steadyeval
