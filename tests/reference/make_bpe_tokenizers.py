#!/usr/bin/python3
"""Trains the two tiny byte-level BPE fixtures that worker/tokenizer/bpe_tokenizer_test.cc loads.

Run from the repository root with Debian's Python (needs the `regex` module):

    /usr/bin/python3 tests/reference/make_bpe_tokenizers.py

then record the reference encodings with transformers.js (see tests/reference/bpe_reference.mjs):

    node tests/reference/bpe_reference.mjs

Writes, under tests/fixtures/bpe/:
  gpt2_style/   tokenizer.json + tokenizer_config.json: ByteLevel pre-tokenizer with the GPT-2
                regex, add_prefix_space false, merges stored as "a b" strings, <|endoftext|>
                both in the vocabulary and as a special added token.
  llama3_style/ tokenizer.json + tokenizer_config.json: Sequence[Split(Llama-3 regex, Isolated),
                ByteLevel(use_regex false)], ignore_merges true, merges stored as [a, b] pairs,
                Llama-3's special tokens as added tokens outside the vocabulary, and a
                TemplateProcessing post-processor that puts <|begin_of_text|> first.
  neox_style/   tokenizer.json + tokenizer_config.json: GPT-NeoX's shape: NFC normalizer,
                ByteLevel with add_prefix_space true, runs of spaces as non-special normalized
                added tokens, a special <mask> with lstrip, and a TemplateProcessing that puts
                <|endoftext|> after a sequence.
  texts.json    the strings both fixtures are checked on: TEXTS plus 40 seeded random
                concatenations of RANDOM_PIECES (expected.json is written by the node script
                from these).

The trainer is the textbook one: count pre-tokenized words (byte-mapped), repeatedly merge the
most frequent adjacent pair (ties broken by the pair's text, so the output is deterministic).
Both vocabularies start with the 256 byte symbols in byte order. A few whole-word vocabulary
entries with no merge path are added so that ignore_merges changes the result.
"""
import collections
import json
import os
import random

import regex

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "bpe")

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

EXTRA_TEXT = """日本の首都は東京です。東京は日本で一番大きい都市です。
富士山は日本で一番高い山です。今日は天気が良いので、公園を散歩しました。
チェックポイントの評価は学習と並行して行われます。
I'm happy 😀😀 and the family 👨‍👩‍👧‍👦 says hi 👋🏽!
Don't worry, we'll see what they've done. It's fine, I'd say.
"""

# Whole words put in the vocabulary without merges: BPE alone never produces them, so with
# ignore_merges (Llama-3 fixture) " steadyeval" is one token while GPT-2 splits it.
WHOLE_WORDS = ["Ġsteadyeval", "Ġcheckpointing"]

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eot_id|>"]

# GPT-NeoX adds runs of spaces as (non-special, normalized) added tokens; a few of them.
NEOX_SPACE_RUNS = ["  ", "    ", "        "]

# Strings the C++ test checks against transformers.js; kept here so both sides agree.
TEXTS = [
    "",
    "Hello world",
    "Tokyo is the capital of Japan.",
    " leading space",
    "trailing spaces   ",
    "two  spaces and   three",
    "tabs\tand\t\ttabs",
    "line one\nline two\n\nline four\n",
    "\n\n\n",
    "   ",
    "mixed \t \n whitespace \r\n end",
    "12345678901234567890",
    "3.14159 and 2,718 and 100 degrees",
    "10-4=6 and 13*13=169",
    "I'm sure you're right, they've said it's what we'll do, I'd think.",
    "DON'T SHOUT, IT'S LOUD",
    "日本の首都は東京です。",
    "富士山は日本で一番高い山です。Mount Fuji is high.",
    "emoji 😀 and more 😀😀",
    "family 👨‍👩‍👧‍👦 and wave 👋🏽",
    "flags 🇯🇵🇫🇷",
    "café naïve résumé",
    "<|endoftext|>",
    "first<|endoftext|>second",
    "a <|endoftext|> b",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "text <|eot_id|><|end_of_text|>",
    " steadyeval checkpointing steadyeval",
    "punctuation!!! ... ??? (parens) [brackets] {braces}",
    "C++ code: int main() { return 0; }",
    "URL https://example.com/path?q=1&r=2",
    "Ω≈ç√∫˜µ≤≥÷ symbols",
    "cafe\u0301 vs caf\u00e9, Å vs A\u030a",
    "indented:\n    four\n        eight\n   three",
    "fill <mask> here and<mask>there",
    "<|padding|><|padding|> pad",
]


# Random concatenations of these pieces are checked too (seeded, so texts.json is stable):
# they probe where the regex engines (ICU here, JavaScript in transformers.js, Oniguruma in
# Hugging Face) could disagree. Characters whose whitespace class differs between engines
# (U+0085, U+FEFF) are left out on purpose.
RANDOM_PIECES = ["a", "Z", "the", "The", " ", "  ", "\t", "\n", "\r\n", "\r", "'s", "'LL", "'ve",
                 "0", "42", "9999", ".", ",", "!?", "--", "$", "日", "本", "の", "す", "。",
                 "、", "é", "e\u0301", "ß", "😀", "👨\u200d👩\u200d👧", "🏽", "\u00a0",
                 "\u3000", "<|endoftext|>", "<|eot_id|>", "<|", "|>", "ā", "Ġ", "Ċ", "Ω"]
NUM_RANDOM_TEXTS = 40


def random_texts():
    rng = random.Random(20261128)
    texts = []
    for _ in range(NUM_RANDOM_TEXTS):
        length = rng.randint(1, 16)
        texts.append("".join(rng.choice(RANDOM_PIECES) for _ in range(length)))
    return texts


def bytes_to_unicode():
    """GPT-2's table: printable bytes map to themselves, the rest to U+0100 onwards."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
                 list(range(ord("®"), ord("ÿ") + 1)))
    table = {}
    shifted = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


BYTE_CHAR = bytes_to_unicode()


def byte_map(text):
    return "".join(BYTE_CHAR[b] for b in text.encode("utf-8"))


def train(lines, pattern, num_merges):
    """Returns the merges (pairs of symbol strings), most frequent first."""
    counts = collections.Counter()
    for line in lines:
        for piece in regex.findall(pattern, line):
            counts[tuple(byte_map(piece))] += 1
    words = [(list(symbols), n) for symbols, n in counts.items()]
    merges = []
    for _ in range(num_merges):
        pairs = collections.Counter()
        for symbols, n in words:
            for a, b in zip(symbols, symbols[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = best[0] + best[1]
        for symbols, _ in words:
            i = 0
            while i < len(symbols) - 1:
                if symbols[i] == best[0] and symbols[i + 1] == best[1]:
                    symbols[i:i + 2] = [merged]
                i += 1
    return merges


def base_vocab(merges):
    vocab = {}
    for b in range(256):
        vocab[BYTE_CHAR[b]] = len(vocab)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for word in WHOLE_WORDS:
        vocab.setdefault(word, len(vocab))
    return vocab


def added_token(id_, content, special=True):
    return {"id": id_, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": not special, "special": special}


def byte_level(add_prefix_space, use_regex):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": True,
            "use_regex": use_regex}


def gpt2_style(lines):
    merges = train(lines, GPT2_PATTERN, 300)
    vocab = base_vocab(merges)
    eot = len(vocab)
    vocab["<|endoftext|>"] = eot
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token(eot, "<|endoftext|>")],
        "normalizer": None,
        "pre_tokenizer": byte_level(False, True),
        "post_processor": byte_level(True, True),
        "decoder": byte_level(True, True),
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024,
              "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>", "add_prefix_space": False,
              "clean_up_tokenization_spaces": False}
    return tokenizer, config


def neox_style(lines):
    """GPT-NeoX's shape: NFC normalizer, whitespace runs as normalized added tokens."""
    merges = train(lines, GPT2_PATTERN, 300)
    vocab = base_vocab(merges)
    eot = len(vocab)
    vocab["<|endoftext|>"] = eot
    added = [added_token(eot, "<|endoftext|>"), added_token(eot + 1, "<|padding|>")]
    for i, run in enumerate(NEOX_SPACE_RUNS):
        added.append(added_token(eot + 2 + i, run, special=False))
    mask = added_token(eot + 2 + len(NEOX_SPACE_RUNS), "<mask>")
    mask["lstrip"] = True
    added.append(mask)
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": byte_level(True, True),
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "<|endoftext|>", "type_id": 1}}],
            "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [eot],
                                                 "tokens": ["<|endoftext|>"]}}},
        "decoder": byte_level(True, True),
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }
    config = {"tokenizer_class": "GPTNeoXTokenizer", "model_max_length": 2048,
              "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>", "add_prefix_space": True,
              "clean_up_tokenization_spaces": False}
    return tokenizer, config


def llama3_style(lines):
    merges = train(lines, LLAMA3_PATTERN, 350)
    vocab = base_vocab(merges)
    first_special = len(vocab)
    added = [added_token(first_special + i, s) for i, s in enumerate(LLAMA3_SPECIALS)]
    bos = "<|begin_of_text|>"
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated",
             "invert": False},
            byte_level(False, False)]},
        "post_processor": {"type": "Sequence", "processors": [
            byte_level(True, False),
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": bos, "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {bos: {"id": bos, "ids": [first_special], "tokens": [bos]}}}]},
        "decoder": byte_level(True, True),
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 8192,
              "bos_token": bos, "eos_token": "<|end_of_text|>",
              "clean_up_tokenization_spaces": False,
              "model_input_names": ["input_ids", "attention_mask"]}
    return tokenizer, config


def write_json(path, value, compact=False):
    with open(path, "w", encoding="utf-8") as f:
        if compact:
            json.dump(value, f, ensure_ascii=False, separators=(",", ":"))
        else:
            json.dump(value, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    with open(os.path.join(ROOT, "tests", "fixtures", "corpus.txt"), encoding="utf-8") as f:
        corpus = f.read()
    lines = corpus.splitlines(keepends=True) + EXTRA_TEXT.splitlines(keepends=True) * 8
    for name, build in (("gpt2_style", gpt2_style), ("llama3_style", llama3_style),
                        ("neox_style", neox_style)):
        tokenizer, config = build(lines)
        folder = os.path.join(OUT, name)
        os.makedirs(folder, exist_ok=True)
        write_json(os.path.join(folder, "tokenizer.json"), tokenizer, compact=True)
        write_json(os.path.join(folder, "tokenizer_config.json"), config)
    write_json(os.path.join(OUT, "texts.json"), TEXTS + random_texts())


if __name__ == "__main__":
    main()
