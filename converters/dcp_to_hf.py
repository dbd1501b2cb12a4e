#!/usr/bin/env python3
"""Converts a PyTorch DCP checkpoint folder into a Hugging Face layout folder.

Usage:
  dcp_to_hf.py [--config PATH] [--dtype float32|bfloat16|float16] [--strip_prefix P] SRC DST

SRC is a folder written by torch.distributed.checkpoint (a `.metadata` file and its
`*.distcp` files). DST receives:
  model.safetensors  every tensor of SRC (non-tensor entries such as a step counter are
                     left out), named as in SRC minus --strip_prefix where given, cast to
                     --dtype where given (floating-point tensors only);
  config.json        copied from --config (the file, or the folder holding it), else from
                     SRC/config.json, else SRC/../config.json;
  tokenizer files    tokenizer.model, tokenizer.json, tokenizer_config.json and
                     special_tokens_map.json, copied from the folder config.json came from,
                     when present there.

It is meant to be declared as a worker converter, e.g.
  steadyeval-worker --converter dcp='/usr/bin/python3 converters/dcp_to_hf.py
      --config /mnt/ckpt/run42 {src} {dst}'
and works with torch >= 2.0 (torch.distributed.checkpoint) and with Debian 12's torch 1.13
(torch.distributed._shard.checkpoint). It needs torch only; safetensors are written here.

Exit status 0 on success; otherwise 1 (2 for bad arguments) with a one-line reason on
stderr, and DST may hold partial output (the worker discards it).
"""

import argparse
import dataclasses
import json
import os
import shutil
import struct
import sys

PROG = "dcp_to_hf"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")
DTYPE_CHOICES = ("float32", "bfloat16", "float16")


class ConversionError(Exception):
    """A failure whose message is the one line the user sees."""


def import_dcp():
    """The DCP module of the installed torch: (module, torch)."""
    try:
        import torch
    except ImportError as e:
        raise ConversionError(f"cannot import torch ({e}); install python3-torch") from e
    try:
        import torch.distributed.checkpoint as dcp  # torch >= 2.0
        return dcp, torch
    except ImportError:
        pass
    # torch 1.13 keeps it under _shard, and on Python >= 3.11 its import fails: the dataclass
    # ShardedTensorMetadata has a TensorProperties() default, which 3.11 rejects as mutable
    # because a dataclass with eq=True is unhashable. Giving TensorProperties (and only it)
    # object.__hash__ while the module is imported makes the default acceptable.
    real_dataclass = dataclasses.dataclass

    def hashable_tensor_properties(cls=None, /, **kwargs):
        def wrap(c):
            out = real_dataclass(**kwargs)(c)
            if out.__name__ == "TensorProperties" and out.__hash__ is None:
                out.__hash__ = object.__hash__
            return out
        return wrap if cls is None else wrap(cls)

    dataclasses.dataclass = hashable_tensor_properties
    try:
        import torch.distributed._shard.checkpoint as dcp
    except ImportError as e:
        raise ConversionError(
            f"torch {torch.__version__} has no distributed checkpoint module ({e})") from e
    finally:
        dataclasses.dataclass = real_dataclass
    return dcp, torch


def read_state_dict(dcp, torch, src):
    """Every tensor of the DCP checkpoint at `src`, by its key."""
    if not os.path.isdir(src):
        raise ConversionError(f"{src} is not a folder")
    if not os.path.isfile(os.path.join(src, ".metadata")):
        raise ConversionError(
            f"{src} is not a PyTorch DCP checkpoint: it has no .metadata file "
            "(torch.distributed.checkpoint writes it last)")
    reader = dcp.FileSystemReader(src)
    try:
        metadata = reader.read_metadata()
    except Exception as e:  # a pickle of torch classes: any error means unreadable
        raise ConversionError(f"{src}/.metadata cannot be read: {e}") from e
    state_dict = {}
    for key, entry in metadata.state_dict_metadata.items():
        if not hasattr(entry, "size") or not hasattr(entry, "properties"):
            continue  # BytesStorageMetadata: a pickled object, not a tensor
        state_dict[key] = torch.empty(tuple(entry.size), dtype=entry.properties.dtype)
    if not state_dict:
        raise ConversionError(f"{src}: the checkpoint holds no tensors")
    try:
        if hasattr(dcp, "load"):  # torch >= 2.2: no process group means one process
            dcp.load(state_dict, storage_reader=reader)
        else:
            dcp.load_state_dict(state_dict, storage_reader=reader, no_dist=True)
    except Exception as e:
        raise ConversionError(f"{src}: reading the tensors failed: {first_line(e)}") from e
    return state_dict


def first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0] if text.splitlines() else text


def rename(state_dict, strip_prefix):
    """`state_dict` with `strip_prefix` removed from the keys that start with it."""
    if not strip_prefix:
        return state_dict
    out = {}
    for key, tensor in state_dict.items():
        name = key[len(strip_prefix):] if key.startswith(strip_prefix) else key
        if not name:
            raise ConversionError(f"--strip_prefix {strip_prefix} leaves key '{key}' empty")
        if name in out:
            raise ConversionError(
                f"--strip_prefix {strip_prefix}: two keys become '{name}'")
        out[name] = tensor
    return out


def safetensors_dtypes(torch):
    return {
        torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
        torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
        torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
    }


def write_safetensors(torch, tensors, path):
    """Writes `tensors` (name -> tensor) to `path` in the safetensors format: an 8-byte
    little-endian header length, a JSON header (dtype, shape, data_offsets relative to the
    end of the header), padded with spaces to a multiple of 8, then the raw bytes."""
    if sys.byteorder != "little":
        raise ConversionError("safetensors are little-endian; this machine is not")
    dtypes = safetensors_dtypes(torch)
    header = {"__metadata__": {"format": "pt"}}
    names = sorted(tensors)
    offset = 0
    for name in names:
        tensor = tensors[name]
        if tensor.dtype not in dtypes:
            raise ConversionError(f"tensor {name} has dtype {tensor.dtype}, which safetensors "
                                  "cannot hold")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": dtypes[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in names:  # one tensor's bytes at a time
            tensor = tensors[name].detach().cpu().contiguous()
            if tensor.numel():
                f.write(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    os.replace(tmp, path)


def cast(torch, tensors, dtype_name):
    if not dtype_name:
        return tensors
    dtype = getattr(torch, dtype_name)
    return {k: (t.to(dtype) if t.is_floating_point() else t) for k, t in tensors.items()}


def find_config(config_arg, src):
    """The config.json to copy: --config (a file, or a folder holding config.json), else
    SRC/config.json, else SRC/../config.json."""
    if config_arg:
        path = os.path.join(config_arg, "config.json") if os.path.isdir(config_arg) else config_arg
        if not os.path.isfile(path):
            raise ConversionError(f"--config {config_arg}: no such file {path}")
        return path
    for candidate in (os.path.join(src, "config.json"),
                      os.path.join(os.path.dirname(os.path.abspath(src)), "config.json")):
        if os.path.isfile(candidate):
            return candidate
    raise ConversionError(
        f"no config.json in {src} or its parent folder; a DCP checkpoint holds none, so "
        "pass --config PATH (the model's config.json or the folder holding it)")


def copy_model_files(config_path, dst):
    try:
        with open(config_path, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise ConversionError(f"{config_path} is not a readable JSON file: {e}") from e
    if not isinstance(doc, dict):
        raise ConversionError(f"{config_path} is not a JSON object")
    folder = os.path.dirname(os.path.abspath(config_path))
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            shutil.copyfile(os.path.join(folder, name), os.path.join(dst, name))
    shutil.copyfile(config_path, os.path.join(dst, "config.json"))


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write(f"{PROG}: {message} (see --help)\n")
        sys.exit(2)


def parse_args(argv):
    parser = OneLineParser(prog="dcp_to_hf.py",
                           description="Converts a PyTorch DCP checkpoint into the Hugging Face "
                                       "layout (model.safetensors, config.json, tokenizer files).")
    parser.add_argument("--config", help="config.json to copy, or the folder holding it "
                                         "(default: SRC/config.json, then SRC/../config.json); "
                                         "tokenizer files beside it are copied too")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES,
                        help="cast floating-point tensors to this dtype (default: keep)")
    parser.add_argument("--strip_prefix", default="",
                        help="remove this prefix from the keys that start with it, e.g. model.")
    parser.add_argument("src", metavar="SRC", help="the DCP checkpoint folder")
    parser.add_argument("dst", metavar="DST", help="the folder to write (created if absent)")
    return parser.parse_args(argv)


def convert(args):
    config_path = find_config(args.config, args.src)
    dcp, torch = import_dcp()
    tensors = cast(torch, rename(read_state_dict(dcp, torch, args.src), args.strip_prefix),
                   args.dtype)
    try:
        os.makedirs(args.dst, exist_ok=True)
        write_safetensors(torch, tensors, os.path.join(args.dst, "model.safetensors"))
        copy_model_files(config_path, args.dst)
    except OSError as e:
        raise ConversionError(f"writing {args.dst}: {e}") from e


def main(argv):
    args = parse_args(argv)
    try:
        convert(args)
    except ConversionError as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 1
    except Exception as e:  # anything unforeseen still ends in one line
        sys.stderr.write(f"{PROG}: {type(e).__name__}: {first_line(e)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
