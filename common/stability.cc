#include "common/stability.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <unordered_map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace steadyeval {
namespace {

// A point's example count |E|: its outputs; per-example scores, when present, must match.
absl::StatusOr<size_t> ExampleCount(const StepPoint& p) {
  if (!p.example_scores.empty() && p.example_scores.size() != p.outputs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("step ", p.step, ": ", p.example_scores.size(), " example scores for ",
                     p.outputs.size(), " outputs (they must match, or scores be empty)"));
  }
  return p.outputs.size();
}

bool HasExampleScores(const StepPoint& p) { return !p.example_scores.empty(); }

// ceil(x) that ignores floating-point noise just above an integer (0.2 * 35 = 7.000…01).
uint64_t CeilTolerant(double x) {
  const double nearest = std::round(x);
  if (std::fabs(x - nearest) <= 1e-9 * std::max(1.0, std::fabs(x))) {
    return static_cast<uint64_t>(nearest);
  }
  return static_cast<uint64_t>(std::ceil(x));
}

}  // namespace

absl::StatusOr<PairFigures> ComputePair(const StepPoint& a, const StepPoint& b) {
  if (a.step >= b.step) {
    return absl::InvalidArgumentError(
        absl::StrCat("pair (", a.step, ", ", b.step, "): steps must be increasing"));
  }
  ASSIGN_OR_RETURN(const size_t examples_a, ExampleCount(a));
  ASSIGN_OR_RETURN(const size_t examples_b, ExampleCount(b));
  if (examples_a != examples_b) {
    return absl::InvalidArgumentError(
        absl::StrCat("pair (", a.step, ", ", b.step, "): step ", a.step, " has ", examples_a,
                     " examples, step ", b.step, " has ", examples_b,
                     " (were they evaluated on different task versions?)"));
  }
  PairFigures pair;
  pair.from_step = a.step;
  pair.to_step = b.step;
  pair.abs_delta_score = std::fabs(b.score - a.score);
  pair.examples = static_cast<uint32_t>(examples_a);
  pair.has_example_scores = examples_a > 0 && HasExampleScores(a) && HasExampleScores(b);
  for (size_t e = 0; e < examples_a; ++e) {
    if (a.outputs[e] != b.outputs[e]) ++pair.flips;
    if (pair.has_example_scores) {
      pair.sum_abs_delta_example += std::fabs(b.example_scores[e] - a.example_scores[e]);
    }
  }
  return pair;
}

// Written from the definitions (per-example sums outermost), independently of the pair
// decomposition the index uses, so that the two can check each other.
absl::StatusOr<StabilityFigures> ComputeStability(const std::vector<StepPoint>& points,
                                                  uint64_t from, uint64_t to) {
  std::vector<const StepPoint*> in_range;
  for (const StepPoint& p : points) {
    if (p.step >= from && p.step <= to) in_range.push_back(&p);
  }
  std::sort(in_range.begin(), in_range.end(),
            [](const StepPoint* x, const StepPoint* y) { return x->step < y->step; });
  for (size_t i = 1; i < in_range.size(); ++i) {
    if (in_range[i - 1]->step == in_range[i]->step) {
      return absl::InvalidArgumentError(
          absl::StrCat("step ", in_range[i]->step, " appears twice in the sequence"));
    }
  }
  StabilityFigures figures;
  const size_t m = in_range.size();
  figures.points = static_cast<uint32_t>(m);
  if (m == 0) return figures;

  double score_sum = 0;
  for (const StepPoint* p : in_range) score_sum += p->score;
  figures.mean = score_sum / static_cast<double>(m);
  if (m < 2) return figures;

  ASSIGN_OR_RETURN(const size_t examples, ExampleCount(*in_range[0]));
  bool all_have_example_scores = examples > 0;
  for (const StepPoint* p : in_range) {
    ASSIGN_OR_RETURN(const size_t n, ExampleCount(*p));
    if (n != examples) {
      return absl::InvalidArgumentError(
          absl::StrCat("step ", p->step, " has ", n, " examples, step ", in_range[0]->step,
                       " has ", examples, " (were they evaluated on different task versions?)"));
    }
    all_have_example_scores = all_have_example_scores && HasExampleScores(*p);
  }

  const double pairs = static_cast<double>(m - 1);
  double tv = 0;
  for (size_t i = 0; i + 1 < m; ++i) tv += std::fabs(in_range[i + 1]->score - in_range[i]->score);
  figures.mtv = tv / pairs;

  if (all_have_example_scores) {
    double sum_over_examples = 0;
    for (size_t e = 0; e < examples; ++e) {
      double example_tv = 0;
      for (size_t i = 0; i + 1 < m; ++i) {
        example_tv +=
            std::fabs(in_range[i + 1]->example_scores[e] - in_range[i]->example_scores[e]);
      }
      sum_over_examples += example_tv / pairs;
    }
    figures.example_mtv = sum_over_examples / static_cast<double>(examples);
  }

  double flip_fractions = 0;
  if (examples > 0) {
    for (size_t i = 0; i + 1 < m; ++i) {
      size_t flips = 0;
      for (size_t e = 0; e < examples; ++e) {
        if (in_range[i + 1]->outputs[e] != in_range[i]->outputs[e]) ++flips;
      }
      flip_fractions += static_cast<double>(flips) / static_cast<double>(examples);
    }
  }
  figures.instability = flip_fractions / pairs;
  return figures;
}

std::optional<double> CurveMtv(const std::map<uint64_t, double>& curve, uint64_t from,
                               uint64_t to) {
  if (from > to) return std::nullopt;
  auto it = curve.lower_bound(from);
  const auto end = curve.upper_bound(to);
  if (it == end) return std::nullopt;
  size_t m = 1;
  double tv = 0;
  double previous = it->second;
  for (++it; it != end; ++it, ++m) {
    tv += std::fabs(it->second - previous);
    previous = it->second;
  }
  if (m < 2) return std::nullopt;
  return tv / static_cast<double>(m - 1);
}

// ---- ranges ---------------------------------------------------------------------------

absl::StatusOr<std::optional<StepRangeResult>> ResolveRange(const RangeSpec& spec,
                                                            std::vector<uint64_t> raw_steps) {
  switch (spec.kind) {
    case RangeSpec::Kind::kSteps:
      if (spec.from_step > spec.to_step) {
        return absl::InvalidArgumentError(
            absl::StrCat("--steps ", spec.from_step, ":", spec.to_step,
                         ": the first step is after the last (write A:B with A <= B)"));
      }
      return std::optional<StepRangeResult>(StepRangeResult{spec.from_step, spec.to_step});
    case RangeSpec::Kind::kLastPoints:
      if (spec.last_points == 0) {
        return absl::InvalidArgumentError("--last 0: the number of points must be at least 1");
      }
      break;
    case RangeSpec::Kind::kLastFraction:
      if (!(spec.last_fraction > 0 && spec.last_fraction <= 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--last ", spec.last_fraction * 100,
                         "%: the fraction must be in (0%, 100%]"));
      }
      break;
    case RangeSpec::Kind::kDefault:
      break;
  }
  std::sort(raw_steps.begin(), raw_steps.end());
  raw_steps.erase(std::unique(raw_steps.begin(), raw_steps.end()), raw_steps.end());
  const uint64_t m_raw = raw_steps.size();
  if (m_raw == 0) return std::optional<StepRangeResult>();

  uint64_t count = 0;
  switch (spec.kind) {
    case RangeSpec::Kind::kDefault:
      count = std::max<uint64_t>(2, (m_raw + 4) / 5);  // ceil(0.2 * m_raw), exactly
      break;
    case RangeSpec::Kind::kLastFraction:
      count = std::max<uint64_t>(2, CeilTolerant(spec.last_fraction * static_cast<double>(m_raw)));
      break;
    case RangeSpec::Kind::kLastPoints:
      count = spec.last_points;
      break;
    case RangeSpec::Kind::kSteps:
      break;  // handled above
  }
  count = std::min(count, m_raw);
  return std::optional<StepRangeResult>(
      StepRangeResult{raw_steps[m_raw - count], raw_steps.back()});
}

// ---- ensembles ------------------------------------------------------------------------

std::string MajorityVote(const std::vector<std::string>& members) {
  std::unordered_map<std::string, size_t> votes;
  size_t most = 0;
  for (const std::string& output : members) most = std::max(most, ++votes[output]);
  for (auto it = members.rbegin(); it != members.rend(); ++it) {
    if (votes[*it] == most) return *it;
  }
  return std::string();
}

absl::StatusOr<int> SoftVote(const std::vector<std::vector<double>>& member_option_scores) {
  if (member_option_scores.empty()) {
    return absl::InvalidArgumentError("soft vote: no members");
  }
  const size_t options = member_option_scores[0].size();
  if (options == 0) return absl::InvalidArgumentError("soft vote: members have no options");
  std::vector<double> summed(options, 0.0);
  std::vector<double> distribution(options);
  for (size_t j = 0; j < member_option_scores.size(); ++j) {
    const std::vector<double>& scores = member_option_scores[j];
    if (scores.size() != options) {
      return absl::InvalidArgumentError(
          absl::StrCat("soft vote: member ", j, " has ", scores.size(), " option scores, member 0 has ",
                       options, " (all members must score the same options)"));
    }
    double max_score = -std::numeric_limits<double>::infinity();
    for (double s : scores) {
      if (std::isnan(s)) {
        return absl::InvalidArgumentError(absl::StrCat("soft vote: member ", j, " has a NaN score"));
      }
      max_score = std::max(max_score, s);
    }
    double total = 0;
    for (size_t k = 0; k < options; ++k) {
      // With an infinite maximum (all -inf, or some +inf) the limit puts equal mass on the
      // options that attain it.
      distribution[k] = std::isinf(max_score) ? (scores[k] == max_score ? 1.0 : 0.0)
                                              : std::exp(scores[k] - max_score);
      total += distribution[k];
    }
    for (size_t k = 0; k < options; ++k) summed[k] += distribution[k] / total;
  }
  // Averaging divides every option by the same member count: the argmax of the sum is the
  // argmax of the average.
  size_t best = 0;
  for (size_t k = 1; k < options; ++k) {
    if (summed[k] > summed[best]) best = k;
  }
  return static_cast<int>(best);
}

// ---- incremental index ----------------------------------------------------------------

namespace {

// Subtree aggregates. A point node uses `count` and `score`; a pair node (keyed by its
// to_step) uses `count` and the per-pair terms of MTV, example MTV and IS.
struct Sums {
  uint64_t count = 0;
  double score = 0;
  double abs_delta_score = 0;
  double example_term = 0;  // sum_abs_delta_example / examples
  double flip_term = 0;     // flips / examples
  uint64_t lacking_example_scores = 0;

  Sums& operator+=(const Sums& o) {
    count += o.count;
    score += o.score;
    abs_delta_score += o.abs_delta_score;
    example_term += o.example_term;
    flip_term += o.flip_term;
    lacking_example_scores += o.lacking_example_scores;
    return *this;
  }
};

Sums PointSums(double score) {
  Sums s;
  s.count = 1;
  s.score = score;
  return s;
}

Sums PairSums(const PairFigures& pair) {
  Sums s;
  s.count = 1;
  s.abs_delta_score = pair.abs_delta_score;
  if (pair.examples > 0) {
    s.example_term = pair.sum_abs_delta_example / pair.examples;
    s.flip_term = static_cast<double>(pair.flips) / pair.examples;
  }
  s.lacking_example_scores = pair.has_example_scores ? 0 : 1;
  return s;
}

// A treap keyed by step with subtree sums. Priorities come from a deterministic generator
// so runs are reproducible; the expected depth is O(log n) for any key order.
class SumTreap {
 public:
  size_t size() const { return root_ ? static_cast<size_t>(root_->total.count) : 0; }

  const Sums* Find(uint64_t key) const {
    for (const Node* n = root_.get(); n != nullptr;) {
      if (key == n->key) return &n->self;
      n = key < n->key ? n->left.get() : n->right.get();
    }
    return nullptr;
  }

  // Inserts `key` or replaces its sums.
  void Put(uint64_t key, const Sums& self) {
    if (Replace(root_.get(), key, self)) return;
    auto node = std::make_unique<Node>();
    node->key = key;
    node->priority = NextPriority();
    node->self = self;
    node->total = self;
    NodePtr left, right;
    Split(std::move(root_), key, &left, &right);
    root_ = Merge(Merge(std::move(left), std::move(node)), std::move(right));
  }

  void Remove(uint64_t key) { RemoveFrom(&root_, key); }

  // Sums over keys in [lo, hi].
  Sums RangeSum(uint64_t lo, uint64_t hi) const {
    Sums sums;
    if (lo > hi) return sums;
    const Node* n = root_.get();
    while (n != nullptr && (n->key < lo || n->key > hi)) {
      n = n->key < lo ? n->right.get() : n->left.get();
    }
    if (n == nullptr) return sums;
    sums += n->self;
    // Left spine: keys >= lo.
    for (const Node* l = n->left.get(); l != nullptr;) {
      if (l->key >= lo) {
        sums += l->self;
        if (l->right) sums += l->right->total;
        l = l->left.get();
      } else {
        l = l->right.get();
      }
    }
    // Right spine: keys <= hi.
    for (const Node* r = n->right.get(); r != nullptr;) {
      if (r->key <= hi) {
        sums += r->self;
        if (r->left) sums += r->left->total;
        r = r->right.get();
      } else {
        r = r->left.get();
      }
    }
    return sums;
  }

  std::optional<uint64_t> LowerBound(uint64_t key) const {  // smallest >= key
    std::optional<uint64_t> best;
    for (const Node* n = root_.get(); n != nullptr;) {
      if (n->key >= key) {
        best = n->key;
        n = n->left.get();
      } else {
        n = n->right.get();
      }
    }
    return best;
  }

  std::optional<uint64_t> Predecessor(uint64_t key) const {  // largest < key
    std::optional<uint64_t> best;
    for (const Node* n = root_.get(); n != nullptr;) {
      if (n->key < key) {
        best = n->key;
        n = n->right.get();
      } else {
        n = n->left.get();
      }
    }
    return best;
  }

  std::optional<uint64_t> Successor(uint64_t key) const {  // smallest > key
    std::optional<uint64_t> best;
    for (const Node* n = root_.get(); n != nullptr;) {
      if (n->key > key) {
        best = n->key;
        n = n->left.get();
      } else {
        n = n->right.get();
      }
    }
    return best;
  }

  void Keys(std::vector<uint64_t>* out) const {
    out->reserve(out->size() + size());
    // Iterative in-order walk: no recursion on the caller's stack.
    std::vector<const Node*> stack;
    const Node* n = root_.get();
    while (n != nullptr || !stack.empty()) {
      while (n != nullptr) {
        stack.push_back(n);
        n = n->left.get();
      }
      n = stack.back();
      stack.pop_back();
      out->push_back(n->key);
      n = n->right.get();
    }
  }

  ~SumTreap() { Clear(); }
  SumTreap() = default;
  SumTreap(SumTreap&&) noexcept = default;
  SumTreap& operator=(SumTreap&&) noexcept = default;

 private:
  struct Node;
  using NodePtr = std::unique_ptr<Node>;
  struct Node {
    uint64_t key = 0;
    uint64_t priority = 0;
    Sums self;
    Sums total;
    NodePtr left;
    NodePtr right;
  };

  static void Pull(Node* n) {
    n->total = n->self;
    if (n->left) n->total += n->left->total;
    if (n->right) n->total += n->right->total;
  }

  // Splits `t` into keys < key and keys >= key.
  static void Split(NodePtr t, uint64_t key, NodePtr* left, NodePtr* right) {
    if (!t) {
      left->reset();
      right->reset();
      return;
    }
    if (t->key < key) {
      NodePtr rest_left, rest_right;
      Split(std::move(t->right), key, &rest_left, &rest_right);
      t->right = std::move(rest_left);
      Pull(t.get());
      *left = std::move(t);
      *right = std::move(rest_right);
    } else {
      NodePtr rest_left, rest_right;
      Split(std::move(t->left), key, &rest_left, &rest_right);
      t->left = std::move(rest_right);
      Pull(t.get());
      *left = std::move(rest_left);
      *right = std::move(t);
    }
  }

  // Every key of `l` is below every key of `r`.
  static NodePtr Merge(NodePtr l, NodePtr r) {
    if (!l) return r;
    if (!r) return l;
    if (l->priority > r->priority) {
      l->right = Merge(std::move(l->right), std::move(r));
      Pull(l.get());
      return l;
    }
    r->left = Merge(std::move(l), std::move(r->left));
    Pull(r.get());
    return r;
  }

  static bool Replace(Node* n, uint64_t key, const Sums& self) {
    if (n == nullptr) return false;
    bool found;
    if (key == n->key) {
      n->self = self;
      found = true;
    } else {
      found = Replace(key < n->key ? n->left.get() : n->right.get(), key, self);
    }
    if (found) Pull(n);
    return found;
  }

  static bool RemoveFrom(NodePtr* t, uint64_t key) {
    Node* n = t->get();
    if (n == nullptr) return false;
    if (key == n->key) {
      *t = Merge(std::move(n->left), std::move(n->right));
      return true;
    }
    const bool removed = RemoveFrom(key < n->key ? &n->left : &n->right, key);
    if (removed) Pull(n);
    return removed;
  }

  // Frees iteratively so that destroying a large tree cannot exhaust the stack.
  void Clear() {
    std::vector<NodePtr> pending;
    if (root_) pending.push_back(std::move(root_));
    while (!pending.empty()) {
      NodePtr n = std::move(pending.back());
      pending.pop_back();
      if (n->left) pending.push_back(std::move(n->left));
      if (n->right) pending.push_back(std::move(n->right));
    }
  }

  uint64_t NextPriority() {  // splitmix64
    uint64_t z = (priority_state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  NodePtr root_;
  uint64_t priority_state_ = 0x5eed5eed5eed5eedULL;
};

absl::StatusOr<StepPoint> LoadPoint(const StabilityIndex::PointLoader& loader, uint64_t step) {
  absl::StatusOr<StepPoint> point = loader(step);
  if (!point.ok()) {
    return Annotate(point.status(), absl::StrCat("loading the point at step ", step));
  }
  point->step = step;  // the loader answers for `step`; don't trust a default-initialised field
  return point;
}

}  // namespace

struct StabilityIndex::Tree {
  SumTreap points;  // key: step
  SumTreap pairs;   // key: the pair's to_step
};

StabilityIndex::StabilityIndex() : tree_(std::make_unique<Tree>()) {}
StabilityIndex::~StabilityIndex() = default;
StabilityIndex::StabilityIndex(StabilityIndex&&) noexcept = default;
StabilityIndex& StabilityIndex::operator=(StabilityIndex&&) noexcept = default;

absl::StatusOr<StabilityIndex::Change> StabilityIndex::Upsert(const StepPoint& point,
                                                              const PointLoader& loader) {
  RETURN_IF_ERROR(ExampleCount(point).status());
  const uint64_t step = point.step;
  const bool exists = tree_->points.Find(step) != nullptr;
  const std::optional<uint64_t> pred = tree_->points.Predecessor(step);
  const std::optional<uint64_t> succ = tree_->points.Successor(step);

  // Compute everything before touching the trees, so an error leaves them unchanged.
  Change change;
  if (pred.has_value()) {
    ASSIGN_OR_RETURN(const StepPoint pred_point, LoadPoint(loader, *pred));
    ASSIGN_OR_RETURN(PairFigures pair, ComputePair(pred_point, point));
    change.added_pairs.push_back(pair);
    if (exists) change.removed_pairs.push_back(step);
  }
  if (succ.has_value()) {
    ASSIGN_OR_RETURN(const StepPoint succ_point, LoadPoint(loader, *succ));
    ASSIGN_OR_RETURN(PairFigures pair, ComputePair(point, succ_point));
    change.added_pairs.push_back(pair);
    // Before: (step, succ) when replacing, (pred, succ) when inserting between; both keyed
    // by succ. Inserting before the first point removes nothing.
    if (exists || pred.has_value()) change.removed_pairs.push_back(*succ);
  }

  for (uint64_t key : change.removed_pairs) tree_->pairs.Remove(key);
  for (const PairFigures& pair : change.added_pairs) {
    tree_->pairs.Put(pair.to_step, PairSums(pair));
  }
  tree_->points.Put(step, PointSums(point.score));
  return change;
}

absl::StatusOr<StabilityIndex::Change> StabilityIndex::Erase(uint64_t step,
                                                             const PointLoader& loader) {
  if (tree_->points.Find(step) == nullptr) {
    return absl::NotFoundError(absl::StrCat("step ", step, " is not in the sequence"));
  }
  const std::optional<uint64_t> pred = tree_->points.Predecessor(step);
  const std::optional<uint64_t> succ = tree_->points.Successor(step);

  Change change;
  if (pred.has_value()) change.removed_pairs.push_back(step);
  if (succ.has_value()) change.removed_pairs.push_back(*succ);
  if (pred.has_value() && succ.has_value()) {
    ASSIGN_OR_RETURN(const StepPoint pred_point, LoadPoint(loader, *pred));
    ASSIGN_OR_RETURN(const StepPoint succ_point, LoadPoint(loader, *succ));
    ASSIGN_OR_RETURN(PairFigures pair, ComputePair(pred_point, succ_point));
    change.added_pairs.push_back(pair);
  }

  for (uint64_t key : change.removed_pairs) tree_->pairs.Remove(key);
  for (const PairFigures& pair : change.added_pairs) {
    tree_->pairs.Put(pair.to_step, PairSums(pair));
  }
  tree_->points.Remove(step);
  return change;
}

void StabilityIndex::RestorePoint(uint64_t step, double score) {
  tree_->points.Put(step, PointSums(score));
}

void StabilityIndex::RestorePair(const PairFigures& pair) {
  tree_->pairs.Put(pair.to_step, PairSums(pair));
}

StabilityFigures StabilityIndex::Query(uint64_t from, uint64_t to) const {
  StabilityFigures figures;
  const Sums points = tree_->points.RangeSum(from, to);
  const uint64_t m = points.count;
  figures.points = static_cast<uint32_t>(m);
  if (m == 0) return figures;
  figures.mean = points.score / static_cast<double>(m);
  if (m < 2) return figures;

  // The pairs fully inside are those whose to_step is in (first point >= from, to]; with
  // m >= 2 the first point is below `to`, so first + 1 cannot overflow.
  const uint64_t first = *tree_->points.LowerBound(from);
  const Sums pairs = tree_->pairs.RangeSum(first + 1, to);
  // A missing pair (a restore that lost one) leaves the figures unknown, not wrong.
  if (pairs.count != m - 1) return figures;
  const double n = static_cast<double>(m - 1);
  figures.mtv = pairs.abs_delta_score / n;
  figures.instability = pairs.flip_term / n;
  if (pairs.lacking_example_scores == 0) figures.example_mtv = pairs.example_term / n;
  return figures;
}

size_t StabilityIndex::size() const { return tree_->points.size(); }

std::vector<uint64_t> StabilityIndex::Steps() const {
  std::vector<uint64_t> steps;
  tree_->points.Keys(&steps);
  return steps;
}

std::optional<uint64_t> StabilityIndex::Predecessor(uint64_t step) const {
  return tree_->points.Predecessor(step);
}

std::optional<uint64_t> StabilityIndex::Successor(uint64_t step) const {
  return tree_->points.Successor(step);
}

std::optional<double> StabilityIndex::ScoreAt(uint64_t step) const {
  const Sums* sums = tree_->points.Find(step);
  if (sums == nullptr) return std::nullopt;
  return sums->score;
}

}  // namespace steadyeval
