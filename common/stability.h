// The mathematics of DESIGN §3: Mean Total Variation, example-level MTV, the Instability
// Score, step ranges, ensembles, and the incremental index that keeps per-pair figures
// for one (run, task, variant) sequence.
//
// Everything here is pure computation (no storage, no clock): the coordinator feeds it
// points loaded from RocksDB, and property tests compare the incremental index with the
// brute-force functions on random insertion orders. Thread-compatible: callers lock.
#ifndef STEADYEVAL_COMMON_STABILITY_H_
#define STEADYEVAL_COMMON_STABILITY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace steadyeval {

// One evaluated point of a sequence: the task score s(t), each example's normalised
// output y_e(t) and per-example primary-metric value c_e(t) (empty for corpus-level
// metrics, whose example MTV is null).
struct StepPoint {
  uint64_t step = 0;
  double score = 0;
  std::vector<std::string> outputs;
  std::vector<double> example_scores;
};

// Figures for the adjacent pair (a, b), a.step < b.step. Both points must have the same
// number of examples (else INVALID_ARGUMENT). A point's examples are its outputs; its
// example_scores are either empty or one per output (else INVALID_ARGUMENT). With no
// examples a pair contributes 0 flips and has no example scores.
struct PairFigures {
  uint64_t from_step = 0;
  uint64_t to_step = 0;
  double abs_delta_score = 0;
  double sum_abs_delta_example = 0;  // 0 when !has_example_scores
  uint32_t flips = 0;
  uint32_t examples = 0;
  bool has_example_scores = false;
};
absl::StatusOr<PairFigures> ComputePair(const StepPoint& a, const StepPoint& b);

struct StabilityFigures {
  uint32_t points = 0;                // m: points in range
  std::optional<double> mean;         // mean of s(t) over the points; null when m = 0
  std::optional<double> mtv;          // null when m < 2
  std::optional<double> example_mtv;  // null when m < 2 or no per-example scores
  std::optional<double> instability;  // IS; null when m < 2
};

// Brute force from the definitions over the points whose step is in [from, to]
// (inclusive). `points` in any order, steps unique.
absl::StatusOr<StabilityFigures> ComputeStability(const std::vector<StepPoint>& points,
                                                  uint64_t from, uint64_t to);

// MTV of a bare score curve (categories and AVG: the curve of means, DESIGN §3).
// `curve` maps step → score; points outside [from, to] are ignored; null when m < 2.
std::optional<double> CurveMtv(const std::map<uint64_t, double>& curve, uint64_t from, uint64_t to);

// ---- ranges ---------------------------------------------------------------------------

struct RangeSpec {
  enum class Kind { kDefault, kLastPoints, kLastFraction, kSteps };
  Kind kind = Kind::kDefault;
  uint32_t last_points = 0;   // kLastPoints: K
  double last_fraction = 0;   // kLastFraction: P in (0, 1]
  uint64_t from_step = 0;     // kSteps
  uint64_t to_step = 0;
};

struct StepRangeResult {
  uint64_t from_step = 0;
  uint64_t to_step = 0;
};

// Turns `spec` into an inclusive step range using the raw sequence's steps (any order).
// Default: the last max(2, ceil(0.2·m_raw)) points; kLastFraction likewise with P;
// kLastPoints the last min(K, m_raw); kSteps as given (A <= B, else INVALID_ARGUMENT).
// Returns nullopt when the raw sequence is empty (except kSteps, which needs no points).
absl::StatusOr<std::optional<StepRangeResult>> ResolveRange(const RangeSpec& spec,
                                                            std::vector<uint64_t> raw_steps);

// ---- ensembles ------------------------------------------------------------------------

// ens@n for one example: the majority of the members' normalised outputs; ties go to the
// newest member whose output is among the tied ones. `members` oldest first, non-empty.
std::string MajorityVote(const std::vector<std::string>& members);

// ens-soft@n for one example: per member, softmax over its option scores (the task's
// primary-metric scores: summed or length-normalised log-likelihoods); average the
// distributions over members; argmax, ties to the lower option index. Every member must
// have the same number of options (else INVALID_ARGUMENT).
absl::StatusOr<int> SoftVote(const std::vector<std::vector<double>>& member_option_scores);

// ---- incremental index ----------------------------------------------------------------

// Keeps, for one sequence, each point's score and each adjacent pair's figures in a
// balanced tree keyed by step with subtree sums, so inserting a step anywhere (also
// between two existing ones, which replaces one pair with two) and querying any step
// range are O(log m). Points' example data is not kept: Upsert loads the neighbours it
// needs through a loader (the coordinator reads them from RocksDB).
class StabilityIndex {
 public:
  using PointLoader = std::function<absl::StatusOr<StepPoint>(uint64_t step)>;

  // removed_pairs: the to_step keys of every stored pair the operation dropped or
  // recomputed; added_pairs: the new figures. A key may be in both (the pair under it
  // changed, e.g. (pred, succ) → (new, succ)): apply the removals first, then the additions.
  struct Change {
    std::vector<uint64_t> removed_pairs;  // keyed by to_step
    std::vector<PairFigures> added_pairs;
  };

  StabilityIndex();
  ~StabilityIndex();
  StabilityIndex(StabilityIndex&&) noexcept;
  StabilityIndex& operator=(StabilityIndex&&) noexcept;

  // Inserts `point` or replaces the point at its step, recomputing the pairs with its
  // predecessor and successor (loaded with `loader`). Returns the pair changes so the
  // caller can persist them. On error nothing changes.
  absl::StatusOr<Change> Upsert(const StepPoint& point, const PointLoader& loader);

  // Removes the point at `step` (a superseded window); its two pairs become one.
  // NOT_FOUND when `step` is not in the sequence. On error nothing changes.
  absl::StatusOr<Change> Erase(uint64_t step, const PointLoader& loader);

  // Start-up: restores persisted points and pairs without recomputation.
  void RestorePoint(uint64_t step, double score);
  void RestorePair(const PairFigures& pair);

  // Figures over [from, to] (inclusive), equal to ComputeStability on the same points.
  StabilityFigures Query(uint64_t from, uint64_t to) const;

  size_t size() const;
  std::vector<uint64_t> Steps() const;  // ascending
  std::optional<uint64_t> Predecessor(uint64_t step) const;  // largest step < `step`
  std::optional<uint64_t> Successor(uint64_t step) const;    // smallest step > `step`
  std::optional<double> ScoreAt(uint64_t step) const;

 private:
  struct Tree;
  std::unique_ptr<Tree> tree_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_STABILITY_H_
