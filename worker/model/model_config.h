// Model configuration from a checkpoint's config.json (Hugging Face layout).
//
// ParseLlamaConfig() accepts the Llama family (`model_type` llama, mistral, qwen2) and
// fills defaults the way Hugging Face does (num_key_value_heads = num_attention_heads,
// head_dim = hidden_size / num_attention_heads, rope_theta = 10000, untied embeddings).
// `rope_scaling` (kind under `rope_type` or the older `type`; `rope_type` wins when both
// are given) may be null/"default", "linear", "dynamic" or "llama3" (see RopeScaling).
// Errors: INVALID_ARGUMENT naming the field (also a missing or invalid rope_scaling
// field); UNIMPLEMENTED for another rope_scaling kind (named), another hidden_act or
// another model family. Thread-safe (pure functions).
#ifndef STEADYEVAL_WORKER_MODEL_MODEL_CONFIG_H_
#define STEADYEVAL_WORKER_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace steadyeval {

// Hugging Face's `rope_scaling` (transformers modeling_rope_utils.py).
struct RopeScaling {
  enum class Kind {
    kNone,     // absent, null or "default"
    kLinear,   // inv_freq / factor (positions divided by factor)
    kDynamic,  // NTK-aware: base rescaled from the sequence length when it exceeds
               // max_position_embeddings
    kLlama3,   // per-frequency interpolation between inv_freq and inv_freq / factor
  };
  Kind kind = Kind::kNone;
  double factor = 1.0;                          // linear, dynamic, llama3
  double low_freq_factor = 0.0;                 // llama3
  double high_freq_factor = 0.0;                // llama3
  int64_t original_max_position_embeddings = 0; // llama3
};

struct LlamaConfig {
  std::string model_type;  // llama | mistral | qwen2
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int64_t vocab_size = 0;
  bool tie_word_embeddings = false;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // eos_token_id given as an int or a list
  std::string torch_dtype;             // as stored ("bfloat16", ...); informational
  int64_t max_position_embeddings = 0; // 0 when absent
  std::optional<int64_t> sliding_window;  // mistral only, when set
  bool qkv_bias = false;  // qwen2, or llama with attention_bias
  bool o_bias = false;    // llama with attention_bias
  RopeScaling rope_scaling;
};

// The `model_type` of a config.json text. INVALID_ARGUMENT when unreadable or absent.
absl::StatusOr<std::string> ModelTypeOf(absl::string_view config_json);

absl::StatusOr<LlamaConfig> ParseLlamaConfig(absl::string_view config_json);

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_MODEL_MODEL_CONFIG_H_
