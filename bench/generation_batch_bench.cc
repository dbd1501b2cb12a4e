// Benchmark (not a test) for DESIGN §6's batched greedy generation: one generation task
// evaluated with EvaluateTask at batch size 1 and at batch size B (default 8), in the same
// process, on the same model; the outputs must be identical.
//
// The model is a random fp32 Llama (default 4 layers, hidden 256, 8 heads, 4 kv heads,
// MLP 704) written into a temp folder, with the fixture SentencePiece tokenizer
// (tests/fixtures/tokenizer/tokenizer.model) and its vocabulary. The task has N samples
// (default 48) of varied lengths, 4 few-shots and output_length K (default 32); both runs use
// the default (packed) engine, so prompts share their prefixes the same way and only the
// decoding batch differs. Each configuration runs R times (default 3) after one
// warm-up run; the median wall time is reported.
//
//   steadyeval-bench-generation-batch [--samples N] [--batch B] [--repeats R]
//       [--threads T] [--layers L] [--hidden H] [--output_length K] [--tokenizer FILE]
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "bench/bench_flags.h"
#include "common/prompt.h"
#include "common/task.h"
#include "nlohmann/json.hpp"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/eval/evaluator.h"
#include "worker/model/language_model.h"
#include "worker/backend/offline.h"
#include "worker/checkpoint/test_checkpoints.h"
#include "worker/tokenizer/tokenizer.h"

namespace steadyeval {
namespace {

using testing_checkpoints::NamedTensors;
using testing_checkpoints::WriteTestCheckpoint;

struct Flags {
  int samples = 48;
  int batch = 8;
  int repeats = 3;
  int threads = 1;
  int layers = 4;
  int hidden = 256;
  int output_length = 32;
  std::string tokenizer = STEADYEVAL_SOURCE_DIR "/tests/fixtures/tokenizer/tokenizer.model";
};

[[noreturn]] void Usage(const std::string& why) {
  std::cerr << "steadyeval-bench-generation-batch: " << why << "\n"
            << "usage: steadyeval-bench-generation-batch [--samples N] [--batch B] "
               "[--repeats R] [--threads T] [--layers L] [--hidden H] [--output_length K] "
               "[--tokenizer FILE]\n";
  std::exit(2);
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  BenchFlags flags(argc, argv, Usage);
  while (flags.Next()) {
    const std::string& arg = flags.flag();
    if (arg == "--samples") f.samples = flags.Positive();
    else if (arg == "--batch") f.batch = flags.Positive();
    else if (arg == "--repeats") f.repeats = flags.Positive();
    else if (arg == "--threads") f.threads = flags.Positive();
    else if (arg == "--layers") f.layers = flags.Positive();
    else if (arg == "--hidden") f.hidden = flags.Positive();
    else if (arg == "--output_length") f.output_length = flags.Positive();
    else if (arg == "--tokenizer") f.tokenizer = flags.Value();
    else flags.Unknown();
  }
  if (f.hidden % 64 != 0) Usage("--hidden must be a multiple of 64 (8 heads of even size)");
  return f;
}

constexpr int kHeads = 8, kKvHeads = 4;

// A random Llama checkpoint: N(0, 0.02²) matrices (embedding N(0, 1)), unit RMSNorm weights.
void WriteModel(const std::string& dir, const Flags& f, int64_t vocab) {
  const int64_t H = f.hidden, I = (f.hidden * 11) / 4, hd = H / kHeads;
  at::manual_seed(1234);
  auto mat = [](int64_t rows, int64_t cols, double std) {
    return at::randn({rows, cols}, at::kFloat) * std;
  };
  NamedTensors t;
  t.emplace_back("model.embed_tokens.weight", mat(vocab, H, 1.0));
  for (int l = 0; l < f.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.emplace_back(p + "input_layernorm.weight", at::ones({H}));
    t.emplace_back(p + "self_attn.q_proj.weight", mat(kHeads * hd, H, 0.06));
    t.emplace_back(p + "self_attn.k_proj.weight", mat(kKvHeads * hd, H, 0.06));
    t.emplace_back(p + "self_attn.v_proj.weight", mat(kKvHeads * hd, H, 0.06));
    t.emplace_back(p + "self_attn.o_proj.weight", mat(H, kHeads * hd, 0.06));
    t.emplace_back(p + "post_attention_layernorm.weight", at::ones({H}));
    t.emplace_back(p + "mlp.gate_proj.weight", mat(I, H, 0.06));
    t.emplace_back(p + "mlp.up_proj.weight", mat(I, H, 0.06));
    t.emplace_back(p + "mlp.down_proj.weight", mat(H, I, 0.04));
  }
  t.emplace_back("model.norm.weight", at::ones({H}));
  t.emplace_back("lm_head.weight", mat(vocab, H, 0.06));
  nlohmann::json config = {
      {"model_type", "llama"},        {"hidden_size", H},
      {"intermediate_size", I},       {"num_hidden_layers", f.layers},
      {"num_attention_heads", kHeads}, {"num_key_value_heads", kKvHeads},
      {"vocab_size", vocab},          {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0},        {"max_position_embeddings", 2048},
      {"bos_token_id", 1},            {"eos_token_id", 2},
      {"tie_word_embeddings", false}, {"torch_dtype", "float32"}};
  WriteTestCheckpoint(dir, config.dump(), t);
}

// N samples cycling through sentences of 1 to ~25 words, so every batch is ragged.
std::string TaskJson(int samples, int output_length) {
  static const char* kSentences[] = {
      "The sun rises in the east and sets in the west.",
      "Water boils at 100 degrees Celsius at sea level.",
      "A week has seven days.",
      "Tokyo is the capital of Japan.",
      "Mount Fuji is the highest mountain in Japan. The Pacific Ocean is the largest ocean "
      "on Earth. Cats and dogs are popular pets.",
      "13*4=",
      "Birds have feathers and most birds can fly.",
      "Spring, summer, autumn and winter are the four seasons.",
      "富士山は日本で一番高い山です。",
      "Red",
      "Plants need water, air and light to grow. Fish live in water and breathe with gills.",
      "What is the capital of France?",
  };
  constexpr int kCount = sizeof(kSentences) / sizeof(kSentences[0]);
  nlohmann::json task = {
      {"instruction", "Answer the question."},
      {"output_length", output_length},
      {"metrics", {"exact_match"}},
      {"few_shots",
       {{{"input", "What is 2+2?"}, {"output", "4"}},
        {{"input", "日本の首都はどこですか？"}, {"output", "東京"}},
        {{"input", "What is the capital of Italy?"}, {"output", "Rome"}},
        {{"input", "A year has twelve months."}, {"output", "twelve"}}}},
      {"samples", nlohmann::json::array()}};
  for (int i = 0; i < samples; ++i) {
    std::string input = kSentences[i % kCount];
    for (int r = 0; r < (i / kCount) % 3; ++r) {
      input += std::string(" ") + kSentences[(i + r + 1) % kCount];
    }
    task["samples"].push_back({{"input", input}, {"output", "x"}});
  }
  return task.dump();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string Fmt(const char* format, double x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, x);
  return buf;
}

int Main(int argc, char** argv) {
  const Flags flags = ParseFlags(argc, argv);
  if (absl::Status s = ConfigureThreads(flags.threads); !s.ok()) {
    std::cerr << "ConfigureThreads: " << s << "\n";
    return 1;
  }
  auto tokenizer = Tokenizer::Load(flags.tokenizer, BosRule{true, 1});
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status() << "\n";
    return 1;
  }
  std::string tmpl =
      (std::filesystem::temp_directory_path() / "steadyeval-bench-gen-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{tmpl};
  const std::string dir = tmpl + "/model";
  WriteModel(dir, flags, (*tokenizer)->vocab_size());
  auto reader = CheckpointReader::Open(dir);
  if (!reader.ok()) {
    std::cerr << reader.status() << "\n";
    return 1;
  }
  auto model = LoadLanguageModel(**reader);
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return 1;
  }
  auto task = ParseTask("bench_gen.json", TaskJson(flags.samples, flags.output_length));
  if (!task.ok()) {
    std::cerr << task.status() << "\n";
    return 1;
  }

  using Clock = std::chrono::steady_clock;
  struct Result {
    int batch;
    std::vector<double> seconds;
    std::vector<EvalOutput> outputs;
  };
  std::vector<Result> results = {{1, {}, {}}, {flags.batch, {}, {}}};
  // Alternate the configurations so drift in machine load hits both alike; run 0 warms up.
  for (int r = 0; r <= flags.repeats; ++r) {
    for (Result& result : results) {
      EvalOptions options;
      options.prompt.few_shots = 4;
      options.batch_size = result.batch;
      const auto t0 = Clock::now();
      auto outputs = EvaluateTask(**model, **tokenizer, *task, options);
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      if (!outputs.ok()) {
        std::cerr << "EvaluateTask: " << outputs.status() << "\n";
        return 1;
      }
      if (r > 0) result.seconds.push_back(s);
      result.outputs = *std::move(outputs);
    }
  }

  size_t mismatches = 0, generated_tokens = 0, prompt_tokens = 0;
  for (size_t i = 0; i < results[0].outputs.size(); ++i) {
    mismatches += results[0].outputs[i].output != results[1].outputs[i].output;
    generated_tokens += (*tokenizer)->Encode(results[0].outputs[i].output).value().size();
    prompt_tokens +=
        (*tokenizer)->EncodeWithBos(BuildPrompt(*task, i, PromptOptions{4})).value().size();
  }
  const double n = static_cast<double>(task->samples.size());
  const char* tunables = std::getenv("GLIBC_TUNABLES");  // malloc settings change the figures
  const double t1 = Median(results[0].seconds), tb = Median(results[1].seconds);
  std::cout << "model: llama, " << flags.layers << " layers, hidden " << flags.hidden
            << ", heads " << kHeads << "/" << kKvHeads << " kv, vocab "
            << (*tokenizer)->vocab_size() << ", fp32; torch threads " << flags.threads << "\n"
            << "task: " << task->samples.size() << " samples, 4 few-shots, output_length "
            << task->output_length << ", packed engine (shared prefixes once); " << prompt_tokens
            << " prompt tokens, ~" << generated_tokens
            << " generated tokens (re-encoded outputs) in all\n"
            << "median of " << flags.repeats << " runs after 1 warm-up; GLIBC_TUNABLES="
            << (tunables != nullptr ? tunables : "(unset)")
            << "\n\n"
            << "| batch size | seconds | examples/s | speed-up |\n"
            << "|---:|---:|---:|---:|\n"
            << "| 1 | " << Fmt("%.3f", t1) << " | " << Fmt("%.1f", n / t1) << " | 1.00x |\n"
            << "| " << flags.batch << " | " << Fmt("%.3f", tb) << " | " << Fmt("%.1f", n / tb)
            << " | " << Fmt("%.2f", t1 / tb) << "x |\n\n"
            << "outputs identical: " << (mismatches == 0 ? "yes" : "NO") << " (" << mismatches
            << " of " << task->samples.size() << " differ)\n";
  return mismatches == 0 ? 0 : 1;
}

}  // namespace
}  // namespace steadyeval

int main(int argc, char** argv) { return steadyeval::Main(argc, argv); }
