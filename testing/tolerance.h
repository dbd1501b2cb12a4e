// Float32 error bounds for the numeric tests, and the record of every check made against
// them (written out by testing/numeric_test_main.cc).
//
// Why bounds and not constants. Two float32 evaluations of the same network that differ
// only in the order of their sums (another BLAS kernel set, a row run alone instead of in
// a padded batch, a prefix from the KV cache instead of one pass) give different bits. How
// different depends on how long the sums are, how many lie one after another on the way
// to the compared value, and the magnitude of the values; not on the CPU the tests were
// first run on. A fixed 1e-5 on logits of magnitude ~1-10 was a guess that AVX-512
// kernels broke (1.14e-5 seen on OpenBLAS's SkylakeX kernels).
//
// The bound. Float32 rounds each operation with relative error at most u = 2^-24. Modelling
// the rounding errors as independent and of mean zero (Higham & Mary, "A new approach to
// probabilistic rounding error analysis", SIAM J. Sci. Comput. 41(5), 2019), a sum of n
// terms is within λ·sqrt(n)·u of its exact value, relative to its terms' scale, with
// probability at least 1 - 2·exp(-λ²/2); and the errors of the D sums chained on the way
// to a value (per layer: the norm, Q/K/V, the scores, the softmax, its weighted sum, the
// output projection, the second norm, the MLP's two matrices; then the final norm and the
// LM head) add the same way, so the value is within λ·u·sqrt(D·K) of exact, K the longest
// of those sums. A log-prob adds the log-softmax's sum over the vocabulary (V terms):
// λ·u·sqrt(D·K + V). Two float32 evaluations differ by sqrt(2) times one's error. We take
// λ = 10: the model then fails with probability ~1e-22 per value, and that factor is the
// margin over what rounding really does (across every OpenBLAS and ATen kernel set this
// machine runs, the largest deviation seen used under a tenth of its tolerance; the
// deviation log shows each check's share). The worst-case bound (evaluations·D·K·u, first
// order) is 5-7x looser at these sizes: loose enough to pass a real bug (a swapped GELU
// variant moves GPT-2 log-probs by 1.3e-3 to 3.3e-3, about 4x these tolerances).
//
// Scale: the largest |value| among those compared (the logits, the log-probs), at least 1.
// This holds while the compared values are of the magnitude of the sums' terms (true of
// softmax inputs and normalised hidden states of these fixtures).
//
// What the bounds still catch (each model test names its own): a dropped attention mask,
// a mis-rotated position or a wrong activation moves log-probs or logits by 1e-3 to 10, from
// 4x (GELU variant) to 10^4x (mask, positions) these tolerances at the fixtures' sizes
// (K <= 256, D <= 29).
#ifndef STEADYEVAL_TESTING_TOLERANCE_H_
#define STEADYEVAL_TESTING_TOLERANCE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace steadyeval::testing {

// Unit roundoff of IEEE float32.
inline constexpr double kFp32UnitRoundoff = 0x1p-24;

// λ of the probabilistic bound: the rounding model fails with probability 2·exp(-λ²/2).
inline constexpr double kRoundingLambda = 10;

// Relative rounding of a weight stored in bfloat16 (8 significant bits).
inline constexpr double kBf16WeightRounding = 0x1p-9;

// The error model of a float32 computation whose result is compared.
struct Fp32Bound {
  std::string label;             // names the computation in messages ("gqa logits")
  int64_t longest_sum = 1;       // K: terms in the longest sum on the way to a value
  int64_t sums_in_sequence = 1;  // D: sums chained from the inputs to a value
  int64_t final_sum = 0;         // V: a log-softmax's sum at the end (0 for logits)
  int evaluations = 2;           // 2: float32 against float32; 1: against exact (float64)
  // Relative perturbation of every weight of one side (kBf16WeightRounding when one side's
  // weights were rounded to bfloat16 and the other's were not). A perturbed weight moves
  // each sum it enters by at most that fraction of its terms' magnitudes; counted in the
  // worst case, D·weight_rounding (not random across a tensor: one rounding, fixed).
  double weight_rounding = 0;

  // Largest |got - want| allowed when the compared values reach |magnitude| at most.
  double Tolerance(double magnitude) const {
    const double terms = static_cast<double>(evaluations) *
                         static_cast<double>(sums_in_sequence * longest_sum + final_sum);
    const double relative = kRoundingLambda * kFp32UnitRoundoff * std::sqrt(terms) +
                            static_cast<double>(sums_in_sequence) * weight_rounding;
    return relative * std::max(1.0, magnitude);
  }
};

// One tolerance check, for the deviation log.
struct DeviationRecord {
  std::string test;  // Suite.Name of the test that made it
  std::string what;  // the bound's label
  double deviation = 0;
  double tolerance = 0;
  double magnitude = 0;  // the largest |value| compared
};

inline std::vector<DeviationRecord>& MutableDeviationRecords() {
  static std::vector<DeviationRecord> records;
  return records;
}

// Every check made so far in this process (tests run on one thread).
inline std::vector<DeviationRecord> DeviationRecords() { return MutableDeviationRecords(); }

// Records a check of the current test and returns whether deviation <= tolerance, with a
// message naming both and the bound.
inline ::testing::AssertionResult CheckDeviation(const Fp32Bound& bound, double deviation,
                                                 double magnitude) {
  const double tolerance = bound.Tolerance(magnitude);
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  MutableDeviationRecords().push_back(
      {info == nullptr ? "" : absl::StrCat(info->test_suite_name(), ".", info->name()),
       bound.label, deviation, tolerance, magnitude});
  const std::string detail = absl::StrCat(
      bound.label, ": max |difference| ", deviation, ", tolerance ", tolerance, " (lambda ",
      kRoundingLambda, ", ", bound.evaluations, " evaluation(s), D ", bound.sums_in_sequence,
      ", K ", bound.longest_sum, ", V ", bound.final_sum,
      bound.weight_rounding > 0 ? absl::StrCat(", weight rounding ", bound.weight_rounding) : "",
      ", magnitude ", std::max(1.0, magnitude), ")");
  if (deviation <= tolerance) return ::testing::AssertionSuccess() << detail;
  return ::testing::AssertionFailure() << detail;
}

// Scalar form: |got - want| within the bound at magnitude |want|.
inline ::testing::AssertionResult WithinBound(double got, double want, const Fp32Bound& bound) {
  return CheckDeviation(bound, std::abs(got - want), std::abs(want));
}

// Whether `deviation` is more than rounding can explain: beyond the bound's tolerance at
// `magnitude`. For checks that another computation really gives another result (a test
// that a shortcut would be wrong must not pass on rounding noise). Not recorded.
inline ::testing::AssertionResult BeyondBound(double deviation, double magnitude,
                                              const Fp32Bound& bound) {
  const double tolerance = bound.Tolerance(magnitude);
  const std::string detail = absl::StrCat(bound.label, ": max |difference| ", deviation,
                                          ", rounding explains up to ", tolerance);
  if (deviation > tolerance) return ::testing::AssertionSuccess() << detail;
  return ::testing::AssertionFailure() << detail;
}

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_TOLERANCE_H_
