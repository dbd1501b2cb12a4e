// The worker daemon with the real libtorch backend against a scripted coordinator (a gRPC
// mock stub): corrupt checkpoints fail their job with a message naming the file and the
// tensor, a tokenizer other than the run's pinned one fails its job, and the worker keeps
// taking jobs — the last, good checkpoint is evaluated and reported with its tokenizer's
// hash. Corrupt folders are made here from the committed fixture tests/fixtures/llama/gqa
// (tiny random Llama, see llama_model_test.cc) and tests/fixtures/llama/sharded.
#include <filesystem>

#include <grpcpp/test/mock_stream.h>

#include <ATen/ATen.h>

#include "absl/strings/str_replace.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "steadyeval/v1/worker_service_mock.grpc.pb.h"
#include "worker/checkpoint/checkpoint_reader.h"
#include "worker/checkpoint/checkpoint_writer.h"
#include "worker/daemon/daemon.h"
#include "worker/eval/eval_backend.h"
#include "worker/daemon/test_daemon.h"
#include "worker/test_fixtures.h"
#include "worker/tokenizer/tokenizer.h"

namespace steadyeval {
namespace {

namespace v1 = ::steadyeval::v1;
using namespace testing_fixtures;
using ::testing::_;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kTaskText[] =
    R"({"id": "a", "query": "Tokyo is in", "choices": [" Japan", " France"], "gold": 0})"
    "\n"
    R"({"id": "b", "query": "Paris is in", "choices": [" Japan", " France"], "gold": 1})"
    "\n";

// A copy of the gqa fixture with the SentencePiece fixture tokenizer next to it.
std::string GoodCheckpoint(const std::string& label) {
  std::string dir = CopyFixture(LlamaFixture("gqa"), label);
  std::filesystem::copy_file(TokenizerFixture(), dir + "/tokenizer.model");
  return dir;
}

// The gqa checkpoint with `tensor` rewritten to another shape (same data, reshaped).
std::string WrongShapeCheckpoint(const std::string& tensor) {
  const std::string good = GoodCheckpoint("wrong_shape_src");
  auto reader = CheckpointReader::Open(good);
  EXPECT_OK(reader);
  TensorMap map("wrong shape", (*reader)->config_json());
  for (const std::string& name : (*reader)->TensorNames()) {
    at::Tensor t = *(*reader)->Tensor(name);
    if (name == tensor) t = t.reshape({-1, 2 * t.size(-1)});
    EXPECT_OK(map.Add(name, t));
  }
  const std::string out = ScratchDir("wrong_shape") + "/ckpt";
  EXPECT_OK(WriteCheckpoint(map, out, /*shards=*/1, good));
  return out;
}

v1::LeasedJob RawLease(uint64_t id, const std::string& dir, const std::string& task_sha) {
  v1::LeasedJob lease;
  lease.mutable_job()->set_id(id);
  lease.mutable_job()->set_run("r");
  lease.mutable_job()->set_kind("raw");
  lease.mutable_job()->set_epoch(1);
  lease.mutable_job()->add_steps(100 * id);
  lease.add_checkpoint_paths(dir);
  lease.set_source_root(std::filesystem::path(dir).parent_path().string());
  lease.set_lease_ttl_ms(600000);
  lease.set_few_shots(0);
  v1::TaskContent* header = lease.add_task_headers();
  header->mutable_ref()->set_name("mc");
  header->mutable_ref()->set_sha256(task_sha);
  header->set_filename("mc.jsonl");
  header->set_kind(v1::TASK_KIND_MULTIPLE_CHOICE);
  return lease;
}

TEST(TorchBackendDaemonTest, CorruptCheckpointsFailTheirJobAndTheWorkerGoesOn) {
  auto task = ParseTask("mc.jsonl", kTaskText);
  ASSERT_OK(task);

  // 1. A safetensors header that is not JSON.
  const std::string bad_json = GoodCheckpoint("bad_json");
  {
    std::string header = "{not json at all}";
    std::string bytes(8, '\0');
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    WriteText(bad_json + "/model.safetensors", bytes + header);
  }
  // 2. A shard the index lists is missing.
  const std::string missing_shard = CopyFixture(LlamaFixture("sharded"), "missing_shard");
  std::filesystem::copy_file(TokenizerFixture(), missing_shard + "/tokenizer.model");
  std::filesystem::remove(missing_shard + "/model-00002-of-00002.safetensors");
  // 3. A tensor whose shape disagrees with config.json.
  const std::string wrong_shape = WrongShapeCheckpoint("model.layers.1.mlp.up_proj.weight");
  // 4. A dtype safetensors does not define (same length, so the header stays consistent).
  const std::string bad_dtype = GoodCheckpoint("bad_dtype");
  {
    std::string bytes = ReadText(bad_dtype + "/model.safetensors");
    const size_t at = bytes.find(R"("model.layers.0.input_layernorm.weight":{"dtype":"F32")");
    ASSERT_NE(at, std::string::npos);
    bytes.replace(bytes.find("F32", at), 3, "Q32");
    WriteText(bad_dtype + "/model.safetensors", bytes);
  }
  // 5. A healthy checkpoint whose tokenizer is not the one the run is pinned to.
  const std::string good = GoodCheckpoint("good");
  auto tokenizer = Tokenizer::LoadForCheckpoint(good);
  ASSERT_OK(tokenizer);
  const std::string sha = (*tokenizer)->content_sha256();
  ASSERT_EQ(sha.size(), 64u);

  std::vector<v1::LeasedJob> leases = {
      RawLease(1, bad_json, task->sha256),    RawLease(2, missing_shard, task->sha256),
      RawLease(3, wrong_shape, task->sha256), RawLease(4, bad_dtype, task->sha256),
      RawLease(5, good, task->sha256),        RawLease(6, good, task->sha256)};
  leases[4].set_tokenizer_sha256(std::string(64, 'a'));  // pinned to another tokenizer
  leases[5].set_tokenizer_sha256(sha);                    // pinned to this one

  auto stub = std::make_shared<v1::MockWorkerServiceStub>();
  auto backend = CreateTorchEvalBackend("cpu", 1);
  ASSERT_OK(backend);
  DaemonOptions options;
  options.worker_id = "w1";
  options.acquire_wait_ms = 10;
  WorkerDaemon daemon(options, stub, *std::move(backend));

  EXPECT_CALL(*stub, RegisterWorker(_, _, _)).WillRepeatedly(::testing::Return(grpc::Status::OK));
  size_t next = 0;
  EXPECT_CALL(*stub, AcquireJob(_, _, _))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::AcquireJobRequest&,
                          v1::AcquireJobResponse* resp) {
        if (next < leases.size()) {
          resp->set_has_job(true);
          *resp->mutable_lease() = leases[next++];
        } else {
          daemon.Stop();
        }
        return grpc::Status::OK;
      });
  EXPECT_CALL(*stub, GetTask(_, _, _))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::GetTaskRequest&, v1::TaskContent* c) {
        c->set_filename("mc.jsonl");
        c->set_content(kTaskText);
        c->set_kind(v1::TASK_KIND_MULTIPLE_CHOICE);
        return grpc::Status::OK;
      });
  std::map<uint64_t, v1::FailJobRequest> failures;
  EXPECT_CALL(*stub, FailJob(_, _, _))
      .WillRepeatedly([&](grpc::ClientContext*, const v1::FailJobRequest& req,
                          v1::FailJobResponse* resp) {
        failures[req.job_id()] = req;
        resp->set_state(v1::JOB_FAILED);
        return grpc::Status::OK;
      });
  std::vector<v1::ReportResultsRequest> reports;
  EXPECT_CALL(*stub, ReportResultsRaw(_, _))
      .WillRepeatedly([&](grpc::ClientContext*, v1::ReportResultsResponse*) {
        return testing_daemon::RecordingReportWriter(&reports);
      });

  ASSERT_OK(daemon.Run());

  ASSERT_EQ(failures.size(), 5u);
  for (const auto& [id, f] : failures) EXPECT_FALSE(f.retryable()) << id << ": " << f.reason();
  EXPECT_THAT(failures[1].reason(), HasSubstr(bad_json + "/model.safetensors"));
  EXPECT_THAT(failures[2].reason(), HasSubstr("model-00002-of-00002.safetensors"));
  EXPECT_THAT(failures[3].reason(),
              AllOf(HasSubstr("'model.layers.1.mlp.up_proj.weight'"),
                    HasSubstr(wrong_shape + "/model.safetensors"), HasSubstr("[32, 64]")));
  EXPECT_THAT(failures[4].reason(),
              AllOf(HasSubstr(bad_dtype + "/model.safetensors"),
                    HasSubstr("'model.layers.0.input_layernorm.weight'"), HasSubstr("Q32")));
  EXPECT_THAT(failures[5].reason(),
              AllOf(HasSubstr("tokenizer"), HasSubstr(sha), HasSubstr(std::string(64, 'a'))));
  // The worker stayed up: the last job was evaluated and reported with the hash.
  EXPECT_EQ(daemon.jobs_done(), 1);
  ASSERT_FALSE(reports.empty());
  EXPECT_EQ(reports.front().job_id(), 6u);
  EXPECT_EQ(reports.front().tokenizer_sha256(), sha);
  EXPECT_EQ(reports.front().outputs_size(), 2);
}

}  // namespace
}  // namespace steadyeval
