#include "server/ingest/report_ingest.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "api/variant_proto.h"
#include "common/scoring.h"
#include "common/status.h"

namespace steadyeval {

struct ReportIngest::Checked {
  v1::Job job;        // as leased
  std::string where;  // "job J epoch E", for messages
  struct Outputs {
    std::map<uint32_t, const v1::ExampleOutput*> by_index;  // into the chunks
    bool complete = false;
  };
  std::map<std::pair<uint64_t, std::string>, Outputs> outputs;  // by (step, task)
  std::set<uint64_t> reported_steps;
  uint64_t end_step = 0;  // the job's checkpoint
  std::map<uint64_t, v1::ParameterDrift> drifts;  // by to_step
};

absl::Status ReportIngest::CheckStart(const v1::ReportResultsRequest& first) const {
  RETURN_IF_ERROR(leases_->CheckLeaseSecret(first.job_id(), first.epoch(), first.worker_id(),
                                            first.lease_secret()));
  return scheduler_->CheckReport(first.job_id(), first.epoch(), first.worker_id()).status();
}

absl::StatusOr<ReportIngest::Checked> ReportIngest::Check(
    const v1::Job& job, const std::vector<v1::ReportResultsRequest>& chunks) {
  const v1::ReportResultsRequest& first = chunks.front();
  Checked checked;
  checked.job = job;
  checked.where = absl::StrCat("job ", first.job_id(), " epoch ", first.epoch());
  const std::string& where = checked.where;

  // The steps a job's results may be for: each step of a raw job, a window's end step.
  std::set<uint64_t> allowed_steps;
  if (IsRawJob(job)) {
    allowed_steps.insert(job.steps().begin(), job.steps().end());
  } else if (!job.steps().empty()) {
    allowed_steps.insert(job.steps(job.steps_size() - 1));
  }
  std::map<std::string, const v1::TaskRef*> job_tasks;
  for (const v1::TaskRef& ref : job.tasks()) job_tasks[ref.name()] = &ref;

  for (const v1::ReportResultsRequest& chunk : chunks) {
    if (chunk.job_id() != first.job_id() || chunk.epoch() != first.epoch() ||
        chunk.worker_id() != first.worker_id()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": one report stream carries one (worker, job, epoch); got job ",
          chunk.job_id(), " epoch ", chunk.epoch(), " from worker ", chunk.worker_id()));
    }
    if (!allowed_steps.count(chunk.step())) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": step ", chunk.step(), " is not a step this job evaluates"));
    }
    auto task = job_tasks.find(chunk.task().name());
    if (task == job_tasks.end() || task->second->sha256() != chunk.task().sha256()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": task ", chunk.task().name(), " (",
                                                     chunk.task().sha256(),
                                                     ") is not one of this job's tasks"));
    }
    Checked::Outputs& a = checked.outputs[{chunk.step(), chunk.task().name()}];
    if (a.complete) {
      return absl::InvalidArgumentError(absl::StrCat(where, " step ", chunk.step(), " task ",
                                                     chunk.task().name(),
                                                     ": outputs sent after task_complete"));
    }
    for (const v1::ExampleOutput& out : chunk.outputs()) {
      if (!a.by_index.emplace(out.index(), &out).second) {
        return absl::InvalidArgumentError(absl::StrCat(where, " step ", chunk.step(), " task ",
                                                       chunk.task().name(), ": example ",
                                                       out.index(), " reported twice"));
      }
    }
    a.complete = chunk.task_complete();
  }

  for (const auto& [key, a] : checked.outputs) checked.reported_steps.insert(key.first);
  checked.end_step = job.steps().empty() ? 0 : job.steps(job.steps_size() - 1);
  const uint64_t end_step = checked.end_step;
  if (!checked.reported_steps.count(end_step)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": no outputs for step ", end_step, " (the job's checkpoint)"));
  }

  // Drift of adjacent checkpoint pairs (a raw job's drift targets), on any message.
  for (const v1::ReportResultsRequest& chunk : chunks) {
    for (const v1::ParameterDrift& d : chunk.drifts()) {
      if (!IsRawJob(job) || d.from_step() >= d.to_step() || !std::isfinite(d.l2()) ||
          !std::isfinite(d.relative()) || d.l2() < 0 || d.relative() < 0 ||
          (d.from_step() != end_step && d.to_step() != end_step)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": drift ", d.from_step(), " -> ", d.to_step(), " (l2 ", d.l2(),
            ", relative ", d.relative(), ") is not one of this job's drift targets"));
      }
      checked.drifts[d.to_step()] = d;
    }
  }
  return checked;
}

absl::StatusOr<std::vector<ReportIngest::Value>> ReportIngest::Score(const v1::Job& job,
                                                                     const Checked& checked) const {
  const std::string& where = checked.where;
  absl::StatusOr<JobKind> kind = JobKindOf(job);
  if (!kind.ok()) {  // never written by this coordinator's scheduler
    return absl::DataLossError(absl::StrCat(where, ": ", kind.status().message()));
  }
  const Variant variant = kind->variant();
  std::vector<Value> values;
  for (uint64_t step : checked.reported_steps) {
    for (const v1::TaskRef& ref : job.tasks()) {
      auto it = checked.outputs.find({step, ref.name()});
      if (it == checked.outputs.end() || !it->second.complete) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, " step ", step, ": task ", ref.name(),
            it == checked.outputs.end() ? " has no outputs" : " was not marked task_complete",
            " (report every task of the job before closing the stream)"));
      }
      ASSIGN_OR_RETURN(std::shared_ptr<const Task> task, tasks_->Load(ref));
      const auto& outputs = it->second.by_index;
      if (outputs.size() != task->size() ||
          (!outputs.empty() && outputs.rbegin()->first >= task->size())) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, " step ", step, ": task ", ref.name(), " has ", task->size(),
            " examples but the report holds ", outputs.size(),
            " distinct outputs (indices 0..", task->size() == 0 ? 0 : task->size() - 1,
            " expected)"));
      }
      std::vector<RawOutput> raw;
      raw.reserve(outputs.size());
      for (const auto& [index, out] : outputs) {
        raw.push_back({out->output(), {out->option_logliks().begin(), out->option_logliks().end()}});
      }
      absl::StatusOr<TaskScore> scored = ScoreTask(*task, raw);
      if (!scored.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(where, " step ", step, ": ",
                                                       scored.status().message()));
      }
      std::vector<v1::Prediction> predictions;
      predictions.reserve(outputs.size());
      for (const auto& [index, out] : outputs) {  // indices 0..size-1, checked above
        v1::Prediction p;
        p.set_output(out->output());
        p.set_example(index);
        *p.mutable_option_logliks() = out->option_logliks();
        predictions.push_back(std::move(p));
      }
      v1::Score score;
      score.set_run(job.run());
      score.set_task(ref.name());
      score.set_task_sha256(ref.sha256());
      SetVariant(score, variant);
      score.set_step(step);
      score.set_examples(static_cast<uint32_t>(outputs.size()));
      ApplyTaskScore(*scored, score, predictions);
      values.emplace_back(std::move(score), std::move(predictions));
    }
  }
  return values;
}

absl::StatusOr<IngestedReport> ReportIngest::Ingest(
    const std::vector<v1::ReportResultsRequest>& chunks) {
  if (chunks.empty()) {
    return absl::InvalidArgumentError("the report stream carried no messages");
  }
  const v1::ReportResultsRequest& first = chunks.front();
  RETURN_IF_ERROR(leases_->CheckLeaseSecret(first.job_id(), first.epoch(), first.worker_id(),
                                            first.lease_secret()));
  workers_->Touch(first.worker_id()).IgnoreError();  // heard from; the lease check follows
  ASSIGN_OR_RETURN(ReportCheck check,
                   scheduler_->CheckReport(first.job_id(), first.epoch(), first.worker_id()));
  IngestedReport report;
  if (check.replay) {
    report.response.set_replay(true);
    return report;
  }
  const v1::Job& job = check.job;
  ASSIGN_OR_RETURN(const Checked checked, Check(job, chunks));
  ASSIGN_OR_RETURN(std::vector<Value> values, Score(job, checked));
  uint32_t written = 0;
  for (const auto& [score, predictions] : values) {
    written += static_cast<uint32_t>(predictions.size());
  }

  Analytics::Update update(analytics_);
  ASSIGN_OR_RETURN(ReportCheck again,
                   scheduler_->CheckReport(first.job_id(), first.epoch(), first.worker_id()));
  if (again.replay) {  // committed by a concurrent identical report
    report.response.set_replay(true);
    return report;
  }
  ASSIGN_OR_RETURN(v1::Run run, runs_->Get(job.run()));
  // One tokenizer per run: the first result that names one pins it (under the analytics
  // lock, so two first reports cannot pin different ones; through RunTable::Change, which
  // re-reads the record under the run's write lock, so a concurrent UpdateRun is not
  // overwritten).
  const std::string& tokenizer = first.tokenizer_sha256();
  if (!tokenizer.empty() && run.tokenizer_sha256().empty()) {
    absl::StatusOr<v1::Run> pinned =
        runs_->Change(job.run(), [&](v1::Run& record) -> absl::Status {
          record.set_tokenizer_sha256(tokenizer);
          record.set_tokenizer_pinned_step(checked.end_step);
          Store::Batch batch = store_->NewBatch();
          batch.PutRun(record);
          ASSIGN_OR_RETURN(report.done,
                           Commit(update, record, first, checked, std::move(values),
                                  std::move(batch)));
          return absl::OkStatus();
        });
    RETURN_IF_ERROR(pinned.status());
  } else if (!tokenizer.empty() && run.tokenizer_sha256() != tokenizer) {
    return absl::InvalidArgumentError(absl::StrCat(
        checked.where, " step ", checked.end_step, ": the checkpoint's tokenizer (sha256 ",
        tokenizer, ") differs from the one run ", job.run(), " is pinned to (sha256 ",
        run.tokenizer_sha256(), ", first seen at step ", run.tokenizer_pinned_step(),
        "); scores under another tokenizer are not comparable: evaluate it in a new run"));
  } else {
    ASSIGN_OR_RETURN(report.done, Commit(update, run, first, checked, std::move(values),
                                         store_->NewBatch()));
  }
  update.Committed();
  report.committed = true;
  report.touched_tasks = update.TouchedTasks();
  report.response.set_predictions_written(written);
  return report;
}

absl::StatusOr<CompletedJob> ReportIngest::Commit(Analytics::Update& update, const v1::Run& run,
                                                  const v1::ReportResultsRequest& first,
                                                  const Checked& checked,
                                                  std::vector<Value> values, Store::Batch batch) {
  const std::string& name = run.config().name();
  for (auto& [score, predictions] : values) {
    RETURN_IF_ERROR(
        Annotate(update.PutValue(batch, score, std::move(predictions)), checked.where));
  }
  const std::vector<uint64_t> steps = scheduler_->AdmittedSteps(name);
  if (IsRawJob(checked.job)) {
    for (uint64_t step : checked.reported_steps) {
      RETURN_IF_ERROR(Annotate(update.OnRawStored(batch, run, steps, step), checked.where));
    }
  }
  for (const auto& [to, d] : checked.drifts) {
    // Only pairs still adjacent (a later admission may have split one since the lease).
    auto pos = std::lower_bound(steps.begin(), steps.end(), to);
    if (pos != steps.end() && *pos == to && pos != steps.begin() && *(pos - 1) == d.from_step()) {
      batch.PutDrift(name, d);
    }
  }
  return scheduler_->Complete(first.job_id(), first.epoch(), first.worker_id(), std::move(batch),
                              first.bos());
}

}  // namespace steadyeval
