// Checkpoint averaging, the window-sum cache, parameter drift and the offline `average`
// command, on checkpoints written by the test itself (testing/tensor_checkpoints.h) and on the
// committed Llama fixture.
#include "worker/averaging/averager.h"

#include <filesystem>

#include <ATen/ATen.h>

#include "common/job_failure.h"
#include "testing/files.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/eval/evaluator.h"
#include "worker/model/language_model.h"
#include "worker/backend/offline.h"
#include "testing/tensor_checkpoints.h"

namespace steadyeval {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using namespace ::steadyeval::testing;

constexpr char kConfig[] = R"({"model_type": "llama", "hidden_size": 8, "rope_theta": 10000.0,
  "transformers_version": "4.40.0"})";

// A small checkpoint with fp32 values of very different magnitudes and one integer tensor.
NamedTensors RandomTensors(uint64_t seed, at::ScalarType dtype = at::kFloat) {
  at::manual_seed(seed);
  at::Tensor wide = at::randn({5, 8}, at::kDouble) *
                       at::pow(10.0, at::randint(-20, 20, {5, 8}).to(at::kDouble));
  return {{"a.weight", wide.to(dtype)},
          {"b.bias", at::randn({8}).to(dtype)},
          {"c.counter", at::randint(0, 1000, {3}, at::kLong)},
          {"d.proj.weight", at::randn({3, 7}).to(dtype)}};
}

std::string WriteRandom(const std::string& dir, uint64_t seed, int shards = 1,
                        at::ScalarType dtype = at::kFloat) {
  WriteTestCheckpoint(dir, kConfig, RandomTensors(seed, dtype), shards);
  return dir;
}

at::Tensor Stored(const TensorMap& map, const std::string& name) {
  auto t = map.Stored(name);
  EXPECT_OK(t);
  return t.ok() ? *t : at::Tensor();
}

at::Tensor Read(const std::string& dir, const std::string& name) {
  auto reader = CheckpointReader::Open(dir);
  EXPECT_OK(reader);
  auto view = (*reader)->MappedTensor(name);
  EXPECT_OK(view);
  return view->clone();
}

bool SameBytes(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

TEST(AverageCheckpointsTest, IdenticalFp32MembersAreBitIdentical) {
  const std::string dir = ScratchDir("ckpts");
  const std::string member = WriteRandom(dir + "/step_1", 7);
  for (size_t n : {1u, 2u, 3u, 7u, 10u}) {
    auto average = AverageCheckpoints(std::vector<std::string>(n, member));
    ASSERT_OK(average);
    auto reader = CheckpointReader::Open(member);
    ASSERT_OK(reader);
    ASSERT_EQ((*average)->TensorNames(), (*reader)->TensorNames());
    for (const std::string& name : (*reader)->TensorNames()) {
      auto view = (*reader)->MappedTensor(name);
      ASSERT_OK(view);
      EXPECT_TRUE(SameBytes(Stored(**average, name), *view)) << "n=" << n << " tensor " << name;
    }
  }
  // Through the cache as well: n distinct folders with the same contents.
  std::vector<WindowMember> members;
  for (int i = 0; i < 5; ++i) {
    const std::string copy = dir + "/copy_" + std::to_string(i);
    std::filesystem::copy(member, copy);
    members.push_back({copy, static_cast<uint64_t>(100 * (i + 1))});
  }
  WindowSumCache cache({});
  auto average = cache.Average("run", {members.begin(), members.begin() + 4});
  ASSERT_OK(average);
  average = cache.Average("run", {members.begin() + 1, members.end()});  // slid
  ASSERT_OK(average);
  EXPECT_EQ(cache.last_path(), WindowSumCache::Path::kSlid);
  for (const auto& [name, t] : RandomTensors(7)) {
    EXPECT_TRUE(SameBytes(Stored(**average, name), t)) << name;
  }
}

TEST(AverageCheckpointsTest, TwoMembersGiveTheArithmeticMean) {
  const std::string dir = ScratchDir("ckpts");
  const std::string a = WriteRandom(dir + "/a", 1), b = WriteRandom(dir + "/b", 2);
  auto average = AverageCheckpoints({a, b});
  ASSERT_OK(average);
  for (const char* name : {"a.weight", "b.bias", "d.proj.weight"}) {
    at::Tensor expected =
        ((Read(a, name).to(at::kDouble) + Read(b, name).to(at::kDouble)) / 2)
            .to(at::kFloat);
    at::Tensor got = Stored(**average, name);
    EXPECT_EQ(got.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(got, expected)) << name;
    EXPECT_FALSE(at::equal(got, Read(b, name))) << name;  // really averaged
  }
  // Integer tensors come from the newest (last) member.
  EXPECT_TRUE(at::equal(Stored(**average, "c.counter"), Read(b, "c.counter")));
  EXPECT_FALSE(at::equal(Read(a, "c.counter"), Read(b, "c.counter")));
}

TEST(AverageCheckpointsTest, ShardedAndSingleFileMembersMix) {
  const std::string dir = ScratchDir("ckpts");
  const std::vector<std::string> members = {WriteRandom(dir + "/a", 11, /*shards=*/1),
                                            WriteRandom(dir + "/b", 12, /*shards=*/3),
                                            WriteRandom(dir + "/c", 13, /*shards=*/2)};
  ASSERT_TRUE(std::filesystem::exists(dir + "/b/model.safetensors.index.json"));
  auto average = AverageCheckpoints(members);
  ASSERT_OK(average);
  for (const char* name : {"a.weight", "b.bias", "d.proj.weight"}) {
    at::Tensor sum = at::zeros_like(Read(members[0], name), at::kDouble);
    for (const std::string& m : members) sum += Read(m, name).to(at::kDouble);
    EXPECT_TRUE(at::equal(Stored(**average, name), (sum / 3).to(at::kFloat))) << name;
  }
  EXPECT_TRUE(at::equal(Stored(**average, "c.counter"), Read(members[2], "c.counter")));
}

TEST(AverageCheckpointsTest, Bf16MembersAccumulateInFp32AndRoundOnce) {
  const std::string dir = ScratchDir("ckpts");
  std::vector<std::string> members;
  for (int i = 0; i < 3; ++i) {
    members.push_back(WriteRandom(dir + "/m" + std::to_string(i), 20 + i, 1, at::kBFloat16));
  }
  auto average = AverageCheckpoints(members);
  ASSERT_OK(average);
  for (const char* name : {"a.weight", "b.bias", "d.proj.weight"}) {
    at::Tensor sum32 = at::zeros_like(Read(members[0], name), at::kFloat);
    at::Tensor sum16 = at::zeros_like(Read(members[0], name));
    for (const std::string& m : members) {
      sum32 += Read(m, name).to(at::kFloat);
      sum16 += Read(m, name);
    }
    at::Tensor got = Stored(**average, name);
    EXPECT_EQ(got.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::equal(got, (sum32 / 3).to(at::kBFloat16))) << name;
    // Accumulating in bf16 would round every partial sum: the test can tell them apart.
    if (name == std::string("a.weight")) {
      EXPECT_FALSE(at::equal(got, sum16 / 3)) << name;
    }
  }
}

TEST(AverageCheckpointsTest, DisagreeingMembersFailWithTheReason) {
  const std::string dir = ScratchDir("ckpts");
  const std::string good = WriteRandom(dir + "/good", 1);

  NamedTensors tensors = RandomTensors(2);
  tensors[1].second = at::randn({9});
  WriteTestCheckpoint(dir + "/shape", kConfig, tensors);
  EXPECT_THAT(AverageCheckpoints({good, dir + "/shape"}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("'b.bias'"), HasSubstr("[8]"), HasSubstr("[9]"))));

  tensors = RandomTensors(2);
  tensors.erase(tensors.begin() + 3);
  WriteTestCheckpoint(dir + "/missing", kConfig, tensors);
  EXPECT_THAT(AverageCheckpoints({good, dir + "/missing"}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("'d.proj.weight'"), HasSubstr(dir + "/missing"))));

  tensors = RandomTensors(2);
  tensors[0].second = tensors[0].second.to(at::kBFloat16);
  WriteTestCheckpoint(dir + "/dtype", kConfig, tensors);
  EXPECT_THAT(AverageCheckpoints({good, dir + "/dtype"}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("'a.weight'"), HasSubstr("BF16"))));

  WriteTestCheckpoint(dir + "/config",
                      R"({"model_type": "llama", "hidden_size": 8, "rope_theta": 500000.0})",
                      RandomTensors(2));
  EXPECT_THAT(AverageCheckpoints({good, dir + "/config"}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("config.json key 'rope_theta'")));

  // Bookkeeping keys may differ.
  WriteTestCheckpoint(dir + "/bookkeeping",
                      R"({"model_type": "llama", "hidden_size": 8, "rope_theta": 10000.0,
                          "transformers_version": "4.45.1", "_name_or_path": "x"})",
                      RandomTensors(3));
  EXPECT_OK(AverageCheckpoints({good, dir + "/bookkeeping"}));
}

TEST(AverageCheckpointsTest, DeletedMemberIsMembersGone) {
  const std::string dir = ScratchDir("ckpts");
  const std::string a = WriteRandom(dir + "/a", 1), b = WriteRandom(dir + "/b", 2);
  std::filesystem::remove_all(b);
  const absl::Status gone = AverageCheckpoints({a, b}).status();
  EXPECT_THAT(gone,
              StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr("members_gone"), HasSubstr(b))));
  EXPECT_EQ(JobFailureOf(gone), JobFailure::kMembersGone);  // the typed reason, not the text
  WindowSumCache cache({});
  const absl::Status cached = cache.Average("run", {{a, 1}, {b, 2}}).status();
  EXPECT_THAT(cached, StatusIs(absl::StatusCode::kNotFound, HasSubstr("members_gone")));
  EXPECT_EQ(JobFailureOf(cached), JobFailure::kMembersGone);
  // A folder that exists but lost its weights is a plain load error, not members_gone.
  std::filesystem::remove(a + "/model.safetensors");
  const absl::Status lost = AverageCheckpoints({a}).status();
  EXPECT_THAT(lost,
              StatusIs(absl::StatusCode::kNotFound, ::testing::Not(HasSubstr("members_gone"))));
  EXPECT_EQ(JobFailureOf(lost), JobFailure::kPermanent);
}

class WindowSumCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ScratchDir("ckpts");
    for (int i = 1; i <= 9; ++i) {
      members_.push_back({WriteRandom(dir_ + "/step_" + std::to_string(i), 100 + i, 1 + i % 2),
                          static_cast<uint64_t>(i * 10)});
    }
  }
  std::vector<WindowMember> Window(size_t first, size_t n) const {
    return {members_.begin() + first, members_.begin() + first + n};
  }
  static std::vector<std::string> Dirs(const std::vector<WindowMember>& window) {
    std::vector<std::string> dirs;
    for (const WindowMember& m : window) dirs.push_back(m.dir);
    return dirs;
  }
  // Stated tolerance. Sliding adds and subtracts in fp64, so the held sum carries the
  // rounding of every member that passed through it since the last rebuild: each of the
  // at most n + 2·slides operations adds at most 2^-53 · M, M the largest |θ| (per element)
  // among those members; after the division by n that is below 2^-45 · M for these windows.
  // Then the cast to fp32 can round to the neighbouring float: at most 2^-23 · |scratch|.
  // So |slid − scratch| <= 2^-23·|scratch| + 2^-45·M. (Forgetting to subtract, or
  // subtracting the wrong member, misses by about |θ|, far outside this.) The test data
  // spans magnitudes 1e-20..1e20 per element, so both terms matter.
  void ExpectMatchesScratch(const TensorMap& slid, const std::vector<WindowMember>& window) const {
    auto scratch = AverageCheckpoints(Dirs(window));
    ASSERT_OK(scratch);
    for (const std::string& name : (*scratch)->TensorNames()) {
      at::Tensor a = Stored(slid, name), b = Stored(**scratch, name);
      if (!a.is_floating_point()) {
        EXPECT_TRUE(at::equal(a, b)) << name;
        continue;
      }
      at::Tensor largest = at::zeros(b.sizes(), at::kDouble);
      for (const WindowMember& m : members_) {
        if (std::filesystem::exists(m.dir)) {
          largest = at::maximum(largest, Read(m.dir, name).to(at::kDouble).abs());
        }
      }
      at::Tensor diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs();
      at::Tensor bound =
          b.to(at::kDouble).abs() * std::ldexp(1.0, -23) + largest * std::ldexp(1.0, -45);
      EXPECT_TRUE((diff <= bound).all().item<bool>())
          << name << ": max diff " << diff.max().item<double>();
    }
  }

  std::string dir_;
  std::vector<WindowMember> members_;
};

TEST_F(WindowSumCacheTest, SlidWindowsMatchFromScratchAverages) {
  WindowSumCache cache({/*budget_bytes=*/1 << 20, /*rebuild_every=*/100});
  auto first = cache.Average("run", Window(0, 3));
  ASSERT_OK(first);
  EXPECT_EQ(cache.last_path(), WindowSumCache::Path::kRebuilt);
  ExpectMatchesScratch(**first, Window(0, 3));
  for (size_t start = 1; start + 3 <= members_.size(); ++start) {
    auto slid = cache.Average("run", Window(start, 3));
    ASSERT_OK(slid);
    EXPECT_EQ(cache.last_path(), WindowSumCache::Path::kSlid) << start;
    ExpectMatchesScratch(**slid, Window(start, 3));
    ASSERT_EQ(cache.Held().size(), 1u);
    EXPECT_EQ(cache.Held()[0].run, "run");
    EXPECT_EQ(cache.Held()[0].window, 3u);
    EXPECT_THAT(cache.Held()[0].steps, ::testing::ElementsAre(members_[start].step,
                                                              members_[start + 1].step,
                                                              members_[start + 2].step));
  }
  // The same window again reads only the newest member.
  ASSERT_OK(cache.Average("run", Window(6, 3)));
  EXPECT_EQ(cache.last_path(), WindowSumCache::Path::kReused);
}

TEST_F(WindowSumCacheTest, RebuildsEveryKSlidesAndOnJumps) {
  WindowSumCache cache({1 << 20, /*rebuild_every=*/2});
  std::vector<WindowSumCache::Path> paths;
  for (size_t start = 0; start + 2 <= 7; ++start) {
    ASSERT_OK(cache.Average("run", Window(start, 2)));
    paths.push_back(cache.last_path());
  }
  using P = WindowSumCache::Path;
  EXPECT_THAT(paths, ::testing::ElementsAre(P::kRebuilt, P::kSlid, P::kSlid, P::kRebuilt,
                                            P::kSlid, P::kSlid));
  // Not a shift by one (a late checkpoint changed the membership): rebuilt.
  std::vector<WindowMember> jump = {members_[5], members_[7]};
  auto average = cache.Average("run", jump);
  ASSERT_OK(average);
  EXPECT_EQ(cache.last_path(), P::kRebuilt);
  ExpectMatchesScratch(**average, jump);
  // The oldest member of the held window was deleted: the slide cannot subtract it, so the
  // window is re-summed from its own (present) members.
  std::filesystem::remove_all(members_[5].dir);
  average = cache.Average("run", {members_[7], members_[8]});
  ASSERT_OK(average);
  EXPECT_EQ(cache.last_path(), P::kRebuilt);
  ExpectMatchesScratch(**average, {members_[7], members_[8]});
}

TEST_F(WindowSumCacheTest, BudgetEvictsAndOversizedSumsAreNotHeld) {
  // Each sum: (40 + 8 + 21) fp32 values accumulated in fp64 = 552 bytes.
  WindowSumCache one({/*budget_bytes=*/600, 8});
  ASSERT_OK(one.Average("run_a", Window(0, 2)));
  EXPECT_EQ(one.held_bytes(), 552u);
  ASSERT_OK(one.Average("run_b", Window(2, 2)));
  ASSERT_EQ(one.Held().size(), 1u);
  EXPECT_EQ(one.Held()[0].run, "run_b");
  ASSERT_OK(one.Average("run_b", Window(3, 2)));
  EXPECT_EQ(one.last_path(), WindowSumCache::Path::kSlid);

  WindowSumCache tiny({/*budget_bytes=*/100, 8});
  auto average = tiny.Average("run", Window(0, 3));
  ASSERT_OK(average);
  EXPECT_EQ(tiny.last_path(), WindowSumCache::Path::kUncached);
  EXPECT_TRUE(tiny.Held().empty());
  ExpectMatchesScratch(**average, Window(0, 3));
}

TEST(ParameterDriftTest, KnownPair) {
  const std::string dir = ScratchDir("ckpts");
  // from: x = [1, 2], y = [[2]]          ||from|| = sqrt(1 + 4 + 4) = 3
  // to:   x = [1, 5], y = [[6]]          diff = (0, 3, 4): l2 = 5, relative = 5/3
  WriteTestCheckpoint(dir + "/from", kConfig,
                      {{"x", at::tensor({1.0f, 2.0f})},
                       {"y", at::tensor({2.0f}).view({1, 1})},
                       {"steps", at::tensor({int64_t{7}})}});
  WriteTestCheckpoint(dir + "/to", kConfig,
                      {{"x", at::tensor({1.0f, 5.0f})},
                       {"y", at::tensor({6.0f}).view({1, 1})},
                       {"steps", at::tensor({int64_t{900}})}});
  auto drift = ComputeParameterDrift(dir + "/from", dir + "/to");
  ASSERT_OK(drift);
  EXPECT_DOUBLE_EQ(drift->l2, 5.0);
  EXPECT_DOUBLE_EQ(drift->relative, 5.0 / 3.0);

  auto same = ComputeParameterDrift(dir + "/from", dir + "/from");
  ASSERT_OK(same);
  EXPECT_EQ(same->l2, 0.0);
  EXPECT_EQ(same->relative, 0.0);

  WriteTestCheckpoint(dir + "/other", kConfig, {{"x", at::tensor({1.0f, 2.0f, 3.0f})},
                                               {"y", at::tensor({2.0f}).view({1, 1})},
                                               {"steps", at::tensor({int64_t{7}})}});
  EXPECT_THAT(ComputeParameterDrift(dir + "/from", dir + "/other"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("'x'")));
}

// ---- The offline `average` command on a real (tiny) Llama model ----

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

// The gqa fixture with every weight perturbed by `scale` · N(0, 1) noise, plus the tokenizer.
std::string PerturbedFixture(const std::string& dir, uint64_t seed, double scale) {
  auto reader = CheckpointReader::Open(LlamaFixture("gqa"));
  EXPECT_OK(reader);
  at::manual_seed(seed);
  NamedTensors tensors;
  for (const std::string& name : (*reader)->TensorNames()) {
    at::Tensor t = *(*reader)->Tensor(name);
    tensors.emplace_back(name, t + scale * at::randn_like(t));
  }
  WriteTestCheckpoint(dir, (*reader)->config_json(), tensors);
  std::filesystem::copy_file(TokenizerFixture(), dir + "/tokenizer.model");
  return dir;
}

TEST(AverageCommandTest, OutputLoadsAndScoresLikeTheInMemoryAverage) {
  ASSERT_OK(ConfigureThreads(1));  // the same reduction order in every forward pass
  const std::string dir = ScratchDir("ckpts");
  const std::vector<std::string> members = {PerturbedFixture(dir + "/step_100", 1, 0.02),
                                            PerturbedFixture(dir + "/step_200", 2, 0.02),
                                            PerturbedFixture(dir + "/step_300", 3, 0.02)};
  std::vector<std::string> args;
  for (const std::string& m : members) args.insert(args.end(), {"--checkpoint", m});
  const std::vector<int64_t> tokens = {1, 17, 42, 99, 5, 300, 7, 8};

  auto in_memory = AverageCheckpoints(members);
  ASSERT_OK(in_memory);
  auto model = LoadLanguageModel(**in_memory);
  ASSERT_OK(model);
  auto expected = TokenLogprobs(**model, tokens);
  ASSERT_OK(expected);

  for (int shards : {1, 2}) {
    const std::string out = dir + "/avg_" + std::to_string(shards);
    std::vector<std::string> command = args;
    command.insert(command.end(), {"--out", out, "--shards", std::to_string(shards), "--threads", "1"});
    CommandResult r = RunCommand(RunAverageCommand, command);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("average of 3 checkpoints"));
    EXPECT_TRUE(std::filesystem::exists(out + "/tokenizer.model"));
    EXPECT_EQ(std::filesystem::exists(out + "/model.safetensors.index.json"), shards > 1);
    EXPECT_EQ(ReadFileOrEmpty(out + "/config.json"), ReadFileOrEmpty(members.back() + "/config.json"));

    auto reader = CheckpointReader::Open(out);
    ASSERT_OK(reader);
    for (const std::string& name : (*reader)->TensorNames()) {
      EXPECT_TRUE(SameBytes(*(*reader)->MappedTensor(name), Stored(**in_memory, name))) << name;
    }
    auto loaded = LoadLanguageModel(**reader);
    ASSERT_OK(loaded);
    auto got = TokenLogprobs(**loaded, tokens);
    ASSERT_OK(got);
    for (size_t i = 1; i < tokens.size(); ++i) EXPECT_EQ((*got)[i], (*expected)[i]) << i;

    // The offline commands run on it.
    std::string token_list;
    for (int64_t t : tokens) token_list += (token_list.empty() ? "" : ",") + std::to_string(t);
    CommandResult lp = RunCommand(RunLogprobsCommand,
                                  {"--checkpoint", out, "--tokens", token_list, "--json", "--threads", "1"});
    ASSERT_EQ(lp.exit_code, 0) << lp.err;
    nlohmann::json json = nlohmann::json::parse(lp.out);
    for (size_t i = 1; i < tokens.size(); ++i) {
      EXPECT_NEAR(json["token_logprobs"][i].get<double>(), (*expected)[i], 1e-9) << i;
    }
  }
  WriteFile(dir + "/mc.jsonl",
            R"({"id": "a", "query": "The capital of Japan is ", "choices": ["Tokyo.", "Paris."], "gold": 0}
)");
  CommandResult eval = RunCommand(RunEvalCommand, {"--checkpoint", dir + "/avg_1", "--task",
                                                   dir + "/mc.jsonl", "--json", "--threads", "1"});
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  EXPECT_EQ(nlohmann::json::parse(eval.out)["task"], "mc");

  // Existing output folders are never overwritten; bad usage is exit code 2.
  std::vector<std::string> again = args;
  again.insert(again.end(), {"--out", dir + "/avg_1"});
  CommandResult exists = RunCommand(RunAverageCommand, again);
  EXPECT_EQ(exists.exit_code, 1);
  EXPECT_THAT(exists.err, HasSubstr("already exists"));
  EXPECT_EQ(RunCommand(RunAverageCommand, {"--out", dir + "/x"}).exit_code, 2);
  EXPECT_EQ(RunCommand(RunAverageCommand, {"--help"}).exit_code, 0);
  std::vector<std::string> zero = args;
  zero.insert(zero.end(), {"--out", dir + "/x", "--shards", "0"});
  EXPECT_EQ(RunCommand(RunAverageCommand, zero).exit_code, 2);
  EXPECT_FALSE(std::filesystem::exists(dir + "/x"));
}

}  // namespace
}  // namespace steadyeval
