// Tests of `steadyeval plot`: the strip model, the SVG and PNG output (file structure, text,
// pixel colours at the layout's coordinates), the errors, and the command against the
// generated mock stub.
//
// SVG text: the SVG back end writes real <text> elements (see plot.h), so the tests look
// for the title, legend names and axis titles as `>TEXT</text>`.
#include "client/plot.h"

#include <cairo.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "testing/cli_runner.h"
#include "testing/files.h"
#include "testing/grpc_fakes.h"
#include "testing/temp_dir.h"
#include "testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace steadyeval::client {
namespace {

using ::testing::_;
using ::testing::AllOf;
using ::testing::DoAll;
using ::testing::HasSubstr;
using ::testing::Invoke;
using ::testing::Not;
using ::testing::Return;
using ::testing::SaveArg;
using ::testing::SetArgPointee;
using ::steadyeval::testing::CliResult;
using ::steadyeval::testing::FakeReader;
using ::steadyeval::testing::MockStub;
using ::steadyeval::testing::ReadFileOrEmpty;
using ::steadyeval::testing::RunWith;
using ::steadyeval::testing::StatusIs;
using ::steadyeval::testing::TempDir;

size_t Count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

// ---- A realistic document: a noisy raw curve, smoother integrated ones ----

struct SampleOptions {
  size_t steps = 40;
  uint32_t examples = 60;
  std::vector<std::string> variants = {"raw", "avg@5", "ens@5"};
  std::string task = "jsquad";
  std::string metric = "exact_match";
  bool partial = false;  // char_f1-like values in [0, 1]
  unsigned seed = 7;
};

double Clean(size_t i) { return 0.32 + 0.42 * (1 - std::exp(-static_cast<double>(i) / 11)); }

TaskPanel SamplePanel(const SampleOptions& o) {
  std::mt19937 rng(o.seed);
  std::normal_distribution<double> noise(0, 1);
  std::uniform_real_distribution<double> unit(0, 1);
  TaskPanel panel;
  panel.task = o.task;
  panel.metric = o.metric;
  std::vector<double> raw(o.steps);
  for (size_t i = 0; i < o.steps; ++i) raw[i] = Clean(i) + 0.045 * noise(rng);
  for (const std::string& v : o.variants) {
    PlotSeries s{v, {}};
    for (size_t i = 0; i < o.steps; ++i) {
      const uint64_t step = 500 * (i + 1);
      if (v == "raw") {
        s.points.emplace_back(step, raw[i]);
        continue;
      }
      const size_t window = std::stoul(v.substr(v.find('@') + 1));
      if (i + 1 < window) continue;  // a window of n needs n checkpoints
      const double bonus = absl::StartsWith(v, "avg") ? 0.025 : 0.015;
      s.points.emplace_back(step, Clean(i) + bonus + 0.012 * noise(rng));
    }
    panel.series.push_back(std::move(s));
  }
  const size_t m = o.steps;
  const size_t k = std::max<size_t>(2, static_cast<size_t>(std::ceil(0.2 * m)));
  panel.shaded = StepSpan{500 * (m - k + 1), 500 * m};
  panel.shaded_label = "stability range (last 20% of raw points)";

  std::vector<StripValue> values;
  for (uint32_t e = 0; e < o.examples; ++e) {
    const double difficulty = unit(rng) * 0.9 + 0.05;
    for (size_t i = 0; i < o.steps; ++i) {
      const double margin = Clean(i) - difficulty + 0.12 * noise(rng);
      double value = margin > 0 ? 1 : 0;
      if (o.partial && std::abs(margin) < 0.1) value = 0.5 + margin * 4;
      values.push_back({e, 500 * (i + 1), value});
    }
  }
  panel.strip = MakeFlipStrip("raw", values);
  return panel;
}

PlotDocument SampleDocument(const SampleOptions& o = {}) {
  PlotDocument doc;
  doc.title = "run demo \xE2\x80\x94 " + o.task;
  doc.panels.push_back(SamplePanel(o));
  return doc;
}

// ---- MakeFlipStrip ----

TEST(MakeFlipStripTest, SortsByFlipsCapsAndMarksMissing) {
  std::vector<StripValue> values = {
      {0, 100, 0}, {0, 200, 0},   {0, 300, 0},  // 0 flips, never correct
      {1, 100, 0}, {1, 200, 1},   {1, 300, 0},  // 2 flips
      {2, 100, 1}, {2, 300, 0},                 // 1 flip, missing at 200
      {3, 100, 1}, {3, 200, 1},   {3, 300, 1},  // 0 flips, always correct
      {4, 100, 0}, {4, 200, NAN}, {4, 300, 0},  // 0 flips, NaN drawn as missing
  };
  FlipStrip strip = MakeFlipStrip("raw", values, 3);
  EXPECT_EQ(strip.steps, (std::vector<uint64_t>{100, 200, 300}));
  // Most flips first; among equal flips the more often correct first.
  EXPECT_EQ(strip.examples, (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_EQ(strip.flips, (std::vector<uint32_t>{2, 1, 0}));
  EXPECT_EQ(strip.total_examples, 5u);
  EXPECT_FALSE(MakeFlipStrip("raw", values).cells[4][1].has_value());
  ASSERT_EQ(strip.cells.size(), 3u);
  EXPECT_EQ(strip.cells[1][0], 1.0);
  EXPECT_FALSE(strip.cells[1][1].has_value());
  EXPECT_EQ(strip.cells[1][2], 0.0);
  EXPECT_EQ(strip.full_scale, 1);
  EXPECT_EQ(MakeFlipStrip("raw", {{0, 1, 55.5}, {0, 2, 0}}).full_scale, 100);
}

// ---- SVG ----

TEST(RenderPlotTest, SvgIsWellFormedWithTextLegendAndAxes) {
  TempDir dir;
  const std::string path = dir / "plot.svg";
  ASSERT_OK(RenderPlot(SampleDocument(), path));
  const std::string svg = ReadFileOrEmpty(path);
  EXPECT_TRUE(absl::StartsWith(svg, "<?xml")) << svg.substr(0, 80);
  EXPECT_THAT(svg, HasSubstr("<svg xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_TRUE(absl::EndsWith(svg, "</svg>\n"));
  EXPECT_EQ(Count(svg, "<svg"), 1u);
  EXPECT_EQ(Count(svg, "<text"), Count(svg, "</text>"));
  EXPECT_THAT(svg, HasSubstr(">run demo \xE2\x80\x94 jsquad</text>"));
  for (const char* legend :
       {">raw</text>", ">avg@5</text>", ">ens@5</text>", ">step</text>", ">exact_match</text>",
        ">stability range</text>", ">(last 20% of raw points)</text>", ">correct</text>",
        ">incorrect</text>"}) {
    EXPECT_THAT(svg, HasSubstr(legend));
  }
  EXPECT_THAT(svg, HasSubstr("per-example correctness, raw: all 60 examples"));
  EXPECT_GT(svg.size(), 5000u);
  // Colours of the shade and the strip appear as fills.
  EXPECT_THAT(svg, HasSubstr("fill=\"#FEF3D7\""));
  EXPECT_THAT(svg, HasSubstr("fill=\"#2E9E55\""));
  EXPECT_THAT(svg, HasSubstr("fill=\"#DB4240\""));
}

TEST(RenderPlotTest, SvgGrowsWithSeriesAndEscapesText) {
  TempDir dir;
  SampleOptions one;
  one.variants = {"raw"};
  SampleOptions three;
  PlotDocument doc1 = SampleDocument(one), doc3 = SampleDocument(three);
  doc3.title = "run a<b & \"c\"";
  ASSERT_OK(RenderPlot(doc1, dir / "one.svg"));
  ASSERT_OK(RenderPlot(doc3, dir / "three.svg"));
  const std::string svg1 = ReadFileOrEmpty(dir / "one.svg");
  const std::string svg3 = ReadFileOrEmpty(dir / "three.svg");
  // Each series adds its line and its legend sample.
  EXPECT_EQ(Count(svg3, "<polyline") - Count(svg1, "<polyline"), 4u);
  EXPECT_THAT(svg3, HasSubstr(">run a&lt;b &amp; &quot;c&quot;</text>"));
  EXPECT_THAT(svg1, Not(HasSubstr(">avg@5</text>")));
}

TEST(RenderPlotTest, MultiplePanelsStackWithHeaders) {
  TempDir dir;
  SampleOptions a, b;
  b.task = "jnli";
  b.metric = "char_f1";
  b.partial = true;
  b.examples = 150;  // capped at 60 rows
  PlotDocument doc;
  doc.title = "run demo";
  doc.panels = {SamplePanel(a), SamplePanel(b)};
  PlotLayout layout = ComputePlotLayout(doc);
  ASSERT_EQ(layout.panels.size(), 2u);
  EXPECT_GT(layout.panels[1].score_area.y,
            layout.panels[0].strip_area.y + layout.panels[0].strip_area.h);
  EXPECT_LE(layout.panels[1].strip_area.y + layout.panels[1].strip_area.h, layout.height);
  ASSERT_OK(RenderPlot(doc, dir / "two.svg"));
  const std::string svg = ReadFileOrEmpty(dir / "two.svg");
  EXPECT_THAT(svg, HasSubstr(">jsquad</text>"));
  EXPECT_THAT(svg, HasSubstr(">jnli</text>"));
  EXPECT_THAT(svg, HasSubstr(">char_f1</text>"));
  EXPECT_THAT(svg, HasSubstr("the 60 of 150 examples that flip most"));
  EXPECT_THAT(svg, HasSubstr(">partial</text>"));
}

TEST(RenderPlotTest, SinglePointWithoutStripShowsTheNote) {
  TempDir dir;
  PlotDocument doc;
  doc.title = "run tiny \xE2\x80\x94 stsb";
  TaskPanel panel;
  panel.task = "stsb";
  panel.metric = "pearson";
  panel.series = {{"raw", {{1000, 0.42}}}};
  panel.strip_note = "no per-example strip: pearson is a corpus-level metric";
  doc.panels = {panel};
  const PlotLayout layout = ComputePlotLayout(doc);
  EXPECT_EQ(layout.panels[0].strip_area.h, 0);
  const double x = StepToX(layout.panels[0], 1000);
  EXPECT_NEAR(x, layout.panels[0].score_area.x + layout.panels[0].score_area.w / 2, 0.01);
  ASSERT_OK(RenderPlot(doc, dir / "tiny.svg"));
  ASSERT_OK(RenderPlot(doc, dir / "tiny.png"));
  const std::string svg = ReadFileOrEmpty(dir / "tiny.svg");
  EXPECT_THAT(svg, HasSubstr(">no per-example strip: pearson is a corpus-level metric</text>"));
  EXPECT_EQ(Count(svg, "<circle"), 2u);  // the point and the legend marker
}

TEST(RenderPlotTest, ManyStepsStayCompact) {
  TempDir dir;
  SampleOptions o;
  o.steps = 2000;
  PlotDocument doc = SampleDocument(o);
  std::vector<StripValue> values;
  for (uint32_t e = 0; e < 60; ++e) {
    for (uint64_t i = 1; i <= 2000; ++i) values.push_back({e, 500 * i, i > 1000 ? 1.0 : 0.0});
  }
  doc.panels[0].strip = MakeFlipStrip("raw", values);
  ASSERT_OK(RenderPlot(doc, dir / "many.svg"));
  const std::string svg = ReadFileOrEmpty(dir / "many.svg");
  // 60 rows of two runs each (not 120000 cells); no markers on 2000 raw points.
  EXPECT_LT(Count(svg, "<rect"), 200u);
  EXPECT_EQ(Count(svg, "<circle"), 1u);  // the legend's raw marker
  EXPECT_LT(svg.size(), 400000u);
}

// ---- PNG ----

uint32_t BigEndian32(const std::string& s, size_t at) {
  return (static_cast<uint32_t>(static_cast<unsigned char>(s[at])) << 24) |
         (static_cast<uint32_t>(static_cast<unsigned char>(s[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<unsigned char>(s[at + 2])) << 8) |
         static_cast<uint32_t>(static_cast<unsigned char>(s[at + 3]));
}

class Png {
 public:
  explicit Png(const std::string& path)
      : surface_(cairo_image_surface_create_from_png(path.c_str())) {}
  ~Png() { cairo_surface_destroy(surface_); }
  bool ok() const { return cairo_surface_status(surface_) == CAIRO_STATUS_SUCCESS; }
  int width() const { return cairo_image_surface_get_width(surface_); }
  int height() const { return cairo_image_surface_get_height(surface_); }
  // The pixel at layout coordinates (x, y) as 0..255 RGB.
  std::array<int, 3> At(double x, double y, double scale) const {
    cairo_surface_flush(surface_);
    const int px = static_cast<int>(x * scale), py = static_cast<int>(y * scale);
    const unsigned char* row =
        cairo_image_surface_get_data(surface_) + py * cairo_image_surface_get_stride(surface_);
    const uint32_t argb = reinterpret_cast<const uint32_t*>(row)[px];
    return {static_cast<int>((argb >> 16) & 0xFF), static_cast<int>((argb >> 8) & 0xFF),
            static_cast<int>(argb & 0xFF)};
  }

 private:
  cairo_surface_t* surface_;
};

bool Near(const std::array<int, 3>& px, PlotColor want) {
  const int r = static_cast<int>(std::lround(want.r * 255));
  const int g = static_cast<int>(std::lround(want.g * 255));
  const int b = static_cast<int>(std::lround(want.b * 255));
  return std::abs(px[0] - r) <= 3 && std::abs(px[1] - g) <= 3 && std::abs(px[2] - b) <= 3;
}

std::string Describe(const std::array<int, 3>& px) {
  return absl::StrCat("rgb(", px[0], ",", px[1], ",", px[2], ")");
}

TEST(RenderPlotTest, PngHeaderSizeAndPixels) {
  TempDir dir;
  PlotDocument doc = SampleDocument();
  // Known rows: example 1000 always correct, 1001 always incorrect (0 flips: the bottom rows).
  FlipStrip& strip = *doc.panels[0].strip;
  std::vector<StripValue> values;
  for (size_t row = 0; row < strip.examples.size(); ++row) {
    for (size_t col = 0; col < strip.steps.size(); ++col) {
      values.push_back({strip.examples[row], strip.steps[col], *strip.cells[row][col]});
    }
  }
  for (uint64_t step : strip.steps) {
    values.push_back({1000, step, 1});
    values.push_back({1001, step, 0});
  }
  strip = MakeFlipStrip("raw", values, 100);
  const size_t correct_row =
      std::find(strip.examples.begin(), strip.examples.end(), 1000u) - strip.examples.begin();
  const size_t incorrect_row =
      std::find(strip.examples.begin(), strip.examples.end(), 1001u) - strip.examples.begin();
  ASSERT_LT(correct_row, strip.examples.size());
  ASSERT_LT(incorrect_row, strip.examples.size());

  const std::string path = dir / "plot.png";
  PlotRenderOptions options;
  options.png_scale = 2;
  ASSERT_OK(RenderPlot(doc, path, options));
  const std::string bytes = ReadFileOrEmpty(path);
  ASSERT_GT(bytes.size(), 20000u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(bytes.substr(12, 4), "IHDR");
  const PlotLayout layout = ComputePlotLayout(doc);
  EXPECT_EQ(BigEndian32(bytes, 16), static_cast<uint32_t>(std::ceil(layout.width * 2)));
  EXPECT_EQ(BigEndian32(bytes, 20), static_cast<uint32_t>(std::ceil(layout.height * 2)));

  Png png(path);
  ASSERT_TRUE(png.ok());
  ASSERT_EQ(png.width(), static_cast<int>(std::ceil(layout.width * 2)));
  const PanelLayout& p = layout.panels[0];

  // The shaded range, near the bottom of the chart (below every score), away from the
  // band's edges: mostly the shade colour (grid lines may cross a sample).
  const StepSpan& span = *doc.panels[0].shaded;
  const double x0 = StepToX(p, static_cast<double>(span.from_step));
  const double x1 = StepToX(p, static_cast<double>(span.to_step));
  const double y = p.score_area.y + p.score_area.h - 4;
  int shaded = 0, samples = 0;
  for (double x = x0 + 3; x < x1 - 3; x += 2.5, ++samples) {
    if (Near(png.At(x, y, 2), kShadeColor)) ++shaded;
  }
  ASSERT_GT(samples, 20);
  EXPECT_GT(shaded, samples * 8 / 10) << shaded << " of " << samples;
  // Left of the range the chart background is white.
  EXPECT_TRUE(Near(png.At(StepToX(p, 1250), y, 2), PlotColor{1, 1, 1}))
      << Describe(png.At(StepToX(p, 1250), y, 2));

  for (size_t col : {size_t{0}, strip.steps.size() / 2, strip.steps.size() - 1}) {
    const PlotRect good = StripCellRect(p, strip, correct_row, col);
    const PlotRect bad = StripCellRect(p, strip, incorrect_row, col);
    const auto g = png.At(good.x + good.w / 2, good.y + good.h / 2, 2);
    const auto b = png.At(bad.x + bad.w / 2, bad.y + bad.h / 2, 2);
    EXPECT_TRUE(Near(g, kCorrectColor)) << "column " << col << ": " << Describe(g);
    EXPECT_TRUE(Near(b, kIncorrectColor)) << "column " << col << ": " << Describe(b);
  }
  // Columns line up with the chart: a step's cell is centred on its x.
  const PlotRect cell = StripCellRect(p, strip, 0, 10);
  EXPECT_NEAR(cell.x + cell.w / 2, StepToX(p, static_cast<double>(strip.steps[10])), 0.01);
}

TEST(RenderPlotTest, PngShowsMissingCellsGrey) {
  TempDir dir;
  PlotDocument doc = SampleDocument();
  doc.panels[0].strip =
      MakeFlipStrip("raw", {{0, 500, 1}, {0, 1000, 0}, {0, 1500, 1}, {1, 500, 1}, {1, 1500, 1}});
  const std::string path = dir / "missing.png";
  ASSERT_OK(RenderPlot(doc, path, PlotRenderOptions{1}));
  Png png(path);
  ASSERT_TRUE(png.ok());
  const PlotLayout layout = ComputePlotLayout(doc);
  const FlipStrip& strip = *doc.panels[0].strip;
  ASSERT_EQ(strip.examples[1], 1u);
  const PlotRect missing = StripCellRect(layout.panels[0], strip, 1, 1);
  EXPECT_TRUE(Near(png.At(missing.x + missing.w / 2, missing.y + missing.h / 2, 1), kMissingColor));
}

// ---- Errors ----

TEST(RenderPlotTest, BadExtensionNamesPathAndFormats) {
  TempDir dir;
  const std::string path = dir / "plot.jpg";
  EXPECT_THAT(RenderPlot(SampleDocument(), path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(path), HasSubstr(".svg"), HasSubstr(".png"))));
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_THAT(RenderPlot(SampleDocument(), dir / "noextension"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("noextension")));
  EXPECT_TRUE(IsPlotPath("a/B.PNG"));
  EXPECT_FALSE(IsPlotPath("a.svg/b"));
}

TEST(RenderPlotTest, UnwritablePathIsNamed) {
  TempDir dir;
  for (const char* name : {"no/such/dir/plot.svg", "no/such/dir/plot.png"}) {
    const std::string path = dir / name;
    absl::Status status = RenderPlot(SampleDocument(), path);
    EXPECT_FALSE(status.ok());
    EXPECT_THAT(status.message(), HasSubstr(path));
  }
}

TEST(RenderPlotTest, EmptyDocumentIsRejected) {
  TempDir dir;
  PlotDocument doc;
  doc.title = "run x";
  EXPECT_THAT(RenderPlot(doc, dir / "x.svg"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no score points")));
}

// Renders the realistic samples into $STEADYEVAL_PLOT_SAMPLE_DIR (when set) for docs/;
// otherwise into a temp dir, as a smoke test of both formats.
TEST(RenderPlotTest, RealisticSamples) {
  TempDir dir;
  const char* env = std::getenv("STEADYEVAL_PLOT_SAMPLE_DIR");
  const std::string out = env != nullptr ? std::string(env) : dir / "";
  ASSERT_OK(RenderPlot(SampleDocument(), out + "/plot-sample.png"));
  ASSERT_OK(RenderPlot(SampleDocument(), out + "/plot-sample.svg"));
  SampleOptions a, b;
  a.examples = 200;
  b.task = "jnli";
  b.metric = "char_f1";
  b.partial = true;
  b.variants = {"raw", "avg@3", "avg@10", "ens@5"};
  b.seed = 11;
  PlotDocument doc;
  doc.title = "run demo";
  doc.panels = {SamplePanel(a), SamplePanel(b)};
  ASSERT_OK(RenderPlot(doc, out + "/plot-sample-multi.png"));
}

// ---- The command, against the generated mock ----

v1::GetRunResponse DemoRun() {
  v1::GetRunResponse resp;
  v1::RunConfig* config = resp.mutable_run()->mutable_config();
  config->set_name("demo");
  config->add_tasks()->set_name("arith_mc");
  config->add_tasks()->set_name("qa_gen");
  config->add_average_windows(2);
  config->add_ensemble_windows(3);
  return resp;
}

std::vector<v1::Score> DemoScores() {
  std::vector<v1::Score> scores;
  for (uint64_t step = 100; step <= 1000; step += 100) {
    for (const char* task : {"arith_mc", "qa_gen"}) {
      for (const char* variant : {"raw", "avg@2"}) {
        if (std::string(variant) == "avg@2" && step == 100) continue;
        v1::Score s;
        s.set_run("demo");
        s.set_task(task);
        s.set_variant(variant);
        s.set_step(step);
        s.set_metric(std::string(task) == "arith_mc" ? "acc" : "exact_match");
        s.set_score(0.4 + 0.03 * static_cast<double>(step / 100) +
                    (std::string(variant) == "raw" ? 0.02 * ((step / 100) % 2) : 0));
        scores.push_back(s);
      }
    }
  }
  return scores;
}

std::vector<v1::ExportedPrediction> DemoPredictions(const std::string& task) {
  std::vector<v1::ExportedPrediction> out;
  for (uint64_t step = 100; step <= 1000; step += 100) {
    for (uint32_t e = 0; e < 8; ++e) {
      v1::ExportedPrediction p;
      p.set_step(step);
      p.set_task(task);
      p.set_variant("raw");
      p.set_example(e);
      p.set_score((e + step / 100) % 3 == 0 ? 0 : 1);
      out.push_back(p);
    }
  }
  return out;
}

void ExpectDemoCalls(MockStub& stub, std::vector<v1::GetStabilityRequest>* stability_sent,
                     std::vector<v1::ExportPredictionsRequest>* export_sent) {
  EXPECT_CALL(stub, GetRun(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(DemoRun()), Return(grpc::Status::OK)));
  EXPECT_CALL(stub, GetScoresRaw(_, _)).WillOnce(Invoke([](auto*, const auto&) {
    return new FakeReader<v1::Score>(DemoScores(), grpc::Status::OK);
  }));
  EXPECT_CALL(stub, GetStability(_, _, _))
      .WillRepeatedly(Invoke([stability_sent](auto*, const v1::GetStabilityRequest& req,
                                              v1::GetStabilityResponse* resp) {
        stability_sent->push_back(req);
        resp->mutable_range()->set_from_step(900);
        resp->mutable_range()->set_to_step(1000);
        return grpc::Status::OK;
      }));
  EXPECT_CALL(stub, ExportPredictionsRaw(_, _))
      .WillRepeatedly(Invoke([export_sent](auto*, const v1::ExportPredictionsRequest& req) {
        export_sent->push_back(req);
        return new FakeReader<v1::ExportedPrediction>(DemoPredictions(req.task()),
                                                      grpc::Status::OK);
      }));
}

TEST(PlotCommandTest, WritesOnePanelPerTask) {
  TempDir dir;
  const std::string path = dir / "demo.svg";
  auto stub = std::make_unique<MockStub>();
  std::vector<v1::GetStabilityRequest> stability_sent;
  std::vector<v1::ExportPredictionsRequest> export_sent;
  ExpectDemoCalls(*stub, &stability_sent, &export_sent);
  CliResult r = RunWith({"plot", "demo", "--out", path}, std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.err, absl::StrCat("wrote ", path, " (2 panels, 2 variants, 10 steps)\n"));
  ASSERT_EQ(stability_sent.size(), 2u);
  EXPECT_EQ(stability_sent[0].task(), "arith_mc");
  EXPECT_EQ(stability_sent[1].task(), "qa_gen");
  EXPECT_EQ(stability_sent[0].range_case(), v1::GetStabilityRequest::RANGE_NOT_SET);
  ASSERT_EQ(export_sent.size(), 2u);
  EXPECT_EQ(export_sent[0].variant(), "raw");
  EXPECT_EQ(export_sent[0].run(), "demo");

  const std::string svg = ReadFileOrEmpty(path);
  EXPECT_THAT(svg, HasSubstr(">run demo</text>"));
  EXPECT_THAT(svg, HasSubstr(">arith_mc</text>"));
  EXPECT_THAT(svg, HasSubstr(">qa_gen</text>"));
  EXPECT_THAT(svg, HasSubstr(">acc</text>"));
  EXPECT_THAT(svg, HasSubstr(">exact_match</text>"));
  EXPECT_EQ(Count(svg, ">avg@2</text>"), 2u);  // one legend per panel
  EXPECT_EQ(Count(svg, "per-example correctness, raw: all 8 examples"), 2u);
  EXPECT_EQ(Count(svg, ">(last 20% of raw points)</text>"), 2u);
}

TEST(PlotCommandTest, OneTaskSelectedVariantsAndRangeFlag) {
  TempDir dir;
  const std::string path = dir / "qa.png";
  auto stub = std::make_unique<MockStub>();
  std::vector<v1::GetStabilityRequest> stability_sent;
  std::vector<v1::ExportPredictionsRequest> export_sent;
  ExpectDemoCalls(*stub, &stability_sent, &export_sent);
  CliResult r = RunWith({"plot", "demo", "--task", "qa_gen", "--variants", "raw", "--last", "5",
                         "--out", path, "--json"},
                        std::move(stub));
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_THAT(r.out, HasSubstr("\"panels\": 1"));
  EXPECT_THAT(r.err, HasSubstr("(1 panel, 1 variant, 10 steps)"));
  ASSERT_EQ(stability_sent.size(), 1u);
  EXPECT_EQ(stability_sent[0].task(), "qa_gen");
  EXPECT_EQ(stability_sent[0].last_points(), 5u);
  const std::string png = ReadFileOrEmpty(path);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
}

TEST(PlotCommandTest, UnknownTaskIsNotFoundListingTasks) {
  TempDir dir;
  auto stub = std::make_unique<MockStub>();
  EXPECT_CALL(*stub, GetRun(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(DemoRun()), Return(grpc::Status::OK)));
  EXPECT_CALL(*stub, GetScoresRaw(_, _)).Times(0);
  CliResult r =
      RunWith({"plot", "demo", "--task", "nope", "--out", dir / "x.svg"}, std::move(stub));
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.err, "steadyeval: run demo has no task 'nope' (its tasks: arith_mc, qa_gen)\n");
  EXPECT_FALSE(std::filesystem::exists(dir / "x.svg"));

  PlotRequest request;
  request.run = "demo";
  request.task = "nope";
  auto stub2 = std::make_unique<MockStub>();
  EXPECT_CALL(*stub2, GetRun(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(DemoRun()), Return(grpc::Status::OK)));
  EXPECT_THAT(FetchPlotDocument(request, stub2.get()).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
}

TEST(PlotCommandTest, UnknownVariantIsNotFoundListingVariants) {
  auto stub = std::make_unique<MockStub>();
  EXPECT_CALL(*stub, GetRun(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(DemoRun()), Return(grpc::Status::OK)));
  EXPECT_CALL(*stub, GetScoresRaw(_, _)).WillOnce(Invoke([](auto*, const auto&) {
    return new FakeReader<v1::Score>(DemoScores(), grpc::Status::OK);
  }));
  PlotRequest request;
  request.run = "demo";
  request.out = "x.svg";
  request.variants = {"raw", "avg@7"};
  EXPECT_THAT(FetchPlotDocument(request, stub.get()).status(),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("no variant 'avg@7' (its variants: raw, avg@2, ens@3)")));
}

TEST(PlotCommandTest, CorpusLevelMetricHasNoStrip) {
  auto stub = std::make_unique<MockStub>();
  v1::GetRunResponse run;
  run.mutable_run()->mutable_config()->set_name("demo");
  run.mutable_run()->mutable_config()->add_tasks()->set_name("jsts");
  EXPECT_CALL(*stub, GetRun(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(run), Return(grpc::Status::OK)));
  EXPECT_CALL(*stub, GetScoresRaw(_, _)).WillOnce(Invoke([](auto*, const auto&) {
    std::vector<v1::Score> scores;
    for (uint64_t step : {100, 200, 300}) {
      v1::Score s;
      s.set_task("jsts");
      s.set_variant("raw");
      s.set_step(step);
      s.set_metric("pearson");
      s.set_score(0.1 * static_cast<double>(step / 100));
      scores.push_back(s);
    }
    return new FakeReader<v1::Score>(scores, grpc::Status::OK);
  }));
  EXPECT_CALL(*stub, GetStability(_, _, _)).WillOnce(Return(grpc::Status::OK));
  EXPECT_CALL(*stub, ExportPredictionsRaw(_, _)).Times(0);
  PlotRequest request;
  request.run = "demo";
  ASSERT_OK_AND_ASSIGN(PlotDocument doc, FetchPlotDocument(request, stub.get()));
  ASSERT_EQ(doc.panels.size(), 1u);
  EXPECT_EQ(doc.title, "run demo \xE2\x80\x94 jsts");
  EXPECT_FALSE(doc.panels[0].strip.has_value());
  EXPECT_FALSE(doc.panels[0].shaded.has_value());  // the response had no range
  EXPECT_THAT(doc.panels[0].strip_note, HasSubstr("pearson is a corpus-level metric"));
  ASSERT_EQ(doc.panels[0].series.size(), 1u);
  EXPECT_EQ(doc.panels[0].series[0].points.size(), 3u);
}

TEST(PlotCommandTest, NoScoresYetIsFailedPrecondition) {
  TempDir dir;
  auto stub = std::make_unique<MockStub>();
  EXPECT_CALL(*stub, GetRun(_, _, _))
      .WillOnce(DoAll(SetArgPointee<2>(DemoRun()), Return(grpc::Status::OK)));
  EXPECT_CALL(*stub, GetScoresRaw(_, _)).WillOnce(Invoke([](auto*, const auto&) {
    return new FakeReader<v1::Score>({}, grpc::Status::OK);
  }));
  CliResult r = RunWith({"plot", "demo", "--out", dir / "x.png"}, std::move(stub));
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_THAT(r.err, HasSubstr("run demo has no scores yet"));
  EXPECT_FALSE(std::filesystem::exists(dir / "x.png"));
}

TEST(PlotCommandTest, UnknownRunPassesServerNotFound) {
  TempDir dir;
  auto stub = std::make_unique<MockStub>();
  EXPECT_CALL(*stub, GetRun(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::NOT_FOUND, "no run 'ghost'")));
  CliResult r = RunWith({"plot", "ghost", "--out", dir / "x.svg"}, std::move(stub));
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.err, "steadyeval: no run 'ghost'\n");
}

TEST(PlotCommandTest, UsageErrorsAndHelp) {
  CliResult bad = RunWith({"plot", "demo", "--out", "x.jpg"}, std::make_unique<MockStub>());
  EXPECT_EQ(bad.code, kExitUsage);
  EXPECT_THAT(bad.err, HasSubstr("bad --out 'x.jpg': the file name must end in .svg or .png"));
  CliResult missing = RunWith({"plot", "demo"}, std::make_unique<MockStub>());
  EXPECT_EQ(missing.code, kExitUsage);
  EXPECT_THAT(missing.err, HasSubstr("missing --out"));
  CliResult help = RunWith({"plot", "--help"}, std::make_unique<MockStub>());
  EXPECT_EQ(help.code, kExitOk);
  EXPECT_THAT(help.out, HasSubstr("--variants V[,V...]"));
  EXPECT_THAT(help.out, HasSubstr("steadyeval plot demo --out demo.svg"));
}

}  // namespace
}  // namespace steadyeval::client
