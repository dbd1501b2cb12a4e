// The offline `logprobs` and `eval` commands end to end on the committed fixtures
// (see llama_model_test.cc / tokenizer_test.cc for how they were produced).
#include "worker/backend/offline.h"

#include <filesystem>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/test_fixtures.h"
#include "worker/model/test_models.h"

namespace steadyeval {
namespace {

using ::testing::HasSubstr;
using namespace testing_fixtures;

struct CommandResult {
  int exit_code;
  std::string out;
  std::string err;
};

CommandResult RunCommand(int (*command)(const std::vector<std::string>&),
                  const std::vector<std::string>& args) {
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  int code = command(args);
  std::string out = ::testing::internal::GetCapturedStdout();
  std::string err = ::testing::internal::GetCapturedStderr();
  return {code, out, err};
}

TEST(ConfigureThreadsTest, Validates) {
  EXPECT_OK(ConfigureThreads(1));
  EXPECT_EQ(at::get_num_threads(), 1);
  EXPECT_THAT(ConfigureThreads(0), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0")));
}

// The token log-probs 1.. of a `logprobs --json` output within `bound` of expected.json's
// (token 0 has none: null in both).
::testing::AssertionResult LogprobsWithin(const nlohmann::json& out, const nlohmann::json& expected,
                                          const Fp32Bound& bound) {
  std::vector<double> got, want;
  for (size_t i = 1; i < out["token_logprobs"].size(); ++i) {
    got.push_back(out["token_logprobs"][i].get<double>());
    want.push_back(expected["token_logprobs"][i].get<double>());
  }
  return WithinBound(at::tensor(got, at::kDouble), at::tensor(want, at::kDouble), bound);
}

TEST(LogprobsCommandTest, TokensJsonMatchesReference) {
  nlohmann::json expected = ReadJson(LlamaFixture("gqa") + "/expected.json");
  std::string tokens;
  for (const auto& t : expected["tokens"]) {
    tokens += (tokens.empty() ? "" : ",") + std::to_string(t.get<int64_t>());
  }
  CommandResult r = RunCommand(RunLogprobsCommand, {"--checkpoint", LlamaFixture("gqa"), "--tokens",
                                             tokens, "--json", "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json out = nlohmann::json::parse(r.out);
  EXPECT_EQ(out["tokens"], expected["tokens"]);
  ASSERT_EQ(out["token_logprobs"].size(), expected["tokens"].size());
  EXPECT_TRUE(out["token_logprobs"][0].is_null());
  EXPECT_TRUE(LogprobsWithin(out, expected, LogprobBound(LlamaFixture("gqa"), 1)));
}

// Every committed reference fixture, through the command a user runs: the Llama family
// (tests/reference/llama_reference.py), GPT-NeoX (gpt_neox_reference.py), GPT-2
// (gpt2_reference.py) and the same gqa model in every file format
// (make_format_fixtures.py; bf16 is compared with its own rounding, see
// checkpoint_formats_test.cc). Each expected.json was computed by an independent NumPy
// float64 implementation.
TEST(LogprobsCommandTest, EveryFamilyAndFormatMatchesItsReference) {
  const std::string root = SourceDir() + "/tests/fixtures/";
  int checked = 0;
  for (const char* family : {"llama", "gpt_neox", "gpt2", "formats"}) {
    for (const auto& entry : std::filesystem::directory_iterator(root + family)) {
      const std::string dir = entry.path().string();
      const bool own_expected = std::filesystem::exists(dir + "/expected.json");
      if (!std::filesystem::exists(dir + "/config.json")) continue;
      const bool bf16 = entry.path().filename() == "bf16" && std::string(family) == "formats";
      nlohmann::json expected =
          ReadJson(own_expected ? dir + "/expected.json" : LlamaFixture("gqa") + "/expected.json");
      std::string tokens;
      for (const auto& t : expected["tokens"]) {
        tokens += (tokens.empty() ? "" : ",") + std::to_string(t.get<int64_t>());
      }
      CommandResult r = RunCommand(RunLogprobsCommand, {"--checkpoint", dir, "--tokens", tokens,
                                                        "--json", "--threads", "1"});
      ASSERT_EQ(r.exit_code, 0) << dir << ": " << r.err;
      nlohmann::json out = nlohmann::json::parse(r.out);
      ASSERT_EQ(out["token_logprobs"].size(), expected["tokens"].size()) << dir;
      Fp32Bound bound = LogprobBound(dir, /*evaluations=*/1);
      // The float64 reference of the gqa weights vs their bf16 rounding: see
      // checkpoint_formats_test.cc for the bound and the measured 0.03.
      if (bf16) bound.weight_rounding = kBf16WeightRounding;
      EXPECT_TRUE(LogprobsWithin(out, expected, bound)) << dir;
      ++checked;
    }
  }
  EXPECT_GE(checked, 25);
}

TEST(LogprobsCommandTest, DeviceFlagIsValidated) {
  CommandResult bad = RunCommand(RunLogprobsCommand, {"--checkpoint", LlamaFixture("gqa"),
                                                      "--tokens", "1,2", "--device", "tpu"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("'tpu' is not one of cpu, cuda, cuda:K"));
  if (at::detail::getCUDAHooks().getNumGPUs() == 0) {
    CommandResult cuda = RunCommand(RunLogprobsCommand, {"--checkpoint", LlamaFixture("gqa"),
                                                         "--tokens", "1,2", "--device", "cuda:0"});
    EXPECT_EQ(cuda.exit_code, 1);
    EXPECT_THAT(cuda.err, HasSubstr("no CUDA device"));
  }
  CommandResult cpu = RunCommand(RunLogprobsCommand, {"--checkpoint", LlamaFixture("gqa"),
                                                      "--tokens", "1,2", "--device", "cpu"});
  EXPECT_EQ(cpu.exit_code, 0) << cpu.err;
}

TEST(LogprobsCommandTest, TextAddsBosAndTableIsReadable) {
  CommandResult json = RunCommand(RunLogprobsCommand,
                           {"--checkpoint", LlamaFixture("gqa"), "--text", "Tokyo", "--json",
                            "--tokenizer", TokenizerFixture(), "--threads=1"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  nlohmann::json out = nlohmann::json::parse(json.out);
  EXPECT_EQ(out["tokens"][0], 1);  // BOS from config.json's bos_token_id
  EXPECT_GT(out["tokens"].size(), 1u);

  CommandResult table = RunCommand(RunLogprobsCommand, {"--checkpoint", LlamaFixture("gqa"), "--text",
                                                 "Tokyo", "--tokenizer", TokenizerFixture()});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("sum of log-probs"));
  EXPECT_THAT(table.out, HasSubstr("\"<s>\""));
}

TEST(LogprobsCommandTest, UsageAndRuntimeErrors) {
  EXPECT_EQ(RunCommand(RunLogprobsCommand, {"--help"}).exit_code, 0);
  EXPECT_EQ(RunCommand(RunLogprobsCommand, {"--tokens", "1,2"}).exit_code, 2);
  EXPECT_EQ(RunCommand(RunLogprobsCommand, {"--checkpoint", LlamaFixture("gqa")}).exit_code, 2);
  EXPECT_EQ(RunCommand(RunLogprobsCommand,
                {"--checkpoint", LlamaFixture("gqa"), "--tokens", "1", "--text", "x"})
                .exit_code,
            2);
  EXPECT_EQ(RunCommand(RunLogprobsCommand, {"--checkpoint", LlamaFixture("gqa"), "--tokens", "1,x"})
                .exit_code,
            2);
  EXPECT_EQ(RunCommand(RunLogprobsCommand, {"--bogus"}).exit_code, 2);
  CommandResult missing =
      RunCommand(RunLogprobsCommand, {"--checkpoint", "/nonexistent/ckpt", "--tokens", "1,2"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("config.json"));
  EXPECT_EQ(missing.out, "");
  CommandResult out_of_vocab =
      RunCommand(RunLogprobsCommand, {"--checkpoint", LlamaFixture("tied"), "--tokens", "1,500"});
  EXPECT_EQ(out_of_vocab.exit_code, 1);
  EXPECT_THAT(out_of_vocab.err, HasSubstr("token id 500"));
}

TEST(EvalCommandTest, MultipleChoiceAndGenerationJson) {
  std::string dir = ScratchDir("tasks");
  WriteText(dir + "/mc.jsonl",
            R"({"id": "a", "query": "The capital of Japan is ", "choices": ["Tokyo.", "Paris."], "gold": 0}
{"id": "b", "query": "1 + 2 =", "choices": [" 3", " 4"], "gold": 0}
)");
  WriteText(dir + "/gen.json", R"({"instruction": "答えてください。", "output_length": 5,
      "metrics": ["exact_match"], "few_shots": [{"input": "日本", "output": "東京"}],
      "samples": [{"input": "富士山", "output": "山"}, {"input": "fox", "output": "dog"}]})");

  CommandResult mc = RunCommand(RunEvalCommand, {"--checkpoint", LlamaFixture("gqa"), "--task",
                                          dir + "/mc.jsonl", "--tokenizer", TokenizerFixture(),
                                          "--json", "--threads", "1"});
  ASSERT_EQ(mc.exit_code, 0) << mc.err;
  nlohmann::json out = nlohmann::json::parse(mc.out);
  EXPECT_EQ(out["task"], "mc");
  EXPECT_EQ(out["metric"], "acc");
  ASSERT_EQ(out["examples"].size(), 2u);
  double sum = 0;
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(out["examples"][i]["index"], i);
    const std::string chosen = out["examples"][i]["output"];
    EXPECT_TRUE(chosen == "0" || chosen == "1") << chosen;
    EXPECT_EQ(out["examples"][i]["score"].get<double>(), chosen == "0" ? 1.0 : 0.0);
    sum += out["examples"][i]["score"].get<double>();
  }
  EXPECT_DOUBLE_EQ(out["score"].get<double>(), sum / 2);
  EXPECT_THAT(mc.err, HasSubstr("2/2"));

  CommandResult gen = RunCommand(RunEvalCommand, {"--checkpoint", LlamaFixture("gqa"), "--task",
                                           dir + "/gen.json", "--tokenizer", TokenizerFixture(),
                                           "--few_shots", "1", "--json"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  out = nlohmann::json::parse(gen.out);
  EXPECT_EQ(out["task"], "gen");
  EXPECT_EQ(out["metric"], "exact_match");
  EXPECT_EQ(out["examples"].size(), 2u);

  CommandResult table = RunCommand(RunEvalCommand, {"--checkpoint", LlamaFixture("gqa"), "--task",
                                             dir + "/mc.jsonl", "--tokenizer", TokenizerFixture()});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("mc: acc = "));
}

TEST(EvalCommandTest, TaskAndPromptOptions) {
  std::string dir = ScratchDir("tasks_options");
  WriteText(dir + "/mc.jsonl",
            R"({"id": "a", "query": "The capital of Japan is ", "choices": ["Tokyo.", "Paris."], "gold": 0}
{"id": "b", "query": "1 + 2 =", "choices": [" 3", " 4"], "gold": 0}
{"id": "c", "query": "Snow is ", "choices": ["white.", "green."], "gold": 0}
)");
  WriteText(dir + "/gen.json", R"({"instruction": "Answer.", "output_length": 4,
      "metrics": ["char_f1", "exact_match"],
      "samples": [{"input": "富士山", "output": "山"}, {"input": "fox", "output": "dog"},
                  {"input": "cat", "output": "neko"}]})");
  WriteText(dir + "/train.json", R"({"samples": [{"input": "日本", "output": "東京"}]})");

  CommandResult mc = RunCommand(RunEvalCommand,
                                {"--checkpoint", LlamaFixture("gqa"), "--task", dir + "/mc.jsonl",
                                 "--tokenizer", TokenizerFixture(), "--json", "--metric",
                                 "acc_norm", "--max_samples", "2", "--bos", "none"});
  ASSERT_EQ(mc.exit_code, 0) << mc.err;
  nlohmann::json out = nlohmann::json::parse(mc.out);
  EXPECT_EQ(out["metric"], "acc_norm");
  EXPECT_EQ(out["examples"].size(), 2u);
  EXPECT_EQ(out["bos"], "no bos");
  ASSERT_TRUE(out["metrics"].contains("acc"));
  ASSERT_TRUE(out["metrics"].contains("acc_norm"));
  EXPECT_EQ(out["examples"][0]["option_logliks"].size(), 2u);

  CommandResult gen = RunCommand(
      RunEvalCommand, {"--checkpoint", LlamaFixture("gqa"), "--task", dir + "/gen.json",
                       "--tokenizer", TokenizerFixture(), "--few_shots_from", dir + "/train.json",
                       "--prompt_language", "en", "--batch_size", "2", "--json"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  out = nlohmann::json::parse(gen.out);
  EXPECT_EQ(out["metric"], "char_f1");
  EXPECT_EQ(out["prompt_language"], "en");
  EXPECT_EQ(out["examples"].size(), 3u);
  ASSERT_TRUE(out["metrics"].contains("exact_match"));
  EXPECT_TRUE(out["examples"][0]["metrics"].contains("char_f1"));

  EXPECT_EQ(RunCommand(RunEvalCommand, {"--checkpoint", LlamaFixture("gqa"), "--task",
                                        dir + "/gen.json", "--prompt_language", "de"})
                .exit_code,
            2);
  EXPECT_EQ(RunCommand(RunEvalCommand, {"--checkpoint", LlamaFixture("gqa"), "--task",
                                        dir + "/gen.json", "--batch_size", "0"})
                .exit_code,
            2);
  CommandResult bad_metric = RunCommand(
      RunEvalCommand, {"--checkpoint", LlamaFixture("gqa"), "--task", dir + "/mc.jsonl",
                       "--tokenizer", TokenizerFixture(), "--metric", "bleu_en"});
  EXPECT_EQ(bad_metric.exit_code, 1);
  EXPECT_THAT(bad_metric.err, HasSubstr("acc or acc_norm"));
}

TEST(EvalCommandTest, Errors) {
  EXPECT_EQ(RunCommand(RunEvalCommand, {"--help"}).exit_code, 0);
  EXPECT_EQ(RunCommand(RunEvalCommand, {"--checkpoint", LlamaFixture("gqa")}).exit_code, 2);
  EXPECT_EQ(RunCommand(RunEvalCommand, {"--checkpoint", LlamaFixture("gqa"), "--task", "x.jsonl",
                                 "--few_shots", "-1"})
                .exit_code,
            2);
  CommandResult missing_task =
      RunCommand(RunEvalCommand, {"--checkpoint", LlamaFixture("gqa"), "--task", "/nonexistent.jsonl"});
  EXPECT_EQ(missing_task.exit_code, 1);
  EXPECT_THAT(missing_task.err, HasSubstr("/nonexistent.jsonl"));
  // The gqa fixture ships no tokenizer.model: the error says how to give one.
  std::string dir = ScratchDir("tasks");
  WriteText(dir + "/mc.jsonl",
            R"({"id": "a", "query": "q", "choices": ["x", "y"], "gold": 0})" "\n");
  CommandResult no_tokenizer =
      RunCommand(RunEvalCommand, {"--checkpoint", LlamaFixture("gqa"), "--task", dir + "/mc.jsonl"});
  EXPECT_EQ(no_tokenizer.exit_code, 1);
  EXPECT_THAT(no_tokenizer.err, HasSubstr("--tokenizer"));
}

}  // namespace
}  // namespace steadyeval
