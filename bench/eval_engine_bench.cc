// Benchmark (not a test) of the evaluation engine (worker/eval/token_scheduler.h) against
// baseline A, the per-request engine (EvalEngine::kPerRequest: each example's context runs
// alone and each option continues a fork of its cache; generation prompts one at a time,
// no cross-example prefix sharing), in the same process on the same model.
//
// Model: a random fp32 Llama written by `steadyeval-fixtures` (default hidden 1024, 16
// layers, 16 heads, 4 KV heads, MLP 2816, ~197M parameters) with a SentencePiece tokenizer
// of 8,000 pieces the fixture tool trains on the JGLUE text below. Data: JGLUE v1.3 from
// ../shared/data (CC BY-SA 4.0): JCommonsenseQA valid as log-likelihood multiple choice,
// 0-shot (query = question + " "), 4-shot (the first four train items answered in that
// layout, "question answer" lines, prefixed to every query) and 4-shot with the choices
// listed in every shot and query (llm-jp-eval's "質問：…\n選択肢：0.…,1.…\n回答：" input
// layout); JSQuAD valid as 4-shot generation with llm-jp-eval's prompt (instruction,
// "文章：…\n質問：…" inputs, output_length 25).
//
// Reported per job: items/s of each engine on the same items and their ratio; tokens
// computed vs tokens in the requests; achieved FLOP/s on computed tokens against the fp32
// GEMM rate of the model's own matrix shapes measured with libtorch in this run; CPU
// time / wall time; whether the chosen options (outputs) agree. Then the peak memory of
// the packed engine at two token budgets, each in a child process.
//
//   steadyeval-bench-eval-engine [--work DIR] [--threads T] [--batch_tokens N]
//       [--mc_items N] [--baseline_items N] [--gen_items N] [--gen_baseline_items N]
//       [--hidden H] [--layers L] [--out FILE]
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_flags.h"
#include "bench/bench_machine.h"
#include "common/prompt.h"
#include "common/task.h"
#include "nlohmann/json.hpp"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/eval/evaluator.h"
#include "worker/model/language_model.h"
#include "worker/backend/offline.h"
#include "worker/tokenizer/tokenizer.h"

// OpenBLAS's own query, when libtorch's BLAS is OpenBLAS.
extern "C" int openblas_get_num_threads() __attribute__((weak));

namespace steadyeval {
namespace {

namespace fs = std::filesystem;

struct Flags {
  std::string work = "/tmp/steadyeval-bench-eval-engine";
  std::string data = STEADYEVAL_SOURCE_DIR "/../shared/data/jglue-v1.3";
  std::string out;
  int threads = 0;  // 0: DefaultThreads()
  int batch_tokens = static_cast<int>(kDefaultBatchTokens);
  int mc_items = 1119;
  int baseline_items = 200;
  int gen_items = 50;
  int gen_baseline_items = 12;
  int hidden = 1024, layers = 16, heads = 16, kv_heads = 4, intermediate = 2816;
  int vocab = 8000;
  // Child mode: peak memory of one packed run at this budget.
  int probe_budget = 0;
};

[[noreturn]] void Usage(const std::string& why) {
  std::cerr << "steadyeval-bench-eval-engine: " << why << "\n"
            << "usage: steadyeval-bench-eval-engine [--work DIR] [--data DIR] [--threads T] "
               "[--batch_tokens N] [--mc_items N] [--baseline_items N] [--gen_items N] "
               "[--gen_baseline_items N] [--hidden H] [--layers L] [--out FILE]\n"
               "Writes the model, tokenizer and tasks under --work (kept for the next run),\n"
               "then prints a Markdown report (also appended to --out when given).\n";
  std::exit(why == "help" ? 0 : 2);
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  BenchFlags p(argc, argv, &Usage);
  while (p.Next()) {
    const std::string& n = p.flag();
    if (n == "--work") f.work = p.Value();
    else if (n == "--data") f.data = p.Value();
    else if (n == "--out") f.out = p.Value();
    else if (n == "--threads") f.threads = p.Positive();
    else if (n == "--batch_tokens") f.batch_tokens = p.Positive();
    else if (n == "--mc_items") f.mc_items = p.Positive();
    else if (n == "--baseline_items") f.baseline_items = p.Positive();
    else if (n == "--gen_items") f.gen_items = p.Positive();
    else if (n == "--gen_baseline_items") f.gen_baseline_items = p.Positive();
    else if (n == "--hidden") f.hidden = p.Positive();
    else if (n == "--layers") f.layers = p.Positive();
    else if (n == "--probe_budget") f.probe_budget = p.Positive();
    else p.Unknown();
  }
  if (f.threads == 0) f.threads = DefaultThreads();
  return f;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::cerr << "cannot read " << path << "\n";
    std::exit(1);
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

void Run(const std::string& command) {
  std::cerr << "+ " << command << "\n";
  if (std::system(command.c_str()) != 0) {
    std::cerr << "failed: " << command << "\n";
    std::exit(1);
  }
}

std::vector<nlohmann::json> ReadJsonl(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::istringstream in(ReadFileOrDie(path));
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  }
  return rows;
}

// One JCommonsenseQA item as a question with its listed choices, the layout of
// llm-jp-eval's jcommonsenseqa input: "質問：…\n選択肢：0.…,1.…,…\n回答：".
std::string ListedChoices(const nlohmann::json& r) {
  std::string out = "質問：" + r["question"].get<std::string>() + "\n選択肢：";
  for (int k = 0; k < 5; ++k) {
    out += absl::StrCat(k == 0 ? "" : ",", k, ".", r[absl::StrCat("choice", k)].get<std::string>());
  }
  return out + "\n回答：";
}

// How a JCommonsenseQA item becomes a query.
enum class Layout {
  kQuestion,       // question + " " (the options follow the space)
  kListedChoices,  // ListedChoices(item)
};

std::string Query(const nlohmann::json& r, Layout layout) {
  return layout == Layout::kQuestion ? r["question"].get<std::string>() + " " : ListedChoices(r);
}

// The first four train items, answered, in `layout`: the shots of the 4-shot jobs.
std::string Shots(const std::vector<nlohmann::json>& train, Layout layout) {
  std::string shots;
  for (int i = 0; i < 4; ++i) {
    shots += Query(train[i], layout) +
             train[i][absl::StrCat("choice", train[i]["label"].get<int>())].get<std::string>() +
             (layout == Layout::kQuestion ? "\n" : "\n\n");
  }
  return shots;
}

// JCommonsenseQA rows as multiple-choice JSONL: query = shots + Query(item, layout), the
// five choices as options.
std::string ChoiceTask(const std::vector<nlohmann::json>& rows, size_t count,
                       const std::string& shots, Layout layout) {
  std::string out;
  for (size_t i = 0; i < std::min(count, rows.size()); ++i) {
    const nlohmann::json& r = rows[i];
    nlohmann::json line;
    line["id"] = std::to_string(r["q_id"].get<int64_t>());
    line["query"] = shots + Query(r, layout);
    for (int k = 0; k < 5; ++k) line["choices"].push_back(r[absl::StrCat("choice", k)]);
    line["gold"] = r["label"];
    out += line.dump() + "\n";
  }
  return out;
}

// JSQuAD as an llm-jp-eval generation task: the first `count` questions as samples, the
// four after them as few-shots.
std::string SquadTask(const nlohmann::json& doc, size_t count) {
  std::vector<nlohmann::json> samples;
  for (const auto& article : doc["data"]) {
    for (const auto& para : article["paragraphs"]) {
      for (const auto& qa : para["qas"]) {
        samples.push_back({{"input", absl::StrCat("文章：", para["context"].get<std::string>(),
                                                  "\n質問：", qa["question"].get<std::string>())},
                           {"output", qa["answers"][0]["text"]}});
      }
    }
  }
  nlohmann::json task;
  task["instruction"] =
      "質問に対する回答を文章から一言で抽出してください。回答は名詞で答えてください。 "
      "それ以外には何も含めないことを厳守してください。";
  task["output_length"] = 25;
  task["metrics"] = {"char_f1"};
  task["samples"] = std::vector<nlohmann::json>(samples.begin(), samples.begin() + count);
  task["few_shots"] =
      std::vector<nlohmann::json>(samples.begin() + count, samples.begin() + count + 4);
  return task.dump();
}

// The corpus the tokenizer is trained on: JCQA train questions and choices, JSQuAD text.
std::string Corpus(const Flags& f, const nlohmann::json& squad) {
  std::string corpus;
  for (const nlohmann::json& r : ReadJsonl(f.data + "/jcommonsenseqa-train.jsonl")) {
    corpus += r["question"].get<std::string>() + "\n";
    for (int k = 0; k < 5; ++k) corpus += r[absl::StrCat("choice", k)].get<std::string>() + "\n";
  }
  for (const auto& article : squad["data"]) {
    for (const auto& para : article["paragraphs"]) {
      corpus += para["context"].get<std::string>() + "\n";
      for (const auto& qa : para["qas"]) corpus += qa["question"].get<std::string>() + "\n";
    }
  }
  return corpus;
}

// Model and tokenizer, written once under --work.
std::string PrepareModel(const Flags& f, const nlohmann::json& squad) {
  const std::string tag = absl::StrCat("llama-h", f.hidden, "-l", f.layers, "-v", f.vocab);
  const std::string tok_dir = f.work + "/tokenizer-v" + std::to_string(f.vocab);
  const std::string model_dir = f.work + "/" + tag;
  fs::create_directories(f.work);
  if (!fs::exists(tok_dir + "/tokenizer.model")) {
    const std::string corpus_path = f.work + "/corpus.txt";
    std::ofstream(corpus_path, std::ios::binary) << Corpus(f, squad);
    Run(absl::StrCat(STEADYEVAL_FIXTURES_BIN, " tokenizer --out ", tok_dir, " --vocab_size ",
                     f.vocab, " --corpus ", corpus_path));
  }
  if (!fs::exists(model_dir + "/model.safetensors")) {
    Run(absl::StrCat(STEADYEVAL_FIXTURES_BIN, " checkpoint --out ", model_dir,
                     " --step 1000 --tokenizer ", tok_dir, "/tokenizer.model --hidden ", f.hidden,
                     " --layers ", f.layers, " --heads ", f.heads, " --kv_heads ", f.kv_heads,
                     " --intermediate ", f.intermediate));
  }
  return model_dir;
}

struct JobResult {
  double seconds = 0, cpu_seconds = 0;
  std::vector<EvalOutput> outputs;
  TokenWorkStats stats;
};

JobResult RunJob(const LanguageModel& model, const Tokenizer& tokenizer, const Task& task,
                 EvalEngine engine, int64_t budget, int few_shots) {
  EvalOptions options;
  options.engine = engine;
  options.batch_tokens = budget;
  options.prompt.few_shots = few_shots;
  options.reuse_prefix_cache = false;  // baseline A: no cross-example prefix sharing
  JobResult r;
  options.stats = &r.stats;
  const double cpu0 = CpuSeconds(), t0 = Now();
  auto outputs = EvaluateTask(model, tokenizer, task, options);
  r.seconds = Now() - t0;
  r.cpu_seconds = CpuSeconds() - cpu0;
  if (!outputs.ok()) {
    std::cerr << "evaluation failed: " << outputs.status() << "\n";
    std::exit(1);
  }
  r.outputs = *std::move(outputs);
  return r;
}

// FLOPs of one token through the layers' matrix products (attention scores excluded), and
// of one LM-head row.
struct ModelFlops {
  double per_token = 0, per_head_row = 0;
};

ModelFlops CountFlops(const Flags& f) {
  const double h = f.hidden, i = f.intermediate, hd = f.hidden / f.heads;
  const double q = f.heads * hd, kv = f.kv_heads * hd;
  ModelFlops m;
  m.per_token = f.layers * (2 * h * (q + 2 * kv) + 2 * q * h + 3 * 2 * h * i);
  m.per_head_row = 2 * h * f.vocab;
  return m;
}

// The fp32 GEMM rate of the model's layer shapes at `tokens` rows (at::linear, as the
// model calls it): FLOPs of one layer's products over their time, best of 5.
double GemmRate(const Flags& f, int64_t tokens) {
  c10::InferenceMode inference;
  const int64_t h = f.hidden, i = f.intermediate, hd = f.hidden / f.heads;
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {f.heads * hd, h}, {f.kv_heads * hd, h}, {f.kv_heads * hd, h}, {h, f.heads * hd},
      {i, h},            {i, h},               {h, i}};
  std::vector<at::Tensor> weights, inputs;
  double flops = 0;
  for (auto [out, in] : shapes) {
    weights.push_back(at::randn({out, in}) * 0.02);
    inputs.push_back(at::randn({tokens, in}));
    flops += 2.0 * static_cast<double>(tokens * out * in);
  }
  double best = 1e30;
  for (int rep = 0; rep < 6; ++rep) {
    const double t0 = Now();
    for (size_t k = 0; k < shapes.size(); ++k) {
      at::Tensor y = at::linear(inputs[k], weights[k]);
      (void)y;
    }
    if (rep > 0) best = std::min(best, Now() - t0);  // the first warms up
  }
  return flops / best;
}

size_t Agreeing(const std::vector<EvalOutput>& a, const std::vector<EvalOutput>& b, size_t n) {
  size_t same = 0;
  for (size_t i = 0; i < n; ++i) same += a[i].output == b[i].output;
  return same;
}

double MaxLoglikDiff(const std::vector<EvalOutput>& a, const std::vector<EvalOutput>& b, size_t n) {
  double worst = 0;
  for (size_t i = 0; i < n; ++i) {
    for (size_t k = 0; k < a[i].option_logliks.size(); ++k) {
      worst = std::max(worst, std::abs(a[i].option_logliks[k] - b[i].option_logliks[k]));
    }
  }
  return worst;
}

Task ParseOrDie(const std::string& name, const std::string& content) {
  auto task = ParseTask(name, content);
  if (!task.ok()) {
    std::cerr << name << ": " << task.status() << "\n";
    std::exit(1);
  }
  return *std::move(task);
}

int64_t StatusKb(const char* field) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field, 0) == 0) return std::atoll(line.c_str() + std::strlen(field));
  }
  return -1;
}

// Child mode: load, reset the peak RSS, run JCQA 4-shot packed at the budget, print the
// growth of the peak over the loaded model in MiB.
int Probe(const Flags& f, const std::string& model_dir, const Task& task, const Task& warm) {
  auto reader = CheckpointReader::Open(model_dir);
  auto model = LoadLanguageModel(**reader);
  auto tokenizer = Tokenizer::LoadForCheckpoint(model_dir, "");
  if (!model.ok() || !tokenizer.ok()) return 1;
  // Touch every weight page, then start the peak from here.
  RunJob(**model, **tokenizer, warm, EvalEngine::kPacked, f.probe_budget, 0);
  const int64_t loaded = StatusKb("VmRSS:");
  std::ofstream("/proc/self/clear_refs") << "5";
  RunJob(**model, **tokenizer, task, EvalEngine::kPacked, f.probe_budget, 0);
  const int64_t peak = StatusKb("VmHWM:");
  std::cout << absl::StrFormat("%.1f %.1f\n", loaded / 1024.0, (peak - loaded) / 1024.0);
  return 0;
}

int Main(int argc, char** argv) {
  const Flags f = ParseFlags(argc, argv);
  if (absl::Status s = ConfigureThreads(f.threads); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  const nlohmann::json squad = nlohmann::json::parse(ReadFileOrDie(f.data + "/jsquad-valid.json"));
  const std::string model_dir = PrepareModel(f, squad);
  const std::vector<nlohmann::json> valid = ReadJsonl(f.data + "/jcommonsenseqa-valid.jsonl");
  const std::vector<nlohmann::json> train = ReadJsonl(f.data + "/jcommonsenseqa-train.jsonl");
  const std::string shots = Shots(train, Layout::kQuestion);
  const std::string listed_shots = Shots(train, Layout::kListedChoices);
  constexpr size_t kProbeItems = 200;
  if (f.probe_budget > 0) {
    return Probe(
        f, model_dir,
        ParseOrDie("probe.jsonl", ChoiceTask(valid, kProbeItems, listed_shots, Layout::kListedChoices)),
        ParseOrDie("warm.jsonl", ChoiceTask(valid, 2, listed_shots, Layout::kListedChoices)));
  }

  const double load0 = Now();
  auto reader = CheckpointReader::Open(model_dir);
  if (!reader.ok()) {
    std::cerr << reader.status() << "\n";
    return 1;
  }
  auto model = LoadLanguageModel(**reader);
  auto tokenizer = Tokenizer::LoadForCheckpoint(model_dir, "");
  if (!model.ok() || !tokenizer.ok()) {
    std::cerr << (model.ok() ? tokenizer.status() : model.status()) << "\n";
    return 1;
  }
  const double load_seconds = Now() - load0;
  const ModelFlops flops = CountFlops(f);
  const double gemm = GemmRate(f, f.batch_tokens);

  std::ostringstream md;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  md << "# Evaluation engine: packed token trie vs per-request (baseline A)\n\n"
     << "Command: `build/bin/steadyeval-bench-eval-engine";
  for (int i = 1; i < argc; ++i) md << " " << argv[i];
  md << "` (RelWithDebInfo build)\n\n"
     << absl::StrFormat(
            "Machine: %s; %d CPUs in the affinity mask, --threads %d (OpenBLAS threads %d, "
            "ATen threads %d), CPU only, Debian libtorch 1.13.1 + OpenBLAS; 1-minute load "
            "average at the start %s.\n\n",
            MachineLine(), DefaultThreads(), f.threads,
            openblas_get_num_threads != nullptr ? openblas_get_num_threads() : -1,
            at::get_num_threads(), LoadAverage())
     << absl::StrFormat(
            "Model: random fp32 Llama from steadyeval-fixtures, hidden %d, %d layers, %d heads, "
            "%d KV heads, MLP %d, vocab %d (%.0f MB of weights, loaded in %.1f s); SentencePiece "
            "tokenizer of %d pieces trained by the fixture tool on JGLUE text. Data: JGLUE v1.3 "
            "(CC BY-SA 4.0) from ../shared/data.\n\n",
            f.hidden, f.layers, f.heads, f.kv_heads, f.intermediate, f.vocab,
            fs::file_size(model_dir + "/model.safetensors") / 1e6, load_seconds, f.vocab)
     << absl::StrFormat(
            "fp32 GEMM rate of this model's layer shapes at %d rows (at::linear, best of 5): "
            "**%.1f GFLOP/s**. FLOPs counted per computed token: the layers' matrix products "
            "(%.0f MFLOP), plus %.1f MFLOP per LM-head row read; attention scores not "
            "counted.\n\n",
            f.batch_tokens, gemm / 1e9, flops.per_token / 1e6, flops.per_head_row / 1e6);
  md << "| job | items | engine | seconds | items/s | speed-up | tokens in requests | tokens "
        "computed | GFLOP/s on computed tokens | of GEMM rate | CPU/wall |\n"
     << "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  std::vector<std::string> notes;
  auto row = [&](const std::string& job, size_t items, const std::string& engine,
                 const JobResult& r, double base_rate, bool flop_rate) {
    const double rate = static_cast<double>(items) / r.seconds;
    std::string flop_cells = "– | –";
    if (flop_rate) {
      const double work = static_cast<double>(r.stats.computed_tokens) * flops.per_token +
                          static_cast<double>(r.stats.scored_positions) * flops.per_head_row;
      flop_cells = absl::StrFormat("%.1f | %.0f%%", work / r.seconds / 1e9,
                                   100 * work / r.seconds / gemm);
    }
    const std::string line = absl::StrFormat("| %s | %d | %s | %.2f | %.2f | %s | %s | %s | %s | %.2f |\n", job, items,
                          engine, r.seconds, rate,
                          base_rate > 0 ? absl::StrFormat("**%.1fx**", rate / base_rate) : "1.0x",
                          r.stats.requested_tokens > 0 ? std::to_string(r.stats.requested_tokens)
                                                       : "–",
                          r.stats.computed_tokens > 0 ? std::to_string(r.stats.computed_tokens)
                                                      : "–",
                          flop_cells, r.cpu_seconds / r.seconds);
    md << line;
    std::cerr << line << std::flush;
  };

  // Multiple choice: baseline A and packed on the same first items, then packed on all.
  struct ChoiceJob {
    std::string name, shots;
    Layout layout;
  };
  for (const ChoiceJob& j : {ChoiceJob{"JCQA 0-shot MC", "", Layout::kQuestion},
                             ChoiceJob{"JCQA 4-shot MC", shots, Layout::kQuestion},
                             ChoiceJob{"JCQA 4-shot MC, choices listed", listed_shots,
                                       Layout::kListedChoices}}) {
    const std::string& job = j.name;
    const size_t subset = std::min<size_t>(f.baseline_items, valid.size());
    const Task small = ParseOrDie("jcqa.jsonl", ChoiceTask(valid, subset, j.shots, j.layout));
    const Task all = ParseOrDie("jcqa.jsonl", ChoiceTask(valid, f.mc_items, j.shots, j.layout));
    const JobResult base = RunJob(**model, **tokenizer, small, EvalEngine::kPerRequest, 0 + 1, 0);
    const double base_rate = static_cast<double>(subset) / base.seconds;
    row(job, subset, "baseline A (per request)", base, 0, false);
    const JobResult packed_small =
        RunJob(**model, **tokenizer, small, EvalEngine::kPacked, f.batch_tokens, 0);
    row(job, subset, "packed", packed_small, base_rate, true);
    const JobResult packed_all =
        RunJob(**model, **tokenizer, all, EvalEngine::kPacked, f.batch_tokens, 0);
    row(job, all.size(), "packed", packed_all, base_rate, true);
    notes.push_back(absl::StrFormat(
        "%s: chosen option identical on %d of %d items (packed vs baseline A); largest "
        "|Δ log-likelihood| %.2e",
        job, Agreeing(base.outputs, packed_small.outputs, subset), subset,
        MaxLoglikDiff(base.outputs, packed_small.outputs, subset)));
  }

  // Generation: baseline A on the first items, packed on the same and on all.
  {
    const std::string job = "JSQuAD 4-shot generation";
    const Task small = ParseOrDie("jsquad.json", SquadTask(squad, f.gen_baseline_items));
    const Task all = ParseOrDie("jsquad.json", SquadTask(squad, f.gen_items));
    const JobResult base = RunJob(**model, **tokenizer, small, EvalEngine::kPerRequest, 1, 4);
    const double base_rate = static_cast<double>(small.size()) / base.seconds;
    row(job, small.size(), "baseline A (per request)", base, 0, false);
    const JobResult packed_small =
        RunJob(**model, **tokenizer, small, EvalEngine::kPacked, f.batch_tokens, 4);
    row(job, small.size(), "packed", packed_small, base_rate, false);
    const JobResult packed_all =
        RunJob(**model, **tokenizer, all, EvalEngine::kPacked, f.batch_tokens, 4);
    row(job, all.size(), "packed", packed_all, base_rate, false);
    notes.push_back(absl::StrFormat(
        "%s: outputs identical on %d of %d items (packed vs baseline A)", job,
        Agreeing(base.outputs, packed_small.outputs, small.size()), small.size()));
  }
  md << "\n";
  for (const std::string& n : notes) md << "- " << n << "\n";

  // The token budget: the same 4-shot items packed at several budgets.
  {
    const size_t subset = std::min<size_t>(f.baseline_items, valid.size());
    const Task task = ParseOrDie("jcqa.jsonl", ChoiceTask(valid, subset, shots, Layout::kQuestion));
    md << "\nToken budget (`--batch_tokens`), JCQA 4-shot MC, first " << subset
       << " items, packed:\n\n| batch_tokens | seconds | items/s | vs " << f.batch_tokens
       << " | GFLOP/s on computed tokens |\n|---:|---:|---:|---:|---:|\n";
    const JobResult reference =
        RunJob(**model, **tokenizer, task, EvalEngine::kPacked, f.batch_tokens, 0);
    for (int budget : {64, 128, 256, 512, 1024, 2048}) {
      const JobResult r = budget == f.batch_tokens
                              ? reference
                              : RunJob(**model, **tokenizer, task, EvalEngine::kPacked, budget, 0);
      const double work = static_cast<double>(r.stats.computed_tokens) * flops.per_token +
                          static_cast<double>(r.stats.scored_positions) * flops.per_head_row;
      md << absl::StrFormat("| %d | %.2f | %.2f | %.2fx | %.1f |\n", budget, r.seconds,
                            static_cast<double>(subset) / r.seconds, reference.seconds / r.seconds,
                            work / r.seconds / 1e9);
      std::cerr << "budget " << budget << ": " << r.seconds << " s\n";
    }
  }

  // Peak memory at two budgets, each in a fresh child process.
  md << "\nPeak memory of the packed engine (JCQA 4-shot, choices listed, " << kProbeItems
     << " items; growth of the peak RSS over the loaded model, child process per budget):\n\n"
     << "| batch_tokens | peak growth MiB |\n|---:|---:|\n";
  for (int budget : {128, 2048}) {
    const std::string command = absl::StrCat("/proc/", getpid(), "/exe --work ", f.work,
                                             " --data ", f.data, " --threads ", f.threads,
                                             " --hidden ", f.hidden, " --layers ", f.layers,
                                             " --probe_budget ", budget);
    FILE* pipe = popen(command.c_str(), "r");
    double loaded = 0, growth = -1;
    if (pipe != nullptr) {
      if (fscanf(pipe, "%lf %lf", &loaded, &growth) != 2) growth = -1;
      pclose(pipe);
    }
    md << absl::StrFormat("| %d | %.1f |\n", budget, growth);
  }
  std::cout << "\n" << md.str();
  if (!f.out.empty()) std::ofstream(f.out, std::ios::app) << "\n" << md.str();
  return 0;
}

}  // namespace
}  // namespace steadyeval

int main(int argc, char** argv) { return steadyeval::Main(argc, argv); }
