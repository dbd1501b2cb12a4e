// Batched, left-padded forward passes and batched greedy generation.
//
// Properties, not golden outputs:
//   - model level: a left-padded batch (with or without a shared prefix cache, before and
//     after dropping rows) and a stack of per-row caches give every real token the
//     logits of its row run alone (within the float32 bound of the fixture's shape,
//     worker/test_tolerance.h); padding-only rows stay finite; in-place cache
//     appends never show in forks or expansions;
//   - evaluator level: generation outputs are byte-identical for batch sizes 1, 3 and 8,
//     with the prefix cache on or off, and equal greedy decoding by full recomputation,
//     both when every example runs to max_new and when examples stop at different steps.
#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/prompt.h"
#include "common/status.h"
#include "common/status_matchers.h"
#include "common/task.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/eval/evaluator.h"
#include "worker/model/language_model.h"
#include "worker/backend/offline.h"
#include "worker/test_fixtures.h"
#include "worker/model/test_models.h"
#include "worker/tokenizer/tokenizer.h"

namespace steadyeval {
namespace {

using ::testing::_;
using ::testing::HasSubstr;
using namespace testing_fixtures;

std::vector<int64_t> Concat(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Logits of `tokens` appended to `prefix`, each run alone (batch 1, no padding).
at::Tensor AloneLogits(const LanguageModel& model, const std::vector<int64_t>& prefix,
                          const std::vector<int64_t>& tokens) {
  at::Tensor logits = model.Forward(Ids(Concat(prefix, tokens)), nullptr).value();
  return logits[0].narrow(0, prefix.size(), tokens.size());
}

class LlamaPaddedBatchTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ASSERT_OK(ConfigureThreads(1));
    model_ = LoadFixtureModel(GetParam());
    ASSERT_NE(model_, nullptr);
    bound = LogitBound(LlamaFixture(GetParam()));
  }
  std::unique_ptr<LanguageModel> model_;
  // Batched, padded or cached logits against the row run alone: two float32 evaluations.
  Fp32Bound bound;
};

// Rows of different lengths, left-padded into one forward, with and without a shared
// prefix cache; then two decode steps through the padded cache, dropping a row between.
TEST_P(LlamaPaddedBatchTest, LeftPaddedBatchEqualsRowsAlone) {
  const std::vector<std::vector<int64_t>> rows = {
      {1, 17, 90, 25, 3, 8, 41}, {1, 60}, {1, 5, 9, 13, 70}, {77}};
  const std::vector<int64_t> step1 = {11, 12, 13, 14}, step2 = {21, 22};
  const std::vector<int64_t> kept = {3, 2};  // cache rows that go on after step 1
  for (const std::vector<int64_t>& prefix :
       {std::vector<int64_t>{}, std::vector<int64_t>{1, 30, 31, 32, 5}}) {
    SCOPED_TRACE(prefix.empty() ? "no prefix" : "with prefix");
    KVCache cache;
    if (!prefix.empty()) {
      KVCache shared;
      ASSERT_OK(model_->Forward(Ids(prefix), &shared));
      auto expanded = shared.ExpandBatch(rows.size());
      ASSERT_OK(expanded);
      EXPECT_EQ(expanded->batch_size(), static_cast<int64_t>(rows.size()));
      EXPECT_EQ(shared.batch_size(), 1);
      cache = *std::move(expanded);
    }
    PaddedBatch batch = LeftPad(rows, /*pad_id=*/100000);  // out of vocabulary: ignored
    auto logits = model_->Forward(batch.ids, batch.mask, &cache);
    ASSERT_OK(logits);
    EXPECT_EQ(cache.length(), static_cast<int64_t>(prefix.size()) + batch.ids.size(1));
    for (size_t b = 0; b < rows.size(); ++b) {
      const int64_t n = rows[b].size(), T = batch.ids.size(1);
      at::Tensor alone = AloneLogits(*model_, prefix, rows[b]);
      EXPECT_TRUE(WithinBound((*logits)[b][-1], alone[-1], bound)) << "row " << b;
      EXPECT_TRUE(WithinBound((*logits)[b].narrow(0, T - n, n), alone, bound))
          << "row " << b;
    }
    EXPECT_FALSE(logits->isnan().any().item<bool>());

    // One decode step for every row (no padding among the new tokens).
    auto next = model_->Forward(at::tensor(step1, at::kLong).view({-1, 1}), &cache);
    ASSERT_OK(next);
    for (size_t b = 0; b < rows.size(); ++b) {
      at::Tensor alone = AloneLogits(*model_, prefix, Concat(rows[b], {step1[b]}));
      EXPECT_TRUE(WithinBound((*next)[b][0], alone[-1], bound)) << "row " << b;
    }

    // Drop rows 0 and 1 and decode once more. Only row 0 (the longest) had real tokens in
    // the first two slots after the prefix: the kept rows' cache loses them.
    const int64_t length_before = cache.length();
    auto selected = cache.SelectRows(kept);
    ASSERT_OK(selected);
    EXPECT_EQ(selected->batch_size(), 2);
    EXPECT_EQ(selected->length(), length_before - 2);
    cache = *std::move(selected);
    auto last = model_->Forward(at::tensor(step2, at::kLong).view({-1, 1}), &cache);
    ASSERT_OK(last);
    for (size_t k = 0; k < kept.size(); ++k) {
      const int64_t b = kept[k];
      at::Tensor alone =
          AloneLogits(*model_, prefix, Concat(Concat(rows[b], {step1[b]}), {step2[k]}));
      EXPECT_TRUE(WithinBound((*last)[k][0], alone[-1], bound)) << "row " << b;
    }
  }
}

// A row that is all padding in the first forward (e.g. nothing to add after the prefix)
// stays finite, does not disturb the other rows, and later real tokens in it see only
// the prefix.
TEST_P(LlamaPaddedBatchTest, PaddingOnlyRowHasNoNaN) {
  const std::vector<std::vector<int64_t>> rows = {{1, 17, 90, 25}, {}, {1, 5}};
  for (const std::vector<int64_t>& prefix :
       {std::vector<int64_t>{}, std::vector<int64_t>{1, 30, 31}}) {
    SCOPED_TRACE(prefix.empty() ? "no prefix" : "with prefix");
    KVCache cache;
    if (!prefix.empty()) {
      KVCache shared;
      ASSERT_OK(model_->Forward(Ids(prefix), &shared));
      cache = shared.ExpandBatch(rows.size()).value();
    }
    PaddedBatch batch = LeftPad(rows, /*pad_id=*/0);
    auto logits = model_->Forward(batch.ids, batch.mask, &cache);
    ASSERT_OK(logits);
    EXPECT_TRUE(logits->isfinite().all().item<bool>());
    for (const auto* layers : {&cache.keys(), &cache.values()}) {
      for (const at::Tensor& t : *layers) {  // valid slots only; the rest is scratch
        EXPECT_TRUE(t.narrow(2, 0, cache.length()).isfinite().all().item<bool>());
      }
    }
    for (size_t b : {0u, 2u}) {
      EXPECT_TRUE(WithinBound((*logits)[b][-1], AloneLogits(*model_, prefix, rows[b])[-1], bound))
          << "row " << b;
    }
    const std::vector<int64_t> step = {7, 8, 9};
    auto next = model_->Forward(at::tensor(step, at::kLong).view({-1, 1}), &cache);
    ASSERT_OK(next);
    EXPECT_TRUE(next->isfinite().all().item<bool>());
    for (size_t b = 0; b < rows.size(); ++b) {
      at::Tensor alone = AloneLogits(*model_, prefix, Concat(rows[b], {step[b]}));
      EXPECT_TRUE(WithinBound((*next)[b][0], alone[-1], bound)) << "row " << b;
    }
  }
}

// Prompt caches of different lengths and origins (a fork of a shared prefix, a whole
// sequence, one that already holds padding) stacked into one batch decode like each row
// alone, also after a row leaves.
TEST_P(LlamaPaddedBatchTest, StackedCachesDecodeLikeRowsAlone) {
  const std::vector<int64_t> prefix = {1, 30, 31, 32, 5};
  const std::vector<int64_t> a = {44, 45, 46}, c = {9};
  const std::vector<int64_t> b = {1, 60, 61, 62, 63, 64, 65, 66, 67};
  KVCache shared;
  ASSERT_OK(model_->Forward(Ids(prefix), &shared));
  std::vector<KVCache> rows(3);
  rows[0] = shared.Fork();
  ASSERT_OK(model_->Forward(Ids(a), &rows[0]));  // prefix + a
  ASSERT_OK(model_->Forward(Ids(b), &rows[1]));  // b
  rows[2] = shared.Fork();                       // prefix + [pad, pad] + c
  PaddedBatch padded = LeftPad({{0, 0, 9}}, 0);
  padded.mask[0][0] = false;
  padded.mask[0][1] = false;
  ASSERT_OK(model_->Forward(padded.ids, padded.mask, &rows[2]));
  ASSERT_TRUE(rows[2].key_mask().defined());
  const std::vector<std::vector<int64_t>> alone = {Concat(prefix, a), b, Concat(prefix, c)};

  auto stacked = KVCache::StackRows(rows);
  ASSERT_OK(stacked);
  EXPECT_EQ(stacked->batch_size(), 3);
  EXPECT_EQ(stacked->length(), static_cast<int64_t>(b.size()));  // the longest row
  KVCache cache = *std::move(stacked);
  const std::vector<int64_t> step1 = {11, 12, 13}, step2 = {21, 23};
  auto next = model_->Forward(at::tensor(step1, at::kLong).view({-1, 1}), &cache);
  ASSERT_OK(next);
  for (size_t r = 0; r < 3; ++r) {
    at::Tensor want = AloneLogits(*model_, {}, Concat(alone[r], {step1[r]}));
    EXPECT_TRUE(WithinBound((*next)[r][0], want[-1], bound)) << "row " << r;
  }
  cache = cache.SelectRows({0, 2}).value();
  auto last = model_->Forward(at::tensor(step2, at::kLong).view({-1, 1}), &cache);
  ASSERT_OK(last);
  for (size_t k = 0; k < 2; ++k) {
    const size_t r = k == 0 ? 0 : 2;
    at::Tensor want =
        AloneLogits(*model_, {}, Concat(Concat(alone[r], {step1[r]}), {step2[k]}));
    EXPECT_TRUE(WithinBound((*last)[k][0], want[-1], bound)) << "row " << r;
  }
  // With spare slots the decoding steps append in place.
  KVCache roomy = KVCache::StackRows(rows, /*spare_slots=*/4).value();
  const void* before = roomy.keys()[0].data_ptr();
  ASSERT_OK(model_->Forward(at::tensor(step1, at::kLong).view({-1, 1}), &roomy));
  EXPECT_EQ(roomy.keys()[0].data_ptr(), before);
  EXPECT_THAT(KVCache::StackRows({rows[0], KVCache()}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("row 1")));
  EXPECT_THAT(KVCache::StackRows({}), StatusIs(absl::StatusCode::kInvalidArgument, _));
}

// Appends write into spare buffer slots only when the cache alone holds the buffer: forks
// and expansions never see each other's tokens, and a lone cache decodes without moving.
TEST_P(LlamaPaddedBatchTest, InPlaceAppendsNeverLeakIntoForks) {
  const std::vector<int64_t> prefix = {1, 30, 31, 32, 5}, a = {44, 45}, b = {50, 51, 52};
  KVCache shared;
  ASSERT_OK(model_->Forward(Ids(prefix), &shared));
  KVCache fork = shared.Fork();
  KVCache expanded = shared.ExpandBatch(2).value();
  ASSERT_OK(model_->Forward(Ids(a), &shared));  // must not write where the others append
  auto fork_logits = model_->Forward(Ids(b), &fork);
  ASSERT_OK(fork_logits);
  EXPECT_TRUE(WithinBound((*fork_logits)[0], AloneLogits(*model_, prefix, b), bound));
  auto expanded_logits = model_->Forward(
      at::tensor(std::vector<int64_t>{60, 61}, at::kLong).view({2, 1}), &expanded);
  ASSERT_OK(expanded_logits);
  EXPECT_TRUE(WithinBound((*expanded_logits)[1][0], AloneLogits(*model_, prefix, {61})[0], bound));
  auto shared_logits = model_->Forward(Ids({46}), &shared);  // shared alone again
  ASSERT_OK(shared_logits);
  EXPECT_TRUE(WithinBound((*shared_logits)[0][0], AloneLogits(*model_, Concat(prefix, a), {46})[0], bound));

  // A cache nobody shares keeps its buffers while they have room.
  const void* before = fork.keys()[0].data_ptr();
  ASSERT_OK(model_->Forward(Ids({53}), &fork));
  EXPECT_EQ(fork.keys()[0].data_ptr(), before);
  EXPECT_GE(fork.keys()[0].size(2), fork.length());
}

// Without any padding the mask is optional: an all-true mask is the unpadded forward,
// bit for bit (the model drops a mask with no padding before any kernel runs).
TEST_P(LlamaPaddedBatchTest, AllRealMaskEqualsUnpadded) {
  at::Tensor ids = at::tensor(std::vector<int64_t>{1, 5, 9, 13, 1, 40, 2, 77},
                                    at::kLong).view({2, 4});
  auto plain = model_->Forward(ids, nullptr);
  auto masked = model_->Forward(ids, at::ones({2, 4}, at::kBool), nullptr);
  ASSERT_OK(plain);
  ASSERT_OK(masked);
  EXPECT_TRUE(at::equal(*plain, *masked));
}

// Token ids below 96, the smallest fixture vocabulary (mha).
INSTANTIATE_TEST_SUITE_P(Fixtures, LlamaPaddedBatchTest, ::testing::Values("gqa", "mha"));

TEST(KVCacheBatchTest, RejectsBadRequestsAndKeepsCache) {
  ASSERT_OK(ConfigureThreads(1));
  auto model = LoadFixtureModel("gqa");
  ASSERT_NE(model, nullptr);
  KVCache pair;
  ASSERT_OK(model->Forward(at::tensor(std::vector<int64_t>{1, 2, 3, 4}, at::kLong)
                               .view({2, 2}),
                           &pair));
  EXPECT_THAT(pair.ExpandBatch(4),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch-1")));
  EXPECT_THAT(pair.SelectRows({0, 2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("row 2")));
  EXPECT_THAT(pair.SelectRows({}), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_THAT(KVCache().ExpandBatch(0), StatusIs(absl::StatusCode::kInvalidArgument, _));
  EXPECT_TRUE(KVCache().ExpandBatch(3)->empty());
  EXPECT_THAT(model->Forward(at::zeros({2, 3}, at::kLong),
                             at::ones({2, 2}, at::kBool), &pair),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token_mask")));
  EXPECT_THAT(model->Forward(at::zeros({2, 2}, at::kLong),
                             at::ones({2, 2}, at::kLong), &pair),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token_mask")));
  // A real token outside the vocabulary is still an error; padding ids are not checked.
  at::Tensor ids = at::tensor(std::vector<int64_t>{5, 999, 6, 7}, at::kLong)
                          .view({2, 2});
  at::Tensor mask = at::ones({2, 2}, at::kBool);
  EXPECT_THAT(model->Forward(ids, mask, &pair),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("token id 999")));
  EXPECT_EQ(pair.length(), 2);
  EXPECT_EQ(pair.key_mask().defined(), false);
  mask[0][1] = false;
  EXPECT_OK(model->Forward(ids, mask, &pair));
  EXPECT_EQ(pair.length(), 4);
  EXPECT_TRUE(pair.key_mask().defined());
}

// ---- Evaluator: batched generation ----

// 13 samples of varied lengths (ragged batches; 13 = 4·3 + 1 = 8 + 5: the last batch is
// partial for batch sizes 3 and 8) and 2 few-shots. Long output_length so that greedy
// decoding runs many steps before a stop.
constexpr char kGenerationTask[] = R"({
  "instruction": "質問に対する答えを出力してください。",
  "output_length": 24,
  "metrics": ["exact_match"],
  "few_shots": [{"input": "日本の首都はどこですか？", "output": "東京"},
                {"input": "What is the capital of France?", "output": "Paris"}],
  "samples": [{"input": "富士山", "output": "山"},
              {"input": "The quick brown fox jumps over the lazy dog near the river bank.",
               "output": "dog"},
              {"input": "What is 3+4?", "output": "7"},
              {"input": "A", "output": "a"},
              {"input": "Tokyo is the capital of Japan. Paris is the capital of France. Italy?",
               "output": "Rome"},
              {"input": "今日は天気が良い", "output": "公園"},
              {"input": "Water boils at 100 degrees Celsius at sea level.", "output": "yes"},
              {"input": "18*18=", "output": "324"},
              {"input": "Cats and dogs are popular pets. Birds have feathers.", "output": "pets"},
              {"input": "", "output": ""},
              {"input": "A week has seven days. A day has twenty-four hours. An hour has sixty...",
               "output": "60"},
              {"input": "Red, blue and yellow are colors.", "output": "red"},
              {"input": "雪は何色ですか？", "output": "白"}]
})";

// The fixture model, except that after any token whose id is `residue` mod 10 the EOS
// logit is lifted above every other: greedy decoding then stops after a varying number of tokens,
// so the rows of a batch finish at different steps (the fixture model alone almost never
// emits EOS or "\n\n"). A function of each token's own logits, so batching cannot change it.
class EarlyStopModel : public LanguageModel {
 public:
  EarlyStopModel(const LanguageModel& inner, int64_t eos, int64_t residue)
      : inner_(inner), eos_(eos), residue_(residue) {}

  using LanguageModel::Forward;
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& input_ids,
                                        const at::Tensor& token_mask,
                                        KVCache* cache) const override {
    ASSIGN_OR_RETURN(at::Tensor logits, inner_.Forward(input_ids, token_mask, cache));
    c10::InferenceMode inference;
    at::Tensor trigger = (input_ids.remainder(10) == residue_).unsqueeze(-1);  // [B, T, 1]
    at::Tensor lift = logits.amax(-1, /*keepdim=*/true) + 1 -
                         logits.narrow(-1, eos_, 1);                       // [B, T, 1]
    at::Tensor eos_only = at::zeros({inner_.vocab_size()}, at::kFloat);
    eos_only[eos_] = 1;
    return logits + trigger.to(at::kFloat) * lift * eos_only;
  }
  absl::StatusOr<at::Tensor> ForwardPacked(const PackedBatch& batch,
                                              KVCache* cache) const override {
    ASSIGN_OR_RETURN(at::Tensor logits, inner_.ForwardPacked(batch, cache));  // [M, V]
    c10::InferenceMode inference;
    at::Tensor ids = batch.ids.index_select(0, batch.outputs);
    at::Tensor trigger = (ids.remainder(10) == residue_).unsqueeze(-1);  // [M, 1]
    at::Tensor lift = logits.amax(-1, /*keepdim=*/true) + 1 - logits.narrow(-1, eos_, 1);
    at::Tensor eos_only = at::zeros({inner_.vocab_size()}, at::kFloat);
    eos_only[eos_] = 1;
    return logits + trigger.to(at::kFloat) * lift * eos_only;
  }
  int64_t vocab_size() const override { return inner_.vocab_size(); }
  const std::vector<int64_t>& eos_token_ids() const override { return inner_.eos_token_ids(); }

 private:
  const LanguageModel& inner_;
  int64_t eos_;
  int64_t residue_;
};

class BatchedGenerationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(ConfigureThreads(1));
    model_ = LoadFixtureModel("gqa");
    ASSERT_NE(model_, nullptr);
    auto tokenizer = Tokenizer::LoadForCheckpoint(LlamaFixture("gqa"), TokenizerFixture());
    ASSERT_OK(tokenizer);
    tokenizer_ = *std::move(tokenizer);
    ASSERT_GE(tokenizer_->eos_id(), 0);
    auto task = ParseTask("batch_gen.json", kGenerationTask);
    ASSERT_OK(task);
    task_ = *std::move(task);
    ASSERT_GE(task_.samples.size(), 11u);
    ASSERT_GE(task_.few_shots.size(), 2u);
  }

  // Greedy decoding recomputing the whole sequence at every step (no cache, batch 1).
  std::string ReferenceGenerate(const LanguageModel& model, const std::string& prompt,
                                int max_new) {
    std::vector<int64_t> ids = tokenizer_->EncodeWithBos(prompt).value();
    std::vector<int64_t> generated;
    for (int step = 0; step < max_new; ++step) {
      at::Tensor logits = model.Forward(Ids(ids), nullptr).value();
      int64_t next = logits[0][-1].argmax().item<int64_t>();
      if (next == tokenizer_->eos_id()) break;
      generated.push_back(next);
      ids.push_back(next);
      if (absl::StrContains(tokenizer_->Decode(generated).value(), "\n\n")) break;
    }
    return tokenizer_->Decode(generated).value();
  }

  // Outputs with batch sizes 1, 3 and 8, each with the prefix cache on and off, are
  // byte-identical and equal greedy decoding by full recomputation; progress counts every
  // example once. Returns the outputs.
  std::vector<std::string> CheckBatchInvariance(const LanguageModel& model) {
    const PromptOptions prompt{/*few_shots=*/2};
    std::vector<std::string> baseline;
    for (int batch_size : {1, 3, 8}) {
      for (bool reuse : {true, false}) {
        SCOPED_TRACE(absl::StrCat("batch_size ", batch_size, " reuse ", reuse));
        EvalOptions options;
        options.prompt = prompt;
        options.batch_size = batch_size;
        options.reuse_prefix_cache = reuse;
        std::vector<size_t> progress;
        options.progress = [&](size_t done, size_t total) {
          EXPECT_EQ(total, task_.samples.size());
          progress.push_back(done);
          return true;
        };
        auto outputs = EvaluateTask(model, *tokenizer_, task_, options);
        EXPECT_OK(outputs);
        if (!outputs.ok()) return {};
        EXPECT_EQ(outputs->size(), task_.samples.size());
        // Every example's completion is reported once, in order; packed prompt batches
        // also report (repeating the count so far).
        std::vector<size_t> completions;
        for (size_t i = 0; i < progress.size(); ++i) {
          if (i > 0) {
            EXPECT_LE(progress[i - 1], progress[i]);
          }
          if (progress[i] > (completions.empty() ? 0 : completions.back())) {
            completions.push_back(progress[i]);
          }
        }
        EXPECT_EQ(completions.size(), task_.samples.size());
        for (size_t i = 0; i < completions.size(); ++i) EXPECT_EQ(completions[i], i + 1);
        std::vector<std::string> texts;
        for (size_t i = 0; i < outputs->size(); ++i) {
          EXPECT_EQ((*outputs)[i].index, i);
          texts.push_back((*outputs)[i].output);
        }
        if (baseline.empty()) {
          baseline = texts;
          continue;
        }
        for (size_t i = 0; i < texts.size(); ++i) {
          EXPECT_EQ(texts[i], baseline[i]) << "sample " << i;
        }
      }
    }
    for (size_t i = 0; i < baseline.size(); ++i) {
      EXPECT_EQ(baseline[i], ReferenceGenerate(model, BuildPrompt(task_, i, prompt),
                                               task_.output_length))
          << "sample " << i;
    }
    return baseline;
  }

  std::unique_ptr<LanguageModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  Task task_;
};

// The prompts really exercise the prefix cache and ragged batches.
TEST_F(BatchedGenerationTest, PromptsSharePrefixAndHaveVariedLengths) {
  const PromptOptions prompt{/*few_shots=*/2};
  std::vector<int64_t> prefix = tokenizer_->EncodeWithBos(PromptPrefix(task_, prompt)).value();
  std::set<size_t> tail_lengths;
  for (size_t i = 0; i < task_.samples.size(); ++i) {
    std::vector<int64_t> ids = tokenizer_->EncodeWithBos(BuildPrompt(task_, i, prompt)).value();
    ASSERT_GT(ids.size(), prefix.size());
    EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), ids.begin())) << "sample " << i;
    tail_lengths.insert(ids.size() - prefix.size());
  }
  EXPECT_GE(tail_lengths.size(), 8u);
}

// The fixture model: every example generates until max_new (24 tokens here).
TEST_F(BatchedGenerationTest, OutputsIndependentOfBatchSizeAndPrefixReuse) {
  std::vector<std::string> outputs = CheckBatchInvariance(*model_);
  ASSERT_EQ(outputs.size(), task_.samples.size());
  size_t long_outputs = 0;
  for (const std::string& out : outputs) {
    long_outputs += tokenizer_->Encode(out).value().size() >= 3;
  }
  EXPECT_GE(long_outputs, outputs.size() / 2);
  EXPECT_GE(std::set<std::string>(outputs.begin(), outputs.end()).size(), 3u);
}

// Examples stop at EOS after different numbers of tokens: rows leave their batch at
// different steps (KVCache::SelectRows), and some batches lose rows right after the
// prompt.
TEST_F(BatchedGenerationTest, RowsFinishingAtDifferentStepsGiveTheSameOutputs) {
  // Every prompt ends with the same response cue token: it must not trigger EOS.
  const int64_t cue =
      tokenizer_->EncodeWithBos(BuildPrompt(task_, 0, PromptOptions{2})).value().back();
  EarlyStopModel model(*model_, tokenizer_->eos_id(), (cue + 5) % 10);
  std::vector<std::string> outputs = CheckBatchInvariance(model);
  ASSERT_EQ(outputs.size(), task_.samples.size());
  std::set<size_t> lengths;
  size_t non_empty = 0;
  for (const std::string& out : outputs) {
    lengths.insert(out.size());
    non_empty += !out.empty();
  }
  EXPECT_GE(lengths.size(), 4u);
  EXPECT_GE(non_empty, outputs.size() / 2);
}

TEST_F(BatchedGenerationTest, RejectsBatchSizeZero) {
  EvalOptions options;
  options.batch_size = 0;
  EXPECT_THAT(EvaluateTask(*model_, *tokenizer_, task_, options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch size")));
}

}  // namespace
}  // namespace steadyeval
