// Checks on what a client sends to create a run, before any of it is parsed or stored
// (issue 16): sizes bounded by common/limits.h, and the source folder confined to the
// coordinator's --source_roots.
#ifndef STEADYEVAL_SERVER_INGEST_RUN_INPUTS_H_
#define STEADYEVAL_SERVER_INGEST_RUN_INPUTS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "steadyeval/v1/types.pb.h"

namespace steadyeval {

// INVALID_ARGUMENT naming the field and the bound for oversized names, paths, patterns,
// markers (which must also stay inside the checkpoint: relative, no ".."), window lists,
// task counts and task files. Messages quote inputs cut and escaped (Printable).
absl::Status CheckRunInputLimits(const v1::RunConfig& config,
                                 const std::vector<v1::TaskContent>& task_files);

// Resolves `source` (a path or file:// URI) to an existing directory, symlinks followed.
// With `roots`, the resolved folder must be one of them or below one (compared by path
// components after resolving the roots too); PERMISSION_DENIED names the roots otherwise.
// INVALID_ARGUMENT for a relative, missing or non-directory source.
absl::StatusOr<std::string> ResolveSource(const std::string& source,
                                          const std::vector<std::string>& roots);

// Parses --source_roots: comma-separated absolute folders, each resolved (they must
// exist). INVALID_ARGUMENT naming the entry otherwise.
absl::StatusOr<std::vector<std::string>> ParseSourceRoots(const std::string& flag_value);

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_INGEST_RUN_INPUTS_H_
