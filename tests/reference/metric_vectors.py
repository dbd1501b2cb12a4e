#!/usr/bin/python3
"""Reference vectors for steadyeval's llm-jp-eval metrics (common/eval_metrics.cc).

Computes, with the reference libraries themselves, the values llm-jp-eval v1.4.1 gives for
worked prediction/gold pairs, and writes them to tests/fixtures/metrics/*.json, which
common/eval_metrics_test.cc checks value by value.

    mkdir -p /tmp/sacrebleu
    git --git-dir=/work/.mirror/mjpost+sacrebleu/repo archive HEAD | tar -x -C /tmp/sacrebleu
    /usr/bin/python3 tests/reference/metric_vectors.py --sacrebleu /tmp/sacrebleu \
        --out tests/fixtures/metrics

Run it with Debian's python3 (not a pyenv one) and these Debian packages:
    python3-fuzzywuzzy python3-levenshtein python3-scipy python3-numpy python3-regex
    python3-tabulate python3-portalocker python3-colorama python3-lxml python3-mecab
    mecab-ipadic-utf8
sacrebleu itself comes from a source checkout (no pip). Its ja-mecab tokenizer imports the
`MeCab` binding (Debian's python3-mecab, the same libmecab the C++ code links) and pip's
`ipadic` package, which Debian lacks: this script supplies a stand-in `ipadic` module whose
MECAB_ARGS point at Debian's UTF-8 IPA dictionary with no mecabrc (what pip's ipadic does).
sacrebleu asserts the dictionary has pip-ipadic's 392126 entries; Debian's build of the same
IPA dictionary 2.7.0-20070801 has 392127, so the stand-in reports 392126 when it sees 392127
(recorded in the output as `mecab_dictionary_size`).

The llm-jp-eval formulas below are written out here (llm-jp-eval's code is not vendored).
They are meant to be those of src/llm_jp_eval/utils.py get_evaluation_result in v1.4.1, but
llm-jp-eval's repository was not available when this was written, so they are reconstructed
(the bleu_* call in particular); compare them with the real file before relying on them:
  exact_match         accuracy_score(y_trues, y_preds)
  exact_match_figure  mean(1.0 if float(pred) == float(gold) else 0.0; ValueError -> 0.0)
  char_f1             mean(fuzz.token_sort_ratio(pred, gold) / 100.0)
  set_f1              mean(F1 of {stripped pred lines} against [stripped gold lines])
  bleu_en / bleu_ja   mean(BLEU(effective_order=True, trg_lang=...).corpus_score(
                          pred.strip(), [gold.strip()]).score if both non-empty
                          else float(pred.strip() == gold.strip()))
  pearson / spearman  pearsonr/spearmanr(list(map(float, golds)),
                                         list(map(parse_float, preds)))[0], NaN -> 0.0
Alongside, for the C++ building blocks: sentence BLEU (the [pred], [[gold]] call), corpus
BLEU over each vector set, and both sacrebleu tokenizers.
"""

import argparse
import importlib.metadata
import json
import math
import os
import re
import statistics
import sys
import types
import unicodedata


def load_sacrebleu(path):
    sys.path.insert(0, path)
    if not os.path.exists(os.path.join(path, "sacrebleu", "version.py")):
        # A git archive lacks the version file setuptools-scm writes at build time.
        version = types.ModuleType("sacrebleu.version")
        version.__version__ = "snapshot"
        sys.modules["sacrebleu.version"] = version

    import MeCab as debian_mecab  # python3-mecab

    class DictionaryInfo:
        def __init__(self, info):
            self.size = 392126 if info.size == 392127 else info.size
            self.next = info.next
            self.real_size = info.size

    class Tagger:
        def __init__(self, args):
            self._tagger = debian_mecab.Tagger(args)

        def parse(self, line):
            return self._tagger.parse(line)

        def dictionary_info(self):
            return DictionaryInfo(self._tagger.dictionary_info())

        def version(self):
            return self._tagger.version()

    mecab = types.ModuleType("MeCab")
    mecab.Tagger = Tagger
    sys.modules["MeCab"] = mecab
    ipadic = types.ModuleType("ipadic")
    ipadic.MECAB_ARGS = "-r /dev/null -d /var/lib/mecab/dic/ipadic-utf8"
    sys.modules["ipadic"] = ipadic

    import sacrebleu
    from sacrebleu.metrics import BLEU
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    from sacrebleu.tokenizers.tokenizer_ja_mecab import TokenizerJaMecab

    return sacrebleu, BLEU, Tokenizer13a, TokenizerJaMecab


# ---- llm-jp-eval's formulas -------------------------------------------------------------------


def parse_float(input_str):
    input_str = str(input_str)
    cleaned_str = re.sub(r"[^0-9.]", "", input_str)
    try:
        return float(cleaned_str)
    except ValueError:
        return -2.0


def exact_match(pred, gold):
    return 1.0 if pred == gold else 0.0


def exact_match_figure(pred, gold):
    try:
        return 1.0 if float(pred) == float(gold) else 0.0
    except ValueError:
        return 0.0


def char_f1(fuzz, pred, gold):
    return fuzz.token_sort_ratio(pred, gold) / 100.0


def set_f1(pred, gold):
    set_y_true = [x.strip() for x in gold.split("\n")]
    set_y_pred = list({x.strip() for x in pred.split("\n")})
    set_pre = sum([1 if y in set_y_true else 0 for y in set_y_pred]) / len(set_y_pred)
    set_rec = sum([1 if y in set_y_true else 0 for y in set_y_pred]) / len(set_y_true)
    return 2 * (set_pre * set_rec) / (set_pre + set_rec) if (set_pre + set_rec) != 0 else 0


def llm_jp_eval_bleu(BLEU, pred, gold, trg_lang):
    if pred.strip() and gold.strip():
        return BLEU(effective_order=True, trg_lang=trg_lang).corpus_score(
            pred.strip(), [gold.strip()]).score
    return float(pred.strip() == gold.strip())


def correlation(fn, preds, golds):
    value = fn(list(map(float, golds)), list(map(parse_float, preds)))[0]
    value = float(value)
    return 0.0 if math.isnan(value) else value


# ---- Worked pairs ---------------------------------------------------------------------------

EXACT_MATCH = [
    ("東京", "東京"), ("東京", "東京都"), ("", ""), ("", "a"), ("Yes", "yes"),
    ("entailment", "entailment"), ("contradiction", "neutral"), ("1", "1.0"),
    ("ＡＢＣ", "ABC"), ("abc ", "abc"), ("含意", "含意"), ("a\nb", "a\nb"),
]

EXACT_MATCH_FIGURE = [
    ("3", "3"), ("3", "3.0"), ("3", "3.5"), ("abc", "3"), ("", "0"), ("１２", "12"),
    ("1_000", "1000"), ("1__000", "1000"), ("nan", "nan"), ("inf", "inf"),
    ("-Infinity", "-inf"), (" 42 ", "42"), ("4２", "42"), ("1e3", "1000"), ("٣", "3"),
    ("1,000", "1000"), ("0x10", "16"), ("-0", "0"), (".5", "0.5"), ("5.", "5"),
    ("\x1c1", "1"), ("\u30007\u3000", "7"), ("7円", "7"), ("+2", "2"), ("1e", "1"),
    ("0.1", "0.10000000000000001"), ("12.5", "25/2"), ("١٢.٥", "12.5"), ("−3", "-3"),
    ("1 000", "1000"),
]

CHAR_F1 = [
    ("東京都", "東京都"), ("", ""), ("abc", ""), ("", "abc"), ("!!!", "???"),
    ("The quick brown fox", "quick brown the fox"), ("Hello, World!", "hello world"),
    ("café au lait", "cafe au lait"), ("ＡＢＣ１２３", "abc123"), ("徳川家康", "徳川 家康"),
    ("日本の首都は東京です。", "東京"), ("１９６４年", "1964年"), ("ÀÉÎ", "aei"),
    ("İstanbul", "istanbul"), ("ΣΑΣ ΟΔΟΣ", "σας οδος"), ("under_score", "under score"),
    ("a\tb\nc", "c b a"), ("x²", "x2"), ("½", "1/2"), ("Ⅻ", "xii"), ("①②", "12"),
    ("ｶﾀｶﾅ", "カタカナ"), ("🍣寿司", "寿司"), ("abcdefgh", "aijklmno"),
    ("abcdefgh", "abcijklm"), ("ポジティブ", "ネガティブ"),
    ("山田太郎は東京大学の教授である", "山田太郎は東京大学の准教授だ"),
    ("The Eiffel Tower is in Paris", "Paris is home to the Eiffel Tower"),
    ("YES", "NO"), ("3月14日", "３月１４日"), ("\u3000東京\u3000", "東京"),
    ("Ǆ ǅ", "ǆ ǆ"), ("ꓐ", "ꓐ"), ("ℌ𝔞𝔩𝔩𝔬", "hallo"),
]

SET_F1 = [
    ("a\nb\nc", "a\nb\nc"), ("a\nb", "a\nb\nc"), ("a\na\nb", "a\nb"), ("a\nb", "a\na\nb"),
    ("", ""), ("x", ""), ("", "x"), (" a \n b ", "a\nb"), ("a\n\nb", "a\nb"),
    ("山田太郎（人名）\n東京（地名）", "東京（地名）\n山田太郎（人名）"),
    ("山田太郎（人名）", "東京（地名）\n山田太郎（人名）"), ("a\r\nb", "a\nb"),
    ("\u3000a", "a"), ("a\u2028b", "a\nb"), ("d\ne\nf", "a\nb\nc"),
    ("トヨタ 肯定的\n日産 否定的", "トヨタ 肯定的\n日産 肯定的"), ("a", "a\n"),
    ("1\n2\n3\n4", "1\n2\n3\n4\n5\n6\n7"), ("x\ny\nz", "x"), ("A\na", "a"),
]

BLEU_EN = [
    ("The cat sat on the mat.", "The cat sat on the mat."),
    ("The cat is on the mat.", "The cat sat on the mat."),
    ("", ""), ("", "A reference."), ("A hypothesis.", ""), ("   ", "   "), ("   ", "x"),
    ("the", "the"), ("cat", "dog"), ("Hello world", "hello world"),
    ("It costs $1,000.50 today.", "It costs $1,000.50 now."),
    ("Pages 2-3 and 4 - 5.", "Pages 2-3 and 4-5."),
    ("Tom &amp; Jerry &quot;rule&quot;", "Tom & Jerry \"rule\""),
    ("A short one.", "A much longer reference sentence that goes on and on."),
    ("A much longer hypothesis sentence that goes on and on.", "A short one."),
    ("multi\nline output", "multi line output"),
    ("The Tokyo Tower was completed in 1958 and is 333 meters tall.",
     "Tokyo Tower, completed in 1958, stands 333 meters tall."),
    ("He didn't go, did he?", "He did not go, did he?"),
    ("U.S.A. is big.", "The U.S.A. is big."),
    ("  padded  ", "padded"), ("東京タワー", "Tokyo Tower"),
    ("Mr. Smith went to Washington.", "Mr Smith went to Washington"),
    ("<skipped> word", "word"), ("co-\noperate", "cooperate"),
    ("e.g., i.e., etc.", "e.g. i.e. etc."), ("50%", "50 %"),
    ("Jane's book", "Jane 's book"),
    ("The quick brown fox jumps over the lazy dog",
     "A quick brown fox jumped over a lazy dog"),
]

BLEU_JA = [
    ("吾輩は猫である。", "吾輩は猫である。"), ("吾輩は犬である。", "吾輩は猫である。"),
    ("", ""), ("", "東京"), ("東京", ""), ("東京", "東京"), ("東京タワー", "東京スカイツリー"),
    ("すもももももももものうち", "すもももももももものうち。"),
    ("私は昨日東京へ行きました。", "昨日、私は東京に行った。"),
    ("ＡＢＣ株式会社", "ABC株式会社"), ("１２３円", "123円"), ("ｶﾀｶﾅ", "カタカナ"),
    ("東京タワーは1958年に完成し、高さは333メートルです。",
     "1958年に完成した東京タワーの高さは333mである。"),
    ("彼は来なかった", "彼は来なかった。それでも私は待った。"),
    ("それでも私は待った。彼は来なかった", "彼は来なかった"),
    ("日本語 と English の 混在", "日本語とEnglishの混在"),
    ("\u3000全角空白\u3000", "全角空白"), ("改行\nあり", "改行あり"),
    ("今日は良い天気ですね", "今日はいい天気だね"), ("はい", "いいえ"),
    ("形態素解析は難しい", "形態素解析はむずかしい"), ("、。「」", "、。「」"),
    ("猫", "猫が好き"), ("寿司🍣が好き", "寿司が好き"),
    ("国立情報学研究所が大規模言語モデルを公開した。",
     "国立情報学研究所は大規模言語モデルを公開しました。"),
    ("A", "A"),
]

TOKENIZE_13A = [
    "Hello, world!", "It costs $1,000.50.", "Pages 2-3 and 4 - 5.", "Tom &amp; Jerry",
    "&quot;quoted&quot; &lt;tag&gt;", "<skipped>gone", "co-\noperate", "a\nb", "e.g., i.e.",
    "U.S.A.", "(parens) [brackets] {braces}", "50% off!", "x/y", "don't", "a.b,c", "1.5,2.5",
    "end.", ".start", "東京、大阪。", "  lots   of   space  ", "", "x\u3000y", "a\u00a0b",
    "São Paulo.", "3-", "-3", "a-b", "9-9", "\u2028", "a@b.c", "~`^_|\\",
]

TOKENIZE_JA = [
    "すもももももももものうち", "吾輩は猫である。名前はまだ無い。", "", "   ", "東京",
    "ＡＢＣ株式会社", "1958年", "Hello world", "改行\nあり", "\u3000全角\u3000",
    "国立情報学研究所", "😀絵文字", "ｶﾀｶﾅ", "a", "、",
]

CORRELATION_SETS = [
    (["1.0", "2.5", "3", "4.2"], ["1.2", "2.0", "3.1", "4.0"]),
    (["abc", "2.5", "3", "4.2"], ["1.2", "2.0", "3.1", "4.0"]),
    (["3", "3", "3", "3"], ["1.2", "2.0", "3.1", "4.0"]),
    (["1", "2"], ["4.0", "3.0"]),
    (["1", "2"], ["3.0", "4.0"]),
    (["1", "2", "2", "3", "3", "3"], ["0.5", "1.5", "1.5", "2.5", "4.0", "4.0"]),
    (["約3.5点", "3.5.1", "4.", ".5", "", "5"], ["3.5", "2.0", "4.0", "0.4", "1.0", "5.0"]),
    (["３.５", "2", "1", "0"], ["3.5", "2.0", "1.0", "0.0"]),
    (["1", "2", "3"], ["1.0", "1.0", "1.0"]),
    (["0", "1", "4", "2", "5", "3"], ["5.0", "4.0", "3.0", "2.0", "1.0", "0.0"]),
]


def pseudo_random_set(count, seed):
    state = seed
    preds, golds = [], []
    for _ in range(count):
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        gold = (state >> 33) % 501 / 100.0
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        noise = ((state >> 33) % 201 - 100) / 100.0
        preds.append(f"{max(gold + noise, 0):.2f}")
        golds.append(f"{gold:.2f}")
    return preds, golds


CORRELATION_SETS.append(pseudo_random_set(50, 7))
CORRELATION_SETS.append(pseudo_random_set(300, 11))


def unicode_tables():
    word = re.compile(r"\w")
    ranges = []
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        if word.match(chr(c)):
            if ranges and ranges[-1][1] == c - 1:
                ranges[-1][1] = c
            else:
                ranges.append([c, c])
    lower = [[c, chr(c).lower()] for c in range(0x110000)
             if not 0xD800 <= c <= 0xDFFF and chr(c).lower() != chr(c)]
    space = [c for c in range(0x110000) if chr(c).isspace()]
    return {"unicode_version": unicodedata.unidata_version, "word_ranges": ranges,
            "lower": lower, "isspace": space}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sacrebleu", required=True, help="sacrebleu source checkout")
    parser.add_argument("--out", required=True, help="output folder (tests/fixtures/metrics)")
    args = parser.parse_args()

    sacrebleu, BLEU, Tokenizer13a, TokenizerJaMecab = load_sacrebleu(args.sacrebleu)
    import Levenshtein  # noqa: F401 -- fuzzywuzzy must use it, not difflib
    import numpy
    import scipy
    from fuzzywuzzy import __version__ as fuzzywuzzy_version
    from fuzzywuzzy import fuzz
    from fuzzywuzzy import utils as fuzz_utils
    from scipy.stats import pearsonr, spearmanr

    ja_tokenizer = TokenizerJaMecab()
    tok13a = Tokenizer13a()
    provenance = {
        "generated_by": "/usr/bin/python3 tests/reference/metric_vectors.py "
                        "--sacrebleu <sacrebleu checkout> --out tests/fixtures/metrics",
        "python": sys.version.split()[0],
        "sacrebleu_source": os.path.abspath(args.sacrebleu),
        "fuzzywuzzy": fuzzywuzzy_version,
        "python_levenshtein": importlib.metadata.version("python-Levenshtein"),
        "scipy": scipy.__version__,
        "numpy": numpy.__version__,
        "mecab": ja_tokenizer.tagger.version(),
        "mecab_dictionary_size": ja_tokenizer.tagger.dictionary_info().real_size,
    }
    os.makedirs(args.out, exist_ok=True)

    def write(name, payload):
        payload = dict(provenance=provenance, **payload)
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            json.dump(payload, f, ensure_ascii=False, indent=1)
            f.write("\n")

    def per_example(metric, pairs, fn, extra=None):
        cases = []
        for pred, gold in pairs:
            case = {"pred": pred, "gold": gold, "example": fn(pred, gold)}
            if extra:
                case.update(extra(pred, gold))
            cases.append(case)
        aggregate = statistics.mean(c["example"] for c in cases)
        return {"metric": metric, "cases": cases, "aggregate": aggregate}

    write("exact_match.json", per_example("exact_match", EXACT_MATCH, exact_match))
    write("exact_match_figure.json",
          per_example("exact_match_figure", EXACT_MATCH_FIGURE, exact_match_figure))
    write("char_f1.json", per_example(
        "char_f1", CHAR_F1, lambda p, g: char_f1(fuzz, p, g),
        lambda p, g: {"full_process_pred": fuzz_utils.full_process(p, force_ascii=True)}))
    write("set_f1.json", per_example("set_f1", SET_F1, set_f1))

    for metric, pairs, lang, tokenizer in (("bleu_en", BLEU_EN, "en", tok13a),
                                           ("bleu_ja", BLEU_JA, "ja", ja_tokenizer)):
        payload = per_example(
            metric, pairs, lambda p, g: llm_jp_eval_bleu(BLEU, p, g, lang),
            lambda p, g: {
                "sentence_bleu": BLEU(effective_order=True, trg_lang=lang).sentence_score(
                    p, [g]).score,
                "pred_tokens": tokenizer(p.rstrip()),
            })
        preds = [p for p, _ in pairs]
        golds = [g for _, g in pairs]
        payload["corpus_bleu"] = BLEU(trg_lang=lang).corpus_score(preds, [golds]).score
        payload["corpus_bleu_effective_order"] = BLEU(
            trg_lang=lang, effective_order=True).corpus_score(preds, [golds]).score
        write(f"{metric}.json", payload)

    write("tokenize_13a.json",
          {"cases": [{"input": s, "output": tok13a(s)} for s in TOKENIZE_13A]})
    write("tokenize_ja_mecab.json",
          {"cases": [{"input": s, "output": ja_tokenizer(s)} for s in TOKENIZE_JA]})

    for metric, fn in (("pearson", pearsonr), ("spearman", spearmanr)):
        sets = []
        for preds, golds in CORRELATION_SETS:
            sets.append({"preds": preds, "golds": golds,
                         "value": correlation(fn, preds, golds)})
        write(f"{metric}.json", {"metric": metric, "sets": sets})

    write("python_unicode.json", unicode_tables())


if __name__ == "__main__":
    main()
