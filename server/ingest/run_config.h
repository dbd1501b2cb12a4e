// Checks and normalises what a client sends to create or change a run (CreateRun,
// UpdateRun), before anything is stored. Errors are INVALID_ARGUMENT naming the run and
// the field (task files: the file and line), PERMISSION_DENIED for a source outside the
// coordinator's source roots or an S3 endpoint it does not allow (run_inputs.h). Plain functions of their arguments and the
// files they name.
#ifndef STEADYEVAL_SERVER_INGEST_RUN_CONFIG_H_
#define STEADYEVAL_SERVER_INGEST_RUN_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/ingest/run_inputs.h"
#include "steadyeval/v1/eval_service.pb.h"

namespace steadyeval {

struct NewRunOptions {
  double default_settle_seconds = 30;  // for runs created with settle_seconds = 0
  // Where a run's source may be and which S3 endpoints it may name (run_inputs.h
  // CheckRunSource: roots, the --s3_endpoints allowlist, the default region).
  SourceRules sources;
};

// A run ready to store: its normalised config and the task contents it names.
struct NewRun {
  v1::RunConfig config;
  std::vector<v1::TaskContent> tasks;  // one per task file, ref = (name, sha256)
};

// Checks a CreateRun request (see Coordinator::CreateRun for the rules) and fills in the
// defaults: settle_seconds, prompt language "ja", bos "auto", windows deduplicated and
// sorted, each task's sha256 and upper-cased category; an s3:// source, its endpoint and
// its region normalised and the region filled in (CheckRunSource).
absl::StatusOr<NewRun> CheckNewRun(v1::RunConfig config,
                                   const std::vector<v1::TaskContent>& task_files,
                                   const NewRunOptions& options);

// Applies UpdateRun's `set_*` window lists to `config` (each n in 2..1000, deduplicated
// and sorted); the other lists stay.
absl::Status ApplyWindowUpdate(const v1::UpdateRunRequest& r, v1::RunConfig& config);

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_INGEST_RUN_CONFIG_H_
