#!/usr/bin/python3
"""Writes the tiny GPT-NeoX (Pythia) fixtures under tests/fixtures/gpt_neox/ and their
expected log-probs.

Run from the repository root with Debian's Python (numpy is all it needs):

    /usr/bin/python3 tests/reference/gpt_neox_reference.py

Each fixture is a Hugging Face-layout checkpoint (config.json with model_type "gpt_neox",
model.safetensors) with random weights, written by hand with the safetensors writer and
bf16 rounding of reference_common.py. The forward pass below is an independent float64
NumPy implementation of the GPT-NeoX architecture (/work/shared/MODELS.md, checked against
transformers' modeling_gpt_neox.py):

  - the fused query_key_value projection [3H, H] is laid out per head: its output, viewed
    as [T, nh, 3*hd], holds q, k, v of head j in [:hd], [hd:2hd], [2hd:];
  - partial rotary: rotate-half RoPE on the first rotary_ndims = int(hd * rotary_pct)
    dims of q and k, inv_freq[j] = rotary_emb_base^(-2j / rotary_ndims); the rest pass;
  - causal softmax attention scaled by 1/sqrt(hd), then the `dense` output projection;
  - LayerNorm with weight and bias (layer_norm_eps); MLP dense_h_to_4h -> act ->
    dense_4h_to_h, all with biases; act "gelu" (exact erf), "gelu_new" (tanh) or "relu";
  - use_parallel_residual: x + attn(ln1(x)) + mlp(ln2(x)); otherwise
    h = x + attn(ln1(x)); h + mlp(ln2(h));
  - final_layer_norm, then embed_out (or embed_in when tie_word_embeddings);
  - attention_bias false drops the query_key_value and dense biases (the MLP keeps its).

Weights stored in bf16 are rounded first and the reference computes from the rounded
values, so the C++ forward (fp32) must match within 1e-4 for every fixture.

The script also runs deliberately wrong variants of the forward (QKV split as [3, nh, hd],
rotary on all head dims, the other residual form, interleaved-pair RoPE) and asserts that
each moves some log-prob by more than 0.01, so the fixtures can tell those mistakes apart.

expected.json: {"tokens": [...], "token_logprobs": [null, lp_1, ...],
                "last_logprobs": [log p(v | all tokens) for every v]}
"""
import os

import numpy as np

from reference_common import (TORCH_DTYPE, fresh_fixture_dir, gelu_exact, gelu_tanh,
                               layer_norm, log_softmax, rotate_half, store_all, write_config,
                               write_expected, write_safetensors)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "gpt_neox")


def make_weights(rng, cfg):
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    bias = cfg.get("attention_bias", True)
    w = {}
    # The LM head's scale sets the logits' magnitude, and with it the fp32 rounding that
    # separates equivalent computations (one pass vs token by token, padded vs alone):
    # logits of magnitude ~40 differ by ~1e-5. Tied, the embedding is the head.
    embed_std = 0.1 if cfg.get("tie_word_embeddings", False) else 1.0
    w["gpt_neox.embed_in.weight"] = rng.normal(0, embed_std, (V, H))
    for i in range(cfg["num_hidden_layers"]):
        p = f"gpt_neox.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + 0.2 * rng.normal(size=H)
        w[p + "input_layernorm.bias"] = 0.2 * rng.normal(size=H)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.2 * rng.normal(size=H)
        w[p + "post_attention_layernorm.bias"] = 0.2 * rng.normal(size=H)
        w[p + "attention.query_key_value.weight"] = rng.normal(0, 0.3, (3 * H, H))
        if bias:
            w[p + "attention.query_key_value.bias"] = rng.normal(0, 0.5, 3 * H)
        w[p + "attention.dense.weight"] = rng.normal(0, 0.2, (H, H))
        if bias:
            w[p + "attention.dense.bias"] = rng.normal(0, 0.3, H)
        w[p + "mlp.dense_h_to_4h.weight"] = rng.normal(0, 0.2, (I, H))
        w[p + "mlp.dense_h_to_4h.bias"] = rng.normal(0, 0.3, I)
        w[p + "mlp.dense_4h_to_h.weight"] = rng.normal(0, 0.15, (H, I))
        w[p + "mlp.dense_4h_to_h.bias"] = rng.normal(0, 0.3, H)
    w["gpt_neox.final_layer_norm.weight"] = 1 + 0.2 * rng.normal(size=H)
    w["gpt_neox.final_layer_norm.bias"] = 0.2 * rng.normal(size=H)
    if not cfg.get("tie_word_embeddings", False):
        w["embed_out.weight"] = rng.normal(0, 0.15, (V, H))
    return w


def activation(name, x):
    if name == "gelu":
        return gelu_exact(x)
    if name == "gelu_new":
        return gelu_tanh(x)
    if name == "relu":
        return np.maximum(x, 0)
    raise ValueError(name)


def rotate_pairs(x):
    """The interleaved (GPT-J) convention: a wrong variant, never the reference."""
    out = np.empty_like(x)
    out[..., 0::2] = -x[..., 1::2]
    out[..., 1::2] = x[..., 0::2]
    return out


def forward(w, cfg, tokens, variant=None):
    """Log-probs [T, V] for a single sequence, float64. `variant` names a deliberate
    mistake (see main) and is None for the reference."""
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = H // nh
    eps = cfg["layer_norm_eps"]
    act = cfg["hidden_act"]
    parallel = cfg["use_parallel_residual"]
    if variant == "other_residual":
        parallel = not parallel
    rot = int(hd * cfg["rotary_pct"])
    if variant == "rotary_all_dims":
        rot = hd
    T = len(tokens)
    x = w["gpt_neox.embed_in.weight"][np.array(tokens)]
    inv_freq = cfg["rotary_emb_base"] ** (-np.arange(0, rot, 2, dtype=np.float64) / rot)
    angles = np.outer(np.arange(T, dtype=np.float64), inv_freq)  # [T, rot/2]
    if variant == "interleaved_rope":
        emb = np.repeat(angles, 2, axis=-1)
        turn = rotate_pairs
    else:
        emb = np.concatenate([angles, angles], axis=-1)
        turn = rotate_half
    cos, sin = np.cos(emb), np.sin(emb)

    def rope(t):  # t: [nh, T, hd]
        r, rest = t[..., :rot], t[..., rot:]
        return np.concatenate([r * cos + turn(r) * sin, rest], axis=-1)

    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"gpt_neox.layers.{i}."
        h = layer_norm(x, w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"], eps)
        qkv = h @ w[p + "attention.query_key_value.weight"].T
        qkv = qkv + w.get(p + "attention.query_key_value.bias", 0)
        if variant == "qkv_3_nh_hd":
            parts = qkv.reshape(T, 3, nh, hd)
            q, k, v = parts[:, 0], parts[:, 1], parts[:, 2]  # each [T, nh, hd]
        else:
            per_head = qkv.reshape(T, nh, 3 * hd)
            q, k, v = per_head[..., :hd], per_head[..., hd:2 * hd], per_head[..., 2 * hd:]
        q, k, v = (t.transpose(1, 0, 2) for t in (q, k, v))  # [nh, T, hd]
        q, k = rope(q), rope(k)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        probs = np.exp(log_softmax(scores))
        attn = (probs @ v).transpose(1, 0, 2).reshape(T, H)
        attn = attn @ w[p + "attention.dense.weight"].T + w.get(p + "attention.dense.bias", 0)

        def mlp(u):
            up = u @ w[p + "mlp.dense_h_to_4h.weight"].T + w[p + "mlp.dense_h_to_4h.bias"]
            return activation(act, up) @ w[p + "mlp.dense_4h_to_h.weight"].T + \
                w[p + "mlp.dense_4h_to_h.bias"]

        ln2 = (w[p + "post_attention_layernorm.weight"], w[p + "post_attention_layernorm.bias"])
        if parallel:
            x = x + attn + mlp(layer_norm(x, *ln2, eps))
        else:
            x = x + attn
            x = x + mlp(layer_norm(x, *ln2, eps))
    x = layer_norm(x, w["gpt_neox.final_layer_norm.weight"], w["gpt_neox.final_layer_norm.bias"],
                   eps)
    head = w.get("embed_out.weight", w["gpt_neox.embed_in.weight"])
    return log_softmax(x @ head.T)


WRONG_VARIANTS = ["qkv_3_nh_hd", "rotary_all_dims", "other_residual", "interleaved_rope"]


def write_fixture(name, cfg, dtype, seed):
    d = fresh_fixture_dir(ROOT, name)
    rng = np.random.default_rng(seed)
    entries, real = store_all(make_weights(rng, cfg), dtype)
    write_safetensors(os.path.join(d, "model.safetensors"), entries)
    full_cfg = dict(cfg)
    full_cfg["architectures"] = ["GPTNeoXForCausalLM"]
    full_cfg["torch_dtype"] = TORCH_DTYPE[dtype]
    write_config(d, full_cfg)
    trng = np.random.default_rng(seed + 1000)
    tokens = [0] + [int(t) for t in trng.integers(1, cfg["vocab_size"], size=15)]
    lp = forward(real, cfg, tokens)
    write_expected(d, tokens, lp)
    # Each deliberate mistake must move the per-token log-probs visibly.
    real_lp = np.array([lp[i - 1, tokens[i]] for i in range(1, len(tokens))])
    report = []
    for variant in WRONG_VARIANTS:
        if variant == "rotary_all_dims" and cfg["rotary_pct"] == 1.0:
            continue  # the same model
        wrong = forward(real, cfg, tokens, variant)
        wrong_lp = np.array([wrong[i - 1, tokens[i]] for i in range(1, len(tokens))])
        delta = float(np.abs(wrong_lp - real_lp).max())
        assert delta > 0.01, (name, variant, delta)
        report.append(f"{variant} {delta:.3f}")
    print(f"{name}: max |log-prob change| of wrong variants: " + ", ".join(report))


def base_cfg(**over):
    cfg = {
        "model_type": "gpt_neox",
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 160,
        "rotary_pct": 0.25,
        "rotary_emb_base": 10000,
        "layer_norm_eps": 1e-5,
        "use_parallel_residual": True,
        "hidden_act": "gelu",
        "tie_word_embeddings": False,
        "attention_bias": True,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "max_position_embeddings": 2048,
        "rope_scaling": None,
        "use_cache": True,
        "initializer_range": 0.02,
    }
    cfg.update(over)
    return cfg


def main():
    # hd = 16 everywhere: rotary_ndims 4 (parallel), 8 (sequential), 16 (tied).
    write_fixture("parallel", base_cfg(), "F32", seed=21)
    write_fixture("sequential", base_cfg(use_parallel_residual=False, rotary_pct=0.5,
                                         rotary_emb_base=1000, hidden_act="gelu_new",
                                         vocab_size=128, eos_token_id=[0, 2]),
                  "F32", seed=22)
    write_fixture("tied", base_cfg(tie_word_embeddings=True, rotary_pct=1.0, vocab_size=120),
                  "F32", seed=23)
    write_fixture("bf16", base_cfg(), "BF16", seed=24)
    # attention_bias false (no query_key_value / dense biases), relu MLP, 8 heads of 8.
    write_fixture("no_attn_bias", base_cfg(attention_bias=False, hidden_act="relu",
                                           num_attention_heads=8, rotary_pct=0.5,
                                           vocab_size=100),
                  "F32", seed=25)


if __name__ == "__main__":
    main()
