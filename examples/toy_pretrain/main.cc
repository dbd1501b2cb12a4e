// steadyeval-toy-train: the toy pretraining run behind the demo (trainer.h).
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/cli_args.h"
#include "common/status.h"
#include "examples/toy_pretrain/corpus.h"
#include "examples/toy_pretrain/trainer.h"

namespace {

using steadyeval::FlagSpec;

const std::vector<FlagSpec>& Specs() {
  static const auto* specs = new std::vector<FlagSpec>{
      {"out", false, "checkpoint folder (created); gets step_%06d/ folders and .toy_tokenizer/",
       "DIR"},
      {"tasks_out", false,
       "write the eval task files here and their train splits (few-shot source) in DIR/train, "
       "before training starts",
       "DIR"},
      {"tasks_only", true,
       "only write the task files to --tasks_out, print the `steadyeval runs add` flags that "
       "evaluate them as the corpus formats them, and exit (no training, --out not needed)",
       ""},
      {"steps", false, "optimizer steps (default 1000)", "N"},
      {"save_every", false, "write a checkpoint every K steps (default 25)", "K"},
      {"lr", false, "AdamW learning rate after warmup, constant (default 3e-3: noisy on purpose)",
       "LR"},
      {"warmup", false, "linear warmup steps (default 30)", "N"},
      {"batch", false, "sequences per step (default 8)", "N"},
      {"seq_len", false, "tokens per training sequence (default 0: the longest document, so every prompt is seen whole)", "N"},
      {"seed", false, "corpus, tasks, init and batch order (default 1)", "N"},
      {"threads", false, "intra-op threads (default 1; OpenBLAS is kept at 1)", "N"},
      {"hidden", false, "model hidden size (default 64)", "N"},
      {"layers", false, "transformer layers (default 2)", "N"},
      {"heads", false, "attention heads (default 4)", "N"},
      {"kv_heads", false, "key/value heads (default 2)", "N"},
      {"intermediate", false, "MLP intermediate size (default 192)", "N"},
      {"vocab", false, "SentencePiece pieces, 256 of them byte fallbacks (default 640; the corpus allows up to about 700)", "N"},
      {"log_every", false, "progress line every N steps (default 40)", "N"},
      {"help", true, "show this help", ""}};
  return *specs;
}

int Usage(const std::string& message) {
  std::cerr << "error: " << message << "\nRun `steadyeval-toy-train --help` for the flags.\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Before libtorch starts OpenBLAS's pool (ConfigureThreads also sets it at run time).
  ::setenv("OPENBLAS_NUM_THREADS", "1", /*overwrite=*/1);
  const std::vector<std::string> argv_list(argv + 1, argv + argc);
  auto args = steadyeval::ParseArgs(argv_list, Specs());
  if (!args.ok()) return Usage(std::string(args.status().message()));
  if (args->Has("help")) {
    std::cout << "usage: steadyeval-toy-train --out DIR --tasks_out DIR [options]\n\n"
                 "Trains a small Llama (the worker's own model code, libtorch autograd, AdamW)\n"
                 "on a synthetic corpus of facts, additions, entailment and multiple choice, and\n"
                 "writes a Hugging Face checkpoint (config.json, model.safetensors,\n"
                 "tokenizer.model) every K steps, atomically. Evaluate with\n"
                 "--prompt_language en --few_shots "
              << steadyeval::toy::kToyFewShots
              << " --few_shots_from <tasks_out>/train.\n\n"
              << steadyeval::FlagsHelp(Specs());
    return 0;
  }
  if (!args->positionals().empty()) {
    return Usage(absl::StrCat("unexpected argument '", args->positionals()[0], "'"));
  }
  if (args->Has("tasks_only")) {
    if (!args->Has("tasks_out")) return Usage("--tasks_only needs --tasks_out DIR");
    auto seed = args->GetInt("seed", 1);
    if (!seed.ok() || *seed < 0) return Usage("--seed must be a non-negative integer");
    steadyeval::toy::CorpusOptions corpus_options;
    corpus_options.seed = static_cast<uint64_t>(*seed);
    absl::Status written = [&]() -> absl::Status {
      ASSIGN_OR_RETURN(steadyeval::toy::ToyCorpus corpus,
                       steadyeval::toy::GenerateCorpus(corpus_options));
      return steadyeval::toy::WriteTaskFiles(corpus, args->Get("tasks_out"));
    }();
    if (!written.ok()) {
      std::cerr << "error: " << written.message() << "\n";
      return 1;
    }
    // The run flags that prompt exactly as the training documents are formatted.
    std::cout << "--prompt_language "
              << steadyeval::PromptLanguageName(steadyeval::toy::kToyPromptLanguage)
              << " --few_shots " << steadyeval::toy::kToyFewShots << " --few_shots_from "
              << args->Get("tasks_out") << "/train\n";
    return 0;
  }
  if (!args->Has("out")) return Usage("--out DIR is required (the checkpoint folder)");

  steadyeval::toy::TrainerOptions options;
  options.out_dir = args->Get("out");
  options.tasks_out = args->Get("tasks_out");
  struct IntFlag {
    const char* name;
    int* field;
  };
  const IntFlag int_flags[] = {
      {"steps", &options.steps},       {"save_every", &options.save_every},
      {"warmup", &options.warmup_steps}, {"batch", &options.batch},
      {"seq_len", &options.seq_len},   {"threads", &options.threads},
      {"hidden", &options.hidden},     {"layers", &options.layers},
      {"heads", &options.heads},       {"kv_heads", &options.kv_heads},
      {"intermediate", &options.intermediate}, {"vocab", &options.vocab},
      {"log_every", &options.log_every}};
  for (const IntFlag& flag : int_flags) {
    auto value = args->GetInt(flag.name, *flag.field);
    if (!value.ok()) return Usage(std::string(value.status().message()));
    if (*value < -1000000000 || *value > 1000000000) {
      return Usage(absl::StrCat("--", flag.name, " is out of range"));
    }
    *flag.field = static_cast<int>(*value);
  }
  auto seed = args->GetInt("seed", 1);
  if (!seed.ok() || *seed < 0) return Usage("--seed must be a non-negative integer");
  options.seed = static_cast<uint64_t>(*seed);
  auto lr = args->GetDouble("lr", options.lr);
  if (!lr.ok()) return Usage(std::string(lr.status().message()));
  options.lr = *lr;
  options.progress = &std::cout;

  auto result = steadyeval::toy::RunToyPretraining(options);
  if (!result.ok()) {
    std::cerr << "error: " << result.status().message() << "\n";
    return result.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
