// The records of the runs this coordinator serves, in memory (each also stored: the
// caller commits before it changes one here), and the lock that orders read-modify-writes
// of each record (UpdateRun, pause, the tokenizer pin), so that one change never
// overwrites another.
//
// Thread-safe. `mu_` (the table) and each record's lock are leaves of the lock order
// (server/LOCKING.md); a record's write lock comes after the analytics lock and before
// the scheduler's. Nothing here holds a lock while it writes to the store except the
// write lock of the one run being changed (and Create's, which only CreateRun takes).
#ifndef STEADYEVAL_SERVER_INGEST_RUN_TABLE_H_
#define STEADYEVAL_SERVER_INGEST_RUN_TABLE_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "steadyeval/v1/types.pb.h"

namespace steadyeval {

// NOT_FOUND "run 'x' not found (see `steadyeval runs list`)".
absl::Status RunNotFound(absl::string_view name);

class RunTable {
 public:
  // Start-up: a run read from the store.
  void Load(const v1::Run& run);

  // Adds a new run: ALREADY_EXISTS when the name is taken, else `commit` (which stores
  // it) and, when that succeeds, the record. Creations are serialised; nothing else waits.
  absl::Status Create(const v1::Run& run, const std::function<absl::Status()>& commit);

  // The run's current record; NOT_FOUND (RunNotFound) for an unknown run.
  absl::StatusOr<v1::Run> Get(const std::string& name) const;
  bool Contains(const std::string& name) const;
  std::vector<std::string> Names() const;  // ascending
  std::vector<v1::Run> All() const;        // by name

  // Read-modify-write of one record: runs `change` on a copy of the current record under
  // the run's write lock; when `change` returns OK (it has committed the new record), the
  // copy becomes the record. Returns the record then; `change`'s error (nothing changed)
  // or NOT_FOUND otherwise.
  absl::StatusOr<v1::Run> Change(const std::string& name,
                                 const std::function<absl::Status(v1::Run&)>& change);

  // Forgets the run (its keys are deleted). A Change in progress finishes on its own copy.
  void Remove(const std::string& name);

 private:
  struct Entry {
    absl::Mutex write_mu;  // held through a Change
    mutable absl::Mutex record_mu;
    v1::Run record ABSL_GUARDED_BY(record_mu);
  };
  std::shared_ptr<Entry> Find(const std::string& name) const;

  absl::Mutex create_mu_;  // serialises Create
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> runs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_INGEST_RUN_TABLE_H_
