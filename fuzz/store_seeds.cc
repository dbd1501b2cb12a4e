// Writes the seed corpus of store_fuzzer: small databases written through the store and
// the analytics code the coordinator uses (so keys, values and pair figures are what a
// real coordinator stores), dumped in store_fuzzer's input format.
//
//   fuzz_store_seeds OUT_DIR   (built on demand: ninja -C build fuzz_store_seeds)
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/scoring.h"
#include "common/status.h"
#include "common/task.h"
#include "rocksdb/db.h"
#include "server/analytics/analytics.h"
#include "server/store/store.h"
#include "api/task_content.h"

namespace steadyeval {
namespace {

v1::TaskContent MakeTask(const std::string& filename, const std::string& content,
                         const std::string& metric) {
  v1::TaskContent t;
  t.set_filename(filename);
  t.set_content(content);
  t.mutable_ref()->set_name(TaskNameFromFilename(filename));
  t.mutable_ref()->set_sha256(TaskContentHash(content, ""));
  t.mutable_ref()->set_metric(metric);
  t.set_kind(absl::EndsWith(filename, ".jsonl") ? v1::TASK_KIND_MULTIPLE_CHOICE
                                                : v1::TASK_KIND_GENERATION);
  return t;
}

struct Scenario {
  std::string name;
  std::vector<uint64_t> steps;      // admitted checkpoints, evaluated raw
  bool with_pairs = true;           // false: drop the pair records (schema-1 database)
  bool with_windows = false;        // avg@2 job pending, ensemble window configured
  bool leased_job = false;          // one job still leased by a worker
};

absl::Status WriteScenario(const Scenario& s, const std::string& dir) {
  ASSIGN_OR_RETURN(std::unique_ptr<Store> store, Store::Open(dir));
  const v1::TaskContent mc = MakeTask(
      "mc.jsonl",
      "{\"id\": 0, \"query\": \"q0\", \"choices\": [\"a\", \"b\"], \"gold\": 1}\n"
      "{\"id\": 1, \"query\": \"q1\", \"choices\": [\"a\", \"b\", \"c\"], \"gold\": 0}\n",
      "");
  const v1::TaskContent qa = MakeTask(
      "qa.json",
      R"({"instruction": "add", "output_length": 8, "metrics": ["exact_match", "char_f1"],
          "few_shots": [{"input": "0+0", "output": "0"}],
          "samples": [{"input": "1+1", "output": "2"}, {"input": "2+2", "output": "4"}]})",
      "");
  v1::Run run;
  run.mutable_config()->set_name(s.name);
  run.mutable_config()->set_source("/ckpt/" + s.name);
  *run.mutable_config()->add_tasks() = mc.ref();
  *run.mutable_config()->add_tasks() = qa.ref();
  run.mutable_config()->mutable_tasks(1)->set_category("QA");
  if (s.with_windows) {
    run.mutable_config()->add_average_windows(2);
    run.mutable_config()->add_ensemble_windows(2);
  }
  run.set_created_unix_ms(1'700'000'000'000);
  Store::Batch batch = store->NewBatch();
  batch.PutTask(mc);
  batch.PutTask(qa);
  batch.PutRun(run);
  uint64_t job_id = 1;
  for (size_t i = 0; i < s.steps.size(); ++i) {
    v1::Checkpoint c;
    c.set_run(s.name);
    c.set_step(s.steps[i]);
    c.set_path(absl::StrCat("/ckpt/", s.name, "/step_", s.steps[i]));
    c.set_state(v1::CHECKPOINT_EVALUATED);
    c.set_admitted_unix_ms(1'700'000'000'000 + static_cast<int64_t>(i));
    v1::Job job;
    job.set_id(job_id++);
    job.set_run(s.name);
    job.set_kind("raw");
    job.add_steps(s.steps[i]);
    *job.add_tasks() = mc.ref();
    *job.add_tasks() = qa.ref();
    job.set_state(v1::JOB_DONE);
    job.set_attempts(1);
    job.set_epoch(1);
    if (s.leased_job && i + 1 == s.steps.size()) {
      c.set_state(v1::CHECKPOINT_EVALUATING);
      job.set_state(v1::JOB_LEASED);
      job.set_worker_id("w1");
    }
    batch.PutCheckpoint(c);
    batch.PutJob(job);
    if (s.with_windows && i > 0) {
      v1::Job avg = job;
      avg.set_id(job_id++);
      avg.set_kind("avg@2");
      avg.clear_steps();
      avg.add_steps(s.steps[i - 1]);
      avg.add_steps(s.steps[i]);
      avg.set_state(v1::JOB_PENDING);
      avg.set_attempts(0);
      avg.set_epoch(0);
      batch.PutJob(avg);
    }
  }
  batch.PutNextJobId(job_id);
  if (!s.steps.empty()) {
    v1::ParameterDrift drift;
    drift.set_from_step(s.steps.front());
    drift.set_to_step(s.steps.back());
    drift.set_l2(0.25);
    drift.set_relative(0.001);
    batch.PutDrift(s.name, drift);
  }
  RETURN_IF_ERROR(store->Commit(std::move(batch)));

  // Scores, predictions and pairs as the coordinator writes them for each report.
  Analytics analytics(store.get(), [&](const v1::TaskRef& ref)
                                       -> absl::StatusOr<std::shared_ptr<const Task>> {
    const v1::TaskContent& content = ref.name() == "mc" ? mc : qa;
    ASSIGN_OR_RETURN(Task task, ParseTaskContent(content, ref));
    return std::make_shared<const Task>(std::move(task));
  });
  for (size_t i = 0; i < s.steps.size(); ++i) {
    if (s.leased_job && i + 1 == s.steps.size()) break;
    for (const v1::TaskContent* content : {&mc, &qa}) {
      ASSIGN_OR_RETURN(Task task, ParseTaskContent(*content, content->ref()));
      std::vector<RawOutput> outputs;
      if (task.kind == TaskKind::kMultipleChoice) {
        outputs.push_back({std::to_string(i % 2), {-1.0 - (i % 2), -1.5 + (i % 2)}});
        outputs.push_back({"0", {-0.5, -2.0, -3.0 - i}});
      } else {
        outputs.push_back({"2", {}});
        outputs.push_back({i % 2 == 0 ? "4" : "5\n\nmore", {}});
      }
      ASSIGN_OR_RETURN(TaskScore scored, ScoreTask(task, outputs));
      v1::Score score;
      score.set_run(s.name);
      score.set_task(task.name);
      score.set_task_sha256(task.sha256);
      score.set_variant("raw");
      score.set_step(s.steps[i]);
      score.set_examples(static_cast<uint32_t>(outputs.size()));
      std::vector<v1::Prediction> predictions(outputs.size());
      for (size_t e = 0; e < outputs.size(); ++e) {
        predictions[e].set_output(outputs[e].output);
        predictions[e].set_example(static_cast<uint32_t>(e));
        for (double l : outputs[e].option_logliks) predictions[e].add_option_logliks(l);
      }
      ApplyTaskScore(scored, score, predictions);
      Store::Batch values = store->NewBatch();
      Analytics::Update update(&analytics);
      RETURN_IF_ERROR(update.PutValue(values, score, std::move(predictions)));
      RETURN_IF_ERROR(store->Commit(std::move(values)));
      update.Committed();
    }
  }
  if (!s.with_pairs) {
    Store::Batch drop = store->NewBatch();
    RETURN_IF_ERROR(store->ScanPairs(
        s.name, "", "",
        [&](const std::string& task, const std::string& variant, const v1::PairStats& p) {
          drop.DeletePair(s.name, task, variant, p.to_step());
          return true;
        }));
    RETURN_IF_ERROR(store->Commit(std::move(drop)));
  }
  return absl::OkStatus();
}

// Dumps every record but meta's schema_version (store_fuzzer writes that itself) in
// store_fuzzer's input format.
absl::StatusOr<std::string> Dump(const std::string& dir) {
  const std::vector<std::string> families = Store::FamilyNames(Store::kSchemaVersion);
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (const std::string& name : families) descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), dir, descriptors,
                                                   &handles, &raw);
  if (!s.ok()) return absl::InternalError(s.ToString());
  std::unique_ptr<rocksdb::DB> db(raw);
  std::string out;
  auto put_le = [&](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  for (size_t f = 0; f < families.size(); ++f) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[f + 1]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      if (families[f] == "meta" && it->key() == "schema_version") continue;
      if (it->key().size() > 0xffff || it->value().size() > 0xffff) {
        return absl::InternalError("record too large for the fuzz format");
      }
      put_le(f, 1);
      put_le(it->key().size(), 2);
      out.append(it->key().data(), it->key().size());
      put_le(it->value().size(), 2);
      out.append(it->value().data(), it->value().size());
    }
  }
  for (rocksdb::ColumnFamilyHandle* h : handles) db->DestroyColumnFamilyHandle(h);
  return out;
}

}  // namespace
}  // namespace steadyeval

int main(int argc, char** argv) {
  using namespace steadyeval;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::vector<Scenario> scenarios = {
      {"evaluated", {100, 200, 300}, true, false, false},
      {"no_pairs", {100, 200, 300}, false, false, false},
      {"windows", {100, 200, 300}, true, true, true},
      {"fresh", {100}, true, false, true},
  };
  const std::filesystem::path scratch =
      std::filesystem::temp_directory_path() / "steadyeval-store-seeds";
  for (const Scenario& s : scenarios) {
    std::filesystem::remove_all(scratch);
    std::filesystem::create_directories(scratch);
    const std::string dir = (scratch / "db").string();
    absl::Status written = WriteScenario(s, dir);
    absl::StatusOr<std::string> dump = written.ok() ? Dump(dir) : written;
    if (!dump.ok()) {
      std::fprintf(stderr, "%s: %s\n", s.name.c_str(), dump.status().ToString().c_str());
      return 1;
    }
    const std::filesystem::path out = std::filesystem::path(argv[1]) / (s.name + ".bin");
    std::ofstream(out, std::ios::binary) << *dump;
    std::printf("%s: %zu bytes\n", out.c_str(), dump->size());
  }
  std::filesystem::remove_all(scratch);
  return 0;
}
