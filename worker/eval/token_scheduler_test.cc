// The packed engine (token_scheduler.h) against the one-request-at-a-time path, on every
// model family's fixtures: log-likelihoods within the float32 bound of one uncached pass
// per request, the chosen option identical, generation identical token for token wherever
// the greedy choice is not a near-tie; ragged lengths, one-token options, options that
// share tokens beyond their context, requests longer than the token budget, budgets down
// to one token, an empty scheduler; cancellation within one batch (a cancel point after
// every forward, whatever the engine and task kind); prefixes computed once.
#include "worker/eval/token_scheduler.h"

#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/prompt.h"
#include "common/status_matchers.h"
#include "common/task.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/eval/evaluator.h"
#include "worker/model/gpt2/gpt2_model.h"
#include "worker/model/gpt_neox/gpt_neox_model.h"
#include "worker/backend/offline.h"
#include "worker/test_fixtures.h"
#include "worker/model/test_models.h"

namespace steadyeval {
namespace {

using ::testing::HasSubstr;
using namespace testing_fixtures;

std::string Fixture(const std::string& family, const std::string& name) {
  return SourceDir() + "/tests/fixtures/" + family + "/" + name;
}

// Log-likelihood requests with every kind of sharing: a "shots" prefix common to all,
// examples of ragged context lengths, options of 1-4 tokens that may share their first
// tokens with a sibling (beyond the context) or repeat one exactly.
struct Request {
  std::vector<int64_t> tokens;
  size_t score_from;
  size_t group;
};

std::vector<Request> MakeRequests(int64_t vocab, uint32_t seed, size_t max_length) {
  std::mt19937 rng(seed);
  auto token = [&] { return static_cast<int64_t>(rng() % static_cast<uint32_t>(vocab)); };
  std::vector<int64_t> shots;
  for (int i = 0; i < 12; ++i) shots.push_back(token());
  std::vector<Request> requests;
  for (size_t example = 0; example < 7; ++example) {
    std::vector<int64_t> context = example == 6 ? std::vector<int64_t>{} : shots;  // one unshared
    const size_t extra = 1 + rng() % 9;
    for (size_t i = 0; i < extra; ++i) context.push_back(token());
    std::vector<int64_t> first_option;
    for (size_t k = 0; k < 4; ++k) {
      std::vector<int64_t> option;
      if (k == 1 && !first_option.empty()) {
        option = {first_option[0], token()};  // shares its first token with option 0
      } else if (k == 3) {
        option = first_option;  // an exact repeat
      } else {
        const size_t length = k == 2 ? 1 : 1 + rng() % 4;  // option 2: one token
        for (size_t i = 0; i < length; ++i) option.push_back(token());
      }
      if (k == 0) first_option = option;
      Request r{context, context.size(), example};
      r.tokens.insert(r.tokens.end(), option.begin(), option.end());
      if (r.tokens.size() > max_length) r.tokens.resize(max_length);
      if (r.score_from >= r.tokens.size()) r.score_from = r.tokens.size() - 1;
      requests.push_back(std::move(r));
    }
  }
  return requests;
}

// The tokens the trie must run: distinct prefixes tokens[:i], 1 <= i < L (the last token is
// only scored).
uint64_t UniqueTokens(const std::vector<Request>& requests) {
  std::set<std::vector<int64_t>> prefixes;
  for (const Request& r : requests) {
    for (size_t i = 1; i < r.tokens.size(); ++i) {
      prefixes.insert(std::vector<int64_t>(r.tokens.begin(), r.tokens.begin() + i));
    }
  }
  return prefixes.size();
}

double ReferenceLoglik(const LanguageModel& model, const Request& r) {
  const std::vector<double> lps = TokenLogprobs(model, r.tokens).value();
  double total = 0;
  for (size_t i = r.score_from; i < r.tokens.size(); ++i) total += lps[i];
  return total;
}

struct FamilyCase {
  std::string family, name;
};

class PackedEquivalenceTest : public ::testing::TestWithParam<FamilyCase> {
 protected:
  void SetUp() override { ASSERT_OK(ConfigureThreads(1)); }
};

TEST_P(PackedEquivalenceTest, LoglikelihoodsMatchOneRequestAtATime) {
  const std::string dir = Fixture(GetParam().family, GetParam().name);
  std::unique_ptr<LanguageModel> model = LoadModelFrom(dir);
  ASSERT_NE(model, nullptr);
  const Fp32Bound bound = LogprobBound(dir);
  // Within the learned positions of GPT-2 (64) and the dynamic-RoPE fixture's limit.
  const size_t max_length =
      model->length_dependent_beyond() > 0 ? static_cast<size_t>(model->length_dependent_beyond())
                                           : 40;
  const std::vector<Request> requests = MakeRequests(model->vocab_size(), 7, max_length);
  std::vector<double> want;
  for (const Request& r : requests) want.push_back(ReferenceLoglik(*model, r));

  for (int64_t budget : {1, 3, 7, 64, 4096}) {
    SCOPED_TRACE(absl::StrCat("batch_tokens ", budget));
    std::vector<size_t> groups_seen;
    TokenScheduler::Options options;
    options.batch_tokens = budget;
    options.after_batch = [&](size_t done) {
      groups_seen.push_back(done);
      return true;
    };
    auto scheduler = TokenScheduler::Create(options);
    ASSERT_OK(scheduler);
    for (const Request& r : requests) ASSERT_OK(scheduler->AddLoglik(r.tokens, r.score_from, r.group));
    ASSERT_OK(scheduler->Run(*model, nullptr));
    for (size_t i = 0; i < requests.size(); ++i) {
      EXPECT_TRUE(WithinBound(scheduler->loglik(i), want[i], bound)) << "request " << i;
    }
    // Each shared prefix ran once; nothing else ran.
    const TokenWorkStats& stats = scheduler->stats();
    EXPECT_EQ(stats.computed_tokens, UniqueTokens(requests));
    EXPECT_LT(stats.computed_tokens, stats.requested_tokens);
    EXPECT_EQ(stats.batches, (stats.computed_tokens + static_cast<uint64_t>(budget) - 1) /
                                 static_cast<uint64_t>(budget));
    ASSERT_FALSE(groups_seen.empty());
    EXPECT_EQ(groups_seen.back(), 7u);
    EXPECT_TRUE(std::is_sorted(groups_seen.begin(), groups_seen.end()));
  }
}

TEST_P(PackedEquivalenceTest, PromptsEndWithTheirOwnLogitsAndCache) {
  const std::string dir = Fixture(GetParam().family, GetParam().name);
  std::unique_ptr<LanguageModel> model = LoadModelFrom(dir);
  ASSERT_NE(model, nullptr);
  const Fp32Bound bound = LogitBound(dir);
  const size_t max_length =
      model->length_dependent_beyond() > 0 ? static_cast<size_t>(model->length_dependent_beyond()) - 1
                                           : 40;
  // Prompts sharing prefixes, one a prefix of another, one repeated.
  std::vector<std::vector<int64_t>> prompts;
  for (const Request& r : MakeRequests(model->vocab_size(), 11, max_length)) prompts.push_back(r.tokens);
  prompts.push_back(std::vector<int64_t>(prompts[0].begin(), prompts[0].end() - 1));
  prompts.push_back(prompts[1]);
  for (int64_t budget : {3, 4096}) {
    SCOPED_TRACE(absl::StrCat("batch_tokens ", budget));
    auto scheduler = TokenScheduler::Create({budget, {}});
    ASSERT_OK(scheduler);
    for (size_t i = 0; i < prompts.size(); ++i) ASSERT_OK(scheduler->AddPrompt(prompts[i], i));
    std::vector<int> seen(prompts.size(), 0);
    ASSERT_OK(scheduler->Run(
        *model,
        [&](size_t request, at::Tensor last, KVCache cache) -> absl::Status {
          ++seen[request];
          const std::vector<int64_t>& p = prompts[request];
          EXPECT_EQ(cache.length(), static_cast<int64_t>(p.size()));
          const at::Tensor whole = model->Forward(Ids(p), nullptr).value()[0][-1];
          EXPECT_TRUE(WithinBound(last, whole, bound)) << "prompt " << request;
          // The cache continues the prompt as if it had run alone.
          std::vector<int64_t> longer = p;
          longer.push_back(1);
          const at::Tensor next = model->Forward(Ids({1}), &cache).value()[0][-1];
          const at::Tensor want = model->Forward(Ids(longer), nullptr).value()[0][-1];
          EXPECT_TRUE(WithinBound(next, want, bound)) << "prompt " << request << " continued";
          return absl::OkStatus();
        },
        /*spare_slots=*/4));
    EXPECT_THAT(seen, ::testing::Each(1));
  }
}

INSTANTIATE_TEST_SUITE_P(
    EveryFamily, PackedEquivalenceTest,
    ::testing::Values(FamilyCase{"llama", "gqa"}, FamilyCase{"llama", "mha"},
                      FamilyCase{"llama", "attn_bias"}, FamilyCase{"llama", "qwen2"},
                      FamilyCase{"llama", "rope_llama3"}, FamilyCase{"llama", "rope_dynamic"},
                      FamilyCase{"gpt2", "base"}, FamilyCase{"gpt2", "inverse_layer_idx"},
                      FamilyCase{"gpt_neox", "parallel"}, FamilyCase{"gpt_neox", "sequential"}),
    [](const ::testing::TestParamInfo<FamilyCase>& info) {
      return info.param.family + "_" + info.param.name;
    });

constexpr char kChoiceTask[] = R"({"id": "a", "query": "The capital of Japan is ", "choices": ["Tokyo.", "Paris.", "Kyoto."], "gold": 0}
{"id": "b", "query": "日本の首都は", "choices": ["東京です。", "パリです。"], "gold": 0}
{"id": "c", "query": "1 + 2 =", "choices": [" 3", " 4", " 56", " 3"], "gold": 0}
{"id": "d", "query": "", "choices": ["x", "yy"], "gold": 1}
)";

// The same questions, each query starting with the same two shots: sharing is found on
// the token ids, whatever wrote the text.
std::string WithShots(const std::string& jsonl) {
  const std::string shots = "Q: 2 + 2 = A: 4\\nQ: 空は A: 青い\\n";
  std::string out;
  for (absl::string_view line : absl::StrSplit(jsonl, '\n', absl::SkipEmpty())) {
    std::string l(line);
    const size_t at = l.find("\"query\": \"") + 10;
    l.insert(at, shots);
    out += l + "\n";
  }
  return out;
}

class PackedTaskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK(ConfigureThreads(1));
    model_ = LoadFixtureModel("gqa");
    ASSERT_NE(model_, nullptr);
    bound_ = LogprobBound(LlamaFixture("gqa"));
    auto tokenizer = Tokenizer::LoadForCheckpoint(LlamaFixture("gqa"), TokenizerFixture());
    ASSERT_OK(tokenizer);
    tokenizer_ = *std::move(tokenizer);
  }

  std::vector<EvalOutput> Evaluate(const Task& task, EvalEngine engine, int64_t budget,
                                   TokenWorkStats* stats = nullptr) {
    EvalOptions options;
    options.engine = engine;
    options.batch_tokens = budget;
    options.stats = stats;
    auto outputs = EvaluateTask(*model_, *tokenizer_, task, options);
    EXPECT_OK(outputs);
    return outputs.ok() ? *std::move(outputs) : std::vector<EvalOutput>{};
  }

  std::unique_ptr<LanguageModel> model_;
  Fp32Bound bound_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(PackedTaskTest, MultipleChoiceEqualsPerRequestEngine) {
  for (const std::string& content : {std::string(kChoiceTask), WithShots(kChoiceTask)}) {
    auto task = ParseTask("mc.jsonl", content);
    ASSERT_OK(task);
    const std::vector<EvalOutput> want = Evaluate(*task, EvalEngine::kPerRequest, 1);
    for (int64_t budget : {2, 16, 512}) {
      SCOPED_TRACE(absl::StrCat("batch_tokens ", budget));
      TokenWorkStats stats;
      const std::vector<EvalOutput> got = Evaluate(*task, EvalEngine::kPacked, budget, &stats);
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].index, want[i].index);
        EXPECT_EQ(got[i].output, want[i].output) << "example " << i;
        ASSERT_EQ(got[i].option_logliks.size(), want[i].option_logliks.size());
        for (size_t k = 0; k < got[i].option_logliks.size(); ++k) {
          EXPECT_TRUE(WithinBound(got[i].option_logliks[k], want[i].option_logliks[k], bound_))
              << "example " << i << " option " << k;
        }
      }
      EXPECT_LT(stats.computed_tokens, stats.requested_tokens);
    }
  }
  // The shots are computed once: adding them to four queries adds their tokens about once.
  auto plain = ParseTask("mc.jsonl", kChoiceTask);
  auto shot = ParseTask("mc.jsonl", WithShots(kChoiceTask));
  ASSERT_OK(plain);
  ASSERT_OK(shot);
  TokenWorkStats plain_stats, shot_stats;
  Evaluate(*plain, EvalEngine::kPacked, 512, &plain_stats);
  Evaluate(*shot, EvalEngine::kPacked, 512, &shot_stats);
  const size_t shot_tokens = tokenizer_->Encode("Q: 2 + 2 = A: 4\nQ: 空は A: 青い\n").value().size();
  EXPECT_LE(shot_stats.computed_tokens, plain_stats.computed_tokens + shot_tokens + 8);
  EXPECT_GE(shot_stats.requested_tokens, plain_stats.requested_tokens + 10 * shot_tokens);
}

constexpr char kGenerationTask[] = R"({
  "instruction": "質問に対する答えを出力してください。",
  "output_length": 10,
  "metrics": ["exact_match"],
  "few_shots": [{"input": "日本の首都はどこですか？", "output": "東京"},
                {"input": "The capital of France?", "output": "Paris"}],
  "samples": [{"input": "富士山は何ですか？", "output": "山"},
              {"input": "The quick brown fox", "output": "dog"},
              {"input": "今日は天気が良い", "output": "公園"},
              {"input": "1 + 1 =", "output": "2"},
              {"input": "The quick brown fox", "output": "dog"}]
})";

// The smallest gap between the two largest logits along the greedy path of `prompt` (full
// recomputation): below the float32 bound, another summation order may pick the other.
double SmallestTop2Margin(const LanguageModel& model, const Tokenizer& tokenizer,
                          const std::string& prompt, int steps) {
  std::vector<int64_t> ids = tokenizer.EncodeWithBos(prompt).value();
  double smallest = 1e30;
  for (int step = 0; step < steps; ++step) {
    at::Tensor logits = model.Forward(Ids(ids), nullptr).value()[0][-1];
    const at::Tensor top = std::get<0>(logits.topk(2));
    smallest = std::min(smallest, (top[0] - top[1]).item<double>());
    ids.push_back(logits.argmax().item<int64_t>());
  }
  return smallest;
}

TEST_F(PackedTaskTest, GenerationEqualsPerRequestEngineTokenForToken) {
  auto task = ParseTask("gen.json", kGenerationTask);
  ASSERT_OK(task);
  const Fp32Bound logit_bound = LogitBound(LlamaFixture("gqa"));
  for (int shots : {0, 2}) {
    EvalOptions per_request;
    per_request.engine = EvalEngine::kPerRequest;
    per_request.prompt.few_shots = shots;
    per_request.batch_size = 2;
    auto want = EvaluateTask(*model_, *tokenizer_, *task, per_request);
    ASSERT_OK(want);
    for (int64_t budget : {3, 512}) {
      EvalOptions packed = per_request;
      packed.engine = EvalEngine::kPacked;
      packed.batch_tokens = budget;
      TokenWorkStats stats;
      packed.stats = &stats;
      auto got = EvaluateTask(*model_, *tokenizer_, *task, packed);
      ASSERT_OK(got);
      ASSERT_EQ(got->size(), want->size());
      for (size_t i = 0; i < got->size(); ++i) {
        EXPECT_EQ((*got)[i].index, i);
        if ((*got)[i].output == (*want)[i].output) continue;
        // Only a near-tie may differ; report it.
        const double margin = SmallestTop2Margin(*model_, *tokenizer_,
                                                 BuildPrompt(*task, i, packed.prompt),
                                                 task->output_length);
        EXPECT_LE(margin, logit_bound.Tolerance(10)) << "sample " << i << " differs: '"
                                                     << (*got)[i].output << "' vs '"
                                                     << (*want)[i].output << "'";
        std::cerr << "note: sample " << i << " differs at a near-tie (top-2 margin " << margin
                  << ")\n";
      }
      // Sample 4 repeats sample 1's prompt; with shots every prompt shares them.
      EXPECT_LT(stats.computed_tokens, stats.requested_tokens);
    }
  }
}

// Counts the forwards of the model it wraps. With `length_dependent_beyond` > 0 it claims
// that sequences longer than that depend on their length, which sends them down the
// evaluator's one-pass paths (its logits stay the inner model's).
class CountingModel : public LanguageModel {
 public:
  explicit CountingModel(const LanguageModel& inner, int64_t length_dependent_beyond = 0)
      : inner_(inner), length_dependent_beyond_(length_dependent_beyond) {}
  using LanguageModel::Forward;
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& ids, const at::Tensor& mask,
                                        KVCache* cache) const override {
    ++forward_calls;
    return inner_.Forward(ids, mask, cache);
  }
  absl::StatusOr<at::Tensor> ForwardPacked(const PackedBatch& batch,
                                              KVCache* cache) const override {
    ++packed_calls;
    return inner_.ForwardPacked(batch, cache);
  }
  int64_t vocab_size() const override { return inner_.vocab_size(); }
  const std::vector<int64_t>& eos_token_ids() const override { return inner_.eos_token_ids(); }
  int64_t length_dependent_beyond() const override { return length_dependent_beyond_; }
  int calls() const { return packed_calls + forward_calls; }
  mutable int packed_calls = 0;
  mutable int forward_calls = 0;  // unpacked: prompts, decoding steps, per-request scoring

 private:
  const LanguageModel& inner_;
  const int64_t length_dependent_beyond_;
};

TEST_F(PackedTaskTest, ProgressReturningFalseCancelsWithinOneBatch) {
  auto task = ParseTask("mc.jsonl", WithShots(kChoiceTask));
  ASSERT_OK(task);
  EvalOptions options;
  options.batch_tokens = 4;
  // Going on: the batch at which the first progress report comes, and the total.
  CountingModel full(*model_);
  int first_report_at = -1;
  options.progress = [&](size_t, size_t) {
    if (first_report_at < 0) first_report_at = full.packed_calls;
    return true;
  };
  ASSERT_OK(EvaluateTask(full, *tokenizer_, *task, options));
  ASSERT_GT(first_report_at, 0);
  ASSERT_LT(first_report_at, full.packed_calls);
  // Stopping at that report: no further batch runs.
  CountingModel cancelled(*model_);
  int calls = 0;
  options.progress = [&](size_t, size_t) {
    ++calls;
    return false;
  };
  auto outputs = EvaluateTask(cancelled, *tokenizer_, *task, options);
  EXPECT_THAT(outputs, StatusIs(absl::StatusCode::kCancelled, HasSubstr("cancelled")));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(cancelled.packed_calls, first_report_at);
}

TEST_F(PackedTaskTest, GenerationCancelsWithinOnePromptBatch) {
  auto task = ParseTask("gen.json", kGenerationTask);
  ASSERT_OK(task);
  CountingModel counting(*model_);
  EvalOptions options;
  options.prompt.few_shots = 2;
  options.batch_tokens = 4;  // the prompts take many batches before any example is decoded
  int calls = 0;
  options.progress = [&](size_t done, size_t) {
    ++calls;
    EXPECT_EQ(done, 0u);
    return false;
  };
  EXPECT_THAT(EvaluateTask(counting, *tokenizer_, *task, options),
              StatusIs(absl::StatusCode::kCancelled, HasSubstr("cancelled")));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(counting.packed_calls, 1);
}

// Every way a task is evaluated: both kinds (with shots), both engines, packed budgets of
// many small batches and of one large one, and sequences sent down the one-pass paths of
// a length-dependent model.
struct CancelCase {
  std::string name;
  bool generation;
  EvalEngine engine;
  int64_t budget;
  int64_t length_dependent_beyond;
};

std::vector<CancelCase> CancelCases() {
  std::vector<CancelCase> cases;
  for (bool generation : {false, true}) {
    const std::string kind = generation ? "generation" : "choice";
    cases.push_back({kind + " packed budget 4", generation, EvalEngine::kPacked, 4, 0});
    cases.push_back({kind + " packed budget 512", generation, EvalEngine::kPacked, 512, 0});
    cases.push_back({kind + " packed one-pass", generation, EvalEngine::kPacked, 512, 12});
    cases.push_back({kind + " per request", generation, EvalEngine::kPerRequest, 512, 0});
    cases.push_back({kind + " per request one-pass", generation, EvalEngine::kPerRequest, 512, 12});
  }
  return cases;
}

class CancelPointTest : public PackedTaskTest {
 protected:
  void SetUp() override {
    PackedTaskTest::SetUp();
    auto choice = ParseTask("mc.jsonl", WithShots(kChoiceTask));
    ASSERT_OK(choice);
    choice_ = *std::move(choice);
    auto generation = ParseTask("gen.json", kGenerationTask);
    ASSERT_OK(generation);
    generation_ = *std::move(generation);
  }
  const Task& TaskOf(const CancelCase& c) const { return c.generation ? generation_ : choice_; }
  static EvalOptions OptionsOf(const CancelCase& c) {
    EvalOptions options;
    options.engine = c.engine;
    options.batch_tokens = c.budget;
    options.prompt.few_shots = 2;
    options.batch_size = 3;  // two decoding batches
    return options;
  }
  Task choice_;
  Task generation_;
};

// Whatever the engine and the task, progress (the cancel point) is asked after every
// forward of the model before the next one runs.
TEST_F(CancelPointTest, ProgressIsAskedAfterEveryForward) {
  for (const CancelCase& c : CancelCases()) {
    SCOPED_TRACE(c.name);
    CountingModel counting(*model_, c.length_dependent_beyond);
    EvalOptions options = OptionsOf(c);
    std::set<int> asked_after;  // the number of forwards run at each progress call
    options.progress = [&](size_t, size_t) {
      asked_after.insert(counting.calls());
      return true;
    };
    ASSERT_OK(EvaluateTask(counting, *tokenizer_, TaskOf(c), options));
    ASSERT_GE(counting.calls(), 1);
    for (int forward = 1; forward <= counting.calls(); ++forward) {
      EXPECT_EQ(asked_after.count(forward), 1u) << "no cancel point after forward " << forward
                                                << " of " << counting.calls();
    }
  }
}

// Cancelling after the first forward, one in the middle or the last but one (the last
// when there is only one) ends the evaluation with CANCELLED (no outputs) and runs no
// further forward.
TEST_F(CancelPointTest, CancellingAfterAnyForwardRunsNoFurtherForward) {
  for (const CancelCase& c : CancelCases()) {
    SCOPED_TRACE(c.name);
    CountingModel full(*model_, c.length_dependent_beyond);
    ASSERT_OK(EvaluateTask(full, *tokenizer_, TaskOf(c), OptionsOf(c)));
    const int n = full.calls();
    for (int cancel_after : std::set<int>{1, std::max(1, n / 2), std::max(1, n - 1)}) {
      CountingModel counting(*model_, c.length_dependent_beyond);
      EvalOptions options = OptionsOf(c);
      options.progress = [&](size_t, size_t) { return counting.calls() < cancel_after; };
      EXPECT_THAT(EvaluateTask(counting, *tokenizer_, TaskOf(c), options),
                  StatusIs(absl::StatusCode::kCancelled, HasSubstr("cancelled")))
          << "cancel after forward " << cancel_after;
      EXPECT_EQ(counting.calls(), cancel_after);
    }
  }
}

TEST(TokenSchedulerTest, EmptyRunsNothing) {
  ASSERT_OK(ConfigureThreads(1));
  std::unique_ptr<LanguageModel> model = LoadFixtureModel("gqa");
  ASSERT_NE(model, nullptr);
  CountingModel counting(*model);
  auto scheduler = TokenScheduler::Create({});
  ASSERT_OK(scheduler);
  ASSERT_OK(scheduler->Run(counting, nullptr));
  EXPECT_EQ(counting.packed_calls, 0);
  EXPECT_EQ(scheduler->stats().batches, 0u);
}

TEST(TokenSchedulerTest, RejectsBadRequestsAndBudgets) {
  EXPECT_THAT(TokenScheduler::Create({/*batch_tokens=*/0, {}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch_tokens")));
  auto scheduler = TokenScheduler::Create({});
  ASSERT_OK(scheduler);
  EXPECT_THAT(scheduler->AddLoglik({1, 2}, 0, 0), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
  EXPECT_THAT(scheduler->AddLoglik({1, 2}, 2, 0), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
  EXPECT_THAT(scheduler->AddPrompt({}, 0), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("")));
}

TEST(PackedForwardTest, RejectsMalformedBatches) {
  ASSERT_OK(ConfigureThreads(1));
  std::unique_ptr<LanguageModel> model = LoadFixtureModel("gqa");
  ASSERT_NE(model, nullptr);
  PackedBatch batch;
  batch.ids = at::tensor(std::vector<int64_t>{1, 2, 3}, at::kLong);
  batch.positions = at::tensor(std::vector<int64_t>{0, 1, 2}, at::kLong);
  batch.visible = at::ones({3, 3}, at::kBool).tril();
  batch.outputs = at::tensor(std::vector<int64_t>{2}, at::kLong);
  auto logits = model->ForwardPacked(batch, nullptr);
  ASSERT_OK(logits);
  EXPECT_EQ(logits->sizes(), (std::vector<int64_t>{1, model->vocab_size()}));
  // The same three tokens as one ordinary sequence.
  at::Tensor whole = model->Forward(Ids({1, 2, 3}), nullptr).value()[0][2];
  EXPECT_TRUE(WithinBound((*logits)[0], whole, LogitBound(LlamaFixture("gqa"))));

  PackedBatch bad = batch;
  bad.visible = at::ones({3, 4}, at::kBool);
  EXPECT_THAT(model->ForwardPacked(bad, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("visible")));
  bad = batch;
  bad.outputs = at::tensor(std::vector<int64_t>{3}, at::kLong);
  EXPECT_THAT(model->ForwardPacked(bad, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("output index")));
  bad = batch;
  bad.ids = at::tensor(std::vector<int64_t>{1, 2, 100000}, at::kLong);
  EXPECT_THAT(model->ForwardPacked(bad, nullptr),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("vocabulary")));
}

}  // namespace
}  // namespace steadyeval
