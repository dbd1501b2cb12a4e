// Parsing training steps out of checkpoint entry names (DESIGN §4).
//
// A pattern is an RE2 regex (linear time: a user's pattern cannot hang the watcher) with
// exactly one capture group holding the decimal step, matched
// against the *whole* entry name, so `step_000100.tmp` or `step_000100-partial` never
// parse. With no pattern, the defaults recognise step_000100, step-100, iter_0000100
// (Megatron), checkpoint-100 (HF Trainer) and global_step100 (DeepSpeed).
// Thread-safe after construction.
#ifndef STEADYEVAL_COMMON_STEPS_H_
#define STEADYEVAL_COMMON_STEPS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace re2 {
class RE2;
}  // namespace re2

namespace steadyeval {

class StepParser {
 public:
  // `pattern` empty selects the defaults. INVALID_ARGUMENT for a regex that does not
  // compile or does not have exactly one capture group.
  static absl::StatusOr<std::unique_ptr<StepParser>> Create(const std::string& pattern);

  // The step in `name`, or nullopt when the name is not a checkpoint name (or the step
  // does not fit in uint64).
  std::optional<uint64_t> Parse(absl::string_view name) const;

  static const std::vector<std::string>& DefaultPatterns();

  ~StepParser();

 private:
  explicit StepParser(std::vector<std::unique_ptr<re2::RE2>> patterns);
  std::vector<std::unique_ptr<re2::RE2>> patterns_;
};

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_STEPS_H_
