#include "api/task_content.h"

#include "absl/strings/str_cat.h"

namespace steadyeval {

TaskOptions TaskOptionsFor(const v1::TaskRef& ref, const v1::TaskContent& content) {
  TaskOptions options;
  options.metric = ref.metric();
  options.max_samples = ref.max_samples();
  options.train_filename = content.train_filename();
  options.train_content = content.train_content();
  return options;
}

absl::StatusOr<Task> ParseTaskContent(const v1::TaskContent& content, const v1::TaskRef& ref) {
  absl::StatusOr<Task> task =
      ParseTask(content.filename(), content.content(), TaskOptionsFor(ref, content));
  if (!task.ok()) return task.status();
  if (!ref.sha256().empty() && task->sha256 != ref.sha256()) {
    return absl::DataLossError(absl::StrCat("task ", ref.name(), ": content hash ", task->sha256,
                                            " does not match the expected ", ref.sha256()));
  }
  return task;
}

std::string TaskCacheKey(const v1::TaskRef& ref) {
  return absl::StrCat(ref.sha256(), "|", ref.metric(), "|", ref.max_samples());
}

}  // namespace steadyeval
