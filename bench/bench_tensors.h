// Helpers of the averaging benchmarks: comparing averaged checkpoints, naming the path
// WindowSumCache took.
#ifndef STEADYEVAL_BENCH_BENCH_TENSORS_H_
#define STEADYEVAL_BENCH_BENCH_TENSORS_H_

#include <algorithm>
#include <cmath>
#include <string>

#include <ATen/ATen.h>

#include "worker/averaging/averager.h"
#include "worker/checkpoint/tensor_source.h"

namespace steadyeval {

// max |a - b| over every tensor of `a` (looked up by name in `b`); infinity when one is
// missing or unreadable.
inline double MaxAbsDiff(const TensorMap& a, const TensorMap& b) {
  double worst = 0;
  for (const std::string& name : a.TensorNames()) {
    auto ta = a.Stored(name);
    auto tb = b.Stored(name);
    if (!ta.ok() || !tb.ok()) return INFINITY;
    worst = std::max(worst, (*ta - *tb).abs().max().item<double>());
  }
  return worst;
}

inline const char* PathName(WindowSumCache::Path p) {
  switch (p) {
    case WindowSumCache::Path::kNone: return "none";
    case WindowSumCache::Path::kReused: return "reused";
    case WindowSumCache::Path::kSlid: return "slid";
    case WindowSumCache::Path::kRebuilt: return "rebuilt";
    case WindowSumCache::Path::kUncached: return "uncached";
  }
  return "?";
}

}  // namespace steadyeval

#endif  // STEADYEVAL_BENCH_BENCH_TENSORS_H_
