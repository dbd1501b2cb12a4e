#include "client/format.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"

namespace steadyeval::client {
namespace {

// Terminal columns: East Asian wide characters (CJK, kana, Hangul, full-width forms) count
// two, other code points one.
size_t DisplayWidth(const std::string& s) {
  size_t width = 0;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    uint32_t cp = c;
    size_t len = 1;
    if (c >= 0xF0) {
      cp = c & 0x07;
      len = 4;
    } else if (c >= 0xE0) {
      cp = c & 0x0F;
      len = 3;
    } else if (c >= 0xC0) {
      cp = c & 0x1F;
      len = 2;
    }
    for (size_t k = 1; k < len && i + k < s.size(); ++k) {
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    }
    i += len;
    const bool wide = (cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0xA4CF) ||
                      (cp >= 0xAC00 && cp <= 0xD7A3) || (cp >= 0xF900 && cp <= 0xFAFF) ||
                      (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF60) ||
                      (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x20000 && cp <= 0x3FFFD);
    width += wide ? 2 : 1;
  }
  return width;
}

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

std::string StepsText(const v1::Job& job) {
  if (job.steps_size() == 0) return "-";
  if (job.steps_size() <= 3) return absl::StrJoin(job.steps(), ",");
  return absl::StrCat(job.steps(0), "..", job.steps(job.steps_size() - 1), " (",
                      job.steps_size(), ")");
}

}  // namespace

std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows,
                        const std::vector<bool>& right_aligned) {
  std::vector<size_t> width(header.size(), 0);
  for (size_t i = 0; i < header.size(); ++i) width[i] = DisplayWidth(header[i]);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], DisplayWidth(row[i]));
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < width.size(); ++i) {
      const std::string cell = i < cells.size() ? cells[i] : "";
      const std::string pad(width[i] - DisplayWidth(cell), ' ');
      const bool last = i + 1 == width.size();
      if (i > 0) out += "  ";
      if (i < right_aligned.size() && right_aligned[i]) {
        out += pad + cell;
      } else {
        out += cell;
        if (!last) out += pad;
      }
    }
    out += '\n';
    return out;
  };
  std::string out = line(header);
  for (const auto& row : rows) out += line(row);
  return out;
}

std::string CheckpointStateName(v1::CheckpointState state) {
  switch (state) {
    case v1::CHECKPOINT_PENDING: return "pending";
    case v1::CHECKPOINT_EVALUATING: return "evaluating";
    case v1::CHECKPOINT_EVALUATED: return "evaluated";
    case v1::CHECKPOINT_FAILED: return "failed";
    default: return "unspecified";
  }
}

std::string JobStateName(v1::JobState state) {
  switch (state) {
    case v1::JOB_PENDING: return "pending";
    case v1::JOB_LEASED: return "leased";
    case v1::JOB_DONE: return "done";
    case v1::JOB_FAILED: return "failed";
    default: return "unspecified";
  }
}

std::string WorkerStateName(v1::WorkerState state) {
  switch (state) {
    case v1::WORKER_IDLE: return "idle";
    case v1::WORKER_BUSY: return "busy";
    case v1::WORKER_LOST: return "lost";
    default: return "unspecified";
  }
}

std::string FormatUnixMillis(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%SZ", absl::FromUnixMillis(unix_ms),
                          absl::UTCTimeZone());
}

bool VariantLess(const std::string& a, const std::string& b) {
  auto key = [](const std::string& v) {
    if (v == "raw") return std::make_tuple(0, int64_t{0}, v);
    static const std::pair<const char*, int> kFamilies[] = {
        {"avg@", 1}, {"ens@", 2}, {"ens-soft@", 3}};
    for (const auto& [prefix, rank] : kFamilies) {
      const std::string p = prefix;
      int64_t n = 0;
      if (v.rfind(p, 0) == 0 && absl::SimpleAtoi(v.substr(p.size()), &n)) {
        return std::make_tuple(rank, n, v);
      }
    }
    return std::make_tuple(4, int64_t{0}, v);
  };
  return key(a) < key(b);
}

Json RunToJson(const v1::Run& run) {
  const v1::RunConfig& c = run.config();
  Json tasks = Json::array();
  for (const v1::TaskRef& t : c.tasks()) tasks.push_back({{"name", t.name()}, {"sha256", t.sha256()}});
  return Json{{"name", c.name()},
              {"source", c.source()},
              {"pattern", c.pattern()},
              {"marker", c.marker()},
              {"tasks", std::move(tasks)},
              {"few_shots", c.few_shots()},
              {"tokenizer_path", c.tokenizer_path()},
              {"settle_seconds", c.settle_seconds()},
              {"created_unix_ms", run.created_unix_ms()}};
}

Json RunsToJson(const std::vector<v1::Run>& runs) {
  Json list = Json::array();
  for (const v1::Run& r : runs) list.push_back(RunToJson(r));
  return Json{{"runs", std::move(list)}};
}

Json RunDetailsToJson(const v1::GetRunResponse& d) {
  Json by_state = Json::object();
  std::map<std::string, uint32_t> sorted(d.jobs_by_state().begin(), d.jobs_by_state().end());
  for (const auto& [state, n] : sorted) by_state[state] = n;
  return Json{{"run", RunToJson(d.run())},
              {"checkpoints", d.checkpoints()},
              {"evaluated", d.evaluated()},
              {"failed", d.failed()},
              {"newest_step", d.newest_step()},
              {"newest_evaluated_step", d.newest_evaluated_step()},
              {"jobs_by_state", std::move(by_state)}};
}

Json CheckpointsToJson(const std::vector<v1::Checkpoint>& checkpoints) {
  Json list = Json::array();
  for (const v1::Checkpoint& c : checkpoints) {
    list.push_back(Json{{"step", c.step()},
                        {"path", c.path()},
                        {"state", CheckpointStateName(c.state())},
                        {"error", c.error()},
                        {"admitted_unix_ms", c.admitted_unix_ms()}});
  }
  return Json{{"checkpoints", std::move(list)}};
}

Json JobsToJson(const std::vector<v1::Job>& jobs) {
  Json list = Json::array();
  for (const v1::Job& j : jobs) {
    Json steps = Json::array();
    for (uint64_t s : j.steps()) steps.push_back(s);
    Json tasks = Json::array();
    for (const v1::TaskRef& t : j.tasks()) tasks.push_back(t.name());
    list.push_back(Json{{"id", j.id()},
                        {"run", j.run()},
                        {"kind", j.kind()},
                        {"steps", std::move(steps)},
                        {"state", JobStateName(j.state())},
                        {"attempts", j.attempts()},
                        {"error", j.error()},
                        {"worker", j.worker_id()},
                        {"epoch", j.epoch()},
                        {"tasks", std::move(tasks)},
                        {"created_unix_ms", j.created_unix_ms()},
                        {"finished_unix_ms", j.finished_unix_ms()}});
  }
  return Json{{"jobs", std::move(list)}};
}

Json WorkersToJson(const std::vector<v1::WorkerInfo>& workers) {
  Json list = Json::array();
  for (const v1::WorkerInfo& w : workers) {
    list.push_back(Json{{"id", w.id()},
                        {"name", w.name()},
                        {"device", w.device()},
                        {"state", WorkerStateName(w.state())},
                        {"current_job", w.current_job()},
                        {"last_seen_seconds_ago", w.last_seen_seconds_ago()}});
  }
  return Json{{"workers", std::move(list)}};
}

Json ScoresToJson(const std::string& run, const std::vector<v1::Score>& scores) {
  Json list = Json::array();
  for (const v1::Score& s : scores) {
    list.push_back(Json{{"step", s.step()},
                        {"task", s.task()},
                        {"task_sha256", s.task_sha256()},
                        {"variant", s.variant()},
                        {"metric", s.metric()},
                        {"score", s.score()},
                        {"examples", s.examples()}});
  }
  return Json{{"run", run}, {"scores", std::move(list)}};
}

std::string RunsTable(const std::vector<v1::Run>& runs) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::Run& r : runs) {
    std::vector<std::string> tasks;
    for (const v1::TaskRef& t : r.config().tasks()) tasks.push_back(t.name());
    rows.push_back({r.config().name(), r.config().source(), OrDash(absl::StrJoin(tasks, ",")),
                    FormatUnixMillis(r.created_unix_ms())});
  }
  return FormatTable({"NAME", "SOURCE", "TASKS", "CREATED"}, rows);
}

std::string RunDetailsText(const v1::GetRunResponse& d) {
  const v1::RunConfig& c = d.run().config();
  std::vector<std::vector<std::string>> rows = {
      {"name", c.name()},
      {"source", c.source()},
      {"pattern", OrDash(c.pattern())},
      {"marker", OrDash(c.marker())},
      {"few_shots", absl::StrCat(c.few_shots())},
      {"tokenizer", OrDash(c.tokenizer_path())},
      {"settle_seconds", absl::StrCat(c.settle_seconds())},
      {"created", FormatUnixMillis(d.run().created_unix_ms())},
  };
  for (const v1::TaskRef& t : c.tasks()) {
    rows.push_back({"task", absl::StrCat(t.name(), "  sha256:", t.sha256().substr(0, 12))});
  }
  rows.push_back({"checkpoints", absl::StrCat(d.checkpoints())});
  rows.push_back({"evaluated", absl::StrCat(d.evaluated())});
  rows.push_back({"failed", absl::StrCat(d.failed())});
  rows.push_back({"newest_step", absl::StrCat(d.newest_step())});
  rows.push_back({"newest_evaluated", absl::StrCat(d.newest_evaluated_step())});
  std::map<std::string, uint32_t> sorted(d.jobs_by_state().begin(), d.jobs_by_state().end());
  std::vector<std::string> jobs;
  for (const auto& [state, n] : sorted) jobs.push_back(absl::StrCat(state, "=", n));
  rows.push_back({"jobs", OrDash(absl::StrJoin(jobs, " "))});
  std::string out;
  size_t width = 0;
  for (const auto& r : rows) width = std::max(width, r[0].size());
  for (const auto& r : rows) {
    absl::StrAppendFormat(&out, "%-*s  %s\n", static_cast<int>(width + 1),
                          absl::StrCat(r[0], ":"), r[1]);
  }
  return out;
}

std::string CheckpointsTable(const std::vector<v1::Checkpoint>& checkpoints) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::Checkpoint& c : checkpoints) {
    rows.push_back({absl::StrCat(c.step()), CheckpointStateName(c.state()), c.path(),
                    OrDash(c.error())});
  }
  return FormatTable({"STEP", "STATE", "PATH", "ERROR"}, rows, {true});
}

std::string JobsTable(const std::vector<v1::Job>& jobs) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::Job& j : jobs) {
    rows.push_back({absl::StrCat(j.id()), j.run(), j.kind(), StepsText(j), JobStateName(j.state()),
                    absl::StrCat(j.attempts()), OrDash(j.worker_id()), OrDash(j.error())});
  }
  return FormatTable({"ID", "RUN", "KIND", "STEPS", "STATE", "ATTEMPTS", "WORKER", "ERROR"}, rows,
                     {true, false, false, false, false, true});
}

std::string WorkersTable(const std::vector<v1::WorkerInfo>& workers) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::WorkerInfo& w : workers) {
    rows.push_back({w.id(), OrDash(w.name()), OrDash(w.device()), WorkerStateName(w.state()),
                    w.current_job() == 0 ? "-" : absl::StrCat(w.current_job()),
                    absl::StrFormat("%.1fs", w.last_seen_seconds_ago())});
  }
  return FormatTable({"ID", "NAME", "DEVICE", "STATE", "JOB", "LAST_SEEN"}, rows,
                     {false, false, false, false, true, true});
}

std::string ScoresTables(const std::vector<v1::Score>& scores) {
  // variant -> step -> task -> score; variant -> task -> metric.
  std::map<std::string, std::map<uint64_t, std::map<std::string, double>>> values;
  std::map<std::string, std::map<std::string, std::string>> metrics;
  for (const v1::Score& s : scores) {
    values[s.variant()][s.step()][s.task()] = s.score();
    metrics[s.variant()][s.task()] = s.metric();
  }
  std::vector<std::string> variants;
  for (const auto& [v, unused] : values) variants.push_back(v);
  std::sort(variants.begin(), variants.end(), VariantLess);

  std::string out;
  for (const std::string& variant : variants) {
    std::vector<std::string> tasks;
    std::vector<std::string> metric_notes;
    for (const auto& [task, metric] : metrics[variant]) {
      tasks.push_back(task);
      metric_notes.push_back(absl::StrCat(task, "=", metric));
    }
    if (!out.empty()) out += '\n';
    absl::StrAppend(&out, "variant ", variant, "  (metrics: ", absl::StrJoin(metric_notes, ", "),
                    ")\n");
    std::vector<std::string> header = {"STEP"};
    header.insert(header.end(), tasks.begin(), tasks.end());
    std::vector<std::vector<std::string>> rows;
    for (const auto& [step, by_task] : values[variant]) {
      std::vector<std::string> row = {absl::StrCat(step)};
      for (const std::string& task : tasks) {
        auto it = by_task.find(task);
        row.push_back(it == by_task.end() ? "-" : absl::StrFormat("%.4f", it->second));
      }
      rows.push_back(std::move(row));
    }
    out += FormatTable(header, rows, std::vector<bool>(header.size(), true));
  }
  return out;
}

}  // namespace steadyeval::client
