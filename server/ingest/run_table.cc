#include "server/ingest/run_table.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace steadyeval {

absl::Status RunNotFound(absl::string_view name) {
  return absl::NotFoundError(
      absl::StrCat("run '", name, "' not found (see `steadyeval runs list`)"));
}

void RunTable::Load(const v1::Run& run) {
  auto entry = std::make_shared<Entry>();
  {
    absl::MutexLock lock(&entry->record_mu);
    entry->record = run;
  }
  absl::MutexLock lock(&mu_);
  runs_[run.config().name()] = std::move(entry);
}

absl::Status RunTable::Create(const v1::Run& run, const std::function<absl::Status()>& commit) {
  const std::string& name = run.config().name();
  absl::MutexLock create_lock(&create_mu_);
  if (Contains(name)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "run '", name, "' already exists (choose another name, or see `steadyeval runs show ",
        name, "`)"));
  }
  RETURN_IF_ERROR(commit());
  Load(run);
  return absl::OkStatus();
}

std::shared_ptr<RunTable::Entry> RunTable::Find(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = runs_.find(name);
  return it == runs_.end() ? nullptr : it->second;
}

absl::StatusOr<v1::Run> RunTable::Get(const std::string& name) const {
  std::shared_ptr<Entry> entry = Find(name);
  if (entry == nullptr) return RunNotFound(name);
  absl::MutexLock lock(&entry->record_mu);
  return entry->record;
}

bool RunTable::Contains(const std::string& name) const { return Find(name) != nullptr; }

std::vector<std::string> RunTable::Names() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> names;
  for (const auto& [name, entry] : runs_) names.push_back(name);
  return names;
}

std::vector<v1::Run> RunTable::All() const {
  std::vector<v1::Run> runs;
  for (const std::string& name : Names()) {
    absl::StatusOr<v1::Run> run = Get(name);
    if (run.ok()) runs.push_back(*std::move(run));
  }
  return runs;
}

absl::StatusOr<v1::Run> RunTable::Change(const std::string& name,
                                         const std::function<absl::Status(v1::Run&)>& change) {
  std::shared_ptr<Entry> entry = Find(name);
  if (entry == nullptr) return RunNotFound(name);
  absl::MutexLock write_lock(&entry->write_mu);
  v1::Run run;
  {
    absl::MutexLock lock(&entry->record_mu);
    run = entry->record;
  }
  RETURN_IF_ERROR(change(run));
  absl::MutexLock lock(&entry->record_mu);
  entry->record = run;
  return run;
}

void RunTable::Remove(const std::string& name) {
  absl::MutexLock lock(&mu_);
  runs_.erase(name);
}

}  // namespace steadyeval
