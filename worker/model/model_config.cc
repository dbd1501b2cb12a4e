#include "worker/model/model_config.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/model/config_fields.h"

namespace steadyeval {
namespace {

using nlohmann::json;

absl::Status RopeFieldError(absl::string_view field, absl::string_view what) {
  return ConfigFieldError(absl::StrCat("rope_scaling.", field), what);
}

// A positive number inside rope_scaling; required.
absl::StatusOr<double> RopeNumber(const json& scaling, const char* field) {
  if (!scaling.contains(field) || scaling[field].is_null()) {
    return RopeFieldError(field, "is required");
  }
  const json& v = scaling[field];
  if (!v.is_number() || !(v.get<double>() > 0)) {
    return RopeFieldError(field, "must be a positive number");
  }
  return v.get<double>();
}

// Hugging Face's rope_scaling; `max_position_embeddings` is 0 when absent.
absl::StatusOr<RopeScaling> ParseRopeScaling(const json& doc, int64_t max_position_embeddings) {
  RopeScaling r;
  if (!doc.contains("rope_scaling") || doc["rope_scaling"].is_null()) return r;
  const json& scaling = doc["rope_scaling"];
  if (!scaling.is_object()) {
    return ConfigFieldError("rope_scaling", "must be an object or null");
  }
  // Newer configs spell the kind `rope_type`, older ones `type`. When both are given,
  // `rope_type` wins (as in transformers' rope_parameters standardisation).
  const char* key = scaling.contains("rope_type") && !scaling["rope_type"].is_null()
                        ? "rope_type"
                        : "type";
  if (!scaling.contains(key) || scaling[key].is_null()) {
    return RopeFieldError("rope_type", "is required (or 'type')");
  }
  if (!scaling[key].is_string()) return RopeFieldError(key, "must be a string");
  const std::string kind = scaling[key].get<std::string>();
  if (kind == "default") return r;
  if (kind == "linear") {
    r.kind = RopeScaling::Kind::kLinear;
  } else if (kind == "dynamic") {
    r.kind = RopeScaling::Kind::kDynamic;
    if (max_position_embeddings <= 0) {
      return ConfigFieldError("max_position_embeddings",
                              "is required for rope_scaling 'dynamic'");
    }
  } else if (kind == "llama3") {
    r.kind = RopeScaling::Kind::kLlama3;
  } else {
    return absl::UnimplementedError(absl::StrCat(
        "config.json: rope_scaling type '", kind,
        "' is not supported (supported: default, linear, dynamic, llama3)"));
  }
  ASSIGN_OR_RETURN(r.factor, RopeNumber(scaling, "factor"));
  if (r.kind == RopeScaling::Kind::kLlama3) {
    ASSIGN_OR_RETURN(r.low_freq_factor, RopeNumber(scaling, "low_freq_factor"));
    ASSIGN_OR_RETURN(r.high_freq_factor, RopeNumber(scaling, "high_freq_factor"));
    if (!(r.high_freq_factor > r.low_freq_factor)) {
      return RopeFieldError("high_freq_factor", "must be greater than low_freq_factor");
    }
    const char* field = "original_max_position_embeddings";
    if (!scaling.contains(field) || scaling[field].is_null()) {
      return RopeFieldError(field, "is required");
    }
    if (!scaling[field].is_number_integer() || scaling[field].get<int64_t>() <= 0) {
      return RopeFieldError(field, "must be a positive integer");
    }
    r.original_max_position_embeddings = scaling[field].get<int64_t>();
  }
  return r;
}

}  // namespace

absl::StatusOr<std::string> ModelTypeOf(absl::string_view config_json) {
  ASSIGN_OR_RETURN(json doc, ParseConfigObject(config_json));
  return ConfigModelType(doc);
}

absl::StatusOr<LlamaConfig> ParseLlamaConfig(absl::string_view config_json) {
  ASSIGN_OR_RETURN(json doc, ParseConfigObject(config_json));
  LlamaConfig c;
  ASSIGN_OR_RETURN(c.model_type, ConfigModelType(doc));
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2") {
    return absl::UnimplementedError(absl::StrCat(
        "config.json: model_type '", c.model_type,
        "' is not a Llama-family model (supported here: llama, mistral, qwen2)"));
  }
  if (doc.contains("hidden_act") && doc["hidden_act"].is_string() &&
      doc["hidden_act"].get<std::string>() != "silu") {
    return absl::UnimplementedError(absl::StrCat("config.json: hidden_act '",
                                                 doc["hidden_act"].get<std::string>(),
                                                 "' is not supported (only silu)"));
  }
  ASSIGN_OR_RETURN(c.hidden_size, ConfigPositiveInt(doc, "hidden_size"));
  ASSIGN_OR_RETURN(c.intermediate_size, ConfigPositiveInt(doc, "intermediate_size"));
  ASSIGN_OR_RETURN(c.num_hidden_layers, ConfigPositiveInt(doc, "num_hidden_layers"));
  ASSIGN_OR_RETURN(c.num_attention_heads, ConfigPositiveInt(doc, "num_attention_heads"));
  ASSIGN_OR_RETURN(c.num_key_value_heads,
                   ConfigPositiveInt(doc, "num_key_value_heads", c.num_attention_heads));
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: num_attention_heads (", c.num_attention_heads,
        ") is not a multiple of num_key_value_heads (", c.num_key_value_heads, ")"));
  }
  if (!doc.contains("head_dim") && c.hidden_size % c.num_attention_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: hidden_size (", c.hidden_size, ") is not a multiple of ",
        "num_attention_heads (", c.num_attention_heads, ") and there is no head_dim"));
  }
  ASSIGN_OR_RETURN(c.head_dim,
                   ConfigPositiveInt(doc, "head_dim", c.hidden_size / c.num_attention_heads));
  if (c.head_dim % 2 != 0) return ConfigFieldError("head_dim", "must be even for RoPE");
  ASSIGN_OR_RETURN(c.rms_norm_eps, ConfigPositiveNumber(doc, "rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(c.rope_theta, ConfigPositiveNumber(doc, "rope_theta", 10000.0));
  ASSIGN_OR_RETURN(c.vocab_size, ConfigPositiveInt(doc, "vocab_size"));
  ASSIGN_OR_RETURN(c.tie_word_embeddings, ConfigBool(doc, "tie_word_embeddings", false));
  ASSIGN_OR_RETURN(c.bos_token_id, ConfigOptionalTokenId(doc, "bos_token_id"));
  ASSIGN_OR_RETURN(c.eos_token_ids, ConfigEosTokenIds(doc));
  if (doc.contains("torch_dtype") && doc["torch_dtype"].is_string()) {
    c.torch_dtype = doc["torch_dtype"].get<std::string>();
  }
  ASSIGN_OR_RETURN(c.max_position_embeddings,
                   ConfigPositiveInt(doc, "max_position_embeddings", 0));
  ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(doc, c.max_position_embeddings));
  if (c.model_type == "mistral" && doc.contains("sliding_window") &&
      !doc["sliding_window"].is_null()) {
    ASSIGN_OR_RETURN(int64_t window, ConfigPositiveInt(doc, "sliding_window"));
    c.sliding_window = window;
  }
  ASSIGN_OR_RETURN(bool attention_bias, ConfigBool(doc, "attention_bias", false));
  if (c.model_type == "qwen2") {
    c.qkv_bias = true;
  } else if (attention_bias) {
    c.qkv_bias = true;
    c.o_bias = true;
  }
  return c;
}

}  // namespace steadyeval
