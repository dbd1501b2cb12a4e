// Output formatting for the `steadyeval` CLI: aligned human tables and the --json shapes.
//
// The JSON shapes are a contract scripts rely on (keys are stable, enum values are
// lower-case words: checkpoint "pending|evaluating|evaluated|failed", job
// "pending|leased|done|failed", worker "idle|busy|lost"). Pure functions; thread-safe.
#ifndef STEADYEVAL_CLIENT_FORMAT_H_
#define STEADYEVAL_CLIENT_FORMAT_H_

#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "steadyeval/v1/eval_service.pb.h"
#include "steadyeval/v1/types.pb.h"

namespace steadyeval::client {

using Json = nlohmann::ordered_json;

// Columns separated by two spaces, each as wide as its widest cell (in terminal columns:
// East Asian wide characters count two); `right_aligned[i]` right-aligns column i (numbers). Ends with a newline.
std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows,
                        const std::vector<bool>& right_aligned = {});

std::string CheckpointStateName(v1::CheckpointState state);
std::string JobStateName(v1::JobState state);
std::string WorkerStateName(v1::WorkerState state);

// "2025-01-31 12:00:00Z", or "-" for 0.
std::string FormatUnixMillis(int64_t unix_ms);

// Sort key for variants: raw, then avg@n, ens@n, ens-soft@n (each by n), then the rest.
bool VariantLess(const std::string& a, const std::string& b);

// {"name","source","pattern","marker","tasks":[{"name","sha256"}],"few_shots",
//  "tokenizer_path","settle_seconds","created_unix_ms"}
Json RunToJson(const v1::Run& run);
// {"runs":[RunToJson...]}
Json RunsToJson(const std::vector<v1::Run>& runs);
// {"run":RunToJson, "checkpoints","evaluated","failed","newest_step",
//  "newest_evaluated_step","jobs_by_state":{state:count}}
Json RunDetailsToJson(const v1::GetRunResponse& details);
// {"checkpoints":[{"step","path","state","error","admitted_unix_ms"}]}
Json CheckpointsToJson(const std::vector<v1::Checkpoint>& checkpoints);
// {"jobs":[{"id","run","kind","steps","state","attempts","error","worker","epoch",
//  "tasks":[names],"created_unix_ms","finished_unix_ms"}]}
Json JobsToJson(const std::vector<v1::Job>& jobs);
// {"workers":[{"id","name","device","state","current_job","last_seen_seconds_ago"}]}
Json WorkersToJson(const std::vector<v1::WorkerInfo>& workers);
// {"run":run, "scores":[{"step","task","task_sha256","variant","metric","score","examples"}]}
Json ScoresToJson(const std::string& run, const std::vector<v1::Score>& scores);

std::string RunsTable(const std::vector<v1::Run>& runs);
std::string RunDetailsText(const v1::GetRunResponse& details);
std::string CheckpointsTable(const std::vector<v1::Checkpoint>& checkpoints);
std::string JobsTable(const std::vector<v1::Job>& jobs);
std::string WorkersTable(const std::vector<v1::WorkerInfo>& workers);
// One step × task table per variant (raw first), values with four decimals, "-" where a
// task has no score at that step; each table is preceded by "variant V" and the metrics.
std::string ScoresTables(const std::vector<v1::Score>& scores);

}  // namespace steadyeval::client

#endif  // STEADYEVAL_CLIENT_FORMAT_H_
