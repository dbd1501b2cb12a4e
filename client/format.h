// Output formatting for the `steadyeval` CLI: aligned human tables and the --json shapes.
//
// The JSON shapes are a contract scripts rely on (keys are stable, enum values are
// lower-case words: checkpoint "pending|evaluating|evaluated|failed", job
// "pending|leased|done|failed|superseded", worker "idle|busy|lost"); optional values the
// server leaves unset are JSON null, never 0 or NaN. Pure functions; thread-safe.
#ifndef STEADYEVAL_CLIENT_FORMAT_H_
#define STEADYEVAL_CLIENT_FORMAT_H_

#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "steadyeval/v1/eval_service.pb.h"
#include "api/state_names.h"
#include "steadyeval/v1/types.pb.h"

namespace steadyeval::client {

using Json = nlohmann::ordered_json;

// Terminal columns `s` takes: East Asian wide characters (CJK, kana, Hangul, full-width
// forms) count two, other code points one. With `skip_ansi_escapes`, ANSI CSI sequences
// (ESC [ params final-byte, e.g. colours) take none.
size_t DisplayWidth(const std::string& s, bool skip_ansi_escapes = false);

// Columns separated by two spaces, each as wide as its widest cell (in terminal columns:
// East Asian wide characters count two); `right_aligned[i]` right-aligns column i (numbers). Ends with a newline.
std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows,
                        const std::vector<bool>& right_aligned = {});

using ::steadyeval::CheckpointStateName;  // api/state_names.h
using ::steadyeval::JobStateName;
using ::steadyeval::WorkerStateName;

// "2025-01-31 12:00:00Z", or "-" for 0.
std::string FormatUnixMillis(int64_t unix_ms);

// Sort key for variants: raw, then avg@n, ens@n, ens-soft@n (each by n), then the rest.
bool VariantLess(const std::string& a, const std::string& b);

// {"name","source","pattern","marker","tasks":[{"name","sha256","category"}],"few_shots",
//  "tokenizer_path","settle_seconds","average_windows":[n],"ensemble_windows":[n],
//  "created_unix_ms","paused"}  (category "" when the task has none)
Json RunToJson(const v1::Run& run);
// The run as an entry of a config file's `runs:` (steadyeval-server --config), which the
// server's loader reads back to the same run. Task files are named by their file name:
// the coordinator keeps their contents, not their paths.
std::string RunAsYaml(const v1::Run& run);
// {"runs":[RunToJson...]}
Json RunsToJson(const std::vector<v1::Run>& runs);
// {"run":RunToJson, "checkpoints","evaluated","failed","newest_step",
//  "newest_evaluated_step","jobs_by_state":{state:count}}
Json RunDetailsToJson(const v1::GetRunResponse& details);
// {"checkpoints":[{"step","path","state","error","admitted_unix_ms"}],
//  "pending":[{"step","path","state":"incomplete|settling","reason","since_unix_ms"}]}
// (pending: folders the server's watcher sees but has not admitted, and why)
Json CheckpointsToJson(const std::vector<v1::Checkpoint>& checkpoints,
                       const std::vector<v1::PendingCheckpoint>& pending = {});
// {"jobs":[{"id","run","kind","steps","state","attempts","error","worker","epoch",
//  "tasks":[names],"created_unix_ms","finished_unix_ms","superseded_by"}]}
// (superseded_by: the replacing job's id, null unless the job is superseded)
Json JobsToJson(const std::vector<v1::Job>& jobs);
// {"workers":[{"id","name","device","state","current_job","last_seen_seconds_ago"}]}
Json WorkersToJson(const std::vector<v1::WorkerInfo>& workers);
// {"run":run, "scores":[{"step","task","task_sha256","variant","metric","score","examples"}]}
Json ScoresToJson(const std::string& run, const std::vector<v1::Score>& scores);

// {"run", "range":{"from_step","to_step"}|null,
//  "rows":[{"task","kind":"task|category|avg","variant","metric","mean","mtv",
//           "example_mtv","is","checkpoints"}],
//  "median_drift":{"l2","relative","pairs"}}  (unset optionals are null)
Json StabilityToJson(const v1::GetStabilityResponse& stability);
// {"run","task","examples":[{"example","input","gold","flips",
//  "points":[{"variant","step","output","normalized","score"}]}]}
Json ExamplesToJson(const std::string& run, const std::string& task,
                    const v1::GetExamplesResponse& examples);

// One exported prediction as a JSONL line (with the trailing newline):
// {"step","task","variant","example","output","normalized_output","score",
//  "metrics":{name: value}}  (metric names sorted; a non-finite value is null).
std::string ExportJsonLine(const v1::ExportedPrediction& prediction);
// One RFC 4180 field: quoted (inner quotes doubled) when it holds ',', '"', CR or LF, or
// begins or ends with a space; otherwise as is.
std::string CsvField(const std::string& value);
// The shortest text that reads back as the same double ("0.1", "1", "1e-07"); "" for
// NaN and infinities.
std::string FormatNumber(double value);

std::string RunsTable(const std::vector<v1::Run>& runs);
// A run's settings and counts, one "key: value" line each; the S3 endpoint, region and
// converter only when set, and the source's listing error (with how long it has held at
// `now_unix_ms`) when the server reports one.
std::string RunDetailsText(const v1::GetRunResponse& details, int64_t now_unix_ms);
// The admitted checkpoints, then the folders not admitted yet (STATE "incomplete" or
// "settling"; ERROR the watcher's reason and how long it has held at `now_unix_ms`).
std::string CheckpointsTable(const std::vector<v1::Checkpoint>& checkpoints,
                             const std::vector<v1::PendingCheckpoint>& pending = {},
                             int64_t now_unix_ms = 0);
// "45s", "12m05s", "3h07m", "2d04h" (negative counts as 0).
std::string FormatAge(int64_t millis);
std::string JobsTable(const std::vector<v1::Job>& jobs);
std::string WorkersTable(const std::vector<v1::WorkerInfo>& workers);
// One step × task table per variant (raw first), values with four decimals, "-" where a
// task has no score at that step; each table is preceded by "variant V" and the metrics.
std::string ScoresTables(const std::vector<v1::Score>& scores);
// The paper's stability table: a header line with the run, the step range and the median
// parameter drift, then TASK VARIANT MEAN MTV EX-MTV IS N rows (tasks in the server's
// order, then categories, then AVG; variants raw, avg@n, ens@n, ens-soft@n), "-" for null.
std::string StabilityText(const v1::GetStabilityResponse& stability);
// Per example: its number and flips, the input (one line, at most `input_width` columns),
// the gold answer, then a step × variant table whose cells are the normalised output and
// the score (✓ for 1, ✗ for 0, else the value).
std::string ExamplesText(const v1::GetExamplesResponse& examples, size_t input_width = 100);

}  // namespace steadyeval::client

#endif  // STEADYEVAL_CLIENT_FORMAT_H_
