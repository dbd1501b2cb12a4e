#include "worker/backend/offline.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <sched.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/cli_args.h"
#include "common/scoring.h"
#include "common/status.h"
#include "common/task.h"
#include "nlohmann/json.hpp"
#include "worker/averaging/averager.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/checkpoint/checkpoint_writer.h"
#include "worker/eval/evaluator.h"
#include "worker/model/language_model.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/torch_status.h"

// OpenBLAS's own setter, when libtorch's BLAS is OpenBLAS; a weak reference stays null
// (and is skipped) with any other BLAS.
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

namespace steadyeval {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

const FlagSpec kHelpFlag{"help", true, "print this help and exit"};
const FlagSpec kCheckpointFlag{"checkpoint", false, "Hugging Face checkpoint folder", "DIR"};
const FlagSpec kTokenizerFlag{
    "tokenizer", false,
    "tokenizer.model (SentencePiece) or tokenizer.json (byte-level BPE) to use instead of the "
    "checkpoint's (default: DIR/tokenizer.model, else DIR/tokenizer.json)",
    "FILE"};
const FlagSpec kDeviceFlag{"device", false,
                           "cpu (default), cuda or cuda:K; CUDA keeps fp16/bf16 weights in "
                           "their dtype, the CPU computes in float32",
                           "DEVICE"};
const FlagSpec kThreadsFlag{
    "threads", false,
    "CPU threads for OpenBLAS's matrix products, whatever OPENBLAS_NUM_THREADS says; "
    "libtorch's own kernels keep one thread beside them (default: every CPU this process "
    "may run on)",
    "N"};
const FlagSpec kJsonFlag{"json", true, "print JSON instead of a table"};

int Fail(const absl::Status& status) {
  std::cerr << "error: " << status.message() << std::endl;
  return kExitFailure;
}

// The checkpoint's model on the --device of `args` (default cpu).
absl::StatusOr<std::unique_ptr<LanguageModel>> LoadModelOnDevice(const TensorSource& source,
                                                                 const ParsedArgs& args) {
  ASSIGN_OR_RETURN(const at::Device device, ParseDevice(args.Get("device", "cpu")));
  ASSIGN_OR_RETURN(const WeightPlacement placement, ChoosePlacement(source, device));
  return LoadLanguageModel(source, placement);
}

int UsageError(absl::string_view message, absl::string_view command) {
  std::cerr << "error: " << message << " (see steadyeval-worker " << command << " --help)"
            << std::endl;
  return kExitUsage;
}

absl::Status ApplyThreads(const ParsedArgs& args) {
  ASSIGN_OR_RETURN(int64_t threads, args.GetInt("threads", DefaultThreads()));
  if (threads < 1 || threads > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("--threads must be at least 1, got ", threads));
  }
  return ConfigureThreads(static_cast<int>(threads));
}

absl::StatusOr<std::vector<int64_t>> ParseTokenList(const std::string& text) {
  std::vector<int64_t> ids;
  for (absl::string_view piece : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int64_t id;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(piece), &id) || id < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tokens: '", piece, "' is not a non-negative integer"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--tokens: no token ids given");
  return ids;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::string JsonEscapePiece(const std::string& piece) {
  return nlohmann::json(piece).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

int DefaultThreads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

absl::Status ConfigureThreads(int threads) {
  if (threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("thread count must be at least 1, got ", threads));
  }
  // A matrix product is one OpenBLAS call: OpenBLAS's own pool decides how many cores it
  // uses, whatever libtorch's thread count says, so it gets every thread. libtorch's
  // OpenMP pool runs the elementwise kernels between the products; given threads too, its
  // spinning workers and OpenBLAS's yielding ones take the cores from each other (measured
  // on 2 cores, bench/RESULTS.md "Evaluation engine": packed scoring 1.2x and batched
  // decoding 2.5x slower), so it keeps one thread while OpenBLAS has the cores. Without
  // OpenBLAS (another BLAS), libtorch's pool gets them.
  const bool openblas = openblas_set_num_threads != nullptr;
  const std::string count = std::to_string(threads);
  ::setenv("OPENBLAS_NUM_THREADS", count.c_str(), /*overwrite=*/1);
  if (openblas) openblas_set_num_threads(threads);
  return GuardTorch("configure threads", [&]() -> absl::Status {
    at::set_num_threads(openblas ? 1 : threads);
    return absl::OkStatus();
  });
}

int RunLogprobsCommand(const std::vector<std::string>& argv) {
  const std::vector<FlagSpec> specs = {
      kCheckpointFlag,
      {"tokens", false, "comma-separated token ids (no tokenizer needed, no BOS added)", "IDS"},
      {"text", false, "text to tokenize (BOS added per the checkpoint's rule)", "TEXT"},
      kTokenizerFlag, kDeviceFlag, kThreadsFlag, kJsonFlag, kHelpFlag};
  auto args = ParseArgs(argv, specs);
  if (!args.ok()) return UsageError(args.status().message(), "logprobs");
  if (args->Has("help")) {
    std::cout << "usage: steadyeval-worker logprobs --checkpoint DIR (--tokens IDS | --text TEXT)"
                 " [options]\n\nPrints log p(token_i | tokens before i) for every token.\n\n"
              << FlagsHelp(specs);
    return kExitOk;
  }
  if (!args->positionals().empty()) {
    return UsageError(absl::StrCat("unexpected argument '", args->positionals()[0], "'"),
                      "logprobs");
  }
  if (!args->Has("checkpoint")) return UsageError("--checkpoint is required", "logprobs");
  if (args->Has("tokens") == args->Has("text")) {
    return UsageError("give exactly one of --tokens and --text", "logprobs");
  }
  std::vector<int64_t> tokens;
  if (args->Has("tokens")) {
    auto parsed = ParseTokenList(args->Get("tokens"));
    if (!parsed.ok()) return UsageError(parsed.status().message(), "logprobs");
    tokens = *std::move(parsed);
  }
  if (absl::Status s = ApplyThreads(*args); !s.ok()) return UsageError(s.message(), "logprobs");

  const std::string dir = args->Get("checkpoint");
  auto reader = CheckpointReader::Open(dir);
  if (!reader.ok()) return Fail(reader.status());
  std::unique_ptr<Tokenizer> tokenizer;
  if (args->Has("text")) {
    auto loaded = Tokenizer::LoadForCheckpoint(dir, args->Get("tokenizer"));
    if (!loaded.ok()) return Fail(loaded.status());
    tokenizer = *std::move(loaded);
    auto ids = tokenizer->EncodeWithBos(args->Get("text"));
    if (!ids.ok()) return Fail(ids.status());
    tokens = *std::move(ids);
    if (tokens.empty()) return Fail(absl::InvalidArgumentError("--text encodes to no tokens"));
  }
  auto model = LoadModelOnDevice(**reader, *args);
  if (!model.ok()) return Fail(model.status());
  reader->reset();  // weights are copied; release the mapping
  auto logprobs = TokenLogprobs(**model, tokens);
  if (!logprobs.ok()) return Fail(logprobs.status());

  if (args->Has("json")) {
    nlohmann::json out;
    out["tokens"] = tokens;
    nlohmann::json lps = nlohmann::json::array();
    for (size_t i = 0; i < tokens.size(); ++i) {
      lps.push_back(i == 0 ? nlohmann::json(nullptr) : nlohmann::json((*logprobs)[i]));
    }
    out["token_logprobs"] = std::move(lps);
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return kExitOk;
  }
  std::cout << absl::StrFormat("%5s  %8s  %12s  %s\n", "pos", "token", "logprob",
                               tokenizer ? "piece" : "");
  double total = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    std::string lp = i == 0 ? "-" : absl::StrFormat("%.6f", (*logprobs)[i]);
    if (i > 0) total += (*logprobs)[i];
    std::cout << absl::StrFormat("%5d  %8d  %12s  %s\n", i, tokens[i], lp,
                                 tokenizer ? JsonEscapePiece(tokenizer->IdToPiece(tokens[i])) : "");
  }
  std::cout << absl::StrFormat("sum of log-probs (tokens 1..%d): %.6f\n", tokens.size() - 1, total);
  return kExitOk;
}

int RunEvalCommand(const std::vector<std::string>& argv) {
  const std::vector<FlagSpec> specs = {
      kCheckpointFlag,
      {"task", false, "task file: llm-jp-eval .json (generation) or .jsonl (multiple choice)",
       "FILE"},
      {"few_shots", false, "few-shot examples in generation prompts (default 4)", "K"},
      {"few_shots_from", false,
       "take the shots from this llm-jp-eval file's first K samples (its train split) "
       "instead of the task file's few_shots", "FILE"},
      {"max_samples", false, "evaluate only the first N samples (default: all; llm-jp-eval uses 100)",
       "N"},
      {"metric", false, "primary metric (default: the task's first; acc for multiple choice)",
       "NAME"},
      {"prompt_language", false, "prompt template: ja (default) or en", "LANG"},
      {"bos", false, "BOS token: auto (tokenizer config, default), add or none", "MODE"},
      {"max_new_tokens_delta", false, "tokens added to each task's output_length (default 0)", "N"},
      {"batch_size", false, "generation examples decoded together (default 8)", "N"},
      {"batch_tokens", false,
       absl::StrCat("tokens per packed forward pass; bounds the activations' memory (default ",
                    kDefaultBatchTokens, ")"),
       "N"},
      {"engine", false,
       "packed (default: shared prefixes run once, tokens of many examples per forward) or "
       "per_request (each example's options forward on their own; for comparison)",
       "NAME"},
      kTokenizerFlag, kDeviceFlag, kThreadsFlag, kJsonFlag, kHelpFlag};
  auto args = ParseArgs(argv, specs);
  if (!args.ok()) return UsageError(args.status().message(), "eval");
  if (args->Has("help")) {
    std::cout << "usage: steadyeval-worker eval --checkpoint DIR --task FILE [options]\n\n"
                 "Evaluates one checkpoint on one task file and prints every metric the task\n"
                 "lists (the primary one first) and the per-example outputs.\n\n"
              << FlagsHelp(specs);
    return kExitOk;
  }
  if (!args->positionals().empty()) {
    return UsageError(absl::StrCat("unexpected argument '", args->positionals()[0], "'"), "eval");
  }
  if (!args->Has("checkpoint") || !args->Has("task")) {
    return UsageError("--checkpoint and --task are required", "eval");
  }
  auto few_shots = args->GetInt("few_shots", 4);
  if (!few_shots.ok()) return UsageError(few_shots.status().message(), "eval");
  if (*few_shots < 0 || *few_shots > 1000) {
    return UsageError("--few_shots must be between 0 and 1000", "eval");
  }
  auto max_samples = args->GetInt("max_samples", 0);
  if (!max_samples.ok() || *max_samples < 0 || *max_samples > 100000000) {
    return UsageError("--max_samples must be a count >= 1 (or 0 for all)", "eval");
  }
  auto delta = args->GetInt("max_new_tokens_delta", 0);
  if (!delta.ok() || *delta < 0 || *delta > 4096) {
    return UsageError("--max_new_tokens_delta must be in 0..4096", "eval");
  }
  auto batch_size = args->GetInt("batch_size", 8);
  if (!batch_size.ok() || *batch_size < 1 || *batch_size > 1024) {
    return UsageError("--batch_size must be in 1..1024", "eval");
  }
  auto batch_tokens = args->GetInt("batch_tokens", kDefaultBatchTokens);
  if (!batch_tokens.ok() || *batch_tokens < 1 || *batch_tokens > 1000000) {
    return UsageError("--batch_tokens must be in 1..1000000", "eval");
  }
  const std::string engine_name = args->Get("engine", "packed");
  if (engine_name != "packed" && engine_name != "per_request") {
    return UsageError(absl::StrCat("--engine must be packed or per_request, got '", engine_name, "'"),
                      "eval");
  }
  std::optional<PromptLanguage> language = ParsePromptLanguage(args->Get("prompt_language"));
  if (!language.has_value()) return UsageError("--prompt_language must be ja or en", "eval");
  std::optional<BosMode> bos = ParseBosMode(args->Get("bos"));
  if (!bos.has_value()) return UsageError("--bos must be auto, add or none", "eval");
  if (absl::Status s = ApplyThreads(*args); !s.ok()) return UsageError(s.message(), "eval");

  const std::string task_path = args->Get("task");
  auto content = ReadFile(task_path);
  if (!content.ok()) return Fail(content.status());
  TaskOptions task_options;
  task_options.metric = args->Get("metric");
  task_options.max_samples = static_cast<uint32_t>(*max_samples);
  if (args->Has("few_shots_from")) {
    task_options.train_filename = args->Get("few_shots_from");
    auto train = ReadFile(task_options.train_filename);
    if (!train.ok()) return Fail(train.status());
    task_options.train_content = *std::move(train);
  }
  auto task = ParseTask(task_path, *content, task_options);
  if (!task.ok()) return Fail(task.status());
  if (absl::Status s = CheckMetricsSupported(*task); !s.ok()) return Fail(s);
  for (const std::string& m : UnsupportedMetrics(*task)) {
    std::cerr << "note: " << task->name << " lists metric '" << m << "', which is not supported; skipped\n";
  }

  const std::string dir = args->Get("checkpoint");
  auto tokenizer = Tokenizer::LoadForCheckpoint(dir, args->Get("tokenizer"));
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  if (*bos != BosMode::kAuto) {
    if (absl::Status s = (*tokenizer)->SetAddBos(*bos == BosMode::kAdd); !s.ok()) return Fail(s);
  }
  std::unique_ptr<LanguageModel> model;
  {
    auto reader = CheckpointReader::Open(dir);
    if (!reader.ok()) return Fail(reader.status());
    auto loaded = LoadModelOnDevice(**reader, *args);
    if (!loaded.ok()) return Fail(loaded.status());
    model = *std::move(loaded);
  }

  EvalOptions options;
  options.prompt.few_shots = static_cast<int>(*few_shots);
  options.prompt.language = *language;
  options.max_new_tokens_delta = static_cast<int>(*delta);
  options.batch_size = static_cast<int>(*batch_size);
  options.batch_tokens = *batch_tokens;
  options.engine = engine_name == "packed" ? EvalEngine::kPacked : EvalEngine::kPerRequest;
  options.progress = [&](size_t done, size_t total) {
    std::cerr << "\r" << task->name << ": " << done << "/" << total << " examples"
              << (done == total ? "\n" : "") << std::flush;
    return true;
  };
  auto outputs = EvaluateTask(*model, **tokenizer, *task, options);
  if (!outputs.ok()) return Fail(outputs.status());
  std::vector<RawOutput> raw;
  for (const EvalOutput& o : *outputs) raw.push_back({o.output, o.option_logliks});
  auto score = ScoreTask(*task, raw);
  if (!score.ok()) return Fail(score.status());
  const std::string bos_used =
      (*tokenizer)->add_bos() ? absl::StrCat("bos ", (*tokenizer)->bos_id()) : "no bos";

  if (args->Has("json")) {
    nlohmann::json out;
    out["task"] = task->name;
    out["task_sha256"] = task->sha256;
    out["metric"] = score->metric;
    out["score"] = score->score;
    out["metrics"] = score->metric_scores;
    out["bos"] = bos_used;
    out["prompt_language"] = std::string(PromptLanguageName(*language));
    nlohmann::json examples = nlohmann::json::array();
    for (size_t i = 0; i < outputs->size(); ++i) {
      nlohmann::json e = {{"index", (*outputs)[i].index},
                          {"output", (*outputs)[i].output},
                          {"normalized", score->examples[i].normalized},
                          {"metrics", score->examples[i].metric_values}};
      if (score->per_example) e["score"] = score->examples[i].score;
      if (!(*outputs)[i].option_logliks.empty()) e["option_logliks"] = (*outputs)[i].option_logliks;
      examples.push_back(std::move(e));
    }
    out["examples"] = std::move(examples);
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return kExitOk;
  }
  for (size_t i = 0; i < outputs->size(); ++i) {
    std::cout << absl::StrFormat("%5d  score %.4f  output %s\n", (*outputs)[i].index,
                                 score->examples[i].score,
                                 JsonEscapePiece((*outputs)[i].output));
  }
  std::cout << absl::StrFormat("%s: %s = %.6f over %d examples (%s)\n", task->name, score->metric,
                               score->score, outputs->size(), bos_used);
  for (const auto& [metric, value] : score->metric_scores) {
    if (metric != score->metric) std::cout << absl::StrFormat("  %s = %.6f\n", metric, value);
  }
  return kExitOk;
}

int RunAverageCommand(const std::vector<std::string>& argv) {
  const std::vector<FlagSpec> specs = {
      {"checkpoint", false, "a checkpoint folder to average (repeat; oldest first)", "DIR"},
      {"out", false, "folder to create for the average (must not exist)", "DIR"},
      {"shards", false, "safetensors files to write (default 1: model.safetensors)", "K"},
      kThreadsFlag, kHelpFlag};
  auto args = ParseArgs(argv, specs);
  if (!args.ok()) return UsageError(args.status().message(), "average");
  if (args->Has("help")) {
    std::cout << "usage: steadyeval-worker average --checkpoint DIR --checkpoint DIR ... --out DIR"
                 " [options]\n\n"
                 "Writes the uniform average of the checkpoints (fp32 accumulated in fp64, bf16/fp16\n"
                 "in fp32, cast back to their dtype) as a new Hugging Face checkpoint folder, with\n"
                 "config.json and tokenizer files copied from the last (newest) checkpoint. The\n"
                 "checkpoints must agree in tensor names, shapes, dtypes and config.json.\n\n"
              << FlagsHelp(specs);
    return kExitOk;
  }
  if (!args->positionals().empty()) {
    return UsageError(absl::StrCat("unexpected argument '", args->positionals()[0], "'"),
                      "average");
  }
  const std::vector<std::string> members = args->GetAll("checkpoint");
  if (members.empty() || !args->Has("out")) {
    return UsageError("at least one --checkpoint and --out are required", "average");
  }
  auto shards = args->GetInt("shards", 1);
  if (!shards.ok()) return UsageError(shards.status().message(), "average");
  if (*shards < 1 || *shards > 100000) return UsageError("--shards must be at least 1", "average");
  if (absl::Status s = ApplyThreads(*args); !s.ok()) return UsageError(s.message(), "average");

  auto average = AverageCheckpoints(members);
  if (!average.ok()) return Fail(average.status());
  const std::string out = args->Get("out");
  absl::Status written = WriteCheckpoint(**average, out, static_cast<int>(*shards), members.back());
  if (!written.ok()) return Fail(written);
  std::cout << "wrote the average of " << members.size() << " checkpoints to " << out << " ("
            << (*average)->bytes() << " bytes of weights)" << std::endl;
  return kExitOk;
}

int RunCheckCommand(const std::vector<std::string>& argv) {
  const std::vector<FlagSpec> specs = {
      {"device", false, "the device jobs will run on: cpu, cuda or cuda:K (default cpu)", "DEVICE"},
      kJsonFlag, kHelpFlag};
  auto args = ParseArgs(argv, specs);
  if (!args.ok()) return UsageError(args.status().message(), "check");
  if (args->Has("help")) {
    std::cout << "usage: steadyeval-worker check [--device DEVICE] [--json]\n\n"
                 "Checks what this worker needs before it takes jobs, on this machine: the\n"
                 "SentencePiece plugin (libsteadyeval_spm.so, beside the binary once installed)\n"
                 "loads, and DEVICE exists. Prints where the plugin was loaded from, the CUDA\n"
                 "devices libtorch sees and the default thread count; exits 1 naming what is\n"
                 "missing. Run it on each node (e.g. `srun steadyeval-worker check --device cuda`).\n\n"
              << FlagsHelp(specs);
    return kExitOk;
  }
  if (!args->positionals().empty()) {
    return UsageError(absl::StrCat("unexpected argument '", args->positionals()[0], "'"), "check");
  }
  nlohmann::json report;
  std::vector<std::string> problems;
  absl::StatusOr<std::string> plugin = SentencePiecePluginPath();
  report["sentencepiece_plugin"] = plugin.ok() ? *plugin : "";
  if (!plugin.ok()) problems.emplace_back(plugin.status().message());
  const std::string device = args->Get("device", "cpu");
  absl::StatusOr<at::Device> parsed = ParseDevice(device);
  report["device"] = device;
  if (!parsed.ok()) problems.emplace_back(parsed.status().message());
  report["cuda_devices"] = static_cast<int64_t>(at::detail::getCUDAHooks().getNumGPUs());
  report["threads"] = DefaultThreads();
  report["problems"] = problems;
  if (args->Has("json")) {
    std::cout << report.dump() << std::endl;
  } else {
    std::cout << "sentencepiece plugin: "
              << (plugin.ok() ? *plugin : std::string("NOT LOADED")) << "\n"
              << "device: " << device << (parsed.ok() ? " (ok)" : " (NOT AVAILABLE)") << "\n"
              << "cuda devices: " << report["cuda_devices"].get<int64_t>() << "\n"
              << "threads (default --threads): " << DefaultThreads() << std::endl;
  }
  for (const std::string& problem : problems) {
    std::cerr << "steadyeval-worker check: " << problem << "\n";
  }
  return problems.empty() ? kExitOk : 1;
}

}  // namespace steadyeval
