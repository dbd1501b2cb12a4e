// The production CheckpointDiscovery: a CheckpointWatcher (server/discovery/watcher.h) per run.
#include <utility>

#include "common/status.h"
#include "server/discovery/discovery.h"
#include "server/discovery/source_factory.h"
#include "server/discovery/watcher.h"

namespace steadyeval {
namespace {

class WatcherDiscovery : public CheckpointDiscovery {
 public:
  explicit WatcherDiscovery(std::unique_ptr<CheckpointWatcher> watcher)
      : watcher_(std::move(watcher)) {}

  absl::StatusOr<std::vector<DiscoveredCheckpoint>> Poll() override {
    ASSIGN_OR_RETURN(std::vector<AdmittedCheckpoint> admitted, watcher_->Poll());
    std::vector<DiscoveredCheckpoint> out;
    out.reserve(admitted.size());
    for (AdmittedCheckpoint& c : admitted) out.push_back({c.step, std::move(c.path)});
    return out;
  }

  void MarkKnown(uint64_t step) override { watcher_->MarkAdmitted(step); }

  std::vector<PendingDiscovery> Pending() const override {
    std::vector<PendingDiscovery> out;
    for (const PendingCheckpoint& p : watcher_->Pending()) {
      PendingDiscovery d;
      d.step = p.step;
      d.first_seen_nanos = p.first_seen_nanos;
      d.path = p.path;
      d.reason = p.reason;
      d.incomplete = p.incomplete;
      d.reason_since_unix_ms = p.reason_since_unix_ms;
      d.reason_changed = p.reason_changed;
      out.push_back(std::move(d));
    }
    return out;
  }

 private:
  std::unique_ptr<CheckpointWatcher> watcher_;
};

// The watcher's options from the run's config.
WatcherOptions OptionsOf(const v1::RunConfig& config) {
  WatcherOptions options;
  options.source = config.source();
  options.pattern = config.pattern();
  options.marker = config.marker();
  options.convert = config.convert();
  options.settle_seconds = config.settle_seconds();
  return options;
}

}  // namespace

DiscoveryFactory WatcherDiscoveryFactory(Clock* clock, FileSystem* fs) {
  return [clock, fs](const v1::RunConfig& config)
             -> absl::StatusOr<std::unique_ptr<CheckpointDiscovery>> {
    WatcherOptions options = OptionsOf(config);
    options.file_system = fs;
    ASSIGN_OR_RETURN(std::unique_ptr<CheckpointWatcher> watcher,
                     CheckpointWatcher::Create(options, clock));
    return std::unique_ptr<CheckpointDiscovery>(new WatcherDiscovery(std::move(watcher)));
  };
}

DiscoveryFactory WatcherDiscoveryFactory(Clock* clock, std::shared_ptr<RunSourceFactory> sources,
                                         SourceListObserver* list_observer) {
  return [clock, sources, list_observer](const v1::RunConfig& config)
             -> absl::StatusOr<std::unique_ptr<CheckpointDiscovery>> {
    WatcherOptions options = OptionsOf(config);
    if (list_observer != nullptr) {
      const char* scheme = SourceScheme(config.source());
      options.on_list = [list_observer, scheme](double seconds, const absl::Status& status) {
        list_observer->OnSourceList(scheme, seconds, status.ok());
      };
    }
    ASSIGN_OR_RETURN(std::unique_ptr<CheckpointSource> source, sources->Make(config));
    ASSIGN_OR_RETURN(std::unique_ptr<CheckpointWatcher> watcher,
                     CheckpointWatcher::Create(options, clock, std::move(source)));
    return std::unique_ptr<CheckpointDiscovery>(new WatcherDiscovery(std::move(watcher)));
  };
}

}  // namespace steadyeval
