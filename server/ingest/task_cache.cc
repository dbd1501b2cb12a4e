#include "server/ingest/task_cache.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "api/task_content.h"
#include "common/status.h"

namespace steadyeval {

absl::StatusOr<std::shared_ptr<const Task>> TaskCache::Load(const v1::TaskRef& ref) const {
  const std::string key = TaskCacheKey(ref);
  {
    absl::MutexLock lock(&mu_);
    auto it = tasks_.find(key);
    if (it != tasks_.end()) return it->second;
  }
  ASSIGN_OR_RETURN(v1::TaskContent content, store_->GetTask(ref.sha256()));
  absl::StatusOr<Task> task = ParseTaskContent(content, ref);
  if (!task.ok()) {
    return absl::DataLossError(absl::StrCat("stored task ", ref.name(), " (", ref.sha256(),
                                            ") no longer parses: ", task.status().message()));
  }
  auto parsed = std::make_shared<const Task>(std::move(*task));
  absl::MutexLock lock(&mu_);
  tasks_.emplace(key, parsed);
  return parsed;
}

}  // namespace steadyeval
