#include "client/format.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include <cmath>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/text_escape.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "api/variant_proto.h"
#include "common/variant.h"

namespace steadyeval::client {
namespace {

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

// Length in bytes of the UTF-8 sequence starting with `c`.
size_t Utf8Length(unsigned char c) {
  if (c >= 0xF0) return 4;
  if (c >= 0xE0) return 3;
  if (c >= 0xC0) return 2;
  return 1;
}

// `s` on one line (line breaks and tabs become spaces), cut to at most `width` terminal
// columns with a trailing "…" when cut. Never splits a UTF-8 sequence.
std::string OneLineTruncated(const std::string& s, size_t width) {
  std::string flat;
  flat.reserve(s.size());
  for (char c : s) flat += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  flat = Printable(flat);  // no terminal control sequences from model outputs or names
  if (DisplayWidth(flat) <= width) return flat;
  std::string out;
  size_t used = 0;
  for (size_t i = 0; i < flat.size();) {
    const size_t len = std::min(Utf8Length(static_cast<unsigned char>(flat[i])), flat.size() - i);
    const std::string ch = flat.substr(i, len);
    const size_t w = DisplayWidth(ch);
    if (used + w + 1 > width) break;  // keep one column for "…"
    out += ch;
    used += w;
    i += len;
  }
  return out + "…";
}

Json OptionalNumber(bool has, double value) {
  if (!has || !std::isfinite(value)) return nullptr;
  return value;
}

std::string OptionalFixed(bool has, double value) {
  if (!has || !std::isfinite(value)) return "-";
  return absl::StrFormat("%.4f", value);
}

std::string ScoreMark(double score) {
  if (score == 1.0) return "✓";
  if (score == 0.0) return "✗";
  return absl::StrFormat("%.2f", score);
}

int KindRank(const std::string& kind) {
  if (kind == "task") return 0;
  if (kind == "category") return 1;
  if (kind == "avg") return 2;
  return 3;
}

// The stability rows grouped by kind (tasks, categories, AVG), each group in the order the
// server first names its tasks, each task's variants raw, avg@n, ens@n, ens-soft@n.
std::vector<v1::StabilityRow> SortedStabilityRows(const v1::GetStabilityResponse& s) {
  std::map<std::pair<int, std::string>, size_t> first_seen;
  for (const v1::StabilityRow& r : s.rows()) {
    first_seen.emplace(std::make_pair(KindRank(r.kind()), r.task()), first_seen.size());
  }
  std::vector<v1::StabilityRow> rows(s.rows().begin(), s.rows().end());
  std::stable_sort(rows.begin(), rows.end(),
                   [&](const v1::StabilityRow& a, const v1::StabilityRow& b) {
                     const int ka = KindRank(a.kind()), kb = KindRank(b.kind());
                     if (ka != kb) return ka < kb;
                     const size_t ta = first_seen.at({ka, a.task()});
                     const size_t tb = first_seen.at({kb, b.task()});
                     if (ta != tb) return ta < tb;
                     return VariantLess(VariantNameOf(a), VariantNameOf(b));
                   });
  return rows;
}

std::string StepsText(const v1::Job& job) {
  if (job.steps_size() == 0) return "-";
  if (job.steps_size() <= 3) return absl::StrJoin(job.steps(), ",");
  return absl::StrCat(job.steps(0), "..", job.steps(job.steps_size() - 1), " (",
                      job.steps_size(), ")");
}

}  // namespace

size_t DisplayWidth(const std::string& s, bool skip_ansi_escapes) {
  size_t width = 0;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (skip_ansi_escapes && c == 0x1B && i + 1 < s.size() && s[i + 1] == '[') {
      i += 2;  // CSI: ESC [ params final
      while (i < s.size() && !(s[i] >= 0x40 && s[i] <= 0x7E)) ++i;
      ++i;
      continue;
    }
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

std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& raw_rows,
                        const std::vector<bool>& right_aligned) {
  // Cells hold text from the server (names, paths, reasons): escape control characters.
  std::vector<std::vector<std::string>> rows = raw_rows;
  for (auto& row : rows) {
    for (std::string& cell : row) cell = Printable(cell);
  }
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

std::string FormatUnixMillis(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%SZ", absl::FromUnixMillis(unix_ms),
                          absl::UTCTimeZone());
}

bool VariantLess(const std::string& a, const std::string& b) {
  // Variants in table order, then names this client cannot parse (a newer server's) by text.
  auto key = [](const std::string& v) {
    absl::StatusOr<Variant> parsed = ParseVariant(v);
    return std::make_tuple(!parsed.ok(), parsed.ok() ? *parsed : Variant::Raw(), v);
  };
  return key(a) < key(b);
}

namespace {

// A YAML single-quoted scalar ('' stands for ').
std::string YamlQuote(absl::string_view s) {
  return absl::StrCat("'", absl::StrReplaceAll(s, {{"'", "''"}}), "'");
}

std::string YamlWindows(const google::protobuf::RepeatedField<uint32_t>& windows) {
  return absl::StrCat("[", absl::StrJoin(windows, ", "), "]");
}

}  // namespace

Json RunToJson(const v1::Run& run) {
  const v1::RunConfig& c = run.config();
  Json tasks = Json::array();
  for (const v1::TaskRef& t : c.tasks()) {
    tasks.push_back({{"name", t.name()},
                     {"sha256", t.sha256()},
                     {"category", t.category()},
                     {"metric", t.metric()},
                     {"max_samples", t.max_samples()}});
  }
  Json average = Json::array();
  for (uint32_t n : c.average_windows()) average.push_back(n);
  Json ensemble = Json::array();
  for (uint32_t n : c.ensemble_windows()) ensemble.push_back(n);
  return Json{{"name", c.name()},
              {"source", c.source()},
              {"s3_endpoint", c.s3_endpoint()},
              {"s3_region", c.s3_region()},
              {"convert", c.convert()},
              {"pattern", c.pattern()},
              {"marker", c.marker()},
              {"tasks", std::move(tasks)},
              {"few_shots", c.few_shots()},
              {"prompt_language", c.prompt_language()},
              {"bos", c.bos()},
              {"max_new_tokens_delta", c.max_new_tokens_delta()},
              {"tokenizer_path", c.tokenizer_path()},
              {"tokenizer_sha256", run.tokenizer_sha256()},
              {"tokenizer_pinned_step", run.tokenizer_pinned_step()},
              {"settle_seconds", c.settle_seconds()},
              {"average_windows", std::move(average)},
              {"ensemble_windows", std::move(ensemble)},
              {"created_unix_ms", run.created_unix_ms()},
              {"paused", run.paused()},
              {"managed_by", run.managed_by()}};
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
              {"jobs_by_state", std::move(by_state)},
              {"source_error", d.source_error()},
              {"source_error_since_unix_ms", d.source_error_since_unix_ms()}};
}

std::string RunAsYaml(const v1::Run& run) {
  const v1::RunConfig& c = run.config();
  std::string out = absl::StrCat(
      "# steadyeval runs show ", c.name(), " --yaml: an entry of a config file's runs: list.\n",
      "# Task files are named relative to the config file; fix their paths if they live "
      "elsewhere.\n",
      run.managed_by().empty() ? "" : absl::StrCat("# Declared in ", run.managed_by(), "\n"),
      "- name: ", YamlQuote(c.name()), "\n  source: ", YamlQuote(c.source()), "\n");
  auto optional = [&out](const char* key, const std::string& value) {
    if (!value.empty()) absl::StrAppend(&out, "  ", key, ": ", YamlQuote(value), "\n");
  };
  optional("s3_endpoint", c.s3_endpoint());
  optional("s3_region", c.s3_region());
  optional("convert", c.convert());
  optional("pattern", c.pattern());
  optional("marker", c.marker());
  optional("tokenizer", c.tokenizer_path());
  absl::StrAppend(&out, "  few_shots: ", c.few_shots(), "\n  settle_seconds: ",
                  c.settle_seconds(), "\n  prompt_language: ", YamlQuote(c.prompt_language()),
                  "\n  bos: ", YamlQuote(c.bos()), "\n  max_new_tokens_delta: ",
                  c.max_new_tokens_delta(), "\n  average: ", YamlWindows(c.average_windows()),
                  "\n  ensemble: ", YamlWindows(c.ensemble_windows()), "\n  tasks:\n");
  for (const v1::TaskRef& t : c.tasks()) {
    const std::string file = t.filename().empty() ? t.name() + ".jsonl" : t.filename();
    absl::StrAppend(&out, "    - file: ", YamlQuote(file), "\n");
    if (!t.category().empty()) absl::StrAppend(&out, "      category: ", t.category(), "\n");
    if (!t.metric().empty()) absl::StrAppend(&out, "      metric: ", YamlQuote(t.metric()), "\n");
    absl::StrAppend(&out, "      max_samples: ", t.max_samples(), "\n");
  }
  return out;
}

Json CheckpointsToJson(const std::vector<v1::Checkpoint>& checkpoints,
                       const std::vector<v1::PendingCheckpoint>& pending) {
  Json list = Json::array();
  for (const v1::Checkpoint& c : checkpoints) {
    list.push_back(Json{{"step", c.step()},
                        {"path", c.path()},
                        {"state", CheckpointStateName(c.state())},
                        {"error", c.error()},
                        {"admitted_unix_ms", c.admitted_unix_ms()}});
  }
  Json waiting = Json::array();
  for (const v1::PendingCheckpoint& p : pending) {
    waiting.push_back(Json{{"step", p.step()},
                           {"path", p.path()},
                           {"state", p.incomplete() ? "incomplete" : "settling"},
                           {"reason", p.reason()},
                           {"since_unix_ms", p.since_unix_ms()}});
  }
  return Json{{"checkpoints", std::move(list)}, {"pending", std::move(waiting)}};
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
                        {"kind", JobKindNameOf(j)},
                        {"steps", std::move(steps)},
                        {"state", JobStateName(j.state())},
                        {"attempts", j.attempts()},
                        {"error", j.error()},
                        {"worker", j.worker_id()},
                        {"epoch", j.epoch()},
                        {"bos", j.bos()},
                        {"tasks", std::move(tasks)},
                        {"created_unix_ms", j.created_unix_ms()},
                        {"finished_unix_ms", j.finished_unix_ms()},
                        {"superseded_by", j.state() == v1::JOB_SUPERSEDED && j.superseded_by() != 0
                                              ? Json(j.superseded_by())
                                              : Json(nullptr)}});
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
                        {"variant", VariantNameOf(s)},
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

std::string RunDetailsText(const v1::GetRunResponse& d, int64_t now_unix_ms) {
  const v1::RunConfig& c = d.run().config();
  std::vector<std::vector<std::string>> rows = {{"name", c.name()}, {"source", c.source()}};
  // A bucket's endpoint and region (never credentials: the server reads its own), and the
  // converter, when set.
  if (!c.s3_endpoint().empty() || !c.s3_region().empty()) {
    rows.push_back({"s3_endpoint", c.s3_endpoint().empty() ? "AWS" : c.s3_endpoint()});
  }
  if (!c.s3_region().empty()) rows.push_back({"s3_region", c.s3_region()});
  if (!c.convert().empty()) rows.push_back({"convert", c.convert()});
  if (!d.source_error().empty()) {
    rows.push_back({"source_error",
                    absl::StrCat(d.source_error(), " (for ",
                                 FormatAge(now_unix_ms - d.source_error_since_unix_ms()),
                                 "; the server keeps polling)")});
  }
  const std::vector<std::vector<std::string>> settings = {
      {"pattern", OrDash(c.pattern())},
      {"marker", OrDash(c.marker())},
      {"few_shots", absl::StrCat(c.few_shots())},
      {"prompt_language", OrDash(c.prompt_language())},
      {"bos", OrDash(c.bos())},
      {"max_new_tokens_delta", absl::StrCat(c.max_new_tokens_delta())},
      {"tokenizer", OrDash(c.tokenizer_path())},
      {"tokenizer_pinned",
       d.run().tokenizer_sha256().empty()
           ? "- (pinned by the first result)"
           : absl::StrCat("sha256 ", d.run().tokenizer_sha256().substr(0, 16), "… at step ",
                          d.run().tokenizer_pinned_step())},
      {"settle_seconds", absl::StrCat(c.settle_seconds())},
      {"average_windows", OrDash(absl::StrJoin(c.average_windows(), ","))},
      {"ensemble_windows", OrDash(absl::StrJoin(c.ensemble_windows(), ","))},
      {"created", FormatUnixMillis(d.run().created_unix_ms())},
  };
  rows.insert(rows.end(), settings.begin(), settings.end());
  if (d.run().paused()) {
    rows.push_back({"paused", absl::StrCat("yes: no admissions, no leases (steadyeval runs resume ",
                                           c.name(), ")")});
  }
  for (const v1::TaskRef& t : c.tasks()) {
    std::string text = t.name();
    if (!t.category().empty()) absl::StrAppend(&text, " [", t.category(), "]");
    if (!t.metric().empty()) absl::StrAppend(&text, "  metric:", t.metric());
    if (t.max_samples() > 0) absl::StrAppend(&text, "  max_samples:", t.max_samples());
    if (!t.sha256().empty()) absl::StrAppend(&text, "  sha256:", t.sha256().substr(0, 12));
    rows.push_back({"task", text});
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
                          absl::StrCat(r[0], ":"), Printable(r[1]));
  }
  return out;
}

std::string FormatAge(int64_t millis) {
  const int64_t s = std::max<int64_t>(0, millis) / 1000;
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, s % 3600 / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, s % 86400 / 3600);
}

std::string CheckpointsTable(const std::vector<v1::Checkpoint>& checkpoints,
                             const std::vector<v1::PendingCheckpoint>& pending,
                             int64_t now_unix_ms) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::Checkpoint& c : checkpoints) {
    rows.push_back({absl::StrCat(c.step()), CheckpointStateName(c.state()), c.path(),
                    OrDash(c.error())});
  }
  for (const v1::PendingCheckpoint& p : pending) {
    rows.push_back({absl::StrCat(p.step()), p.incomplete() ? "incomplete" : "settling", p.path(),
                    absl::StrCat(OrDash(p.reason()), " (for ",
                                 FormatAge(now_unix_ms - p.since_unix_ms()), ")")});
  }
  return FormatTable({"STEP", "STATE", "PATH", "ERROR"}, rows, {true});
}

std::string JobsTable(const std::vector<v1::Job>& jobs) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::Job& j : jobs) {
    std::string error = j.error();
    if (j.state() == v1::JOB_SUPERSEDED && j.superseded_by() != 0 && error.empty()) {
      error = absl::StrCat("superseded by job ", j.superseded_by());
    }
    rows.push_back({absl::StrCat(j.id()), j.run(), JobKindNameOf(j), StepsText(j),
                    JobStateName(j.state()), absl::StrCat(j.attempts()), OrDash(j.worker_id()),
                    OrDash(error)});
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
    values[VariantNameOf(s)][s.step()][s.task()] = s.score();
    metrics[VariantNameOf(s)][s.task()] = s.metric();
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

Json StabilityToJson(const v1::GetStabilityResponse& s) {
  Json range = nullptr;
  if (s.has_range()) {
    range = Json{{"from_step", s.range().from_step()}, {"to_step", s.range().to_step()}};
  }
  Json rows = Json::array();
  for (const v1::StabilityRow& r : s.rows()) {
    rows.push_back(Json{{"task", r.task()},
                        {"kind", r.kind()},
                        {"variant", VariantNameOf(r)},
                        {"metric", r.metric()},
                        {"mean", OptionalNumber(r.has_mean(), r.mean())},
                        {"mtv", OptionalNumber(r.has_mtv(), r.mtv())},
                        {"example_mtv", OptionalNumber(r.has_example_mtv(), r.example_mtv())},
                        {"is", OptionalNumber(r.has_instability(), r.instability())},
                        {"checkpoints", r.checkpoints()}});
  }
  return Json{
      {"run", s.run()},
      {"range", std::move(range)},
      {"rows", std::move(rows)},
      {"median_drift",
       Json{{"l2", OptionalNumber(s.has_median_drift_l2(), s.median_drift_l2())},
            {"relative", OptionalNumber(s.has_median_drift_relative(), s.median_drift_relative())},
            {"pairs", s.drift_pairs()}}}};
}

Json ExamplesToJson(const std::string& run, const std::string& task,
                    const v1::GetExamplesResponse& examples) {
  Json list = Json::array();
  for (const v1::ExampleHistory& e : examples.examples()) {
    Json points = Json::array();
    for (const v1::ExamplePoint& p : e.points()) {
      points.push_back(Json{{"variant", VariantNameOf(p)},
                            {"step", p.step()},
                            {"output", p.output()},
                            {"normalized", p.normalized()},
                            {"score", OptionalNumber(true, p.score())}});
    }
    list.push_back(Json{{"example", e.example()},
                        {"input", e.input()},
                        {"gold", e.gold()},
                        {"flips", e.flips()},
                        {"points", std::move(points)}});
  }
  return Json{{"run", run}, {"task", task}, {"examples", std::move(list)}};
}

std::string ExportJsonLine(const v1::ExportedPrediction& p) {
  Json metrics = Json::object();
  std::map<std::string, double> sorted(p.metrics().begin(), p.metrics().end());
  for (const auto& [name, value] : sorted) metrics[name] = OptionalNumber(true, value);
  Json line{{"step", p.step()},
            {"task", p.task()},
            {"variant", VariantNameOf(p)},
            {"example", p.example()},
            {"output", p.output()},
            {"normalized_output", p.normalized_output()},
            {"score", OptionalNumber(true, p.score())},
            {"metrics", std::move(metrics)}};
  return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string CsvField(const std::string& value) {
  const bool quote = value.find_first_of(",\"\r\n") != std::string::npos ||
                     (!value.empty() && (value.front() == ' ' || value.back() == ' '));
  if (!quote) return value;
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string FormatNumber(double value) {
  if (!std::isfinite(value)) return "";
  for (int precision = 1; precision <= 17; ++precision) {
    std::string text = absl::StrFormat("%.*g", precision, value);
    double back = 0;
    if (absl::SimpleAtod(text, &back) && back == value) return text;
  }
  return absl::StrFormat("%.17g", value);
}

std::string StabilityText(const v1::GetStabilityResponse& s) {
  std::string out = absl::StrCat("run ", s.run(), "  steps ",
                                 s.has_range() ? absl::StrCat(s.range().from_step(), "..",
                                                              s.range().to_step())
                                               : std::string("- (no raw points yet)"));
  if (s.has_median_drift_l2() || s.has_median_drift_relative()) {
    absl::StrAppend(&out, "  median parameter drift: l2 ",
                    s.has_median_drift_l2() ? absl::StrFormat("%.4g", s.median_drift_l2())
                                            : std::string("-"),
                    ", relative ",
                    s.has_median_drift_relative()
                        ? absl::StrFormat("%.3g", s.median_drift_relative())
                        : std::string("-"),
                    " (", s.drift_pairs(), s.drift_pairs() == 1 ? " pair)" : " pairs)");
  }
  out += '\n';
  if (s.rows_size() == 0) return out + "no scores in range\n";
  std::vector<std::vector<std::string>> rows;
  for (const v1::StabilityRow& r : SortedStabilityRows(s)) {
    rows.push_back({r.task(), VariantNameOf(r), OptionalFixed(r.has_mean(), r.mean()),
                    OptionalFixed(r.has_mtv(), r.mtv()),
                    OptionalFixed(r.has_example_mtv(), r.example_mtv()),
                    OptionalFixed(r.has_instability(), r.instability()),
                    absl::StrCat(r.checkpoints())});
  }
  out += FormatTable({"TASK", "VARIANT", "MEAN", "MTV", "EX-MTV", "IS", "N"}, rows,
                     {false, false, true, true, true, true, true});
  return out;
}

std::string ExamplesText(const v1::GetExamplesResponse& examples, size_t input_width) {
  std::string out;
  for (const v1::ExampleHistory& e : examples.examples()) {
    if (!out.empty()) out += '\n';
    absl::StrAppend(&out, "example ", e.example(), "  flips ", e.flips(), "\n");
    absl::StrAppend(&out, "input: ", OneLineTruncated(e.input(), input_width), "\n");
    absl::StrAppend(&out, "gold:  ", OneLineTruncated(e.gold(), input_width), "\n");
    // step -> variant -> cell.
    std::map<uint64_t, std::map<std::string, std::string>> cells;
    std::vector<std::string> variants;
    for (const v1::ExamplePoint& p : e.points()) {
      if (std::find(variants.begin(), variants.end(), VariantNameOf(p)) == variants.end()) {
        variants.push_back(VariantNameOf(p));
      }
      const std::string shown =
          p.normalized().empty() ? std::string("\"\"") : OneLineTruncated(p.normalized(), 30);
      cells[p.step()][VariantNameOf(p)] = absl::StrCat(shown, " ", ScoreMark(p.score()));
    }
    if (cells.empty()) {
      out += "no predictions stored\n";
      continue;
    }
    std::sort(variants.begin(), variants.end(), VariantLess);
    std::vector<std::string> header = {"STEP"};
    header.insert(header.end(), variants.begin(), variants.end());
    std::vector<std::vector<std::string>> rows;
    for (const auto& [step, by_variant] : cells) {
      std::vector<std::string> row = {absl::StrCat(step)};
      for (const std::string& v : variants) {
        auto it = by_variant.find(v);
        row.push_back(it == by_variant.end() ? "-" : it->second);
      }
      rows.push_back(std::move(row));
    }
    out += FormatTable(header, rows, {true});
  }
  return out;
}

}  // namespace steadyeval::client
