// Parsing a stored task (TaskContent) the way a run uses it (TaskRef): the coordinator
// and the workers must see the same examples, shots and primary metric.
#ifndef STEADYEVAL_API_TASK_CONTENT_H_
#define STEADYEVAL_API_TASK_CONTENT_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/task.h"
#include "steadyeval/v1/types.pb.h"

namespace steadyeval {

// The TaskOptions `ref` and `content` imply (metric, max_samples, train file).
TaskOptions TaskOptionsFor(const v1::TaskRef& ref, const v1::TaskContent& content);

// ParseTask(content.filename(), content.content(), TaskOptionsFor(ref, content)); the
// parsed hash must equal ref.sha256() (DATA_LOSS otherwise).
absl::StatusOr<Task> ParseTaskContent(const v1::TaskContent& content, const v1::TaskRef& ref);

// A cache key for a parsed task: the hash plus the options that change the parse.
std::string TaskCacheKey(const v1::TaskRef& ref);

}  // namespace steadyeval

#endif  // STEADYEVAL_API_TASK_CONTENT_H_
