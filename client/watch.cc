#include "client/watch.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli.h"
#include "client/format.h"
#include "common/status.h"
#include "api/eval_lag.h"
#include "api/variant_proto.h"

namespace steadyeval::client {
namespace {

constexpr char kSparkLevels[8][4] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};

// ANSI SGR codes.
constexpr char kBold[] = "\033[1m";
constexpr char kRed[] = "\033[31m";
constexpr char kGreen[] = "\033[32m";
constexpr char kYellow[] = "\033[33m";
constexpr char kCyan[] = "\033[36m";
constexpr char kReset[] = "\033[0m";
// Terminal control.
constexpr char kClearHome[] = "\033[H\033[2J";
constexpr char kHideCursor[] = "\033[?25l";
constexpr char kShowCursor[] = "\033[?25h";

// Names the run in a NOT_FOUND whose message does not.
absl::Status NameRun(absl::Status status, const std::string& run) {
  if (status.code() != absl::StatusCode::kNotFound ||
      status.message().find(run) != absl::string_view::npos) {
    return status;
  }
  return absl::NotFoundError(absl::StrCat("run '", run, "' not found (see 'steadyeval runs list')",
                                          status.message().empty() ? "" : ": ",
                                          status.message()));
}

std::string Paint(const std::string& text, const char* code, bool color) {
  if (!color || text.empty()) return text;
  return absl::StrCat(code, text, kReset);
}

std::string PadRight(const std::string& s, size_t width) {
  const size_t w = WatchDisplayWidth(s);
  return w >= width ? s : s + std::string(width - w, ' ');
}

std::string PadLeft(const std::string& s, size_t width) {
  const size_t w = WatchDisplayWidth(s);
  return w >= width ? s : std::string(width - w, ' ') + s;
}

std::string Fixed(std::optional<double> v, int decimals) {
  if (!v.has_value() || !std::isfinite(*v)) return "-";
  return absl::StrFormat("%.*f", decimals, *v);
}

bool InUnitRange(const std::vector<double>& values) {
  return std::all_of(values.begin(), values.end(), [](double v) {
    return !std::isfinite(v) || (v >= 0 && v <= 1);
  });
}

std::vector<double> LastValues(const WatchSeries& s, size_t max_points) {
  std::vector<double> values;
  const size_t start = s.points.size() > max_points ? s.points.size() - max_points : 0;
  for (size_t i = start; i < s.points.size(); ++i) values.push_back(s.points[i].second);
  return values;
}

std::string TimeText(const RenderOptions& options, const char* format) {
  if (options.now == absl::InfinitePast()) return "";
  return absl::FormatTime(format, options.now, options.time_zone);
}

}  // namespace

size_t WatchDisplayWidth(const std::string& s) {
  return DisplayWidth(s, /*skip_ansi_escapes=*/true);
}

std::string Sparkline(const std::vector<double>& all_values, size_t max_points) {
  const size_t start = all_values.size() > max_points ? all_values.size() - max_points : 0;
  const std::vector<double> values(all_values.begin() + static_cast<std::ptrdiff_t>(start),
                                   all_values.end());
  double lo = 0, hi = 1;
  if (!InUnitRange(values)) {
    lo = std::numeric_limits<double>::infinity();
    hi = -lo;
    for (double v : values) {
      if (!std::isfinite(v)) continue;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  std::string out;
  for (double v : values) {
    if (!std::isfinite(v)) {
      out += " ";
      continue;
    }
    int level = 3;  // a flat series sits in the middle
    if (hi > lo) level = static_cast<int>(std::lround(7 * (v - lo) / (hi - lo)));
    out += kSparkLevels[std::clamp(level, 0, 7)];
  }
  return out;
}

absl::StatusOr<WatchSnapshot> BuildWatchSnapshot(v1::EvalService::StubInterface* stub,
                                                 const std::string& run, double timeout_s) {
  WatchSnapshot snapshot;
  snapshot.run = run;

  v1::GetRunResponse details;
  {
    grpc::ClientContext ctx;
    SetDeadline(timeout_s, ctx);
    v1::GetRunRequest req;
    req.set_name(run);
    RETURN_IF_ERROR(NameRun(ToAbsl(stub->GetRun(&ctx, req, &details)), run));
  }
  snapshot.source = details.run().config().source();

  std::vector<v1::Checkpoint> checkpoints;
  {
    grpc::ClientContext ctx;
    SetDeadline(timeout_s, ctx);
    v1::ListCheckpointsRequest req;
    req.set_run(run);
    RETURN_IF_ERROR(NameRun(ReadAll(stub->ListCheckpoints(&ctx, req).get(), checkpoints), run));
  }
  for (const v1::Checkpoint& c : checkpoints) {
    ++snapshot.admitted;
    snapshot.evaluated += c.state() == v1::CHECKPOINT_EVALUATED;
    snapshot.failed += c.state() == v1::CHECKPOINT_FAILED;
  }
  const EvalProgress progress = EvalProgressOf(checkpoints);
  snapshot.newest_admitted_step = progress.newest_step;
  snapshot.newest_evaluated_step = progress.newest_evaluated_step;
  snapshot.eval_lag_steps = progress.lag_steps;

  std::vector<v1::Job> jobs;
  {
    grpc::ClientContext ctx;
    SetDeadline(timeout_s, ctx);
    v1::ListJobsRequest req;
    req.set_run(run);
    RETURN_IF_ERROR(NameRun(ReadAll(stub->ListJobs(&ctx, req).get(), jobs), run));
  }
  for (const v1::Job& job : jobs) {
    if (job.run() != run && !job.run().empty()) continue;
    switch (job.state()) {
      case v1::JOB_PENDING: ++snapshot.jobs_pending; break;
      case v1::JOB_LEASED: ++snapshot.jobs_leased; break;
      case v1::JOB_DONE: ++snapshot.jobs_done; break;
      case v1::JOB_FAILED: ++snapshot.jobs_failed; break;
      default: break;
    }
  }

  {
    grpc::ClientContext ctx;
    SetDeadline(timeout_s, ctx);
    v1::ListWorkersResponse resp;
    RETURN_IF_ERROR(ToAbsl(stub->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp)));
    for (const v1::WorkerInfo& w : resp.workers()) {
      ++snapshot.workers;
      if (w.state() == v1::WORKER_BUSY) ++snapshot.workers_busy;
      if (w.state() == v1::WORKER_LOST) ++snapshot.workers_lost;
    }
  }

  std::vector<v1::Score> scores;
  {
    grpc::ClientContext ctx;
    SetDeadline(timeout_s, ctx);
    v1::GetScoresRequest req;
    req.set_run(run);
    RETURN_IF_ERROR(NameRun(ReadAll(stub->GetScores(&ctx, req).get(), scores), run));
  }

  v1::GetStabilityResponse stability;
  {
    grpc::ClientContext ctx;
    SetDeadline(timeout_s, ctx);
    v1::GetStabilityRequest req;
    req.set_run(run);
    RETURN_IF_ERROR(NameRun(ToAbsl(stub->GetStability(&ctx, req, &stability)), run));
  }

  // Rows: every configured task × the variants the run is configured for, plus any other
  // (task, variant) the server has scores or stability rows for.
  std::vector<std::string> tasks;
  for (const v1::TaskRef& t : details.run().config().tasks()) tasks.push_back(t.name());
  std::map<std::string, std::set<std::string, bool (*)(const std::string&, const std::string&)>>
      variants;
  auto variant_set = [&](const std::string& task) -> auto& {
    auto it = variants.find(task);
    if (it == variants.end()) {
      it = variants.emplace(task, std::set<std::string, bool (*)(const std::string&,
                                                                const std::string&)>(VariantLess))
               .first;
      if (std::find(tasks.begin(), tasks.end(), task) == tasks.end()) tasks.push_back(task);
    }
    return it->second;
  };
  for (const v1::TaskRef& t : details.run().config().tasks()) {
    auto& set = variant_set(t.name());
    set.insert("raw");
    for (uint32_t n : details.run().config().average_windows()) {
      set.insert(ToString(Variant::Average(n)));
    }
    for (uint32_t n : details.run().config().ensemble_windows()) {
      set.insert(ToString(Variant::Ensemble(n)));
    }
  }
  std::map<std::pair<std::string, std::string>, std::map<uint64_t, double>> points;
  for (const v1::Score& s : scores) {
    variant_set(s.task()).insert(VariantNameOf(s));
    points[{s.task(), VariantNameOf(s)}][s.step()] = s.score();
  }
  std::map<std::pair<std::string, std::string>, const v1::StabilityRow*> rows;
  for (const v1::StabilityRow& row : stability.rows()) {
    if (row.kind() != "task") continue;
    variant_set(row.task()).insert(VariantNameOf(row));
    rows[{row.task(), VariantNameOf(row)}] = &row;
  }
  for (const std::string& task : tasks) {
    for (const std::string& variant : variants[task]) {
      WatchSeries series;
      series.task = task;
      series.variant = variant;
      auto p = points.find({task, variant});
      if (p != points.end()) series.points.assign(p->second.begin(), p->second.end());
      auto r = rows.find({task, variant});
      if (r != rows.end()) {
        if (r->second->has_mtv()) series.mtv = r->second->mtv();
        if (r->second->has_instability()) series.instability = r->second->instability();
      }
      snapshot.series.push_back(std::move(series));
    }
  }
  return snapshot;
}

std::string RenderWatch(const WatchSnapshot& s, const RenderOptions& options) {
  const bool color = options.color;
  std::string out;
  // Title.
  std::string title = absl::StrCat("steadyeval watch ", s.run);
  const std::string time = TimeText(options, "%Y-%m-%d %H:%M:%S %Z");
  if (!time.empty()) absl::StrAppend(&title, "  ", time);
  absl::StrAppend(&out, Paint(title, kBold, color), "  (every ",
                  FormatNumber(options.interval_s), "s)\n");
  if (!s.error.empty()) {
    absl::StrAppend(&out, Paint(absl::StrCat("error: ", s.error), kRed, color), "\n");
  }

  // Progress.
  const std::string label_pad = "            ";  // labels are padded to 12 columns
  auto label = [&](const char* name) { return PadRight(name, label_pad.size() + 1); };
  if (!s.source.empty()) absl::StrAppend(&out, label("source"), s.source, "\n");
  absl::StrAppend(&out, label("checkpoints"), s.admitted, " admitted, ", s.evaluated,
                  " evaluated, ",
                  Paint(absl::StrCat(s.failed, " failed"), kRed, color && s.failed > 0));
  if (s.admitted > 0) {
    absl::StrAppend(&out, "; newest step ", s.newest_admitted_step, ", evaluated through ",
                    s.evaluated > 0 ? absl::StrCat(s.newest_evaluated_step) : "-");
  }
  absl::StrAppend(&out, "\n", label("eval lag"),
                  Paint(absl::StrCat(s.eval_lag_steps, " steps"),
                        s.eval_lag_steps == 0 ? kGreen : kYellow, color),
                  "\n");
  absl::StrAppend(&out, label("jobs"), s.jobs_pending, " pending, ", s.jobs_leased, " leased, ",
                  s.jobs_done, " done, ",
                  Paint(absl::StrCat(s.jobs_failed, " failed"), kRed, color && s.jobs_failed > 0),
                  "\n");
  absl::StrAppend(&out, label("workers"), s.workers, " (", s.workers_busy, " busy",
                  s.workers_lost > 0 ? absl::StrCat(", ", s.workers_lost, " lost") : "", ")\n");

  if (s.series.empty()) {
    absl::StrAppend(&out, "\nno tasks\n");
    return out;
  }
  // Table: the fixed columns first, then as many history points as the width allows.
  std::vector<std::vector<std::string>> cells;
  const std::vector<std::string> header = {"TASK", "VARIANT", "STEP", "LATEST", "MTV", "IS"};
  const std::vector<bool> right = {false, false, true, true, true, true};
  std::string previous_task;
  for (const WatchSeries& row : s.series) {
    std::vector<std::string> r;
    r.push_back(row.task == previous_task ? "" : row.task);
    previous_task = row.task;
    r.push_back(row.variant);
    if (row.points.empty()) {
      r.insert(r.end(), {"-", "-"});
    } else {
      r.push_back(absl::StrCat(row.points.back().first));
      r.push_back(Fixed(row.points.back().second, 4));
    }
    r.push_back(Fixed(row.mtv, 4));
    r.push_back(Fixed(row.instability, 4));
    cells.push_back(std::move(r));
  }
  std::vector<size_t> widths(header.size());
  for (size_t i = 0; i < header.size(); ++i) {
    widths[i] = WatchDisplayWidth(header[i]);
    for (const auto& r : cells) widths[i] = std::max(widths[i], WatchDisplayWidth(r[i]));
  }
  size_t fixed = 0;
  for (size_t w : widths) fixed += w + 2;
  const size_t history_points =
      std::clamp<size_t>(options.width > fixed + 14 ? options.width - fixed - 14 : 0, 8, 60);
  auto join = [&](const std::vector<std::string>& r) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      absl::StrAppend(&line, right[i] ? PadLeft(r[i], widths[i]) : PadRight(r[i], widths[i]),
                      "  ");
    }
    return line;
  };
  absl::StrAppend(&out, "\n",
                  Paint(absl::StrCat(join(header), "HISTORY (last ", history_points,
                                     "; scale 0..1 unless a range is given)"),
                        kBold, color),
                  "\n");
  for (size_t i = 0; i < cells.size(); ++i) {
    const std::vector<double> values = LastValues(s.series[i], history_points);
    std::string spark = Paint(Sparkline(values, history_points), kCyan, color);
    if (!InUnitRange(values)) {
      const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
      absl::StrAppend(&spark, "  ", FormatNumber(*lo), "..", FormatNumber(*hi));
    }
    std::string line = absl::StrCat(join(cells[i]), spark);
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string RenderWatchLine(const WatchSnapshot& s, const RenderOptions& options) {
  std::string line;
  const std::string time = TimeText(options, "%H:%M:%S");
  if (!time.empty()) absl::StrAppend(&line, time, " ");
  absl::StrAppend(&line, s.run, ": ", s.admitted, " checkpoints, ", s.evaluated, " evaluated, ");
  if (s.failed > 0) absl::StrAppend(&line, s.failed, " failed, ");
  absl::StrAppend(&line, "lag ", s.eval_lag_steps, " steps, jobs ", s.jobs_pending, " pending ",
                  s.jobs_leased, " leased");
  if (s.jobs_failed > 0) absl::StrAppend(&line, " ", s.jobs_failed, " failed");
  std::string task;
  for (const WatchSeries& row : s.series) {
    if (row.task != task) {
      absl::StrAppend(&line, " | ", row.task);
      task = row.task;
    }
    absl::StrAppend(&line, " ", row.variant, " ",
                    row.points.empty() ? "-" : absl::StrFormat("%.2f", row.points.back().second));
  }
  if (!s.error.empty()) absl::StrAppend(&line, " | error: ", s.error);
  return line;
}

std::string WatchSnapshotJson(const WatchSnapshot& s) {
  Json series = Json::array();
  for (const WatchSeries& row : s.series) {
    Json points = Json::array();
    for (const auto& [step, score] : row.points) {
      points.push_back(Json::array({step, std::isfinite(score) ? Json(score) : Json()}));
    }
    const bool has_latest = !row.points.empty() && std::isfinite(row.points.back().second);
    series.push_back({{"task", row.task},
                      {"variant", row.variant},
                      {"latest_step", row.points.empty() ? Json() : Json(row.points.back().first)},
                      {"latest_score", has_latest ? Json(row.points.back().second) : Json()},
                      {"mtv", row.mtv.has_value() ? Json(*row.mtv) : Json()},
                      {"is", row.instability.has_value() ? Json(*row.instability) : Json()},
                      {"points", points}});
  }
  Json doc = {{"run", s.run},
              {"source", s.source},
              {"checkpoints", {{"admitted", s.admitted},
                               {"evaluated", s.evaluated},
                               {"failed", s.failed},
                               {"newest_step", s.newest_admitted_step},
                               {"newest_evaluated_step", s.newest_evaluated_step}}},
              {"eval_lag_steps", s.eval_lag_steps},
              {"jobs", {{"pending", s.jobs_pending},
                        {"leased", s.jobs_leased},
                        {"done", s.jobs_done},
                        {"failed", s.jobs_failed}}},
              {"workers",
               {{"total", s.workers}, {"busy", s.workers_busy}, {"lost", s.workers_lost}}},
              {"series", series},
              {"error", s.error.empty() ? Json() : Json(s.error)}};
  return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// ---- The process's terminal ----

namespace {

volatile sig_atomic_t g_stop_requested = 0;
volatile sig_atomic_t g_restore_cursor = 0;

void OnStopSignal(int) {
  if (g_stop_requested) {  // a second signal: do not wait for the current request
    if (g_restore_cursor) {
      const char restore[] = "\033[?25h\n";
      ssize_t ignored = write(STDOUT_FILENO, restore, sizeof(restore) - 1);
      (void)ignored;
    }
    _exit(0);
  }
  g_stop_requested = 1;
}

}  // namespace

WatchTerminal RealWatchTerminal(const std::ostream& out) {
  WatchTerminal terminal;
  terminal.tty = &out == &std::cout && isatty(STDOUT_FILENO) == 1;
  terminal.color = terminal.tty && std::getenv("NO_COLOR") == nullptr;
  terminal.time_zone = absl::LocalTimeZone();
  terminal.width = 100;
  winsize size{};
  if (terminal.tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) {
    terminal.width = size.ws_col;
  } else if (const char* columns = std::getenv("COLUMNS"); columns != nullptr) {
    size_t parsed = 0;
    if (absl::SimpleAtoi(columns, &parsed) && parsed >= 20) terminal.width = parsed;
  }
  g_stop_requested = 0;
  g_restore_cursor = terminal.tty ? 1 : 0;
  struct sigaction action {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  terminal.now = [] { return absl::Now(); };
  terminal.wait = [](absl::Duration d) {
    const absl::Time until = absl::Now() + d;
    while (!g_stop_requested) {
      const absl::Duration left = until - absl::Now();
      if (left <= absl::ZeroDuration()) return true;
      absl::SleepFor(std::min(left, absl::Milliseconds(50)));
    }
    return false;
  };
  return terminal;
}

absl::Status RunWatch(const WatchOptions& options, v1::EvalService::StubInterface* stub,
                      WatchTerminal& terminal, std::ostream& out) {
  const bool redraw = terminal.tty && !options.line && !options.json && !options.once;
  if (redraw) out << kHideCursor << std::flush;
  std::optional<WatchSnapshot> last_good;
  std::string last_written;  // the last frame or line written, rendered without the time
  bool first = true;
  absl::Status result = absl::OkStatus();
  while (true) {
    absl::StatusOr<WatchSnapshot> fetched =
        BuildWatchSnapshot(stub, options.run, options.timeout_s);
    WatchSnapshot shown;
    if (fetched.ok()) {
      last_good = *fetched;
      shown = *std::move(fetched);
    } else {
      const absl::StatusCode code = fetched.status().code();
      if (options.once || (first && (code == absl::StatusCode::kNotFound ||
                                     code == absl::StatusCode::kInvalidArgument))) {
        result = fetched.status();
        break;
      }
      if (last_good.has_value()) {
        shown = *last_good;
      } else {
        shown.run = options.run;
      }
      const std::string reason =
          code == absl::StatusCode::kCancelled
              ? absl::StrCat("steadyeval-server at ", options.server,
                             " closed the connection (shutting down?)")
              : DescribeError(fetched.status(), options.server, options.timeout_s);
      shown.error =
          absl::StrCat(reason, " (retrying every ", FormatNumber(options.interval_s), "s)");
    }
    first = false;

    RenderOptions render;
    render.width = terminal.width;
    render.color = terminal.color;
    render.time_zone = terminal.time_zone;
    render.interval_s = options.interval_s;
    RenderOptions timeless = render;
    timeless.color = false;
    render.now = terminal.now();
    if (options.json) {
      const std::string doc = WatchSnapshotJson(shown);
      if (doc != last_written) {
        out << doc << "\n" << std::flush;
        last_written = doc;
      }
    } else if (options.line) {
      const std::string key = RenderWatchLine(shown, timeless);
      if (key != last_written) {
        out << RenderWatchLine(shown, render) << "\n" << std::flush;
        last_written = key;
      }
    } else if (redraw) {
      out << kClearHome << RenderWatch(shown, render) << std::flush;
    } else {
      const std::string key = RenderWatch(shown, timeless);
      if (key != last_written) {
        if (!last_written.empty()) out << "\n";
        out << RenderWatch(shown, render) << std::flush;
        last_written = key;
      }
    }
    if (options.once) break;
    if (!terminal.wait(absl::Seconds(options.interval_s))) break;
  }
  if (redraw) out << kShowCursor << std::flush;
  return result;
}

absl::Status ValidateWatchFlags(const Invocation& inv) {
  if (!inv.HasFlag("interval_s")) return absl::OkStatus();
  double interval = 0;
  if (!absl::SimpleAtod(inv.Flag("interval_s"), &interval) || !std::isfinite(interval) ||
      interval <= 0 || interval > 86400) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad --interval_s '", inv.Flag("interval_s"), "': give seconds between refreshes, > 0"));
  }
  return absl::OkStatus();
}

absl::Status ExecuteWatch(const Invocation& inv, v1::EvalService::StubInterface* stub,
                          std::ostream& out, std::ostream& /*err*/) {
  RETURN_IF_ERROR(ValidateWatchFlags(inv));
  WatchOptions options;
  options.run = inv.args.at(0);
  options.server = inv.server;
  options.timeout_s = inv.timeout_s;
  if (inv.HasFlag("interval_s")) absl::SimpleAtod(inv.Flag("interval_s"), &options.interval_s);
  options.once = inv.HasFlag("once");
  options.line = inv.HasFlag("line");
  options.json = inv.json;
  WatchTerminal terminal = RealWatchTerminal(out);
  return RunWatch(options, stub, terminal, out);
}

}  // namespace steadyeval::client
