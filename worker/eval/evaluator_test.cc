// Evaluator on the tiny "gqa" fixture model (vocab 420) with the fixture tokenizer
// (see llama_model_test.cc and tokenizer_test.cc for how the fixtures were produced).
// Properties, not golden outputs: multiple choice = argmax of independently computed
// option log-likelihoods; cached greedy decoding = greedy decoding by full recomputation;
// reusing the shared prompt prefix changes nothing.
#include "worker/eval/evaluator.h"

#include <cmath>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "common/prompt.h"
#include "common/status_matchers.h"
#include "common/task.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/backend/offline.h"
#include "worker/test_fixtures.h"
#include "worker/model/test_models.h"

namespace steadyeval {
namespace {

using ::testing::HasSubstr;
using ::testing::Pair;
using namespace testing_fixtures;

constexpr char kChoiceTask[] = R"({"id": "a", "query": "The capital of Japan is ", "choices": ["Tokyo.", "Paris.", "Kyoto."], "gold": 0}
{"id": "b", "query": "日本の首都は", "choices": ["東京です。", "パリです。"], "gold": 0}
{"id": "c", "query": "1 + 2 =", "choices": [" 3", " 4", " 56", " 3"], "gold": 0}
)";

constexpr char kGenerationTask[] = R"({
  "instruction": "質問に対する答えを出力してください。",
  "output_length": 12,
  "metrics": ["exact_match"],
  "few_shots": [{"input": "日本の首都はどこですか？", "output": "東京"},
                {"input": "The capital of France?", "output": "Paris"}],
  "samples": [{"input": "富士山は何ですか？", "output": "山"},
              {"input": "The quick brown fox", "output": "dog"},
              {"input": "今日は天気が良い", "output": "公園"}]
})";

class EvaluatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(ConfigureThreads(1));
    auto reader = CheckpointReader::Open(LlamaFixture("gqa"));
    ASSERT_OK(reader);
    auto model = LoadLanguageModel(**reader);
    ASSERT_OK(model);
    model_ = *std::move(model);
    bound_ = LogprobBound(LlamaFixture("gqa"));
    // config.json has bos_token_id 1 and no tokenizer_config.json: BOS is prepended.
    auto tokenizer = Tokenizer::LoadForCheckpoint(LlamaFixture("gqa"), TokenizerFixture());
    ASSERT_OK(tokenizer);
    tokenizer_ = *std::move(tokenizer);
    ASSERT_TRUE(tokenizer_->add_bos());
  }

  // log P(continuation | context) by one uncached pass over ctx_tokens + cont_tokens.
  double ReferenceLoglik(const std::string& context, const std::string& continuation) {
    auto [ctx, cont] = MoveTrailingWhitespace(context, continuation);
    std::vector<int64_t> ctx_ids = tokenizer_->EncodeWithBos(ctx).value();
    std::vector<int64_t> whole = tokenizer_->EncodeWithBos(ctx + cont).value();
    EXPECT_GT(whole.size(), ctx_ids.size());
    std::vector<int64_t> seq = ctx_ids;
    seq.insert(seq.end(), whole.begin() + ctx_ids.size(), whole.end());
    std::vector<double> lps = TokenLogprobs(*model_, seq).value();
    double total = 0;
    for (size_t i = ctx_ids.size(); i < seq.size(); ++i) total += lps[i];
    return total;
  }

  // Greedy decoding recomputing the whole sequence at every step (no cache).
  std::string ReferenceGenerate(const std::string& prompt, int max_new) {
    std::vector<int64_t> ids = tokenizer_->EncodeWithBos(prompt).value();
    std::vector<int64_t> generated;
    for (int step = 0; step < max_new; ++step) {
      at::Tensor logits =
          model_->Forward(at::tensor(ids, at::kLong).view({1, -1}), nullptr).value();
      int64_t next = logits[0][-1].argmax().item<int64_t>();
      if (next == tokenizer_->eos_id()) break;
      generated.push_back(next);
      ids.push_back(next);
      if (absl::StrContains(tokenizer_->Decode(generated).value(), "\n\n")) break;
    }
    return tokenizer_->Decode(generated).value();
  }

  std::unique_ptr<LanguageModel> model_;
  Fp32Bound bound_;  // the gqa fixture: cached or batched scoring vs one uncached pass
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST(MoveTrailingWhitespaceTest, MovesPythonWhitespace) {
  EXPECT_THAT(MoveTrailingWhitespace("Q: ", "A"), Pair("Q:", " A"));
  EXPECT_THAT(MoveTrailingWhitespace("Q:\n \t", "A"), Pair("Q:", "\n \tA"));
  EXPECT_THAT(MoveTrailingWhitespace("質問\u3000", "答"), Pair("質問", "\u3000答"));
  EXPECT_THAT(MoveTrailingWhitespace("質問", " 答"), Pair("質問", " 答"));
  EXPECT_THAT(MoveTrailingWhitespace("   ", "x"), Pair("", "   x"));
  EXPECT_THAT(MoveTrailingWhitespace("", "x"), Pair("", "x"));
}

TEST_F(EvaluatorTest, MultipleChoiceIsArgmaxOfOptionLoglikelihoods) {
  auto task = ParseTask("tiny_mc.jsonl", kChoiceTask);
  ASSERT_OK(task);
  std::vector<std::pair<size_t, size_t>> progress;
  EvalOptions options;
  options.progress = [&](size_t done, size_t total) {
    progress.emplace_back(done, total);
    return true;
  };
  auto outputs = EvaluateTask(*model_, *tokenizer_, *task, options);
  ASSERT_OK(outputs);
  ASSERT_EQ(outputs->size(), 3u);
  // The packed engine reports after every batch: never decreasing, ending at 3 of 3.
  ASSERT_FALSE(progress.empty());
  EXPECT_THAT(progress.back(), Pair(3, 3));
  for (size_t i = 1; i < progress.size(); ++i) EXPECT_LE(progress[i - 1].first, progress[i].first);

  for (size_t i = 0; i < outputs->size(); ++i) {
    const ChoiceExample& ex = task->choice_examples[i];
    const EvalOutput& out = (*outputs)[i];
    EXPECT_EQ(out.index, i);
    ASSERT_EQ(out.option_logliks.size(), ex.choices.size());
    std::vector<double> reference;
    for (size_t k = 0; k < ex.choices.size(); ++k) {
      reference.push_back(ReferenceLoglik(ex.query, ex.choices[k]));
      // A sum of log-probs, all of one sign: its bound at |sum| covers every term's.
      EXPECT_TRUE(WithinBound(out.option_logliks[k], reference[k], bound_))
          << "example " << i << " option " << k;
      EXPECT_LT(out.option_logliks[k], 0);
    }
    size_t best = std::max_element(reference.begin(), reference.end()) - reference.begin();
    EXPECT_EQ(out.output, std::to_string(best)) << "example " << i;
  }
  // Example c repeats option 0 as option 3: equal scores, the lower index wins.
  EXPECT_EQ((*outputs)[2].option_logliks[0], (*outputs)[2].option_logliks[3]);
  EXPECT_NE((*outputs)[2].output, "3");
}

TEST_F(EvaluatorTest, ContinuationLoglikMatchesReference) {
  auto ll = ContinuationLoglik(*model_, *tokenizer_, "The capital of Japan is ", "Tokyo.");
  ASSERT_OK(ll);
  EXPECT_TRUE(WithinBound(*ll, ReferenceLoglik("The capital of Japan is ", "Tokyo."), bound_));
}

TEST_F(EvaluatorTest, GenerationEqualsUncachedGreedyAndIgnoresPrefixReuse) {
  auto task = ParseTask("tiny_gen.json", kGenerationTask);
  ASSERT_OK(task);
  for (int shots : {0, 2}) {
    EvalOptions with_reuse;
    with_reuse.prompt.few_shots = shots;
    EvalOptions without_reuse = with_reuse;
    without_reuse.reuse_prefix_cache = false;
    auto reused = EvaluateTask(*model_, *tokenizer_, *task, with_reuse);
    auto plain = EvaluateTask(*model_, *tokenizer_, *task, without_reuse);
    ASSERT_OK(reused);
    ASSERT_OK(plain);
    ASSERT_EQ(reused->size(), task->samples.size());
    size_t non_empty = 0;
    for (size_t i = 0; i < reused->size(); ++i) {
      EXPECT_EQ((*reused)[i].output, (*plain)[i].output) << "sample " << i;
      EXPECT_TRUE((*reused)[i].option_logliks.empty());
      const std::string prompt = BuildPrompt(*task, i, PromptOptions{shots});
      EXPECT_EQ((*reused)[i].output, ReferenceGenerate(prompt, task->output_length))
          << "sample " << i;
      non_empty += !(*reused)[i].output.empty();
    }
    EXPECT_GT(non_empty, 0u);  // the property is not vacuous
  }
}

TEST_F(EvaluatorTest, MaxNewTokensDelta) {
  auto task = ParseTask("tiny_gen.json", kGenerationTask);
  ASSERT_OK(task);
  EvalOptions options;
  options.max_new_tokens_delta = -task->output_length;  // no tokens at all
  auto outputs = EvaluateTask(*model_, *tokenizer_, *task, options);
  ASSERT_OK(outputs);
  for (const EvalOutput& out : *outputs) EXPECT_EQ(out.output, "");
}

TEST(EvaluatorErrorsTest, TokenizerLargerThanModelVocabulary) {
  auto reader = CheckpointReader::Open(LlamaFixture("tied"));  // vocab 200
  ASSERT_OK(reader);
  auto model = LoadLanguageModel(**reader);
  ASSERT_OK(model);
  auto tokenizer = Tokenizer::Load(TokenizerFixture(), BosRule{true, 1});
  ASSERT_OK(tokenizer);
  auto task = ParseTask("tiny_mc.jsonl", kChoiceTask);
  ASSERT_OK(task);
  EXPECT_THAT(EvaluateTask(**model, **tokenizer, *task, EvalOptions{}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("420")));
}

// Dynamic RoPE past max_position_embeddings makes positions depend on the total length: a
// context scored alone and then continued is not the reference. The scorer must then score
// context + continuation in one pass. The gqa weights with a dynamic rope_scaling config
// (limit 8 tokens) show both: the cached computation differs, the scorer does not.
TEST(DynamicRopeScoringTest, LongSequencesAreScoredInOnePass) {
  ASSERT_OK(ConfigureThreads(1));
  const std::string dir = CopyFixture(LlamaFixture("gqa"), "dynamic");
  nlohmann::json config = ReadJson(dir + "/config.json");
  config["max_position_embeddings"] = 8;
  config["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  WriteText(dir + "/config.json", config.dump());
  const Fp32Bound bound_ = LogprobBound(dir);  // as the fixture's: gqa's shape
  auto reader = CheckpointReader::Open(dir);
  ASSERT_OK(reader);
  auto model = LoadLanguageModel(**reader);
  ASSERT_OK(model);
  ASSERT_EQ((*model)->length_dependent_beyond(), 8);
  auto tokenizer = Tokenizer::LoadForCheckpoint(dir, TokenizerFixture());
  ASSERT_OK(tokenizer);

  const std::string context = "Tokyo";
  const std::string continuation = " is a very large city.";
  std::vector<int64_t> ctx = (*tokenizer)->EncodeWithBos(context).value();
  std::vector<int64_t> whole = (*tokenizer)->EncodeWithBos(context + continuation).value();
  ASSERT_LT(ctx.size(), 8u);
  ASSERT_GT(whole.size(), 12u);
  ASSERT_TRUE(std::equal(ctx.begin(), ctx.end(), whole.begin()));
  std::vector<double> one_pass = TokenLogprobs(**model, whole).value();
  double reference = 0;
  for (size_t i = ctx.size(); i < whole.size(); ++i) reference += one_pass[i];

  // The cached way: context alone (under 8 tokens, plain RoPE), then the continuation.
  KVCache cache;
  at::Tensor ctx_logits = (*model)->Forward(Ids(ctx), &cache).value();
  std::vector<int64_t> rest(whole.begin() + ctx.size(), whole.end());
  at::Tensor rest_logits = (*model)->Forward(Ids(rest), &cache).value();
  at::Tensor lp = at::log_softmax(
      at::cat({ctx_logits[0], rest_logits[0]}, 0).to(at::kDouble), -1);
  double chunked = 0;
  for (size_t i = ctx.size(); i < whole.size(); ++i) chunked += lp[i - 1][whole[i]].item<double>();
  // The shortcut would be wrong here.
  EXPECT_TRUE(BeyondBound(std::abs(chunked - reference), std::abs(reference), bound_));

  auto scored = ContinuationLoglik(**model, **tokenizer, context, continuation);
  ASSERT_OK(scored);
  EXPECT_TRUE(WithinBound(*scored, reference, bound_));

  // Generation: prompts longer than the limit run whole, so reusing the shared prefix
  // changes nothing here either.
  auto task = ParseTask("tiny_gen.json", kGenerationTask);
  ASSERT_OK(task);
  EvalOptions reuse;
  reuse.prompt.few_shots = 2;
  EvalOptions no_reuse = reuse;
  no_reuse.reuse_prefix_cache = false;
  auto with = EvaluateTask(**model, **tokenizer, *task, reuse);
  auto without = EvaluateTask(**model, **tokenizer, *task, no_reuse);
  ASSERT_OK(with);
  ASSERT_OK(without);
  for (size_t i = 0; i < task->size(); ++i) EXPECT_EQ((*with)[i].output, (*without)[i].output) << i;
}

}  // namespace
}  // namespace steadyeval
