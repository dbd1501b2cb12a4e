// Analytics over stored predictions (DESIGN §1 step 4, §3): the per-(run, task, variant)
// stability indexes, ensembles (ens@n, ens-soft@n) and the queries that read them
// (stability table, example histories, prediction export).
//
// Values: a (run, task, variant, step) value is its Score record plus one Prediction per
// example. Every change to values goes through an Update, which holds the analytics lock
// for its lifetime, writes predictions, scores and the pair figures the change implies
// (`pairs` CF) into the caller's batch, and updates the in-memory indexes at once (so
// later steps of the same Update see them). The caller commits the batch and then calls
// Committed(); an Update destroyed without Committed() rebuilds the indexes it touched
// from the store, so a failed commit leaves memory equal to the store (an index that
// cannot be read back is dropped, with a log line, rather than kept with values the store
// does not have; server_storage_fault_test checks this after a failed report).
//
// Variants (common/variant.h): "raw", "avg@n", "ens@n", "ens-soft@n". Ensembles of a
// window of size n ending at admitted checkpoint c_i use the raw values of c_{i-n+1} ..
// c_i; a window with a member lacking a raw value has no value (a stale one is erased).
//
// Thread-safe: Update serialises writers; queries take the same lock.
#ifndef STEADYEVAL_SERVER_ANALYTICS_ANALYTICS_H_
#define STEADYEVAL_SERVER_ANALYTICS_ANALYTICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/scoring.h"
#include "common/stability.h"
#include "common/task.h"
#include "common/variant.h"
#include "server/jobs/scheduler.h"
#include "server/store/store.h"
#include "steadyeval/v1/eval_service.pb.h"

namespace steadyeval {

class Analytics {
 public:
  using TaskLoader =
      std::function<absl::StatusOr<std::shared_ptr<const Task>>(const v1::TaskRef& ref)>;

  // `store` is not owned and outlives this.
  Analytics(Store* store, TaskLoader load_task);
  ~Analytics();

  // Start-up: rebuilds `run`'s indexes from its scores and pairs. A sequence whose stored
  // pairs do not match its points (a database migrated from schema 1, or one written
  // without pairs) gets its pairs recomputed from the predictions and persisted.
  absl::Status LoadRun(const v1::Run& run);

  class Update {
   public:
    explicit Update(Analytics* analytics);
    ~Update();
    Update(const Update&) = delete;
    Update& operator=(const Update&) = delete;

    // Stores (replaces) one value: `score` names run, task, variant and step;
    // predictions[i] is example i's. Writes predictions, score and pair changes.
    absl::Status PutValue(Store::Batch& batch, const v1::Score& score,
                          std::vector<v1::Prediction> predictions);
    // Erases one value and its pairs (the neighbours' pair is recomputed); no-op when absent.
    absl::Status EraseValue(Store::Batch& batch, const std::string& run, const std::string& task,
                            const std::string& variant, uint64_t step);

    // Recomputes ens@n (and ens-soft@n for multiple-choice tasks) of every task for the
    // windows of size n ending at positions `ends` of `steps` (the run's admitted steps,
    // ascending): a value where every member has a raw value, else an erasure.
    absl::Status UpdateEnsembles(Store::Batch& batch, const v1::Run& run,
                                 const std::vector<uint64_t>& steps, uint32_t n,
                                 const std::vector<size_t>& ends);
    // After raw values of `step` were put: the ensemble windows (of the run's configured
    // sizes) containing it.
    absl::Status OnRawStored(Store::Batch& batch, const v1::Run& run,
                             const std::vector<uint64_t>& steps, uint64_t step);
    // A checkpoint was admitted (`admission`): erases the values of every windowed
    // variant (configured or still stored) whose window at a changed position lost its
    // meaning — avg@n at the superseded jobs' window ends, ens@n / ens-soft@n of windows
    // that now contain the new, unevaluated checkpoint.
    absl::Status OnAdmission(Store::Batch& batch, const v1::Run& run, const Admission& admission);

    // The run's keys were deleted (Coordinator::DeleteRun, committed): drops its indexes.
    void ForgetRun(const std::string& run);

    // The batch was committed: keep the in-memory changes.
    void Committed() { committed_ = true; }
    // (run, task) of every sequence this update changed.
    std::set<std::pair<std::string, std::string>> TouchedTasks() const;

    using SeqKey = std::tuple<std::string, std::string, std::string>;  // run, task, variant

   private:
    struct Value {
      double score = 0;
      std::string metric;
      std::vector<v1::Prediction> predictions;
    };
    // The value at `step`: this update's pending one, else the store's.
    absl::StatusOr<StepPoint> LoadPoint(const SeqKey& key, uint64_t step);
    absl::StatusOr<std::vector<v1::Prediction>> LoadPredictions(const SeqKey& key, uint64_t step);
    StabilityIndex& Index(const SeqKey& key);
    void Persist(Store::Batch& batch, const SeqKey& key, const StabilityIndex::Change& change);

    Analytics* const analytics_;
    absl::MutexLock lock_;  // analytics_->mu_, for the Update's life
    bool committed_ = false;
    std::map<std::pair<SeqKey, uint64_t>, std::optional<Value>> pending_;
    std::set<SeqKey> touched_;
  };

  // ---- queries ----
  // The stability table (see eval_service.proto). INVALID_ARGUMENT for a bad range,
  // NOT_FOUND for a task the run does not have.
  absl::StatusOr<v1::GetStabilityResponse> GetStability(const v1::Run& run,
                                                        const v1::GetStabilityRequest& r);
  absl::StatusOr<v1::GetExamplesResponse> GetExamples(const v1::Run& run,
                                                      const v1::GetExamplesRequest& r);
  absl::Status ExportPredictions(const v1::Run& run, const v1::ExportPredictionsRequest& r,
                                 const std::function<bool(const v1::ExportedPrediction&)>& visit);

  // Per variant of one task: the newest point (its score and step), the score of the
  // point before it, and the figures over the default range (the gauges of DESIGN §9).
  // Each is nullopt when the variant has no such point.
  struct VariantFigures {
    std::string variant;
    std::optional<double> latest_score;
    std::optional<uint64_t> latest_step;
    std::optional<double> previous_score;
    StabilityFigures figures;
  };
  std::vector<VariantFigures> DefaultRangeFigures(const std::string& run, const std::string& task);

 private:
  using SeqKey = Update::SeqKey;

  // Restores one sequence from stored points and pairs, recomputing (and persisting)
  // the pairs when they do not match the points.
  absl::Status RebuildSequence(const SeqKey& key, const std::vector<std::pair<uint64_t, double>>& points,
                               const std::vector<v1::PairStats>& pairs)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads the sequence's points and pairs from the store and rebuilds it.
  absl::Status ReloadSequence(const SeqKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<StepPoint> LoadStoredPoint(const SeqKey& key, uint64_t step) const;
  // The variants with an index for (run, task), plus those the run's config implies.
  std::vector<Variant> VariantsOf(const v1::Run& run, const v1::TaskRef& task, bool multiple_choice)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const StabilityIndex* FindIndex(const SeqKey& key) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Store* const store_;
  const TaskLoader load_task_;
  absl::Mutex mu_;
  std::map<SeqKey, StabilityIndex> indexes_ ABSL_GUARDED_BY(mu_);
};

// Writes `scored` into a value: `score`'s metric, score and metric_scores, and each
// prediction's normalised output, score and metric_values (predictions[i] is example i).
void ApplyTaskScore(const TaskScore& scored, v1::Score& score,
                    std::vector<v1::Prediction>& predictions);

// Scores ensemble votes (normalised outputs) as a value: fills `score`'s metric fields and
// returns one prediction per example.
absl::StatusOr<std::vector<v1::Prediction>> ScoredVotes(const Task& task,
                                                        const std::vector<std::string>& votes,
                                                        v1::Score& score);

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_ANALYTICS_ANALYTICS_H_
