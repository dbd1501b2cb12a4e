// Applies a read config file's `runs:` to a running Coordinator (at start and on SIGHUP).
// All or nothing: every declared run is checked first (CheckDeclaredRuns, then against the
// stored run of that name) and nothing changes when one fails. Then runs not yet stored
// are created with Run.managed_by = the file's path, changed window lists are applied
// (UpdateRun as that file), and stored runs managed by the file that it no longer
// declares are paused (never deleted). Runs made with `runs add` are never touched.
#ifndef STEADYEVAL_SERVER_CONFIG_CONFIG_APPLY_H_
#define STEADYEVAL_SERVER_CONFIG_CONFIG_APPLY_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/config/config_file.h"
#include "server/coordinator.h"

namespace steadyeval {

struct ConfigApplied {
  std::vector<std::string> created, updated, paused;  // run names
  // Declared runs that are paused (by `runs pause`, or by an earlier file that no longer
  // declared them): a config never resumes a run; the summary says how to.
  std::vector<std::string> still_paused;
  std::string Summary() const;
};

// FAILED_PRECONDITION "FILE:LINE: run NAME: ..." when a declared run's source, tasks or
// another fixed setting differs from the stored run, or the name belongs to a run not
// managed by this file; the errors of CheckDeclaredRuns otherwise.
absl::StatusOr<ConfigApplied> ApplyConfig(Coordinator& coordinator, const ConfigFile& file);

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_CONFIG_CONFIG_APPLY_H_
