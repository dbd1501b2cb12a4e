// Converters (DESIGN §4, issue #18): commands a worker's operator declares with
// `--converter NAME='CMD ARGS {src} {dst}'` that turn a training framework's checkpoint
// (Megatron torch_dist, DeepSpeed, PyTorch DCP) into a Hugging Face layout folder the
// evaluator reads. A run names one (`runs add --convert NAME`); a client never chooses a
// command.
//
// The command line is split into arguments without a shell:
//   - unquoted whitespace separates arguments;
//   - '...' keeps everything up to the next ' literally (no escapes inside);
//   - "..." keeps everything up to the next unescaped "; inside, \" and \\ are a " and a \;
//   - outside quotes, \ makes the next character literal;
//   - quoted and unquoted parts next to each other form one argument (a"b c"d is `ab cd`).
// In every argument, each {src} becomes the checkpoint folder to read and each {dst} the
// (existing, empty) folder to write; both must appear, and not in the command itself.
// CMD is looked up in PATH when it has no '/'.
//
// RunConverter runs it with posix_spawn as the worker's own user, with the worker's
// environment, in a process group of its own, stdin /dev/null and stdout + stderr into one
// pipe of which the last kOutputTailBytes are kept for messages. Thread-safe (no shared
// state).
#ifndef STEADYEVAL_WORKER_CACHE_CONVERTER_H_
#define STEADYEVAL_WORKER_CACHE_CONVERTER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/clock.h"

namespace steadyeval {

// How much of a converter's output (stdout and stderr interleaved) messages quote.
inline constexpr size_t kOutputTailBytes = 4096;

struct ConverterSpec {
  std::string name;               // [A-Za-z0-9_.-]+
  std::vector<std::string> argv;  // with the {src} / {dst} placeholders
  // The command line as declared (after NAME=), part of the converted entry's identity:
  // changing the command makes new conversions.
  std::string command_line;
};

// Parses one --converter value, "NAME=CMD ARGS {src} {dst}". INVALID_ARGUMENT naming the
// value and what is wrong: no NAME=, a bad name, an unterminated quote, no command, no {src}
// or no {dst}, a placeholder in the command itself.
absl::StatusOr<ConverterSpec> ParseConverterSpec(const std::string& flag_value);

// argv with {src} and {dst} substituted in every argument.
std::vector<std::string> ConverterArgv(const ConverterSpec& spec, const std::string& src,
                                       const std::string& dst);

struct ConverterRunOptions {
  // From the start; then the process group gets SIGTERM, and SIGKILL kill_grace_ms later.
  int64_t timeout_ms = 3'600'000;
  int64_t kill_grace_ms = 5'000;
  // How often the child is looked at (exit, timeout, `check`), in real time.
  int64_t poll_ms = 100;
  // Measures the timeout; not owned.
  Clock* clock = Clock::Real();
  // Called at every poll while the converter runs; a non-OK status stops it (group killed
  // as for the timeout) and is returned as is. E.g. the job's lease was lost (CANCELLED) or
  // its output outgrew the cache (RESOURCE_EXHAUSTED). May be empty.
  std::function<absl::Status()> check;
};

// Runs `spec` on `src` → `dst` and waits for it. OK when it exited with status 0 (its output
// is not looked at here). Otherwise, each message naming the converter and quoting the
// output's tail:
//   DEADLINE_EXCEEDED  it ran past options.timeout_ms (the flag --converter_timeout_s is
//                      named) and was killed;
//   INTERNAL           it exited non-zero (the code is named) or was killed by a signal;
//   FAILED_PRECONDITION  it could not be started (no such command, not executable);
//   whatever options.check returned.
// When the process exits, whatever is left of its process group is killed too.
absl::Status RunConverter(const ConverterSpec& spec, const std::string& src,
                          const std::string& dst, const ConverterRunOptions& options);

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_CACHE_CONVERTER_H_
