// The worker's offline subcommands (DESIGN §6 "Offline mode"), for humans and tests:
//
//   steadyeval-worker logprobs --checkpoint DIR (--tokens 1,2,3 | --text "...")
//                              [--json] [--tokenizer FILE] [--threads N]
//   steadyeval-worker eval --checkpoint DIR --task FILE [--few_shots K] [--json]
//                          [--tokenizer FILE] [--threads N]
//   steadyeval-worker average --checkpoint DIR --checkpoint DIR ... --out DIR [--shards K]
//                             [--threads N]
//   steadyeval-worker check [--device DEVICE] [--json]
//
// Each Run*Command takes the arguments after the subcommand word and returns the exit
// code: 0 success, 1 failure (one line on stderr), 2 usage error. Data goes to stdout
// only; progress goes to stderr. Not thread-safe (writes the process's stdout/stderr and
// sets libtorch's global thread count).
#ifndef STEADYEVAL_WORKER_BACKEND_OFFLINE_H_
#define STEADYEVAL_WORKER_BACKEND_OFFLINE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace steadyeval {

int RunLogprobsCommand(const std::vector<std::string>& args);
int RunEvalCommand(const std::vector<std::string>& args);
// Writes the uniform average of the given checkpoints (oldest first; the newest's
// config.json and tokenizer files are copied) as a new checkpoint folder (averager.h,
// checkpoint_writer.h).
int RunAverageCommand(const std::vector<std::string>& args);
// What a deployment needs before it takes jobs: the SentencePiece plugin loads (and from
// where), the device exists, and the thread setup. Exit 1 naming what is missing.
int RunCheckCommand(const std::vector<std::string>& args);

// Gives OpenBLAS (which runs every matrix product) `threads` threads and libtorch's own
// intra-op pool one (the two pools fight over the cores otherwise; see offline.cc),
// whatever OPENBLAS_NUM_THREADS / OMP_NUM_THREADS say; without OpenBLAS libtorch gets
// `threads`. INVALID_ARGUMENT when threads < 1. Process-global; call before the first
// forward pass.
absl::Status ConfigureThreads(int threads);

// The CPUs in this process's affinity mask (what `--threads` defaults to), at least 1.
int DefaultThreads();

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_BACKEND_OFFLINE_H_
