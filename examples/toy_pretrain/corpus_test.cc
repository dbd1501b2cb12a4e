#include "examples/toy_pretrain/corpus.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "common/prompt.h"
#include "testing/status_matchers.h"
#include "common/task.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval::toy {
namespace {

using ::steadyeval::testing::StatusIs;

namespace fs = std::filesystem;

ToyCorpus Generate(uint64_t seed) {
  CorpusOptions options;
  options.seed = seed;
  auto corpus = GenerateCorpus(options);
  EXPECT_OK(corpus);
  return corpus.ok() ? *std::move(corpus) : ToyCorpus();
}

std::map<std::string, std::string> Files(const std::vector<TaskFile>& files) {
  std::map<std::string, std::string> out;
  for (const TaskFile& f : files) out[f.filename] = f.content;
  return out;
}

TEST(ToyCorpusTest, SameSeedSameBytesOtherSeedOtherBytes) {
  const ToyCorpus a = Generate(7), b = Generate(7), c = Generate(8);
  EXPECT_EQ(Files(a.eval_tasks), Files(b.eval_tasks));
  EXPECT_EQ(Files(a.train_tasks), Files(b.train_tasks));
  EXPECT_EQ(a.documents, b.documents);
  EXPECT_EQ(a.tokenizer_text, b.tokenizer_text);
  const auto ea = Files(a.eval_tasks), ec = Files(c.eval_tasks);
  for (const auto& [name, content] : ea) {
    ASSERT_TRUE(ec.count(name)) << name;
    EXPECT_NE(content, ec.at(name)) << name;
  }
  EXPECT_NE(a.documents, c.documents);
}

TEST(ToyCorpusTest, FourTasksEveryFileParses) {
  const ToyCorpus corpus = Generate(1);
  const auto eval = Files(corpus.eval_tasks), train = Files(corpus.train_tasks);
  EXPECT_THAT(eval, ::testing::SizeIs(4));
  EXPECT_THAT(train, ::testing::SizeIs(3));  // generation tasks only
  for (const auto& [name, content] : eval) {
    SCOPED_TRACE(name);
    auto task = ParseTask(name, content);
    ASSERT_OK(task);
    EXPECT_EQ(task->size(), 60u);
    if (task->kind == TaskKind::kMultipleChoice) continue;
    ASSERT_TRUE(train.count(name));
    ASSERT_OK(ParseTask("train/" + name, train.at(name)));
    TaskOptions options;
    options.train_filename = "train/" + name;
    options.train_content = train.at(name);
    auto with_train_shots = ParseTask(name, content, options);
    ASSERT_OK(with_train_shots);
    // The eval file's own few_shots are the train split's first shots: prompts are the same
    // with or without --few_shots_from.
    EXPECT_EQ(PromptPrefix(*task, ToyPromptOptions()),
              PromptPrefix(*with_train_shots, ToyPromptOptions()));
  }
  auto mc = ParseTask("toy_facts_mc.jsonl", eval.at("toy_facts_mc.jsonl"));
  ASSERT_OK(mc);
  EXPECT_EQ(mc->kind, TaskKind::kMultipleChoice);
  for (const ChoiceExample& e : mc->choice_examples) {
    EXPECT_EQ(e.choices.size(), 4u);
    EXPECT_EQ(std::set<std::string>(e.choices.begin(), e.choices.end()).size(), 4u) << e.query;
  }
}

TEST(ToyCorpusTest, TrainAndEvalSplitsShareNoSampleAndDocumentsNeverAskEval) {
  const ToyCorpus corpus = Generate(3);
  const auto eval = Files(corpus.eval_tasks), train = Files(corpus.train_tasks);
  for (const auto& [name, content] : train) {
    SCOPED_TRACE(name);
    auto train_task = ParseTask(name, content);
    auto eval_task = ParseTask(name, eval.at(name));
    ASSERT_OK(train_task);
    ASSERT_OK(eval_task);
    std::set<std::string> train_inputs;
    for (const GenerationSample& s : train_task->samples) train_inputs.insert(s.input);
    for (const GenerationSample& s : eval_task->samples) {
      EXPECT_FALSE(train_inputs.count(s.input)) << s.input;
      // No training document poses an eval question.
      const std::string posed = "### Input:\n" + s.input + "\n\n### Response:";
      for (const std::string& doc : corpus.documents) {
        ASSERT_FALSE(absl::StrContains(doc, posed)) << s.input;
      }
    }
  }
  auto mc = ParseTask("toy_facts_mc.jsonl", eval.at("toy_facts_mc.jsonl"));
  ASSERT_OK(mc);
  std::set<std::string> documents(corpus.documents.begin(), corpus.documents.end());
  for (const ChoiceExample& e : mc->choice_examples) {
    if (!absl::StrContains(e.query, "Which of these")) {
      // A fact question of the eval split is never a training document, with any choice.
      for (const std::string& choice : e.choices) {
        EXPECT_FALSE(documents.count(e.query + choice)) << e.query;
      }
    }
  }
}

TEST(ToyCorpusTest, GenerationDocumentsAreTheEvaluatorsPromptPlusAnswer) {
  const ToyCorpus corpus = Generate(5);
  const std::set<std::string> documents(corpus.documents.begin(), corpus.documents.end());
  for (const TaskFile& f : corpus.train_tasks) {
    SCOPED_TRACE(f.filename);
    TaskOptions options;
    options.train_filename = "train/" + f.filename;
    options.train_content = f.content;
    auto task = ParseTask(f.filename, f.content, options);
    ASSERT_OK(task);
    for (size_t i = 0; i < task->samples.size(); ++i) {
      PromptOptions prompt;
      prompt.few_shots = kToyFewShots;
      prompt.language = PromptLanguage::kEnglish;
      EXPECT_TRUE(documents.count(BuildPrompt(*task, i, prompt) + task->samples[i].output))
          << task->samples[i].input;
    }
  }
  // Multiple-choice documents are query + gold choice, the string the evaluator scores.
  size_t choice_documents = 0;
  for (const std::string& doc : corpus.documents) {
    if (absl::StartsWith(doc, "Question: ")) ++choice_documents;
  }
  EXPECT_GT(choice_documents, 100u);
}

TEST(ToyCorpusTest, WritesEvalAndTrainFiles) {
  const ToyCorpus corpus = Generate(1);
  const fs::path dir = fs::path(::testing::TempDir()) / "toy_corpus_test_tasks";
  fs::remove_all(dir);
  ASSERT_OK(WriteTaskFiles(corpus, dir.string()));
  for (const TaskFile& f : corpus.eval_tasks) {
    std::ifstream in(dir / f.filename, std::ios::binary);
    std::stringstream buf;
    buf << in.rdbuf();
    EXPECT_EQ(buf.str(), f.content) << f.filename;
  }
  for (const TaskFile& f : corpus.train_tasks) {
    EXPECT_TRUE(fs::exists(dir / "train" / f.filename)) << f.filename;
  }
}

TEST(ToyCorpusTest, RejectsImpossibleOptions) {
  CorpusOptions options;
  options.people = 10;
  options.eval_samples = 60;
  EXPECT_THAT(GenerateCorpus(options).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("people")));
}

}  // namespace
}  // namespace steadyeval::toy
