#!/usr/bin/python3
"""Writes the tiny GPT-2 fixtures under tests/fixtures/gpt2/ and their expected log-probs.

Run from the repository root with Debian's Python (numpy is all it needs):

    /usr/bin/python3 tests/reference/gpt2_reference.py

Each fixture is a Hugging Face-layout GPT2LMHeadModel checkpoint (config.json +
model.safetensors) with random weights, written by hand (no transformers, no safetensors
package) with the safetensors writer, bf16 rounding and NumPy blocks of
reference_common.py. The forward pass below is an independent float64 NumPy
implementation of the GPT-2 architecture (see /work/shared/MODELS.md): learned token +
absolute position embeddings, pre-LayerNorm blocks, "Conv1D" projections stored [in, out] (y = x W + b),
c_attn output split along the last axis into q, k, v, causal softmax attention scaled by
1/sqrt(head_dim) (unless scale_attn_weights is false) and additionally by 1/(layer+1)
with scale_attn_by_inverse_layer_idx, the tanh-approximated GELU (gelu_new) or the exact
one (gelu), a final LayerNorm and an LM head tied to the token embedding (or a separate
lm_head.weight, [V, H] like nn.Linear). Weights stored in bf16 are rounded first and the
reference computes from the rounded values, so the C++ forward (fp32) must match within
1e-4 for every fixture.

It also prints, per fixture, how far two plausible mistakes would move the log-probs
(the attention output projection used without transposing, and the other GELU), to show
that the fixtures can tell them apart from the right answer at 1e-4.

expected.json: {"tokens": [...], "token_logprobs": [null, lp_1, ...],
                "last_logprobs": [log p(v | all tokens) for every v]}
"""
import math
import os

import numpy as np

from reference_common import (TORCH_DTYPE, fresh_fixture_dir, gelu_exact, gelu_tanh,
                               layer_norm, log_softmax, store_all, write_config,
                               write_expected, write_safetensors)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "gpt2")


def inner_size(cfg):
    return cfg["n_inner"] if cfg.get("n_inner") is not None else 4 * cfg["n_embd"]


def make_weights(rng, cfg):
    """Parameters under their names without the `transformer.` prefix; lm_head.weight
    (when untied) is top-level in every layout."""
    H, V, P, I = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], inner_size(cfg)
    w = {}
    w["wte.weight"] = rng.normal(0, 0.5, (V, H))
    w["wpe.weight"] = rng.normal(0, 0.5, (P, H))
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        w[p + "ln_1.weight"] = 1 + 0.1 * rng.normal(size=H)
        w[p + "ln_1.bias"] = 0.1 * rng.normal(size=H)
        w[p + "attn.c_attn.weight"] = rng.normal(0, 0.3, (H, 3 * H))  # [in, out]
        w[p + "attn.c_attn.bias"] = rng.normal(0, 0.2, 3 * H)
        w[p + "attn.c_proj.weight"] = rng.normal(0, 0.25, (H, H))
        w[p + "attn.c_proj.bias"] = rng.normal(0, 0.1, H)
        w[p + "ln_2.weight"] = 1 + 0.1 * rng.normal(size=H)
        w[p + "ln_2.bias"] = 0.1 * rng.normal(size=H)
        w[p + "mlp.c_fc.weight"] = rng.normal(0, 0.3, (H, I))
        w[p + "mlp.c_fc.bias"] = rng.normal(0, 0.2, I)
        w[p + "mlp.c_proj.weight"] = rng.normal(0, 0.2, (I, H))
        w[p + "mlp.c_proj.bias"] = rng.normal(0, 0.1, H)
    w["ln_f.weight"] = 1 + 0.1 * rng.normal(size=H)
    w["ln_f.bias"] = 0.1 * rng.normal(size=H)
    if not cfg.get("tie_word_embeddings", True):
        w["lm_head.weight"] = rng.normal(0, 0.5, (V, H))  # nn.Linear: [out, in]
    return w


ACTIVATIONS = {"gelu_new": gelu_tanh, "gelu": gelu_exact, "relu": lambda x: np.maximum(x, 0)}


def forward(w, cfg, tokens, activation=None, transpose_attn_proj_bug=False):
    """Log-probs [T, V] for one sequence starting at position 0, float64. The two keyword
    arguments inject the mistakes the fixtures must detect."""
    H, nh = cfg["n_embd"], cfg["n_head"]
    hd = H // nh
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    act = ACTIVATIONS[activation or cfg.get("activation_function", "gelu_new")]
    T = len(tokens)
    x = w["wte.weight"][np.array(tokens)] + w["wpe.weight"][np.arange(T)]
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # [T, 3H]
        q, k, v = qkv[:, :H], qkv[:, H:2 * H], qkv[:, 2 * H:]
        q = q.reshape(T, nh, hd).transpose(1, 0, 2)
        k = k.reshape(T, nh, hd).transpose(1, 0, 2)
        v = v.reshape(T, nh, hd).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1)
        if cfg.get("scale_attn_weights", True):
            scores = scores / math.sqrt(hd)
        if cfg.get("scale_attn_by_inverse_layer_idx", False):
            scores = scores / (i + 1)
        probs = np.exp(log_softmax(scores + mask))
        attn = (probs @ v).transpose(1, 0, 2).reshape(T, H)
        proj = w[p + "attn.c_proj.weight"]
        if transpose_attn_proj_bug:
            proj = proj.T
        x = x + attn @ proj + w[p + "attn.c_proj.bias"]
        h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        hidden = act(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + hidden @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps)
    head = w.get("lm_head.weight", w["wte.weight"])
    return log_softmax(x @ head.T)


def write_fixture(name, cfg, dtype, seed, prefix=True, buffers=False):
    d = fresh_fixture_dir(ROOT, name)
    rng = np.random.default_rng(seed)
    entries, real = store_all(
        make_weights(rng, cfg), dtype,
        lambda k: "transformer." + k if prefix and k != "lm_head.weight" else k)
    if buffers:
        # The non-parameter buffers older GPT-2 checkpoints carry (a causal 0/1 matrix and
        # the -1e4 fill value); a loader must not need them and must ignore them.
        P = cfg["n_positions"]
        tril = np.tril(np.ones((P, P), dtype=np.float32)).reshape(1, 1, P, P)
        masked = np.array(-1e4, dtype=np.float32)
        for i in range(cfg["n_layer"]):
            p = ("transformer." if prefix else "") + f"h.{i}.attn."
            entries.append((p + "bias", "F32", tril.shape, tril.tobytes()))
            entries.append((p + "masked_bias", "F32", (), masked.tobytes()))
    write_safetensors(os.path.join(d, "model.safetensors"), entries)
    full_cfg = dict(cfg)
    full_cfg["model_type"] = "gpt2"
    full_cfg["architectures"] = ["GPT2LMHeadModel"]
    full_cfg["torch_dtype"] = TORCH_DTYPE[dtype]
    write_config(d, full_cfg)
    trng = np.random.default_rng(seed + 1000)
    tokens = [int(t) for t in trng.integers(0, cfg["vocab_size"], size=16)]
    lp = forward(real, cfg, tokens)
    write_expected(d, tokens, lp)
    # How far the two mistakes move the log-probs (must be far above 1e-4).
    other = "gelu" if cfg.get("activation_function", "gelu_new") != "gelu" else "gelu_new"
    other_act = np.abs(forward(real, cfg, tokens, activation=other) - lp).max()
    untransposed = np.abs(forward(real, cfg, tokens, transpose_attn_proj_bug=True) - lp).max()
    print(f"{name}: max |dlogp| with {other} instead: {other_act:.2e}; "
          f"with attn.c_proj not transposed: {untransposed:.2e}")
    assert other_act > 1e-3 and untransposed > 1e-3, name


def base_cfg(**over):
    cfg = {
        "n_embd": 32,
        "n_head": 4,
        "n_layer": 2,
        "n_positions": 64,
        "n_ctx": 64,
        "n_inner": None,
        "vocab_size": 160,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "attn_pdrop": 0.1,
        "embd_pdrop": 0.1,
        "resid_pdrop": 0.1,
        "initializer_range": 0.02,
    }
    cfg.update(over)
    return cfg


def main():
    # `transformer.`-prefixed names plus the attn.bias / attn.masked_bias buffers.
    write_fixture("base", base_cfg(), "F32", seed=1, buffers=True)
    # Names without the prefix (as the original `gpt2` repository stores them), an explicit
    # n_inner other than 4·n_embd, and another layer_norm_epsilon.
    write_fixture("noprefix", base_cfg(vocab_size=120, n_inner=48, layer_norm_epsilon=1e-3),
                  "F32", seed=2, prefix=False)
    # 1/(layer+1) on top of 1/sqrt(head_dim); three layers so the factor differs twice.
    write_fixture("inverse_layer_idx",
                  base_cfg(n_layer=3, scale_attn_by_inverse_layer_idx=True,
                           reorder_and_upcast_attn=True),
                  "F32", seed=3)
    write_fixture("bf16", base_cfg(vocab_size=200, n_head=8), "BF16", seed=4)
    # Untied lm_head.weight, exact erf GELU, no 1/sqrt(head_dim) scaling.
    write_fixture("untied", base_cfg(tie_word_embeddings=False, activation_function="gelu",
                                     scale_attn_weights=False, vocab_size=100),
                  "F32", seed=5)


if __name__ == "__main__":
    main()
