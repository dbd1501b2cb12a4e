#include "client/plot.h"

#include <unistd.h>

#include <cairo.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "api/variant_proto.h"
#include "client/cli.h"
#include "client/format.h"
#include "common/eval_metrics.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace steadyeval::client {
namespace {

// ---- Style ----

constexpr char kFontFamily[] = "DejaVu Sans";
constexpr double kWidth = 1000;
constexpr double kMarginLeft = 78;
constexpr double kLegendGap = 22;
constexpr double kMarginRight = 24;
constexpr double kTitleHeight = 58;
constexpr double kPanelHeaderHeight = 30;
constexpr double kScoreHeight = 280;
constexpr double kAxisBelow = 46;      // tick labels + axis title under an area
constexpr double kCaptionHeight = 30;  // gap + the strip's caption
constexpr double kStripTargetHeight = 240;
constexpr double kPanelGap = 34;
constexpr double kBottomMargin = 10;

constexpr PlotColor kWhite = {1, 1, 1};
constexpr PlotColor kTitleColor = {0.13, 0.13, 0.13};
constexpr PlotColor kTextColor = {0.25, 0.25, 0.25};
constexpr PlotColor kMutedText = {0.45, 0.45, 0.45};
constexpr PlotColor kGridColor = {0.905, 0.905, 0.905};
constexpr PlotColor kFrameColor = {0.70, 0.70, 0.70};
constexpr PlotColor kShadeEdge = {0.90, 0.66, 0.16};
constexpr PlotColor kShadeText = {0.55, 0.38, 0.02};
constexpr PlotColor kPartialMid = {0.949, 0.757, 0.306};  // #F2C14E, value 0.5

// raw first (light, thin), then the integrated variants (bold, distinct).
constexpr PlotColor kRawColor = {0.35, 0.50, 0.72};
constexpr PlotColor kVariantPalette[] = {
    {0.91, 0.44, 0.04},  // orange
    {0.48, 0.31, 0.75},  // purple
    {0.05, 0.60, 0.65},  // teal
    {0.83, 0.28, 0.50},  // pink
    {0.55, 0.34, 0.29},  // brown
    {0.10, 0.31, 0.54},  // dark blue
    {0.60, 0.60, 0.12},  // olive
};

struct SeriesStyle {
  PlotColor color;
  double width;
  double alpha;
  bool markers;
};

SeriesStyle StyleFor(const std::string& variant, size_t integrated_index) {
  if (variant == "raw") return {kRawColor, 1.3, 0.75, true};
  const size_t n = sizeof(kVariantPalette) / sizeof(kVariantPalette[0]);
  return {kVariantPalette[integrated_index % n], 2.6, 1.0, false};
}

// ---- Text measurement (cairo's toy API, shared by both back ends) ----

void SelectFont(cairo_t* cr, double size, bool bold) {
  cairo_select_font_face(cr, kFontFamily, CAIRO_FONT_SLANT_NORMAL,
                         bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

double TextWidth(const std::string& text, double size, bool bold = false) {
  struct Measurer {
    cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, 1, 1);
    cairo_t* cr = cairo_create(surface);
    ~Measurer() {
      cairo_destroy(cr);
      cairo_surface_destroy(surface);
    }
  };
  thread_local Measurer m;
  SelectFont(m.cr, size, bold);
  cairo_text_extents_t ext;
  cairo_text_extents(m.cr, text.c_str(), &ext);
  return ext.x_advance;
}

// ---- Canvas: the two back ends of the one drawing routine ----

enum class Anchor { kStart, kMiddle, kEnd };

struct TextStyle {
  double size = 12;
  bool bold = false;
  PlotColor color = kTextColor;
  Anchor anchor = Anchor::kStart;
  bool vertical = false;  // rotated 90° counter-clockwise
};

using Points = std::vector<std::pair<double, double>>;

class Canvas {
 public:
  virtual ~Canvas() = default;
  virtual void FillRect(const PlotRect& r, PlotColor color, double alpha = 1) = 0;
  virtual void StrokeRect(const PlotRect& r, PlotColor color, double width) = 0;
  virtual void Polyline(const Points& points, PlotColor color, double width, double alpha,
                        bool dashed = false) = 0;
  virtual void Dot(double x, double y, double radius, PlotColor color, double alpha) = 0;
  // (x, y) is the baseline point the anchor refers to.
  virtual void Text(double x, double y, const std::string& text, const TextStyle& style) = 0;
};

class CairoCanvas : public Canvas {
 public:
  explicit CairoCanvas(cairo_t* cr) : cr_(cr) {
    cairo_font_options_t* options = cairo_font_options_create();
    cairo_font_options_set_antialias(options, CAIRO_ANTIALIAS_GRAY);
    cairo_font_options_set_hint_style(options, CAIRO_HINT_STYLE_SLIGHT);
    cairo_set_font_options(cr_, options);
    cairo_font_options_destroy(options);
    cairo_set_line_join(cr_, CAIRO_LINE_JOIN_ROUND);
    cairo_set_line_cap(cr_, CAIRO_LINE_CAP_ROUND);
  }
  void FillRect(const PlotRect& r, PlotColor c, double alpha) override {
    cairo_set_source_rgba(cr_, c.r, c.g, c.b, alpha);
    cairo_rectangle(cr_, r.x, r.y, r.w, r.h);
    cairo_fill(cr_);
  }
  void StrokeRect(const PlotRect& r, PlotColor c, double width) override {
    cairo_set_source_rgb(cr_, c.r, c.g, c.b);
    cairo_set_line_width(cr_, width);
    cairo_rectangle(cr_, r.x, r.y, r.w, r.h);
    cairo_stroke(cr_);
  }
  void Polyline(const Points& points, PlotColor c, double width, double alpha,
                bool dashed) override {
    if (points.size() < 2) return;
    cairo_set_source_rgba(cr_, c.r, c.g, c.b, alpha);
    cairo_set_line_width(cr_, width);
    const double dash[] = {4, 3};
    cairo_set_dash(cr_, dash, dashed ? 2 : 0, 0);
    cairo_move_to(cr_, points[0].first, points[0].second);
    for (size_t i = 1; i < points.size(); ++i)
      cairo_line_to(cr_, points[i].first, points[i].second);
    cairo_stroke(cr_);
    cairo_set_dash(cr_, nullptr, 0, 0);
  }
  void Dot(double x, double y, double radius, PlotColor c, double alpha) override {
    cairo_set_source_rgba(cr_, c.r, c.g, c.b, alpha);
    cairo_arc(cr_, x, y, radius, 0, 2 * M_PI);
    cairo_fill(cr_);
  }
  void Text(double x, double y, const std::string& text, const TextStyle& s) override {
    SelectFont(cr_, s.size, s.bold);
    cairo_text_extents_t ext;
    cairo_text_extents(cr_, text.c_str(), &ext);
    const double shift = s.anchor == Anchor::kStart    ? 0
                         : s.anchor == Anchor::kMiddle ? ext.x_advance / 2
                                                       : ext.x_advance;
    cairo_save(cr_);
    cairo_set_source_rgb(cr_, s.color.r, s.color.g, s.color.b);
    cairo_translate(cr_, x, y);
    if (s.vertical) cairo_rotate(cr_, -M_PI / 2);
    cairo_move_to(cr_, -shift, 0);
    cairo_show_text(cr_, text.c_str());
    cairo_restore(cr_);
  }

 private:
  cairo_t* cr_;
};

std::string Hex(PlotColor c) {
  auto byte = [](double v) { return static_cast<int>(std::lround(std::clamp(v, 0.0, 1.0) * 255)); };
  return absl::StrFormat("#%02X%02X%02X", byte(c.r), byte(c.g), byte(c.b));
}

std::string XmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string Num(double v) { return absl::StrFormat("%.2f", v); }

// Writes SVG elements directly: real <text> (searchable, selectable) rather than the glyph
// outlines of cairo's SVG surface.
class SvgCanvas : public Canvas {
 public:
  SvgCanvas(double width, double height, const std::string& title) {
    absl::StrAppend(&svg_, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", Num(width),
                    "\" height=\"", Num(height), "\" viewBox=\"0 0 ", Num(width), " ", Num(height),
                    "\" font-family=\"", kFontFamily, ", Verdana, Arial, sans-serif\">\n<title>",
                    XmlEscape(title), "</title>\n");
  }
  void FillRect(const PlotRect& r, PlotColor c, double alpha) override {
    absl::StrAppend(&svg_, "<rect x=\"", Num(r.x), "\" y=\"", Num(r.y), "\" width=\"", Num(r.w),
                    "\" height=\"", Num(r.h), "\" fill=\"", Hex(c), "\"", Opacity("fill", alpha),
                    "/>\n");
  }
  void StrokeRect(const PlotRect& r, PlotColor c, double width) override {
    absl::StrAppend(&svg_, "<rect x=\"", Num(r.x), "\" y=\"", Num(r.y), "\" width=\"", Num(r.w),
                    "\" height=\"", Num(r.h), "\" fill=\"none\" stroke=\"", Hex(c),
                    "\" stroke-width=\"", Num(width), "\"/>\n");
  }
  void Polyline(const Points& points, PlotColor c, double width, double alpha,
                bool dashed) override {
    if (points.size() < 2) return;
    std::string coords;
    for (const auto& [x, y] : points) absl::StrAppend(&coords, Num(x), ",", Num(y), " ");
    absl::StrAppend(&svg_, "<polyline points=\"", absl::StripTrailingAsciiWhitespace(coords),
                    "\" fill=\"none\" stroke=\"", Hex(c), "\" stroke-width=\"", Num(width),
                    "\" stroke-linejoin=\"round\" stroke-linecap=\"round\"",
                    Opacity("stroke", alpha), dashed ? " stroke-dasharray=\"4 3\"" : "", "/>\n");
  }
  void Dot(double x, double y, double radius, PlotColor c, double alpha) override {
    absl::StrAppend(&svg_, "<circle cx=\"", Num(x), "\" cy=\"", Num(y), "\" r=\"", Num(radius),
                    "\" fill=\"", Hex(c), "\"", Opacity("fill", alpha), "/>\n");
  }
  void Text(double x, double y, const std::string& text, const TextStyle& s) override {
    const char* anchor = s.anchor == Anchor::kStart    ? "start"
                         : s.anchor == Anchor::kMiddle ? "middle"
                                                       : "end";
    absl::StrAppend(
        &svg_, "<text x=\"", Num(x), "\" y=\"", Num(y), "\" font-size=\"", Num(s.size), "\"",
        s.bold ? " font-weight=\"bold\"" : "", " text-anchor=\"", anchor, "\" fill=\"",
        Hex(s.color), "\"",
        s.vertical ? absl::StrCat(" transform=\"rotate(-90 ", Num(x), " ", Num(y), ")\"") : "", ">",
        XmlEscape(text), "</text>\n");
  }
  std::string Finish() { return svg_ + "</svg>\n"; }

 private:
  static std::string Opacity(const char* what, double alpha) {
    return alpha >= 1 ? "" : absl::StrCat(" ", what, "-opacity=\"", Num(alpha), "\"");
  }
  std::string svg_;
};

// ---- Scales and ticks ----

// About `target` round tick values covering [lo, hi].
std::vector<double> NiceTicks(double lo, double hi, int target, double* spacing) {
  const double span = std::max(hi - lo, 1e-12);
  const double raw = span / std::max(target, 1);
  const double mag = std::pow(10, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  *spacing = step;
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0 : t);
  }
  return ticks;
}

std::string ScoreLabel(double v, double spacing) {
  int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(spacing) + 1e-9)));
  if (std::abs(spacing * std::pow(10, decimals) - std::round(spacing * std::pow(10, decimals))) >
      1e-6) {
    ++decimals;  // 0.25-type spacing
  }
  return absl::StrFormat("%.*f", decimals, v);
}

// Tick labels of one step axis, in one unit for all: "2.5k 5k 7.5k" rather than
// "2500 5k 7500"; plain integers below 10000.
std::vector<std::string> StepLabels(const std::vector<double>& ticks) {
  double largest = 0;
  for (double t : ticks) largest = std::max(largest, std::abs(t));
  const double unit = largest >= 1e6 ? 1e6 : largest >= 1e4 ? 1e3 : 1;
  const char* suffix = unit == 1e6 ? "M" : unit == 1e3 ? "k" : "";
  std::vector<std::string> labels;
  for (double t : ticks) {
    labels.push_back(unit == 1 ? absl::StrFormat("%.0f", t) : absl::StrCat(t / unit, suffix));
  }
  return labels;
}

// Every step drawn in a panel (series and strip), ascending.
std::vector<uint64_t> PanelSteps(const TaskPanel& panel) {
  std::set<uint64_t> steps;
  for (const PlotSeries& s : panel.series) {
    for (const auto& p : s.points) steps.insert(p.first);
  }
  if (panel.strip) steps.insert(panel.strip->steps.begin(), panel.strip->steps.end());
  return {steps.begin(), steps.end()};
}

// The x extent of the column of steps[i]: from the midpoint to its neighbours (half a gap
// beyond the ends).
std::pair<double, double> ColumnSpan(const std::vector<uint64_t>& steps, size_t i) {
  const double s = static_cast<double>(steps[i]);
  if (steps.size() == 1) return {s - 0.5, s + 0.5};
  const double left_gap =
      i > 0 ? s - static_cast<double>(steps[i - 1]) : static_cast<double>(steps[1]) - s;
  const double right_gap = i + 1 < steps.size() ? static_cast<double>(steps[i + 1]) - s
                                                : s - static_cast<double>(steps[i - 1]);
  return {s - left_gap / 2, s + right_gap / 2};
}

double LegendWidth(const PlotDocument& doc) {
  double widest = TextWidth("incorrect", 12);
  for (const TaskPanel& p : doc.panels) {
    for (const PlotSeries& s : p.series) widest = std::max(widest, TextWidth(s.variant, 12));
    std::vector<std::string> parts = absl::StrSplit(p.shaded_label, absl::MaxSplits(" (", 1));
    widest = std::max(widest, TextWidth(parts[0], 12));
    if (parts.size() > 1) widest = std::max(widest, TextWidth("(" + parts[1], 10.5));
  }
  return std::clamp(widest + 34, 130.0, 260.0);
}

PlotColor Lerp(PlotColor a, PlotColor b, double t) {
  return {a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t};
}

PlotColor CellColor(const std::optional<double>& value, double full_scale) {
  if (!value) return kMissingColor;
  const double v = std::clamp(*value / full_scale, 0.0, 1.0);
  if (v >= 1 - 1e-9) return kCorrectColor;
  if (v <= 1e-9) return kIncorrectColor;
  return v < 0.5 ? Lerp(kIncorrectColor, kPartialMid, v * 2)
                 : Lerp(kPartialMid, kCorrectColor, (v - 0.5) * 2);
}

std::string StripCaption(const FlipStrip& strip) {
  const size_t shown = strip.examples.size();
  if (shown < strip.total_examples) {
    return absl::StrCat("per-example correctness, ", strip.variant, ": the ", shown, " of ",
                        strip.total_examples, " examples that flip most (most flips at top)");
  }
  return absl::StrCat("per-example correctness, ", strip.variant, ": all ", shown,
                      shown == 1 ? " example" : " examples", " (most flips at top)");
}

// ---- The drawing routine ----

void DrawStepAxis(Canvas& c, const PanelLayout& p, const PlotRect& area, bool title) {
  const std::vector<std::string> labels = StepLabels(p.step_ticks);
  for (size_t i = 0; i < p.step_ticks.size(); ++i) {
    const double x = StepToX(p, p.step_ticks[i]);
    c.Polyline({{x, area.y + area.h}, {x, area.y + area.h + 4}}, kFrameColor, 1, 1);
    c.Text(x, area.y + area.h + 17, labels[i], {11.5, false, kTextColor, Anchor::kMiddle});
  }
  if (title) {
    c.Text(area.x + area.w / 2, area.y + area.h + 38, "step",
           {12.5, false, kTitleColor, Anchor::kMiddle});
  }
}

void DrawPanel(Canvas& c, const TaskPanel& panel, const PanelLayout& p, bool multi_panel) {
  const PlotRect& a = p.score_area;
  if (multi_panel) {
    const double w = TextWidth(panel.task, 15, true);
    c.Text(p.header.x, p.header.y + 20, panel.task, {15, true, kTitleColor});
    c.Text(p.header.x + w + 8, p.header.y + 20, panel.metric, {12.5, false, kMutedText});
  }
  c.FillRect(a, kWhite);

  // Stability range: opaque band under the grid and the lines.
  std::optional<PlotRect> band;
  if (panel.shaded) {
    const double x0 = std::max(a.x, StepToX(p, static_cast<double>(panel.shaded->from_step)));
    const double x1 = std::min(a.x + a.w, StepToX(p, static_cast<double>(panel.shaded->to_step)));
    if (x1 >= x0) {
      // Widen to the columns of the first and last step in range, as in the strip.
      std::vector<uint64_t> steps = PanelSteps(panel);
      double left = x0, right = x1;
      for (size_t i = 0; i < steps.size(); ++i) {
        auto [l, r] = ColumnSpan(steps, i);
        if (steps[i] == panel.shaded->from_step) left = StepToX(p, l);
        if (steps[i] == panel.shaded->to_step) right = StepToX(p, r);
      }
      band =
          PlotRect{std::max(a.x, left), a.y, std::min(a.x + a.w, right) - std::max(a.x, left), a.h};
      c.FillRect(*band, kShadeColor);
    }
  }

  for (double t : p.score_ticks) {
    const double y = ScoreToY(p, t);
    c.Polyline({{a.x, y}, {a.x + a.w, y}}, kGridColor, 1, 1);
  }
  for (double t : p.step_ticks) {
    const double x = StepToX(p, t);
    c.Polyline({{x, a.y}, {x, a.y + a.h}}, kGridColor, 1, 1);
  }
  if (band) {
    for (double x : {band->x, band->x + band->w}) {
      c.Polyline({{x, a.y}, {x, a.y + a.h}}, kShadeEdge, 1, 0.9, true);
    }
    const std::string label = "stability range";
    if (TextWidth(label, 10.5) + 8 <= band->w) {
      c.Text(band->x + band->w / 2, a.y + 14, label, {10.5, false, kShadeText, Anchor::kMiddle});
    }
  }

  // Series: raw first so the integrated variants sit on top.
  size_t integrated = 0;
  std::vector<std::pair<const PlotSeries*, SeriesStyle>> styled;
  for (const PlotSeries& s : panel.series) {
    styled.emplace_back(&s, StyleFor(s.variant, s.variant == "raw" ? 0 : integrated++));
  }
  std::stable_sort(styled.begin(), styled.end(), [](const auto& x, const auto& y) {
    return (x.first->variant == "raw") > (y.first->variant == "raw");
  });
  for (const auto& [s, style] : styled) {
    Points pts;
    for (const auto& [step, score] : s->points) {
      pts.emplace_back(StepToX(p, static_cast<double>(step)), ScoreToY(p, score));
    }
    c.Polyline(pts, style.color, style.width, style.alpha);
    if ((style.markers && pts.size() <= 80) || pts.size() == 1) {
      for (const auto& [x, y] : pts) c.Dot(x, y, style.markers ? 2.2 : 3, style.color, style.alpha);
    }
  }
  c.StrokeRect(a, kFrameColor, 1);

  // Axes.
  double spacing = 1;
  if (p.score_ticks.size() >= 2) spacing = p.score_ticks[1] - p.score_ticks[0];
  for (double t : p.score_ticks) {
    const double y = ScoreToY(p, t);
    c.Polyline({{a.x - 4, y}, {a.x, y}}, kFrameColor, 1, 1);
    c.Text(a.x - 7, y + 4, ScoreLabel(t, spacing), {11.5, false, kTextColor, Anchor::kEnd});
  }
  c.Text(a.x - 52, a.y + a.h / 2, panel.metric.empty() ? "score" : panel.metric,
         {12.5, false, kTitleColor, Anchor::kMiddle, true});
  DrawStepAxis(c, p, a, true);

  // Legend, right of the chart.
  double lx = a.x + a.w + kLegendGap, ly = a.y + 8;
  integrated = 0;
  for (const PlotSeries& s : panel.series) {
    const SeriesStyle style = StyleFor(s.variant, s.variant == "raw" ? 0 : integrated++);
    c.Polyline({{lx, ly}, {lx + 24, ly}}, style.color, style.width, style.alpha);
    if (style.markers) c.Dot(lx + 12, ly, 2.2, style.color, style.alpha);
    c.Text(lx + 32, ly + 4.5, s.variant, {12, false, kTitleColor});
    ly += 21;
  }
  if (panel.shaded) {
    ly += 4;
    c.FillRect({lx, ly - 6, 24, 12}, kShadeColor);
    c.StrokeRect({lx, ly - 6, 24, 12}, kShadeEdge, 0.8);
    std::vector<std::string> parts = absl::StrSplit(panel.shaded_label, absl::MaxSplits(" (", 1));
    c.Text(lx + 32, ly + 4.5, parts[0], {12, false, kTitleColor});
    if (parts.size() > 1) c.Text(lx + 32, ly + 19, "(" + parts[1], {10.5, false, kMutedText});
  }

  // Strip.
  const double caption_y = a.y + a.h + kAxisBelow + 22;
  if (!panel.strip) {
    if (!panel.strip_note.empty()) {
      c.Text(a.x, caption_y, panel.strip_note, {11.5, false, kMutedText});
    }
    return;
  }
  const FlipStrip& strip = *panel.strip;
  const PlotRect& sa = p.strip_area;
  c.Text(sa.x, caption_y, StripCaption(strip), {12, true, kTitleColor});
  c.FillRect(sa, kWhite);
  bool any_partial = false, any_missing = false;
  // Wide columns get a hairline gap; narrow ones are merged into runs of one colour
  // (thousands of steps stay a small SVG).
  const bool gaps = !strip.steps.empty() && sa.w / strip.steps.size() >= 8;
  for (size_t row = 0; row < strip.examples.size(); ++row) {
    std::optional<PlotRect> run;
    PlotColor run_color{};
    auto flush = [&] {
      if (run) c.FillRect(*run, run_color);
      run.reset();
    };
    for (size_t col = 0; col < strip.steps.size(); ++col) {
      const std::optional<double>& v = strip.cells[row][col];
      PlotRect cell = StripCellRect(p, strip, row, col);
      const double inset_x = gaps ? 0.3 : 0, inset_y = cell.h >= 6 ? 0.3 : 0;
      cell = {cell.x + inset_x, cell.y + inset_y, cell.w - 2 * inset_x, cell.h - 2 * inset_y};
      const PlotColor color = CellColor(v, strip.full_scale);
      if (!v)
        any_missing = true;
      else if (*v > 0 && *v < strip.full_scale)
        any_partial = true;
      if (!gaps && run && color.r == run_color.r && color.g == run_color.g &&
          color.b == run_color.b) {
        run->w = cell.x + cell.w - run->x;
        continue;
      }
      flush();
      run = cell;
      run_color = color;
    }
    flush();
  }
  if (band) {
    for (double x : {band->x, band->x + band->w}) {
      c.Polyline({{x, sa.y - 3}, {x, sa.y + sa.h + 3}}, kShadeEdge, 1.2, 1, true);
    }
  }
  c.StrokeRect(sa, kFrameColor, 1);
  if (p.row_height >= 9) {
    for (size_t row = 0; row < strip.examples.size(); ++row) {
      c.Text(sa.x - 6, sa.y + (row + 0.5) * p.row_height + 3.5,
             absl::StrCat("#", strip.examples[row]), {9, false, kMutedText, Anchor::kEnd});
    }
    c.Text(sa.x - 52, sa.y + sa.h / 2, "example",
           {12.5, false, kTitleColor, Anchor::kMiddle, true});
  } else {
    c.Text(sa.x - 14, sa.y + sa.h / 2, "examples",
           {12.5, false, kTitleColor, Anchor::kMiddle, true});
  }
  DrawStepAxis(c, p, sa, false);

  // Strip legend.
  lx = sa.x + sa.w + kLegendGap;
  ly = sa.y + 8;
  std::vector<std::pair<PlotColor, std::string>> keys = {{kCorrectColor, "correct"},
                                                         {kIncorrectColor, "incorrect"}};
  if (any_partial) keys.push_back({kPartialMid, "partial"});
  if (any_missing) keys.push_back({kMissingColor, "missing"});
  for (const auto& [color, name] : keys) {
    c.FillRect({lx, ly - 6, 24, 12}, color);
    c.Text(lx + 32, ly + 4.5, name, {12, false, kTitleColor});
    ly += 21;
  }
}

void Draw(Canvas& c, const PlotDocument& doc, const PlotLayout& layout) {
  c.FillRect({0, 0, layout.width, layout.height}, kWhite);
  c.Text(kMarginLeft - 60, 36, doc.title, {20, true, kTitleColor});
  for (size_t i = 0; i < doc.panels.size(); ++i) {
    DrawPanel(c, doc.panels[i], layout.panels[i], doc.panels.size() > 1);
  }
}

// ---- Output ----

cairo_status_t AppendToString(void* closure, const unsigned char* data, unsigned int length) {
  static_cast<std::string*>(closure)->append(reinterpret_cast<const char*>(data), length);
  return CAIRO_STATUS_SUCCESS;
}

absl::StatusOr<std::string> RenderPng(const PlotDocument& doc, const PlotLayout& layout,
                                      double scale) {
  const int w = static_cast<int>(std::ceil(layout.width * scale));
  const int h = static_cast<int>(std::ceil(layout.height * scale));
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, w, h);
  std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)> surface_owner(
      surface, cairo_surface_destroy);
  if (cairo_surface_status(surface) != CAIRO_STATUS_SUCCESS) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot create a ", w, "x", h,
                     " image: ", cairo_status_to_string(cairo_surface_status(surface))));
  }
  cairo_t* cr = cairo_create(surface);
  cairo_scale(cr, scale, scale);
  {
    CairoCanvas canvas(cr);
    Draw(canvas, doc, layout);
  }
  cairo_destroy(cr);
  cairo_surface_flush(surface);
  std::string bytes;
  const cairo_status_t status = cairo_surface_write_to_png_stream(surface, AppendToString, &bytes);
  if (status != CAIRO_STATUS_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("cannot encode the PNG: ", cairo_status_to_string(status)));
  }
  return bytes;
}

// Writes `bytes` to a temporary file next to `path` and renames it into place, so `path`
// is never left half-written (a viewer or a crash sees the old file or the new one).
absl::Status WriteBytes(const std::string& path, const std::string& bytes) {
  const std::string tmp = absl::StrCat(path, ".tmp-", ::getpid());
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write plot to ", path, ": ", std::strerror(errno)));
  }
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    const int error = errno;
    std::remove(tmp.c_str());
    return absl::DataLossError(
        absl::StrCat("error writing plot to ", path, ": ", std::strerror(error), " (disk full?)"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(tmp.c_str());
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write plot to ", path, ": ", std::strerror(error)));
  }
  return absl::OkStatus();
}

std::string LowerExtension(const std::string& path) {
  const size_t dot = path.rfind('.');
  const size_t slash = path.rfind('/');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  return absl::AsciiStrToLower(path.substr(dot));
}

}  // namespace

FlipStrip MakeFlipStrip(std::string variant, const std::vector<StripValue>& values,
                        size_t max_rows) {
  FlipStrip strip;
  strip.variant = std::move(variant);
  std::set<uint64_t> steps;
  std::map<uint32_t, std::map<uint64_t, double>> by_example;
  double largest = 0;
  for (const StripValue& v : values) {
    steps.insert(v.step);
    if (!std::isfinite(v.value)) continue;  // drawn as missing
    by_example[v.example][v.step] = v.value;
    largest = std::max(largest, v.value);
  }
  strip.steps.assign(steps.begin(), steps.end());
  strip.total_examples = static_cast<uint32_t>(by_example.size());
  strip.full_scale = largest > 1 + 1e-9 ? 100 : 1;

  struct Row {
    uint32_t example;
    uint32_t flips;
    double mean;  // ties: the more often correct above
  };
  std::vector<Row> rows;
  for (const auto& [example, cells] : by_example) {
    uint32_t flips = 0;
    double sum = 0;
    std::optional<double> previous;
    for (const auto& [step, value] : cells) {
      if (previous && std::abs(*previous - value) > 1e-9) ++flips;
      previous = value;
      sum += value;
    }
    rows.push_back({example, flips, cells.empty() ? 0 : sum / cells.size()});
  }
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return a.flips != b.flips ? a.flips > b.flips : a.mean > b.mean;
  });
  if (rows.size() > max_rows) rows.resize(max_rows);
  for (const Row& row : rows) {
    strip.examples.push_back(row.example);
    strip.flips.push_back(row.flips);
    std::vector<std::optional<double>> cells;
    const auto& known = by_example[row.example];
    for (uint64_t step : strip.steps) {
      auto it = known.find(step);
      cells.push_back(it == known.end() || !std::isfinite(it->second)
                          ? std::nullopt
                          : std::optional<double>(it->second));
    }
    strip.cells.push_back(std::move(cells));
  }
  return strip;
}

PlotLayout ComputePlotLayout(const PlotDocument& doc) {
  PlotLayout layout;
  layout.width = kWidth;
  const double legend = LegendWidth(doc);
  const double area_x = kMarginLeft;
  const double area_w = kWidth - kMarginLeft - kLegendGap - legend - kMarginRight;
  double y = kTitleHeight;
  for (const TaskPanel& panel : doc.panels) {
    PanelLayout p;
    if (doc.panels.size() > 1) {
      p.header = {area_x - 60, y, area_w + 60, kPanelHeaderHeight};
      y += kPanelHeaderHeight;
    }
    p.score_area = {area_x, y, area_w, kScoreHeight};

    const std::vector<uint64_t> steps = PanelSteps(panel);
    if (steps.empty()) {
      p.step_min = 0;
      p.step_max = 1;
    } else {
      p.step_min = ColumnSpan(steps, 0).first;
      p.step_max = ColumnSpan(steps, steps.size() - 1).second;
    }
    double spacing = 1;
    for (double t : NiceTicks(p.step_min, p.step_max, 8, &spacing)) {
      if (t >= p.step_min && t <= p.step_max) p.step_ticks.push_back(t);
    }

    double lo = INFINITY, hi = -INFINITY;
    for (const PlotSeries& s : panel.series) {
      for (const auto& pt : s.points) {
        if (!std::isfinite(pt.second)) continue;
        lo = std::min(lo, pt.second);
        hi = std::max(hi, pt.second);
      }
    }
    if (!std::isfinite(lo)) lo = 0, hi = 1;
    if (hi - lo < 1e-9) lo -= 0.05, hi += 0.05;
    const double pad = (hi - lo) * 0.08;
    p.score_min = lo - pad;
    p.score_max = hi + pad;
    p.score_ticks = NiceTicks(p.score_min, p.score_max, 6, &spacing);
    y += kScoreHeight + kAxisBelow;

    if (panel.strip && !panel.strip->examples.empty()) {
      y += kCaptionHeight;
      const size_t rows = panel.strip->examples.size();
      p.row_height = std::clamp(std::floor(kStripTargetHeight / rows * 2) / 2, 3.0, 14.0);
      p.strip_area = {area_x, y, area_w, p.row_height * rows};
      y += p.strip_area.h + kAxisBelow - 18;
    } else if (!panel.strip_note.empty()) {
      y += kCaptionHeight;
    }
    y += kPanelGap;
    layout.panels.push_back(std::move(p));
  }
  layout.height = y - kPanelGap + kBottomMargin + 10;
  return layout;
}

double StepToX(const PanelLayout& p, double step) {
  const double span = p.step_max - p.step_min;
  return p.score_area.x + (step - p.step_min) / (span > 0 ? span : 1) * p.score_area.w;
}

double ScoreToY(const PanelLayout& p, double score) {
  const double span = p.score_max - p.score_min;
  return p.score_area.y + p.score_area.h -
         (score - p.score_min) / (span > 0 ? span : 1) * p.score_area.h;
}

PlotRect StripCellRect(const PanelLayout& p, const FlipStrip& strip, size_t row, size_t column) {
  auto [left, right] = ColumnSpan(strip.steps, column);
  const double x0 = std::max(StepToX(p, left), p.strip_area.x);
  const double x1 = std::min(StepToX(p, right), p.strip_area.x + p.strip_area.w);
  return {x0, p.strip_area.y + static_cast<double>(row) * p.row_height, x1 - x0, p.row_height};
}

bool IsPlotPath(const std::string& path) {
  const std::string ext = LowerExtension(path);
  return ext == ".svg" || ext == ".png";
}

absl::Status RenderPlot(const PlotDocument& doc, const std::string& path,
                        const PlotRenderOptions& options) {
  const std::string ext = LowerExtension(path);
  if (ext != ".svg" && ext != ".png") {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot plot to ", path, ": the file name must end in .svg or .png"));
  }
  size_t points = 0;
  for (const TaskPanel& p : doc.panels) {
    for (const PlotSeries& s : p.series) points += s.points.size();
  }
  if (points == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("nothing to plot to ", path, ": the document has no score points"));
  }
  const PlotLayout layout = ComputePlotLayout(doc);
  std::string bytes;
  if (ext == ".svg") {
    SvgCanvas canvas(layout.width, layout.height, doc.title);
    Draw(canvas, doc, layout);
    bytes = canvas.Finish();
  } else {
    ASSIGN_OR_RETURN(bytes, RenderPng(doc, layout, options.png_scale));
  }
  return WriteBytes(path, bytes);
}

// ---- Fetching ----

namespace {

std::string RangeLabel(const v1::GetStabilityRequest& range) {
  switch (range.range_case()) {
    case v1::GetStabilityRequest::kLastPoints:
      return absl::StrCat("stability range (last ", range.last_points(), " raw points)");
    case v1::GetStabilityRequest::kLastFraction:
      return absl::StrCat("stability range (last ", range.last_fraction() * 100,
                          "% of raw points)");
    case v1::GetStabilityRequest::kSteps:
      return absl::StrCat("stability range (steps ", range.steps().from_step(), "-",
                          range.steps().to_step(), ")");
    default:
      return "stability range (last 20% of raw points)";
  }
}

bool IsCorpusMetric(const std::string& metric) {
  const GenerationMetric* m = FindGenerationMetric(metric);
  return m != nullptr && !m->per_example();
}

}  // namespace

absl::StatusOr<PlotDocument> FetchPlotDocument(const PlotRequest& request,
                                               v1::EvalService::StubInterface* stub) {
  v1::GetRunResponse run;
  {
    grpc::ClientContext ctx;
    SetDeadline(request.timeout_s, ctx);
    v1::GetRunRequest req;
    req.set_name(request.run);
    RETURN_IF_ERROR(ToAbsl(stub->GetRun(&ctx, req, &run)));
  }
  std::vector<std::string> run_tasks;
  for (const v1::TaskRef& t : run.run().config().tasks()) run_tasks.push_back(t.name());
  std::vector<std::string> tasks = run_tasks;
  if (!request.task.empty()) {
    if (std::find(run_tasks.begin(), run_tasks.end(), request.task) == run_tasks.end()) {
      return absl::NotFoundError(absl::StrCat("run ", request.run, " has no task '", request.task,
                                              "' (its tasks: ", absl::StrJoin(run_tasks, ", "),
                                              ")"));
    }
    tasks = {request.task};
  }

  std::vector<v1::Score> scores;
  {
    grpc::ClientContext ctx;
    SetDeadline(request.timeout_s, ctx);
    v1::GetScoresRequest req;
    req.set_run(request.run);
    req.set_task(request.task);
    RETURN_IF_ERROR(ReadAll(stub->GetScores(&ctx, req).get(), scores));
  }
  // task -> variant -> step -> score; the metric per task.
  std::map<std::string, std::map<std::string, std::map<uint64_t, double>>> by_task;
  std::map<std::string, std::string> metric_of;
  std::set<std::string> scored_variants;
  for (const v1::Score& s : scores) {
    if (std::find(tasks.begin(), tasks.end(), s.task()) == tasks.end()) continue;
    by_task[s.task()][VariantNameOf(s)][s.step()] = s.score();
    metric_of[s.task()] = s.metric();
    scored_variants.insert(VariantNameOf(s));
  }
  if (by_task.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("run ", request.run, " has no scores yet",
                     request.task.empty() ? "" : absl::StrCat(" for task ", request.task),
                     ": no checkpoint has been evaluated (see 'steadyeval checkpoints ",
                     request.run, "'); plot again once one has"));
  }

  std::set<std::string> known = scored_variants;
  known.insert("raw");
  for (uint32_t n : run.run().config().average_windows()) {
    known.insert(ToString(Variant::Average(n)));
  }
  for (uint32_t n : run.run().config().ensemble_windows()) {
    known.insert(ToString(Variant::Ensemble(n)));
  }
  std::vector<std::string> variants;
  if (request.variants.empty()) {
    variants.push_back("raw");
    for (const std::string& v : scored_variants) {
      if (v != "raw") variants.push_back(v);
    }
  } else {
    for (const std::string& v : request.variants) {
      if (!known.count(v) && !scored_variants.count(v)) {
        std::vector<std::string> sorted(known.begin(), known.end());
        std::sort(sorted.begin(), sorted.end(), VariantLess);
        return absl::NotFoundError(absl::StrCat("run ", request.run, " has no variant '", v,
                                                "' (its variants: ", absl::StrJoin(sorted, ", "),
                                                ")"));
      }
      if (std::find(variants.begin(), variants.end(), v) == variants.end()) variants.push_back(v);
    }
  }
  std::stable_sort(variants.begin(), variants.end(), VariantLess);

  PlotDocument doc;
  for (const std::string& task : tasks) {
    auto scored = by_task.find(task);
    if (scored == by_task.end()) continue;  // not evaluated yet
    TaskPanel panel;
    panel.task = task;
    panel.metric = metric_of[task];
    for (const std::string& v : variants) {
      auto it = scored->second.find(v);
      if (it == scored->second.end()) continue;
      PlotSeries series{v, {it->second.begin(), it->second.end()}};
      panel.series.push_back(std::move(series));
    }
    if (panel.series.empty()) continue;

    {
      v1::GetStabilityRequest req = request.range;
      req.set_run(request.run);
      req.set_task(task);
      grpc::ClientContext ctx;
      SetDeadline(request.timeout_s, ctx);
      v1::GetStabilityResponse resp;
      RETURN_IF_ERROR(ToAbsl(stub->GetStability(&ctx, req, &resp)));
      if (resp.has_range()) {
        panel.shaded = StepSpan{resp.range().from_step(), resp.range().to_step()};
        panel.shaded_label = RangeLabel(request.range);
      }
    }

    if (IsCorpusMetric(panel.metric)) {
      panel.strip_note =
          absl::StrCat("no per-example strip: ", panel.metric, " is a corpus-level metric");
    } else {
      v1::ExportPredictionsRequest req;
      req.set_run(request.run);
      req.set_task(task);
      SetVariantFilter(req, "raw");
      grpc::ClientContext ctx;  // no deadline: a stream as long as the predictions
      std::vector<v1::ExportedPrediction> predictions;
      RETURN_IF_ERROR(ReadAll(stub->ExportPredictions(&ctx, req).get(), predictions));
      std::vector<StripValue> values;
      values.reserve(predictions.size());
      for (const v1::ExportedPrediction& p : predictions) {
        if (p.task() != task || VariantNameOf(p) != "raw") continue;
        values.push_back({p.example(), p.step(), p.score()});
      }
      if (values.empty()) {
        panel.strip_note = "no per-example predictions stored for the raw variant";
      } else {
        panel.strip = MakeFlipStrip("raw", values);
      }
    }
    doc.panels.push_back(std::move(panel));
  }
  if (doc.panels.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("run ", request.run, " has no scores yet for variants ",
                     absl::StrJoin(variants, ", "), "; plot again once they are evaluated"));
  }
  doc.title = doc.panels.size() == 1
                  ? absl::StrCat("run ", request.run, " \xE2\x80\x94 ", doc.panels[0].task)
                  : absl::StrCat("run ", request.run);
  return doc;
}

absl::Status PlotCommand(const Invocation& inv, v1::EvalService::StubInterface* stub,
                         std::ostream& out, std::ostream& err) {
  PlotRequest request;
  request.run = inv.args.at(0);
  request.out = inv.Flag("out");
  request.task = inv.Flag("task");
  request.timeout_s = inv.timeout_s;
  if (!IsPlotPath(request.out)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad --out '", request.out, "': the file name must end in .svg or .png"));
  }
  if (inv.HasFlag("variants")) {
    for (const std::string& value : inv.flags.at("variants")) {
      for (absl::string_view v : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
        request.variants.emplace_back(absl::StripAsciiWhitespace(v));
      }
    }
  }
  RETURN_IF_ERROR(SetStabilityRange(inv, request.range));
  ASSIGN_OR_RETURN(PlotDocument doc, FetchPlotDocument(request, stub));
  RETURN_IF_ERROR(RenderPlot(doc, request.out));

  std::set<std::string> variants;
  std::set<uint64_t> steps;
  for (const TaskPanel& p : doc.panels) {
    for (const PlotSeries& s : p.series) {
      variants.insert(s.variant);
      for (const auto& pt : s.points) steps.insert(pt.first);
    }
  }
  if (inv.json) {
    nlohmann::json j = {{"out", request.out},
                        {"panels", doc.panels.size()},
                        {"variants", std::vector<std::string>(variants.begin(), variants.end())},
                        {"steps", steps.size()}};
    out << j.dump(2) << "\n";
  }
  err << "wrote " << request.out << " (" << doc.panels.size()
      << (doc.panels.size() == 1 ? " panel, " : " panels, ") << variants.size()
      << (variants.size() == 1 ? " variant, " : " variants, ") << steps.size()
      << (steps.size() == 1 ? " step)" : " steps)") << "\n";
  return absl::OkStatus();
}

}  // namespace steadyeval::client
