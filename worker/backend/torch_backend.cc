// The libtorch EvalBackend: checkpoint reader → model → tokenizer → evaluator.
#include <chrono>
#include <filesystem>

#include <ATen/ATen.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/prompt.h"
#include "common/status.h"
#include "worker/averaging/averager.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/eval/eval_backend.h"
#include "worker/eval/evaluator.h"
#include "worker/model/language_model.h"
#include "worker/backend/offline.h"
#include "worker/tokenizer/tokenizer.h"

namespace steadyeval {
namespace {

// Bytes of the weight files (safetensors or PyTorch .bin) in checkpoint folder `dir`.
uint64_t WeightBytes(const std::string& dir) {
  uint64_t bytes = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file(ec) &&
        (absl::EndsWith(name, ".safetensors") || absl::EndsWith(name, ".bin"))) {
      bytes += entry.file_size(ec);
    }
  }
  return bytes;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

class TorchEvalBackend : public EvalBackend {
 public:
  TorchEvalBackend(at::Device device, const WindowCacheSettings& window_cache,
                   int64_t batch_tokens)
      : device_(device),
        batch_tokens_(batch_tokens),
        window_sums_(WindowSumCache::Options{window_cache.budget_bytes, window_cache.rebuild_every}) {}

  absl::StatusOr<LoadStats> Load(const std::string& dir, const std::string& tokenizer_path) override {
    const auto start = std::chrono::steady_clock::now();
    model_.reset();
    tokenizer_.reset();
    ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, CheckpointReader::Open(dir));
    ASSIGN_OR_RETURN(const WeightPlacement placement, ChoosePlacement(*reader, device_));
    ASSIGN_OR_RETURN(model_, LoadLanguageModel(*reader, placement));
    ASSIGN_OR_RETURN(tokenizer_, Tokenizer::LoadForCheckpoint(dir, tokenizer_path));
    default_add_bos_ = tokenizer_->add_bos();
    LoadStats stats;
    stats.seconds = SecondsSince(start);
    stats.bytes = WeightBytes(dir);
    return stats;
  }

  absl::StatusOr<LoadStats> LoadAverage(const std::string& run, uint32_t window,
                                        const std::vector<std::string>& member_dirs,
                                        const std::vector<uint64_t>& member_steps,
                                        const std::string& tokenizer_path) override {
    const auto start = std::chrono::steady_clock::now();
    model_.reset();
    tokenizer_.reset();
    if (member_dirs.empty() || member_dirs.size() != member_steps.size() ||
        (window != 0 && member_dirs.size() != window)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "avg@", window, " job has ", member_dirs.size(), " checkpoint paths and ",
          member_steps.size(), " steps; expected ", window, " of each"));
    }
    std::vector<WindowMember> members;
    for (size_t i = 0; i < member_dirs.size(); ++i) members.push_back({member_dirs[i], member_steps[i]});
    {
      ASSIGN_OR_RETURN(std::unique_ptr<TensorMap> average, window_sums_.Average(run, members));
      ASSIGN_OR_RETURN(const WeightPlacement placement, ChoosePlacement(*average, device_));
      ASSIGN_OR_RETURN(model_, LoadLanguageModel(*average, placement));
    }
    ASSIGN_OR_RETURN(tokenizer_, Tokenizer::LoadForCheckpoint(member_dirs.back(), tokenizer_path));
    default_add_bos_ = tokenizer_->add_bos();
    LoadStats stats;
    stats.seconds = SecondsSince(start);
    // Bytes read from disk: the whole window, or the added and dropped members.
    const WindowSumCache::Path path = window_sums_.last_path();
    if (path == WindowSumCache::Path::kSlid) {
      stats.bytes = 2 * WeightBytes(member_dirs.back());
    } else if (path != WindowSumCache::Path::kReused) {
      for (const std::string& dir : member_dirs) stats.bytes += WeightBytes(dir);
    }
    return stats;
  }

  std::vector<WindowSumInfo> WindowSums() const override { return window_sums_.Held(); }

  absl::StatusOr<ParameterDriftResult> ComputeDrift(const std::string& from_dir,
                                                    const std::string& to_dir) override {
    return ComputeParameterDrift(from_dir, to_dir);
  }

  absl::StatusOr<std::vector<ExampleResult>> Evaluate(const Task& task, const EvalSettings& settings,
                                                      const ProgressFn& progress) override {
    if (model_ == nullptr || tokenizer_ == nullptr) {
      return absl::FailedPreconditionError("no checkpoint loaded");
    }
    RETURN_IF_ERROR(tokenizer_->SetAddBos(settings.bos == BosMode::kAuto ? default_add_bos_
                                                                          : settings.bos == BosMode::kAdd));
    EvalOptions options;
    options.prompt = settings.prompt;
    options.max_new_tokens_delta = settings.max_new_tokens_delta;
    options.batch_size = settings.batch_size;
    options.batch_tokens = batch_tokens_;
    // false cancels before the next forward (CANCELLED).
    options.progress = [&](size_t done, size_t total) { return !progress || progress(done, total); };
    TokenWorkStats stats;
    options.stats = &stats;
    ASSIGN_OR_RETURN(std::vector<EvalOutput> outputs, EvaluateTask(*model_, *tokenizer_, task, options));
    // Tokens the model ran: the trie's (each shared prefix once), plus what was generated.
    tokens_ += stats.computed_tokens;
    std::vector<ExampleResult> results;
    results.reserve(outputs.size());
    for (EvalOutput& o : outputs) {
      if (task.kind == TaskKind::kGeneration) tokens_ += GeneratedTokens(o);
      results.push_back({o.index, std::move(o.output), std::move(o.option_logliks)});
    }
    return results;
  }

  std::string BosDescription() const override {
    if (tokenizer_ == nullptr) return "";
    return tokenizer_->add_bos() ? absl::StrCat("bos ", tokenizer_->bos_id()) : "no bos";
  }

  std::string TokenizerSha256() const override {
    return tokenizer_ == nullptr ? "" : tokenizer_->content_sha256();
  }
  std::string TokenizerPath() const override {
    return tokenizer_ == nullptr ? "" : tokenizer_->path();
  }

  uint64_t tokens_processed() const override { return tokens_; }

 private:
  // Tokens generated for one example, by re-tokenizing its output (cheap next to a forward).
  uint64_t GeneratedTokens(const EvalOutput& o) const {
    auto generated = tokenizer_->Encode(o.output);
    return generated.ok() ? generated->size() : 0;
  }

  const at::Device device_;
  const int64_t batch_tokens_;
  WindowSumCache window_sums_;
  std::unique_ptr<LanguageModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  bool default_add_bos_ = false;  // the loaded tokenizer's own rule (BosMode::kAuto)
  uint64_t tokens_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EvalBackend>> CreateTorchEvalBackend(
    const std::string& device, int threads, const WindowCacheSettings& window_cache,
    int64_t batch_tokens) {
  if (batch_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_tokens must be at least 1, got ", batch_tokens));
  }
  ASSIGN_OR_RETURN(const at::Device parsed, ParseDevice(device));
  RETURN_IF_ERROR(ConfigureThreads(threads));
  return std::unique_ptr<EvalBackend>(new TorchEvalBackend(parsed, window_cache, batch_tokens));
}

}  // namespace steadyeval
