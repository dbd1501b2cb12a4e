#!/usr/bin/python3
"""Writes the tiny Llama fixtures under tests/fixtures/llama/ and their expected log-probs.

Run from the repository root with Debian's Python (numpy is all it needs):

    /usr/bin/python3 tests/reference/llama_reference.py

Each fixture is a Hugging Face-layout checkpoint (config.json + model.safetensors, or shards
plus model.safetensors.index.json) with random weights, written by hand (no transformers,
no safetensors package): 8-byte little-endian header length, JSON header padded with spaces
to 8 bytes, then the data. The forward pass below is an independent float64 NumPy
implementation of the published Llama architecture (see /work/shared/MODELS.md):
RMSNorm, rotate-half RoPE, GQA via repeat-interleave of kv heads, causal softmax attention,
SwiGLU MLP, tied or untied LM head, attention biases (q/k/v for qwen2 and llama
attention_bias, o as well for llama attention_bias), explicit head_dim, and rope_scaling
linear / dynamic (NTK) / llama3 as Hugging Face defines them. Weights stored in bf16/fp16 are rounded first and the
reference computes from the rounded values, so the C++ forward (fp32) must match within
1e-4 for every fixture.

expected.json: {"tokens": [...], "token_logprobs": [null, lp_1, ...],
                "last_logprobs": [log p(v | all tokens) for every v]}
"""
import json
import os

import numpy as np

from reference_common import (TORCH_DTYPE, fresh_fixture_dir, log_softmax, rotate_half,
                               store_all, write_config, write_expected, write_safetensors)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "llama")


def attention_biases(cfg):
    """(bias on q/k/v, bias on o): qwen2 always has q/k/v biases and never an o bias;
    llama/mistral have all four exactly when attention_bias is true."""
    if cfg["model_type"] == "qwen2":
        return True, False
    on = bool(cfg.get("attention_bias", False))
    return on, on


def make_weights(rng, cfg):
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", H // nh)
    w = {}
    w["model.embed_tokens.weight"] = rng.normal(0, 1.0, (V, H))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + 0.1 * rng.normal(size=H)
        w[p + "self_attn.q_proj.weight"] = rng.normal(0, 0.3, (nh * hd, H))
        w[p + "self_attn.k_proj.weight"] = rng.normal(0, 0.3, (nkv * hd, H))
        w[p + "self_attn.v_proj.weight"] = rng.normal(0, 0.3, (nkv * hd, H))
        w[p + "self_attn.o_proj.weight"] = rng.normal(0, 0.2, (H, nh * hd))
        qkv_bias, o_bias = attention_biases(cfg)
        if qkv_bias:  # drawn only when present, so bias-free fixtures keep their bytes
            w[p + "self_attn.q_proj.bias"] = rng.normal(0, 0.5, nh * hd)
            w[p + "self_attn.k_proj.bias"] = rng.normal(0, 0.5, nkv * hd)
            w[p + "self_attn.v_proj.bias"] = rng.normal(0, 0.5, nkv * hd)
        if o_bias:
            w[p + "self_attn.o_proj.bias"] = rng.normal(0, 0.5, H)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.normal(size=H)
        w[p + "mlp.gate_proj.weight"] = rng.normal(0, 0.2, (I, H))
        w[p + "mlp.up_proj.weight"] = rng.normal(0, 0.2, (I, H))
        w[p + "mlp.down_proj.weight"] = rng.normal(0, 0.2, (H, I))
    w["model.norm.weight"] = 1 + 0.1 * rng.normal(size=H)
    if not cfg.get("tie_word_embeddings", False):
        w["lm_head.weight"] = rng.normal(0, 0.3, (V, H))
    return w


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope_inv_freq(cfg, hd, T):
    """Rotary frequencies [hd/2] for one forward over T tokens, rope_scaling applied.

    From the published definitions (transformers' rope utilities / the Llama 3.1 and
    dynamic-NTK write-ups): linear divides every frequency by factor; dynamic, when T
    exceeds max_position_embeddings M, replaces the base by
    theta * (factor*T/M - (factor-1))^(hd/(hd-2)); llama3 keeps short wavelengths
    (< orig/high_freq_factor), divides long ones (> orig/low_freq_factor) by factor and
    blends linearly in 1/wavelength in between."""
    theta = cfg.get("rope_theta", 10000.0)
    scaling = cfg.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    exponents = np.arange(0, hd, 2, dtype=np.float64) / hd
    if kind == "default":
        return theta ** (-exponents)
    factor = float(scaling["factor"])
    if kind == "linear":
        return theta ** (-exponents) / factor
    if kind == "dynamic":
        M = cfg["max_position_embeddings"]
        if T > M:
            theta = theta * (factor * T / M - (factor - 1)) ** (hd / (hd - 2))
        return theta ** (-exponents)
    if kind == "llama3":
        freq = theta ** (-exponents)
        orig = float(scaling["original_max_position_embeddings"])
        lo, hi = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        out = np.empty_like(freq)
        for j, f in enumerate(freq):
            wavelen = 2 * np.pi / f
            if wavelen < orig / hi:
                out[j] = f
            elif wavelen > orig / lo:
                out[j] = f / factor
            else:
                s = (orig / wavelen - lo) / (hi - lo)
                out[j] = (1 - s) * f / factor + s * f
        return out
    raise ValueError(kind)


def forward(w, cfg, tokens):
    """Log-probs [T, V] for a single sequence, float64."""
    H = cfg["hidden_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", H // nh)
    eps = cfg["rms_norm_eps"]
    T = len(tokens)
    x = w["model.embed_tokens.weight"][np.array(tokens)]
    inv_freq = rope_inv_freq(cfg, hd, T)
    angles = np.outer(np.arange(T, dtype=np.float64), inv_freq)
    emb = np.concatenate([angles, angles], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = h @ w[p + "self_attn.q_proj.weight"].T + w.get(p + "self_attn.q_proj.bias", 0)
        k = h @ w[p + "self_attn.k_proj.weight"].T + w.get(p + "self_attn.k_proj.bias", 0)
        v = h @ w[p + "self_attn.v_proj.weight"].T + w.get(p + "self_attn.v_proj.bias", 0)
        q = q.reshape(T, nh, hd).transpose(1, 0, 2)
        k = k.reshape(T, nkv, hd).transpose(1, 0, 2)
        v = v.reshape(T, nkv, hd).transpose(1, 0, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, nh // nkv, axis=0)  # head j of q uses kv head j // (nh/nkv)
        v = np.repeat(v, nh // nkv, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        probs = np.exp(log_softmax(scores))
        attn = (probs @ v).transpose(1, 0, 2).reshape(T, nh * hd)
        x = x + attn @ w[p + "self_attn.o_proj.weight"].T + w.get(p + "self_attn.o_proj.bias", 0)
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + ((gate / (1 + np.exp(-gate))) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return log_softmax(x @ head.T)


def write_fixture(name, cfg, dtype, seed, shards=1, extra_buffers=False):
    d = fresh_fixture_dir(ROOT, name)
    rng = np.random.default_rng(seed)
    entries, real = store_all(make_weights(rng, cfg), dtype)
    if extra_buffers:  # a non-parameter buffer older checkpoints carry; must be ignored
        hd = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
        inv = (10000.0 ** (-np.arange(0, hd, 2) / hd)).astype(np.float32)
        entries.append(("model.layers.0.self_attn.rotary_emb.inv_freq", "F32", inv.shape,
                        inv.tobytes()))
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), entries)
    else:
        per = (len(entries) + shards - 1) // shards
        weight_map = {}
        total = 0
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = entries[s * per:(s + 1) * per]
            write_safetensors(os.path.join(d, fname), part)
            for e in part:
                weight_map[e[0]] = fname
                total += len(e[3])
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f,
                      indent=2, sort_keys=True)
    full_cfg = dict(cfg)
    full_cfg["architectures"] = [
        {"qwen2": "Qwen2ForCausalLM"}.get(cfg["model_type"], "LlamaForCausalLM")]
    full_cfg["torch_dtype"] = TORCH_DTYPE[dtype]
    write_config(d, full_cfg)
    trng = np.random.default_rng(seed + 1000)
    tokens = [1] + [int(t) for t in trng.integers(3, cfg["vocab_size"], size=15)]
    write_expected(d, tokens, forward(real, cfg, tokens))


def base_cfg(**over):
    cfg = {
        "model_type": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": 256,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "max_position_embeddings": 128,
        "hidden_act": "silu",
        "rope_scaling": None,
    }
    cfg.update(over)
    return cfg


def main():
    # vocab 420 = the tokenizer fixture's size: the evaluator tests run this model with it.
    write_fixture("gqa", base_cfg(vocab_size=420), "F32", seed=1, extra_buffers=True)
    write_fixture("tied", base_cfg(tie_word_embeddings=True, vocab_size=200), "F32", seed=2)
    # MHA with an explicit head_dim different from hidden/heads, and another rope_theta.
    write_fixture("mha", base_cfg(num_key_value_heads=4, head_dim=16, rope_theta=500000.0,
                                  vocab_size=96, eos_token_id=[2, 3]), "F32", seed=3)
    write_fixture("bf16", base_cfg(), "BF16", seed=4)
    write_fixture("fp16", base_cfg(num_attention_heads=8, num_key_value_heads=2, vocab_size=80),
                  "F16", seed=5)
    write_fixture("sharded", base_cfg(model_type="mistral"), "F32", seed=6, shards=2)
    # rope_scaling, old spelling `type`: every frequency / 4.
    write_fixture("rope_linear", base_cfg(rope_scaling={"type": "linear", "factor": 4.0}),
                  "F32", seed=7)
    # Dynamic NTK: 16 tokens > max_position_embeddings 8, so the base is rescaled.
    write_fixture("rope_dynamic",
                  base_cfg(max_position_embeddings=8,
                           rope_scaling={"rope_type": "dynamic", "factor": 2.0}),
                  "F32", seed=8)
    # llama3 with hd 8, theta 1e4: wavelengths 6.3 (< 128/4: kept), 62.8 (smoothed),
    # 628 and 6283 (> 128/1: divided by 8).
    write_fixture("rope_llama3",
                  base_cfg(rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                         "original_max_position_embeddings": 128}),
                  "F32", seed=9)
    # GQA with head_dim 12 != hidden/heads = 8: q/k/v/o shapes follow head_dim.
    write_fixture("head_dim", base_cfg(head_dim=12), "F32", seed=10)
    # Llama attention_bias: biases on q, k, v and o.
    write_fixture("attn_bias", base_cfg(attention_bias=True), "F32", seed=11)
    # Qwen2: biases on q, k, v only; its sliding-window keys are off and ignored.
    write_fixture("qwen2", base_cfg(model_type="qwen2", rope_theta=1000000.0,
                                    use_sliding_window=False, sliding_window=4096,
                                    max_window_layers=2),
                  "F32", seed=12)


if __name__ == "__main__":
    main()
