// `steadyeval plot`: score-over-step charts with the stability range shaded and a
// per-example correctness strip under each chart, written as SVG or PNG.
//
// Two layers:
//   * a plain data model (PlotDocument: panels of series, a shaded step range and a flip
//     strip) with RenderPlot, which knows nothing of gRPC; and
//   * PlotCommand, which fills a PlotDocument from an EvalService stub (GetRun, GetScores,
//     GetStability, ExportPredictions) and renders it.
//
// One drawing routine lays out and draws every element through a small canvas interface
// with two back ends: cairo's image surface for .png (toy text API, "DejaVu Sans"), and an
// SVG writer that emits real <text> elements (selectable, searchable, and checkable by the
// tests) instead of the glyph outlines cairo's SVG surface would write. Text is measured
// with cairo in both cases, so the two formats share one geometry (ComputePlotLayout).
//
// Thread-safety: the functions are re-entrant.
#ifndef STEADYEVAL_CLIENT_PLOT_H_
#define STEADYEVAL_CLIENT_PLOT_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/cli.h"
#include "steadyeval/v1/eval_service.grpc.pb.h"

namespace steadyeval::client {

// One variant's task score over step.
struct PlotSeries {
  std::string variant;                              // "raw", "avg@5", "ens@3", ...
  std::vector<std::pair<uint64_t, double>> points;  // (step, score), ascending step
};

// Per-example values of one variant: rows are examples (drawn top to bottom), columns are
// steps. A cell holds the primary metric's per-example value: 1 correct, 0 incorrect,
// anything between partial (char_f1), nullopt missing (no prediction stored at that step).
struct FlipStrip {
  std::string variant = "raw";
  std::vector<uint64_t> steps;                            // ascending
  std::vector<uint32_t> examples;                         // example index per row
  std::vector<uint32_t> flips;                            // value changes per row
  std::vector<std::vector<std::optional<double>>> cells;  // [row][column]
  uint32_t total_examples = 0;                            // before capping to max rows
  double full_scale = 1;  // the value drawn as "correct" (1, or 100 for 0..100 metrics)
};

// The most rows a strip shows; the examples with the most flips are kept.
inline constexpr size_t kMaxStripRows = 60;

// Builds a strip from (example, step, value) triples: rows sorted by the number of value
// changes between adjacent steps (descending; ties by example index), capped at max_rows.
struct StripValue {
  uint32_t example = 0;
  uint64_t step = 0;
  double value = 0;
};
FlipStrip MakeFlipStrip(std::string variant, const std::vector<StripValue>& values,
                        size_t max_rows = kMaxStripRows);

struct StepSpan {
  uint64_t from_step = 0;  // inclusive
  uint64_t to_step = 0;    // inclusive
};

// One task: its chart and, for per-example metrics, its strip.
struct TaskPanel {
  std::string task;
  std::string metric;              // y axis title, e.g. "exact_match"
  std::vector<PlotSeries> series;  // legend order
  std::optional<StepSpan> shaded;  // the stability range
  std::string shaded_label = "stability range";
  std::optional<FlipStrip> strip;  // absent for corpus-level metrics
  std::string strip_note;          // said instead of a strip when it is absent
};

struct PlotDocument {
  std::string title;  // "run demo — arith_mc"
  std::vector<TaskPanel> panels;
};

// Geometry, in layout units (SVG user units; PNG pixels are units × png_scale).
struct PlotRect {
  double x = 0, y = 0, w = 0, h = 0;
};
struct PanelLayout {
  PlotRect header;                      // the panel's heading line (multi-panel documents)
  PlotRect score_area;                  // the chart's plotting area
  PlotRect strip_area;                  // the strip's cells (h == 0 without a strip)
  double step_min = 0, step_max = 0;    // x domain of both areas
  double score_min = 0, score_max = 1;  // y domain of the chart
  std::vector<double> score_ticks;
  std::vector<double> step_ticks;
  double row_height = 0;
};
struct PlotLayout {
  double width = 0, height = 0;
  std::vector<PanelLayout> panels;
};

PlotLayout ComputePlotLayout(const PlotDocument& doc);
double StepToX(const PanelLayout& panel, double step);
double ScoreToY(const PanelLayout& panel, double score);
// The cell of `strip` at (row, column): columns span the midpoints between adjacent steps,
// so each cell is centred on its step's x in the chart above.
PlotRect StripCellRect(const PanelLayout& panel, const FlipStrip& strip, size_t row, size_t column);

// Colours (0..1 RGB) the tests sample.
struct PlotColor {
  double r, g, b;
};
inline constexpr PlotColor kShadeColor = {0.996, 0.953, 0.843};      // #FEF3D7
inline constexpr PlotColor kCorrectColor = {0.180, 0.620, 0.333};    // #2E9E55
inline constexpr PlotColor kIncorrectColor = {0.859, 0.259, 0.251};  // #DB4240
inline constexpr PlotColor kMissingColor = {0.878, 0.878, 0.878};    // #E0E0E0

struct PlotRenderOptions {
  double png_scale = 2;  // PNG pixels per layout unit (2 = crisp on high-DPI screens)
};

// Writes `doc` to `path`, the format chosen by the extension (.svg or .png, any case).
// INVALID_ARGUMENT for another extension or a document without panels or points;
// the error names the path. A file that cannot be written is an error naming the path.
absl::Status RenderPlot(const PlotDocument& doc, const std::string& path,
                        const PlotRenderOptions& options = {});

// True for paths ending in .svg or .png (any case).
bool IsPlotPath(const std::string& path);

// What PlotCommand should fetch.
struct PlotRequest {
  std::string run;
  std::string out;                    // .svg or .png
  std::string task;                   // empty = every task of the run
  std::vector<std::string> variants;  // empty = raw + every variant with scores
  v1::GetStabilityRequest range;      // only its range oneof is used (unset = default)
  double timeout_s = kDefaultTimeoutSeconds;
};

// Fetches a run's scores, stability range and raw per-example values and builds the
// document. NOT_FOUND for an unknown run, task or variant (naming what exists);
// FAILED_PRECONDITION when the selected tasks have no scores yet.
absl::StatusOr<PlotDocument> FetchPlotDocument(const PlotRequest& request,
                                               v1::EvalService::StubInterface* stub);

// The `plot` command: FetchPlotDocument + RenderPlot, then "wrote FILE (...)" on `err`
// (with --json, {"out", "panels", "variants", "steps"} on `out`).
absl::Status PlotCommand(const Invocation& inv, v1::EvalService::StubInterface* stub,
                         std::ostream& out, std::ostream& err);

}  // namespace steadyeval::client

#endif  // STEADYEVAL_CLIENT_PLOT_H_
