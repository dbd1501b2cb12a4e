#!/usr/bin/python3
"""Trains the tiny SentencePiece fixture and records reference encodings.

Run from the repository root with Debian's Python:

    /usr/bin/python3 tests/reference/make_tokenizer.py

Writes tests/fixtures/tokenizer/tokenizer.model (BPE, vocab 420, byte fallback, identity
normalizer keeping whitespace and newlines as Llama's does, unk=0 bos=1 eos=2) and expected.json: for each text,
the ids python sentencepiece gives (no BOS) and the decoded text.
"""
import io
import json
import os

import sentencepiece as spm

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "tokenizer")

CORPUS = """以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。
### 指示:
質問に対する答えを出力してください。
### 入力:
日本の首都はどこですか？
### 応答:
東京
富士山は日本で一番高い山です。
今日は天気が良いので、公園を散歩しました。
The quick brown fox jumps over the lazy dog.
A language model assigns probabilities to sequences of words.
The capital of Japan is Tokyo, and the capital of France is Paris.
Checkpoints are evaluated while training continues.
Answer the question with a single word.
1 + 2 = 3, 10 - 4 = 6, 7 * 8 = 56.
"""


def main():
    os.makedirs(OUT, exist_ok=True)
    lines = [l for l in CORPUS.splitlines() if l.strip()] * 20
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
        vocab_size=420, byte_fallback=True, character_coverage=0.98,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False)
    with open(os.path.join(OUT, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    texts = [
        "The capital of Japan is Tokyo.",
        "日本の首都は東京です。",
        "### 指示:\n質問に答えてください。\n\n### 応答:\n",  # newlines -> <0x0A>
        "未知の漢字：鬱蒼",  # rare characters -> byte fallback
        "ＡＢＣ　１２３",  # full-width, kept as is (identity normalizer)
        " leading space and trailing ",
        "",
    ]
    cases = [{"text": t, "ids": sp.encode(t), "decoded": sp.decode(sp.encode(t))} for t in texts]
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"vocab_size": sp.get_piece_size(), "bos_id": sp.bos_id(),
                   "eos_id": sp.eos_id(), "cases": cases}, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
