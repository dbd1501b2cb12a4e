#include "worker/model/gpt2/gpt2_model.h"

#include <cmath>
#include <string>
#include <utility>

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/model/config_fields.h"
#include "worker/torch_status.h"

namespace steadyeval {
namespace {

using nlohmann::json;

absl::StatusOr<Gpt2Activation> ParseActivation(const json& doc) {
  const char* field = "activation_function";
  if (!doc.contains(field) || doc[field].is_null()) return Gpt2Activation::kGeluTanh;
  if (!doc[field].is_string()) return ConfigFieldError(field, "must be a string");
  const std::string name = doc[field].get<std::string>();
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") {
    return Gpt2Activation::kGeluTanh;
  }
  if (name == "gelu") return Gpt2Activation::kGelu;
  if (name == "relu") return Gpt2Activation::kRelu;
  return absl::UnimplementedError(absl::StrCat(
      "config.json: activation_function '", name,
      "' is not supported (supported: gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, relu)"));
}

}  // namespace

absl::StatusOr<Gpt2Config> ParseGpt2Config(absl::string_view config_json) {
  ASSIGN_OR_RETURN(json doc, ParseConfigObject(config_json));
  ASSIGN_OR_RETURN(const std::string model_type, ConfigModelType(doc));
  if (model_type != "gpt2") {
    return absl::UnimplementedError(
        absl::StrCat("config.json: model_type '", model_type, "' is not gpt2"));
  }
  Gpt2Config c;
  ASSIGN_OR_RETURN(c.n_embd, ConfigPositiveInt(doc, "n_embd"));
  ASSIGN_OR_RETURN(c.n_layer, ConfigPositiveInt(doc, "n_layer"));
  ASSIGN_OR_RETURN(c.n_head, ConfigPositiveInt(doc, "n_head"));
  if (c.n_embd % c.n_head != 0) {
    return ConfigFieldError(
        "n_head", absl::StrCat("(", c.n_head, ") must divide n_embd (", c.n_embd, ")"));
  }
  ASSIGN_OR_RETURN(c.n_positions, ConfigPositiveInt(doc, "n_positions"));
  ASSIGN_OR_RETURN(c.n_inner, ConfigPositiveInt(doc, "n_inner", 4 * c.n_embd));
  ASSIGN_OR_RETURN(c.vocab_size, ConfigPositiveInt(doc, "vocab_size"));
  ASSIGN_OR_RETURN(c.layer_norm_epsilon, ConfigPositiveNumber(doc, "layer_norm_epsilon", 1e-5));
  ASSIGN_OR_RETURN(c.activation, ParseActivation(doc));
  ASSIGN_OR_RETURN(c.scale_attn_weights, ConfigBool(doc, "scale_attn_weights", true));
  ASSIGN_OR_RETURN(c.scale_attn_by_inverse_layer_idx,
                   ConfigBool(doc, "scale_attn_by_inverse_layer_idx", false));
  // Only reorders float operations (scores in float32 anyway): checked for type, ignored.
  ASSIGN_OR_RETURN(bool reorder_and_upcast, ConfigBool(doc, "reorder_and_upcast_attn", false));
  (void)reorder_and_upcast;
  ASSIGN_OR_RETURN(c.tie_word_embeddings, ConfigBool(doc, "tie_word_embeddings", true));
  ASSIGN_OR_RETURN(c.bos_token_id, ConfigOptionalTokenId(doc, "bos_token_id"));
  ASSIGN_OR_RETURN(c.eos_token_ids, ConfigEosTokenIds(doc));
  if (doc.contains("torch_dtype") && doc["torch_dtype"].is_string()) {
    c.torch_dtype = doc["torch_dtype"].get<std::string>();
  }
  return c;
}

absl::StatusOr<std::unique_ptr<Gpt2Model>> Gpt2Model::Create(const Gpt2Config& config,
                                                             const TensorSource& source,
                                                             const WeightPlacement& placement) {
  std::unique_ptr<Gpt2Model> model(new Gpt2Model(config));
  model->placement_ = placement;
  // The checkpoint's spelling: `transformer.wte.weight` or `wte.weight` (when neither
  // exists, the error names the prefixed one).
  const std::string prefix =
      !source.Info("transformer.wte.weight").ok() && source.Info("wte.weight").ok()
          ? ""
          : "transformer.";
  auto load = [&](const std::string& name, std::vector<int64_t> shape) {
    return LoadWeight(source, name, shape, placement);
  };
  const int64_t H = config.n_embd, I = config.n_inner, V = config.vocab_size;
  at::NoGradGuard no_grad;
  ASSIGN_OR_RETURN(model->wte_, load(prefix + "wte.weight", {V, H}));
  ASSIGN_OR_RETURN(model->wpe_, load(prefix + "wpe.weight", {config.n_positions, H}));
  // Conv1D weights are stored [in, out]; loaded with that shape, kept as [out, in].
  auto load_conv1d = [&](const std::string& name, int64_t in,
                         int64_t out) -> absl::StatusOr<at::Tensor> {
    ASSIGN_OR_RETURN(at::Tensor w, load(name, {in, out}));
    return GuardTorch(absl::StrCat("gpt2: transposing '", name, "'"),
                      [&]() -> absl::StatusOr<at::Tensor> { return w.t().contiguous(); });
  };
  auto load_norm = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
    ASSIGN_OR_RETURN(at::Tensor w, load(name, {H}));
    return GuardTorch(absl::StrCat("gpt2: placing '", name, "'"),
                      [&]() -> absl::StatusOr<at::Tensor> { return w.to(at::kFloat); });
  };
  const double hd = static_cast<double>(config.head_dim());
  for (int64_t i = 0; i < config.n_layer; ++i) {
    const std::string p = absl::StrCat(prefix, "h.", i, ".");
    Layer l;
    ASSIGN_OR_RETURN(l.ln1_weight, load_norm(p + "ln_1.weight"));
    ASSIGN_OR_RETURN(l.ln1_bias, load_norm(p + "ln_1.bias"));
    ASSIGN_OR_RETURN(l.attn, load_conv1d(p + "attn.c_attn.weight", H, 3 * H));
    ASSIGN_OR_RETURN(l.attn_bias, load(p + "attn.c_attn.bias", {3 * H}));
    ASSIGN_OR_RETURN(l.attn_proj, load_conv1d(p + "attn.c_proj.weight", H, H));
    ASSIGN_OR_RETURN(l.attn_proj_bias, load(p + "attn.c_proj.bias", {H}));
    ASSIGN_OR_RETURN(l.ln2_weight, load_norm(p + "ln_2.weight"));
    ASSIGN_OR_RETURN(l.ln2_bias, load_norm(p + "ln_2.bias"));
    ASSIGN_OR_RETURN(l.fc, load_conv1d(p + "mlp.c_fc.weight", H, I));
    ASSIGN_OR_RETURN(l.fc_bias, load(p + "mlp.c_fc.bias", {I}));
    ASSIGN_OR_RETURN(l.mlp_proj, load_conv1d(p + "mlp.c_proj.weight", I, H));
    ASSIGN_OR_RETURN(l.mlp_proj_bias, load(p + "mlp.c_proj.bias", {H}));
    // CausalAttention divides by sqrt(head_dim); undo that without scale_attn_weights and
    // add 1/(i + 1) with scale_attn_by_inverse_layer_idx, both as a factor on q.
    if (!config.scale_attn_weights) l.query_scale *= std::sqrt(hd);
    if (config.scale_attn_by_inverse_layer_idx) l.query_scale /= static_cast<double>(i + 1);
    model->layers_.push_back(std::move(l));
  }
  ASSIGN_OR_RETURN(model->ln_f_weight_, load_norm(prefix + "ln_f.weight"));
  ASSIGN_OR_RETURN(model->ln_f_bias_, load_norm(prefix + "ln_f.bias"));
  if (config.tie_word_embeddings) {
    model->lm_head_ = model->wte_;
  } else {
    ASSIGN_OR_RETURN(model->lm_head_, load("lm_head.weight", {V, H}));
  }
  return model;
}

at::Tensor Gpt2Model::LayerNorm(const at::Tensor& x, const at::Tensor& weight,
                                   const at::Tensor& bias) const {
  return LayerNormFloat32(x, weight, bias, config_.layer_norm_epsilon);
}

at::Tensor Gpt2Model::Activation(const at::Tensor& x) const {
  switch (config_.activation) {
    case Gpt2Activation::kGeluTanh:
      return at::gelu(x, "tanh");
    case Gpt2Activation::kGelu:
      return at::gelu(x);
    case Gpt2Activation::kRelu:
      return at::relu(x);
  }
  return x;  // unreachable
}

absl::StatusOr<at::Tensor> Gpt2Model::Forward(const at::Tensor& input_ids,
                                                 const at::Tensor& token_mask,
                                                 KVCache* cache) const {
  return RunForward(
      "gpt2", input_ids, token_mask, cache, config_.vocab_size, placement_.device,
      [&](const ForwardInputs& in, const AttentionPlan& plan) -> absl::StatusOr<at::Tensor> {
        // Learned positions stop at n_positions - 1: at most n_positions real tokens per
        // row (checked before the cache is touched).
        RETURN_IF_ERROR(CheckPositions(plan));
        return ForwardUnchecked(in.ids, plan, cache);
      });
}

absl::StatusOr<at::Tensor> Gpt2Model::ForwardPacked(const PackedBatch& batch,
                                                       KVCache* cache) const {
  return RunPackedForward(
      "gpt2", batch, cache, config_.vocab_size, placement_.device,
      [&](const ForwardInputs& in, const AttentionPlan& plan) -> absl::StatusOr<at::Tensor> {
        RETURN_IF_ERROR(CheckPositions(plan));
        return ForwardUnchecked(in.ids, plan, cache, batch.outputs);
      });
}

absl::Status Gpt2Model::CheckPositions(const AttentionPlan& plan) const {
  const int64_t longest = plan.Longest();
  if (longest > config_.n_positions) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gpt2 forward: a sequence of ", longest, " tokens exceeds n_positions ",
        config_.n_positions, " (the learned position embeddings end there)"));
  }
  return absl::OkStatus();
}

at::Tensor Gpt2Model::ForwardUnchecked(const at::Tensor& ids, const AttentionPlan& plan,
                                          KVCache* cache,
    const at::Tensor& output_rows) const {
  const int64_t B = plan.batch, T = plan.tokens;
  const int64_t H = config_.n_embd, nh = config_.n_head, hd = config_.head_dim();
  BeginCache(cache, layers_.size());

  // Only a padding token (after a row's last real one) can reach n_positions; its
  // position is meaningless, so clamp it into the table.
  const at::Tensor positions = plan.positions.clamp_max(config_.n_positions - 1);
  std::vector<int64_t> position_shape(positions.sizes().begin(), positions.sizes().end());
  position_shape.push_back(H);
  at::Tensor x = wte_.index_select(0, ids.reshape({-1})).view({B, T, H}) +
                    wpe_.index_select(0, positions.reshape({-1})).view(position_shape);

  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const at::Tensor h = LayerNorm(x, l.ln1_weight, l.ln1_bias);
    const std::vector<at::Tensor> qkv = Linear(h, l.attn, l.attn_bias).split(H, -1);
    at::Tensor q = qkv[0].view({B, T, nh, hd}).transpose(1, 2);
    at::Tensor k = qkv[1].view({B, T, nh, hd}).transpose(1, 2);
    at::Tensor v = qkv[2].view({B, T, nh, hd}).transpose(1, 2);
    if (l.query_scale != 1.0) q = q * l.query_scale;
    if (cache != nullptr) {
      k = AppendSlots(cache->keys()[i], plan.past, k);
      v = AppendSlots(cache->values()[i], plan.past, v);
    }
    x = x + Linear(CausalAttention(q, k, v, plan), l.attn_proj, l.attn_proj_bias);
    const at::Tensor h2 = LayerNorm(x, l.ln2_weight, l.ln2_bias);
    x = x + Linear(Activation(Linear(h2, l.fc, l.fc_bias)), l.mlp_proj, l.mlp_proj_bias);
  }
  FinishCache(cache, plan);
  return Linear(LayerNorm(OutputRows(x, output_rows), ln_f_weight_, ln_f_bias_), lm_head_, {})
      .to(at::kCPU, at::kFloat);
}

absl::StatusOr<std::unique_ptr<LanguageModel>> LoadGpt2Model(const TensorSource& source,
                                                             const WeightPlacement& placement) {
  auto config = ParseGpt2Config(source.config_json());
  if (!config.ok()) return Annotate(config.status(), source.label());
  ASSIGN_OR_RETURN(std::unique_ptr<Gpt2Model> model,
                   Gpt2Model::Create(*config, source, placement));
  return std::unique_ptr<LanguageModel>(std::move(model));
}

}  // namespace steadyeval
