#!/usr/bin/env python3
"""Test helper: writes the weights of a Hugging Face checkpoint folder as a real PyTorch DCP
checkpoint (torch.distributed.checkpoint, single process), the way a trainer would.

Usage:
  hf_to_dcp.py [--prefix P] [--train_state] [--config] HF_DIR DCP_DIR

Reads HF_DIR's model.safetensors (or every shard of model.safetensors.index.json) and saves
each tensor under P + its name into DCP_DIR (.metadata + *.distcp). --train_state adds a
non-tensor entry ("train_state": a dict), as trainers do; --config also copies config.json
into DCP_DIR. Exit 1 with a one-line reason on stderr on failure.
"""

import argparse
import json
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import dcp_to_hf  # noqa: E402  (the converter's DCP import, with its torch 1.13 workaround)


def read_safetensors(torch, path):
    """name -> tensor for one safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    dtypes = {v: k for k, v in dcp_to_hf.safetensors_dtypes(torch).items()}
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = bytearray(data[begin:end])
        flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        tensors[name] = flat.view(dtypes[entry["dtype"]]).reshape(entry["shape"]).clone()
    return tensors


def hf_shards(folder):
    """The safetensors files of an HF folder: those model.safetensors.index.json names, else
    model.safetensors. Needs no torch (dcp_to_hf_test.py reads them with its own parser)."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    return ["model.safetensors"]


def read_hf(torch, folder):
    tensors = {}
    for shard in hf_shards(folder):
        tensors.update(read_safetensors(torch, os.path.join(folder, shard)))
    return tensors


def main(argv):
    parser = argparse.ArgumentParser(prog="hf_to_dcp.py")
    parser.add_argument("--prefix", default="")
    parser.add_argument("--train_state", action="store_true")
    parser.add_argument("--config", action="store_true")
    parser.add_argument("hf_dir")
    parser.add_argument("dcp_dir")
    args = parser.parse_args(argv)
    try:
        dcp, torch = dcp_to_hf.import_dcp()
        state_dict = {args.prefix + k: v for k, v in read_hf(torch, args.hf_dir).items()}
        if args.train_state:
            state_dict["train_state"] = {"step": 100, "tokens_seen": 123456}
        os.makedirs(args.dcp_dir, exist_ok=True)
        writer = dcp.FileSystemWriter(args.dcp_dir)
        if hasattr(dcp, "save"):  # torch >= 2.2
            dcp.save(state_dict, storage_writer=writer)
        else:
            dcp.save_state_dict(state_dict, storage_writer=writer, no_dist=True)
        if args.config:
            shutil.copyfile(os.path.join(args.hf_dir, "config.json"),
                            os.path.join(args.dcp_dir, "config.json"))
    except Exception as e:
        sys.stderr.write(f"hf_to_dcp: {type(e).__name__}: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
