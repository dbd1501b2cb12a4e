// Bounds on what users and peers may send (issue 16): the server refuses larger inputs
// with INVALID_ARGUMENT naming the field and the bound, and the CLI checks the same bounds
// before sending. One place, so the two never disagree.
#ifndef STEADYEVAL_COMMON_LIMITS_H_
#define STEADYEVAL_COMMON_LIMITS_H_

#include <cstddef>
#include <cstdint>

namespace steadyeval {

inline constexpr size_t kMaxRunNameBytes = 128;
inline constexpr size_t kMaxPathBytes = 4096;        // source, tokenizer path, backup dir
inline constexpr size_t kMaxPatternBytes = 1024;     // a step regex
inline constexpr int64_t kMaxPatternProgramBytes = 1 << 20;  // RE2 max_mem of a step regex
inline constexpr size_t kMaxMarkerBytes = 255;       // a file name inside the checkpoint
inline constexpr uint32_t kMaxWindowSize = 1000;     // n of avg@n / ens@n
inline constexpr size_t kMaxWindowsPerKind = 64;     // sizes per --average / --ensemble
inline constexpr size_t kMaxTaskFiles = 256;         // task files per run
inline constexpr size_t kMaxTaskFileBytes = 48u << 20;  // one task file (messages: 64 MiB)
inline constexpr size_t kMaxNameBytes = 256;         // worker names, ids, devices, reasons' inputs
inline constexpr size_t kMaxReasonBytes = 4096;      // a worker's failure reason (cut, not refused)

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_LIMITS_H_
