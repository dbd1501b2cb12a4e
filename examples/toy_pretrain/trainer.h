// The toy pretraining run (examples/toy_pretrain, issue #6): trains the worker's own Llama
// (LlamaModel::ForwardForTraining, libtorch autograd, AdamW) on the synthetic corpus of
// corpus.h and writes a Hugging Face-layout checkpoint every `save_every` steps.
//
// Sequence: generate the corpus; write the task files (before any training, so a watcher
// can register them); train a SentencePiece tokenizer on the corpus into
// OUT/.toy_tokenizer/tokenizer.model (with the steadyeval-fixtures binary, found next to
// this one or at $STEADYEVAL_FIXTURES_BIN, in a child process: libsentencepiece cannot
// share a process with libtorch); tokenize every document with the worker's Tokenizer
// (BOS + document + EOS, exactly as the evaluator will tokenize); then train on windows of
// `seq_len` + 1 tokens that start at document starts of the concatenated stream (seq_len
// defaults to the longest document, so every prompt is seen whole, at the positions the
// evaluator will use).
// Checkpoints OUT/step_%06d (config.json with model_type llama, fp32, bos 1, eos 2;
// model.safetensors; tokenizer.model) are written with WriteCheckpoint
// (worker/checkpoint/checkpoint_writer.h): into OUT/step_%06d.tmp-PID, then renamed, so a folder
// named step_%06d is always complete (the coordinator's default step patterns match whole
// entry names and do not match the temporary name).
//
// Deterministic given the options (torch's global generator is seeded from `seed`);
// thread-compatible (uses torch's global generator and thread settings: one run per
// process at a time).
#ifndef STEADYEVAL_EXAMPLES_TOY_PRETRAIN_TRAINER_H_
#define STEADYEVAL_EXAMPLES_TOY_PRETRAIN_TRAINER_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "examples/toy_pretrain/corpus.h"

namespace steadyeval::toy {

struct TrainerOptions {
  std::string out_dir;    // checkpoint folder (created)
  std::string tasks_out;  // task files (created); empty: not written
  int steps = 1000;
  int save_every = 25;
  double lr = 3e-3;       // peak, constant after warmup
  int warmup_steps = 30;  // linear warmup from lr / warmup_steps
  double weight_decay = 0.01;
  int batch = 8;
  // Tokens per training sequence; 0: the longest document (every document fits whole:
  // the evaluator's prompts are as long, and positions never seen in training break
  // the model there).
  int seq_len = 0;
  uint64_t seed = 1;
  int threads = 1;
  int hidden = 64;
  int layers = 2;
  int heads = 4;
  int kv_heads = 2;
  int intermediate = 192;
  int vocab = 640;        // SentencePiece pieces (256 are byte fallbacks)
  int log_every = 40;     // progress line every N steps
  CorpusOptions corpus;   // its seed is overridden by `seed`
  std::ostream* progress = nullptr;  // progress lines (flushed); null: silent
  Clock* clock = Clock::Real();      // for steps/s and the total time only
};

struct TrainResult {
  // Mean training loss of each logged interval, with the step it ends at.
  std::vector<std::pair<int, double>> losses;
  std::vector<std::string> checkpoints;  // folders written, in order
  double seconds = 0;
};

// INVALID_ARGUMENT naming the option (as its --flag) for an out-of-range value.
absl::Status ValidateOptions(const TrainerOptions& options);

// Runs the whole training. Errors: ValidateOptions's; INTERNAL naming the file for I/O
// failures or a libtorch error; ALREADY_EXISTS when a checkpoint folder already exists
// (use a fresh --out).
absl::StatusOr<TrainResult> RunToyPretraining(const TrainerOptions& options);

}  // namespace steadyeval::toy

#endif  // STEADYEVAL_EXAMPLES_TOY_PRETRAIN_TRAINER_H_
