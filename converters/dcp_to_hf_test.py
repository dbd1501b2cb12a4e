#!/usr/bin/env python3
"""CTest dcp_converter_test: converters/dcp_to_hf.py against real PyTorch DCP checkpoints.

  dcp_to_hf_test.py --fixtures PATH/steadyeval-fixtures --worker PATH/steadyeval-worker

Makes tiny HF checkpoints with steadyeval-fixtures, writes their weights as DCP checkpoints
with python3-torch (testdata/hf_to_dcp.py), converts them back with dcp_to_hf.py and checks
that every tensor comes back bit-identical (name, dtype, shape, bytes; read here by a parser
of its own), that config.json and the tokenizer files are carried, that the worker reads
the result exactly as it reads the original (its logprobs JSON is identical), and that
failures exit nonzero with one clear line on stderr.
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"
CONVERTER = os.path.join(HERE, "dcp_to_hf.py")
HF_TO_DCP = os.path.join(HERE, "testdata", "hf_to_dcp.py")
TOOLS = {}

sys.path.insert(0, os.path.join(HERE, "testdata"))
from hf_to_dcp import hf_shards  # noqa: E402  (torch-free; after the path)


def run(cmd, expect_ok=True):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=300)
    if expect_ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr}")
    return proc


def tensors_of(folder):
    """name -> (dtype, shape, bytes) of every tensor of an HF folder, read with no torch."""
    out = {}
    for shard in hf_shards(folder):
        with open(os.path.join(folder, shard), "rb") as f:
            blob = f.read()
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8:8 + n])
        data = blob[8 + n:]
        ends = [e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"]
        assert max(ends) == len(data), f"{shard}: tensors end at {max(ends)}, data is {len(data)}"
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            assert name not in out, f"{name} twice"
            out[name] = (entry["dtype"], tuple(entry["shape"]), data[begin:end])
    return out


def read(path):
    with open(path, "rb") as f:
        return f.read()


class DcpToHfTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="dcp_converter_test.")
        run([TOOLS["fixtures"], "tokenizer", "--out", os.path.join(cls.tmp, "tok"),
             "--vocab_size", "600"])
        cls.tokenizer = os.path.join(cls.tmp, "tok", "tokenizer.model")
        cls.hf_f32 = os.path.join(cls.tmp, "hf_f32")
        run([TOOLS["fixtures"], "checkpoint", "--out", cls.hf_f32, "--step", "100",
             "--tokenizer", cls.tokenizer])
        # hf_f32's weights as DCP (with a non-tensor train_state entry, as trainers write),
        # converted once: the tests that start from it take copies (dcp_f32()).
        cls.dcp_f32_source = os.path.join(cls.tmp, "dcp_f32")
        run([PYTHON, HF_TO_DCP, "--train_state", cls.hf_f32, cls.dcp_f32_source])
        cls.hf_bf16 = os.path.join(cls.tmp, "hf_bf16")
        run([TOOLS["fixtures"], "checkpoint", "--out", cls.hf_bf16, "--step", "200", "--seed", "3",
             "--dtype", "bf16", "--shards", "2", "--vocab", "300"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.tmp, self.id().rsplit(".", 1)[-1], *parts)

    def to_dcp(self, hf, dcp, *flags):
        run([PYTHON, HF_TO_DCP, *flags, hf, dcp])
        self.assertTrue(os.path.isfile(os.path.join(dcp, ".metadata")))
        self.assertFalse(os.path.exists(os.path.join(dcp, "model.safetensors")))

    def dcp_f32(self, dcp):
        """A copy of hf_f32 as DCP (with train_state) at `dcp`."""
        shutil.copytree(self.dcp_f32_source, dcp)
        self.assertTrue(os.path.isfile(os.path.join(dcp, ".metadata")))
        self.assertFalse(os.path.exists(os.path.join(dcp, "model.safetensors")))

    def convert(self, *args, expect_ok=True):
        return run([PYTHON, CONVERTER, *args], expect_ok=expect_ok)

    def assertSameTensors(self, want_folder, got_folder):
        want, got = tensors_of(want_folder), tensors_of(got_folder)
        self.assertEqual(sorted(want), sorted(got))
        for name in want:
            self.assertEqual(want[name][0], got[name][0], f"{name}: dtype")
            self.assertEqual(want[name][1], got[name][1], f"{name}: shape")
            self.assertTrue(want[name][2] == got[name][2], f"{name}: bytes differ")

    def assertOneLineError(self, proc, *needles):
        self.assertNotEqual(proc.returncode, 0)
        lines = proc.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, proc.stderr)
        self.assertTrue(lines[0].startswith("dcp_to_hf: "), lines[0])
        for needle in needles:
            self.assertIn(needle, lines[0])

    def test_f32_round_trip_with_config_and_tokenizer_from_config_folder(self):
        dcp, out = self.path("dcp"), self.path("out")
        self.dcp_f32(dcp)
        self.convert("--config", self.hf_f32, dcp, out)
        self.assertSameTensors(self.hf_f32, out)  # train_state (not a tensor) left out
        self.assertEqual(read(os.path.join(out, "config.json")),
                         read(os.path.join(self.hf_f32, "config.json")))
        self.assertEqual(read(os.path.join(out, "tokenizer.model")), read(self.tokenizer))
        # The worker reads the converted folder exactly as it reads the original.
        logprobs = [TOOLS["worker"], "logprobs", "--tokens", "5,17,42,7,99", "--json"]
        want = run(logprobs + ["--checkpoint", self.hf_f32]).stdout
        got = run(logprobs + ["--checkpoint", out]).stdout
        self.assertTrue(want.strip())
        self.assertEqual(want, got)

    def test_sharded_bf16_with_config_inside_the_checkpoint(self):
        dcp, out = self.path("dcp"), self.path("out")
        self.to_dcp(self.hf_bf16, dcp, "--config")
        self.convert(dcp, out)
        self.assertSameTensors(self.hf_bf16, out)
        self.assertEqual(read(os.path.join(out, "config.json")),
                         read(os.path.join(self.hf_bf16, "config.json")))

    def test_config_beside_the_checkpoint_folders_and_a_config_file_path(self):
        run_dir = self.path("run")
        dcp = os.path.join(run_dir, "step-100")
        self.dcp_f32(dcp)
        shutil.copyfile(os.path.join(self.hf_f32, "config.json"), os.path.join(run_dir, "config.json"))
        self.convert(dcp, self.path("out1"))
        self.assertSameTensors(self.hf_f32, self.path("out1"))
        self.convert("--config", os.path.join(self.hf_f32, "config.json"), dcp, self.path("out2"))
        self.assertSameTensors(self.hf_f32, self.path("out2"))
        self.assertTrue(os.path.isfile(os.path.join(self.path("out2"), "tokenizer.model")))

    def test_strip_prefix_and_dtype(self):
        dcp = self.path("dcp")
        self.to_dcp(self.hf_f32, dcp, "--prefix", "model.", "--config")
        self.convert("--strip_prefix", "model.", dcp, self.path("stripped"))
        self.assertSameTensors(self.hf_f32, self.path("stripped"))
        self.convert(dcp, self.path("kept"))
        self.assertTrue(all(k.startswith("model.") for k in tensors_of(self.path("kept"))))

        self.convert("--dtype", "bfloat16", "--strip_prefix", "model.", dcp, self.path("bf16"))
        f32, bf16 = tensors_of(self.hf_f32), tensors_of(self.path("bf16"))
        self.assertEqual(sorted(f32), sorted(bf16))
        for name, (dtype, shape, data) in bf16.items():
            self.assertEqual((dtype, shape), ("BF16", f32[name][1]), name)
            self.assertEqual(len(data) * 2, len(f32[name][2]), name)

    def test_a_folder_that_is_not_dcp_fails_with_one_clear_line(self):
        proc = self.convert(self.hf_f32, self.path("out"), expect_ok=False)
        self.assertOneLineError(proc, "is not a PyTorch DCP checkpoint", ".metadata")
        proc = self.convert("--config", self.hf_f32, self.path("absent"), self.path("out"),
                            expect_ok=False)
        self.assertOneLineError(proc, "absent is not a folder")

    def test_a_missing_config_fails_with_one_clear_line(self):
        dcp = self.path("run", "step-1")
        self.dcp_f32(dcp)
        proc = self.convert(dcp, self.path("out"), expect_ok=False)
        self.assertOneLineError(proc, "no config.json in", "--config")
        self.assertFalse(os.path.exists(self.path("out", "model.safetensors")))
        proc = self.convert("--config", self.path("nowhere"), dcp, self.path("out"),
                            expect_ok=False)
        self.assertOneLineError(proc, "--config", "nowhere")

    def test_bad_arguments_fail_with_one_line(self):
        proc = self.convert("--dtype", "int4", "a", "b", expect_ok=False)
        self.assertOneLineError(proc, "--dtype")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fixtures", required=True, help="the steadyeval-fixtures binary")
    parser.add_argument("--worker", required=True, help="the steadyeval-worker binary")
    args, rest = parser.parse_known_args()
    TOOLS["fixtures"], TOOLS["worker"] = args.fixtures, args.worker
    unittest.main(argv=[sys.argv[0], "-v", *rest])


if __name__ == "__main__":
    main()
