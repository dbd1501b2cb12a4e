#include "server/config/config_apply.h"

#include <map>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "google/protobuf/util/message_differencer.h"

namespace steadyeval {
namespace {

// What a planned change does to one stored run.
struct Plan {
  std::vector<NewRun> create;  // checked (CheckDeclaredRuns)
  std::vector<v1::UpdateRunRequest> update;
  std::vector<std::string> pause;
  std::vector<std::string> still_paused;
};

// The first setting other than the windows in which `want` differs from `have`, or "".
std::string FixedDifference(const v1::RunConfig& want, const v1::RunConfig& have) {
  v1::RunConfig a = want, b = have;
  for (v1::RunConfig* c : {&a, &b}) {
    c->clear_average_windows();
    c->clear_ensemble_windows();
  }
  if (a.source() != b.source() || a.s3_endpoint() != b.s3_endpoint() ||
      a.s3_region() != b.s3_region()) {
    return "source";
  }
  if (a.tasks_size() != b.tasks_size()) return "tasks";
  for (int i = 0; i < a.tasks_size(); ++i) {
    if (!google::protobuf::util::MessageDifferencer::Equals(a.tasks(i), b.tasks(i))) {
      return "tasks";
    }
  }
  a.clear_tasks();
  b.clear_tasks();
  std::string field;
  google::protobuf::util::MessageDifferencer differ;
  differ.ReportDifferencesToString(&field);
  if (differ.Compare(a, b)) return "";
  return field.substr(0, field.find('\n'));
}

bool SameWindows(const google::protobuf::RepeatedField<uint32_t>& a,
                 const google::protobuf::RepeatedField<uint32_t>& b) {
  return std::vector<uint32_t>(a.begin(), a.end()) == std::vector<uint32_t>(b.begin(), b.end());
}

using RunsByName = std::map<std::string, v1::Run>;

// Every stored run, from one pass over ListRuns.
absl::StatusOr<RunsByName> StoredRuns(Coordinator& coordinator) {
  RunsByName stored;
  std::string token;
  do {
    ASSIGN_OR_RETURN(v1::ListRunsResponse page, coordinator.ListRuns(0, token));
    for (v1::Run& run : *page.mutable_runs()) {
      std::string name = run.config().name();
      stored.emplace(std::move(name), std::move(run));
    }
    if (page.next_page_token() == token) break;
    token = page.next_page_token();
  } while (!token.empty());
  return stored;
}

absl::StatusOr<Plan> MakePlan(Coordinator& coordinator, const ConfigFile& file) {
  ASSIGN_OR_RETURN(std::vector<NewRun> checked,
                   CheckDeclaredRuns(file, coordinator.new_run_options()));
  ASSIGN_OR_RETURN(const RunsByName stored, StoredRuns(coordinator));
  Plan plan;
  std::set<std::string> declared;
  for (size_t i = 0; i < checked.size(); ++i) {
    NewRun& want = checked[i];
    const std::string name = want.config.name();
    const std::string at = absl::StrCat(file.path, ":", file.runs[i].line, ": run ", name, ": ");
    declared.insert(name);
    auto found = stored.find(name);
    if (found == stored.end()) {
      plan.create.push_back(std::move(want));
      continue;
    }
    const v1::Run& have = found->second;
    if (have.managed_by() != file.path) {
      return absl::FailedPreconditionError(absl::StrCat(
          at, "a run of this name already exists",
          have.managed_by().empty() ? " (made with `runs add`)"
                                    : absl::StrCat(" (declared in ", have.managed_by(), ")"),
          "; rename the run in the file or delete the other run"));
    }
    const std::string differs = FixedDifference(want.config, have.config());
    if (!differs.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          at, "its ", differs, " differs from the running run's; a declared run's source, tasks "
          "and evaluation settings cannot change (only average/ensemble windows can): restore "
          "them, or declare a new run under another name"));
    }
    if (have.paused()) plan.still_paused.push_back(name);
    v1::UpdateRunRequest update;
    update.set_name(name);
    if (!SameWindows(want.config.average_windows(), have.config().average_windows())) {
      update.set_set_average_windows(true);
      *update.mutable_average_windows() = want.config.average_windows();
    }
    if (!SameWindows(want.config.ensemble_windows(), have.config().ensemble_windows())) {
      update.set_set_ensemble_windows(true);
      *update.mutable_ensemble_windows() = want.config.ensemble_windows();
    }
    if (update.set_average_windows() || update.set_ensemble_windows()) {
      plan.update.push_back(std::move(update));
    }
  }
  for (const auto& [name, run] : stored) {
    if (run.managed_by() == file.path && !declared.count(name) && !run.paused()) {
      plan.pause.push_back(name);
    }
  }
  return plan;
}

}  // namespace

std::string ConfigApplied::Summary() const {
  auto list = [](const std::vector<std::string>& names) {
    return names.empty() ? std::string("none") : absl::StrJoin(names, ",");
  };
  std::string summary = absl::StrCat("created ", list(created), "; windows changed ",
                                     list(updated), "; paused (no longer declared) ",
                                     list(paused));
  for (const std::string& name : still_paused) {
    absl::StrAppend(&summary, "; declared but paused: ", name, " (`steadyeval runs resume ",
                    name, "` resumes it)");
  }
  return summary;
}

absl::StatusOr<ConfigApplied> ApplyConfig(Coordinator& coordinator, const ConfigFile& file) {
  ASSIGN_OR_RETURN(Plan plan, MakePlan(coordinator, file));
  ConfigApplied applied;
  for (NewRun& run : plan.create) {
    ASSIGN_OR_RETURN(v1::Run created, coordinator.CreateRun(std::move(run), file.path));
    applied.created.push_back(created.config().name());
  }
  for (const v1::UpdateRunRequest& update : plan.update) {
    RETURN_IF_ERROR(coordinator.UpdateRun(update, file.path).status());
    applied.updated.push_back(update.name());
  }
  for (const std::string& name : plan.pause) {
    RETURN_IF_ERROR(coordinator.SetRunPaused(name, true).status());
    applied.paused.push_back(name);
  }
  applied.still_paused = std::move(plan.still_paused);
  return applied;
}

}  // namespace steadyeval
