#include "examples/toy_pretrain/trainer.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <utility>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "common/status.h"
#include "worker/checkpoint/checkpoint_writer.h"
#include "worker/model/llama/llama_model.h"
#include "worker/model/model_config.h"
#include "worker/backend/offline.h"
#include "tests/fixtures/llama_layout.h"
#include "worker/checkpoint/tensor_source.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/torch_status.h"

namespace steadyeval::toy {
namespace {

namespace fs = std::filesystem;

constexpr char kTokenizerDir[] = ".toy_tokenizer";
constexpr int64_t kBosId = 1;  // TrainSentencePiece: unk 0, bos 1, eos 2

absl::Status Check(bool ok, absl::string_view flag, absl::string_view requirement,
                   double value) {
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, " must be ", requirement, ", got ", value));
}

// The training stream: every document as BOS + tokens + EOS, concatenated, and where each
// document starts.
struct TokenStream {
  std::vector<int64_t> ids;
  std::vector<int64_t> starts;
  int64_t longest = 0;  // tokens of the longest document
};

absl::StatusOr<TokenStream> Tokenize(const Tokenizer& tokenizer,
                                     const std::vector<std::string>& documents) {
  TokenStream stream;
  const int64_t eos = tokenizer.eos_id();
  if (eos < 0) return absl::InternalError("toy tokenizer has no EOS piece");
  for (const std::string& doc : documents) {
    ASSIGN_OR_RETURN(std::vector<int64_t> ids, tokenizer.EncodeWithBos(doc));
    ids.push_back(eos);
    stream.starts.push_back(static_cast<int64_t>(stream.ids.size()));
    stream.longest = std::max<int64_t>(stream.longest, static_cast<int64_t>(ids.size()));
    stream.ids.insert(stream.ids.end(), ids.begin(), ids.end());
  }
  return stream;
}

// The toy model's layout (untied head, no biases): MODELS.md's Llama table, as the fixture
// writer lays it out.
fixtures::LlamaShape ModelShape(const TrainerOptions& o, int64_t vocab) {
  fixtures::LlamaShape shape;
  shape.hidden = o.hidden;
  shape.layers = o.layers;
  shape.heads = o.heads;
  shape.kv_heads = o.kv_heads;
  shape.intermediate = o.intermediate;
  shape.vocab = vocab;
  return shape;
}

// config.json of the toy model: a Hugging Face LlamaConfig, fp32, bos 1, eos 2, with
// `positions` positions.
std::string ConfigJson(const TrainerOptions& o, int64_t vocab, int64_t positions) {
  nlohmann::ordered_json config = fixtures::LlamaConfigJson(ModelShape(o, vocab), DType::kF32);
  config["max_position_embeddings"] = positions;
  return config.dump(2) + "\n";
}

// The initial weights: N(0, 0.02²) matrices, RMSNorm weights 1, from torch's generator.
absl::StatusOr<std::unique_ptr<TensorMap>> InitialWeights(const TrainerOptions& o, int64_t vocab,
                                                          const std::string& config_json) {
  auto map = std::make_unique<TensorMap>("toy model (random init)", config_json);
  for (const TensorInfo& info : fixtures::LlamaTensors(ModelShape(o, vocab), DType::kF32)) {
    const bool norm = absl::EndsWith(info.name, "norm.weight");
    ASSIGN_OR_RETURN(torch::Tensor t, GuardTorch("toy init", [&]() -> absl::StatusOr<torch::Tensor> {
                       return norm ? torch::ones(info.shape) : torch::randn(info.shape) * 0.02;
                     }));
    RETURN_IF_ERROR(map->Add(info.name, std::move(t)));
  }
  return map;
}

// Trains the run's SentencePiece model on `corpus` into `dir`/tokenizer.model with
// `steadyeval-fixtures tokenizer` (fixtures::TrainSentencePiece) in a child process:
// libsentencepiece cannot share a process with libtorch (worker/tokenizer/sentencepiece_shim.cc).
// The binary is $STEADYEVAL_FIXTURES_BIN or the one next to this executable; its log goes
// to `dir`/tokenizer_training.log.
absl::Status TrainTokenizer(const std::string& corpus, int vocab, const std::string& dir) {
  const fs::path corpus_path = fs::path(dir) / "corpus.txt";
  const fs::path model_path = fs::path(dir) / "tokenizer.model";
  const std::string log_path = (fs::path(dir) / "tokenizer_training.log").string();
  std::error_code ec;
  fs::remove(model_path, ec);  // the tool keeps an existing model; this corpus is new
  {
    std::ofstream out(corpus_path, std::ios::binary | std::ios::trunc);
    out << corpus;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat(corpus_path.string(), ": cannot write"));
  }
  std::string tool;
  if (const char* env = std::getenv("STEADYEVAL_FIXTURES_BIN")) {
    tool = env;
  } else {
    tool = (fs::read_symlink("/proc/self/exe", ec).parent_path() / "steadyeval-fixtures").string();
  }
  if (!fs::exists(tool, ec)) {
    return absl::NotFoundError(absl::StrCat(
        "tokenizer training needs steadyeval-fixtures, not found at ", tool,
        " (build the steadyeval-fixtures target or set STEADYEVAL_FIXTURES_BIN)"));
  }
  std::vector<std::string> args = {tool,        "tokenizer", "--out",    dir,
                                   "--corpus", corpus_path.string(), "--vocab_size",
                                   absl::StrCat(vocab)};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = 0;
  const int spawn_error = ::posix_spawn(&pid, tool.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawn_error != 0) {
    return absl::InternalError(
        absl::StrCat("cannot start ", tool, ": ", std::strerror(spawn_error)));
  }
  int wait_status = 0;
  while (::waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != 0 || !fs::exists(model_path, ec)) {
    return absl::InternalError(absl::StrCat("training the toy tokenizer (--vocab ", vocab,
                                            ") failed; see ", log_path));
  }
  return absl::OkStatus();
}

std::string FormatBytes(uintmax_t bytes) {
  return absl::StrFormat("%.1f MB", static_cast<double>(bytes) / 1e6);
}

uintmax_t FolderBytes(const std::string& dir) {
  std::error_code ec;
  uintmax_t total = 0;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file(ec)) total += entry.file_size(ec);
  }
  return total;
}

}  // namespace

absl::Status ValidateOptions(const TrainerOptions& o) {
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out DIR is required");
  RETURN_IF_ERROR(Check(o.steps >= 1 && o.steps <= 10000000, "steps", "in 1..10000000", o.steps));
  RETURN_IF_ERROR(Check(o.save_every >= 1, "save_every", ">= 1", o.save_every));
  RETURN_IF_ERROR(Check(o.lr > 0 && o.lr < 1, "lr", "in (0, 1)", o.lr));
  RETURN_IF_ERROR(Check(o.warmup_steps >= 0, "warmup", ">= 0", o.warmup_steps));
  RETURN_IF_ERROR(Check(o.batch >= 1 && o.batch <= 4096, "batch", "in 1..4096", o.batch));
  RETURN_IF_ERROR(Check(o.seq_len == 0 || (o.seq_len >= 8 && o.seq_len <= 8192), "seq_len",
                        "0 (auto) or in 8..8192", o.seq_len));
  RETURN_IF_ERROR(Check(o.threads >= 1 && o.threads <= 4096, "threads", "in 1..4096", o.threads));
  RETURN_IF_ERROR(Check(o.vocab >= 300 && o.vocab <= 32000, "vocab", "in 300..32000", o.vocab));
  RETURN_IF_ERROR(Check(o.log_every >= 1, "log_every", ">= 1", o.log_every));
  const bool shape_ok = o.hidden >= 2 && o.layers >= 1 && o.heads >= 1 && o.kv_heads >= 1 &&
                        o.intermediate >= 1 && o.hidden % o.heads == 0 &&
                        o.heads % o.kv_heads == 0 && (o.hidden / o.heads) % 2 == 0;
  if (!shape_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model shape: --hidden ", o.hidden, " --layers ", o.layers, " --heads ", o.heads,
        " --kv_heads ", o.kv_heads, " --intermediate ", o.intermediate,
        " must be positive, with --heads dividing --hidden into an even head size and "
        "--kv_heads dividing --heads"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainResult> RunToyPretraining(const TrainerOptions& o) {
  RETURN_IF_ERROR(ValidateOptions(o));
  const int64_t start_nanos = o.clock->MonotonicNanos();
  auto say = [&](const std::string& line) {
    if (o.progress != nullptr) *o.progress << line << std::endl;
  };
  RETURN_IF_ERROR(ConfigureThreads(o.threads));

  CorpusOptions corpus_options = o.corpus;
  corpus_options.seed = o.seed;
  ASSIGN_OR_RETURN(ToyCorpus corpus, GenerateCorpus(corpus_options));
  if (!o.tasks_out.empty()) {
    RETURN_IF_ERROR(WriteTaskFiles(corpus, o.tasks_out));
    say(absl::StrCat("tasks written to ", o.tasks_out, " (", corpus.eval_tasks.size(),
                     " eval files, train splits in ", o.tasks_out, "/train)"));
  }

  // Tokenizer, trained on the corpus, kept in a hidden folder of OUT for every checkpoint.
  const std::string tokenizer_dir = (fs::path(o.out_dir) / kTokenizerDir).string();
  std::error_code ec;
  fs::create_directories(tokenizer_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("--out ", o.out_dir, ": cannot create ", tokenizer_dir, ": ", ec.message()));
  }
  RETURN_IF_ERROR(TrainTokenizer(corpus.tokenizer_text, o.vocab, tokenizer_dir));
  const std::string tokenizer_path = tokenizer_dir + "/tokenizer.model";
  BosRule bos_rule;
  bos_rule.add_bos = true;
  bos_rule.bos_id = kBosId;
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::Load(tokenizer_path, bos_rule));
  ASSIGN_OR_RETURN(TokenStream stream, Tokenize(*tokenizer, corpus.documents));
  say(absl::StrFormat("corpus: %d documents, %d tokens (longest %d), vocab %d",
                      corpus.documents.size(), stream.ids.size(), stream.longest,
                      tokenizer->vocab_size()));
  const int64_t seq_len = o.seq_len > 0 ? o.seq_len : stream.longest;
  if (seq_len < stream.longest) {
    say(absl::StrFormat("note: --seq_len %d is shorter than the longest document (%d tokens): "
                        "the model never sees the positions of the longest prompts",
                        seq_len, stream.longest));
  }
  const int64_t window = seq_len + 1;
  if (static_cast<int64_t>(stream.ids.size()) < 2 * window) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--seq_len ", seq_len, " is too long for a corpus of ", stream.ids.size(), " tokens"));
  }
  std::vector<int64_t> window_starts;
  for (int64_t s : stream.starts) {
    if (s + window <= static_cast<int64_t>(stream.ids.size())) window_starts.push_back(s);
  }

  // Model: config.json (ConfigJson) with this shape; its
  // positions cover the longest document (prompt + answer) and a training window.
  const int64_t vocab = tokenizer->vocab_size();
  int64_t positions = 512;
  while (positions < std::max<int64_t>(stream.longest + 64, seq_len)) positions *= 2;
  const std::string config_json = ConfigJson(o, vocab, positions);
  ASSIGN_OR_RETURN(LlamaConfig llama_config, ParseLlamaConfig(config_json));

  torch::manual_seed(o.seed);
  ASSIGN_OR_RETURN(std::unique_ptr<TensorMap> init, InitialWeights(o, vocab, config_json));
  ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Create(llama_config, *init));
  init.reset();
  const std::vector<std::pair<std::string, torch::Tensor>> weights = model->NamedWeights();

  TrainResult result;
  RETURN_IF_ERROR(GuardTorch("toy training", [&]() -> absl::Status {
    std::vector<torch::Tensor> params;
    for (const auto& [name, t] : weights) params.push_back(t.requires_grad_(true));
    torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(o.lr)
                                              .betas({0.9, 0.95})
                                              .weight_decay(o.weight_decay));
    const torch::Tensor all_ids = torch::tensor(stream.ids, torch::kInt64);
    const torch::Tensor starts = torch::tensor(window_starts, torch::kInt64);
    const torch::Tensor offsets = torch::arange(window, torch::kInt64);
    double interval_loss = 0;
    int interval_steps = 0;
    int64_t interval_nanos = o.clock->MonotonicNanos();
    for (int step = 1; step <= o.steps; ++step) {
      const double lr = step <= o.warmup_steps ? o.lr * step / o.warmup_steps : o.lr;
      for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
      const torch::Tensor picks =
          starts.index_select(0, torch::randint(starts.size(0), {o.batch}, torch::kInt64));
      const torch::Tensor rows = all_ids.index_select(
          0, (picks.unsqueeze(1) + offsets.unsqueeze(0)).reshape({-1})).view({o.batch, window});
      const torch::Tensor inputs = rows.narrow(1, 0, seq_len);
      const torch::Tensor targets = rows.narrow(1, 1, seq_len);
      absl::StatusOr<torch::Tensor> logits = model->ForwardForTraining(inputs);
      if (!logits.ok()) return logits.status();
      const torch::Tensor loss = torch::nn::functional::cross_entropy(
          logits->reshape({-1, logits->size(-1)}), targets.reshape({-1}));
      optimizer.zero_grad();
      loss.backward();
      torch::nn::utils::clip_grad_norm_(params, 1.0);
      optimizer.step();
      interval_loss += loss.item<double>();
      ++interval_steps;

      if (step % o.log_every == 0 || step == o.steps) {
        const int64_t now = o.clock->MonotonicNanos();
        const double mean = interval_loss / interval_steps;
        result.losses.emplace_back(step, mean);
        say(absl::StrFormat("step %d/%d loss %.3f lr %.1e %.1f steps/s", step, o.steps, mean, lr,
                            interval_steps / std::max(1e-9, (now - interval_nanos) / 1e9)));
        interval_loss = 0;
        interval_steps = 0;
        interval_nanos = now;
      }
      if (step % o.save_every == 0) {
        const std::string name = absl::StrFormat("step_%06d", step);
        const std::string dir = (fs::path(o.out_dir) / name).string();
        TensorMap snapshot(dir, config_json);
        for (const auto& [weight_name, t] : weights) {
          RETURN_IF_ERROR(snapshot.Add(weight_name, t.detach()));
        }
        RETURN_IF_ERROR(WriteCheckpoint(snapshot, dir, /*shards=*/1, tokenizer_dir));
        result.checkpoints.push_back(dir);
        say(absl::StrCat("checkpoint ", name, " written (", FormatBytes(FolderBytes(dir)), ")"));
      }
    }
    return absl::OkStatus();
  }));
  result.seconds = (o.clock->MonotonicNanos() - start_nanos) / 1e9;
  say(absl::StrFormat("done: %d steps, %d checkpoints in %.0f s", o.steps,
                      result.checkpoints.size(), result.seconds));
  return result;
}

}  // namespace steadyeval::toy
