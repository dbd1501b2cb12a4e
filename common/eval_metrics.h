// llm-jp-eval v1.4.1 generation metrics (DESIGN §7), reimplemented so that a task score here
// equals llm-jp-eval's on the same strings: exact_match, exact_match_figure, char_f1, set_f1,
// bleu_en, bleu_ja, pearson, spearman. These score model outputs; the services' Prometheus
// metrics are elsewhere (server/coordinator_metrics.h, server/rpc/rpc_metrics.h,
// server/store/store_metrics.h, worker/daemon/worker_metrics.h).
//
// Inputs are prediction/gold strings *after* llm-jp-eval's normalisation (done by the scoring
// code; see common/text.h). Strings are UTF-8 and every rule below works on Unicode code
// points, the way Python's str does; invalid UTF-8 reads as U+FFFD.
//
// Scales are llm-jp-eval's own:
//   exact_match, exact_match_figure   1.0 or 0.0 per example
//   char_f1                           fuzzywuzzy token_sort_ratio / 100, in [0, 1]
//   set_f1                            in [0, 1]
//   bleu_en, bleu_ja                  sacrebleu BLEU in [0, 100]; an example whose prediction or
//                                     gold is empty (after str.strip()) scores 1.0 when both are
//                                     empty, else 0.0 (sic: llm-jp-eval mixes the scales here)
//   pearson, spearman                 in [-1, 1], computed over the task; NaN becomes 0.0
// Task scores of per-example metrics are Python's statistics.mean of the example values: the
// exact mean, correctly rounded to a double.
//
// Provenance: the building blocks are checked against fuzzywuzzy, python-Levenshtein,
// scipy and sacrebleu themselves (tests/reference/metric_vectors.py). llm-jp-eval's own
// get_evaluation_result (how those blocks are combined, above all the bleu_* call described at
// LlmJpEvalBleu) is reconstructed, not checked against its source; SentenceBleu is the
// alternative if it turns out to pass [pred], [[gold]].
//
// Thread-safety: every function here may be called concurrently.
#ifndef STEADYEVAL_COMMON_EVAL_METRICS_H_
#define STEADYEVAL_COMMON_EVAL_METRICS_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace steadyeval {

// One llm-jp-eval generation metric over normalised prediction/gold strings.
class GenerationMetric {
 public:
  virtual ~GenerationMetric() = default;
  virtual absl::string_view name() const = 0;
  // True when the task score is the mean of per-example values (Example() meaningful);
  // false for corpus-level metrics (pearson, spearman).
  virtual bool per_example() const = 0;
  // Per-example value in the metric's scale (see the file comment); NaN when
  // !per_example(). FAILED_PRECONDITION when bleu_ja cannot load MeCab's dictionary.
  virtual absl::StatusOr<double> Example(absl::string_view pred, absl::string_view gold) const = 0;
  // The task score from all examples (preds[i] is compared with golds[i]); the default is
  // statistics.mean of Example(). INVALID_ARGUMENT when the sizes differ, when there are no
  // examples, or (pearson/spearman) when a gold answer is not a number or pearson has fewer
  // than two examples -- the cases where llm-jp-eval itself raises.
  virtual absl::StatusOr<double> Aggregate(const std::vector<std::string>& preds,
                                           const std::vector<std::string>& golds) const;
};

// nullptr for an unknown name. The objects live for the program.
const GenerationMetric* FindGenerationMetric(absl::string_view name);
// Every supported generation metric name, sorted.
std::vector<std::string> GenerationMetricNames();

// ---- Pieces, exposed for tests -------------------------------------------------------------

// fuzzywuzzy 0.18 fuzz.token_sort_ratio(a, b) with python-Levenshtein (0..100): full_process
// (drop U+0080..U+00FF, each non-word character -> ' ', str.lower(), strip), sort the
// whitespace-separated tokens, then ratio(): 100 for equal strings, 0 when one is empty, else
// round-half-even(100 * 2*LCS / (len1 + len2)) over code points.
int FuzzTokenSortRatio(absl::string_view a, absl::string_view b);
// fuzzywuzzy's utils.full_process(s, force_ascii=True).
std::string FuzzFullProcess(absl::string_view s);

// llm-jp-eval's set_f1 for one example: F1 between the set of stripped prediction lines and
// the list (duplicates kept, which lowers recall) of stripped gold lines.
double SetF1(absl::string_view pred, absl::string_view gold);

// Python's float(text), nullopt where Python raises ValueError.
std::optional<double> PythonFloat(absl::string_view text);
// llm-jp-eval's parse_float: keep only ASCII digits and '.', then float(); -2.0 if that fails.
double LlmJpEvalParseFloat(absl::string_view text);

// statistics.mean(values): the exact mean correctly rounded (INVALID_ARGUMENT when empty).
absl::StatusOr<double> PythonMean(const std::vector<double>& values);
// scipy.stats.pearsonr(x, y)[0] / spearmanr(x, y)[0] (scipy 1.10); NaN for constant input
// (and, for spearman, fewer than two points). INVALID_ARGUMENT for unequal lengths and for
// pearson with fewer than two points.
absl::StatusOr<double> PearsonR(const std::vector<double>& x, const std::vector<double>& y);
absl::StatusOr<double> SpearmanR(const std::vector<double>& x, const std::vector<double>& y);

// sacrebleu's 13a tokenizer (mteval-v13a), the default for English.
std::string Tokenize13a(absl::string_view line);
// sacrebleu's ja-mecab tokenizer: strip, MeCab -Owakati with the IPA dictionary, strip:
// the morphemes' surface forms joined by single spaces. FAILED_PRECONDITION without the
// dictionary (DefaultMecabTokenizer()).
absl::StatusOr<std::string> TokenizeJaMecab(absl::string_view line);

enum class BleuTokenizer { k13a, kJaMecab };

// sacrebleu's sufficient statistics of one segment (already tokenized, single reference).
struct BleuStats {
  int64_t sys_len = 0;
  int64_t ref_len = 0;
  std::array<int64_t, 4> correct{};  // clipped n-gram matches, n = 1..4
  std::array<int64_t, 4> total{};    // hypothesis n-grams, n = 1..4
  BleuStats& operator+=(const BleuStats& other);
};
BleuStats BleuSegmentStats(absl::string_view hyp_tokens, absl::string_view ref_tokens);
// sacrebleu BLEU.compute_bleu with smooth_method='exp' (the default), 0..100.
double BleuFromStats(BleuStats stats, bool effective_order);

// BLEU(tokenize=..., effective_order=True).sentence_score(hyp, [ref]).score.
absl::StatusOr<double> SentenceBleu(absl::string_view hyp, absl::string_view ref,
                                    BleuTokenizer tokenizer);
// BLEU(tokenize=..., effective_order=...).corpus_score(hyps, [refs]).score.
absl::StatusOr<double> CorpusBleu(const std::vector<std::string>& hyps,
                                  const std::vector<std::string>& refs, BleuTokenizer tokenizer,
                                  bool effective_order);
// llm-jp-eval's per-example bleu_en / bleu_ja value. llm-jp-eval calls
// BLEU(effective_order=True, trg_lang=...).corpus_score(pred.strip(), [gold.strip()]) with the
// *strings*, not one-element lists, so sacrebleu sees the prediction's code points as the
// hypothesis segments and the gold's code points as the one reference stream, pairs them
// position by position up to the shorter length, and pools the statistics: a
// position-aligned character match rate with BLEU's brevity penalty. Empty after strip():
// 1.0 if both are, else 0.0.
absl::StatusOr<double> LlmJpEvalBleu(absl::string_view pred, absl::string_view gold,
                                     BleuTokenizer tokenizer);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_EVAL_METRICS_H_
