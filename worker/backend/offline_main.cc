// steadyeval-eval: the worker's offline commands (`logprobs`, `eval`, `average`) without
// the daemon. It links libtorch and the evaluation core only — no gRPC, RocksDB or
// prometheus-cpp — so it builds on a GPU machine with its own CUDA libtorch
// (cmake -DSTEADYEVAL_TORCH_ONLY=ON, README "Building the evaluation core alone").
#include <cstdio>
#include <string>
#include <vector>

#include "worker/backend/offline.h"

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  const std::vector<std::string> args(argv + (argc > 1 ? 2 : 1), argv + argc);
  if (command == "logprobs") return steadyeval::RunLogprobsCommand(args);
  if (command == "eval") return steadyeval::RunEvalCommand(args);
  if (command == "average") return steadyeval::RunAverageCommand(args);
  const bool help = command == "--help" || command == "-h" || command == "help";
  std::fprintf(help ? stdout : stderr,
               "%s"
               "steadyeval-eval: offline evaluation with the steadyeval worker's core.\n\n"
               "Usage:\n"
               "  steadyeval-eval logprobs --checkpoint DIR (--tokens 1,2,3 | --text \"...\")"
               " [--device cpu|cuda[:K]] [--json]\n"
               "  steadyeval-eval eval --checkpoint DIR --task FILE [--device cpu|cuda[:K]]"
               " [--json]\n"
               "  steadyeval-eval average --checkpoint DIR --checkpoint DIR ... --out DIR\n\n"
               "Run `steadyeval-eval COMMAND --help` for each command's flags.\n",
               help || command.empty() ? "" : ("error: unknown command '" + command + "'\n\n").c_str());
  return help ? 0 : 2;
}
