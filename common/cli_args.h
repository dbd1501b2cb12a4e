// Command-line parsing shared by the three binaries.
//
// Accepts `--name=value`, `--name value` and boolean `--name` (for flags declared
// boolean), in any order with positional arguments; `--` ends flag parsing. Unknown flags
// and missing values are INVALID_ARGUMENT naming the flag. Repeated flags are kept in
// order (GetAll). Not thread-safe during Parse; const methods are.
#ifndef STEADYEVAL_COMMON_CLI_ARGS_H_
#define STEADYEVAL_COMMON_CLI_ARGS_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace steadyeval {

struct FlagSpec {
  std::string name;       // without dashes
  bool boolean = false;   // takes no value
  std::string help;
  std::string value_name = "VALUE";
};

class ParsedArgs {
 public:
  const std::vector<std::string>& positionals() const { return positionals_; }
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  // Last value given, or `fallback`.
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  std::vector<std::string> GetAll(const std::string& name) const;
  // INVALID_ARGUMENT naming the flag when the value is not a number.
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t fallback) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback) const;

 private:
  friend absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                              const std::vector<FlagSpec>& specs);
  std::vector<std::string> positionals_;
  std::map<std::string, std::vector<std::string>> values_;
};

// `args` excludes the program name (and any subcommand words already consumed).
absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                     const std::vector<FlagSpec>& specs);

// "  --name VALUE   help" lines for --help output.
std::string FlagsHelp(const std::vector<FlagSpec>& specs);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_CLI_ARGS_H_
