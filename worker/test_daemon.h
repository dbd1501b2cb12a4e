// Test-only helpers for driving WorkerDaemon against a mocked coordinator stub
// (steadyeval/v1/worker_service_mock.grpc.pb.h, which has no include guard: the test
// includes it, not this header). No libtorch: daemon_test.cc uses it too.
#ifndef STEADYEVAL_WORKER_TEST_DAEMON_H_
#define STEADYEVAL_WORKER_TEST_DAEMON_H_

#include <vector>

#include <grpcpp/test/mock_stream.h>

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

}  // namespace testing_daemon
}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_TEST_DAEMON_H_
