// Observability end to end, against Debian's real Prometheus: a coordinator and a worker
// on 127.0.0.1 are scraped every second (the worker found through file-based service
// discovery once it has bound its port), the repository's alert rules are loaded, and a
// small evaluation runs: five good checkpoints, one whose config names an unknown
// architecture (its jobs fail for good) and one folder that never becomes complete.
// Checks, through Prometheus's HTTP API:
//   - before any worker runs: eval lag = the newest step, every job pending, no worker alive;
//   - afterwards: every job gauge equals the coordinator's own job list, finished / failed
//     counters, checkpoints discovered / admitted / failed / incomplete, eval lag 0, every
//     score / MTV / IS gauge equals `steadyeval scores` / `steadyeval stability`, the
//     worker's job, example, load and throughput series, RPC counters;
//   - every alert and recording rule evaluates without error, and every PromQL expression
//     in the Grafana dashboards (template variables substituted) evaluates without error,
//     names only documented metrics and returns data.
#include <signal.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "testing/files.h"
#include "testing/http.h"
#include "testing/temp_dir.h"
#include "testing/wait.h"
#include "testing/process.h"
#include "testing/service_processes.h"

namespace steadyeval::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kRun[] = "prom";
constexpr char kWorker[] = "w1";

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char hex[4];
      snprintf(hex, sizeof(hex), "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

// The metric names docs/metrics.md documents (first column of its tables).
std::set<std::string> DocumentedMetrics() {
  std::set<std::string> names;
  std::istringstream doc(ReadFileOrEmpty(SourceDir() + "/docs/metrics.md"));
  static const std::regex row(R"(^\| `(steadyeval_[a-z0-9_]+)`)");
  std::string line;
  std::smatch m;
  while (std::getline(doc, line)) {
    if (std::regex_search(line, m, row)) names.insert(m[1]);
  }
  return names;
}

// Metric names an expression refers to: steadyeval_* (histogram suffixes removed) and
// recording-rule names steadyeval:*.
std::set<std::string> MetricsIn(const std::string& expr) {
  std::set<std::string> names;
  static const std::regex name(R"(steadyeval[_:][a-zA-Z0-9_:]*)");
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), name); it != std::sregex_iterator(); ++it) {
    std::string n = it->str();
    for (const char* suffix : {"_bucket", "_count", "_sum"}) {
      const std::string s = suffix;
      if (n.size() > s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0 &&
          n.find(':') == std::string::npos) {
        n.resize(n.size() - s.size());
      }
    }
    names.insert(n);
  }
  return names;
}

// A dashboard's PromQL: every panel target's `expr` (nested rows included) and every
// template variable's query.
struct DashboardQuery {
  std::string where;  // dashboard file and panel title, for messages
  std::string expr;
  bool variable = false;
};

void CollectQueries(const json& node, const std::string& file, const std::string& title,
                    std::vector<DashboardQuery>* out) {
  if (node.is_array()) {
    for (const json& item : node) CollectQueries(item, file, title, out);
    return;
  }
  if (!node.is_object()) return;
  std::string here = title;
  if (node.contains("title") && node["title"].is_string()) here = node["title"].get<std::string>();
  if (node.contains("targets") && node["targets"].is_array()) {
    for (const json& target : node["targets"]) {
      if (target.contains("expr") && target["expr"].is_string()) {
        out->push_back({absl::StrCat(file, ": panel '", here, "'"), target["expr"].get<std::string>()});
      }
    }
  }
  if (node.contains("templating") && node["templating"].contains("list")) {
    for (const json& variable : node["templating"]["list"]) {
      if (variable.value("type", "") != "query") continue;
      const json& q = variable["query"];
      std::string expr = q.is_string() ? q.get<std::string>() : q.value("query", "");
      out->push_back({absl::StrCat(file, ": variable '", variable.value("name", ""), "'"), expr, true});
    }
  }
  for (const auto& [key, value] : node.items()) {
    if (key != "targets" && key != "templating") CollectQueries(value, file, here, out);
  }
}

class PrometheusEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bin_ = BinDir();
    const char* prometheus = std::getenv("STEADYEVAL_PROMETHEUS_BIN");
    prometheus_bin_ = prometheus ? prometheus : "/usr/bin/prometheus";
    ASSERT_TRUE(fs::exists(prometheus_bin_))
        << prometheus_bin_ << " not found: install Debian's prometheus (scripts/install-deps.sh) "
        << "or point STEADYEVAL_PROMETHEUS_BIN at a prometheus binary";
    ckpts_ = tmp_ / "checkpoints";
    fs::create_directories(ckpts_);
    ASSERT_EQ(RunFixtures({"tokenizer", "--out", tmp_ / "tok"}).exit_code, 0);
    ASSERT_EQ(RunFixtures({"tasks", "--out", tmp_ / "tasks"}).exit_code, 0);
  }

  void TearDown() override {
    for (ChildProcess* p : {&worker_, &server_, &prometheus_}) {
      if (p->pid() > 0 && p->running()) p->Stop(SIGTERM);
    }
  }

  std::string CheckpointDir(uint64_t step) { return ckpts_ + "/" + StepFolderName(step); }

  // Writes checkpoint `step` elsewhere and renames it into the watched folder, so the
  // coordinator never sees it half-written (or, when `model_type` is given, with the
  // original config.json).
  void WriteCheckpoint(uint64_t step, const std::string& model_type = "") {
    const std::string staging = tmp_ / absl::StrCat("staging_", step);
    CommandResult r = RunFixtures({"checkpoint", "--out", staging, "--step",
                                   std::to_string(step), "--tokenizer", tmp_ / "tok/tokenizer.model"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    if (!model_type.empty()) {
      json config = json::parse(ReadFileOrEmpty(staging + "/config.json"));
      config["model_type"] = model_type;
      std::ofstream(staging + "/config.json") << config.dump();
    }
    fs::rename(staging, CheckpointDir(step));
  }

  void StartServer() {
    const std::string ready = tmp_ / "ready.json";
    auto server = ChildProcess::Start(
        {bin_ + "/steadyeval-server", "--data_dir", tmp_ / "data", "--listen", "127.0.0.1:0",
         "--metrics_listen", "127.0.0.1:0", "--ready_file", ready, "--poll_interval_ms", "200",
         "--lease_ttl_ms", "4000"},
        tmp_ / "server");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_TRUE(WaitFor([&] { return fs::exists(ready) && fs::file_size(ready) > 0; }, seconds(30)))
        << server_.Logs();
    const json info = json::parse(ReadFileOrEmpty(ready));
    addr_ = info["grpc"].get<std::string>();
    server_metrics_ = info["metrics"].get<std::string>();
  }

  // Prometheus scraping the coordinator statically and workers listed in workers.json,
  // with the repository's rule files; waits until it is ready.
  void StartPrometheus() {
    workers_sd_ = tmp_ / "workers.json";
    std::ofstream(workers_sd_) << "[]";
    const std::string config = tmp_ / "prometheus.yml";
    std::ofstream(config) << "global:\n"
                          << "  scrape_interval: 1s\n"
                          << "  evaluation_interval: 1s\n"
                          << "rule_files:\n"
                          << "  - " << SourceDir() << "/deploy/prometheus/rules/*.yml\n"
                          << "scrape_configs:\n"
                          << "  - job_name: steadyeval-server\n"
                          << "    static_configs:\n"
                          << "      - targets: ['" << server_metrics_ << "']\n"
                          << "  - job_name: steadyeval-worker\n"
                          << "    file_sd_configs:\n"
                          << "      - files: ['" << workers_sd_ << "']\n"
                          << "        refresh_interval: 1s\n";
    auto prometheus = ChildProcess::Start(
        {prometheus_bin_, "--config.file", config, "--storage.tsdb.path", tmp_ / "tsdb",
         "--web.listen-address", "127.0.0.1:0", "--log.level", "info"},
        tmp_ / "prometheus");
    ASSERT_TRUE(prometheus.ok()) << prometheus.status();
    prometheus_ = std::move(*prometheus);
    // Prometheus logs the port it bound: msg="Listening on" address=127.0.0.1:PORT.
    static const std::regex listening(R"re(msg="Listening on" address=127\.0\.0\.1:(\d+))re");
    ASSERT_TRUE(WaitFor(
        [&] {
          std::smatch m;
          const std::string logs = prometheus_.Logs();
          if (!std::regex_search(logs, m, listening)) return false;
          prometheus_port_ = std::stoi(m[1]);
          return true;
        },
        seconds(60)))
        << prometheus_.Logs();
    ASSERT_TRUE(WaitFor([&] { return HttpOkBody(HttpGet(prometheus_port_, "/-/ready")).size() > 0; }, seconds(60)))
        << prometheus_.Logs();
  }

  void StartWorker() {
    auto worker = ChildProcess::Start(
        {bin_ + "/steadyeval-worker", "--coordinator", addr_, "--name", kWorker, "--threads", "1",
         "--acquire_wait_ms", "500", "--metrics_listen", "127.0.0.1:0"},
        tmp_ / "worker");
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_ = std::move(*worker);
    static const std::regex metrics(R"(metrics=(127\.0\.0\.1:\d+))");
    std::string address;
    ASSERT_TRUE(WaitFor(
        [&] {
          std::smatch m;
          const std::string logs = worker_.Logs();
          if (!std::regex_search(logs, m, metrics)) return false;
          address = m[1];
          return true;
        },
        seconds(60)))
        << worker_.Logs();
    // Prometheus re-reads the file on change; write it whole, then rename.
    const std::string temp = workers_sd_ + ".tmp";
    std::ofstream(temp) << json::array({{{"targets", {address}}}}).dump();
    fs::rename(temp, workers_sd_);
  }

  json Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {bin_ + "/steadyeval", "--server", addr_, "--json"});
    CommandResult r = RunCommand(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    json doc = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(doc.is_discarded()) << r.out;
    return doc;
  }

  // GET /api/v1/<endpoint>; the "data" member, or null (with a test failure) when the
  // request fails or Prometheus answers an error.
  json Api(const std::string& endpoint_and_query) {
    const std::string body = HttpOkBody(HttpGet(prometheus_port_, "/api/v1/" + endpoint_and_query));
    json doc = json::parse(body, nullptr, false);
    if (doc.is_discarded() || doc.value("status", "") != "success") {
      ADD_FAILURE() << "Prometheus /api/v1/" << endpoint_and_query << " answered: " << body;
      return json();
    }
    return doc["data"];
  }

  // An instant query's result vector (empty on error, after a test failure).
  json Query(const std::string& expr) {
    json data = Api("query?query=" + UrlEncode(expr));
    if (data.is_null()) return json::array();
    if (data["resultType"] == "scalar") return json::array({{{"metric", json::object()}, {"value", data["result"]}}});
    return data["result"];
  }

  // The value of a query that yields exactly one series; nullopt otherwise.
  std::optional<double> Value(const std::string& expr) {
    json result = Query(expr);
    if (result.size() != 1) return std::nullopt;
    double v = 0;
    if (!absl::SimpleAtod(result[0]["value"][1].get<std::string>(), &v)) return std::nullopt;
    return v;
  }

  // Waits until `expr` has exactly one value, equal to `expected` (within `tolerance`:
  // the text exposition format prints doubles with 15 significant digits); then checks
  // it. Prometheus scrapes every second.
  void ExpectEventually(const std::string& expr, double expected, double tolerance = 0) {
    auto matches = [&](std::optional<double> v) {
      return v.has_value() && std::abs(*v - expected) <= tolerance;
    };
    WaitFor([&] { return matches(Value(expr)); }, seconds(30), milliseconds(250));
    const std::optional<double> value = Value(expr);
    EXPECT_TRUE(matches(value)) << expr << " is " << (value ? absl::StrCat(*value) : "not one series")
                                << ", expected " << expected << "\n" << Query(expr).dump();
  }

  std::string Logs() { return server_.Logs() + worker_.Logs() + prometheus_.Logs(); }

  TempDir tmp_;
  std::string bin_;
  std::string prometheus_bin_;
  std::string ckpts_;
  std::string addr_;
  std::string server_metrics_;
  std::string workers_sd_;
  int prometheus_port_ = 0;
  ChildProcess server_;
  ChildProcess worker_;
  ChildProcess prometheus_;
};

TEST_F(PrometheusEndToEndTest, ScrapedSeriesMatchTheCoordinatorAndEveryQueryEvaluates) {
  const std::string mc_task = tmp_ / "tasks/arith_mc.jsonl";
  const std::string gen_task = tmp_ / "tasks/qa_gen.json";
  WriteCheckpoint(100);
  WriteCheckpoint(200);
  WriteCheckpoint(250, /*model_type=*/"no_such_architecture");
  WriteCheckpoint(300);
  WriteCheckpoint(400);
  WriteCheckpoint(500);
  // A checkpoint folder that never becomes complete (no weights).
  fs::create_directories(CheckpointDir(600));
  std::ofstream(CheckpointDir(600) + "/config.json") << R"({"model_type": "llama"})";

  StartServer();
  StartPrometheus();
  ASSERT_FALSE(Cli({"runs", "add", kRun, "--source", ckpts_, "--tasks",
                    absl::StrCat(mc_task, ",", gen_task), "--few_shots", "2", "--settle_seconds",
                    "0.3", "--average", "2", "--ensemble", "2"})
                   .is_null());
  json checkpoints;
  ASSERT_TRUE(WaitFor([&] {
    checkpoints = Cli({"checkpoints", kRun});
    return checkpoints["checkpoints"].size() == 6;
  }, seconds(60), milliseconds(250))) << checkpoints.dump(2) << Logs();

  // ---- Before any worker: everything waits, the lag is the newest step. ----
  const std::string run = absl::StrCat("run=\"", kRun, "\"");
  ExpectEventually(absl::StrCat("steadyeval_eval_lag_steps{", run, "}"), 500);
  ExpectEventually(absl::StrCat("sum(steadyeval_jobs{", run, ",state=\"pending\"})"),
                   static_cast<double>(Cli({"jobs", "--run", kRun})["jobs"].size()));
  ExpectEventually("sum(steadyeval_workers{state=~\"idle|busy\"})", 0);
  ExpectEventually(absl::StrCat("steadyeval_checkpoints_admitted_total{", run, "}"), 6);
  ExpectEventually(absl::StrCat("steadyeval_checkpoints_incomplete{", run, "}"), 1);
  // A user asks for a run that does not exist: a NOT_FOUND the RPC counters show.
  EXPECT_NE(RunCommand({bin_ + "/steadyeval", "--server", addr_, "runs", "show", "no_such_run"}).exit_code, 0);
  EXPECT_THAT(Value(absl::StrCat("steadyeval_eval_lag_seconds{", run, "}")),
              ::testing::Optional(::testing::Gt(0.0)));
  ExpectEventually("up{job=\"steadyeval-server\"}", 1);

  // ---- A worker evaluates everything it can. ----
  StartWorker();
  json jobs;
  ASSERT_TRUE(WaitFor([&] {
    jobs = Cli({"jobs", "--run", kRun});
    for (const json& j : jobs["jobs"]) {
      if (j["state"] == "pending" || j["state"] == "leased") return false;
    }
    return true;
  }, seconds(300), milliseconds(500))) << jobs.dump(2) << Logs();
  checkpoints = Cli({"checkpoints", kRun});

  // Job gauges == the coordinator's own list, and the expected outcome: the unknown
  // architecture's raw job failed, the other raw jobs are done.
  std::map<std::pair<std::string, std::string>, int> by_kind_state;
  int done = 0, failed = 0;
  for (const json& j : jobs["jobs"]) {
    ++by_kind_state[{j["kind"].get<std::string>(), j["state"].get<std::string>()}];
    done += j["state"] == "done";
    failed += j["state"] == "failed";
    if (j["kind"] == "raw") {
      EXPECT_EQ(j["state"], j["steps"][0] == 250 ? "failed" : "done") << j.dump();
    }
  }
  ASSERT_GE(done, 5) << jobs.dump(2);
  ASSERT_GE(failed, 1) << jobs.dump(2);
  ExpectEventually(absl::StrCat("sum(steadyeval_jobs{", run, ",state=\"done\"})"), done);
  for (const auto& [key, n] : by_kind_state) {
    ExpectEventually(absl::StrCat("steadyeval_jobs{", run, ",kind=\"", key.first, "\",state=\"",
                                  key.second, "\"}"), n);
  }
  ExpectEventually(absl::StrCat("sum(steadyeval_jobs{", run, ",state=~\"pending|leased\"})"), 0);
  ExpectEventually(absl::StrCat("sum(steadyeval_jobs_finished_total{", run, ",outcome=\"done\"})"), done);
  ExpectEventually(absl::StrCat("sum(steadyeval_jobs_finished_total{", run, ",outcome=\"failed\"})"), failed);
  // Every attempt that did not end in `done` failed (by the worker or by lease expiry).
  int failed_attempts = 0;
  for (const json& j : jobs["jobs"]) {
    failed_attempts += j["attempts"].get<int>() - (j["state"] == "done" ? 1 : 0);
  }
  ExpectEventually(absl::StrCat("sum(steadyeval_job_attempt_failures_total{", run, "})"), failed_attempts);
  ExpectEventually("sum(steadyeval_job_duration_seconds_count)", done);
  ExpectEventually("sum(steadyeval_job_queue_wait_seconds_count)", done + failed);

  // Checkpoints: seven folders seen, six admitted, one failed, one incomplete; the newest
  // admitted one is evaluated, so there is no lag.
  ExpectEventually(absl::StrCat("steadyeval_checkpoints_discovered_total{", run, "}"), 7);
  ExpectEventually(absl::StrCat("steadyeval_checkpoints_admitted_total{", run, "}"), 6);
  ExpectEventually(absl::StrCat("steadyeval_checkpoints_failed_total{", run, "}"), 1);
  ExpectEventually(absl::StrCat("steadyeval_checkpoints{", run, ",state=\"evaluated\"}"), 5);
  ExpectEventually(absl::StrCat("steadyeval_checkpoints{", run, ",state=\"failed\"}"), 1);
  ExpectEventually(absl::StrCat("steadyeval_checkpoints_incomplete{", run, "}"), 1);
  EXPECT_THAT(Value(absl::StrCat("steadyeval_checkpoint_incomplete_age_seconds{", run, "}")),
              ::testing::Optional(::testing::Gt(0.0)));
  ExpectEventually(absl::StrCat("steadyeval_eval_lag_steps{", run, "}"), 0);
  ExpectEventually(absl::StrCat("steadyeval_eval_lag_seconds{", run, "}"), 0);

  // Predictions: 20 multiple-choice and 12 generation examples per done job.
  ExpectEventually("steadyeval_predictions_ingested_total", 32.0 * done);
  ExpectEventually("sum(steadyeval_rpcs_total{method=\"WorkerService/ReportResults\",code=\"OK\"})", done);
  ExpectEventually("sum(steadyeval_rpcs_total{method=\"EvalService/GetRun\",code=\"NOT_FOUND\"})", 1);
  EXPECT_THAT(Value("sum(steadyeval_rpcs_total{method=\"WorkerService/RegisterWorker\",code=\"OK\"})"),
              ::testing::Optional(::testing::Ge(1.0)));
  EXPECT_THAT(Value("sum(steadyeval_rocksdb_size_bytes)"), ::testing::Optional(::testing::Gt(0.0)));

  // Scores: the latest point of every (task, variant), its step, and the default-range
  // MTV / IS, as the CLI reports them.
  json scores = Cli({"scores", kRun});
  std::map<std::pair<std::string, std::string>, std::pair<uint64_t, double>> latest;
  for (const json& s : scores["scores"]) {
    auto key = std::make_pair(s["task"].get<std::string>(), s["variant"].get<std::string>());
    const uint64_t step = s["step"].get<uint64_t>();
    if (!latest.count(key) || latest[key].first < step) latest[key] = {step, s["score"].get<double>()};
  }
  ASSERT_GE(latest.size(), 6u) << scores.dump(2);  // 2 tasks x raw, avg@2, ens@2 at least
  for (const auto& [key, point] : latest) {
    const std::string labels = absl::StrCat("{", run, ",task=\"", key.first, "\",variant=\"", key.second, "\"}");
    ExpectEventually("steadyeval_score" + labels, point.second, 1e-12);
    ExpectEventually("steadyeval_score_step" + labels, static_cast<double>(point.first));
  }
  json stability = Cli({"stability", kRun});
  int stability_rows = 0;
  for (const json& row : stability["rows"]) {
    if (row["kind"] != "task") continue;
    const std::string labels = absl::StrCat("{", run, ",task=\"", row["task"].get<std::string>(),
                                            "\",variant=\"", row["variant"].get<std::string>(), "\"}");
    if (!row["mtv"].is_null()) {
      ExpectEventually("steadyeval_mtv" + labels, row["mtv"].get<double>(), 1e-12);
      ++stability_rows;
    }
    if (!row["is"].is_null()) ExpectEventually("steadyeval_instability_score" + labels, row["is"].get<double>(), 1e-12);
  }
  EXPECT_GE(stability_rows, 7) << stability.dump(2);  // 2 tasks x raw, avg@2, ens@2 (+ ens-soft@2 for MC)

  // The worker: one load and 32 examples per done job, throughput figures, memory.
  const std::string worker = absl::StrCat("worker=\"", kWorker, "\"");
  ExpectEventually(absl::StrCat("up{job=\"steadyeval-worker\"}"), 1);
  ExpectEventually(absl::StrCat("steadyeval_worker_jobs_total{", worker, ",outcome=\"done\"}"), done);
  // The worker's failed jobs are the attempts it gave up on (FailJob), as the coordinator
  // counted them.
  const std::optional<double> worker_fail_calls = Value(absl::StrCat(
      "sum(steadyeval_job_attempt_failures_total{", run, ",reason=~\"retryable|permanent\"})"));
  ASSERT_TRUE(worker_fail_calls.has_value());
  EXPECT_GE(*worker_fail_calls, failed);
  ExpectEventually(absl::StrCat("steadyeval_worker_jobs_total{", worker, ",outcome=\"failed\"}"),
                   *worker_fail_calls);
  ExpectEventually(absl::StrCat("steadyeval_worker_examples_total{", worker, "}"), 32.0 * done);
  ExpectEventually(absl::StrCat("steadyeval_worker_checkpoint_load_seconds_count{", worker, "}"), done);
  ExpectEventually(absl::StrCat("steadyeval_worker_busy{", worker, "}"), 0);
  for (const char* positive : {"steadyeval_worker_tokens_total", "steadyeval_worker_tokens_per_second",
                               "steadyeval_worker_examples_per_second", "steadyeval_worker_eval_seconds_total",
                               "steadyeval_worker_checkpoint_load_bytes_total"}) {
    EXPECT_THAT(Value(absl::StrCat(positive, "{", worker, "}")), ::testing::Optional(::testing::Gt(0.0)))
        << positive;
  }
  EXPECT_THAT(Value(absl::StrCat("steadyeval_worker_device_memory_bytes{", worker, ",kind=\"used\"}")),
              ::testing::Optional(::testing::Gt(0.0)));
  ExpectEventually("steadyeval_workers{state=\"idle\"}", 1);
  EXPECT_THAT(Value(absl::StrCat("steadyeval_worker_heartbeat_age_seconds{", worker, "}")),
              ::testing::Optional(::testing::Lt(60.0)));

  // ---- Every rule loaded from deploy/prometheus/rules evaluates without error. ----
  size_t rules_in_files = 0;
  static const std::regex rule_line(R"(^\s*-\s*(alert|record):)");
  for (const auto& entry : fs::directory_iterator(SourceDir() + "/deploy/prometheus/rules")) {
    if (entry.path().extension() != ".yml") continue;
    std::istringstream text(ReadFileOrEmpty(entry.path()));
    std::string line;
    while (std::getline(text, line)) rules_in_files += std::regex_search(line, rule_line);
  }
  ASSERT_GT(rules_in_files, 0u);
  json rules;
  auto evaluated_rules = [&] {
    rules = Api("rules");
    size_t n = 0;
    for (const json& group : rules["groups"]) {
      for (const json& rule : group["rules"]) {
        n += rule.value("lastEvaluation", "").rfind("0001-", 0) != 0;
      }
    }
    return n;
  };
  ASSERT_TRUE(WaitFor([&] { return evaluated_rules() == rules_in_files; }, seconds(30), milliseconds(500)))
      << "Prometheus evaluated " << evaluated_rules() << " of the " << rules_in_files
      << " rules in deploy/prometheus/rules:\n" << rules.dump(2) << prometheus_.Logs();
  const std::set<std::string> documented = DocumentedMetrics();
  ASSERT_GT(documented.size(), 30u);
  std::set<std::string> recorded;
  for (const json& group : rules["groups"]) {
    for (const json& rule : group["rules"]) {
      if (rule["type"] == "recording") recorded.insert(rule["name"].get<std::string>());
    }
  }
  for (const json& group : rules["groups"]) {
    for (const json& rule : group["rules"]) {
      const std::string name = rule["name"].get<std::string>();
      const std::string query = rule["query"].get<std::string>();
      EXPECT_EQ(rule["health"], "ok") << name << ": " << rule.value("lastError", "") << "\n" << query;
      EXPECT_EQ(rule.value("lastError", ""), "") << name;
      EXPECT_FALSE(Api("query?query=" + UrlEncode(query)).is_null()) << name << ": " << query;
      for (const std::string& metric : MetricsIn(query)) {
        EXPECT_TRUE(documented.count(metric) || recorded.count(metric))
            << "rule " << name << " uses " << metric << ", which docs/metrics.md does not list";
      }
    }
  }

  // ---- Every dashboard query evaluates, with the variables set to this run. ----
  // Rates need two samples in their window: wait until the worker was scraped a few times.
  ASSERT_TRUE(WaitFor([&] { return Value("count_over_time(up{job=\"steadyeval-worker\"}[1m])") >= 4.0; },
                      seconds(30), milliseconds(250)));
  std::vector<DashboardQuery> queries;
  size_t dashboards = 0;
  for (const auto& entry : fs::directory_iterator(SourceDir() + "/deploy/grafana/dashboards")) {
    if (entry.path().extension() != ".json") continue;
    ++dashboards;
    json dashboard = json::parse(ReadFileOrEmpty(entry.path()), nullptr, false);
    ASSERT_FALSE(dashboard.is_discarded()) << entry.path();
    CollectQueries(dashboard, entry.path().filename(), "", &queries);
  }
  ASSERT_GE(dashboards, 2u);
  ASSERT_GE(queries.size(), 20u);
  const std::string task_name = latest.begin()->first.first;
  const std::vector<std::pair<std::string, std::string>> variables = {
      {"${run}", kRun}, {"$run", kRun}, {"${task}", task_name}, {"$task", task_name},
      {"${worker}", kWorker}, {"$worker", kWorker}, {"$__rate_interval", "1m"},
      {"$__interval", "15s"}, {"$__range", "5m"}};
  static const std::regex label_values(R"(^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$)");
  for (const DashboardQuery& q : queries) {
    std::string expr = q.expr;
    for (const auto& [variable, value] : variables) {
      for (size_t at = expr.find(variable); at != std::string::npos; at = expr.find(variable, at + value.size())) {
        expr.replace(at, variable.size(), value);
      }
    }
    ASSERT_EQ(expr.find('$'), std::string::npos) << q.where << ": unknown template variable in " << q.expr;
    std::string label;
    if (q.variable) {
      std::smatch m;
      ASSERT_TRUE(std::regex_match(expr, m, label_values))
          << q.where << ": variable queries must be label_values(SELECTOR, LABEL): " << q.expr;
      label = m[2];
      expr = m[1];
    }
    for (const std::string& metric : MetricsIn(expr)) {
      EXPECT_TRUE(documented.count(metric) || recorded.count(metric))
          << q.where << " uses " << metric << ", which docs/metrics.md does not list";
    }
    json result = Query(expr);
    EXPECT_FALSE(result.empty()) << q.where << ": no data for " << expr;
    if (!label.empty() && !result.empty()) {
      EXPECT_TRUE(result[0]["metric"].contains(label)) << q.where << ": no label " << label << " in " << result.dump();
    }
  }
}

}  // namespace
}  // namespace steadyeval::testing
