#!/usr/bin/python3
"""Writes tests/fixtures/formats/: the tiny Llama of tests/fixtures/llama/gqa in every weight
format the worker's CheckpointReader reads, plus small .bin files for its error tests.

Run from anywhere with Debian's Python (python3-torch 1.13 and numpy; no safetensors or
transformers package):

    /usr/bin/python3 tests/reference/make_format_fixtures.py

Input: tests/fixtures/llama/gqa/{config.json,model.safetensors} (written by
llama_reference.py). The safetensors file is parsed by hand below. Output folders, each with
gqa's config.json:

  safetensors_sharded/  the same float32 bytes split over 3 shards + model.safetensors.index.json
  bin/                  pytorch_model.bin: torch.save of a collections.OrderedDict carrying a
                        `_metadata` attribute, as torch.save(model.state_dict()) writes it
  bin_sharded/          2 shards pytorch_model-0000N-of-00002.bin, each torch.save of a plain
                        dict (as transformers' save_pretrained writes them), +
                        pytorch_model.bin.index.json
  bin_views/            pytorch_model.bin whose tensors are all views of ONE float32 storage
                        (like a flattened parameter buffer); lm_head.weight is a transposed
                        (non-contiguous) view
  bf16/                 model.safetensors with every tensor rounded to bfloat16 (round to
                        nearest, ties to even, done here in numpy on the float32 bits);
                        config.json's torch_dtype is "bfloat16"
  bin_edge/             not checkpoints, single .bin files for error/dtype tests:
                          dtypes.bin       {f64, i64, bool, f16, bf16 tensors}
                          complex.bin      {"model.norm.weight": complex64 tensor}
                          training.bin     {"model": {...}, "step": 3} (not a state dict)
                          legacy.bin       torch.save(..., _use_new_zipfile_serialization=False)

The float32 folders hold exactly gqa's values, so a model loaded from any of them must give
gqa's log-probs; bf16 holds rounded values and must differ slightly.
"""
import collections
import json
import os
import shutil
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
SOURCE = os.path.join(FIXTURES, "llama", "gqa")
OUT = os.path.join(FIXTURES, "formats")


def read_safetensors(path):
    """[(name, np.ndarray float32)] in the file's data order."""
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_len])
    header.pop("__metadata__", None)
    data = blob[8 + header_len:]
    tensors = []
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        assert entry["dtype"] == "F32", (name, entry["dtype"])
        begin, end = entry["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype="<f4").reshape(entry["shape"])
        tensors.append((name, array.copy()))
    return tensors


def write_safetensors(path, entries):
    """entries: [(name, dtype string, shape, raw little-endian bytes)]."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for entry in entries:
            f.write(entry[3])


def bf16_bits(array):
    """float32 -> bfloat16 bit patterns, round to nearest with ties to even (no NaNs here)."""
    bits = array.astype("<f4").view(np.uint32).astype(np.uint64)
    lsb = (bits >> 16) & 1
    return ((bits + 0x7FFF + lsb) >> 16).astype("<u2")


def fresh_folder(name, config):
    path = os.path.join(OUT, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return path


def split(items, parts):
    """Consecutive runs of `items`, `parts` of them, sizes as even as possible."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for p in range(parts):
        end = start + size + (1 if p < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def write_index(path, file_of, total_size):
    with open(path, "w") as f:
        json.dump({"metadata": {"total_size": total_size}, "weight_map": file_of}, f, indent=2)
        f.write("\n")


def main():
    with open(os.path.join(SOURCE, "config.json")) as f:
        config = json.load(f)
    tensors = read_safetensors(os.path.join(SOURCE, "model.safetensors"))
    total = sum(a.nbytes for _, a in tensors)
    os.makedirs(OUT, exist_ok=True)

    # safetensors, 3 shards.
    d = fresh_folder("safetensors_sharded", config)
    file_of = {}
    groups = split(tensors, 3)
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(os.path.join(d, fname),
                          [(n, "F32", a.shape, a.astype("<f4").tobytes()) for n, a in group])
        file_of.update({n: fname for n, _ in group})
    write_index(os.path.join(d, "model.safetensors.index.json"), file_of, total)

    # One pytorch_model.bin holding an OrderedDict with _metadata (what state_dict() returns).
    d = fresh_folder("bin", config)
    state = collections.OrderedDict((n, torch.from_numpy(a.copy())) for n, a in tensors)
    state._metadata = collections.OrderedDict([("", {"version": 1})])
    torch.save(state, os.path.join(d, "pytorch_model.bin"))

    # Two .bin shards of plain dicts + index.
    d = fresh_folder("bin_sharded", config)
    file_of = {}
    groups = split(tensors, 2)
    for i, group in enumerate(groups):
        fname = f"pytorch_model-{i + 1:05d}-of-{len(groups):05d}.bin"
        torch.save({n: torch.from_numpy(a.copy()) for n, a in group}, os.path.join(d, fname))
        file_of.update({n: fname for n, _ in group})
    write_index(os.path.join(d, "pytorch_model.bin.index.json"), file_of, total)

    # Every tensor a view into one flat storage; lm_head.weight transposed.
    d = fresh_folder("bin_views", config)
    flat = torch.zeros(sum(a.size for _, a in tensors), dtype=torch.float32)
    views, offset = {}, 0
    for name, a in tensors:
        if name == "lm_head.weight":
            # Stored as its transpose [hidden, vocab]; the entry is a [vocab, hidden] view
            # with strides (1, vocab).
            segment = flat[offset:offset + a.size].view(a.shape[1], a.shape[0])
            segment.copy_(torch.from_numpy(a.T.copy()))
            views[name] = segment.t()
        else:
            segment = flat[offset:offset + a.size].view(*a.shape)
            segment.copy_(torch.from_numpy(a))
            views[name] = segment
        offset += a.size
    assert not views["lm_head.weight"].is_contiguous()
    torch.save(views, os.path.join(d, "pytorch_model.bin"))

    # bfloat16 safetensors.
    bf16_config = dict(config, torch_dtype="bfloat16")
    d = fresh_folder("bf16", bf16_config)
    write_safetensors(os.path.join(d, "model.safetensors"),
                      [(n, "BF16", a.shape, bf16_bits(a).tobytes()) for n, a in tensors])

    # Edge cases for the reader's own tests.
    edge = os.path.join(OUT, "bin_edge")
    shutil.rmtree(edge, ignore_errors=True)
    os.makedirs(edge)
    torch.save({
        "f64": torch.tensor([1.5, -2.0], dtype=torch.float64),
        "i64": torch.tensor([[1, 2, 3]], dtype=torch.int64),
        "bool": torch.tensor([True, False, True]),
        "f16": torch.tensor([0.5, 3.0], dtype=torch.float16),
        "bf16": torch.tensor([0.25, -8.0], dtype=torch.bfloat16),
    }, os.path.join(edge, "dtypes.bin"))
    torch.save({"model.norm.weight": torch.ones(4, dtype=torch.complex64)},
               os.path.join(edge, "complex.bin"))
    torch.save({"model": {"w": torch.ones(2)}, "step": 3}, os.path.join(edge, "training.bin"))
    torch.save({"w": torch.ones(2)}, os.path.join(edge, "legacy.bin"),
               _use_new_zipfile_serialization=False)


if __name__ == "__main__":
    main()
