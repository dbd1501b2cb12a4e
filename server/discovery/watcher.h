// CheckpointWatcher: turns what a CheckpointSource lists into admitted checkpoints
// (DESIGN §4). Polling-based; the coordinator calls Poll() on its own schedule.
//
// An entry becomes a checkpoint candidate when it is a folder whose whole name parses as a
// step (common/steps.h; names like step_000100.tmp are ignored). A candidate is admitted
// once, when both:
//   - complete: CompletenessCheck passes (config, weights, safetensors headers, marker; or,
//     for a run with a converter, the training framework's rules: DCP .metadata, the
//     Megatron or DeepSpeed tracker file beside the folders naming this step or later);
//   - quiescent: its fingerprint (file names, sizes, mtimes, ETags) is unchanged between two polls
//     at least settle_seconds apart on the Clock's monotonic time. A candidate therefore
//     always needs at least two polls, even with settle_seconds = 0.
// Anything else stays pending, with a human-readable reason, and is re-checked on the next
// poll when its files changed or its check could not read them (for a run with a converter,
// an incomplete candidate is also re-checked when the trackers beside the folders changed;
// they are read at most once per poll, only when the listing shows them). A complete
// candidate's reason starts with "settling". Each pending step also
// carries since when its reason holds (the first poll that saw it; reasons that differ
// only in numbers, such as a shard's growing size or the settle clock, count as one) and
// whether the last poll saw it change. Steps admitted once (by Poll or MarkAdmitted) are never returned again.
// Two folders whose names parse to the same step are both held back as ambiguous.
//
// Thread-compatible: one thread (the coordinator's poll loop) calls every method, or the
// caller serialises them. The Clock and the source must outlive / are owned by it.
#ifndef STEADYEVAL_SERVER_DISCOVERY_WATCHER_H_
#define STEADYEVAL_SERVER_DISCOVERY_WATCHER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/file_system.h"
#include "common/steps.h"
#include "server/discovery/checkpoint_source.h"
#include "server/discovery/completeness.h"

namespace steadyeval {

struct WatcherOptions {
  std::string source;   // folder or file:/// URL; used when Create gets no source
  std::string pattern;  // step regex with one capture group; empty: the defaults
  std::string marker;   // file required in a checkpoint folder; empty: none
  double settle_seconds = 0;
  // Where `source` is read when Create gets no source. Not owned; must outlive the watcher.
  FileSystem* file_system = FileSystem::Local();
  // Called after every listing of the source's root (one per Poll) with how long it took
  // on the Clock's monotonic time and how it ended; may be empty. For metrics.
  std::function<void(double seconds, const absl::Status& status)> on_list = nullptr;
  // The run's converter (RunConfig.convert). Empty: checkpoints are read natively (Hugging
  // Face layout); otherwise they are in a training framework's layout, and the
  // completeness rules are CheckpointLayout::kConverted's (completeness.h).
  std::string convert = "";
};

struct AdmittedCheckpoint {
  uint64_t step;
  std::string path;
};

// A checkpoint seen but not (yet) admitted, and why.
struct PendingCheckpoint {
  uint64_t step;
  std::string path;
  std::string reason;
  int64_t first_seen_nanos;  // Clock::MonotonicNanos() of the first poll that listed it
  bool incomplete = true;    // false: complete, settling
  int64_t reason_since_unix_ms = 0;  // Clock::UnixMillis() of the first poll with this reason
  bool reason_changed = false;       // the last poll saw this reason first
};

class CheckpointWatcher {
 public:
  // INVALID_ARGUMENT for a bad pattern or a negative settle_seconds; with no `source`,
  // whatever FileSystemSource::Create(options.source, options.file_system) reports.
  // `clock` is not owned and must outlive the watcher.
  static absl::StatusOr<std::unique_ptr<CheckpointWatcher>> Create(
      const WatcherOptions& options, Clock* clock,
      std::unique_ptr<CheckpointSource> source = nullptr);

  // Lists the source once and returns the checkpoints admitted by this poll, newest step
  // first (often empty). An error when the source cannot be listed (e.g. the folder does not
  // exist yet); the watcher's state is kept and the next poll picks up where it left off.
  absl::StatusOr<std::vector<AdmittedCheckpoint>> Poll();

  // The checkpoints seen by the last Poll that are not admitted, by step ascending, each
  // with when it was first seen (a step that drops out of the listing starts over).
  std::vector<PendingCheckpoint> Pending() const;

  // Records `step` as admitted elsewhere (e.g. already in the store at start-up): Poll
  // will not return it.
  void MarkAdmitted(uint64_t step);

 private:
  // What the watcher remembers about one step not yet admitted.
  struct Candidate {
    std::string path;
    int64_t first_seen_nanos = 0;       // the first poll that listed the step (kept while
                                        // it stays listed, whatever else is reset)
    bool seen = false;                  // `fingerprint` holds a successful observation
    CheckpointFingerprint fingerprint;  // as last seen
    int64_t unchanged_since_nanos = 0;  // when `fingerprint` was first seen
    absl::Status completeness;          // CompletenessCheck on `fingerprint` and `trackers`
    TrackerFiles trackers;              // as read for `completeness`
    bool complete = false;              // complete, only waiting for quiescence
    std::string reason;                 // why it is pending, after the last poll
  };
  // Since when a pending step's reason holds.
  struct ReasonSince {
    std::string key;  // ReasonKey of the reason
    int64_t since_unix_ms = 0;
    bool changed = false;  // by the last poll
  };

  CheckpointWatcher(WatcherOptions options, Clock* clock, std::unique_ptr<StepParser> parser,
                    std::unique_ptr<CheckpointSource> source);

  // Updates `candidate` with what the source shows now at `path` (the folder of `step`);
  // true when it is admitted. `trackers` returns this poll's tracker files (read on first call).
  bool Observe(Candidate& candidate, const std::string& path, uint64_t step, int64_t now_nanos,
               absl::FunctionRef<const TrackerFiles&()> trackers);

  const WatcherOptions options_;
  Clock* const clock_;
  const std::unique_ptr<StepParser> parser_;
  const std::unique_ptr<CheckpointSource> source_;
  const CompletenessCheck completeness_;
  const int64_t settle_nanos_;

  std::set<uint64_t> admitted_;
  std::map<uint64_t, Candidate> candidates_;  // steps seen by the last poll, not admitted
  std::map<uint64_t, ReasonSince> reasons_;   // of the steps in candidates_
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_DISCOVERY_WATCHER_H_
