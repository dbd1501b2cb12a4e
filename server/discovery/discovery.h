// How the coordinator learns about a run's checkpoints (DESIGN §4), as the coordinator
// sees it: one CheckpointDiscovery per run, polled by the run's polling loop.
//
// The production implementation adapts CheckpointWatcher (server/discovery/watcher.h, see
// watcher_discovery.cc); tests pass fakes. Keeping this seam lets the coordinator be
// built and tested without the watcher.
#ifndef STEADYEVAL_SERVER_DISCOVERY_DISCOVERY_H_
#define STEADYEVAL_SERVER_DISCOVERY_DISCOVERY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/file_system.h"
#include "steadyeval/v1/types.pb.h"

namespace steadyeval {

struct DiscoveredCheckpoint {
  uint64_t step = 0;
  std::string path;  // as the coordinator sees it
};

// A checkpoint folder seen but not admitted (incomplete, still changing, or ambiguous).
struct PendingDiscovery {
  uint64_t step = 0;
  int64_t first_seen_nanos = 0;  // Clock::MonotonicNanos() when the folder was first seen
  std::string path;
  // Why it is not admitted; "settling (...)" when it is complete but its files have not
  // yet been unchanged for the settle time.
  std::string reason;
  bool incomplete = true;           // false: complete, waiting for quiescence
  int64_t reason_since_unix_ms = 0; // Clock::UnixMillis() when this reason was first seen
  bool reason_changed = false;      // the last Poll saw this reason for the first time
};

// Not thread-safe: one polling loop calls Poll.
class CheckpointDiscovery {
 public:
  virtual ~CheckpointDiscovery() = default;
  // Checkpoints that became complete since the last poll; each at most once per instance
  // (the caller de-duplicates against the store across restarts).
  virtual absl::StatusOr<std::vector<DiscoveredCheckpoint>> Poll() = 0;
  // `step` is already stored (at start-up): Poll need not return it.
  virtual void MarkKnown(uint64_t /*step*/) {}
  // The folders the last Poll saw but did not return, by step ascending; empty for a
  // discovery without such a phase.
  virtual std::vector<PendingDiscovery> Pending() const { return {}; }
};

// Makes the discovery for a run. INVALID_ARGUMENT for a config it cannot watch.
using DiscoveryFactory = std::function<absl::StatusOr<std::unique_ptr<CheckpointDiscovery>>(
    const ::steadyeval::v1::RunConfig& config)>;

// Sees how long each poll's listing of a run's source took. Thread-safe.
class SourceListObserver {
 public:
  virtual ~SourceListObserver() = default;
  // `scheme`: "file" or "s3" (source_factory.h SourceScheme); `ok`: whether it listed.
  virtual void OnSourceList(const char* scheme, double seconds, bool ok) = 0;
};

class RunSourceFactory;  // source_factory.h

// A CheckpointWatcher per run on `clock`, reading the run's source (a folder) through `fs`
// (neither owned; both must outlive every discovery made). For tests of folder runs.
DiscoveryFactory WatcherDiscoveryFactory(Clock* clock, FileSystem* fs = FileSystem::Local());

// The production factory: a CheckpointWatcher per run on `clock` (not owned), reading the
// run's source from `sources` (a folder or an s3:// prefix; kept alive by the factory),
// with the run's converter (RunConfig.convert) passed to its completeness check, every
// listing reported to `list_observer` (not owned; may be null).
DiscoveryFactory WatcherDiscoveryFactory(Clock* clock, std::shared_ptr<RunSourceFactory> sources,
                                         SourceListObserver* list_observer);

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_DISCOVERY_DISCOVERY_H_
