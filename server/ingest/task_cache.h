// The run tasks the coordinator scores against, parsed once from their stored contents
// (by TaskCacheKey: the content hash plus the run's settings for it) and kept for the
// process's life. Thread-safe; its lock is a leaf (server/LOCKING.md) and is not held
// while it reads the store or parses.
#ifndef STEADYEVAL_SERVER_INGEST_TASK_CACHE_H_
#define STEADYEVAL_SERVER_INGEST_TASK_CACHE_H_

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/task.h"
#include "server/store/store.h"

namespace steadyeval {

class TaskCache {
 public:
  // `store` is not owned and outlives the cache.
  explicit TaskCache(const Store* store) : store_(store) {}

  // The parsed task `ref` names. NOT_FOUND when its content is not stored; DATA_LOSS when
  // the stored content no longer parses.
  absl::StatusOr<std::shared_ptr<const Task>> Load(const v1::TaskRef& ref) const;

 private:
  const Store* const store_;
  mutable absl::Mutex mu_;
  mutable std::map<std::string, std::shared_ptr<const Task>> tasks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_INGEST_TASK_CACHE_H_
