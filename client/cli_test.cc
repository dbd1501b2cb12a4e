#include "client/cli.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "steadyeval/v1/eval_service_mock.grpc.pb.h"

namespace steadyeval::client {
namespace {

using ::testing::_;
using ::testing::DoAll;
using ::testing::HasSubstr;
using ::testing::Invoke;
using ::testing::Not;
using ::testing::Return;
using ::testing::SaveArg;
using ::testing::SetArgPointee;
using ::testing::StartsWith;
using json = nlohmann::json;
using MockStub = v1::MockEvalServiceStub;

// A server stream that yields `items` and then finishes with `status`.
template <typename T>
class FakeReader : public grpc::ClientReaderInterface<T> {
 public:
  FakeReader(std::vector<T> items, grpc::Status status)
      : items_(std::move(items)), status_(std::move(status)) {}
  bool Read(T* msg) override {
    if (next_ >= items_.size()) return false;
    *msg = items_[next_++];
    return true;
  }
  grpc::Status Finish() override { return status_; }
  bool NextMessageSize(uint32_t* size) override {
    if (next_ >= items_.size()) return false;
    *size = static_cast<uint32_t>(items_[next_].ByteSizeLong());
    return true;
  }
  void WaitForInitialMetadata() override {}

 private:
  std::vector<T> items_;
  grpc::Status status_;
  size_t next_ = 0;
};

struct CliResult {
  int code = -1;
  std::string out;
  std::string err;
  std::string server;  // the address the stub was made for
};

CliResult RunWith(const std::vector<std::string>& args, std::unique_ptr<MockStub> stub,
                  const std::string& env_server = "") {
  CliResult result;
  std::ostringstream out, err;
  auto factory = [&](const std::string& server)
      -> std::unique_ptr<v1::EvalService::StubInterface> {
    result.server = server;
    return std::move(stub);
  };
  result.code = RunCli(args, env_server, factory, out, err);
  result.out = out.str();
  result.err = err.str();
  return result;
}

// Exactly one line on stderr, starting with "steadyeval: ".
void ExpectOneErrorLine(const CliResult& r) {
  EXPECT_THAT(r.err, StartsWith("steadyeval: "));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_TRUE(absl::EndsWith(r.err, "\n"));
}

v1::Run MakeRun(const std::string& name) {
  v1::Run run;
  run.mutable_config()->set_name(name);
  run.mutable_config()->set_source("/data/" + name);
  v1::TaskRef* t = run.mutable_config()->add_tasks();
  t->set_name("arith_mc");
  t->set_sha256("ab12");
  run.mutable_config()->set_few_shots(4);
  run.set_created_unix_ms(1'700'000'000'000);
  return run;
}

// ---- Argument parsing ----

TEST(ParseInvocationTest, FlagsAfterPositionals) {
  auto inv = ParseInvocation(
      {"scores", "run1", "--variant", "raw", "--json", "--server", "h:1", "--task=qa"}, "");
  ASSERT_OK(inv);
  EXPECT_EQ(inv->CommandName(), "scores");
  EXPECT_EQ(inv->args, std::vector<std::string>{"run1"});
  EXPECT_TRUE(inv->json);
  EXPECT_EQ(inv->server, "h:1");
  EXPECT_EQ(inv->Flag("variant"), "raw");
  EXPECT_EQ(inv->Flag("task"), "qa");
}

TEST(ParseInvocationTest, FlagsBeforeCommand) {
  auto inv = ParseInvocation({"--json", "--server=h:2", "--timeout_s", "5", "runs", "show", "r.1"},
                             "");
  ASSERT_OK(inv);
  EXPECT_EQ(inv->CommandName(), "runs show");
  EXPECT_EQ(inv->args, std::vector<std::string>{"r.1"});
  EXPECT_EQ(inv->server, "h:2");
  EXPECT_DOUBLE_EQ(inv->timeout_s, 5);
}

TEST(ParseInvocationTest, ServerFromEnvironmentAndDefault) {
  auto from_env = ParseInvocation({"workers"}, "coord:7");
  ASSERT_OK(from_env);
  EXPECT_EQ(from_env->server, "coord:7");
  auto flag_wins = ParseInvocation({"workers", "--server", "x:1"}, "coord:7");
  ASSERT_OK(flag_wins);
  EXPECT_EQ(flag_wins->server, "x:1");
  auto fallback = ParseInvocation({"workers"}, "");
  ASSERT_OK(fallback);
  EXPECT_EQ(fallback->server, kDefaultServer);
}

TEST(ParseInvocationTest, RunsAddFlagsAnywhere) {
  auto inv = ParseInvocation({"--tasks", "a.jsonl", "runs", "--source", "/x", "add", "demo",
                              "--tasks", "b.json,c.json", "--few_shots", "2"},
                             "");
  ASSERT_OK(inv);
  EXPECT_EQ(inv->CommandName(), "runs add");
  EXPECT_EQ(inv->args, std::vector<std::string>{"demo"});
  EXPECT_EQ(inv->flags.at("tasks"), (std::vector<std::string>{"a.jsonl", "b.json,c.json"}));
}

TEST(ParseInvocationTest, UsageErrors) {
  EXPECT_THAT(ParseInvocation({"runs", "list", "--bogus"}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown flag --bogus")));
  EXPECT_THAT(ParseInvocation({"runs", "list", "--task", "x"}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'runs list' does not take --task")));
  EXPECT_THAT(ParseInvocation({"checkpoints"}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("missing NAME")));
  EXPECT_THAT(ParseInvocation({"checkpoints", "a", "b"}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unexpected argument 'b'")));
  EXPECT_THAT(ParseInvocation({"frobnicate"}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown command")));
  EXPECT_THAT(ParseInvocation({"runs"}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("add, list or show")));
  EXPECT_THAT(ParseInvocation({}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no command")));
  EXPECT_THAT(ParseInvocation({"runs", "add", "demo", "--tasks", "a.jsonl"}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("missing --source")));
  EXPECT_THAT(ParseInvocation({"runs", "add", "demo", "--source", "/x"}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("missing --tasks")));
  EXPECT_THAT(
      ParseInvocation({"runs", "add", "d", "--source", "/x", "--tasks", "a", "--few_shots", "x"},
                      ""),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--few_shots")));
  EXPECT_THAT(ParseInvocation({"workers", "--timeout_s", "0"}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--timeout_s")));
}

TEST(ParseInvocationTest, RunNames) {
  EXPECT_TRUE(IsValidRunName("run-42_a.b"));
  EXPECT_FALSE(IsValidRunName(""));
  EXPECT_FALSE(IsValidRunName("a/b"));
  EXPECT_FALSE(IsValidRunName("a b"));
  EXPECT_FALSE(IsValidRunName("ラン"));
  EXPECT_THAT(ParseInvocation({"runs", "show", "../etc"}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad run name '../etc'")));
  EXPECT_THAT(ParseInvocation({"jobs", "--run", "a b"}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad run name")));
}

TEST(RunCliTest, UnknownFlagExitsTwoWithOneLineAndUsageHint) {
  CliResult r = RunWith({"checkpoints", "demo", "--bogus"}, std::make_unique<MockStub>());
  EXPECT_EQ(r.code, kExitUsage);
  ExpectOneErrorLine(r);
  EXPECT_THAT(r.err, HasSubstr("unknown flag --bogus"));
  EXPECT_THAT(r.err, HasSubstr("usage: steadyeval checkpoints NAME"));
  EXPECT_EQ(r.out, "");
}

TEST(RunCliTest, BadRunNameExitsTwo) {
  CliResult r = RunWith({"runs", "add", "bad/name", "--source", "/x", "--tasks", "t.jsonl"},
                        std::make_unique<MockStub>());
  EXPECT_EQ(r.code, kExitUsage);
  ExpectOneErrorLine(r);
  EXPECT_THAT(r.err, HasSubstr("bad run name 'bad/name'"));
}

TEST(RunCliTest, HelpExplainsUsage) {
  CliResult general = RunWith({"--help"}, std::make_unique<MockStub>());
  EXPECT_EQ(general.code, kExitOk);
  EXPECT_THAT(general.out, HasSubstr("Usage: steadyeval"));
  EXPECT_THAT(general.out, HasSubstr("runs add"));
  EXPECT_THAT(general.out, HasSubstr("Examples:"));

  CliResult add = RunWith({"runs", "add", "--help"}, std::make_unique<MockStub>());
  EXPECT_EQ(add.code, kExitOk);
  EXPECT_THAT(add.out, HasSubstr("Usage: steadyeval runs add NAME --source DIR --tasks"));
  EXPECT_THAT(add.out, HasSubstr("--few_shots K"));
  EXPECT_THAT(add.out, HasSubstr("Examples:"));

  CliResult runs = RunWith({"help", "runs"}, std::make_unique<MockStub>());
  EXPECT_EQ(runs.code, kExitOk);
  EXPECT_THAT(runs.out, HasSubstr("runs show"));
  EXPECT_THAT(runs.out, Not(HasSubstr("workers")));
}

// ---- Commands through the mock stub ----

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::path(::testing::TempDir()) /
            ("cli_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string Write(const std::string& name, const std::string& content) const {
    std::ofstream(path_ / name, std::ios::binary) << content;
    return (path_ / name).string();
  }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

constexpr char kChoiceTask[] =
    R"({"id":"1","query":"1+1=","choices":["2","3"],"gold":0})"
    "\n"
    R"({"id":"2","query":"2+2=","choices":["3","4"],"gold":1})"
    "\n";
constexpr char kGenTask[] =
    R"({"instruction":"answer","output_length":8,"metrics":["exact_match"],"few_shots":[],)"
    R"("samples":[{"input":"1+1","output":"2"}]})";

TEST(RunCliTest, RunsAddSendsTaskContentAndPrintsRun) {
  TempDir dir;
  const std::string mc = dir.Write("arith_mc.jsonl", kChoiceTask);
  const std::string gen = dir.Write("qa_gen.json", kGenTask);
  auto stub = std::make_unique<MockStub>();
  v1::CreateRunRequest sent;
  v1::Run created = MakeRun("demo");
  EXPECT_CALL(*stub, CreateRun(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(created), Return(grpc::Status::OK)));
  CliResult r = RunWith({"runs", "add", "demo", "--json", "--source", "relative/ckpt", "--tasks",
                         mc + "," + gen, "--pattern", "step_(\\d+)", "--settle_seconds", "2.5"},
                        std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.config().name(), "demo");
  EXPECT_TRUE(std::filesystem::path(sent.config().source()).is_absolute());
  EXPECT_TRUE(absl::EndsWith(sent.config().source(), "/relative/ckpt"));
  EXPECT_EQ(sent.config().few_shots(), 4);
  EXPECT_EQ(sent.config().pattern(), "step_(\\d+)");
  EXPECT_DOUBLE_EQ(sent.config().settle_seconds(), 2.5);
  ASSERT_EQ(sent.task_files_size(), 2);
  EXPECT_EQ(sent.task_files(0).filename(), "arith_mc.jsonl");
  EXPECT_EQ(sent.task_files(0).content(), kChoiceTask);
  EXPECT_EQ(sent.task_files(0).kind(), v1::TASK_KIND_MULTIPLE_CHOICE);
  EXPECT_EQ(sent.task_files(1).filename(), "qa_gen.json");
  EXPECT_EQ(sent.task_files(1).content(), kGenTask);

  json out = json::parse(r.out);
  EXPECT_EQ(out["name"], "demo");
  EXPECT_EQ(out["source"], "/data/demo");
  EXPECT_EQ(out["tasks"][0]["name"], "arith_mc");
  EXPECT_EQ(out["tasks"][0]["sha256"], "ab12");
}

TEST(RunCliTest, RunsAddRejectsUnreadableAndMalformedTasksLocally) {
  TempDir dir;
  CliResult missing =
      RunWith({"runs", "add", "demo", "--source", "/x", "--tasks", dir.path() + "/nope.jsonl"},
              std::make_unique<MockStub>());  // no RPC expected
  EXPECT_EQ(missing.code, kExitFailure);
  ExpectOneErrorLine(missing);
  EXPECT_THAT(missing.err, HasSubstr("nope.jsonl"));

  const std::string bad = dir.Write("bad.jsonl", "{not json\n");
  CliResult malformed = RunWith({"runs", "add", "demo", "--source", "/x", "--tasks", bad},
                                std::make_unique<MockStub>());
  EXPECT_EQ(malformed.code, kExitFailure);
  ExpectOneErrorLine(malformed);
  EXPECT_THAT(malformed.err, HasSubstr("bad.jsonl:1"));
}

TEST(RunCliTest, RunsListFollowsPageTokens) {
  auto stub = std::make_unique<MockStub>();
  v1::ListRunsResponse page1, page2;
  *page1.add_runs() = MakeRun("a");
  *page1.add_runs() = MakeRun("b");
  page1.set_next_page_token("b");
  *page2.add_runs() = MakeRun("c");
  v1::ListRunsRequest second_request;
  EXPECT_CALL(*stub, ListRuns(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(page1), Return(grpc::Status::OK)))
      .WillOnce(DoAll(SaveArg<1>(&second_request), SetArgPointee<2>(page2),
                      Return(grpc::Status::OK)));
  CliResult r = RunWith({"runs", "list", "--json"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(second_request.page_token(), "b");
  json out = json::parse(r.out);
  ASSERT_EQ(out["runs"].size(), 3u);
  EXPECT_EQ(out["runs"][2]["name"], "c");
  EXPECT_EQ(out["runs"][0]["tasks"][0]["name"], "arith_mc");
  EXPECT_EQ(r.err, "");
}

TEST(RunCliTest, RunsShowJsonHasRunAndCounts) {
  auto stub = std::make_unique<MockStub>();
  v1::GetRunResponse resp;
  *resp.mutable_run() = MakeRun("demo");
  resp.set_checkpoints(3);
  resp.set_evaluated(2);
  resp.set_newest_step(300);
  (*resp.mutable_jobs_by_state())["done"] = 2;
  EXPECT_CALL(*stub, GetRun(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(resp), Return(grpc::Status::OK)));
  CliResult r = RunWith({"runs", "show", "demo", "--json"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  json out = json::parse(r.out);
  EXPECT_EQ(out["run"]["name"], "demo");
  EXPECT_EQ(out["checkpoints"], 3);
  EXPECT_EQ(out["evaluated"], 2);
  EXPECT_EQ(out["newest_step"], 300);
  EXPECT_EQ(out["jobs_by_state"]["done"], 2);
}

TEST(RunCliTest, CheckpointsJsonShape) {
  auto stub = std::make_unique<MockStub>();
  std::vector<v1::Checkpoint> items(2);
  items[0].set_step(100);
  items[0].set_path("/d/step_000100");
  items[0].set_state(v1::CHECKPOINT_EVALUATED);
  items[1].set_step(200);
  items[1].set_path("/d/step_000200");
  items[1].set_state(v1::CHECKPOINT_FAILED);
  items[1].set_error("shape mismatch");
  v1::ListCheckpointsRequest sent;
  EXPECT_CALL(*stub, ListCheckpointsRaw(_, _))
      .WillOnce(DoAll(SaveArg<1>(&sent),
                      Return(new FakeReader<v1::Checkpoint>(items, grpc::Status::OK))));
  CliResult r = RunWith({"checkpoints", "demo", "--json"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.run(), "demo");
  json out = json::parse(r.out);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out["checkpoints"].size(), 2u);
  EXPECT_EQ(out["checkpoints"][0]["step"], 100);
  EXPECT_EQ(out["checkpoints"][0]["path"], "/d/step_000100");
  EXPECT_EQ(out["checkpoints"][0]["state"], "evaluated");
  EXPECT_EQ(out["checkpoints"][0]["error"], "");
  EXPECT_EQ(out["checkpoints"][1]["state"], "failed");
  EXPECT_EQ(out["checkpoints"][1]["error"], "shape mismatch");
}

TEST(RunCliTest, CheckpointsHumanTable) {
  auto stub = std::make_unique<MockStub>();
  std::vector<v1::Checkpoint> items(1);
  items[0].set_step(100);
  items[0].set_path("/d/step_000100");
  items[0].set_state(v1::CHECKPOINT_PENDING);
  EXPECT_CALL(*stub, ListCheckpointsRaw(_, _))
      .WillOnce(Return(new FakeReader<v1::Checkpoint>(items, grpc::Status::OK)));
  CliResult r = RunWith({"checkpoints", "demo"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out,
            "STEP  STATE    PATH            ERROR\n"
            " 100  pending  /d/step_000100  -\n");
}

TEST(RunCliTest, JobsJsonShapeAndRunFilter) {
  auto stub = std::make_unique<MockStub>();
  std::vector<v1::Job> jobs(1);
  jobs[0].set_id(7);
  jobs[0].set_run("demo");
  jobs[0].set_kind("avg@2");
  jobs[0].add_steps(100);
  jobs[0].add_steps(200);
  jobs[0].set_state(v1::JOB_LEASED);
  jobs[0].set_attempts(1);
  jobs[0].set_worker_id("w1");
  v1::ListJobsRequest sent;
  EXPECT_CALL(*stub, ListJobsRaw(_, _))
      .WillOnce(
          DoAll(SaveArg<1>(&sent), Return(new FakeReader<v1::Job>(jobs, grpc::Status::OK))));
  CliResult r = RunWith({"jobs", "--json", "--run", "demo"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.run(), "demo");
  json job = json::parse(r.out)["jobs"][0];
  EXPECT_EQ(job["id"], 7);
  EXPECT_EQ(job["run"], "demo");
  EXPECT_EQ(job["kind"], "avg@2");
  EXPECT_EQ(job["steps"], json::array({100, 200}));
  EXPECT_EQ(job["state"], "leased");
  EXPECT_EQ(job["attempts"], 1);
  EXPECT_EQ(job["error"], "");
  EXPECT_EQ(job["worker"], "w1");
}

TEST(RunCliTest, WorkersJsonShape) {
  auto stub = std::make_unique<MockStub>();
  v1::ListWorkersResponse resp;
  v1::WorkerInfo* w = resp.add_workers();
  w->set_id("w1");
  w->set_device("cpu");
  w->set_state(v1::WORKER_BUSY);
  w->set_current_job(7);
  EXPECT_CALL(*stub, ListWorkers(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(resp), Return(grpc::Status::OK)));
  CliResult r = RunWith({"workers", "--json"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  json out = json::parse(r.out);
  EXPECT_EQ(out["workers"][0]["id"], "w1");
  EXPECT_EQ(out["workers"][0]["state"], "busy");
  EXPECT_EQ(out["workers"][0]["current_job"], 7);
}

std::vector<v1::Score> SampleScores() {
  std::vector<v1::Score> scores;
  auto add = [&](uint64_t step, const std::string& task, const std::string& variant, double v) {
    v1::Score s;
    s.set_run("demo");
    s.set_task(task);
    s.set_variant(variant);
    s.set_step(step);
    s.set_metric(task == "qa_gen" ? "exact_match" : "acc");
    s.set_score(v);
    s.set_examples(20);
    scores.push_back(s);
  };
  add(100, "arith_mc", "raw", 0.25);
  add(100, "qa_gen", "raw", 0.5);
  add(200, "arith_mc", "raw", 0.3);
  add(200, "arith_mc", "avg@2", 0.35);
  return scores;
}

TEST(RunCliTest, ScoresJsonShape) {
  auto stub = std::make_unique<MockStub>();
  v1::GetScoresRequest sent;
  EXPECT_CALL(*stub, GetScoresRaw(_, _))
      .WillOnce(DoAll(SaveArg<1>(&sent),
                      Return(new FakeReader<v1::Score>(SampleScores(), grpc::Status::OK))));
  CliResult r =
      RunWith({"scores", "demo", "--task", "arith_mc", "--variant", "all", "--json"},
              std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.run(), "demo");
  EXPECT_EQ(sent.task(), "arith_mc");
  EXPECT_EQ(sent.variant(), "all");
  json out = json::parse(r.out);
  EXPECT_EQ(out["run"], "demo");
  ASSERT_EQ(out["scores"].size(), 4u);
  const json& s = out["scores"][0];
  EXPECT_EQ(s["step"], 100);
  EXPECT_EQ(s["task"], "arith_mc");
  EXPECT_EQ(s["variant"], "raw");
  EXPECT_EQ(s["metric"], "acc");
  EXPECT_DOUBLE_EQ(s["score"].get<double>(), 0.25);
  EXPECT_EQ(s["examples"], 20);
}

TEST(RunCliTest, ScoresHumanTablesPerVariant) {
  auto stub = std::make_unique<MockStub>();
  EXPECT_CALL(*stub, GetScoresRaw(_, _))
      .WillOnce(Return(new FakeReader<v1::Score>(SampleScores(), grpc::Status::OK)));
  CliResult r = RunWith({"scores", "demo"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out,
            "variant raw  (metrics: arith_mc=acc, qa_gen=exact_match)\n"
            "STEP  arith_mc  qa_gen\n"
            " 100    0.2500  0.5000\n"
            " 200    0.3000       -\n"
            "\n"
            "variant avg@2  (metrics: arith_mc=acc)\n"
            "STEP  arith_mc\n"
            " 200    0.3500\n");
}

// ---- Errors ----

TEST(RunCliTest, NotFoundIsOneLineAndNonZero) {
  auto stub = std::make_unique<MockStub>();
  EXPECT_CALL(*stub, GetScoresRaw(_, _))
      .WillOnce(Return(new FakeReader<v1::Score>(
          {}, grpc::Status(grpc::StatusCode::NOT_FOUND, "run 'nope' not found"))));
  CliResult r = RunWith({"scores", "nope", "--json"}, std::move(stub));
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.err, "steadyeval: run 'nope' not found\n");
  EXPECT_EQ(r.out, "");  // no partial JSON
}

TEST(RunCliTest, NotFoundOnUnaryCall) {
  auto stub = std::make_unique<MockStub>();
  EXPECT_CALL(*stub, GetRun(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::NOT_FOUND, "run 'x' not found\nmore")));
  CliResult r = RunWith({"runs", "show", "x"}, std::move(stub));
  EXPECT_EQ(r.code, kExitFailure);
  ExpectOneErrorLine(r);
  EXPECT_EQ(r.err, "steadyeval: run 'x' not found more\n");
}

TEST(RunCliTest, UnavailableNamesTheAddress) {
  auto stub = std::make_unique<MockStub>();
  EXPECT_CALL(*stub, ListWorkers(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::UNAVAILABLE, "failed to connect")));
  CliResult r = RunWith({"workers", "--server", "127.0.0.1:9"}, std::move(stub));
  EXPECT_EQ(r.code, kExitFailure);
  ExpectOneErrorLine(r);
  EXPECT_THAT(r.err, HasSubstr("cannot reach steadyeval-server at 127.0.0.1:9"));
  EXPECT_THAT(r.err, HasSubstr("is steadyeval-server running?"));
  EXPECT_EQ(r.server, "127.0.0.1:9");
}

TEST(RunCliTest, DeadlineIsSetAndReported) {
  auto stub = std::make_unique<MockStub>();
  std::chrono::system_clock::time_point deadline;
  const auto before = std::chrono::system_clock::now();
  EXPECT_CALL(*stub, ListWorkers(_, _, _))
      .WillOnce(Invoke([&](grpc::ClientContext* ctx, const v1::ListWorkersRequest&,
                           v1::ListWorkersResponse*) {
        deadline = ctx->deadline();
        return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded");
      }));
  CliResult r = RunWith({"workers", "--timeout_s", "7", "--server", "h:1"}, std::move(stub));
  EXPECT_EQ(r.code, kExitFailure);
  ExpectOneErrorLine(r);
  EXPECT_THAT(r.err, HasSubstr("h:1 did not answer within 7s"));
  EXPECT_GE(deadline, before + std::chrono::seconds(7));
  EXPECT_LE(deadline, std::chrono::system_clock::now() + std::chrono::seconds(7));
}

// A real channel to a port that is bound but not listening: the connection is refused.
TEST(RunCliTest, RealChannelToClosedPortIsUnavailable) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string server = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));

  std::ostringstream out, err;
  auto factory = [](const std::string& s) -> std::unique_ptr<v1::EvalService::StubInterface> {
    return v1::EvalService::NewStub(grpc::CreateChannel(s, grpc::InsecureChannelCredentials()));
  };
  int code = RunCli({"runs", "list", "--server", server, "--timeout_s", "20"}, "", factory, out,
                    err);
  ::close(fd);
  EXPECT_EQ(code, kExitFailure);
  const std::string err_text = err.str();
  EXPECT_THAT(err_text, StartsWith("steadyeval: cannot reach steadyeval-server at " + server));
  EXPECT_EQ(std::count(err_text.begin(), err_text.end(), '\n'), 1);
  EXPECT_EQ(out.str(), "");
}

// The real wire path: an in-process EvalService on port 0 that streams checkpoints and
// answers NOT_FOUND for unknown runs.
class FakeEvalService : public v1::EvalService::Service {
 public:
  grpc::Status ListCheckpoints(grpc::ServerContext*, const v1::ListCheckpointsRequest* req,
                               grpc::ServerWriter<v1::Checkpoint>* writer) override {
    if (req->run() != "demo") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "run '" + req->run() + "' not found");
    }
    for (uint64_t step : {100, 200, 300}) {
      v1::Checkpoint c;
      c.set_run("demo");
      c.set_step(step);
      c.set_state(v1::CHECKPOINT_EVALUATED);
      writer->Write(c);
    }
    return grpc::Status::OK;
  }
};

TEST(RunCliTest, RealServerStreamsAndNotFound) {
  FakeEvalService service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_GT(port, 0);
  const std::string address = "127.0.0.1:" + std::to_string(port);
  auto factory = [](const std::string& s) -> std::unique_ptr<v1::EvalService::StubInterface> {
    return v1::EvalService::NewStub(grpc::CreateChannel(s, grpc::InsecureChannelCredentials()));
  };

  std::ostringstream out, err;
  ASSERT_EQ(RunCli({"checkpoints", "demo", "--json"}, address, factory, out, err), kExitOk)
      << err.str();
  json doc = json::parse(out.str());
  ASSERT_EQ(doc["checkpoints"].size(), 3u);
  EXPECT_EQ(doc["checkpoints"][2]["step"], 300);

  std::ostringstream out2, err2;
  EXPECT_EQ(RunCli({"checkpoints", "nope"}, address, factory, out2, err2), kExitFailure);
  EXPECT_EQ(err2.str(), "steadyeval: run 'nope' not found\n");
  EXPECT_EQ(out2.str(), "");
  server->Shutdown();
}

}  // namespace
}  // namespace steadyeval::client
