// A checkpoint's config.json through every model family's parser (worker/model/model_config.h,
// gpt2_model.h, gpt_neox_model.h) and the model_type dispatch the worker does first.
// Input: the file's bytes.
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "worker/model/gpt2/gpt2_model.h"
#include "worker/model/gpt_neox/gpt_neox_model.h"
#include "worker/model/model_config.h"

using namespace steadyeval;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text = fuzz::AsView(data, size);
  (void)ModelTypeOf(text);

  if (auto c = ParseLlamaConfig(text); c.ok()) {
    FUZZ_CHECK(c->hidden_size > 0 && c->intermediate_size > 0 && c->num_hidden_layers > 0);
    FUZZ_CHECK(c->num_attention_heads > 0 && c->num_key_value_heads > 0);
    FUZZ_CHECK(c->num_attention_heads % c->num_key_value_heads == 0);
    FUZZ_CHECK(c->head_dim > 0 && c->head_dim % 2 == 0);
    FUZZ_CHECK(c->vocab_size > 0 && c->rms_norm_eps > 0 && c->rope_theta > 0);
    FUZZ_CHECK(c->rope_scaling.factor > 0);
    for (int64_t id : c->eos_token_ids) FUZZ_CHECK(id >= 0);
  }
  if (auto c = ParseGpt2Config(text); c.ok()) {
    FUZZ_CHECK(c->n_embd > 0 && c->n_layer > 0 && c->n_head > 0 && c->n_positions > 0);
    FUZZ_CHECK(c->n_embd % c->n_head == 0 && c->head_dim() > 0);
    FUZZ_CHECK(c->n_inner > 0 && c->vocab_size > 0 && c->layer_norm_epsilon > 0);
    for (int64_t id : c->eos_token_ids) FUZZ_CHECK(id >= 0);
  }
  if (auto c = ParseGptNeoxConfig(text); c.ok()) {
    FUZZ_CHECK(c->hidden_size > 0 && c->num_attention_heads > 0);
    FUZZ_CHECK(c->head_dim * c->num_attention_heads == c->hidden_size);
    FUZZ_CHECK(c->rotary_pct > 0 && c->rotary_pct <= 1);
    FUZZ_CHECK(c->rotary_ndims >= 0 && c->rotary_ndims <= c->head_dim && c->rotary_ndims % 2 == 0);
    FUZZ_CHECK(c->vocab_size > 0 && c->layer_norm_eps > 0 && c->rotary_emb_base > 0);
    for (int64_t id : c->eos_token_ids) FUZZ_CHECK(id >= 0);
  }
  return 0;
}
