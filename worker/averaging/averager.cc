#include "worker/averaging/averager.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_failure.h"
#include "common/json_limits.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "worker/torch_status.h"

namespace steadyeval {
namespace {

// Tensors are combined in slices of this many elements, so the dtype-cast temporaries
// libtorch makes stay small (half a MiB in fp64) however large the tensor.
constexpr int64_t kSliceElements = 1 << 16;

// acc += sign · src (src of any dtype, same shape; acc contiguous), slice by slice.
void AddCast(at::Tensor& acc, const at::Tensor& src, double sign) {
  at::Tensor a = acc.view({-1});
  at::Tensor s = src.reshape({-1});
  for (int64_t begin = 0; begin < a.numel(); begin += kSliceElements) {
    const int64_t len = std::min(kSliceElements, a.numel() - begin);
    a.narrow(0, begin, len).add_(s.narrow(0, begin, len).to(acc.scalar_type()), sign);
  }
}

// sum / n cast to `dtype`, slice by slice. Division (not multiplication by 1/n) keeps n
// identical members exact.
at::Tensor DivideCast(const at::Tensor& sum, size_t n, at::ScalarType dtype) {
  at::Tensor out = at::empty(sum.sizes(), dtype);
  at::Tensor o = out.view({-1});
  at::Tensor s = sum.reshape({-1});
  for (int64_t begin = 0; begin < o.numel(); begin += kSliceElements) {
    const int64_t len = std::min(kSliceElements, o.numel() - begin);
    o.narrow(0, begin, len).copy_(at::div(s.narrow(0, begin, len), static_cast<double>(n)));
  }
  return out;
}

at::ScalarType AccumulationType(DType dtype) {
  return (dtype == DType::kF16 || dtype == DType::kBF16) ? at::kFloat : at::kDouble;
}

uint64_t AccumulationBytes(const std::vector<TensorInfo>& layout) {
  uint64_t bytes = 0;
  for (const TensorInfo& info : layout) {
    if (!IsFloating(info.dtype)) continue;
    bytes += static_cast<uint64_t>(info.numel()) *
             (AccumulationType(info.dtype) == at::kDouble ? 8 : 4);
  }
  return bytes;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::vector<TensorInfo>> LayoutOf(const CheckpointReader& reader) {
  std::vector<TensorInfo> layout;
  for (const std::string& name : reader.TensorNames()) {
    ASSIGN_OR_RETURN(TensorInfo info, reader.Info(name));
    layout.push_back(std::move(info));
  }
  return layout;
}

bool IsIgnoredConfigKey(const std::string& key) {
  for (const char* ignored : kIgnoredConfigKeys) {
    if (key == ignored) return true;
  }
  return false;
}

// Checks that `member` matches the reference (`ref_where` names it in messages).
absl::Status AgreeWith(const std::string& ref_where, const std::string& ref_config,
                       const std::vector<TensorInfo>& ref_layout, const CheckpointReader& member) {
  const std::string& where = member.dir();
  auto mismatch = [&](const std::string& what) {
    return absl::FailedPreconditionError(absl::StrCat(
        "window members disagree: ", what, " (", ref_where, " vs ", where,
        "); checkpoints of different shapes or configs cannot be averaged"));
  };
  const std::vector<std::string> names = member.TensorNames();
  std::set<std::string> member_names(names.begin(), names.end());
  std::set<std::string> ref_names;
  for (const TensorInfo& info : ref_layout) {
    ref_names.insert(info.name);
    if (member_names.count(info.name) == 0) {
      return mismatch(absl::StrCat("tensor '", info.name, "' is missing from ", where));
    }
    ASSIGN_OR_RETURN(TensorInfo other, member.Info(info.name));
    if (other.dtype != info.dtype) {
      return mismatch(absl::StrCat("tensor '", info.name, "' is ", DTypeName(info.dtype),
                                   " in one and ", DTypeName(other.dtype), " in the other"));
    }
    if (other.shape != info.shape) {
      return mismatch(absl::StrCat("tensor '", info.name, "' has shape ",
                                   ShapeString(info.shape), " in one and ",
                                   ShapeString(other.shape), " in the other"));
    }
  }
  for (const std::string& name : names) {
    if (ref_names.count(name) == 0) {
      return mismatch(absl::StrCat("tensor '", name, "' is only in ", where));
    }
  }
  // Comparing and printing the configs below recurses once per nesting level.
  RETURN_IF_ERROR(CheckJsonNesting(absl::StrCat(ref_where, "/config.json"), ref_config));
  RETURN_IF_ERROR(CheckJsonNesting(absl::StrCat(where, "/config.json"), member.config_json()));
  nlohmann::json a = nlohmann::json::parse(ref_config, nullptr, /*allow_exceptions=*/false);
  nlohmann::json b = nlohmann::json::parse(member.config_json(), nullptr, false);
  if (!a.is_object() || !b.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json of ", a.is_object() ? where : ref_where, " is not a JSON object"));
  }
  std::set<std::string> keys;
  for (const auto& [key, value] : a.items()) keys.insert(key);
  for (const auto& [key, value] : b.items()) keys.insert(key);
  for (const std::string& key : keys) {
    if (IsIgnoredConfigKey(key)) continue;
    const nlohmann::json va = a.contains(key) ? a[key] : nlohmann::json();
    const nlohmann::json vb = b.contains(key) ? b[key] : nlohmann::json();
    if (va != vb) {
      return mismatch(absl::StrCat("config.json key '", key, "' is ",
                                   a.contains(key) ? va.dump() : "absent", " in one and ",
                                   b.contains(key) ? vb.dump() : "absent", " in the other"));
    }
  }
  return absl::OkStatus();
}

// `acc += sign · member[name]` in acc's dtype; the member's pages are dropped afterwards.
absl::Status Accumulate(const CheckpointReader& member, const std::string& name, double sign,
                        at::Tensor& acc) {
  ASSIGN_OR_RETURN(at::Tensor view, member.MappedTensor(name));
  absl::Status s = GuardTorch(absl::StrCat(member.label(), ": tensor '", name, "'"),
                              [&]() -> absl::Status {
                                AddCast(acc, view, sign);
                                return absl::OkStatus();
                              });
  member.DropPages(name);
  return s;
}

// The sum of every member's `info` tensor, in the accumulation dtype, member by member
// (one member's tensor is mapped at a time). `acc` is the zeroed destination.
absl::Status SumInto(const std::vector<std::unique_ptr<CheckpointReader>>& members,
                     const TensorInfo& info, at::Tensor& acc) {
  for (const auto& member : members) RETURN_IF_ERROR(Accumulate(*member, info.name, 1.0, acc));
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> SumTensor(
    const std::vector<std::unique_ptr<CheckpointReader>>& members, const TensorInfo& info) {
  ASSIGN_OR_RETURN(at::Tensor acc,
                   GuardTorch("averaging", [&]() -> absl::StatusOr<at::Tensor> {
                     return at::zeros(info.shape, AccumulationType(info.dtype));
                   }));
  RETURN_IF_ERROR(SumInto(members, info, acc));
  return acc;
}

// Adds `info`'s tensor of the average to `out`: sum / n cast to the members' dtype, or the
// newest member's tensor when it is not floating.
absl::Status AddAveraged(const TensorInfo& info, const at::Tensor& sum, size_t n,
                         const CheckpointReader& newest, TensorMap& out) {
  if (!IsFloating(info.dtype)) {
    ASSIGN_OR_RETURN(at::Tensor view, newest.MappedTensor(info.name));
    absl::Status s = GuardTorch(info.name, [&]() -> absl::Status {
      return out.Add(info.name, view.clone());
    });
    newest.DropPages(info.name);
    return s;
  }
  return GuardTorch(absl::StrCat("averaging tensor '", info.name, "'"), [&]() -> absl::Status {
    return out.Add(info.name, DivideCast(sum, n, TorchTypeOf(info.dtype)));
  });
}

std::string AverageLabel(size_t n, const std::string& newest_dir) {
  return absl::StrCat("average of ", n, " checkpoints ending at ", newest_dir);
}

bool FolderExists(const std::string& dir) {
  struct stat st;
  return ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenWindowMember(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 && (errno == ENOENT || errno == ENOTDIR)) {
    return MembersGoneError(absl::StrCat(
        "window member ", dir,
        " no longer exists (rotated away by the trainer?); this window cannot be averaged"));
  }
  return CheckpointReader::Open(dir);
}

absl::Status CheckMembersAgree(const CheckpointReader& reference, const CheckpointReader& member) {
  ASSIGN_OR_RETURN(std::vector<TensorInfo> layout, LayoutOf(reference));
  return AgreeWith(reference.dir(), reference.config_json(), layout, member);
}

absl::StatusOr<std::unique_ptr<TensorMap>> AverageCheckpoints(
    const std::vector<std::string>& member_dirs) {
  if (member_dirs.empty()) return absl::InvalidArgumentError("averaging needs at least one checkpoint");
  std::vector<std::unique_ptr<CheckpointReader>> members;
  for (const std::string& dir : member_dirs) {
    ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, OpenWindowMember(dir));
    members.push_back(std::move(reader));
  }
  const CheckpointReader& newest = *members.back();
  ASSIGN_OR_RETURN(std::vector<TensorInfo> layout, LayoutOf(newest));
  for (const auto& member : members) {
    RETURN_IF_ERROR(AgreeWith(newest.dir(), newest.config_json(), layout, *member));
  }
  at::NoGradGuard no_grad;
  auto out = std::make_unique<TensorMap>(AverageLabel(members.size(), newest.dir()),
                                         newest.config_json());
  // One accumulator per accumulation dtype, sized for the largest tensor and reused, so
  // memory is the result plus about two tensors, and the heap does not fragment.
  std::map<at::ScalarType, at::Tensor> accumulators;
  for (const TensorInfo& info : layout) {
    if (!IsFloating(info.dtype)) continue;
    at::Tensor& buffer = accumulators[AccumulationType(info.dtype)];
    if (!buffer.defined() || buffer.numel() < info.numel()) {
      buffer = at::Tensor();
      ASSIGN_OR_RETURN(buffer, GuardTorch("averaging", [&]() -> absl::StatusOr<at::Tensor> {
        int64_t largest = 0;
        for (const TensorInfo& other : layout) {
          if (IsFloating(other.dtype) && AccumulationType(other.dtype) == AccumulationType(info.dtype)) {
            largest = std::max(largest, other.numel());
          }
        }
        return at::empty({largest}, AccumulationType(info.dtype));
      }));
    }
  }
  for (const TensorInfo& info : layout) {
    at::Tensor sum;
    if (IsFloating(info.dtype)) {
      RETURN_IF_ERROR(GuardTorch("averaging", [&]() -> absl::Status {
        sum = accumulators[AccumulationType(info.dtype)].narrow(0, 0, info.numel()).view(info.shape);
        sum.zero_();
        return absl::OkStatus();
      }));
      RETURN_IF_ERROR(SumInto(members, info, sum));
    }
    RETURN_IF_ERROR(AddAveraged(info, sum, members.size(), newest, *out));
  }
  return out;
}

absl::StatusOr<ParameterDriftResult> ComputeParameterDrift(const std::string& from_dir,
                                                           const std::string& to_dir) {
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> from, CheckpointReader::Open(from_dir));
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> to, CheckpointReader::Open(to_dir));
  ASSIGN_OR_RETURN(std::vector<TensorInfo> layout, LayoutOf(*from));
  const std::vector<std::string> to_names = to->TensorNames();
  if (to_names.size() != layout.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "parameter drift: ", from_dir, " has ", layout.size(), " parameters but ", to_dir,
        " has ", to_names.size()));
  }
  at::NoGradGuard no_grad;
  double diff_sq = 0, from_sq = 0;
  for (const TensorInfo& info : layout) {
    if (!IsFloating(info.dtype)) continue;
    if (!to->HasTensor(info.name)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "parameter drift: tensor '", info.name, "' of ", from_dir, " is missing from ", to_dir));
    }
    ASSIGN_OR_RETURN(TensorInfo other, to->Info(info.name));
    if (other.shape != info.shape) {
      return absl::FailedPreconditionError(absl::StrCat(
          "parameter drift: tensor '", info.name, "' has shape ", ShapeString(info.shape),
          " in ", from_dir, " but ", ShapeString(other.shape), " in ", to_dir));
    }
    ASSIGN_OR_RETURN(at::Tensor a, from->MappedTensor(info.name));
    ASSIGN_OR_RETURN(at::Tensor b, to->MappedTensor(info.name));
    RETURN_IF_ERROR(GuardTorch(absl::StrCat("parameter drift: tensor '", info.name, "'"),
                               [&]() -> absl::Status {
                                 at::Tensor fa = a.reshape({-1}), fb = b.reshape({-1});
                                 for (int64_t begin = 0; begin < fa.numel(); begin += kSliceElements) {
                                   const int64_t len = std::min(kSliceElements, fa.numel() - begin);
                                   at::Tensor a64 = fa.narrow(0, begin, len).to(at::kDouble);
                                   at::Tensor d = fb.narrow(0, begin, len).to(at::kDouble) - a64;
                                   diff_sq += (d * d).sum().item<double>();
                                   from_sq += (a64 * a64).sum().item<double>();
                                 }
                                 return absl::OkStatus();
                               }));
    from->DropPages(info.name);
    to->DropPages(info.name);
  }
  ParameterDriftResult result;
  result.l2 = std::sqrt(diff_sq);
  if (from_sq > 0) {
    result.relative = result.l2 / std::sqrt(from_sq);
  } else {
    result.relative = result.l2 == 0 ? 0 : std::numeric_limits<double>::infinity();
  }
  return result;
}

// ---- WindowSumCache ----

absl::Status WindowSumCache::Rebuild(const std::vector<WindowMember>& members, Sum* sum) {
  std::vector<std::unique_ptr<CheckpointReader>> readers;
  for (const WindowMember& m : members) {
    ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, OpenWindowMember(m.dir));
    readers.push_back(std::move(reader));
  }
  const CheckpointReader& newest = *readers.back();
  ASSIGN_OR_RETURN(sum->layout, LayoutOf(newest));
  sum->config_json = newest.config_json();
  for (const auto& reader : readers) {
    RETURN_IF_ERROR(AgreeWith(newest.dir(), sum->config_json, sum->layout, *reader));
  }
  at::NoGradGuard no_grad;
  for (const TensorInfo& info : sum->layout) {
    if (!IsFloating(info.dtype)) continue;
    ASSIGN_OR_RETURN(sum->sums[info.name], SumTensor(readers, info));
  }
  sum->members = members;
  sum->slides_since_rebuild = 0;
  sum->bytes = AccumulationBytes(sum->layout);
  return absl::OkStatus();
}

absl::Status WindowSumCache::Slide(const WindowMember& newest, const CheckpointReader& added,
                                   Sum* sum) {
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> oldest,
                   OpenWindowMember(sum->members.front().dir));
  const std::string where = sum->members.back().dir;
  RETURN_IF_ERROR(AgreeWith(where, sum->config_json, sum->layout, added));
  RETURN_IF_ERROR(AgreeWith(where, sum->config_json, sum->layout, *oldest));
  at::NoGradGuard no_grad;
  for (const TensorInfo& info : sum->layout) {
    if (!IsFloating(info.dtype)) continue;
    at::Tensor& acc = sum->sums[info.name];
    RETURN_IF_ERROR(Accumulate(added, info.name, 1.0, acc));
    RETURN_IF_ERROR(Accumulate(*oldest, info.name, -1.0, acc));
  }
  sum->members.erase(sum->members.begin());
  sum->members.push_back(newest);
  sum->config_json = added.config_json();
  ++sum->slides_since_rebuild;
  return absl::OkStatus();
}

void WindowSumCache::Evict(uint64_t bytes, const Sum* keep) {
  uint64_t held = held_bytes();
  for (auto it = sums_.end(); it != sums_.begin() && held + bytes > options_.budget_bytes;) {
    --it;
    if (&*it == keep) continue;
    held -= it->bytes;
    it = sums_.erase(it);
  }
}

absl::StatusOr<std::unique_ptr<TensorMap>> WindowSumCache::Average(
    const std::string& run, const std::vector<WindowMember>& members) {
  last_path_ = Path::kNone;
  if (members.empty()) return absl::InvalidArgumentError("avg window has no members");
  for (size_t i = 1; i < members.size(); ++i) {
    if (members[i].step <= members[i - 1].step) {
      return absl::InvalidArgumentError(absl::StrCat(
          "avg window members must be in increasing step order; got step ", members[i].step,
          " after ", members[i - 1].step));
    }
  }
  const size_t n = members.size();
  auto held = std::find_if(sums_.begin(), sums_.end(), [&](const Sum& s) {
    return s.run == run && s.members.size() == n;
  });

  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> newest, OpenWindowMember(members.back().dir));
  ASSIGN_OR_RETURN(std::vector<TensorInfo> newest_layout, LayoutOf(*newest));
  const uint64_t bytes = AccumulationBytes(newest_layout);
  if (bytes > options_.budget_bytes) {
    if (held != sums_.end()) sums_.erase(held);
    std::vector<std::string> dirs;
    for (const WindowMember& m : members) dirs.push_back(m.dir);
    newest.reset();
    last_path_ = Path::kUncached;
    return AverageCheckpoints(dirs);
  }

  auto same_steps = [&](const Sum& s, size_t from) {
    for (size_t i = 0; i + from < n; ++i) {
      if (s.members[i + from].step != members[i].step) return false;
    }
    return true;
  };
  Path path = Path::kRebuilt;
  if (held != sums_.end()) {
    if (same_steps(*held, 0)) {
      path = Path::kReused;
    } else if (n > 1 && same_steps(*held, 1) &&
               held->slides_since_rebuild < options_.rebuild_every &&
               FolderExists(held->members.front().dir)) {
      path = Path::kSlid;
    }
  }
  if (path == Path::kRebuilt) {
    if (held != sums_.end()) sums_.erase(held);  // free the old sum before building anew
    Evict(bytes, nullptr);
    Sum fresh;
    fresh.run = run;
    RETURN_IF_ERROR(Rebuild(members, &fresh));
    sums_.push_front(std::move(fresh));
  } else {
    sums_.splice(sums_.begin(), sums_, held);
    if (path == Path::kSlid) {
      absl::Status s = Slide(members.back(), *newest, &sums_.front());
      if (!s.ok()) {
        sums_.pop_front();  // partly updated: unusable
        return s;
      }
    }
    // The requested paths win (they may be remapped); steps are equal.
    sums_.front().members = members;
  }
  last_path_ = path;

  const Sum& sum = sums_.front();
  RETURN_IF_ERROR(AgreeWith(members.back().dir, sum.config_json, sum.layout, *newest));
  at::NoGradGuard no_grad;
  auto out = std::make_unique<TensorMap>(
      absl::StrCat("average of ", n, " checkpoints of ", run, " (steps ", members.front().step,
                   "..", members.back().step, ")"),
      newest->config_json());
  for (const TensorInfo& info : sum.layout) {
    at::Tensor acc;
    if (IsFloating(info.dtype)) acc = sum.sums.at(info.name);
    RETURN_IF_ERROR(AddAveraged(info, acc, n, *newest, *out));
  }
  return out;
}

std::vector<WindowSumInfo> WindowSumCache::Held() const {
  std::vector<WindowSumInfo> held;
  for (const Sum& s : sums_) {
    WindowSumInfo info;
    info.run = s.run;
    info.window = static_cast<uint32_t>(s.members.size());
    for (const WindowMember& m : s.members) info.steps.push_back(m.step);
    held.push_back(std::move(info));
  }
  return held;
}

uint64_t WindowSumCache::held_bytes() const {
  uint64_t total = 0;
  for (const Sum& s : sums_) total += s.bytes;
  return total;
}

}  // namespace steadyeval
