#include "common/stability.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Optional;
using ::steadyeval::testing::StatusIs;

constexpr double kTolerance = 1e-12;
constexpr uint64_t kMaxStep = std::numeric_limits<uint64_t>::max();

StepPoint Point(uint64_t step, double score, std::vector<std::string> outputs,
                std::vector<double> example_scores = {}) {
  StepPoint p;
  p.step = step;
  p.score = score;
  p.outputs = std::move(outputs);
  p.example_scores = std::move(example_scores);
  return p;
}

// Three char_f1-style points (|E| = 2); hand-computed figures in the tests below.
//   step  score  outputs   c_e
//   10    0.5    A B       0.2 0.8
//   20    0.6    A C       0.6 0.6
//   30    0.5    B D       1.0 0.0
std::vector<StepPoint> WorkedPoints() {
  return {Point(10, 0.5, {"A", "B"}, {0.2, 0.8}), Point(20, 0.6, {"A", "C"}, {0.6, 0.6}),
          Point(30, 0.5, {"B", "D"}, {1.0, 0.0})};
}

void ExpectOptionalNear(const std::optional<double>& actual, const std::optional<double>& expected,
                        const std::string& what) {
  ASSERT_EQ(actual.has_value(), expected.has_value()) << what;
  if (expected.has_value()) {
    EXPECT_NEAR(*actual, *expected, kTolerance) << what;
  }
}

void ExpectFiguresNear(const StabilityFigures& actual, const StabilityFigures& expected,
                       const std::string& context) {
  EXPECT_EQ(actual.points, expected.points) << context;
  ExpectOptionalNear(actual.mean, expected.mean, context + " mean");
  ExpectOptionalNear(actual.mtv, expected.mtv, context + " mtv");
  ExpectOptionalNear(actual.example_mtv, expected.example_mtv, context + " example_mtv");
  ExpectOptionalNear(actual.instability, expected.instability, context + " instability");
}

StabilityIndex::PointLoader MapLoader(const std::map<uint64_t, StepPoint>& points) {
  return [&points](uint64_t step) -> absl::StatusOr<StepPoint> {
    auto it = points.find(step);
    if (it == points.end()) return absl::NotFoundError(absl::StrCat("no point at ", step));
    return it->second;
  };
}

// ---- worked examples ------------------------------------------------------------------

TEST(ComputeStabilityTest, WorkedExample) {
  // MTV = (|0.6-0.5| + |0.5-0.6|) / 2 = 0.1
  // example MTV = 1/2 [ (0.4 + 0.4)/2 + (0.2 + 0.6)/2 ] = 0.4
  // IS = ( 1/2 + 2/2 ) / 2 = 0.75; mean = 1.6 / 3
  auto figures = ComputeStability(WorkedPoints(), 0, 100);
  ASSERT_OK(figures);
  EXPECT_EQ(figures->points, 3u);
  EXPECT_THAT(figures->mean, Optional(DoubleNear(1.6 / 3, kTolerance)));
  EXPECT_THAT(figures->mtv, Optional(DoubleNear(0.1, kTolerance)));
  EXPECT_THAT(figures->example_mtv, Optional(DoubleNear(0.4, kTolerance)));
  EXPECT_THAT(figures->instability, Optional(DoubleNear(0.75, kTolerance)));
}

TEST(ComputeStabilityTest, RangeIsInclusiveInSteps) {
  // [10, 20]: MTV 0.1, example MTV (0.4 + 0.2)/2 = 0.3, IS 1/2, mean 0.55.
  auto figures = ComputeStability(WorkedPoints(), 10, 20);
  ASSERT_OK(figures);
  EXPECT_EQ(figures->points, 2u);
  EXPECT_THAT(figures->mean, Optional(DoubleNear(0.55, kTolerance)));
  EXPECT_THAT(figures->mtv, Optional(DoubleNear(0.1, kTolerance)));
  EXPECT_THAT(figures->example_mtv, Optional(DoubleNear(0.3, kTolerance)));
  EXPECT_THAT(figures->instability, Optional(DoubleNear(0.5, kTolerance)));
}

TEST(ComputeStabilityTest, FewerThanTwoPointsGiveNullNotZero) {
  auto one = ComputeStability(WorkedPoints(), 15, 25);
  ASSERT_OK(one);
  EXPECT_EQ(one->points, 1u);
  EXPECT_THAT(one->mean, Optional(DoubleNear(0.6, kTolerance)));
  EXPECT_EQ(one->mtv, std::nullopt);
  EXPECT_EQ(one->example_mtv, std::nullopt);
  EXPECT_EQ(one->instability, std::nullopt);

  auto none = ComputeStability(WorkedPoints(), 40, 50);
  ASSERT_OK(none);
  EXPECT_EQ(none->points, 0u);
  EXPECT_EQ(none->mean, std::nullopt);
  EXPECT_EQ(none->mtv, std::nullopt);

  auto reversed = ComputeStability(WorkedPoints(), 30, 10);
  ASSERT_OK(reversed);
  EXPECT_EQ(reversed->points, 0u);
}

TEST(ComputeStabilityTest, CorpusLevelMetricsHaveNoExampleMtv) {
  // BLEU-like: scores on a 0-100 scale, outputs but no per-example values.
  std::vector<StepPoint> points = {Point(1, 20.0, {"x", "y"}), Point(2, 23.0, {"x", "z"}),
                                   Point(3, 21.5, {"x", "z"})};
  auto figures = ComputeStability(points, 0, 10);
  ASSERT_OK(figures);
  EXPECT_THAT(figures->mtv, Optional(DoubleNear((3.0 + 1.5) / 2, kTolerance)));
  EXPECT_EQ(figures->example_mtv, std::nullopt);
  EXPECT_THAT(figures->instability, Optional(DoubleNear((0.5 + 0.0) / 2, kTolerance)));
}

TEST(ComputeStabilityTest, OnePointWithoutExampleScoresNullsExampleMtvOnlyWhereItIs) {
  std::vector<StepPoint> points = WorkedPoints();
  points.push_back(Point(40, 0.5, {"B", "D"}));
  auto with = ComputeStability(points, 0, 100);
  ASSERT_OK(with);
  EXPECT_EQ(with->example_mtv, std::nullopt);
  EXPECT_THAT(with->mtv, Optional(DoubleNear(0.2 / 3, kTolerance)));
  auto without = ComputeStability(points, 0, 30);
  ASSERT_OK(without);
  EXPECT_THAT(without->example_mtv, Optional(DoubleNear(0.4, kTolerance)));
}

TEST(ComputeStabilityTest, PointsInAnyOrder) {
  std::vector<StepPoint> points = WorkedPoints();
  std::reverse(points.begin(), points.end());
  auto figures = ComputeStability(points, 0, 100);
  ASSERT_OK(figures);
  EXPECT_THAT(figures->mtv, Optional(DoubleNear(0.1, kTolerance)));
  EXPECT_THAT(figures->instability, Optional(DoubleNear(0.75, kTolerance)));
}

TEST(ComputeStabilityTest, RejectsDuplicateStepsAndMismatchedExamples) {
  std::vector<StepPoint> duplicate = WorkedPoints();
  duplicate.push_back(Point(20, 0.1, {"A", "B"}));
  EXPECT_THAT(ComputeStability(duplicate, 0, 100),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("step 20")));
  std::vector<StepPoint> mismatched = WorkedPoints();
  mismatched.push_back(Point(40, 0.1, {"A"}));
  EXPECT_THAT(ComputeStability(mismatched, 0, 100),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("examples")));
}

TEST(ComputePairTest, WorkedPair) {
  std::vector<StepPoint> p = WorkedPoints();
  auto pair = ComputePair(p[1], p[2]);
  ASSERT_OK(pair);
  EXPECT_EQ(pair->from_step, 20u);
  EXPECT_EQ(pair->to_step, 30u);
  EXPECT_NEAR(pair->abs_delta_score, 0.1, kTolerance);
  EXPECT_NEAR(pair->sum_abs_delta_example, 0.4 + 0.6, kTolerance);
  EXPECT_EQ(pair->flips, 2u);
  EXPECT_EQ(pair->examples, 2u);
  EXPECT_TRUE(pair->has_example_scores);

  auto corpus = ComputePair(Point(1, 3, {"a"}), Point(2, 1, {"a"}));
  ASSERT_OK(corpus);
  EXPECT_FALSE(corpus->has_example_scores);
  EXPECT_EQ(corpus->sum_abs_delta_example, 0);
  EXPECT_EQ(corpus->flips, 0u);
  EXPECT_NEAR(corpus->abs_delta_score, 2, kTolerance);
}

TEST(ComputePairTest, RejectsBadPairs) {
  std::vector<StepPoint> p = WorkedPoints();
  EXPECT_THAT(ComputePair(p[1], p[0]), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("increasing")));
  EXPECT_THAT(ComputePair(p[0], p[0]), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("increasing")));
  EXPECT_THAT(ComputePair(p[0], Point(40, 0, {"A"})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("examples")));
  EXPECT_THAT(ComputePair(p[0], Point(40, 0, {"A", "B"}, {1})),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("example scores")));
}

TEST(CurveMtvTest, WorkedCurve) {
  std::map<uint64_t, double> curve = {{1, 0.2}, {2, 0.5}, {3, 0.1}};
  EXPECT_THAT(CurveMtv(curve, 0, 10), Optional(DoubleNear(0.35, kTolerance)));
  EXPECT_THAT(CurveMtv(curve, 2, 3), Optional(DoubleNear(0.4, kTolerance)));
  EXPECT_EQ(CurveMtv(curve, 2, 2), std::nullopt);
  EXPECT_EQ(CurveMtv(curve, 4, 9), std::nullopt);
  EXPECT_EQ(CurveMtv(curve, 3, 1), std::nullopt);
  EXPECT_EQ(CurveMtv({}, 0, kMaxStep), std::nullopt);
}

TEST(StabilityIndexTest, WorkedExampleMatches) {
  std::map<uint64_t, StepPoint> stored;
  StabilityIndex index;
  for (const StepPoint& p : WorkedPoints()) {
    ASSERT_OK(index.Upsert(p, MapLoader(stored)));
    stored[p.step] = p;
  }
  StabilityFigures figures = index.Query(0, 100);
  EXPECT_EQ(figures.points, 3u);
  EXPECT_THAT(figures.mtv, Optional(DoubleNear(0.1, kTolerance)));
  EXPECT_THAT(figures.example_mtv, Optional(DoubleNear(0.4, kTolerance)));
  EXPECT_THAT(figures.instability, Optional(DoubleNear(0.75, kTolerance)));
  StabilityFigures one = index.Query(20, 29);
  EXPECT_EQ(one.points, 1u);
  EXPECT_THAT(one.mean, Optional(DoubleNear(0.6, kTolerance)));
  EXPECT_EQ(one.mtv, std::nullopt);
  EXPECT_EQ(one.instability, std::nullopt);
  EXPECT_EQ(index.Query(31, kMaxStep).points, 0u);
  EXPECT_EQ(index.Query(31, kMaxStep).mean, std::nullopt);
}

TEST(StabilityIndexTest, InsertBetweenReplacesOnePairWithTwo) {
  std::map<uint64_t, StepPoint> stored;
  StabilityIndex index;
  std::vector<StepPoint> p = WorkedPoints();
  for (int i : {0, 2}) {
    ASSERT_OK(index.Upsert(p[i], MapLoader(stored)));
    stored[p[i].step] = p[i];
  }
  auto change = index.Upsert(p[1], MapLoader(stored));
  ASSERT_OK(change);
  EXPECT_THAT(change->removed_pairs, ElementsAre(30u));  // (10, 30)
  ASSERT_EQ(change->added_pairs.size(), 2u);
  EXPECT_EQ(change->added_pairs[0].from_step, 10u);
  EXPECT_EQ(change->added_pairs[0].to_step, 20u);
  EXPECT_EQ(change->added_pairs[1].from_step, 20u);
  EXPECT_EQ(change->added_pairs[1].to_step, 30u);
  stored[20] = p[1];

  auto erased = index.Erase(20, MapLoader(stored));
  ASSERT_OK(erased);
  EXPECT_THAT(erased->removed_pairs, ElementsAre(20u, 30u));
  ASSERT_EQ(erased->added_pairs.size(), 1u);
  EXPECT_EQ(erased->added_pairs[0].from_step, 10u);
  EXPECT_EQ(erased->added_pairs[0].to_step, 30u);
  EXPECT_THAT(index.Erase(20, MapLoader(stored)), StatusIs(absl::StatusCode::kNotFound, HasSubstr("20")));
}

TEST(StabilityIndexTest, ReplacingAPointRecomputesBothPairs) {
  std::map<uint64_t, StepPoint> stored;
  StabilityIndex index;
  for (const StepPoint& p : WorkedPoints()) {
    ASSERT_OK(index.Upsert(p, MapLoader(stored)));
    stored[p.step] = p;
  }
  StepPoint replacement = Point(20, 0.5, {"A", "B"}, {0.2, 0.8});  // equal to step 10
  auto change = index.Upsert(replacement, MapLoader(stored));
  ASSERT_OK(change);
  EXPECT_THAT(change->removed_pairs, ElementsAre(20u, 30u));
  ASSERT_EQ(change->added_pairs.size(), 2u);
  EXPECT_EQ(change->added_pairs[0].flips, 0u);
  EXPECT_EQ(change->added_pairs[1].flips, 2u);
  EXPECT_THAT(index.ScoreAt(20), Optional(0.5));
  EXPECT_EQ(index.size(), 3u);
  // MTV = (0 + 0) / 2; IS = (0 + 1) / 2; example MTV = 1/2 [(0 + 0.8)/2 + (0 + 0.8)/2].
  StabilityFigures figures = index.Query(0, kMaxStep);
  EXPECT_THAT(figures.mtv, Optional(DoubleNear(0.0, kTolerance)));
  EXPECT_THAT(figures.instability, Optional(DoubleNear(0.5, kTolerance)));
  EXPECT_THAT(figures.example_mtv, Optional(DoubleNear(0.4, kTolerance)));
}

TEST(StabilityIndexTest, LoaderErrorChangesNothing) {
  std::map<uint64_t, StepPoint> stored;
  StabilityIndex index;
  for (const StepPoint& p : WorkedPoints()) {
    ASSERT_OK(index.Upsert(p, MapLoader(stored)));
    stored[p.step] = p;
  }
  StabilityIndex::PointLoader fail_on_30 = [&](uint64_t step) -> absl::StatusOr<StepPoint> {
    if (step == 30) return absl::UnavailableError("disk went away");
    return stored.at(step);
  };
  const StabilityFigures before = index.Query(0, kMaxStep);
  EXPECT_THAT(index.Upsert(Point(25, 0.9, {"A", "A"}, {1, 1}), fail_on_30),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("step 30")));
  EXPECT_THAT(index.Upsert(Point(20, 0.9, {"A", "A"}, {1, 1}), fail_on_30),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("disk went away")));
  EXPECT_THAT(index.Erase(20, fail_on_30), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(index.Upsert(Point(25, 0.9, {"A"}), MapLoader(stored)),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(index.Upsert(Point(99, 0.9, {"A", "B"}, {1}), MapLoader(stored)),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(index.Steps(), ElementsAre(10u, 20u, 30u));
  EXPECT_THAT(index.ScoreAt(20), Optional(0.6));
  ExpectFiguresNear(index.Query(0, kMaxStep), before, "after failed operations");
}

TEST(StabilityIndexTest, EmptyAndSingle) {
  StabilityIndex index;
  EXPECT_EQ(index.size(), 0u);
  EXPECT_TRUE(index.Steps().empty());
  EXPECT_EQ(index.Predecessor(5), std::nullopt);
  EXPECT_EQ(index.Successor(5), std::nullopt);
  EXPECT_EQ(index.ScoreAt(5), std::nullopt);
  EXPECT_EQ(index.Query(0, kMaxStep).points, 0u);
  StabilityIndex::PointLoader never = [](uint64_t) -> absl::StatusOr<StepPoint> {
    return absl::InternalError("must not be called");
  };
  auto change = index.Upsert(Point(kMaxStep, 0.25, {}), never);
  ASSERT_OK(change);
  EXPECT_TRUE(change->removed_pairs.empty());
  EXPECT_TRUE(change->added_pairs.empty());
  EXPECT_THAT(index.Query(0, kMaxStep).mean, Optional(0.25));
  EXPECT_EQ(index.Query(0, kMaxStep).mtv, std::nullopt);
  StabilityIndex moved = std::move(index);
  EXPECT_THAT(moved.Steps(), ElementsAre(kMaxStep));
  ASSERT_OK(moved.Erase(kMaxStep, never));
  EXPECT_EQ(moved.size(), 0u);
}

// ---- the property: incremental == brute force on random orders --------------------------

struct SequenceConfig {
  size_t examples = 3;
  enum class ExampleScores { kAll, kNone, kMixed } example_scores = ExampleScores::kAll;
  bool binary = true;       // exact-match style c_e in {0, 1}; else char_f1 style in [0, 1]
  uint64_t step_universe = 50;
  bool extreme_steps = false;  // also 0, 1 and steps next to UINT64_MAX
};

class RandomSequence {
 public:
  RandomSequence(uint64_t seed) : rng_(seed) {
    config_.examples = Pick<size_t>({0, 1, 2, 3, 6});
    config_.example_scores = Pick<SequenceConfig::ExampleScores>({SequenceConfig::ExampleScores::kAll,
                                   SequenceConfig::ExampleScores::kAll,
                                   SequenceConfig::ExampleScores::kNone,
                                   SequenceConfig::ExampleScores::kMixed});
    config_.binary = Chance(0.5);
    config_.step_universe = Pick<uint64_t>({4, 12, 60, 400});
    config_.extreme_steps = Chance(0.25);
  }

  std::mt19937_64& rng() { return rng_; }
  const SequenceConfig& config() const { return config_; }

  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  uint64_t Below(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }
  template <typename T>
  T Pick(const std::vector<T>& options) {
    return options[Below(options.size())];
  }

  uint64_t RandomStep() {
    if (config_.extreme_steps && Chance(0.2)) {
      return Pick<uint64_t>({0, 1, kMaxStep - 1, kMaxStep, kMaxStep / 2});
    }
    return Below(config_.step_universe) * 10;
  }

  StepPoint RandomPoint(uint64_t step) {
    StepPoint p;
    p.step = step;
    for (size_t e = 0; e < config_.examples; ++e) p.outputs.push_back(Pick<std::string>({"A", "B", "C"}));
    const bool with_scores =
        config_.examples > 0 &&
        (config_.example_scores == SequenceConfig::ExampleScores::kAll ||
         (config_.example_scores == SequenceConfig::ExampleScores::kMixed && Chance(0.8)));
    if (with_scores) {
      double sum = 0;
      for (size_t e = 0; e < config_.examples; ++e) {
        const double c = config_.binary ? static_cast<double>(Below(2))
                                        : std::uniform_real_distribution<double>(0, 1)(rng_);
        p.example_scores.push_back(c);
        sum += c;
      }
      p.score = sum / config_.examples;
    } else {
      p.score = std::uniform_real_distribution<double>(0, 100)(rng_);
    }
    return p;
  }

 private:
  std::mt19937_64 rng_;
  SequenceConfig config_;
};

std::vector<StepPoint> Values(const std::map<uint64_t, StepPoint>& points) {
  std::vector<StepPoint> out;
  for (const auto& [step, p] : points) out.push_back(p);
  return out;
}

std::vector<uint64_t> Keys(const std::map<uint64_t, StepPoint>& points) {
  std::vector<uint64_t> out;
  for (const auto& [step, p] : points) out.push_back(step);
  return out;
}

void ExpectQueryMatchesBruteForce(const StabilityIndex& index,
                                  const std::map<uint64_t, StepPoint>& stored, uint64_t from,
                                  uint64_t to, const std::string& context) {
  auto expected = ComputeStability(Values(stored), from, to);
  ASSERT_OK(expected);
  ExpectFiguresNear(index.Query(from, to), *expected,
                    absl::StrCat(context, " range [", from, ", ", to, "]"));
}

// The persisted pairs (as the caller keeps them from Change) equal the adjacent pairs.
void ExpectPersistedPairsAreAdjacentPairs(const std::map<uint64_t, PairFigures>& persisted,
                                          const std::map<uint64_t, StepPoint>& stored,
                                          const std::string& context) {
  std::map<uint64_t, PairFigures> expected;
  for (auto it = stored.begin(); it != stored.end() && std::next(it) != stored.end(); ++it) {
    auto pair = ComputePair(it->second, std::next(it)->second);
    ASSERT_OK(pair);
    expected[pair->to_step] = *pair;
  }
  ASSERT_EQ(persisted.size(), expected.size()) << context;
  for (const auto& [key, pair] : expected) {
    auto it = persisted.find(key);
    ASSERT_NE(it, persisted.end()) << context << " missing pair to " << key;
    EXPECT_EQ(it->second.from_step, pair.from_step) << context;
    EXPECT_EQ(it->second.abs_delta_score, pair.abs_delta_score) << context;
    EXPECT_EQ(it->second.sum_abs_delta_example, pair.sum_abs_delta_example) << context;
    EXPECT_EQ(it->second.flips, pair.flips) << context;
    EXPECT_EQ(it->second.examples, pair.examples) << context;
    EXPECT_EQ(it->second.has_example_scores, pair.has_example_scores) << context;
  }
}

void ApplyChange(const StabilityIndex::Change& change, std::map<uint64_t, PairFigures>* persisted) {
  for (uint64_t key : change.removed_pairs) persisted->erase(key);
  for (const PairFigures& pair : change.added_pairs) (*persisted)[pair.to_step] = pair;
}

void CheckEverything(RandomSequence& random, const StabilityIndex& index,
                     const std::map<uint64_t, StepPoint>& stored, const std::string& context) {
  ASSERT_EQ(index.size(), stored.size()) << context;
  ASSERT_EQ(index.Steps(), Keys(stored)) << context;
  for (int probe = 0; probe < 4; ++probe) {
    const uint64_t step = random.RandomStep() + (random.Chance(0.3) ? 1 : 0);
    auto above = stored.upper_bound(step);
    auto at_or_above = stored.lower_bound(step);
    std::optional<uint64_t> successor, predecessor;
    if (above != stored.end()) successor = above->first;
    if (at_or_above != stored.begin()) predecessor = std::prev(at_or_above)->first;
    EXPECT_EQ(index.Successor(step), successor) << context << " successor of " << step;
    EXPECT_EQ(index.Predecessor(step), predecessor) << context << " predecessor of " << step;
    auto it = stored.find(step);
    EXPECT_EQ(index.ScoreAt(step),
              it == stored.end() ? std::nullopt : std::optional<double>(it->second.score))
        << context;
  }

  ExpectQueryMatchesBruteForce(index, stored, 0, kMaxStep, context + " all");
  for (int q = 0; q < 6; ++q) {
    uint64_t a = random.RandomStep(), b = random.RandomStep();
    if (random.Chance(0.85) && a > b) std::swap(a, b);  // sometimes an empty, reversed range
    ExpectQueryMatchesBruteForce(index, stored, a, b, context + " random");
  }
  RangeSpec spec;
  switch (random.Below(3)) {
    case 0:
      spec.kind = RangeSpec::Kind::kDefault;
      break;
    case 1:
      spec.kind = RangeSpec::Kind::kLastPoints;
      spec.last_points = static_cast<uint32_t>(1 + random.Below(8));
      break;
    default:
      spec.kind = RangeSpec::Kind::kLastFraction;
      spec.last_fraction = random.Pick<double>({0.1, 0.2, 0.5, 1.0});
      break;
  }
  auto range = ResolveRange(spec, Keys(stored));
  ASSERT_OK(range);
  ASSERT_EQ(range->has_value(), !stored.empty()) << context;
  if (range->has_value()) {
    ExpectQueryMatchesBruteForce(index, stored, (*range)->from_step, (*range)->to_step,
                                 context + " resolved");
  }
}

TEST(StabilityIndexPropertyTest, IncrementalEqualsBruteForceOnRandomOrders) {
  for (uint64_t seed = 1; seed <= 400; ++seed) {
    RandomSequence random(seed);
    std::map<uint64_t, StepPoint> stored;  // what RocksDB would hold
    std::map<uint64_t, PairFigures> persisted;
    StabilityIndex index;
    size_t loads = 0;
    StabilityIndex::PointLoader loader = [&](uint64_t step) -> absl::StatusOr<StepPoint> {
      ++loads;
      auto it = stored.find(step);
      if (it == stored.end()) return absl::NotFoundError(absl::StrCat("no point at ", step));
      return it->second;
    };

    for (int op = 0; op < 120; ++op) {
      const std::string context = absl::StrCat("seed ", seed, " op ", op);
      const double roll = std::uniform_real_distribution<double>(0, 1)(random.rng());
      loads = 0;
      if (roll < 0.55 || stored.empty()) {  // insert (or replace, when the step exists)
        StepPoint p = random.RandomPoint(random.RandomStep());
        auto change = index.Upsert(p, loader);
        ASSERT_OK(change) << context;
        EXPECT_LE(loads, 2u) << context;
        ApplyChange(*change, &persisted);
        stored[p.step] = p;
      } else if (roll < 0.72) {  // replace an existing step with new values
        auto it = std::next(stored.begin(), random.Below(stored.size()));
        StepPoint p = random.RandomPoint(it->first);
        auto change = index.Upsert(p, loader);
        ASSERT_OK(change) << context;
        ApplyChange(*change, &persisted);
        stored[p.step] = p;
      } else if (roll < 0.9) {  // erase (a superseded window)
        auto it = std::next(stored.begin(), random.Below(stored.size()));
        const uint64_t step = it->first;
        auto change = index.Erase(step, loader);
        ASSERT_OK(change) << context;
        EXPECT_LE(loads, 2u) << context;
        ApplyChange(*change, &persisted);
        stored.erase(step);
      } else {  // an operation whose loader fails on one neighbour: nothing may change
        const bool erase = random.Chance(0.5);
        const uint64_t step = erase ? std::next(stored.begin(), random.Below(stored.size()))->first
                                    : random.RandomStep();
        auto above = stored.upper_bound(step);
        auto below = stored.lower_bound(step);
        std::vector<uint64_t> neighbours;
        if (above != stored.end()) neighbours.push_back(above->first);
        if (below != stored.begin()) neighbours.push_back(std::prev(below)->first);
        const uint64_t failing = neighbours.empty() ? kMaxStep : random.Pick(neighbours);
        StabilityIndex::PointLoader flaky = [&](uint64_t s) -> absl::StatusOr<StepPoint> {
          if (s == failing) return absl::UnavailableError("injected");
          return loader(s);
        };
        const bool loads_failing = !neighbours.empty() && (!erase || neighbours.size() == 2);
        const StepPoint p = random.RandomPoint(step);
        auto change = erase ? index.Erase(step, flaky) : index.Upsert(p, flaky);
        if (loads_failing) {
          EXPECT_THAT(change, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("injected")))
              << context;
        } else {
          ASSERT_OK(change) << context;
          ApplyChange(*change, &persisted);
          if (erase) {
            stored.erase(step);
          } else {
            stored[step] = p;
          }
        }
      }
      CheckEverything(random, index, stored, context);
      ExpectPersistedPairsAreAdjacentPairs(persisted, stored, context);
      if (::testing::Test::HasFailure()) return;
    }

    // Start-up: rebuild from the persisted points and pairs, in a random order.
    StabilityIndex restored;
    std::vector<std::function<void()>> restores;
    for (const auto& [step, p] : stored) {
      restores.push_back([&restored, step = step, score = p.score] { restored.RestorePoint(step, score); });
    }
    for (const auto& [key, pair] : persisted) {
      restores.push_back([&restored, pair = pair] { restored.RestorePair(pair); });
    }
    std::shuffle(restores.begin(), restores.end(), random.rng());
    for (auto& restore : restores) restore();
    ASSERT_EQ(restored.Steps(), index.Steps());
    for (int q = 0; q < 30; ++q) {
      uint64_t a = random.RandomStep(), b = random.RandomStep();
      if (a > b) std::swap(a, b);
      if (q == 0) a = 0, b = kMaxStep;
      ExpectFiguresNear(restored.Query(a, b), index.Query(a, b),
                        absl::StrCat("seed ", seed, " restored [", a, ", ", b, "]"));
      ExpectQueryMatchesBruteForce(restored, stored, a, b, absl::StrCat("seed ", seed, " restored"));
    }
    if (::testing::Test::HasFailure()) return;
  }
}

TEST(StabilityIndexPropertyTest, MonotoneInsertionOrderStaysShallow) {
  // Ascending and descending step orders are the worst case for an unbalanced tree; a
  // degenerate one would overflow the stack in the recursive split/merge at this size.
  constexpr uint64_t kPoints = 100000;
  std::map<uint64_t, StepPoint> stored;
  StabilityIndex index;
  double tv = 0, previous = 0;
  for (uint64_t i = 0; i < kPoints; ++i) {
    StepPoint p = Point(i, static_cast<double>(i % 7) / 7, {i % 3 == 0 ? "A" : "B"});
    if (i > 0) tv += std::fabs(p.score - previous);
    previous = p.score;
    ASSERT_OK(index.Upsert(p, MapLoader(stored)));
    stored[i] = std::move(p);
  }
  EXPECT_EQ(index.size(), kPoints);
  EXPECT_THAT(index.Query(0, kMaxStep).mtv, Optional(DoubleNear(tv / (kPoints - 1), 1e-9)));
  for (uint64_t i = kPoints; i-- > kPoints / 2;) {
    ASSERT_OK(index.Erase(i, MapLoader(stored)));
    stored.erase(i);
  }
  EXPECT_EQ(index.size(), kPoints / 2);
  ExpectQueryMatchesBruteForce(index, stored, 100, 40000, "after descending erase");
}

// ---- ranges ---------------------------------------------------------------------------

std::vector<uint64_t> HundredsUpTo(uint64_t m) {
  std::vector<uint64_t> steps;
  for (uint64_t i = 1; i <= m; ++i) steps.push_back(i * 100);
  return steps;
}

std::pair<uint64_t, uint64_t> Resolved(const RangeSpec& spec, std::vector<uint64_t> steps) {
  auto range = ResolveRange(spec, std::move(steps));
  EXPECT_OK(range);
  if (!range.ok() || !range->has_value()) return {0, 0};
  return {(*range)->from_step, (*range)->to_step};
}

TEST(ResolveRangeTest, DefaultIsTheLastTwentyPercentButAtLeastTwoPoints) {
  RangeSpec spec;  // kDefault
  EXPECT_EQ(Resolved(spec, HundredsUpTo(1)), std::make_pair(100ul, 100ul));
  EXPECT_EQ(Resolved(spec, HundredsUpTo(2)), std::make_pair(100ul, 200ul));
  EXPECT_EQ(Resolved(spec, HundredsUpTo(5)), std::make_pair(400ul, 500ul));    // ceil(1) -> 2
  EXPECT_EQ(Resolved(spec, HundredsUpTo(10)), std::make_pair(900ul, 1000ul));  // 2
  EXPECT_EQ(Resolved(spec, HundredsUpTo(11)), std::make_pair(900ul, 1100ul));  // ceil(2.2) = 3
  EXPECT_EQ(Resolved(spec, HundredsUpTo(35)), std::make_pair(2900ul, 3500ul));  // 7, not 8
}

TEST(ResolveRangeTest, LastFraction) {
  RangeSpec spec;
  spec.kind = RangeSpec::Kind::kLastFraction;
  spec.last_fraction = 0.2;
  for (uint64_t m : {1, 2, 5, 10, 11, 15, 35, 100}) {
    RangeSpec default_spec;
    EXPECT_EQ(Resolved(spec, HundredsUpTo(m)), Resolved(default_spec, HundredsUpTo(m))) << m;
  }
  spec.last_fraction = 1.0;
  EXPECT_EQ(Resolved(spec, HundredsUpTo(10)), std::make_pair(100ul, 1000ul));
  spec.last_fraction = 0.5;
  EXPECT_EQ(Resolved(spec, HundredsUpTo(11)), std::make_pair(600ul, 1100ul));  // ceil(5.5) = 6
  spec.last_fraction = 0.01;
  EXPECT_EQ(Resolved(spec, HundredsUpTo(10)), std::make_pair(900ul, 1000ul));  // at least 2
  for (double bad : {0.0, -0.1, 1.01, std::nan("")}) {
    spec.last_fraction = bad;
    EXPECT_THAT(ResolveRange(spec, HundredsUpTo(10)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fraction")))
        << bad;
  }
}

TEST(ResolveRangeTest, LastPoints) {
  RangeSpec spec;
  spec.kind = RangeSpec::Kind::kLastPoints;
  spec.last_points = 3;
  EXPECT_EQ(Resolved(spec, HundredsUpTo(10)), std::make_pair(800ul, 1000ul));
  spec.last_points = 1;
  EXPECT_EQ(Resolved(spec, HundredsUpTo(10)), std::make_pair(1000ul, 1000ul));
  spec.last_points = 50;  // more than there are
  EXPECT_EQ(Resolved(spec, HundredsUpTo(5)), std::make_pair(100ul, 500ul));
  EXPECT_EQ(Resolved(spec, HundredsUpTo(1)), std::make_pair(100ul, 100ul));
  spec.last_points = 0;
  EXPECT_THAT(ResolveRange(spec, HundredsUpTo(5)), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0")));
  EXPECT_THAT(ResolveRange(spec, {}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0")));
}

TEST(ResolveRangeTest, StepsAsGiven) {
  RangeSpec spec;
  spec.kind = RangeSpec::Kind::kSteps;
  spec.from_step = 300;
  spec.to_step = 700;
  EXPECT_EQ(Resolved(spec, HundredsUpTo(10)), std::make_pair(300ul, 700ul));
  EXPECT_EQ(Resolved(spec, {}), std::make_pair(300ul, 700ul));  // needs no points
  spec.to_step = 300;
  EXPECT_EQ(Resolved(spec, {}), std::make_pair(300ul, 300ul));
  spec.to_step = 299;
  EXPECT_THAT(ResolveRange(spec, HundredsUpTo(10)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("300:299")));
}

TEST(ResolveRangeTest, EmptyAndUnorderedRawSequences) {
  RangeSpec spec;
  auto empty = ResolveRange(spec, {});
  ASSERT_OK(empty);
  EXPECT_EQ(*empty, std::nullopt);
  spec.kind = RangeSpec::Kind::kLastPoints;
  spec.last_points = 2;
  EXPECT_EQ(Resolved(spec, {500, 100, 300, 500, 200}), std::make_pair(300ul, 500ul));
}

// ---- ensembles ------------------------------------------------------------------------

TEST(MajorityVoteTest, MajorityWins) {
  EXPECT_EQ(MajorityVote({"A"}), "A");
  EXPECT_EQ(MajorityVote({"A", "B", "A"}), "A");
  EXPECT_EQ(MajorityVote({"A", "A", "B"}), "A");  // majority beats newest
  EXPECT_EQ(MajorityVote({"B", "A", "A", "C", "D"}), "A");
}

TEST(MajorityVoteTest, TiesGoToTheNewestMemberAmongTheTied) {
  EXPECT_EQ(MajorityVote({"A", "B"}), "B");
  EXPECT_EQ(MajorityVote({"A", "B", "B", "A"}), "A");
  EXPECT_EQ(MajorityVote({"A", "B", "C", "B", "A", "C"}), "C");
  // C is newest but not among the tied {A, B}: the newest tied member (B at index 3) wins.
  EXPECT_EQ(MajorityVote({"A", "B", "A", "B", "C"}), "B");
  EXPECT_EQ(MajorityVote({"B", "A", "B", "A", "C"}), "A");
}

int Vote(const std::vector<std::vector<double>>& member_option_scores) {
  auto vote = SoftVote(member_option_scores);
  EXPECT_OK(vote);
  return vote.ok() ? *vote : -1;
}

TEST(SoftVoteTest, AveragesDistributionsNotVotes) {
  EXPECT_EQ(Vote({{0.0, 1.0}}), 1);
  // Two members lean to option 0; one is sure of option 1: averaged probabilities favour 1.
  EXPECT_EQ(Vote({{0.0, 10.0}, {1.0, 0.0}, {1.0, 0.0}}), 1);
  EXPECT_EQ(Vote({{-2.0, -1.0, -3.0}, {-2.5, -1.2, -0.9}}), 1);
}

TEST(SoftVoteTest, TiesGoToTheLowerIndex) {
  EXPECT_EQ(Vote({{1.0, 0.0}, {0.0, 1.0}}), 0);
  EXPECT_EQ(Vote({{-3.0, -1.0, -1.0}}), 1);
  EXPECT_EQ(Vote({{5.0, 5.0, 5.0}}), 0);
}

TEST(SoftVoteTest, NumericallyStable) {
  // Log-likelihoods far from zero: naive exp() would overflow or underflow to 0/0.
  EXPECT_EQ(Vote({{1000.0, 1001.0}}), 1);
  EXPECT_EQ(Vote({{-5000.0, -5000.5}, {-7000.0, -6999.9}}), 0);
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(Vote({{-inf, -2.0}, {-1.0, -inf}}), 0);
  EXPECT_EQ(Vote({{-inf, -inf}}), 0);
}

TEST(SoftVoteTest, RejectsMismatchedOptions) {
  EXPECT_THAT(SoftVote({{1.0, 2.0}, {1.0, 2.0, 3.0}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("member 1")));
  EXPECT_THAT(SoftVote({}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no members")));
  EXPECT_THAT(SoftVote({{}}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no options")));
  EXPECT_THAT(SoftVote({{1.0, std::nan("")}}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NaN")));
}

}  // namespace
}  // namespace steadyeval
