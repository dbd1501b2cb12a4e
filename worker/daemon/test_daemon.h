// Test-only helpers for driving WorkerDaemon against a mocked coordinator stub
// (steadyeval/v1/worker_service_mock.grpc.pb.h, which has no include guard: the test
// includes it, not this header), and for reading its metrics. No libtorch: daemon_test.cc
// uses it too.
#ifndef STEADYEVAL_WORKER_DAEMON_TEST_DAEMON_H_
#define STEADYEVAL_WORKER_DAEMON_TEST_DAEMON_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/test/mock_stream.h>
#include <prometheus/metric_family.h>

#include "gmock/gmock.h"
#include "steadyeval/v1/worker_service.grpc.pb.h"

namespace steadyeval {
namespace testing_daemon {

// A ReportResults client stream for a mocked ReportResultsRaw to return (the stub takes
// ownership): appends every message written to `*reports` (which must outlive it) and
// expects WritesDone and Finish once each, both succeeding.
inline grpc::testing::MockClientWriter<v1::ReportResultsRequest>* RecordingReportWriter(
    std::vector<v1::ReportResultsRequest>* reports) {
  using ::testing::_;
  auto* writer = new grpc::testing::MockClientWriter<v1::ReportResultsRequest>();
  EXPECT_CALL(*writer, Write(_, _))
      .WillRepeatedly([reports](const v1::ReportResultsRequest& msg, grpc::WriteOptions) {
        reports->push_back(msg);
        return true;
      });
  EXPECT_CALL(*writer, WritesDone()).WillOnce(::testing::Return(true));
  EXPECT_CALL(*writer, Finish()).WillOnce(::testing::Return(grpc::Status::OK));
  return writer;
}

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

}  // namespace testing_daemon
}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_DAEMON_TEST_DAEMON_H_
