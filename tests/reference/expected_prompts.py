#!/usr/bin/python3
"""Writes tests/fixtures/prompts/*.txt: the prompts llm-jp-eval's template gives for sample
tasks in examples/tasks, built here independently of the C++ code (common/prompt.cc) so
common/prompt_test.cc can compare byte for byte.

The template (llm-jp-eval v1.4, no chat template):
  header, "\n\n### 指示:\n", instruction,
  per shot "\n\n### 入力:\n", input, "\n\n### 応答:\n", output,
  then "\n\n### 入力:\n", input, "\n\n### 応答:\n".
English uses the Alpaca header and "### Instruction:", "### Input:", "### Response:".

Run from the repository root: /usr/bin/python3 tests/reference/expected_prompts.py
"""
import json
import os

JA = ("以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。",
      "指示", "入力", "応答")
EN = ("Below is an instruction that describes a task, paired with an input that provides "
      "further context. Write a response that appropriately completes the request.",
      "Instruction", "Input", "Response")


def prompt(task, shots, index, lang):
    header, ins, inp, res = lang
    parts = [header, f"\n\n### {ins}:\n", task["instruction"]]
    for shot in shots:
        parts += [f"\n\n### {inp}:\n", shot["input"], f"\n\n### {res}:\n", shot["output"]]
    parts += [f"\n\n### {inp}:\n", task["samples"][index]["input"], f"\n\n### {res}:\n"]
    return "".join(parts)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main():
    out = "tests/fixtures/prompts"
    os.makedirs(out, exist_ok=True)
    cases = [
        # (file name, task, shots, sample index, template)
        ("ja_qa.k4.s2.txt", "examples/tasks/ja_qa.json", ("train", 4), 2, JA),
        ("ja_nli.k0.s0.txt", "examples/tasks/ja_nli.json", ("file", 0), 0, JA),
        ("en_qa.k2.s5.en.txt", "examples/tasks/en_qa.json", ("file", 2), 5, EN),
        ("ja_entities.k4.s3.txt", "examples/tasks/ja_entities.json", ("file", 4), 3, JA),
    ]
    for name, path, (source, k), index, lang in cases:
        task = load(path)
        if source == "train":
            pool = load(os.path.join(os.path.dirname(path), "train", os.path.basename(path)))["samples"]
        else:
            pool = task.get("few_shots", [])
        with open(os.path.join(out, name), "w", encoding="utf-8", newline="") as f:
            f.write(prompt(task, pool[:k], index, lang))


if __name__ == "__main__":
    main()
