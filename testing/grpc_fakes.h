// Client-side stream fakes for tests that drive code against a generated mock stub (the
// mock headers, steadyeval/v1/*_mock.grpc.pb.h, have no include guard: the test includes
// them, not this header): a ReportResults writer that records what a worker sends, and a
// server stream that yields canned messages.
#ifndef STEADYEVAL_TESTING_GRPC_FAKES_H_
#define STEADYEVAL_TESTING_GRPC_FAKES_H_

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include <grpcpp/support/sync_stream.h>
#include <grpcpp/test/mock_stream.h>

#include "gmock/gmock.h"
#include "steadyeval/v1/worker_service.grpc.pb.h"

namespace steadyeval::testing {

// A ReportResults client stream for a mocked ReportResultsRaw to return (the stub takes
// ownership): appends every message written to `*reports` (which must outlive it) and
// expects WritesDone and Finish once each, both succeeding.
inline grpc::testing::MockClientWriter<v1::ReportResultsRequest>* RecordingReportWriter(
    std::vector<v1::ReportResultsRequest>* reports) {
  auto* writer = new grpc::testing::MockClientWriter<v1::ReportResultsRequest>();
  EXPECT_CALL(*writer, Write(::testing::_, ::testing::_))
      .WillRepeatedly([reports](const v1::ReportResultsRequest& msg, grpc::WriteOptions) {
        reports->push_back(msg);
        return true;
      });
  EXPECT_CALL(*writer, WritesDone()).WillOnce(::testing::Return(true));
  EXPECT_CALL(*writer, Finish()).WillOnce(::testing::Return(grpc::Status::OK));
  return writer;
}

// A server stream that yields `items` and then finishes with `status`.
template <typename T>
class FakeReader : public grpc::ClientReaderInterface<T> {
 public:
  FakeReader(std::vector<T> items, grpc::Status status)
      : items_(std::move(items)), status_(std::move(status)) {}
  bool Read(T* msg) override {
    if (next_ >= items_.size()) return false;
    *msg = items_[next_++];
    return true;
  }
  grpc::Status Finish() override { return status_; }
  bool NextMessageSize(uint32_t* size) override {
    if (next_ >= items_.size()) return false;
    *size = static_cast<uint32_t>(items_[next_].ByteSizeLong());
    return true;
  }
  void WaitForInitialMetadata() override {}

 private:
  std::vector<T> items_;
  grpc::Status status_;
  size_t next_ = 0;
};

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_GRPC_FAKES_H_
