#include "worker/daemon/daemon.h"

#include <cstdint>
#include <functional>
#include <map>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <optional>

#include <grpcpp/test/mock_stream.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/synchronization/notification.h"
#include "common/clock.h"
#include "testing/fake_bucket_file_system.h"
#include "testing/files.h"
#include "testing/http.h"
#include "testing/process.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "api/protocol.h"
#include "api/variant_proto.h"
#include "common/job_failure.h"
#include "steadyeval/v1/worker_service_mock.grpc.pb.h"
#include "worker/daemon/metrics_http.h"
#include "testing/grpc_fakes.h"
#include "testing/metric_families.h"
#include "worker/daemon/worker_metrics.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::HttpGet;
using ::steadyeval::testing::HttpOkBody;
using ::steadyeval::testing::StatusIs;

TEST(PathMapTest, ParsesFromEqualsTo) {
  auto m = ParsePathMapping("/mnt/ckpt=/data/ckpt");
  ASSERT_OK(m);
  EXPECT_EQ(m->from, "/mnt/ckpt");
  EXPECT_EQ(m->to, "/data/ckpt");
  EXPECT_THAT(ParsePathMapping("/mnt/ckpt"), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("FROM=TO")));
  EXPECT_THAT(ParsePathMapping("=/x"), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(PathMapTest, RewritesOnlyAtComponentBoundaries) {
  std::vector<PathMapping> maps = {{"/mnt/ckpt", "/data/ckpt"}, {"/srv/", "/local/"}};
  EXPECT_EQ(MapPath(maps, "/mnt/ckpt/run1/step_000100"), "/data/ckpt/run1/step_000100");
  EXPECT_EQ(MapPath(maps, "/mnt/ckpt"), "/data/ckpt");
  EXPECT_EQ(MapPath(maps, "/mnt/ckpt2/run1"), "/mnt/ckpt2/run1");
  EXPECT_EQ(MapPath(maps, "/srv/a"), "/local/a");
  EXPECT_EQ(MapPath(maps, "/other/a"), "/other/a");
}

// A backend that records what the daemon asks of it. With `clock` set, a load takes
// `load_clock_seconds` on it and evaluating an example `seconds_per_example`; an example is
// `tokens_per_example` tokens.
class FakeBackend : public EvalBackend {
 public:
  absl::StatusOr<LoadStats> Load(const std::string& dir, const std::string& tokenizer) override {
    loaded.push_back("raw " + dir);
    tokenizers.push_back(tokenizer);
    if (clock != nullptr) clock->AdvanceSeconds(load_clock_seconds);
    return load_stats;
  }
  absl::StatusOr<LoadStats> LoadAverage(const std::string& run, uint32_t window,
                                        const std::vector<std::string>& dirs,
                                        const std::vector<uint64_t>& steps,
                                        const std::string& /*tokenizer*/) override {
    loaded.push_back("avg " + run + " " + std::to_string(window) + " " + dirs.front() + ".." + dirs.back());
    held.push_back({run, window, steps});
    if (clock != nullptr) clock->AdvanceSeconds(load_clock_seconds);
    if (!load_average_error.ok()) return load_average_error;
    return load_stats;
  }
  std::vector<WindowSumInfo> WindowSums() const override { return held; }
  absl::StatusOr<ParameterDriftResult> ComputeDrift(const std::string& from,
                                                    const std::string& /*to*/) override {
    if (from == "/ckpt/gone") return absl::NotFoundError("gone");
    return ParameterDriftResult{2.5, 0.125};
  }
  absl::StatusOr<std::vector<ExampleResult>> Evaluate(const Task& task, const EvalSettings& s,
                                                      const ProgressFn& progress) override {
    settings.push_back(s);
    task_sizes.push_back(task.size());
    if (during_evaluate) during_evaluate();
    std::vector<ExampleResult> out;
    for (uint32_t i = 0; i < task.size(); ++i) {
      if (i == fail_after_examples) return absl::InternalError("fake evaluation failure");
      if (clock != nullptr) clock->AdvanceSeconds(seconds_per_example);
      out.push_back({i, "0", {-1.0, -2.0}});
      ++examples_evaluated;
      // One example is one batch: the cancel point comes after each.
      if (progress && !progress(i + 1, task.size())) {
        ++cancelled;
        return absl::CancelledError("cancelled");
      }
    }
    tokens += tokens_per_example * out.size();
    return out;
  }
  std::string BosDescription() const override { return "bos 7"; }
  uint64_t tokens_processed() const override { return tokens; }

  std::vector<std::string> loaded;
  std::vector<std::string> tokenizers;  // of each Load
  std::vector<WindowSumInfo> held;
  std::vector<EvalSettings> settings;
  std::vector<size_t> task_sizes;
  LoadStats load_stats;
  FakeClock* clock = nullptr;
  double load_clock_seconds = 100;  // not evaluation time
  double seconds_per_example = 0;
  uint64_t tokens_per_example = 0;
  uint64_t tokens = 0;
  uint32_t fail_after_examples = UINT32_MAX;  // Evaluate fails on reaching this example
  absl::Status load_average_error;        // LoadAverage's result when not OK
  std::function<void()> during_evaluate;  // runs before the first example
  int examples_evaluated = 0;             // over all Evaluate calls
  int cancelled = 0;                      // Evaluate calls that progress cancelled
};

TEST(WorkerDaemonTest, RunsAvgJobsReportsDriftsAndAdvertisesWindowSums) {
  namespace v1 = ::steadyeval::v1;
  const std::string task_text = R"({"id": "a", "query": "q", "choices": ["x", "y"], "gold": 0})"
                                "\n"
                                R"({"id": "b", "query": "r", "choices": ["x", "y"], "gold": 1})"
                                "\n";
  auto task = ParseTask("mc.jsonl", task_text);
  ASSERT_OK(task);
  auto stub = std::make_shared<v1::MockWorkerServiceStub>();
  auto backend = std::make_unique<FakeBackend>();
  FakeBackend* fake = backend.get();
  DaemonOptions options;
  options.worker_id = "w1";
  options.acquire_wait_ms = 10;
  options.path_map = {{"/mnt", "/ckpt"}};
  WorkerDaemon daemon(options, stub, std::move(backend));

  v1::LeasedJob avg;
  avg.mutable_job()->set_id(1);
  avg.mutable_job()->set_run("r");
  // A new coordinator's lease: the worker reads kind_spec (here the only kind given).
  *avg.mutable_job()->mutable_kind_spec() = ToProto(Variant::Average(3));
  avg.mutable_job()->set_epoch(1);
  for (int step : {100, 200, 300}) {
    avg.mutable_job()->add_steps(step);
    avg.add_checkpoint_paths("/mnt/step_" + std::to_string(step));
  }
  avg.set_window(3);
  avg.set_lease_ttl_ms(600000);
  avg.set_source_root("/mnt");
  avg.set_few_shots(2);
  avg.set_prompt_language("en");
  avg.set_bos("add");
  avg.set_max_new_tokens_delta(5);
  v1::TaskContent* header = avg.add_task_headers();
  header->mutable_ref()->set_name("mc");
  header->mutable_ref()->set_sha256(task->sha256);
  header->set_filename("mc.jsonl");
  header->set_kind(v1::TASK_KIND_MULTIPLE_CHOICE);
  v1::LeasedJob raw = avg;
  raw.mutable_job()->set_id(2);
  raw.mutable_job()->set_kind("raw");  // an old coordinator's: the text alone
  raw.mutable_job()->clear_kind_spec();
  raw.mutable_job()->clear_steps();
  raw.mutable_job()->add_steps(400);
  raw.clear_checkpoint_paths();
  raw.add_checkpoint_paths("/mnt/step_400");
  raw.set_window(0);
  raw.set_prompt_language("");  // an older coordinator: defaults
  raw.set_bos("");
  raw.mutable_task_headers(0)->mutable_ref()->set_max_samples(1);
  v1::DriftTarget* target = raw.add_drift_targets();
  target->set_from_step(300);
  target->set_from_path("/mnt/step_300");
  target->set_to_step(400);
  target->set_to_path("/mnt/step_400");
  target = raw.add_drift_targets();  // its folder is gone: skipped, the job still succeeds
  target->set_from_step(50);
  target->set_from_path("/mnt/gone");
  target->set_to_step(100);
  target->set_to_path("/mnt/step_100");

  using ::testing::_;
  EXPECT_CALL(*stub, RegisterWorker(_, _, _)).WillRepeatedly(::testing::Return(grpc::Status::OK));
  std::vector<v1::AcquireJobRequest> acquires;
  EXPECT_CALL(*stub, AcquireJob(_, _, _))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::AcquireJobRequest& req, v1::AcquireJobResponse* resp) {
        acquires.push_back(req);
        if (acquires.size() == 1) {
          resp->set_has_job(true);
          *resp->mutable_lease() = avg;
        } else if (acquires.size() == 2) {
          resp->set_has_job(true);
          *resp->mutable_lease() = raw;
        } else {
          daemon.Stop();
        }
        return grpc::Status::OK;
      });
  EXPECT_CALL(*stub, GetTask(_, _, _))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::GetTaskRequest&, v1::TaskContent* content) {
        content->set_filename("mc.jsonl");
        content->set_content(task_text);
        content->set_kind(v1::TASK_KIND_MULTIPLE_CHOICE);
        return grpc::Status::OK;
      });
  std::vector<v1::ReportResultsRequest> reports;
  EXPECT_CALL(*stub, ReportResultsRaw(_, _))
      .Times(2)
      .WillRepeatedly([&](grpc::ClientContext*, v1::ReportResultsResponse*) {
        return testing::RecordingReportWriter(&reports);
      });

  ASSERT_OK(daemon.Run());
  EXPECT_EQ(daemon.jobs_done(), 2);
  EXPECT_THAT(fake->loaded, ::testing::ElementsAre("avg r 3 /ckpt/step_100../ckpt/step_300",
                                                   "raw /ckpt/step_400"));
  // The run's evaluation settings reach the backend; max_samples shapes the task.
  ASSERT_EQ(fake->settings.size(), 2u);
  EXPECT_EQ(fake->settings[0].prompt.few_shots, 2);
  EXPECT_EQ(fake->settings[0].prompt.language, PromptLanguage::kEnglish);
  EXPECT_EQ(fake->settings[0].bos, BosMode::kAdd);
  EXPECT_EQ(fake->settings[0].max_new_tokens_delta, 5);
  EXPECT_EQ(fake->settings[0].batch_size, options.batch_size);
  EXPECT_EQ(fake->settings[1].prompt.language, PromptLanguage::kJapanese);
  EXPECT_EQ(fake->settings[1].bos, BosMode::kAuto);
  EXPECT_THAT(fake->task_sizes, ::testing::ElementsAre(2u, 1u));
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].bos(), "bos 7");  // recorded on the job by the coordinator
  EXPECT_EQ(reports[0].step(), 300u);  // the window-end step
  EXPECT_EQ(reports[0].drifts_size(), 0);
  EXPECT_EQ(reports[1].step(), 400u);
  ASSERT_EQ(reports[1].drifts_size(), 1);
  EXPECT_EQ(reports[1].drifts(0).from_step(), 300u);
  EXPECT_EQ(reports[1].drifts(0).to_step(), 400u);
  EXPECT_EQ(reports[1].drifts(0).l2(), 2.5);
  EXPECT_EQ(reports[1].drifts(0).relative(), 0.125);
  // The window sum held after the avg job is advertised on the next AcquireJob.
  ASSERT_GE(acquires.size(), 2u);
  EXPECT_EQ(acquires[0].window_sums_size(), 0);
  ASSERT_EQ(acquires[1].window_sums_size(), 1);
  EXPECT_EQ(acquires[1].window_sums(0).run(), "r");
  EXPECT_EQ(acquires[1].window_sums(0).window(), 3u);
  EXPECT_THAT(acquires[1].window_sums(0).steps(), ::testing::ElementsAre(100u, 200u, 300u));
}

TEST(WorkerDaemonTest, SettingsForLeaseRejectsUnknownValues) {
  steadyeval::v1::LeasedJob lease;
  lease.set_prompt_language("fr");
  EXPECT_THAT(SettingsForLease(lease, 8),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("'fr'")));
  lease.set_prompt_language("ja");
  lease.set_bos("always");
  EXPECT_THAT(SettingsForLease(lease, 8),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("'always'")));
}

constexpr char kProcStatus[] =
    "Name:\tsteadyeval-worker\n"
    "VmPeak:\t  900000 kB\n"
    "VmSize:\t  800000 kB\n"
    "VmHWM:\t    2048 kB\n"
    "VmRSS:\t    1536 kB\n"
    "Threads:\t8\n";

constexpr char kDeviceMemory[] = "steadyeval_worker_device_memory_bytes";

TEST(ProcStatusTest, ReadsResidentSetAndHighWaterMarkInBytes) {
  auto memory = ParseProcStatus(kProcStatus);
  ASSERT_OK(memory);
  EXPECT_EQ(memory->resident_bytes, 1536u * 1024);
  EXPECT_EQ(memory->peak_resident_bytes, 2048u * 1024);
}

TEST(ProcStatusTest, MissingOrMalformedFieldsAreErrors) {
  using ::testing::HasSubstr;
  EXPECT_THAT(ParseProcStatus("Name:\tkthreadd\nVmRSS:\t  10 kB\n"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("VmHWM")));
  EXPECT_THAT(ParseProcStatus("Name:\tkthreadd\n"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("VmRSS VmHWM")));
  EXPECT_THAT(ParseProcStatus(""), StatusIs(absl::StatusCode::kNotFound, HasSubstr("VmRSS")));
  for (const char* bad : {"VmRSS:\t  10 MB\nVmHWM:\t  20 kB\n", "VmRSS:\t  kB\nVmHWM:\t  20 kB\n",
                          "VmRSS:\t  -5 kB\nVmHWM:\t  20 kB\n", "VmRSS:\t  10\nVmHWM:\t  20 kB\n"}) {
    EXPECT_THAT(ParseProcStatus(bad), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("VmRSS")))
        << bad;
  }
}

TEST(DeviceMemoryCollectorTest, ReadsTheStatusFileAtEachScrape) {
  std::vector<std::string> reads;
  DeviceMemoryCollector collector(
      "w1", "cuda:1",
      [&](const std::string& path) -> absl::StatusOr<std::string> {
        reads.push_back(path);
        return std::string(kProcStatus);
      },
      "/proc/123/status");
  const std::vector<prometheus::MetricFamily> families = collector.Collect();
  ASSERT_EQ(families.size(), 1u);
  EXPECT_EQ(families[0].type, prometheus::MetricType::Gauge);
  EXPECT_EQ(families[0].metric.size(), 2u);
  // The device label is the configured one, whatever the device.
  EXPECT_EQ(testing::SeriesValue(families, kDeviceMemory,
                                        {{"worker", "w1"}, {"device", "cuda:1"}, {"kind", "used"}}),
            1536.0 * 1024);
  EXPECT_EQ(testing::SeriesValue(families, kDeviceMemory,
                                        {{"worker", "w1"}, {"device", "cuda:1"}, {"kind", "peak"}}),
            2048.0 * 1024);
  collector.Collect();
  EXPECT_THAT(reads, ::testing::ElementsAre("/proc/123/status", "/proc/123/status"));
}

TEST(DeviceMemoryCollectorTest, UnreadableOrUnparsableStatusExportsNoSeries) {
  DeviceMemoryCollector unreadable("w1", "cpu", [](const std::string& path) -> absl::StatusOr<std::string> {
    return absl::NotFoundError(path);
  });
  EXPECT_TRUE(unreadable.Collect().empty());
  DeviceMemoryCollector garbled("w1", "cpu", [](const std::string&) -> absl::StatusOr<std::string> {
    return std::string("Name:\tx\n");
  });
  EXPECT_TRUE(garbled.Collect().empty());
}

TEST(DeviceMemoryCollectorTest, ThisProcessHasResidentMemoryUpToItsPeak) {
  WorkerMetricsOptions options;
  options.worker = "w1";  // the real /proc/self/status
  WorkerMetrics metrics(options);
  const std::vector<prometheus::MetricFamily> families = metrics.Collect();
  const std::optional<double> used = testing::SeriesValue(
      families, kDeviceMemory, {{"worker", "w1"}, {"device", "cpu"}, {"kind", "used"}});
  const std::optional<double> peak = testing::SeriesValue(
      families, kDeviceMemory, {{"worker", "w1"}, {"device", "cpu"}, {"kind", "peak"}});
  ASSERT_TRUE(used.has_value());
  ASSERT_TRUE(peak.has_value());
  EXPECT_GT(*used, 0);
  EXPECT_LE(*used, *peak);
}

// A multiple-choice task file of `examples` examples.
std::string McTaskText(int examples) {
  std::string text;
  for (int i = 0; i < examples; ++i) {
    text += R"({"id": "e)" + std::to_string(i) + R"(", "query": "q)" + std::to_string(i) +
            R"(", "choices": ["x", "y"], "gold": 0})" + "\n";
  }
  return text;
}

// A raw job of run "r" at `step` evaluating the task whose content hash is `task_sha256`.
::steadyeval::v1::LeasedJob RawLease(uint64_t id, uint64_t step, const std::string& task_sha256) {
  namespace v1 = ::steadyeval::v1;
  v1::LeasedJob lease;
  lease.mutable_job()->set_id(id);
  lease.mutable_job()->set_run("r");
  lease.mutable_job()->set_kind("raw");
  lease.mutable_job()->set_epoch(1);
  lease.mutable_job()->add_steps(step);
  lease.add_checkpoint_paths("/ckpt/step_" + std::to_string(step));
  lease.set_source_root("/ckpt");
  lease.set_lease_secret("secret-" + std::to_string(id));
  lease.set_lease_ttl_ms(600000);
  lease.set_prompt_language("en");
  lease.set_bos("add");
  v1::TaskContent* header = lease.add_task_headers();
  header->mutable_ref()->set_name("mc");
  header->mutable_ref()->set_sha256(task_sha256);
  header->set_filename("mc.jsonl");
  header->set_kind(v1::TASK_KIND_MULTIPLE_CHOICE);
  return lease;
}

// A report the coordinator refuses for storage (RESOURCE_EXHAUSTED, or UNAVAILABLE) is
// re-sent, with backoff, for as long as the lease is held: more often than the 21 tries
// other errors get, and the job is never failed (that would use up an attempt).
TEST(WorkerDaemonTest, RetriesAReportRefusedForStorageWhileHoldingTheLease) {
  namespace v1 = ::steadyeval::v1;
  using ::testing::_;
  const std::string task_text = McTaskText(2);
  auto task = ParseTask("mc.jsonl", task_text);
  ASSERT_OK(task);
  auto stub = std::make_shared<v1::MockWorkerServiceStub>();
  DaemonOptions options;
  options.worker_id = "w1";
  options.acquire_wait_ms = 10;
  options.retry_backoff_ms = 1;
  options.report_backoff_max_ms = 4;
  WorkerDaemon daemon(options, stub, std::make_unique<FakeBackend>());

  EXPECT_CALL(*stub, RegisterWorker(_, _, _)).WillRepeatedly(::testing::Return(grpc::Status::OK));
  EXPECT_CALL(*stub, Heartbeat(_, _, _)).WillRepeatedly(::testing::Return(grpc::Status::OK));
  int acquired = 0;
  EXPECT_CALL(*stub, AcquireJob(_, _, _))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::AcquireJobRequest&,
                          v1::AcquireJobResponse* resp) {
        if (acquired++ == 0) {
          resp->set_has_job(true);
          *resp->mutable_lease() = RawLease(1, 100, task->sha256);
        } else {
          daemon.Stop();
        }
        return grpc::Status::OK;
      });
  EXPECT_CALL(*stub, GetTask(_, _, _))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::GetTaskRequest&, v1::TaskContent* c) {
        c->set_filename("mc.jsonl");
        c->set_content(task_text);
        c->set_kind(v1::TASK_KIND_MULTIPLE_CHOICE);
        return grpc::Status::OK;
      });
  constexpr int kRefusals = 30;
  int attempts = 0;
  std::vector<v1::ReportResultsRequest> accepted;
  EXPECT_CALL(*stub, ReportResultsRaw(_, _))
      .WillRepeatedly([&](grpc::ClientContext*, v1::ReportResultsResponse*)
                          -> grpc::ClientWriterInterface<v1::ReportResultsRequest>* {
        if (++attempts > kRefusals) return testing::RecordingReportWriter(&accepted);
        auto* writer = new grpc::testing::MockClientWriter<v1::ReportResultsRequest>();
        EXPECT_CALL(*writer, Write(_, _)).WillRepeatedly(::testing::Return(true));
        EXPECT_CALL(*writer, WritesDone()).WillOnce(::testing::Return(true));
        EXPECT_CALL(*writer, Finish())
            .WillOnce(::testing::Return(
                attempts % 2 == 0
                    ? grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "storage: disk full")
                    : grpc::Status(grpc::StatusCode::UNAVAILABLE, "storage: write error")));
        return writer;
      });
  EXPECT_CALL(*stub, FailJob(_, _, _)).Times(0);

  ASSERT_OK(daemon.Run());
  EXPECT_EQ(attempts, kRefusals + 1);
  EXPECT_EQ(daemon.jobs_done(), 1);
  EXPECT_FALSE(accepted.empty());
}

// Drives a WorkerDaemon named "w1" through `leases` (one per AcquireJob, then Stop) against
// a mocked coordinator serving `task_text`; every ReportResults is accepted after advancing
// `clock` by 1000 s (reporting is not evaluation time).
class WorkerDaemonMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto backend = std::make_unique<FakeBackend>();
    fake_ = backend.get();
    fake_->clock = &clock_;
    DaemonOptions options;
    options.worker_id = "w1-id";
    options.name = "w1";
    options.acquire_wait_ms = 10;
    options.retry_backoff_ms = 1;
    options.clock = &clock_;
    daemon_ = std::make_unique<WorkerDaemon>(options, stub_, std::move(backend));
  }

  // Runs the daemon until the coordinator has handed out every lease; each is handed out
  // after `before_lease[i]` (if any) ran.
  void RunLeases(const std::string& task_text, const std::vector<::steadyeval::v1::LeasedJob>& leases,
                 const std::vector<std::function<void()>>& before_lease = {}) {
    namespace v1 = ::steadyeval::v1;
    using ::testing::_;
    EXPECT_CALL(*stub_, RegisterWorker(_, _, _))
        .WillRepeatedly([&](grpc::ClientContext*, const v1::RegisterWorkerRequest& req,
                            v1::RegisterWorkerResponse* resp) {
          registrations_.push_back(req);
          resp->set_heartbeat_interval_ms(heartbeat_interval_ms_);
          return grpc::Status::OK;
        });
    EXPECT_CALL(*stub_, Heartbeat(_, _, _))
        .WillRepeatedly([&](grpc::ClientContext*, const v1::HeartbeatRequest& req,
                            v1::HeartbeatResponse*) { return heartbeat_(req); });
    size_t acquired = 0;
    EXPECT_CALL(*stub_, AcquireJob(_, _, _))
        .WillRepeatedly([&](grpc::ClientContext*, const v1::AcquireJobRequest&, v1::AcquireJobResponse* resp) {
          ++acquire_calls_;
          if (acquired < leases.size()) {
            if (acquired < before_lease.size() && before_lease[acquired]) before_lease[acquired]();
            resp->set_has_job(true);
            *resp->mutable_lease() = leases[acquired++];
          } else {
            daemon_->Stop();
          }
          return grpc::Status::OK;
        });
    EXPECT_CALL(*stub_, GetTask(_, _, _))
        .WillRepeatedly([&](grpc::ClientContext*, const v1::GetTaskRequest& req, v1::TaskContent* content) {
          task_requests_.push_back(req);
          content->set_filename("mc.jsonl");
          content->set_content(task_text);
          content->set_kind(v1::TASK_KIND_MULTIPLE_CHOICE);
          return grpc::Status::OK;
        });
    EXPECT_CALL(*stub_, ReportResultsRaw(_, _))
        .WillRepeatedly([&](grpc::ClientContext*, v1::ReportResultsResponse*) {
          clock_.AdvanceSeconds(1000);
          return testing::RecordingReportWriter(&reports_);
        });
    EXPECT_CALL(*stub_, FailJob(_, _, _))
        .WillRepeatedly([&](grpc::ClientContext*, const v1::FailJobRequest& req, v1::FailJobResponse*) {
          failed_.push_back(req);
          return grpc::Status::OK;
        });
    ASSERT_OK(daemon_->Run());
  }

  std::optional<double> Series(const std::string& name, std::map<std::string, std::string> labels = {}) {
    labels["worker"] = "w1";
    return testing::SeriesValue(daemon_->metrics().Collect(), name, labels);
  }

  FakeClock clock_;
  std::shared_ptr<::steadyeval::v1::MockWorkerServiceStub> stub_ =
      std::make_shared<::steadyeval::v1::MockWorkerServiceStub>();
  // What RunLeases's coordinator answers: its heartbeat period at registration (0: none)
  // and each Heartbeat (called on the daemon's heartbeat thread).
  int64_t heartbeat_interval_ms_ = 0;
  std::function<grpc::Status(const ::steadyeval::v1::HeartbeatRequest&)> heartbeat_ =
      [](const ::steadyeval::v1::HeartbeatRequest&) { return grpc::Status::OK; };
  int acquire_calls_ = 0;
  FakeBackend* fake_ = nullptr;
  std::unique_ptr<WorkerDaemon> daemon_;
  std::vector<::steadyeval::v1::ReportResultsRequest> reports_;
  std::vector<::steadyeval::v1::FailJobRequest> failed_;
  std::vector<::steadyeval::v1::RegisterWorkerRequest> registrations_;
  std::vector<::steadyeval::v1::GetTaskRequest> task_requests_;
  uint64_t bytes_after_first_ = 0;
};

TEST_F(WorkerDaemonMetricsTest, CountsAJobsExamplesTokensAndEvaluationTime) {
  const std::string task_text = McTaskText(4);
  auto task = ParseTask("mc.jsonl", task_text);
  ASSERT_OK(task);
  fake_->load_stats = LoadStats{0.25, 12345};
  fake_->seconds_per_example = 0.5;  // S = 4 × 0.5 = 2 s
  fake_->tokens_per_example = 15;    // T = 60
  std::optional<double> busy_while_evaluating;
  fake_->during_evaluate = [&] { busy_while_evaluating = Series("steadyeval_worker_busy"); };

  RunLeases(task_text, {RawLease(1, 100, task->sha256)});

  ASSERT_EQ(daemon_->jobs_done(), 1);
  EXPECT_EQ(reports_.size(), 1u);
  EXPECT_EQ(Series("steadyeval_worker_examples_total"), 4.0);
  EXPECT_EQ(Series("steadyeval_worker_tokens_total"), 60.0);
  // Only the evaluation: not the load's 100 s nor the report's 1000 s.
  EXPECT_EQ(Series("steadyeval_worker_eval_seconds_total"), 2.0);
  EXPECT_EQ(Series("steadyeval_worker_tokens_per_second"), 60.0 / 2.0);
  EXPECT_EQ(Series("steadyeval_worker_examples_per_second"), 4.0 / 2.0);
  EXPECT_EQ(Series("steadyeval_worker_checkpoint_load_seconds_count"), 1.0);
  EXPECT_EQ(Series("steadyeval_worker_checkpoint_load_seconds_sum"), 0.25);
  EXPECT_EQ(Series("steadyeval_worker_checkpoint_load_bytes_total"), 12345.0);
  EXPECT_EQ(Series("steadyeval_worker_jobs_total", {{"outcome", "done"}}), 1.0);
  EXPECT_EQ(Series("steadyeval_worker_jobs_total", {{"outcome", "failed"}}), 0.0);
  EXPECT_EQ(busy_while_evaluating, 1.0);
  EXPECT_EQ(Series("steadyeval_worker_busy"), 0.0);
}

TEST_F(WorkerDaemonMetricsTest, FailedJobsCountAsFailedAndKeepTheLastJobsRates) {
  namespace v1 = ::steadyeval::v1;
  const std::string task_text = McTaskText(2);
  auto task = ParseTask("mc.jsonl", task_text);
  ASSERT_OK(task);
  fake_->load_stats = LoadStats{0.5, 100};
  fake_->seconds_per_example = 0.5;
  fake_->tokens_per_example = 10;
  // 1: done (2 examples, 1 s, 20 tokens). 2: evaluation fails after its first example
  // (0.5 s), retryable. 3: malformed (two checkpoints for a raw job), fails before loading.
  v1::LeasedJob malformed = RawLease(3, 300, task->sha256);
  malformed.add_checkpoint_paths("/ckpt/step_301");
  RunLeases(task_text, {RawLease(1, 100, task->sha256), RawLease(2, 200, task->sha256), malformed},
            {nullptr, [&] { fake_->fail_after_examples = 1; }});

  EXPECT_EQ(daemon_->jobs_done(), 1);
  ASSERT_EQ(failed_.size(), 2u);
  EXPECT_EQ(failed_[0].job_id(), 2u);
  EXPECT_TRUE(failed_[0].retryable());
  EXPECT_EQ(failed_[0].failure(), v1::JOB_FAILURE_RETRYABLE);
  EXPECT_EQ(failed_[1].job_id(), 3u);
  EXPECT_FALSE(failed_[1].retryable());
  EXPECT_EQ(failed_[1].failure(), v1::JOB_FAILURE_PERMANENT);
  EXPECT_EQ(Series("steadyeval_worker_jobs_total", {{"outcome", "done"}}), 1.0);
  EXPECT_EQ(Series("steadyeval_worker_jobs_total", {{"outcome", "failed"}}), 2.0);
  // The failed evaluation's example and time count; its tokens never came back.
  EXPECT_EQ(Series("steadyeval_worker_examples_total"), 3.0);
  EXPECT_EQ(Series("steadyeval_worker_tokens_total"), 20.0);
  EXPECT_EQ(Series("steadyeval_worker_eval_seconds_total"), 1.5);
  // The rates are the last job that evaluated to its end.
  EXPECT_EQ(Series("steadyeval_worker_tokens_per_second"), 20.0);
  EXPECT_EQ(Series("steadyeval_worker_examples_per_second"), 2.0);
  EXPECT_EQ(Series("steadyeval_worker_checkpoint_load_seconds_count"), 2.0);
  EXPECT_EQ(Series("steadyeval_worker_checkpoint_load_bytes_total"), 200.0);
  EXPECT_EQ(Series("steadyeval_worker_busy"), 0.0);
}

TEST_F(WorkerDaemonMetricsTest, SendsItsProtocolVersionLeaseSecretsAndWorkerId) {
  namespace v1 = ::steadyeval::v1;
  const std::string task_text = McTaskText(2);
  auto task = ParseTask("mc.jsonl", task_text);
  ASSERT_OK(task);
  v1::LeasedJob failing = RawLease(2, 200, task->sha256);
  failing.add_checkpoint_paths("/ckpt/step_201");  // malformed: fails, with its secret
  RunLeases(task_text, {RawLease(1, 100, task->sha256), failing});
  ASSERT_FALSE(registrations_.empty());
  EXPECT_EQ(registrations_[0].protocol_version(), kProtocolVersion);
  ASSERT_FALSE(task_requests_.empty());
  EXPECT_EQ(task_requests_[0].worker_id(), "w1-id");
  ASSERT_EQ(reports_.size(), 1u);
  EXPECT_EQ(reports_[0].lease_secret(), "secret-1");
  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_EQ(failed_[0].lease_secret(), "secret-2");
}

TEST(WorkerDaemonProtocolTest, AnotherProtocolVersionEndsRunWithTheCoordinatorsMessage) {
  namespace v1 = ::steadyeval::v1;
  auto stub = std::make_shared<v1::MockWorkerServiceStub>();
  DaemonOptions options;
  options.worker_id = "w1";
  options.retry_backoff_ms = 1;
  WorkerDaemon daemon(options, stub, std::make_unique<FakeBackend>());
  EXPECT_CALL(*stub, RegisterWorker(::testing::_, ::testing::_, ::testing::_))
      .Times(1)  // no retry loop
      .WillOnce(::testing::Return(grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          "worker w1 speaks worker protocol version 2 but this coordinator speaks version 3: "
          "upgrade the worker")));
  EXPECT_CALL(*stub, AcquireJob(::testing::_, ::testing::_, ::testing::_)).Times(0);
  EXPECT_THAT(daemon.Run(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                     ::testing::HasSubstr("upgrade the worker")));
}

// Path rules, on real folders: a source root with one checkpoint folder.
class WorkerDaemonPathTest : public WorkerDaemonMetricsTest {
 protected:
  void SetUp() override {
    root_ = std::filesystem::path(::testing::TempDir()) /
            ("daemon_paths_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_ / "source/step_100");
    std::filesystem::create_directories(root_ / "elsewhere");
    std::filesystem::create_directories(root_ / "tokenizers");
    std::ofstream(root_ / "source/step_100/config.json") << "{}";
    std::ofstream(root_ / "elsewhere/secret.txt") << "secret";
    std::ofstream(root_ / "tokenizers/tokenizer.model") << "tok";
    WorkerDaemonMetricsTest::SetUp();
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  void Recreate(const std::vector<std::string>& tokenizer_dirs) {
    auto backend = std::make_unique<FakeBackend>();
    fake_ = backend.get();
    DaemonOptions options;
    options.worker_id = "w1-id";
    options.acquire_wait_ms = 10;
    options.retry_backoff_ms = 1;
    options.clock = &clock_;
    options.tokenizer_dirs = tokenizer_dirs;
    daemon_ = std::make_unique<WorkerDaemon>(options, stub_, std::move(backend));
  }
  ::steadyeval::v1::LeasedJob Lease(uint64_t id, const std::string& checkpoint) {
    auto lease = RawLease(id, 100, task_->sha256);
    lease.set_checkpoint_paths(0, checkpoint);
    lease.set_source_root((root_ / "source").string());
    return lease;
  }
  void SetTask() {
    task_text_ = McTaskText(1);
    auto task = ParseTask("mc.jsonl", task_text_);
    ASSERT_OK(task);
    task_ = std::make_unique<Task>(*task);
  }

  std::filesystem::path root_;
  std::string task_text_;
  std::unique_ptr<Task> task_;
};

TEST_F(WorkerDaemonPathTest, CheckpointFilesOutsideTheSourceRootAreNeverOpened) {
  SetTask();
  const std::string inside = (root_ / "source/step_100").string();
  // A folder that links out of the root, a file in the folder that links out, and a
  // lease with no root at all: each fails for good before the backend opens anything.
  std::filesystem::create_directory_symlink(root_ / "elsewhere", root_ / "source/step_200");
  std::filesystem::create_directories(root_ / "source/step_300");
  std::filesystem::create_symlink(root_ / "elsewhere/secret.txt",
                                  root_ / "source/step_300/model.safetensors");
  auto no_root = Lease(4, inside);
  no_root.clear_source_root();
  auto dotdot = Lease(5, inside + "/../../elsewhere");
  RunLeases(task_text_, {Lease(1, inside), Lease(2, (root_ / "source/step_200").string()),
                         Lease(3, (root_ / "source/step_300").string()), no_root, dotdot});
  EXPECT_THAT(fake_->loaded, ::testing::ElementsAre("raw " + inside));
  ASSERT_EQ(failed_.size(), 4u);
  for (const auto& f : failed_) EXPECT_FALSE(f.retryable()) << f.reason();
  EXPECT_THAT(failed_[0].reason(),
              ::testing::AllOf(::testing::HasSubstr("step_200"), ::testing::HasSubstr("elsewhere"),
                               ::testing::HasSubstr("outside the run's source folder")));
  EXPECT_THAT(failed_[1].reason(),
              ::testing::AllOf(::testing::HasSubstr("step_300/model.safetensors"),
                               ::testing::HasSubstr("secret.txt"),
                               ::testing::HasSubstr("outside the run's source folder")));
  EXPECT_THAT(failed_[2].reason(), ::testing::HasSubstr("names no source folder"));
  EXPECT_THAT(failed_[3].reason(), ::testing::HasSubstr("outside the run's source folder"));
}

TEST_F(WorkerDaemonPathTest, ARunsTokenizerPathNeedsTokenizerDirs) {
  SetTask();
  const std::string inside = (root_ / "source/step_100").string();
  const std::string tokenizer = (root_ / "tokenizers/tokenizer.model").string();
  auto with_tokenizer = Lease(1, inside);
  with_tokenizer.set_tokenizer_path(tokenizer);
  auto outside = Lease(2, inside);
  outside.set_tokenizer_path((root_ / "elsewhere/secret.txt").string());
  auto sneaky = Lease(3, inside);  // under the dir by name, not after resolution
  sneaky.set_tokenizer_path((root_ / "tokenizers/../elsewhere/secret.txt").string());

  // No --tokenizer_dirs: any tokenizer path from a run is refused, naming the flag.
  RunLeases(task_text_, {with_tokenizer});
  EXPECT_TRUE(fake_->loaded.empty());
  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_FALSE(failed_[0].retryable());
  EXPECT_THAT(failed_[0].reason(),
              ::testing::AllOf(::testing::HasSubstr(tokenizer), ::testing::HasSubstr("--tokenizer_dirs")));

  ::testing::Mock::VerifyAndClearExpectations(stub_.get());
  failed_.clear();
  Recreate({(root_ / "tokenizers").string()});
  RunLeases(task_text_, {with_tokenizer, outside, sneaky});
  EXPECT_THAT(fake_->tokenizers, ::testing::ElementsAre(tokenizer));
  ASSERT_EQ(failed_.size(), 2u);
  for (const auto& f : failed_) {
    EXPECT_FALSE(f.retryable());
    EXPECT_THAT(f.reason(), ::testing::AllOf(::testing::HasSubstr("secret.txt"),
                                             ::testing::HasSubstr("under none of")));
  }
  EXPECT_TRUE(ResolvesUnder(tokenizer, (root_ / "tokenizers").string()));
  EXPECT_FALSE(ResolvesUnder((root_ / "tokenizers2").string(), (root_ / "tokenizers").string()));
}

// Converted checkpoints (issue #18): a run's --convert names one of the worker's
// converters; its output, in the worker's cache, is what the backend loads.
class WorkerDaemonConvertTest : public WorkerDaemonPathTest {
 protected:
  void SetUp() override {
    WorkerDaemonPathTest::SetUp();
    std::ofstream(root_ / "source/step_100/distcp.bin") << "DCP-WEIGHTS";
    WriteScript("good", "echo \"$1\" >> \"$(dirname \"$0\")/runs.log\"\n"
                        "cp \"$1/distcp.bin\" \"$2/model.safetensors\"\n"
                        "echo '{}' > \"$2/config.json\"\n");
    WriteScript("bad", "echo 'reading .metadata' ; echo 'KeyError: optimizer state missing' >&2\n"
                       "exit 3\n");
    SetTask();
  }
  void WriteScript(const std::string& name, const std::string& script) {
    std::ofstream(root_ / (name + ".sh")) << script;
  }
  ConverterSpec Converter(const std::string& name) {
    auto spec = ParseConverterSpec(name + "=/bin/sh " + (root_ / (name + ".sh")).string() + " {src} {dst}");
    EXPECT_OK(spec);
    return *spec;
  }
  void RecreateWithConverters(const std::vector<std::string>& names) {
    auto backend = std::make_unique<FakeBackend>();
    fake_ = backend.get();
    DaemonOptions options;
    options.worker_id = "w1-id";
    options.name = "w1";
    options.acquire_wait_ms = 10;
    options.retry_backoff_ms = 1;
    options.clock = &clock_;
    options.cache.dir = (root_ / "cache").string();
    options.cache.limit_bytes = 1 << 20;
    for (const std::string& name : names) options.converters.push_back(Converter(name));
    daemon_ = std::make_unique<WorkerDaemon>(options, stub_, std::move(backend));
  }
  ::steadyeval::v1::LeasedJob ConvertLease(uint64_t id, const std::string& converter) {
    auto lease = Lease(id, (root_ / "source/step_100").string());
    lease.set_convert(converter);
    return lease;
  }
};

TEST_F(WorkerDaemonConvertTest, ALeaseWithConvertRunsTheConverterAndLoadsItsOutput) {
  RecreateWithConverters({"good", "bad"});
  RunLeases(task_text_, {ConvertLease(1, "good"), ConvertLease(2, "good")});
  ASSERT_EQ(daemon_->jobs_done(), 2) << (failed_.empty() ? "" : failed_[0].reason());
  ASSERT_EQ(fake_->loaded.size(), 2u);
  const std::string loaded = fake_->loaded[0].substr(4);  // after "raw "
  EXPECT_TRUE(absl::StartsWith(loaded, (root_ / "cache/entries/").string())) << loaded;
  EXPECT_EQ(fake_->loaded[1], fake_->loaded[0]);
  EXPECT_EQ(::steadyeval::testing::ReadFileOrEmpty(loaded + "/model.safetensors"), "DCP-WEIGHTS");
  EXPECT_TRUE(std::filesystem::exists(loaded + "/config.json"));
  // Converted once: the second job found the output in the cache.
  EXPECT_EQ(::steadyeval::testing::ReadFileOrEmpty((root_ / "runs.log").string()),
            (root_ / "source/step_100").string() + "\n");
  EXPECT_EQ(Series("steadyeval_worker_conversions_total", {{"result", "ok"}}), 1.0);
  EXPECT_EQ(Series("steadyeval_worker_cache_misses_total"), 1.0);
  EXPECT_EQ(Series("steadyeval_worker_cache_hits_total"), 1.0);
  EXPECT_GT(*Series("steadyeval_worker_cache_bytes"), 0.0);
  EXPECT_EQ(Series("steadyeval_worker_cache_limit_bytes"), 1 << 20);
}

TEST_F(WorkerDaemonConvertTest, AnUnknownConverterFailsTheJobNamingItAndTheWorkersOwn) {
  RecreateWithConverters({"good", "bad"});
  RunLeases(task_text_, {ConvertLease(1, "megatron")});
  EXPECT_TRUE(fake_->loaded.empty());
  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_TRUE(failed_[0].retryable());  // another worker may declare it
  EXPECT_THAT(failed_[0].reason(),
              ::testing::AllOf(::testing::HasSubstr("'megatron'"), ::testing::HasSubstr("good, bad"),
                               ::testing::HasSubstr("--converter megatron=")));
}

TEST_F(WorkerDaemonConvertTest, AFailingConverterFailsTheJobAndTheDaemonTakesTheNext) {
  RecreateWithConverters({"good", "bad"});
  RunLeases(task_text_, {ConvertLease(1, "bad"), ConvertLease(2, "good")});
  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_EQ(failed_[0].job_id(), 1u);
  EXPECT_TRUE(failed_[0].retryable());
  EXPECT_THAT(failed_[0].reason(),
              ::testing::AllOf(::testing::HasSubstr("converter 'bad'"),
                               ::testing::HasSubstr("exited with status 3"),
                               ::testing::HasSubstr("KeyError: optimizer state missing")));
  EXPECT_EQ(daemon_->jobs_done(), 1);  // the next job ran
  ASSERT_EQ(reports_.size(), 1u);
  EXPECT_EQ(Series("steadyeval_worker_conversions_total", {{"result", "failed"}}), 1.0);
  EXPECT_EQ(Series("steadyeval_worker_conversions_total", {{"result", "ok"}}), 1.0);
  // Nothing of the failed conversion stays in the cache.
  EXPECT_TRUE(std::filesystem::is_empty(root_ / "cache/tmp"));
}

// A converter that hangs is killed at --converter_timeout_s; the job fails naming it.
TEST_F(WorkerDaemonConvertTest, AHangingConverterFailsTheJobAtItsTimeout) {
  WriteScript("hang", "echo 'loading shard 1'; exec sleep 1000\n");
  auto backend = std::make_unique<FakeBackend>();
  fake_ = backend.get();
  DaemonOptions options;
  options.worker_id = "w1-id";
  options.name = "w1";
  options.acquire_wait_ms = 10;
  options.retry_backoff_ms = 1;
  options.cache.dir = (root_ / "cache").string();
  options.converters = {Converter("hang"), Converter("good")};
  options.converter_timeout_ms = 300;  // the real clock
  daemon_ = std::make_unique<WorkerDaemon>(options, stub_, std::move(backend));
  RunLeases(task_text_, {ConvertLease(1, "hang"), ConvertLease(2, "good")});
  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_TRUE(failed_[0].retryable());
  EXPECT_THAT(failed_[0].reason(),
              ::testing::AllOf(::testing::HasSubstr("converter 'hang'"), ::testing::HasSubstr("0.3 s"),
                               ::testing::HasSubstr("--converter_timeout_s"),
                               ::testing::HasSubstr("loading shard 1")));
  EXPECT_EQ(daemon_->jobs_done(), 1);
  EXPECT_EQ(Series("steadyeval_worker_conversions_total", {{"result", "timeout"}}), 1.0);
}

// s3:// leases (issue #18), against a bucket held in memory: checkpoints are fetched into
// the cache through the file system made for the lease's endpoint, and loaded from there.
class WorkerDaemonS3Test : public WorkerDaemonMetricsTest {
 protected:
  void SetUp() override {
    WorkerDaemonMetricsTest::SetUp();
    task_text_ = McTaskText(1);
    auto task = ParseTask("mc.jsonl", task_text_);
    ASSERT_OK(task);
    task_sha256_ = task->sha256;
    for (int step : {100, 200, 300}) {
      const std::string dir = "s3://ckpt/run/step_" + std::to_string(step);
      bucket_->WriteFile(dir + "/config.json", "{}");
      bucket_->WriteFile(dir + "/model.safetensors", std::string(1000, static_cast<char>('0' + step / 100)));
    }
    bucket_->WriteFile("s3://ckpt/other/step_100/config.json", "{}");
    auto backend = std::make_unique<FakeBackend>();
    fake_ = backend.get();
    DaemonOptions options;
    options.worker_id = "w1-id";
    options.name = "w1";
    options.acquire_wait_ms = 10;
    options.retry_backoff_ms = 1;
    options.clock = &clock_;
    options.cache.dir = cache_dir_.path();
    options.cache.limit_bytes = 1 << 20;
    options.s3_credentials = AwsCredentials{"AKID", "SECRET", "", "test"};
    options.s3_file_system = [this](const S3ClientOptions& client) -> absl::StatusOr<std::shared_ptr<FileSystem>> {
      clients_.push_back(client.endpoint + " " + client.region + " " + client.credentials.access_key_id);
      return std::shared_ptr<FileSystem>(bucket_);
    };
    daemon_ = std::make_unique<WorkerDaemon>(options, stub_, std::move(backend));
  }
  ::steadyeval::v1::LeasedJob S3Lease(uint64_t id, std::vector<int> steps) {
    auto lease = RawLease(id, steps.back(), task_sha256_);
    lease.set_source_root("s3://ckpt/run/");
    lease.set_s3_endpoint("http://127.0.0.1:9");
    lease.set_s3_region("eu-west-1");
    lease.clear_checkpoint_paths();
    lease.mutable_job()->clear_steps();
    for (int step : steps) {
      lease.add_checkpoint_paths("s3://ckpt/run/step_" + std::to_string(step));
      lease.mutable_job()->add_steps(step);
    }
    if (steps.size() > 1) {
      SetJobKind(*lease.mutable_job(), JobKind::Average(steps.size()));
      lease.set_window(steps.size());
    }
    return lease;
  }

  ::steadyeval::testing::TempDir cache_dir_;
  std::shared_ptr<::steadyeval::testing::FakeBucketFileSystem> bucket_ =
      std::make_shared<::steadyeval::testing::FakeBucketFileSystem>();
  std::vector<std::string> clients_;
  std::string task_text_;
  std::string task_sha256_;
};

TEST_F(WorkerDaemonS3Test, FetchesAWindowIntoTheCacheOnceAndLoadsItFromThere) {
  RunLeases(task_text_, {S3Lease(1, {100, 200}), S3Lease(2, {100, 200})},
            {nullptr, [&] { bytes_after_first_ = bucket_->BytesRead(); }});
  ASSERT_EQ(daemon_->jobs_done(), 2) << (failed_.empty() ? "" : failed_[0].reason());
  ASSERT_EQ(fake_->loaded.size(), 2u);
  EXPECT_EQ(fake_->loaded[1], fake_->loaded[0]);
  EXPECT_THAT(fake_->loaded[0], ::testing::StartsWith("avg r 2 " + cache_dir_.path() + "/entries/"));
  // One client, for the lease's endpoint and region, with this worker's credentials.
  EXPECT_THAT(clients_, ::testing::ElementsAre("http://127.0.0.1:9 eu-west-1 AKID"));
  // The second window was all cached: nothing fetched again.
  EXPECT_EQ(bytes_after_first_, 2 * 1002u);
  EXPECT_EQ(bucket_->BytesRead(), bytes_after_first_);
  EXPECT_EQ(Series("steadyeval_worker_cache_fetched_bytes_total"), 2 * 1002.0);
  EXPECT_EQ(Series("steadyeval_worker_cache_misses_total"), 2.0);
  EXPECT_EQ(Series("steadyeval_worker_cache_hits_total"), 2.0);
  EXPECT_EQ(Series("steadyeval_worker_cache_bytes"), 2 * 1002.0);
}

TEST_F(WorkerDaemonS3Test, PathsOutsideTheSourceGoneMembersAndBucketErrorsFailTheJob) {
  auto outside = S3Lease(1, {100});
  outside.set_checkpoint_paths(0, "s3://ckpt/other/step_100");
  auto sneaky = S3Lease(2, {100});
  sneaky.set_checkpoint_paths(0, "s3://ckpt/run/../other/step_100");
  auto gone = S3Lease(3, {100, 400});  // step_400 has no objects
  auto denied = S3Lease(4, {300});
  RunLeases(task_text_, {outside, sneaky, gone, denied},
            {nullptr, nullptr, nullptr, [&] {
               bucket_->files().InjectError(::steadyeval::testing::FakeFileSystem::Op::kList,
                                            "/ckpt/run/step_300",
                                            absl::PermissionDeniedError("S3 ListObjectsV2 s3://ckpt/run/step_300/: HTTP 403 AccessDenied"));
             }});
  EXPECT_TRUE(fake_->loaded.empty());
  ASSERT_EQ(failed_.size(), 4u);
  EXPECT_EQ(failed_[0].failure(), ::steadyeval::v1::JOB_FAILURE_PERMANENT);
  EXPECT_THAT(failed_[0].reason(), ::testing::HasSubstr("outside the run's source s3://ckpt/run/"));
  EXPECT_EQ(failed_[1].failure(), ::steadyeval::v1::JOB_FAILURE_PERMANENT);
  EXPECT_EQ(failed_[2].failure(), ::steadyeval::v1::JOB_FAILURE_MEMBERS_GONE);
  EXPECT_THAT(failed_[2].reason(), ::testing::HasSubstr("step_400"));
  // Access denied is retryable (another worker's credentials may do) and named.
  EXPECT_EQ(failed_[3].failure(), ::steadyeval::v1::JOB_FAILURE_RETRYABLE);
  EXPECT_THAT(failed_[3].reason(), ::testing::HasSubstr("HTTP 403 AccessDenied"));
}

TEST_F(WorkerDaemonS3Test, AWorkerWithoutCredentialsFailsS3JobsAsRetryable) {
  auto backend = std::make_unique<FakeBackend>();
  fake_ = backend.get();
  DaemonOptions options;
  options.worker_id = "w1-id";
  options.acquire_wait_ms = 10;
  options.cache.dir = cache_dir_.path();
  options.s3_credentials = absl::NotFoundError("no AWS_ACCESS_KEY_ID, no ~/.aws/credentials");
  daemon_ = std::make_unique<WorkerDaemon>(options, stub_, std::move(backend));
  RunLeases(task_text_, {S3Lease(1, {100})});
  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_TRUE(failed_[0].retryable());
  EXPECT_THAT(failed_[0].reason(), ::testing::AllOf(::testing::HasSubstr("no AWS credentials"),
                                                    ::testing::HasSubstr("AWS_ACCESS_KEY_ID")));
}

TEST(WorkerFlagsTest, AConverterWithoutDstIsRejectedAtStart) {
  const auto result = ::steadyeval::testing::RunCommand(
      {::steadyeval::testing::BinDir() + "/steadyeval-worker", "--coordinator", "127.0.0.1:1",
       "--converter", "dcp=python3 /opt/dcp_to_hf.py {src}"},
      /*timeout_seconds=*/60);  // a worker that accepted the flag would run until killed
  EXPECT_EQ(result.exit_code, 2) << result.err;
  EXPECT_THAT(result.err, ::testing::AllOf(::testing::HasSubstr("--converter"),
                                           ::testing::HasSubstr("{dst}")));
  const auto bytes = ::steadyeval::testing::RunCommand(
      {::steadyeval::testing::BinDir() + "/steadyeval-worker", "--coordinator", "127.0.0.1:1",
       "--cache_bytes", "12Q"},
      /*timeout_seconds=*/60);
  EXPECT_EQ(bytes.exit_code, 2) << bytes.err;
  EXPECT_THAT(bytes.err, ::testing::HasSubstr("--cache_bytes '12Q'"));
}

TEST_F(WorkerDaemonMetricsTest, DrainAfterGraceHandsTheJobBackAfterTheCurrentBatch) {
  namespace v1 = ::steadyeval::v1;
  const std::string task_text = McTaskText(5);
  auto task = ParseTask("mc.jsonl", task_text);
  ASSERT_OK(task);
  // Grace 0: the drain starts while the first task is evaluated.
  auto backend = std::make_unique<FakeBackend>();
  fake_ = backend.get();
  DaemonOptions options;
  options.worker_id = "w1-id";
  options.name = "w1";
  options.acquire_wait_ms = 10;
  options.clock = &clock_;
  options.drain_grace_ms = 0;
  daemon_ = std::make_unique<WorkerDaemon>(options, stub_, std::move(backend));
  fake_->during_evaluate = [&] { daemon_->Drain(); };
  int acquires = 0;
  EXPECT_CALL(*stub_, RegisterWorker(::testing::_, ::testing::_, ::testing::_))
      .WillRepeatedly(::testing::Return(grpc::Status::OK));
  EXPECT_CALL(*stub_, AcquireJob(::testing::_, ::testing::_, ::testing::_))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::AcquireJobRequest&, v1::AcquireJobResponse* resp) {
        ++acquires;
        resp->set_has_job(true);
        *resp->mutable_lease() = RawLease(acquires, 100, task->sha256);
        return grpc::Status::OK;
      });
  EXPECT_CALL(*stub_, GetTask(::testing::_, ::testing::_, ::testing::_))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::GetTaskRequest&, v1::TaskContent* content) {
        content->set_filename("mc.jsonl");
        content->set_content(task_text);
        return grpc::Status::OK;
      });
  EXPECT_CALL(*stub_, ReportResultsRaw(::testing::_, ::testing::_)).Times(0);
  EXPECT_CALL(*stub_, FailJob(::testing::_, ::testing::_, ::testing::_))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::FailJobRequest& req, v1::FailJobResponse*) {
        failed_.push_back(req);
        return grpc::Status::OK;
      });
  ASSERT_OK(daemon_->Run());  // returns by itself once drained
  EXPECT_EQ(acquires, 1);     // nothing acquired after the signal
  EXPECT_EQ(Series("steadyeval_worker_examples_total"), 1.0);  // stopped after that batch
  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_EQ(failed_[0].job_id(), 1u);
  EXPECT_EQ(failed_[0].reason(), kWorkerStoppingReason);
  EXPECT_TRUE(failed_[0].retryable());
  EXPECT_EQ(failed_[0].failure(), v1::JOB_FAILURE_WORKER_STOPPING);
  EXPECT_EQ(failed_[0].lease_secret(), "secret-1");
}

// A window whose member folder is gone fails with the typed reason, and with the fields a
// coordinator before it reads: not retryable, "members_gone" in the reason.
TEST_F(WorkerDaemonMetricsTest, AWindowWithAMemberGoneFailsAsMembersGone) {
  namespace v1 = ::steadyeval::v1;
  const std::string task_text = McTaskText(2);
  auto task = ParseTask("mc.jsonl", task_text);
  ASSERT_OK(task);
  fake_->load_average_error =
      Annotate(MembersGoneError("window member /ckpt/step_100 no longer exists"), "averaging");
  v1::LeasedJob avg = RawLease(4, 200, task->sha256);
  SetJobKind(*avg.mutable_job(), JobKind::Average(2));
  avg.mutable_job()->clear_steps();
  avg.clear_checkpoint_paths();
  for (int step : {100, 200}) {
    avg.mutable_job()->add_steps(step);
    avg.add_checkpoint_paths("/ckpt/step_" + std::to_string(step));
  }
  avg.set_window(2);
  RunLeases(task_text, {avg});

  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_EQ(failed_[0].job_id(), 4u);
  EXPECT_EQ(failed_[0].failure(), v1::JOB_FAILURE_MEMBERS_GONE);
  EXPECT_FALSE(failed_[0].retryable());
  EXPECT_THAT(failed_[0].reason(), ::testing::HasSubstr("members_gone: window member"));
}

TEST_F(WorkerDaemonMetricsTest, DrainWithinGraceFinishesAndReportsTheJob) {
  namespace v1 = ::steadyeval::v1;
  const std::string task_text = McTaskText(5);
  auto task = ParseTask("mc.jsonl", task_text);
  ASSERT_OK(task);
  fake_->seconds_per_example = 1;  // 5 s of evaluation, well within the default 20 s
  fake_->during_evaluate = [&] { daemon_->Drain(); };
  int acquires = 0;
  EXPECT_CALL(*stub_, RegisterWorker(::testing::_, ::testing::_, ::testing::_))
      .WillRepeatedly(::testing::Return(grpc::Status::OK));
  EXPECT_CALL(*stub_, AcquireJob(::testing::_, ::testing::_, ::testing::_))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::AcquireJobRequest&, v1::AcquireJobResponse* resp) {
        ++acquires;
        resp->set_has_job(true);
        *resp->mutable_lease() = RawLease(acquires, 100, task->sha256);
        return grpc::Status::OK;
      });
  EXPECT_CALL(*stub_, GetTask(::testing::_, ::testing::_, ::testing::_))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::GetTaskRequest&, v1::TaskContent* content) {
        content->set_filename("mc.jsonl");
        content->set_content(task_text);
        return grpc::Status::OK;
      });
  EXPECT_CALL(*stub_, ReportResultsRaw(::testing::_, ::testing::_))
      .WillOnce([&](grpc::ClientContext*, v1::ReportResultsResponse*) {
        return testing::RecordingReportWriter(&reports_);
      });
  EXPECT_CALL(*stub_, FailJob(::testing::_, ::testing::_, ::testing::_)).Times(0);
  ASSERT_OK(daemon_->Run());
  EXPECT_EQ(acquires, 1);
  EXPECT_EQ(daemon_->jobs_done(), 1);
  EXPECT_EQ(reports_.size(), 1u);
}

TEST_F(WorkerDaemonMetricsTest, DrainWhileIdleStopsPollingAndHandsBackALateLease) {
  namespace v1 = ::steadyeval::v1;
  int acquires = 0;
  EXPECT_CALL(*stub_, RegisterWorker(::testing::_, ::testing::_, ::testing::_))
      .WillRepeatedly(::testing::Return(grpc::Status::OK));
  EXPECT_CALL(*stub_, AcquireJob(::testing::_, ::testing::_, ::testing::_))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::AcquireJobRequest&, v1::AcquireJobResponse* resp) {
        ++acquires;
        daemon_->Drain();  // the signal comes during the long poll, which still leases a job
        resp->set_has_job(true);
        *resp->mutable_lease() = RawLease(7, 100, std::string(64, 'a'));
        return grpc::Status::OK;
      });
  EXPECT_CALL(*stub_, FailJob(::testing::_, ::testing::_, ::testing::_))
      .WillOnce([&](grpc::ClientContext*, const v1::FailJobRequest& req, v1::FailJobResponse*) {
        failed_.push_back(req);
        return grpc::Status::OK;
      });
  ASSERT_OK(daemon_->Run());
  EXPECT_EQ(acquires, 1);
  EXPECT_TRUE(fake_->loaded.empty());
  ASSERT_EQ(failed_.size(), 1u);
  EXPECT_EQ(failed_[0].job_id(), 7u);
  EXPECT_EQ(failed_[0].reason(), kWorkerStoppingReason);
  EXPECT_EQ(failed_[0].failure(), v1::JOB_FAILURE_WORKER_STOPPING);
}

// A heartbeat answered ABORTED (the job was re-leased elsewhere) while the job is
// evaluated: the evaluation is cancelled at its next cancel point, nothing is reported or
// failed, and the worker goes back to acquiring. The coordinator registers the worker
// with `registered_interval_ms`; the lease lasts `lease_ttl_ms`; the heartbeat must come
// once the fake clock has moved `period_s`, in the middle of the evaluation.
class WorkerDaemonLeaseLostTest : public WorkerDaemonMetricsTest {
 protected:
  void ExpectAbortedHeartbeatDropsTheJob(int64_t registered_interval_ms, int64_t lease_ttl_ms,
                                         double period_s) {
    namespace v1 = ::steadyeval::v1;
    const std::string task_text = McTaskText(5);
    auto task = ParseTask("mc.jsonl", task_text);
    ASSERT_OK(task);
    fake_->clock = nullptr;  // time moves only when this test moves it
    heartbeat_interval_ms_ = registered_interval_ms;
    absl::Notification heartbeat_sent;
    std::vector<v1::HeartbeatRequest> heartbeats;  // read once the heartbeat thread is gone
    heartbeat_ = [&](const v1::HeartbeatRequest& req) {
      heartbeats.push_back(req);
      if (!heartbeat_sent.HasBeenNotified()) heartbeat_sent.Notify();
      return grpc::Status(grpc::StatusCode::ABORTED, "job 1 is leased to worker w2 with epoch 2");
    };
    fake_->during_evaluate = [&] {
      clock_.WaitForWaiters(1);  // the heartbeat thread waits out its period
      clock_.AdvanceSeconds(period_s);
      // Real time bounds only how long a broken daemon (no heartbeat at this period) takes
      // to fail the expectations below; a passing run never waits it out.
      ASSERT_TRUE(heartbeat_sent.WaitForNotificationWithTimeout(absl::Seconds(20)))
          << "no heartbeat after " << period_s << " s";
      clock_.WaitForWaiters(1);  // waiting again: it has marked the lease lost
    };
    v1::LeasedJob lease = RawLease(1, 100, task->sha256);
    lease.set_lease_ttl_ms(lease_ttl_ms);
    RunLeases(task_text, {lease});

    EXPECT_EQ(fake_->cancelled, 1);
    EXPECT_EQ(fake_->examples_evaluated, 1);  // stopped at the first cancel point
    EXPECT_TRUE(reports_.empty());            // nothing partial is reported
    EXPECT_TRUE(failed_.empty());             // and no attempt spent: the lease is not ours
    EXPECT_EQ(daemon_->jobs_done(), 0);
    EXPECT_EQ(acquire_calls_, 2);  // back to acquiring (the second call stops the daemon)
    EXPECT_EQ(Series("steadyeval_worker_busy"), 0.0);
    ASSERT_EQ(heartbeats.size(), 1u);  // none after the lease was lost
    EXPECT_EQ(heartbeats[0].job_id(), 1u);
    EXPECT_EQ(heartbeats[0].epoch(), 1u);
    EXPECT_EQ(heartbeats[0].lease_secret(), "secret-1");
  }
};

// At the coordinator's period (7 s), not a third of the 600 s lease.
TEST_F(WorkerDaemonLeaseLostTest, AHeartbeatAnsweredAbortedDropsTheJob) {
  ExpectAbortedHeartbeatDropsTheJob(/*registered_interval_ms=*/7000, /*lease_ttl_ms=*/600000,
                                    /*period_s=*/7);
}

// A coordinator that gives no period: a third of the lease's TTL.
TEST_F(WorkerDaemonLeaseLostTest, WithoutARegisteredPeriodHeartbeatsAtAThirdOfTheLease) {
  ExpectAbortedHeartbeatDropsTheJob(/*registered_interval_ms=*/0, /*lease_ttl_ms=*/30000,
                                    /*period_s=*/10);
}

// A hard stop (Stop()) during the evaluation cancels it at its next cancel point; nothing is
// reported or failed (the lease runs out on the coordinator) and Run() returns.
TEST_F(WorkerDaemonMetricsTest, StopCancelsTheEvaluationAndReportsNothing) {
  const std::string task_text = McTaskText(5);
  auto task = ParseTask("mc.jsonl", task_text);
  ASSERT_OK(task);
  fake_->during_evaluate = [&] { daemon_->Stop(); };
  RunLeases(task_text, {RawLease(1, 100, task->sha256), RawLease(2, 200, task->sha256)});
  EXPECT_EQ(fake_->cancelled, 1);
  EXPECT_EQ(fake_->examples_evaluated, 1);
  EXPECT_TRUE(reports_.empty());
  EXPECT_TRUE(failed_.empty());
  EXPECT_EQ(acquire_calls_, 1);
  EXPECT_EQ(daemon_->jobs_done(), 0);
}

// The setup both outage tests share: a daemon on a fake clock over a mocked stub whose
// registration succeeds, whose first AcquireJob leases raw job 1 (step 100, `lease_ttl_ms`)
// and whose next one stops the daemon.
struct OutageSetup {
  FakeClock clock;  // moves only when a test moves it: heartbeats come when it says
  std::shared_ptr<::steadyeval::v1::MockWorkerServiceStub> stub =
      std::make_shared<::steadyeval::v1::MockWorkerServiceStub>();
  std::unique_ptr<WorkerDaemon> daemon;
  int acquired = 0;

  OutageSetup(const std::string& task_sha256, int64_t lease_ttl_ms) {
    namespace v1 = ::steadyeval::v1;
    using ::testing::_;
    DaemonOptions options;
    options.worker_id = "w1";
    options.acquire_wait_ms = 10;
    options.clock = &clock;
    // No backoff: the outage is counted in attempts, and no retry waits for the clock.
    options.retry_backoff_ms = 0;
    options.report_backoff_max_ms = 0;
    daemon = std::make_unique<WorkerDaemon>(options, stub, std::make_unique<FakeBackend>());
    EXPECT_CALL(*stub, RegisterWorker(_, _, _)).WillRepeatedly(::testing::Return(grpc::Status::OK));
    EXPECT_CALL(*stub, AcquireJob(_, _, _))
        .WillRepeatedly([this, task_sha256, lease_ttl_ms](grpc::ClientContext*,
                                                          const v1::AcquireJobRequest&,
                                                          v1::AcquireJobResponse* resp) {
          if (acquired++ == 0) {
            resp->set_has_job(true);
            *resp->mutable_lease() = RawLease(1, 100, task_sha256);
            resp->mutable_lease()->set_lease_ttl_ms(lease_ttl_ms);
          } else {
            daemon->Stop();
          }
          return grpc::Status::OK;
        });
  }
};

// A ReportResults stream that fails with `status` (the stub takes ownership).
grpc::ClientWriterInterface<::steadyeval::v1::ReportResultsRequest>* FailingReportWriter(
    const grpc::Status& status) {
  using ::testing::_;
  auto* writer = new grpc::testing::MockClientWriter<::steadyeval::v1::ReportResultsRequest>();
  EXPECT_CALL(*writer, Write(_, _)).WillRepeatedly(::testing::Return(false));
  EXPECT_CALL(*writer, WritesDone()).WillRepeatedly(::testing::Return(false));
  EXPECT_CALL(*writer, Finish()).WillOnce(::testing::Return(status));
  return writer;
}

// A coordinator that is down (restarting) while the job fetches its task and for longer
// than the 20 report retries other errors get: the worker waits for it, the job is not
// failed (that would spend one of its attempts), and the report arrives once it is back.
TEST(WorkerDaemonOutageTest, WaitsForAnUnreachableCoordinatorInsteadOfFailingTheJob) {
  namespace v1 = ::steadyeval::v1;
  using ::testing::_;
  const std::string task_text = McTaskText(3);
  auto task = ParseTask("mc.jsonl", task_text);
  ASSERT_OK(task);
  OutageSetup setup(task->sha256, /*lease_ttl_ms=*/600000);
  auto& stub = setup.stub;
  const grpc::Status down(grpc::StatusCode::UNAVAILABLE, "failed to connect to all addresses");
  EXPECT_CALL(*stub, Heartbeat(_, _, _)).WillRepeatedly(::testing::Return(down));
  int task_fetches = 0;
  EXPECT_CALL(*stub, GetTask(_, _, _))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::GetTaskRequest&, v1::TaskContent* content) {
        if (++task_fetches <= 3) return down;
        content->set_filename("mc.jsonl");
        content->set_content(task_text);
        content->set_kind(v1::TASK_KIND_MULTIPLE_CHOICE);
        return grpc::Status::OK;
      });
  constexpr int kReportsRefused = 30;
  int report_streams = 0;
  std::vector<v1::ReportResultsRequest> reports;
  EXPECT_CALL(*stub, ReportResultsRaw(_, _))
      .WillRepeatedly([&](grpc::ClientContext*, v1::ReportResultsResponse*)
                          -> grpc::ClientWriterInterface<v1::ReportResultsRequest>* {
        if (++report_streams > kReportsRefused) return testing::RecordingReportWriter(&reports);
        return FailingReportWriter(down);
      });
  EXPECT_CALL(*stub, FailJob(_, _, _)).Times(0);

  ASSERT_OK(setup.daemon->Run());
  EXPECT_EQ(setup.daemon->jobs_done(), 1);
  EXPECT_EQ(task_fetches, 4);
  EXPECT_EQ(report_streams, kReportsRefused + 1);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].outputs_size(), 3);
}

// The coordinator committed a report but died before answering; after its restart the
// heartbeat says the job is done (ABORTED). The worker must still send its report once
// more, which the coordinator answers as a replay: the job counts as done, not dropped.
TEST(WorkerDaemonOutageTest, ALeaseFoundGoneDuringReportRetriesEndsInAReplay) {
  namespace v1 = ::steadyeval::v1;
  using ::testing::_;
  const std::string task_text = McTaskText(3);
  auto task = ParseTask("mc.jsonl", task_text);
  ASSERT_OK(task);
  OutageSetup setup(task->sha256, /*lease_ttl_ms=*/30000);  // heartbeats every 10 s
  auto& stub = setup.stub;
  std::atomic<int> heartbeats{0};
  absl::Notification heartbeat_sent;
  EXPECT_CALL(*stub, Heartbeat(_, _, _))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::HeartbeatRequest&, v1::HeartbeatResponse*) {
        if (++heartbeats == 1) heartbeat_sent.Notify();
        return grpc::Status(grpc::StatusCode::ABORTED,
                            "job 1 is done (epoch 1), not leased to worker w1 with epoch 1");
      });
  EXPECT_CALL(*stub, GetTask(_, _, _))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::GetTaskRequest&, v1::TaskContent* content) {
        content->set_filename("mc.jsonl");
        content->set_content(task_text);
        content->set_kind(v1::TASK_KIND_MULTIPLE_CHOICE);
        return grpc::Status::OK;
      });
  std::vector<v1::ReportResultsRequest> reports;
  EXPECT_CALL(*stub, ReportResultsRaw(_, _))
      .WillRepeatedly([&](grpc::ClientContext*, v1::ReportResultsResponse*)
                          -> grpc::ClientWriterInterface<v1::ReportResultsRequest>* {
        // Down until the heartbeat has found the lease gone; then the replay is answered.
        if (heartbeats.load() > 0) return testing::RecordingReportWriter(&reports);
        // The first attempt: a heartbeat period passes meanwhile.
        setup.clock.WaitForWaiters(1);  // the heartbeat thread
        setup.clock.AdvanceSeconds(10);
        // Real time bounds only how long a broken daemon takes to fail.
        EXPECT_TRUE(heartbeat_sent.WaitForNotificationWithTimeout(absl::Seconds(20)));
        setup.clock.WaitForWaiters(1);  // waiting again: the lease is marked lost
        return FailingReportWriter(grpc::Status(grpc::StatusCode::UNAVAILABLE, "Socket closed"));
      });
  EXPECT_CALL(*stub, FailJob(_, _, _)).Times(0);

  ASSERT_OK(setup.daemon->Run());
  EXPECT_EQ(heartbeats.load(), 1);
  EXPECT_EQ(setup.daemon->jobs_done(), 1);
  EXPECT_EQ(reports.size(), 1u);
}

TEST(WorkerDaemonMetricsEndpointTest, ServesEveryWorkerSeriesOnMetrics) {
  using ::testing::HasSubstr;
  DaemonOptions options;
  options.name = "w1";
  options.metrics_listen = "127.0.0.1:0";
  WorkerDaemon daemon(options, std::make_shared<::steadyeval::v1::MockWorkerServiceStub>(),
                      std::make_unique<FakeBackend>());
  auto bound = daemon.StartMetrics();
  ASSERT_OK(bound);
  ASSERT_TRUE(absl::StartsWith(*bound, "127.0.0.1:")) << *bound;
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(bound->substr(bound->rfind(':') + 1), &port)) << *bound;
  ASSERT_GT(port, 0);
  const std::string response = HttpGet(port, "/metrics");
  EXPECT_THAT(response, HasSubstr(" 200 OK"));
  for (const char* series :
       {"steadyeval_worker_tokens_total{worker=\"w1\"} 0\n",
        "steadyeval_worker_examples_total{worker=\"w1\"} 0\n",
        "steadyeval_worker_jobs_total{outcome=\"done\",worker=\"w1\"} 0\n",
        "steadyeval_worker_jobs_total{outcome=\"failed\",worker=\"w1\"} 0\n",
        "steadyeval_worker_busy{worker=\"w1\"} 0\n",
        "steadyeval_worker_checkpoint_load_seconds_count{worker=\"w1\"} 0\n",
        "steadyeval_worker_checkpoint_load_bytes_total{worker=\"w1\"} 0\n",
        "steadyeval_worker_eval_seconds_total{worker=\"w1\"} 0\n",
        "steadyeval_worker_tokens_per_second{worker=\"w1\"} 0\n",
        "steadyeval_worker_examples_per_second{worker=\"w1\"} 0\n",
        "steadyeval_worker_cache_bytes{worker=\"w1\"} 0\n",
        "steadyeval_worker_cache_limit_bytes{worker=\"w1\"} 107374182400\n",
        "steadyeval_worker_cache_evictions_total{worker=\"w1\"} 0\n",
        "steadyeval_worker_cache_fetched_bytes_total{worker=\"w1\"} 0\n",
        "steadyeval_worker_cache_hits_total{worker=\"w1\"} 0\n",
        "steadyeval_worker_cache_misses_total{worker=\"w1\"} 0\n",
        "steadyeval_worker_conversions_total{result=\"ok\",worker=\"w1\"} 0\n",
        "steadyeval_worker_conversions_total{result=\"failed\",worker=\"w1\"} 0\n",
        "steadyeval_worker_conversions_total{result=\"timeout\",worker=\"w1\"} 0\n",
        "# TYPE steadyeval_worker_device_memory_bytes gauge\n",
        "steadyeval_worker_device_memory_bytes{device=\"cpu\",kind=\"used\",worker=\"w1\"} ",
        "steadyeval_worker_device_memory_bytes{device=\"cpu\",kind=\"peak\",worker=\"w1\"} "}) {
    EXPECT_THAT(response, HasSubstr(series));
  }
}

TEST(WorkerDaemonMetricsEndpointTest, NoEndpointWithoutListenAddress) {
  WorkerDaemon daemon(DaemonOptions{}, std::make_shared<::steadyeval::v1::MockWorkerServiceStub>(),
                      std::make_unique<FakeBackend>());
  auto bound = daemon.StartMetrics();
  ASSERT_OK(bound);
  EXPECT_EQ(*bound, "");
  // The metrics are still kept.
  EXPECT_EQ(testing::SeriesValue(daemon.metrics().Collect(), "steadyeval_worker_busy",
                                        {{"worker", ""}}),
            0.0);
}

// A collectable with one fixed counter, to see exactly what the endpoint serves.
class OneCounter : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    ++collects;
    prometheus::MetricFamily family;
    family.name = "test_requests_total";
    family.help = "requests";
    family.type = prometheus::MetricType::Counter;
    prometheus::ClientMetric metric;
    metric.counter.value = 7;
    family.metric.push_back(metric);
    return {family};
  }
  mutable int collects = 0;
};

TEST(MetricsHttpServerTest, ServesTheCollectablesOnMetricsOnly) {
  auto counter = std::make_shared<OneCounter>();
  auto server = MetricsHttpServer::Start("127.0.0.1:0", {counter, counter});
  ASSERT_OK(server);
  const int port = (*server)->port();
  ASSERT_GT(port, 0);
  const std::string response = HttpGet(port, "/metrics?x=1");
  EXPECT_THAT(response, ::testing::StartsWith("HTTP/1.0 200 OK\r\n"));
  EXPECT_THAT(response, ::testing::HasSubstr("Content-Type: text/plain; version=0.0.4"));
  // Both collectables, in order: the family twice.
  const std::string body = HttpOkBody(response);
  EXPECT_EQ(body, "# HELP test_requests_total requests\n# TYPE test_requests_total counter\n"
                  "test_requests_total 7\n"
                  "# HELP test_requests_total requests\n# TYPE test_requests_total counter\n"
                  "test_requests_total 7\n");
  EXPECT_THAT(response, ::testing::HasSubstr(absl::StrCat("Content-Length: ", body.size(), "\r\n")));
  EXPECT_EQ(counter->collects, 2);
  // Every scrape collects afresh; other paths and methods do not collect.
  EXPECT_EQ(HttpOkBody(HttpGet(port, "/metrics")), body);
  EXPECT_EQ(counter->collects, 4);
  EXPECT_THAT(HttpGet(port, "/"), ::testing::StartsWith("HTTP/1.0 404 Not Found\r\n"));
  EXPECT_THAT(HttpGet(port, "/metricsx"), ::testing::StartsWith("HTTP/1.0 404 Not Found\r\n"));
  EXPECT_EQ(counter->collects, 4);
}

TEST(MetricsHttpServerTest, RejectsBadAddressesAndTakenPorts) {
  EXPECT_THAT(MetricsHttpServer::Start("127.0.0.1", {}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("HOST:PORT")));
  EXPECT_THAT(MetricsHttpServer::Start("127.0.0.1:99999", {}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  auto first = MetricsHttpServer::Start("127.0.0.1:0", {});
  ASSERT_OK(first);
  EXPECT_THAT(MetricsHttpServer::Start(absl::StrCat("127.0.0.1:", (*first)->port()), {}).status(),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::HasSubstr("cannot listen")));
}

TEST(MetricsHttpServerTest, StopsWhenDestroyedAndFreesThePort) {
  auto server = MetricsHttpServer::Start("127.0.0.1:0", {});
  ASSERT_OK(server);
  const int port = (*server)->port();
  server->reset();
  EXPECT_EQ(HttpGet(port, "/metrics"), "");
  EXPECT_OK(MetricsHttpServer::Start(absl::StrCat("127.0.0.1:", port), {}).status());
}

}  // namespace
}  // namespace steadyeval
