// The libtorch EvalBackend: checkpoint reader → model → tokenizer → evaluator.
#include <chrono>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/prompt.h"
#include "common/status.h"
#include "worker/checkpoint_reader.h"
#include "worker/eval_backend.h"
#include "worker/evaluator.h"
#include "worker/language_model.h"
#include "worker/offline.h"
#include "worker/tokenizer.h"

namespace steadyeval {
namespace {

class TorchEvalBackend : public EvalBackend {
 public:
  absl::StatusOr<LoadStats> Load(const std::string& dir, const std::string& tokenizer_path) override {
    const auto start = std::chrono::steady_clock::now();
    model_.reset();
    tokenizer_.reset();
    ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, CheckpointReader::Open(dir));
    ASSIGN_OR_RETURN(model_, LoadLanguageModel(*reader));
    ASSIGN_OR_RETURN(tokenizer_, Tokenizer::LoadForCheckpoint(dir, tokenizer_path));
    LoadStats stats;
    stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      if (entry.is_regular_file(ec) && absl::EndsWith(entry.path().filename().string(), ".safetensors")) {
        stats.bytes += entry.file_size(ec);
      }
    }
    return stats;
  }

  absl::StatusOr<std::vector<ExampleResult>> Evaluate(const Task& task, int few_shots,
                                                      const ProgressFn& progress) override {
    if (model_ == nullptr || tokenizer_ == nullptr) {
      return absl::FailedPreconditionError("no checkpoint loaded");
    }
    EvalOptions options;
    options.few_shots = few_shots;
    bool cancelled = false;
    options.progress = [&](size_t done, size_t total) {
      if (progress && !progress(done, total)) cancelled = true;
    };
    ASSIGN_OR_RETURN(std::vector<EvalOutput> outputs, EvaluateTask(*model_, *tokenizer_, task, options));
    if (cancelled) return absl::CancelledError("evaluation cancelled");
    std::vector<ExampleResult> results;
    results.reserve(outputs.size());
    for (EvalOutput& o : outputs) {
      tokens_ += CountTokens(task, few_shots, o);
      results.push_back({o.index, std::move(o.output), std::move(o.option_logliks)});
    }
    return results;
  }

  uint64_t tokens_processed() const override { return tokens_; }

 private:
  // Tokens the model read for one example: the prompt (or every option's sequence) plus
  // the generated continuation. Counted by re-tokenizing, which is cheap next to a forward.
  uint64_t CountTokens(const Task& task, int few_shots, const EvalOutput& o) const {
    uint64_t n = 0;
    if (task.kind == TaskKind::kGeneration) {
      auto prompt = tokenizer_->EncodeWithBos(BuildPrompt(task, o.index, {few_shots}));
      auto generated = tokenizer_->Encode(o.output);
      if (prompt.ok()) n += prompt->size();
      if (generated.ok()) n += generated->size();
      return n;
    }
    const ChoiceExample& ex = task.choice_examples[o.index];
    for (const std::string& choice : ex.choices) {
      auto whole = tokenizer_->EncodeWithBos(ex.query + choice);
      if (whole.ok()) n += whole->size();
    }
    return n;
  }

  std::unique_ptr<LanguageModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  uint64_t tokens_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EvalBackend>> CreateTorchEvalBackend(const std::string& device,
                                                                    int threads) {
  if (device != "cpu") {
    return absl::UnimplementedError(absl::StrCat(
        "--device ", device, ": this build evaluates on cpu only (CUDA support is a later issue)"));
  }
  RETURN_IF_ERROR(ConfigureThreads(threads));
  return std::unique_ptr<EvalBackend>(new TorchEvalBackend());
}

}  // namespace steadyeval
