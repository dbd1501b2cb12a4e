#include "client/cli.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "testing/cli_runner.h"
#include "testing/grpc_fakes.h"
#include "testing/temp_dir.h"
#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace steadyeval::client {
namespace {

using ::testing::_;
using ::testing::AllOf;
using ::testing::ContainsRegex;
using ::testing::DoAll;
using ::testing::HasSubstr;
using ::testing::Invoke;
using ::testing::Not;
using ::testing::Return;
using ::testing::SaveArg;
using ::testing::SetArgPointee;
using ::testing::StartsWith;
using json = nlohmann::json;
using ::steadyeval::testing::CliResult;
using ::steadyeval::testing::FakeReader;
using ::steadyeval::testing::MockStub;
using ::steadyeval::testing::RunWith;
using ::steadyeval::testing::StatusIs;
using ::steadyeval::testing::TempDir;

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
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("add, list, show, update, pause, resume, delete or clear-tokenizer")));
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
  EXPECT_THAT(add.out, HasSubstr("Usage: steadyeval runs add NAME --source DIR|s3://BUCKET/PREFIX --tasks"));
  EXPECT_THAT(add.out, HasSubstr("--few_shots K"));
  EXPECT_THAT(add.out, HasSubstr("Examples:"));

  CliResult runs = RunWith({"help", "runs"}, std::make_unique<MockStub>());
  EXPECT_EQ(runs.code, kExitOk);
  EXPECT_THAT(runs.out, HasSubstr("runs show"));
  EXPECT_THAT(runs.out, Not(HasSubstr("workers")));
}

// ---- Commands through the mock stub ----

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

TEST(RunCliTest, RunsAddRefusesNonRegularTaskFilesBeforeReading) {
  // /dev/zero never ends: reading it would not return (issue 16: 6 GB in 8 s).
  CliResult zero = RunWith({"runs", "add", "demo", "--source", "/x", "--tasks", "/dev/zero"},
                           std::make_unique<MockStub>());
  EXPECT_EQ(zero.code, kExitFailure);
  ExpectOneErrorLine(zero);
  EXPECT_THAT(zero.err, HasSubstr("not a regular file"));
  TempDir dir;
  CliResult folder = RunWith({"runs", "add", "demo", "--source", "/x", "--tasks", dir.path()},
                             std::make_unique<MockStub>());
  EXPECT_EQ(folder.code, kExitFailure);
  EXPECT_THAT(folder.err, HasSubstr("not a regular file"));
}

TEST(RunCliTest, WindowBoundsMatchTheServer) {
  EXPECT_OK(ParseWindows("average", "2,1000"));
  EXPECT_THAT(ParseWindows("average", "1001").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2..1000")));
  std::string many;
  for (int n = 2; n < 2 + 65; ++n) absl::StrAppend(&many, many.empty() ? "" : ",", n);
  EXPECT_THAT(ParseWindows("ensemble", many).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at most 64")));
}

TEST(RunCliTest, TerminalControlCharactersFromTheServerAreEscaped) {
  auto stub = std::make_unique<MockStub>();
  v1::ListWorkersResponse resp;
  v1::WorkerInfo* w = resp.add_workers();
  w->set_id("w1");
  w->set_name("evil\x1b]0;pwned\x07\x1b[2J");
  w->set_device("cpu");
  EXPECT_CALL(*stub, ListWorkers(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(resp), Return(grpc::Status::OK)));
  CliResult r = RunWith({"workers"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
  EXPECT_THAT(r.out, HasSubstr("evil\\x1b]0;pwned\\x07"));

  auto failing = std::make_unique<MockStub>();
  EXPECT_CALL(*failing, ListWorkers(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::NOT_FOUND, "no \x1b[2J here")));
  CliResult e = RunWith({"workers"}, std::move(failing));
  EXPECT_EQ(e.err.find('\x1b'), std::string::npos) << e.err;
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
  v1::ListPendingCheckpointsRequest pending_sent;
  EXPECT_CALL(*stub, ListPendingCheckpoints(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&pending_sent), Invoke([](grpc::ClientContext*,
                                                           const v1::ListPendingCheckpointsRequest&,
                                                           v1::ListPendingCheckpointsResponse* resp) {
                        v1::PendingCheckpoint* p = resp->add_pending();
                        p->set_step(300);
                        p->set_path("/d/step_000300");
                        p->set_reason("step_000300: config.json is not valid JSON");
                        p->set_since_unix_ms(1'700'000'000'000);
                        p->set_incomplete(true);
                        return grpc::Status::OK;
                      })));
  CliResult r = RunWith({"checkpoints", "demo", "--json"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.run(), "demo");
  EXPECT_EQ(pending_sent.run(), "demo");
  json out = json::parse(r.out);
  ASSERT_EQ(out.size(), 2u);
  ASSERT_EQ(out["pending"].size(), 1u);
  EXPECT_EQ(out["pending"][0]["step"], 300);
  EXPECT_EQ(out["pending"][0]["path"], "/d/step_000300");
  EXPECT_EQ(out["pending"][0]["state"], "incomplete");
  EXPECT_EQ(out["pending"][0]["reason"], "step_000300: config.json is not valid JSON");
  EXPECT_EQ(out["pending"][0]["since_unix_ms"], 1'700'000'000'000);
  ASSERT_EQ(out["checkpoints"].size(), 2u);
  EXPECT_EQ(out["checkpoints"][0]["step"], 100);
  EXPECT_EQ(out["checkpoints"][0]["path"], "/d/step_000100");
  EXPECT_EQ(out["checkpoints"][0]["state"], "evaluated");
  EXPECT_EQ(out["checkpoints"][0]["error"], "");
  EXPECT_EQ(out["checkpoints"][1]["state"], "failed");
  EXPECT_EQ(out["checkpoints"][1]["error"], "shape mismatch");
}

TEST(RunCliTest, RunsAddSendsTheBucketEndpointRegionAndConverter) {
  TempDir dir;
  const std::string mc = dir.Write("arith_mc.jsonl", kChoiceTask);
  auto stub = std::make_unique<MockStub>();
  v1::CreateRunRequest sent;
  v1::Run created = MakeRun("demo");
  created.mutable_config()->set_source("s3://ckpt/run42");
  created.mutable_config()->set_s3_endpoint("http://127.0.0.1:9000");
  created.mutable_config()->set_s3_region("us-east-1");
  created.mutable_config()->set_convert("dcp");
  EXPECT_CALL(*stub, CreateRun(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(created), Return(grpc::Status::OK)));
  CliResult r = RunWith({"runs", "add", "demo", "--source", "s3://ckpt/run42/", "--s3_endpoint",
                         "http://127.0.0.1:9000", "--s3_region", "us-east-1", "--convert", "dcp",
                         "--tasks", mc},
                        std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.config().source(), "s3://ckpt/run42/");  // not made a local path
  EXPECT_EQ(sent.config().s3_endpoint(), "http://127.0.0.1:9000");
  EXPECT_EQ(sent.config().s3_region(), "us-east-1");
  EXPECT_EQ(sent.config().convert(), "dcp");
  EXPECT_THAT(r.err, Not(HasSubstr("does not exist")));  // a prefix is not a folder
  EXPECT_THAT(r.out, HasSubstr("s3_endpoint:"));
  EXPECT_THAT(r.out, ContainsRegex("s3_region: +us-east-1"));
  EXPECT_THAT(r.out, ContainsRegex("convert: +dcp"));

  CliResult help = RunWith({"runs", "add", "--help"}, std::make_unique<MockStub>());
  for (const char* flag : {"--s3_endpoint URL", "--s3_region REGION", "--convert NAME",
                           "s3://BUCKET/PREFIX", "--s3_endpoints"}) {
    EXPECT_THAT(help.out, HasSubstr(flag));
  }
}

TEST(RunCliTest, RunsShowNamesTheBucketSettingsAndTheSourceError) {
  auto stub = std::make_unique<MockStub>();
  v1::GetRunResponse resp;
  *resp.mutable_run() = MakeRun("demo");
  resp.mutable_run()->mutable_config()->set_source("s3://ckpt/run42");
  resp.mutable_run()->mutable_config()->set_s3_region("eu-west-1");
  resp.set_source_error("checkpoint source s3://ckpt/run42: S3 ListObjectsV2 s3://ckpt/run42/: "
                        "HTTP 403 AccessDenied");
  resp.set_source_error_since_unix_ms(absl::ToUnixMillis(absl::Now()) - 120'000);
  EXPECT_CALL(*stub, GetRun(_, _, _)).WillRepeatedly(DoAll(SetArgPointee<2>(resp), Return(grpc::Status::OK)));
  CliResult text = RunWith({"runs", "show", "demo"}, std::move(stub));
  ASSERT_EQ(text.code, kExitOk) << text.err;
  EXPECT_THAT(text.out, ContainsRegex("s3_endpoint: +AWS"));
  EXPECT_THAT(text.out, ContainsRegex("s3_region: +eu-west-1"));
  EXPECT_THAT(text.out, ContainsRegex("source_error: +checkpoint source .*HTTP 403 AccessDenied "
                                      "\\(for 2m0.s; the server keeps polling\\)"));
  EXPECT_THAT(text.out, Not(HasSubstr("convert:")));  // unset settings are not shown

  // A folder run shows none of them.
  auto plain = std::make_unique<MockStub>();
  v1::GetRunResponse folder;
  *folder.mutable_run() = MakeRun("demo");
  EXPECT_CALL(*plain, GetRun(_, _, _)).WillRepeatedly(DoAll(SetArgPointee<2>(folder), Return(grpc::Status::OK)));
  CliResult shown = RunWith({"runs", "show", "demo"}, std::move(plain));
  for (const char* key : {"s3_endpoint", "s3_region", "convert", "source_error"}) {
    EXPECT_THAT(shown.out, Not(HasSubstr(key)));
  }

  auto json_stub = std::make_unique<MockStub>();
  EXPECT_CALL(*json_stub, GetRun(_, _, _)).WillRepeatedly(DoAll(SetArgPointee<2>(resp), Return(grpc::Status::OK)));
  CliResult j = RunWith({"runs", "show", "demo", "--json"}, std::move(json_stub));
  json out = json::parse(j.out);
  EXPECT_EQ(out["run"]["s3_region"], "eu-west-1");
  EXPECT_THAT(out["source_error"].get<std::string>(), HasSubstr("HTTP 403"));
}

TEST(RunCliTest, CheckpointsSayWhenTheSourceCannotBeListed) {
  auto stub = std::make_unique<MockStub>();
  EXPECT_CALL(*stub, ListCheckpointsRaw(_, _))
      .WillOnce(Return(new FakeReader<v1::Checkpoint>({}, grpc::Status::OK)));
  v1::ListPendingCheckpointsResponse pending;
  pending.set_source_error("checkpoint source s3://ckpt/run42: HTTP 403 AccessDenied");
  pending.set_source_error_since_unix_ms(absl::ToUnixMillis(absl::Now()) - 5'000);
  EXPECT_CALL(*stub, ListPendingCheckpoints(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(pending), Return(grpc::Status::OK)));
  CliResult r = RunWith({"checkpoints", "demo"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_THAT(r.out, StartsWith("the server cannot list this run's source (for "));
  EXPECT_THAT(r.out, HasSubstr("HTTP 403 AccessDenied"));
  EXPECT_THAT(r.out, HasSubstr("no checkpoints admitted yet"));
}

TEST(RunCliTest, CheckpointsHumanTable) {
  auto stub = std::make_unique<MockStub>();
  std::vector<v1::Checkpoint> items(1);
  items[0].set_step(100);
  items[0].set_path("/d/step_000100");
  items[0].set_state(v1::CHECKPOINT_PENDING);
  EXPECT_CALL(*stub, ListCheckpointsRaw(_, _))
      .WillOnce(Return(new FakeReader<v1::Checkpoint>(items, grpc::Status::OK)));
  EXPECT_CALL(*stub, ListPendingCheckpoints(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "older server")));
  CliResult r = RunWith({"checkpoints", "demo"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out,
            "STEP  STATE    PATH            ERROR\n"
            " 100  pending  /d/step_000100  -\n");
}

TEST(RunCliTest, CheckpointsTableShowsFoldersNotAdmittedWithReasonAndAge) {
  auto stub = std::make_unique<MockStub>();
  std::vector<v1::Checkpoint> items(1);
  items[0].set_step(100);
  items[0].set_path("/d/step_000100");
  items[0].set_state(v1::CHECKPOINT_EVALUATED);
  EXPECT_CALL(*stub, ListCheckpointsRaw(_, _))
      .WillOnce(Return(new FakeReader<v1::Checkpoint>(items, grpc::Status::OK)));
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  v1::ListPendingCheckpointsResponse pending;
  v1::PendingCheckpoint* garbage = pending.add_pending();
  garbage->set_step(200);
  garbage->set_path("/d/step_000200");
  garbage->set_reason("step_000200: config.json is not valid JSON");
  garbage->set_since_unix_ms(now_ms - 3 * 3600 * 1000);  // 3 hours (and a little) ago
  garbage->set_incomplete(true);
  v1::PendingCheckpoint* settling = pending.add_pending();
  settling->set_step(300);
  settling->set_path("/d/step_000300");
  settling->set_reason("settling (complete; waiting for the next poll)");
  settling->set_since_unix_ms(now_ms + 60'000);  // a server clock ahead: no negative age
  EXPECT_CALL(*stub, ListPendingCheckpoints(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(pending), Return(grpc::Status::OK)));
  CliResult r = RunWith({"checkpoints", "demo"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  const std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u) << r.out;
  EXPECT_THAT(lines[1], HasSubstr("evaluated"));
  EXPECT_THAT(lines[2], AllOf(HasSubstr(" 200  incomplete  /d/step_000200"),
                              HasSubstr("config.json is not valid JSON (for 3h00m)")));
  EXPECT_THAT(lines[3], AllOf(HasSubstr(" 300  settling    /d/step_000300"),
                              HasSubstr("settling (complete; waiting for the next poll) (for 0s)")));
}

TEST(RunCliTest, CheckpointsOfARunWithOnlyPendingFoldersShowThem) {
  auto stub = std::make_unique<MockStub>();
  EXPECT_CALL(*stub, ListCheckpointsRaw(_, _))
      .WillOnce(Return(new FakeReader<v1::Checkpoint>({}, grpc::Status::OK)));
  v1::ListPendingCheckpointsResponse pending;
  pending.add_pending()->set_step(100);
  pending.mutable_pending(0)->set_reason("step_000100: config.json is missing");
  pending.mutable_pending(0)->set_incomplete(true);
  EXPECT_CALL(*stub, ListPendingCheckpoints(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(pending), Return(grpc::Status::OK)));
  CliResult r = RunWith({"checkpoints", "demo"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_THAT(r.out, HasSubstr("config.json is missing"));
  EXPECT_THAT(r.out, Not(HasSubstr("no checkpoints admitted yet")));
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
  EXPECT_FALSE(sent.has_variant_spec());  // "all" names no one variant
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

// ---- Windows and categories ----

TEST(ParseTaskSpecTest, CategorySuffixOnlyWhenKnown) {
  auto none = [](const std::string&) { return false; };
  auto spec = ParseTaskSpec("tasks/jnli.json:nli", none);
  ASSERT_OK(spec);
  EXPECT_EQ(spec->path, "tasks/jnli.json");
  EXPECT_EQ(spec->category, "NLI");

  spec = ParseTaskSpec("plain.jsonl", none);
  ASSERT_OK(spec);
  EXPECT_EQ(spec->path, "plain.jsonl");
  EXPECT_EQ(spec->category, "");

  // A ':' inside the path is not a category.
  spec = ParseTaskSpec("/mnt/a:b/task.jsonl", none);
  ASSERT_OK(spec);
  EXPECT_EQ(spec->path, "/mnt/a:b/task.jsonl");
  EXPECT_EQ(spec->category, "");
  spec = ParseTaskSpec("/mnt/a:b/task.jsonl:Qa", none);
  ASSERT_OK(spec);
  EXPECT_EQ(spec->path, "/mnt/a:b/task.jsonl");
  EXPECT_EQ(spec->category, "QA");

  // A file whose name really ends in ":QA" stays a path.
  auto only_whole = [](const std::string& p) { return p == "odd:QA"; };
  spec = ParseTaskSpec("odd:QA", only_whole);
  ASSERT_OK(spec);
  EXPECT_EQ(spec->path, "odd:QA");
  EXPECT_EQ(spec->category, "");

  EXPECT_THAT(ParseTaskSpec("jnli.json:XYZ", none),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("unknown category 'XYZ'"), HasSubstr("--tasks"),
                             HasSubstr("NLI, QA, RC, MC, EL, FA, MR, MT, HE"))));
  // A non-word suffix is part of the path (reported later if the file is missing).
  spec = ParseTaskSpec("dir:2/x.json", none);
  ASSERT_OK(spec);
  EXPECT_EQ(spec->path, "dir:2/x.json");
}

TEST(ParseWindowsTest, SortedUniqueAtLeastTwo) {
  auto w = ParseWindows("average", "10,2,5, 2");
  ASSERT_OK(w);
  EXPECT_EQ(*w, (std::vector<uint32_t>{2, 5, 10}));
  w = ParseWindows("ensemble", "none");
  ASSERT_OK(w);
  EXPECT_TRUE(w->empty());
  EXPECT_THAT(ParseWindows("average", "1,2"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("--average"), HasSubstr("2.."))));
  EXPECT_THAT(ParseWindows("ensemble", "3,x"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--ensemble")));
  EXPECT_THAT(ParseWindows("ensemble", ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--ensemble")));
  EXPECT_THAT(ParseWindows("average", "2,,5"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--average")));
}

TEST(RunCliTest, RunsAddSendsCategoriesAndWindows) {
  TempDir dir;
  const std::string mc = dir.Write("arith_mc.jsonl", kChoiceTask);
  const std::string gen = dir.Write("qa_gen.json", kGenTask);
  auto stub = std::make_unique<MockStub>();
  v1::CreateRunRequest sent;
  v1::Run created = MakeRun("demo");
  created.mutable_config()->mutable_tasks(0)->set_category("MC");
  created.mutable_config()->add_average_windows(2);
  created.mutable_config()->add_average_windows(5);
  EXPECT_CALL(*stub, CreateRun(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(created), Return(grpc::Status::OK)));
  CliResult r = RunWith({"runs", "add", "demo", "--source", "/x", "--tasks",
                         mc + ":mc," + gen, "--average", "20,2,5,10", "--ensemble", "3,5,10",
                         "--json"},
                        std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  ASSERT_EQ(sent.config().tasks_size(), 2);
  EXPECT_EQ(sent.config().tasks(0).name(), "arith_mc");
  EXPECT_EQ(sent.config().tasks(0).category(), "MC");
  EXPECT_EQ(sent.config().tasks(1).name(), "qa_gen");
  EXPECT_EQ(sent.config().tasks(1).category(), "");
  ASSERT_EQ(sent.task_files_size(), 2);
  EXPECT_EQ(sent.task_files(0).filename(), "arith_mc.jsonl");
  EXPECT_EQ(sent.task_files(1).filename(), "qa_gen.json");
  EXPECT_THAT(sent.config().average_windows(), ::testing::ElementsAre(2, 5, 10, 20));
  EXPECT_THAT(sent.config().ensemble_windows(), ::testing::ElementsAre(3, 5, 10));
  json out = json::parse(r.out);
  EXPECT_EQ(out["tasks"][0]["category"], "MC");
  EXPECT_EQ(out["average_windows"], json::array({2, 5}));
  EXPECT_EQ(out["ensemble_windows"], json::array());
}

TEST(RunCliTest, RunsAddSendsPromptAndTaskSettingsAndTrainFiles) {
  TempDir dir;
  const std::string mc = dir.Write("arith_mc.jsonl", kChoiceTask);
  const std::string gen = dir.Write("qa_gen.json", kGenTask);
  std::filesystem::create_directories(dir.path() + "/train");
  const std::string train_text = R"({"samples": [{"input": "7", "output": "seven"}]})";
  dir.Write("train/qa_gen.json", train_text);
  auto stub = std::make_unique<MockStub>();
  v1::CreateRunRequest sent;
  EXPECT_CALL(*stub, CreateRun(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(MakeRun("demo")), Return(grpc::Status::OK)));
  CliResult r = RunWith({"runs", "add", "demo", "--source", "/x", "--tasks", mc + "," + gen,
                         "--metric", "arith_mc=acc_norm", "--max_samples", "2",
                         "--few_shots_from", dir.path() + "/train", "--prompt_language", "en",
                         "--bos", "add", "--max_new_tokens_delta", "4"},
                        std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.config().prompt_language(), "en");
  EXPECT_EQ(sent.config().bos(), "add");
  EXPECT_EQ(sent.config().max_new_tokens_delta(), 4);
  ASSERT_EQ(sent.config().tasks_size(), 2);
  EXPECT_EQ(sent.config().tasks(0).metric(), "acc_norm");
  EXPECT_EQ(sent.config().tasks(0).max_samples(), 2u);
  EXPECT_EQ(sent.config().tasks(1).metric(), "");
  EXPECT_EQ(sent.config().tasks(1).max_samples(), 2u);
  EXPECT_TRUE(sent.task_files(0).train_content().empty());  // multiple choice takes no shots
  EXPECT_EQ(sent.task_files(1).train_filename(), "qa_gen.json");
  EXPECT_EQ(sent.task_files(1).train_content(), train_text);
}

TEST(RunCliTest, RunsAddTaskSettingErrors) {
  TempDir dir;
  const std::string mc = dir.Write("arith_mc.jsonl", kChoiceTask);
  const std::string gen = dir.Write("qa_gen.json", kGenTask);
  std::filesystem::create_directories(dir.path() + "/empty");
  struct Case {
    std::vector<std::string> flags;
    int code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--metric", "arith_mc"}, kExitUsage, "TASK=METRIC"},
      {{"--metric", "other=acc"}, kExitFailure, "'other'"},
      {{"--metric", "arith_mc=char_f1"}, kExitFailure, "acc or acc_norm"},
      {{"--metric", "qa_gen=rouge"}, kExitFailure, "rouge"},
      {{"--max_samples", "-3"}, kExitUsage, "--max_samples"},
      {{"--prompt_language", "de"}, kExitUsage, "ja or en"},
      {{"--bos", "maybe"}, kExitUsage, "auto, add or none"},
      {{"--max_new_tokens_delta", "x"}, kExitUsage, "--max_new_tokens_delta"},
      {{"--few_shots_from", dir.path() + "/empty"}, kExitFailure, "has no qa_gen.json"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"runs", "add", "demo", "--source", "/x", "--tasks", mc + "," + gen};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    CliResult r = RunWith(args, std::make_unique<MockStub>());  // no RPC expected
    EXPECT_EQ(r.code, c.code) << c.flags[0] << ": " << r.err;
    ExpectOneErrorLine(r);
    EXPECT_THAT(r.err, HasSubstr(c.message)) << c.flags[0];
  }
}

TEST(RunCliTest, RescoreSendsRunAndTaskAndReports) {
  auto stub = std::make_unique<MockStub>();
  v1::RescoreRequest sent;
  v1::RescoreResponse response;
  response.set_values(12);
  response.set_predictions(340);
  response.set_scores_changed(3);
  EXPECT_CALL(*stub, Rescore(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(response), Return(grpc::Status::OK)));
  CliResult r = RunWith({"rescore", "run42", "--task", "jsquad"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.run(), "run42");
  EXPECT_EQ(sent.task(), "jsquad");
  EXPECT_THAT(r.out, HasSubstr("rescored 12 values (340 predictions)"));
  EXPECT_THAT(r.out, HasSubstr("3 task scores changed"));

  auto json_stub = std::make_unique<MockStub>();
  EXPECT_CALL(*json_stub, Rescore(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(response), Return(grpc::Status::OK)));
  CliResult j = RunWith({"rescore", "run42", "--json"}, std::move(json_stub));
  ASSERT_EQ(j.code, kExitOk) << j.err;
  EXPECT_EQ(json::parse(j.out)["scores_changed"], 3);
}

TEST(RunCliTest, BackupSendsAnAbsoluteFolderAndStorageErrorsShowTheServersReason) {
  auto stub = std::make_unique<MockStub>();
  v1::BackupRequest sent;
  v1::BackupResponse response;
  response.set_backup_id(3);
  response.set_bytes(4096);
  response.set_path("/srv/backups");
  EXPECT_CALL(*stub, Backup(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(response), Return(grpc::Status::OK)));
  CliResult r = RunWith({"backup", "--to", "relative/backups"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.to_dir(), (std::filesystem::current_path() / "relative/backups").string());
  EXPECT_THAT(r.out, HasSubstr("backup 3 written to /srv/backups (4096 bytes added)"));
  EXPECT_THAT(r.out, HasSubstr("steadyeval-server restore --from /srv/backups"));

  EXPECT_EQ(RunWith({"backup"}, std::make_unique<MockStub>()).code, kExitUsage);

  // A refusal by the server's storage is the server's message, not "cannot reach".
  auto full = std::make_unique<MockStub>();
  EXPECT_CALL(*full, Backup(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                    "storage: RocksDB stopped writes to /d: IO error")));
  CliResult refused = RunWith({"backup", "--to", "/b"}, std::move(full));
  EXPECT_EQ(refused.code, kExitFailure);
  EXPECT_THAT(refused.err, HasSubstr("storage: RocksDB stopped writes"));
  EXPECT_THAT(refused.err, ::testing::Not(HasSubstr("cannot reach")));
}

TEST(RunCliTest, RunsAddRejectsBadCategoryAndWindowWithUsage) {
  TempDir dir;
  const std::string mc = dir.Write("arith_mc.jsonl", kChoiceTask);
  CliResult bad_category = RunWith(
      {"runs", "add", "demo", "--source", "/x", "--tasks", mc + ":XQ"}, std::make_unique<MockStub>());
  EXPECT_EQ(bad_category.code, kExitUsage);
  ExpectOneErrorLine(bad_category);
  EXPECT_THAT(bad_category.err, HasSubstr("unknown category 'XQ'"));

  CliResult bad_window =
      RunWith({"runs", "add", "demo", "--source", "/x", "--tasks", mc, "--ensemble", "3,1"},
              std::make_unique<MockStub>());
  EXPECT_EQ(bad_window.code, kExitUsage);
  ExpectOneErrorLine(bad_window);
  EXPECT_THAT(bad_window.err, HasSubstr("bad --ensemble '3,1'"));
}

TEST(RunCliTest, RunsUpdateSetsOnlyGivenFlags) {
  auto stub = std::make_unique<MockStub>();
  v1::UpdateRunRequest sent;
  v1::Run updated = MakeRun("demo");
  updated.mutable_config()->add_ensemble_windows(3);
  EXPECT_CALL(*stub, UpdateRun(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(updated), Return(grpc::Status::OK)));
  CliResult r = RunWith({"runs", "update", "demo", "--ensemble", "3"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.name(), "demo");
  EXPECT_FALSE(sent.set_average_windows());
  EXPECT_TRUE(sent.set_ensemble_windows());
  EXPECT_THAT(sent.ensemble_windows(), ::testing::ElementsAre(3));
  EXPECT_THAT(r.out, StartsWith("updated run demo\n"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex("ensemble_windows: +3\n"));
  EXPECT_THAT(r.out, ::testing::ContainsRegex("average_windows: +-\n"));
}

TEST(RunCliTest, RunsUpdateNoneClearsAndJsonIsTheRun) {
  auto stub = std::make_unique<MockStub>();
  v1::UpdateRunRequest sent;
  EXPECT_CALL(*stub, UpdateRun(_, _, _))
      .WillOnce(
          DoAll(SaveArg<1>(&sent), SetArgPointee<2>(MakeRun("demo")), Return(grpc::Status::OK)));
  CliResult r = RunWith({"runs", "update", "demo", "--average", "none", "--json"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_TRUE(sent.set_average_windows());
  EXPECT_EQ(sent.average_windows_size(), 0);
  EXPECT_FALSE(sent.set_ensemble_windows());
  json out = json::parse(r.out);
  EXPECT_EQ(out["name"], "demo");
  EXPECT_EQ(out["average_windows"], json::array());
}

TEST(RunCliTest, RunsUpdateUsageErrors) {
  CliResult nothing = RunWith({"runs", "update", "demo"}, std::make_unique<MockStub>());
  EXPECT_EQ(nothing.code, kExitUsage);
  ExpectOneErrorLine(nothing);
  EXPECT_THAT(nothing.err, HasSubstr("nothing to update"));
  CliResult bad = RunWith({"runs", "update", "demo", "--average", "1"}, std::make_unique<MockStub>());
  EXPECT_EQ(bad.code, kExitUsage);
  EXPECT_THAT(bad.err, HasSubstr("--average"));
}

TEST(RunCliTest, ScoresShowsEveryVariantInOrder) {
  auto stub = std::make_unique<MockStub>();
  std::vector<v1::Score> scores;
  for (const char* variant : {"ens-soft@3", "ens@3", "avg@10", "raw", "avg@2"}) {
    v1::Score s;
    s.set_task("t");
    s.set_variant(variant);
    s.set_step(100);
    s.set_metric("acc");
    s.set_score(0.5);
    scores.push_back(s);
  }
  EXPECT_CALL(*stub, GetScoresRaw(_, _))
      .WillOnce(Return(new FakeReader<v1::Score>(scores, grpc::Status::OK)));
  CliResult r = RunWith({"scores", "demo"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  const size_t raw = r.out.find("variant raw "), avg2 = r.out.find("variant avg@2 "),
               avg10 = r.out.find("variant avg@10 "), ens = r.out.find("variant ens@3 "),
               soft = r.out.find("variant ens-soft@3 ");
  ASSERT_NE(soft, std::string::npos);
  EXPECT_LT(raw, avg2);
  EXPECT_LT(avg2, avg10);
  EXPECT_LT(avg10, ens);
  EXPECT_LT(ens, soft);
}

TEST(ParseInvocationTest, VariantValidated) {
  for (const char* ok : {"raw", "all", "avg@2", "ens@10", "ens-soft@3"}) {
    EXPECT_OK(ParseInvocation({"scores", "d", "--variant", ok}, "")) << ok;
  }
  for (const char* bad : {"avg", "avg@1", "avg@x", "mean@3", "ens-soft@"}) {
    EXPECT_THAT(ParseInvocation({"scores", "d", "--variant", bad}, ""),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad --variant")))
        << bad;
  }
}

// ---- Stability ----

v1::GetStabilityRequest StabilityRequestFor(const std::vector<std::string>& args) {
  auto inv = ParseInvocation(args, "");
  EXPECT_OK(inv);
  v1::GetStabilityRequest req;
  if (inv.ok()) {
    EXPECT_OK(SetStabilityRange(*inv, req));
  }
  return req;
}

TEST(StabilityRangeTest, LastPercentPointsAndSteps) {
  v1::GetStabilityRequest req = StabilityRequestFor({"stability", "d", "--last", "20%"});
  EXPECT_EQ(req.range_case(), v1::GetStabilityRequest::kLastFraction);
  EXPECT_DOUBLE_EQ(req.last_fraction(), 0.2);

  req = StabilityRequestFor({"stability", "d", "--last", "5"});
  EXPECT_EQ(req.range_case(), v1::GetStabilityRequest::kLastPoints);
  EXPECT_EQ(req.last_points(), 5u);

  req = StabilityRequestFor({"stability", "d", "--steps", "100:900"});
  EXPECT_EQ(req.range_case(), v1::GetStabilityRequest::kSteps);
  EXPECT_EQ(req.steps().from_step(), 100u);
  EXPECT_EQ(req.steps().to_step(), 900u);

  req = StabilityRequestFor({"stability", "d"});
  EXPECT_EQ(req.range_case(), v1::GetStabilityRequest::RANGE_NOT_SET);
}

TEST(StabilityRangeTest, ErrorsNameTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"stability", "d", "--last", "0%"}, "--last"},
      {{"stability", "d", "--last", "150%"}, "--last"},
      {{"stability", "d", "--last", "1"}, "--last"},
      {{"stability", "d", "--last", "0.2"}, "--last"},
      {{"stability", "d", "--last", "x%"}, "--last"},
      {{"stability", "d", "--steps", "5"}, "--steps"},
      {{"stability", "d", "--steps", "9:5"}, "--steps"},
      {{"stability", "d", "--steps", "a:5"}, "--steps"},
      {{"stability", "d", "--last", "5", "--steps", "1:2"}, "mutually exclusive"},
  };
  for (const auto& [args, expected] : cases) {
    CliResult r = RunWith(args, std::make_unique<MockStub>());
    EXPECT_EQ(r.code, kExitUsage) << args[3];
    ExpectOneErrorLine(r);
    EXPECT_THAT(r.err, HasSubstr(expected));
  }
}

v1::GetStabilityResponse SampleStability() {
  v1::GetStabilityResponse resp;
  resp.set_run("demo");
  resp.mutable_range()->set_from_step(800);
  resp.mutable_range()->set_to_step(1000);
  auto add = [&](const std::string& task, const std::string& kind, const std::string& variant) {
    v1::StabilityRow* row = resp.add_rows();
    row->set_task(task);
    row->set_kind(kind);
    row->set_variant(variant);
    row->set_metric("acc");
    row->set_checkpoints(3);
    return row;
  };
  v1::StabilityRow* avg = add("AVG", "avg", "raw");
  avg->set_mean(0.5);
  avg->set_mtv(0.02);
  v1::StabilityRow* cat = add("MC", "category", "raw");
  cat->set_mean(0.5);
  cat->set_mtv(0.02);
  v1::StabilityRow* avg2 = add("arith_mc", "task", "avg@2");
  avg2->set_mean(0.55);
  avg2->set_mtv(0.01);
  avg2->set_example_mtv(0.1);
  avg2->set_instability(0.05);
  v1::StabilityRow* raw = add("arith_mc", "task", "raw");
  raw->set_mean(0.5);
  raw->set_mtv(0.02);
  raw->set_example_mtv(0.2);
  raw->set_instability(0.125);
  v1::StabilityRow* bleu = add("mt_gen", "task", "raw");
  bleu->set_metric("bleu");
  bleu->set_mean(12.5);
  bleu->set_checkpoints(1);  // one point: no MTV, no IS
  return resp;
}

TEST(RunCliTest, StabilityJsonShapeWithNulls) {
  auto stub = std::make_unique<MockStub>();
  v1::GetStabilityRequest sent;
  v1::GetStabilityResponse resp = SampleStability();
  EXPECT_CALL(*stub, GetStability(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(resp), Return(grpc::Status::OK)));
  CliResult r = RunWith({"stability", "demo", "--task", "arith_mc", "--last", "25%", "--json"},
                        std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.run(), "demo");
  EXPECT_EQ(sent.task(), "arith_mc");
  EXPECT_DOUBLE_EQ(sent.last_fraction(), 0.25);
  json out = json::parse(r.out);
  EXPECT_EQ(out["run"], "demo");
  EXPECT_EQ(out["range"], json({{"from_step", 800}, {"to_step", 1000}}));
  ASSERT_EQ(out["rows"].size(), 5u);
  const json& raw = out["rows"][3];
  EXPECT_EQ(raw, json({{"task", "arith_mc"},
                       {"kind", "task"},
                       {"variant", "raw"},
                       {"metric", "acc"},
                       {"mean", 0.5},
                       {"mtv", 0.02},
                       {"example_mtv", 0.2},
                       {"is", 0.125},
                       {"checkpoints", 3}}));
  const json& bleu = out["rows"][4];
  EXPECT_TRUE(bleu["mtv"].is_null());
  EXPECT_TRUE(bleu["example_mtv"].is_null());
  EXPECT_TRUE(bleu["is"].is_null());
  EXPECT_EQ(bleu["mean"], 12.5);
  EXPECT_EQ(out["median_drift"], json({{"l2", nullptr}, {"relative", nullptr}, {"pairs", 0}}));
  std::vector<std::string> keys;
  for (auto it = out.begin(); it != out.end(); ++it) keys.push_back(it.key());
  EXPECT_THAT(keys, ::testing::UnorderedElementsAre("run", "range", "rows", "median_drift"));
}

TEST(RunCliTest, StabilityJsonRangeNullAndDrift) {
  auto stub = std::make_unique<MockStub>();
  v1::GetStabilityResponse resp;
  resp.set_run("demo");
  resp.set_median_drift_l2(1.5);
  resp.set_median_drift_relative(0.001);
  resp.set_drift_pairs(4);
  EXPECT_CALL(*stub, GetStability(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(resp), Return(grpc::Status::OK)));
  CliResult r = RunWith({"stability", "demo", "--json"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  json out = json::parse(r.out);
  EXPECT_TRUE(out["range"].is_null());
  EXPECT_EQ(out["rows"], json::array());
  EXPECT_EQ(out["median_drift"], json({{"l2", 1.5}, {"relative", 0.001}, {"pairs", 4}}));
}

TEST(RunCliTest, StabilityHumanTable) {
  auto stub = std::make_unique<MockStub>();
  v1::GetStabilityRequest sent;
  v1::GetStabilityResponse resp = SampleStability();
  resp.set_median_drift_l2(1.5);
  resp.set_median_drift_relative(0.00123);
  resp.set_drift_pairs(2);
  EXPECT_CALL(*stub, GetStability(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(resp), Return(grpc::Status::OK)));
  CliResult r = RunWith({"stability", "demo", "--steps", "800:1000"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.steps().from_step(), 800u);
  EXPECT_EQ(r.out,
            "run demo  steps 800..1000  median parameter drift: l2 1.5, relative 0.00123 "
            "(2 pairs)\n"
            "TASK      VARIANT     MEAN     MTV  EX-MTV      IS  N\n"
            "arith_mc  raw       0.5000  0.0200  0.2000  0.1250  3\n"
            "arith_mc  avg@2     0.5500  0.0100  0.1000  0.0500  3\n"
            "mt_gen    raw      12.5000       -       -       -  1\n"
            "MC        raw       0.5000  0.0200       -       -  3\n"
            "AVG       raw       0.5000  0.0200       -       -  3\n");
}

// ---- Examples ----

v1::GetExamplesResponse SampleExamples() {
  v1::GetExamplesResponse resp;
  v1::ExampleHistory* e = resp.add_examples();
  e->set_example(7);
  e->set_input("What is\n1+1? " + std::string(200, 'x'));
  e->set_gold("2");
  e->set_flips(1);
  auto point = [&](const std::string& variant, uint64_t step, const std::string& out,
                   double score) {
    v1::ExamplePoint* p = e->add_points();
    p->set_variant(variant);
    p->set_step(step);
    p->set_output(out + " ");
    p->set_normalized(out);
    p->set_score(score);
  };
  point("raw", 100, "2", 1);
  point("raw", 200, "3", 0);
  point("avg@2", 200, "2", 1);
  return resp;
}

TEST(RunCliTest, ExamplesJsonShapeAndRequest) {
  auto stub = std::make_unique<MockStub>();
  v1::GetExamplesRequest sent;
  EXPECT_CALL(*stub, GetExamples(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(SampleExamples()),
                      Return(grpc::Status::OK)));
  CliResult r =
      RunWith({"examples", "demo", "--task", "qa_gen", "--example", "7", "--json"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.run(), "demo");
  EXPECT_EQ(sent.task(), "qa_gen");
  EXPECT_EQ(sent.select_case(), v1::GetExamplesRequest::kExample);
  EXPECT_EQ(sent.example(), 7u);
  json out = json::parse(r.out);
  EXPECT_EQ(out["run"], "demo");
  EXPECT_EQ(out["task"], "qa_gen");
  ASSERT_EQ(out["examples"].size(), 1u);
  const json& e = out["examples"][0];
  EXPECT_EQ(e["example"], 7);
  EXPECT_EQ(e["gold"], "2");
  EXPECT_EQ(e["flips"], 1);
  ASSERT_EQ(e["points"].size(), 3u);
  EXPECT_EQ(e["points"][1], json({{"variant", "raw"},
                                  {"step", 200},
                                  {"output", "3 "},
                                  {"normalized", "3"},
                                  {"score", 0.0}}));
}

TEST(RunCliTest, ExamplesHumanAndFlippiest) {
  auto stub = std::make_unique<MockStub>();
  v1::GetExamplesRequest sent;
  EXPECT_CALL(*stub, GetExamples(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(SampleExamples()),
                      Return(grpc::Status::OK)));
  CliResult r = RunWith({"examples", "demo", "--task", "qa_gen", "--flippiest", "3"},
                        std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.select_case(), v1::GetExamplesRequest::kFlippiest);
  EXPECT_EQ(sent.flippiest(), 3u);
  EXPECT_THAT(r.out, StartsWith("example 7  flips 1\ninput: What is 1+1? xxx"));
  EXPECT_THAT(r.out, HasSubstr("x…\ngold:  2\n"));
  EXPECT_THAT(r.out, HasSubstr("STEP  raw  avg@2\n"
                               " 100  2 ✓  -\n"
                               " 200  3 ✗  2 ✓\n"));
}

TEST(RunCliTest, ExamplesUsageErrors) {
  CliResult no_task = RunWith({"examples", "demo"}, std::make_unique<MockStub>());
  EXPECT_EQ(no_task.code, kExitUsage);
  EXPECT_THAT(no_task.err, HasSubstr("missing --task"));
  CliResult both = RunWith({"examples", "demo", "--task", "t", "--example", "1", "--flippiest", "2"},
                           std::make_unique<MockStub>());
  EXPECT_EQ(both.code, kExitUsage);
  EXPECT_THAT(both.err, HasSubstr("mutually exclusive"));
  CliResult zero = RunWith({"examples", "demo", "--task", "t", "--flippiest", "0"},
                           std::make_unique<MockStub>());
  EXPECT_EQ(zero.code, kExitUsage);
  EXPECT_THAT(zero.err, HasSubstr("--flippiest"));
}

// ---- Export ----

std::vector<v1::ExportedPrediction> SamplePredictions() {
  std::vector<v1::ExportedPrediction> items(3);
  items[0].set_step(100);
  items[0].set_task("qa_gen");
  items[0].set_variant("raw");
  items[0].set_example(0);
  items[0].set_output("Tokyo, Japan");
  items[0].set_normalized_output("tokyo, japan");
  items[0].set_score(1);
  (*items[0].mutable_metrics())["exact_match"] = 1;
  (*items[0].mutable_metrics())["char_f1"] = 1;
  items[1] = items[0];
  items[1].set_example(1);
  items[1].set_output("say \"hi\"\nthen go");
  items[1].set_normalized_output("say \"hi\" then go");
  items[1].set_score(0);
  (*items[1].mutable_metrics())["char_f1"] = 0.25;
  items[2].set_step(200);
  items[2].set_task("arith_mc");
  items[2].set_variant("ens@3");
  items[2].set_example(4);
  items[2].set_output("1");
  items[2].set_normalized_output("1");
  items[2].set_score(1);
  (*items[2].mutable_metrics())["acc"] = 1;
  return items;
}

// Counts the reads, so a test can see that rows reached the output before the stream ended.
class CountingReader : public FakeReader<v1::ExportedPrediction> {
 public:
  CountingReader(std::vector<v1::ExportedPrediction> items, std::ostringstream* out,
                 std::vector<size_t>* sizes_at_read)
      : FakeReader(std::move(items), grpc::Status::OK), out_(out), sizes_(sizes_at_read) {}
  bool Read(v1::ExportedPrediction* msg) override {
    sizes_->push_back(out_->str().size());
    return FakeReader::Read(msg);
  }

 private:
  std::ostringstream* out_;
  std::vector<size_t>* sizes_;
};

TEST(RunCliTest, ExportJsonlStreamsEachRecordAsALine) {
  auto stub = std::make_unique<MockStub>();
  std::ostringstream out, err;
  std::vector<size_t> sizes_at_read;
  v1::ExportPredictionsRequest sent;
  EXPECT_CALL(*stub, ExportPredictionsRaw(_, _))
      .WillOnce(DoAll(SaveArg<1>(&sent),
                      Return(new CountingReader(SamplePredictions(), &out, &sizes_at_read))));
  auto factory = [&](const std::string&) -> std::unique_ptr<v1::EvalService::StubInterface> {
    return std::move(stub);
  };
  ASSERT_EQ(RunCli({"export", "demo", "--format", "jsonl", "--variant", "all"}, "", factory, out,
                   err),
            kExitOk)
      << err.str();
  EXPECT_EQ(sent.run(), "demo");
  EXPECT_EQ(sent.task(), "");
  EXPECT_EQ(sent.variant(), "");  // "all" is the empty filter
  EXPECT_EQ(err.str(), "");
  // Each read after the first found the previous record already written.
  ASSERT_EQ(sizes_at_read.size(), 4u);
  EXPECT_EQ(sizes_at_read[0], 0u);
  EXPECT_LT(sizes_at_read[1], sizes_at_read[2]);
  EXPECT_LT(sizes_at_read[2], sizes_at_read[3]);

  std::vector<std::string> lines = absl::StrSplit(out.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  json first = json::parse(lines[0]);
  EXPECT_EQ(first, json({{"step", 100},
                         {"task", "qa_gen"},
                         {"variant", "raw"},
                         {"example", 0},
                         {"output", "Tokyo, Japan"},
                         {"normalized_output", "tokyo, japan"},
                         {"score", 1.0},
                         {"metrics", {{"char_f1", 1.0}, {"exact_match", 1.0}}}}));
  EXPECT_EQ(json::parse(lines[1])["output"], "say \"hi\"\nthen go");
  EXPECT_EQ(json::parse(lines[2])["metrics"], json({{"acc", 1.0}}));
}

TEST(RunCliTest, ExportCsvQuotesAndHasAColumnPerMetric) {
  auto stub = std::make_unique<MockStub>();
  v1::ExportPredictionsRequest sent;
  EXPECT_CALL(*stub, ExportPredictionsRaw(_, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), Return(new FakeReader<v1::ExportedPrediction>(
                                             SamplePredictions(), grpc::Status::OK))));
  CliResult r = RunWith({"export", "demo", "--task", "qa_gen", "--variant", "raw", "--format",
                         "csv", "--json"},
                        std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.task(), "qa_gen");
  EXPECT_EQ(sent.variant(), "raw");  // for a server before variant_spec
  EXPECT_EQ(sent.variant_spec().kind(), v1::VARIANT_RAW);
  EXPECT_EQ(r.out,
            "step,task,variant,example,output,normalized_output,score,char_f1,exact_match,acc\r\n"
            "100,qa_gen,raw,0,\"Tokyo, Japan\",\"tokyo, japan\",1,1,1,\r\n"
            "100,qa_gen,raw,1,\"say \"\"hi\"\"\nthen go\",\"say \"\"hi\"\" then go\",0,0.25,1,\r\n"
            "200,arith_mc,ens@3,4,1,1,1,,,1\r\n");
}

TEST(RunCliTest, ExportFailureMidStreamKeepsRowsAndExitsOne) {
  auto stub = std::make_unique<MockStub>();
  EXPECT_CALL(*stub, ExportPredictionsRaw(_, _))
      .WillOnce(Return(new FakeReader<v1::ExportedPrediction>(
          SamplePredictions(), grpc::Status(grpc::StatusCode::UNAVAILABLE, "socket closed"))));
  CliResult r = RunWith({"export", "demo", "--format", "jsonl"}, std::move(stub));
  EXPECT_EQ(r.code, kExitFailure);
  ExpectOneErrorLine(r);
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 3);
}

TEST(RunCliTest, ExportUsageErrors) {
  CliResult missing = RunWith({"export", "demo"}, std::make_unique<MockStub>());
  EXPECT_EQ(missing.code, kExitUsage);
  EXPECT_THAT(missing.err, HasSubstr("missing --format"));
  CliResult bad = RunWith({"export", "demo", "--format", "xml"}, std::make_unique<MockStub>());
  EXPECT_EQ(bad.code, kExitUsage);
  ExpectOneErrorLine(bad);
  EXPECT_THAT(bad.err, HasSubstr("bad --format 'xml'"));
}

// ---- Jobs and help ----

TEST(RunCliTest, SupersededJobs) {
  auto stub = std::make_unique<MockStub>();
  std::vector<v1::Job> jobs(1);
  jobs[0].set_id(9);
  jobs[0].set_run("demo");
  jobs[0].set_kind("avg@3");
  jobs[0].add_steps(100);
  jobs[0].add_steps(200);
  jobs[0].add_steps(300);
  jobs[0].set_state(v1::JOB_SUPERSEDED);
  jobs[0].set_superseded_by(12);
  EXPECT_CALL(*stub, ListJobsRaw(_, _))
      .WillOnce(Return(new FakeReader<v1::Job>(jobs, grpc::Status::OK)));
  CliResult as_json = RunWith({"jobs", "--json"}, std::move(stub));
  ASSERT_EQ(as_json.code, kExitOk) << as_json.err;
  json job = json::parse(as_json.out)["jobs"][0];
  EXPECT_EQ(job["state"], "superseded");
  EXPECT_EQ(job["kind"], "avg@3");
  EXPECT_EQ(job["superseded_by"], 12);

  auto stub2 = std::make_unique<MockStub>();
  EXPECT_CALL(*stub2, ListJobsRaw(_, _))
      .WillOnce(Return(new FakeReader<v1::Job>(jobs, grpc::Status::OK)));
  CliResult r = RunWith({"jobs"}, std::move(stub2));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_THAT(r.out, HasSubstr("avg@3"));
  EXPECT_THAT(r.out, HasSubstr("superseded"));
  EXPECT_THAT(r.out, HasSubstr("superseded by job 12"));
}

TEST(RunCliTest, HelpForNewCommands) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"runs", "update", "--help"},
       "Usage: steadyeval runs update NAME [--average N[,N...]] [--ensemble N[,N...]]"},
      {{"stability", "--help"}, "Usage: steadyeval stability NAME [--task TASK] [--last K|P%] "
                                "[--steps A:B]"},
      {{"examples", "--help"},
       "Usage: steadyeval examples NAME --task TASK [--example I] [--flippiest K]"},
      {{"export", "--help"},
       "Usage: steadyeval export NAME [--task TASK] [--variant V] --format jsonl|csv"},
      {{"runs", "add", "--help"}, "--tasks FILE[:CATEGORY][,...]"},
  };
  for (const auto& [args, usage] : cases) {
    CliResult r = RunWith(args, std::make_unique<MockStub>());
    EXPECT_EQ(r.code, kExitOk);
    EXPECT_THAT(r.out, HasSubstr(usage));
    EXPECT_THAT(r.out, HasSubstr("Examples:\n  steadyeval "));
  }
  CliResult general = RunWith({"--help"}, std::make_unique<MockStub>());
  for (const char* command : {"runs update", "stability", "examples", "export"}) {
    EXPECT_THAT(general.out, HasSubstr(command));
  }
}

// Every command of the table has help (a usage line, a summary and examples of itself), it is
// listed in the overview, and `steadyeval help CMD` prints the same as `steadyeval CMD --help`.
TEST(CliHelpTest, EveryCommandHasHelpBothWays) {
  const std::vector<std::string> names = CommandNames();
  ASSERT_GE(names.size(), 20u);
  const CliResult overview = RunWith({"--help"}, std::make_unique<MockStub>());
  ASSERT_EQ(overview.code, kExitOk);
  const CliResult runs_alone = RunWith({"runs"}, std::make_unique<MockStub>());
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    const std::vector<std::string> words = absl::StrSplit(name, ' ');
    std::vector<std::string> by_flag_args = words;
    by_flag_args.push_back("--help");
    std::vector<std::string> by_word_args = {"help"};
    by_word_args.insert(by_word_args.end(), words.begin(), words.end());
    const CliResult by_flag = RunWith(by_flag_args, std::make_unique<MockStub>());
    const CliResult by_word = RunWith(by_word_args, std::make_unique<MockStub>());
    EXPECT_EQ(by_flag.code, kExitOk);
    EXPECT_EQ(by_word.code, kExitOk);
    EXPECT_EQ(by_flag.err, "");
    EXPECT_EQ(by_flag.out, UsageText(words));
    EXPECT_EQ(by_word.out, by_flag.out);

    const std::vector<std::string> lines = absl::StrSplit(by_flag.out, '\n');
    ASSERT_GE(lines.size(), 3u);
    EXPECT_THAT(lines[0], StartsWith("Usage: steadyeval " + name));
    EXPECT_EQ(lines[1], "");
    EXPECT_GT(lines[2].size(), std::string(".").size()) << "no summary";
    const size_t examples = by_flag.out.find("\nExamples:\n  ");
    ASSERT_NE(examples, std::string::npos) << by_flag.out;
    EXPECT_THAT(by_flag.out.substr(examples), HasSubstr("steadyeval " + name)) << "no example";

    EXPECT_THAT(overview.out, HasSubstr("\n  " + name + " "));
    if (words[0] == "runs") {  // the 'runs' group's usage error lists it
      EXPECT_THAT(runs_alone.err, ContainsRegex("(: |, | or )" + words[1] + "[, ]"));
    }
  }
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

// ---- Admin commands ----

TEST(ParseInvocationTest, AdminCommandUsage) {
  ASSERT_OK(ParseInvocation({"runs", "pause", "r1"}, ""));
  ASSERT_OK(ParseInvocation({"runs", "resume", "r1"}, ""));
  ASSERT_OK(ParseInvocation({"runs", "clear-tokenizer", "r1"}, ""));
  EXPECT_THAT(ParseInvocation({"runs", "delete", "r1"}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("deleting run r1"), HasSubstr("--yes"))));
  ASSERT_OK(ParseInvocation({"runs", "delete", "r1", "--yes"}, ""));
  EXPECT_THAT(ParseInvocation({"runs", "pause"}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("missing NAME")));

  auto by_ids = ParseInvocation({"jobs", "requeue", "12", "15"}, "");
  ASSERT_OK(by_ids);
  EXPECT_EQ(by_ids->CommandName(), "jobs requeue");
  EXPECT_EQ(by_ids->args, (std::vector<std::string>{"12", "15"}));
  ASSERT_OK(ParseInvocation({"jobs", "requeue", "--run", "r1", "--state", "failed"}, ""));
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"jobs", "requeue"},
        {"jobs", "requeue", "12", "--run", "r1", "--state", "failed"},
        {"jobs", "requeue", "--run", "r1"},
        {"jobs", "requeue", "--run", "r1", "--state", "done"},
        {"jobs", "requeue", "x12"},
        {"jobs", "requeue", "0"}}) {
    EXPECT_THAT(ParseInvocation(bad, ""), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")))
        << absl::StrJoin(bad, " ");
  }
  // Plain `jobs` still takes no argument.
  EXPECT_THAT(ParseInvocation({"jobs", "12"}, ""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unexpected argument '12'")));
}

TEST(RunCliTest, PauseAndResumeSendTheFlag) {
  for (bool pause : {true, false}) {
    auto stub = std::make_unique<MockStub>();
    v1::SetRunPausedRequest sent;
    v1::Run run = MakeRun("r1");
    run.set_paused(pause);
    EXPECT_CALL(*stub, SetRunPaused(_, _, _))
        .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(run), Return(grpc::Status::OK)));
    CliResult r = RunWith({"runs", pause ? "pause" : "resume", "r1"}, std::move(stub));
    ASSERT_EQ(r.code, kExitOk) << r.err;
    EXPECT_EQ(sent.name(), "r1");
    EXPECT_EQ(sent.paused(), pause);
    EXPECT_THAT(r.out, StartsWith(pause ? "paused run r1" : "resumed run r1"));
  }
  // `runs show` says so.
  auto stub = std::make_unique<MockStub>();
  v1::GetRunResponse shown;
  *shown.mutable_run() = MakeRun("r1");
  shown.mutable_run()->set_paused(true);
  EXPECT_CALL(*stub, GetRun(_, _, _)).WillRepeatedly(DoAll(SetArgPointee<2>(shown), Return(grpc::Status::OK)));
  CliResult text = RunWith({"runs", "show", "r1"}, std::move(stub));
  EXPECT_THAT(text.out, HasSubstr("paused"));
  EXPECT_THAT(text.out, HasSubstr("steadyeval runs resume r1"));
}

TEST(RunCliTest, DeleteNeedsYesAndReportsTheKeysRemoved) {
  auto refused = std::make_unique<MockStub>();
  EXPECT_CALL(*refused, DeleteRun(_, _, _)).Times(0);
  CliResult no = RunWith({"runs", "delete", "r1"}, std::move(refused));
  EXPECT_EQ(no.code, kExitUsage);
  ExpectOneErrorLine(no);
  EXPECT_THAT(no.err, HasSubstr("--yes"));

  auto stub = std::make_unique<MockStub>();
  v1::DeleteRunRequest sent;
  v1::DeleteRunResponse resp;
  resp.set_keys_deleted(1234);
  EXPECT_CALL(*stub, DeleteRun(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(resp), Return(grpc::Status::OK)));
  CliResult r = RunWith({"runs", "delete", "r1", "--yes", "--json"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.name(), "r1");
  json out = json::parse(r.out);
  EXPECT_EQ(out["run"], "r1");
  EXPECT_EQ(out["keys_deleted"], 1234);
}

TEST(RunCliTest, RequeueByIdsOrByRunAndState) {
  std::vector<v1::RequeueJobsRequest> sent;
  auto answer = [&](grpc::ClientContext*, const v1::RequeueJobsRequest& req,
                    v1::RequeueJobsResponse* resp) {
    sent.push_back(req);
    for (uint64_t id : req.job_ids()) resp->add_requeued(id);
    if (!req.run().empty()) resp->add_requeued(7);
    return grpc::Status::OK;
  };
  auto by_ids = std::make_unique<MockStub>();
  EXPECT_CALL(*by_ids, RequeueJobs(_, _, _)).WillOnce(answer);
  CliResult r1 = RunWith({"jobs", "requeue", "12", "15"}, std::move(by_ids));
  ASSERT_EQ(r1.code, kExitOk) << r1.err;
  EXPECT_EQ(r1.out, "requeued 2 jobs: 12, 15\n");

  auto by_run = std::make_unique<MockStub>();
  EXPECT_CALL(*by_run, RequeueJobs(_, _, _)).WillOnce(answer);
  CliResult r2 =
      RunWith({"jobs", "requeue", "--run", "r1", "--state", "failed", "--json"}, std::move(by_run));
  ASSERT_EQ(r2.code, kExitOk) << r2.err;
  EXPECT_EQ(json::parse(r2.out)["requeued"], json::array({7}));

  ASSERT_EQ(sent.size(), 2u);
  EXPECT_THAT(sent[0].job_ids(), ::testing::ElementsAre(12u, 15u));
  EXPECT_EQ(sent[0].run(), "");
  EXPECT_EQ(sent[1].job_ids_size(), 0);
  EXPECT_EQ(sent[1].run(), "r1");
  EXPECT_EQ(sent[1].state(), v1::JOB_FAILED);
}

TEST(RunCliTest, ClearTokenizerPin) {
  auto stub = std::make_unique<MockStub>();
  v1::ClearTokenizerPinRequest sent;
  EXPECT_CALL(*stub, ClearTokenizerPin(_, _, _))
      .WillOnce(DoAll(SaveArg<1>(&sent), SetArgPointee<2>(MakeRun("r1")), Return(grpc::Status::OK)));
  CliResult r = RunWith({"runs", "clear-tokenizer", "r1"}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(sent.name(), "r1");
  EXPECT_THAT(r.out, HasSubstr("pinned to no tokenizer"));
}

TEST(RunCliTest, AdminFailuresAreOneLine) {
  auto stub = std::make_unique<MockStub>();
  EXPECT_CALL(*stub, RequeueJobs(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                    "job 12 is done; only failed jobs can be requeued")));
  CliResult r = RunWith({"jobs", "requeue", "12"}, std::move(stub));
  EXPECT_EQ(r.code, kExitFailure);
  ExpectOneErrorLine(r);
  EXPECT_THAT(r.err, HasSubstr("only failed jobs can be requeued"));
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
