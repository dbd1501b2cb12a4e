// Reads one series out of a prometheus-cpp scrape (Registry::Collect()), for tests of the
// code that exports Prometheus metrics without going through HTTP (testing/http.h reads
// the text exposition instead).
#ifndef STEADYEVAL_TESTING_METRIC_FAMILIES_H_
#define STEADYEVAL_TESTING_METRIC_FAMILIES_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <prometheus/metric_family.h>

namespace steadyeval::testing {

// The value of the series `name` with exactly `labels` in a scrape: a counter's or gauge's
// value, or for a histogram family F, "F_count" (its sample count) and "F_sum". nullopt
// when the scrape has no such series.
inline std::optional<double> SeriesValue(const std::vector<prometheus::MetricFamily>& families,
                                         const std::string& name,
                                         const std::map<std::string, std::string>& labels) {
  for (const prometheus::MetricFamily& family : families) {
    const bool histogram = family.type == prometheus::MetricType::Histogram;
    const bool count = histogram && name == family.name + "_count";
    const bool sum = histogram && name == family.name + "_sum";
    if (name != family.name && !count && !sum) continue;
    for (const prometheus::ClientMetric& metric : family.metric) {
      std::map<std::string, std::string> have;
      for (const auto& label : metric.label) have[label.name] = label.value;
      if (have != labels) continue;
      switch (family.type) {
        case prometheus::MetricType::Counter:
          return metric.counter.value;
        case prometheus::MetricType::Gauge:
          return metric.gauge.value;
        case prometheus::MetricType::Histogram:
          if (count) return static_cast<double>(metric.histogram.sample_count);
          if (sum) return metric.histogram.sample_sum;
          return std::nullopt;
        default:
          return std::nullopt;
      }
    }
  }
  return std::nullopt;
}

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_METRIC_FAMILIES_H_
