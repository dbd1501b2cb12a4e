"""Helpers the reference scripts share (llama_reference.py, gpt_neox_reference.py,
gpt2_reference.py): the hand-written safetensors writer, bf16/fp16 rounding, the float64
NumPy building blocks several architectures use, and the fixture folder / config.json /
expected.json writers. Imported by the scripts (run from anywhere: Python puts the
script's folder on sys.path); it writes nothing by itself.

expected.json: {"tokens": [...], "token_logprobs": [null, lp_1, ...],
                "last_logprobs": [log p(v | all tokens) for every v]}
"""
import json
import math
import os
import struct

import numpy as np

TORCH_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def to_bf16_bits(x):
    """float32 array -> uint16 bf16 bits, round to nearest even."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def stored(x, dtype):
    """(bytes, the float64 values the file really holds)."""
    if dtype == "F32":
        a = x.astype(np.float32)
        return a.astype("<f4").tobytes(), a.astype(np.float64)
    if dtype == "F16":
        a = x.astype(np.float16)
        return a.astype("<f2").tobytes(), a.astype(np.float64)
    if dtype == "BF16":
        b = to_bf16_bits(x.astype(np.float32))
        return b.astype("<u2").tobytes(), from_bf16_bits(b).astype(np.float64)
    raise ValueError(dtype)


def store_all(raw, dtype, rename=lambda name: name):
    """Stores every array of `raw` ({name: float64 array}) as `dtype`: (safetensors entries
    under rename(name), {name: the float64 values the file holds})."""
    entries, real = [], {}
    for k, v in raw.items():
        data, values = stored(v, dtype)
        entries.append((rename(k), dtype, v.shape, data))
        real[k] = values
    return entries, real


def write_safetensors(path, entries):
    """entries: list of (name, dtype, shape, bytes)."""
    header = {}
    offset = 0
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, data in entries:
            f.write(data)


def log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


_erf = np.vectorize(math.erf)


def gelu_exact(x):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def gelu_tanh(x):
    """gelu_new / gelu_pytorch_tanh."""
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def fresh_fixture_dir(root, name):
    """root/name, created or emptied."""
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    return d


def write_config(d, cfg):
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def write_expected(d, tokens, lp):
    """expected.json of `tokens` from the log-probs lp [T, V] of one forward over them."""
    expected = {
        "tokens": tokens,
        "token_logprobs": [None] + [float(lp[i - 1, tokens[i]]) for i in range(1, len(tokens))],
        "last_logprobs": [float(v) for v in lp[-1]],
    }
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
