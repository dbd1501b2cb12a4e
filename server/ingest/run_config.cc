#include "server/ingest/run_config.h"

#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "api/task_content.h"
#include "common/limits.h"
#include "common/prompt.h"
#include "common/status.h"
#include "common/steps.h"
#include "common/task.h"
#include "common/text_escape.h"
#include "server/analytics/analytics.h"
#include "server/ingest/run_inputs.h"

namespace steadyeval {
namespace {

bool ValidRunName(absl::string_view name) {
  return IsPlainName(name, 128) && name != "." && name != "..";
}

v1::TaskKind ToProtoKind(TaskKind kind) {
  return kind == TaskKind::kMultipleChoice ? v1::TASK_KIND_MULTIPLE_CHOICE
                                           : v1::TASK_KIND_GENERATION;
}

constexpr uint32_t kMaxWindow = kMaxWindowSize;

// Each n >= 2 (and <= kMaxWindow), deduplicated and sorted, into `out` (may be `given`'s
// source: `given` is a copy).
absl::Status SetWindows(const google::protobuf::RepeatedField<uint32_t> given,
                        absl::string_view what, absl::string_view run,
                        google::protobuf::RepeatedField<uint32_t>* out) {
  std::set<uint32_t> sizes;
  for (uint32_t n : given) {
    if (n < 2 || n > kMaxWindow) {
      return absl::InvalidArgumentError(absl::StrCat("run ", run, ": ", what, " window size ", n,
                                                     " is invalid (each n must be 2..",
                                                     kMaxWindow, ")"));
    }
    sizes.insert(n);
  }
  out->Clear();
  for (uint32_t n : sizes) out->Add(n);
  return absl::OkStatus();
}

// "" or one of kTaskCategories, upper-cased.
absl::StatusOr<std::string> NormalizeCategory(absl::string_view category, absl::string_view task) {
  if (category.empty()) return std::string();
  if (std::optional<std::string> known = ParseTaskCategory(category)) return *known;
  return absl::InvalidArgumentError(absl::StrCat("task ", task, ": category '", category,
                                                 "' is not one of ", TaskCategoryList()));
}

// The scalar settings: name, limits, source, pattern, few-shots, settle time, windows,
// prompt language, BOS and max_new_tokens_delta (defaults filled in).
absl::Status CheckSettings(v1::RunConfig& config, const std::vector<v1::TaskContent>& task_files,
                           const NewRunOptions& options) {
  const std::string name = config.name();
  if (!ValidRunName(name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run name '", Printable(name, 200),
        "' is invalid: use 1-128 characters from [A-Za-z0-9._-]"));
  }
  RETURN_IF_ERROR(Annotate(CheckRunInputLimits(config, task_files), absl::StrCat("run ", name)));
  RETURN_IF_ERROR(Annotate(CheckRunSource(config, options.sources), absl::StrCat("run ", name)));
  if (auto parser = StepParser::Create(config.pattern()); !parser.ok()) {
    return Annotate(parser.status(), absl::StrCat("run ", name));
  }
  if (config.few_shots() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("run ", name, ": few_shots is ", config.few_shots(), "; it must be >= 0"));
  }
  if (config.settle_seconds() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run ", name, ": settle_seconds is ", config.settle_seconds(), "; it must be >= 0"));
  }
  if (config.settle_seconds() == 0) config.set_settle_seconds(options.default_settle_seconds);
  if (task_files.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("run ", name, ": no task files given (pass at least one --task FILE)"));
  }

  RETURN_IF_ERROR(SetWindows(config.average_windows(), "average", name,
                             config.mutable_average_windows()));
  RETURN_IF_ERROR(SetWindows(config.ensemble_windows(), "ensemble", name,
                             config.mutable_ensemble_windows()));

  if (!ParsePromptLanguage(config.prompt_language()).has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run ", name, ": prompt language '", config.prompt_language(), "' is not ja or en"));
  }
  if (config.prompt_language().empty()) config.set_prompt_language("ja");
  if (config.bos().empty()) config.set_bos("auto");
  if (config.bos() != "auto" && config.bos() != "add" && config.bos() != "none") {
    return absl::InvalidArgumentError(
        absl::StrCat("run ", name, ": bos '", config.bos(), "' is not auto, add or none"));
  }
  if (config.max_new_tokens_delta() < 0 || config.max_new_tokens_delta() > 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run ", name, ": max_new_tokens_delta is ", config.max_new_tokens_delta(),
        "; it must be in 0..4096"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<NewRun> CheckNewRun(v1::RunConfig config,
                                   const std::vector<v1::TaskContent>& task_files,
                                   const NewRunOptions& options) {
  RETURN_IF_ERROR(CheckSettings(config, task_files, options));
  const std::string name = config.name();

  // Per-task settings (category, metric, max_samples) as the CLI sends them: by task
  // name, or by task file index when unnamed.
  const std::vector<v1::TaskRef> given(config.tasks().begin(), config.tasks().end());
  std::map<std::string, v1::TaskRef> given_by_name;
  for (const v1::TaskRef& ref : given) {
    if (!ref.name().empty()) given_by_name[ref.name()] = ref;
  }
  config.clear_tasks();
  NewRun run;
  std::set<std::string> task_names;
  for (size_t file_index = 0; file_index < task_files.size(); ++file_index) {
    const v1::TaskContent& file = task_files[file_index];
    v1::TaskRef settings;
    const std::string stem = TaskNameFromFilename(file.filename());
    if (auto named = given_by_name.find(stem); named != given_by_name.end()) {
      settings = named->second;
      given_by_name.erase(named);
    } else if (file_index < given.size() && given[file_index].name().empty()) {
      settings = given[file_index];
    }
    settings.set_name(stem);
    settings.clear_sha256();
    ASSIGN_OR_RETURN(Task task, ParseTaskContent(file, settings));
    RETURN_IF_ERROR(CheckMetricsSupported(task));
    if (!task_names.insert(task.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "run ", name, ": two task files are named '", task.name,
          "' (", file.filename(), "); task names (file stems) must be unique within a run"));
    }
    ASSIGN_OR_RETURN(std::string category, NormalizeCategory(settings.category(), task.name));
    v1::TaskRef ref = settings;
    ref.set_sha256(task.sha256);
    ref.set_category(category);
    ref.set_filename(file.filename());
    v1::TaskContent content;
    content.mutable_ref()->set_name(task.name);
    content.mutable_ref()->set_sha256(task.sha256);
    content.set_filename(file.filename());
    content.set_kind(ToProtoKind(task.kind));
    content.set_content(file.content());
    content.set_train_filename(file.train_filename());
    content.set_train_content(file.train_content());
    *config.add_tasks() = ref;
    run.tasks.push_back(std::move(content));
  }
  if (!given_by_name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run ", name, ": settings are given for task '", given_by_name.begin()->first,
        "' but no task file has that name"));
  }
  run.config = std::move(config);
  return run;
}

absl::Status ApplyWindowUpdate(const v1::UpdateRunRequest& r, v1::RunConfig& config) {
  if (r.set_average_windows()) {
    RETURN_IF_ERROR(
        SetWindows(r.average_windows(), "average", config.name(), config.mutable_average_windows()));
  }
  if (r.set_ensemble_windows()) {
    RETURN_IF_ERROR(SetWindows(r.ensemble_windows(), "ensemble", config.name(),
                               config.mutable_ensemble_windows()));
  }
  return absl::OkStatus();
}

}  // namespace steadyeval
