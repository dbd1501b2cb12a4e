// The coordinator's declarative config file (`steadyeval-server --config FILE`): server
// settings (the keys are the flag names) and `runs:`, each run described by the same
// fields as `steadyeval runs add` and checked by the same code (ingest/run_config.h
// CheckNewRun). Every error starts with "FILE:LINE: " and names the key and the fix.
// Reading a file changes nothing; ApplyConfig (config_apply.h) applies one.
#ifndef STEADYEVAL_SERVER_CONFIG_CONFIG_FILE_H_
#define STEADYEVAL_SERVER_CONFIG_CONFIG_FILE_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/ingest/run_config.h"
#include "steadyeval/v1/types.pb.h"

namespace steadyeval {

// One entry of `runs:` as read: the request `runs add` would send (config + task files,
// relative paths resolved against the config file's folder), not yet checked.
struct DeclaredRun {
  int line = 0;  // 1-based line of the entry in the file
  v1::RunConfig config;
  std::vector<v1::TaskContent> task_files;
};

struct ConfigFile {
  std::string path;  // as given (used in errors and as Run.managed_by)
  // Server settings present in the file, by flag name, as flag values (lists joined by
  // ','; booleans "true"/"false"). A flag given on the command line overrides its entry.
  std::map<std::string, std::string> settings;
  std::map<std::string, int> setting_lines;
  std::vector<DeclaredRun> runs;
};

// The server settings a config file may hold: the flags of steadyeval-server
// (ServerFlags, server_flags.h) less --config, --check and --help.
const std::vector<std::string>& ConfigSettingKeys();

// Reads and parses `path`: YAML syntax, known keys, value types, run names unique, task
// files readable. INVALID_ARGUMENT "FILE:LINE: ..." for a bad file, NOT_FOUND for a
// missing one.
absl::StatusOr<ConfigFile> ReadConfigFile(const std::string& path);
// As ReadConfigFile, with the file's text given (`path` names it in errors and anchors
// relative paths).
absl::StatusOr<ConfigFile> ReadConfigText(const std::string& text, const std::string& path);

// Checks every declared run as CreateRun would (CheckNewRun with `options`); returns them
// checked and normalised, in file order. Errors are "FILE:LINE: run NAME: ...".
absl::StatusOr<std::vector<NewRun>> CheckDeclaredRuns(const ConfigFile& file,
                                                      const NewRunOptions& options);

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_CONFIG_CONFIG_FILE_H_
