#include "examples/toy_pretrain/trainer.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"
#include "common/task.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/eval/evaluator.h"
#include "worker/model/language_model.h"
#include "worker/tokenizer/tokenizer.h"

namespace steadyeval::toy {
namespace {

using ::steadyeval::testing::StatusIs;

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::steadyeval::testing::ScratchDir;

// A run of seconds: tiny shapes, a small world, 20 steps, a checkpoint every 10.
TrainerOptions TinyRun(const std::string& root) {
  TrainerOptions o;
  o.out_dir = root + "/ckpt";
  o.tasks_out = root + "/tasks";
  o.steps = 20;
  o.save_every = 10;
  o.log_every = 5;
  o.warmup_steps = 2;
  o.lr = 1e-2;
  o.batch = 4;
  o.seq_len = 0;  // auto: the longest document
  o.hidden = 32;
  o.layers = 1;
  o.heads = 2;
  o.kv_heads = 1;
  o.intermediate = 64;
  o.vocab = 400;
  o.corpus.people = 40;
  o.corpus.eval_samples = 8;
  o.corpus.train_samples = 20;
  return o;
}

TEST(ToyTrainerTest, TinyRunWritesLoadableCheckpointsAtomically) {
  const std::string root = ScratchDir("run");
  TrainerOptions options = TinyRun(root);
  std::ostringstream progress;
  options.progress = &progress;
  auto result = RunToyPretraining(options);
  ASSERT_OK(result);

  // Exactly the two checkpoints and the hidden tokenizer folder; no temporary folders.
  std::set<std::string> entries;
  for (const auto& e : fs::directory_iterator(options.out_dir)) {
    entries.insert(e.path().filename().string());
  }
  EXPECT_EQ(entries, (std::set<std::string>{".toy_tokenizer", "step_000010", "step_000020"}));
  EXPECT_EQ(result->checkpoints.size(), 2u);

  std::vector<torch::Tensor> embeddings;
  for (const std::string step : {"step_000010", "step_000020"}) {
    SCOPED_TRACE(step);
    const std::string dir = options.out_dir + "/" + step;
    for (const char* file : {"config.json", "model.safetensors", "tokenizer.model"}) {
      EXPECT_TRUE(fs::exists(dir + "/" + file)) << file;
    }
    auto reader = CheckpointReader::Open(dir);
    ASSERT_OK(reader);
    auto model = LoadLanguageModel(**reader);
    ASSERT_OK(model);
    auto tokenizer = Tokenizer::LoadForCheckpoint(dir);
    ASSERT_OK(tokenizer);
    EXPECT_EQ((*model)->vocab_size(), (*tokenizer)->vocab_size());
    EXPECT_TRUE((*tokenizer)->add_bos());
    auto embedding = (*reader)->Tensor("model.embed_tokens.weight");
    ASSERT_OK(embedding);
    embeddings.push_back(embedding->clone());

    // The evaluator runs the checkpoint on a generated task file.
    std::ifstream in(options.tasks_out + "/toy_facts_mc.jsonl");
    std::stringstream content;
    content << in.rdbuf();
    auto task = ParseTask("toy_facts_mc.jsonl", content.str());
    ASSERT_OK(task);
    EvalOptions eval;
    auto outputs = EvaluateTask(**model, **tokenizer, *task, eval);
    ASSERT_OK(outputs);
    EXPECT_EQ(outputs->size(), task->size());
  }
  EXPECT_FALSE(torch::equal(embeddings[0], embeddings[1]));

  // The loss falls; progress names every checkpoint and the total.
  ASSERT_GE(result->losses.size(), 4u);
  EXPECT_LT(result->losses.back().second, result->losses.front().second);
  EXPECT_THAT(progress.str(), HasSubstr("checkpoint step_000010 written"));
  EXPECT_THAT(progress.str(), HasSubstr("checkpoint step_000020 written"));
  EXPECT_THAT(progress.str(), HasSubstr("done: 20 steps, 2 checkpoints in"));
  EXPECT_TRUE(fs::exists(options.tasks_out + "/train/toy_arith.json"));
}

TEST(ToyTrainerTest, ExistingCheckpointIsNotOverwritten) {
  const std::string root = ScratchDir("exists");
  TrainerOptions options = TinyRun(root);
  options.steps = 10;
  fs::create_directories(options.out_dir + "/step_000010");
  EXPECT_THAT(RunToyPretraining(options).status(),
              StatusIs(absl::StatusCode::kAlreadyExists, ::testing::_));
}

TEST(ToyTrainerTest, BadOptionsNameTheFlag) {
  TrainerOptions options = TinyRun(ScratchDir("bad"));
  options.heads = 3;
  EXPECT_THAT(ValidateOptions(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--heads")));
  options = TinyRun(ScratchDir("bad"));
  options.lr = 0;
  EXPECT_THAT(ValidateOptions(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--lr")));
  options.out_dir.clear();
  EXPECT_THAT(ValidateOptions(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--out")));
}

}  // namespace
}  // namespace steadyeval::toy
