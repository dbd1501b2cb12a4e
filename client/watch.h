// `steadyeval watch NAME`: a live terminal view of one run's progress, eval lag and latest
// scores with sparklines.
//
// Three layers, so each can be tested alone:
//   BuildWatchSnapshot  - the data: one round of EvalService calls (GetRun,
//                         ListCheckpoints, ListJobs, ListWorkers, GetScores, GetStability)
//                         folded into a WatchSnapshot;
//   RenderWatch /       - pure functions from a snapshot to the text of one frame or one
//   RenderWatchLine       status line (no I/O, no clock: the time to show is an option);
//   RunWatch            - the refresh loop; the terminal, the clock and the wait between
//                         frames come in through WatchTerminal, so tests run it without
//                         sleeping.
//
// Thread-safety: the functions are re-entrant; RunWatch uses the stub from one thread.
#ifndef STEADYEVAL_CLIENT_WATCH_H_
#define STEADYEVAL_CLIENT_WATCH_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "steadyeval/v1/eval_service.grpc.pb.h"

namespace steadyeval::client {

struct Invocation;  // client/cli.h

// One (task, variant) sequence as the watch shows it.
struct WatchSeries {
  std::string task;
  std::string variant;                              // raw, avg@n, ens@n, ens-soft@n
  std::vector<std::pair<uint64_t, double>> points;  // (step, score), ascending steps
  std::optional<double> mtv;                        // over GetStability's default range
  std::optional<double> instability;                // IS, same range
};

// Everything one frame shows, fetched in one round.
struct WatchSnapshot {
  std::string run;
  std::string source;
  // Admitted checkpoints (the server lists only admitted ones: a checkpoint discovered
  // but still incomplete is not counted), those fully evaluated (every raw job done:
  // CHECKPOINT_EVALUATED) and failed.
  uint32_t admitted = 0;
  uint32_t evaluated = 0;
  uint32_t failed = 0;
  uint64_t newest_admitted_step = 0;   // 0 when none
  uint64_t newest_evaluated_step = 0;  // 0 when none is fully evaluated
  // newest_admitted_step − newest_evaluated_step, as the server's
  // steadyeval_eval_lag_steps (DESIGN §9); 0 when nothing is admitted.
  uint64_t eval_lag_steps = 0;
  // Jobs of this run by state (superseded jobs are not counted).
  uint32_t jobs_pending = 0;
  uint32_t jobs_leased = 0;
  uint32_t jobs_done = 0;
  uint32_t jobs_failed = 0;
  // Workers the coordinator knows (all runs share them), those busy and those lost.
  uint32_t workers = 0;
  uint32_t workers_busy = 0;
  uint32_t workers_lost = 0;
  // Tasks in the run's order; per task, variants in VariantLess order.
  std::vector<WatchSeries> series;
  // Set by RunWatch when the latest refresh failed: the reason, shown in the frame above
  // the last good data.
  std::string error;
};

// Fetches a snapshot of `run`, each request with a deadline of `timeout_s`. NOT_FOUND
// (naming the run) when the server does not know it; the first failed request's status
// otherwise.
absl::StatusOr<WatchSnapshot> BuildWatchSnapshot(v1::EvalService::StubInterface* stub,
                                                 const std::string& run, double timeout_s);

// How a frame is drawn.
struct RenderOptions {
  size_t width = 100;                           // terminal columns
  bool color = false;                           // ANSI colours
  absl::Time now = absl::InfinitePast();        // shown in the title; InfinitePast = omit
  absl::TimeZone time_zone = absl::UTCTimeZone();
  double interval_s = 2;                        // shown in the title
};

// The sparkline of `values` (oldest first): one of ▁▂▃▄▅▆▇█ per value, for the last
// `max_points` values. When every value lies in [0, 1] (scores), the scale is fixed:
// value v maps to level round(7·v), so 0 → ▁, 0.5 → ▅, 1 → █ and rows compare by height.
// Otherwise the scale is the shown values' own min..max (all equal → ▄). A non-finite
// value is a space.
std::string Sparkline(const std::vector<double>& values, size_t max_points);

// Terminal columns of `s`: code points count one, East Asian wide ones two; ANSI CSI
// sequences count zero.
size_t WatchDisplayWidth(const std::string& s);

// The full frame: a title line (run, time when set, refresh interval), progress lines
// (checkpoints, eval lag, jobs, workers), the error line when `snapshot.error` is set, and
// a TASK VARIANT STEP LATEST MTV IS HISTORY table with aligned columns. Ends with "\n".
// Without `options.color` the text holds no escape sequence.
std::string RenderWatch(const WatchSnapshot& snapshot, const RenderOptions& options);

// One compact status line without the trailing newline, e.g.
// "12:00:03 demo: 17 checkpoints, 15 evaluated, lag 60 steps, jobs 2 pending 1 leased |
//  toy_facts raw 0.41 avg@3 0.45 ens@3 0.43 | ..." (the time only when options.now is set).
std::string RenderWatchLine(const WatchSnapshot& snapshot, const RenderOptions& options);

// The snapshot as one line of JSON (no newline): {"run","source","checkpoints":{"admitted",
// "evaluated","failed","newest_step","newest_evaluated_step"},"eval_lag_steps","jobs":
// {"pending","leased","done","failed"},"workers":{"total","busy","lost"},"series":[{"task",
// "variant","latest_step","latest_score","mtv","is","points":[[step,score]...]}],"error"}
// (unset values null).
std::string WatchSnapshotJson(const WatchSnapshot& snapshot);

// What RunWatch needs from the process: the clock, the wait between refreshes and the
// terminal. RealWatchTerminal() gives the real ones.
struct WatchTerminal {
  std::function<absl::Time()> now;
  // Waits up to `d`; returns false when the watch should stop (SIGINT/SIGTERM).
  std::function<bool(absl::Duration)> wait;
  bool tty = false;    // redraw in place (clear + home, hidden cursor)
  bool color = false;  // ANSI colours
  size_t width = 100;  // terminal columns
  absl::TimeZone time_zone = absl::UTCTimeZone();
};

// The process's terminal for `out`: a TTY only when `out` is std::cout and stdout is a
// terminal; colour on a TTY when NO_COLOR is unset; the width from the terminal (else
// $COLUMNS, else 100); local time. Installs SIGINT/SIGTERM handlers that make `wait`
// return false (a second signal restores the cursor and exits 0 at once).
WatchTerminal RealWatchTerminal(const std::ostream& out);

struct WatchOptions {
  std::string run;
  std::string server;    // for error messages
  double timeout_s = 30;
  double interval_s = 2;
  bool once = false;     // one frame (or line), then return
  bool line = false;     // compact status lines instead of frames
  bool json = false;     // one WatchSnapshotJson line per change instead of frames
};

// The refresh loop. Fetches a snapshot every interval and writes:
//  - on a TTY, each frame after clear-screen + home, with the cursor hidden (shown again on
//    return);
//  - otherwise, a frame (or with --line a line, with --json a WatchSnapshotJson line) only
//    when it differs from the last one written, frames separated by a blank line and led
//    by their time.
// A failed refresh keeps the last good data and shows the error, then retries; it returns
// only when `terminal.wait` says stop (OK), or with the error when the first refresh fails
// with NOT_FOUND / INVALID_ARGUMENT or when `once` is set.
absl::Status RunWatch(const WatchOptions& options, v1::EvalService::StubInterface* stub,
                      WatchTerminal& terminal, std::ostream& out);

// Checks `watch`'s flags (--interval_s a number > 0). INVALID_ARGUMENT naming the flag.
absl::Status ValidateWatchFlags(const Invocation& inv);

// `steadyeval watch NAME [--interval_s S] [--once] [--line]` on the real terminal (a
// CommandSpec::run: `err` is unused, the view and its messages go to `out`).
absl::Status ExecuteWatch(const Invocation& inv, v1::EvalService::StubInterface* stub,
                          std::ostream& out, std::ostream& err);

}  // namespace steadyeval::client

#endif  // STEADYEVAL_CLIENT_WATCH_H_
