// The flags of steadyeval-server (serving; not its `tokens`, `health` and `restore`
// subcommands). One list for the command line and the config file: a config file's
// settings are these flags, less those that act on one invocation (ConfigSettingKeys,
// config_file.h).
#ifndef STEADYEVAL_SERVER_CONFIG_SERVER_FLAGS_H_
#define STEADYEVAL_SERVER_CONFIG_SERVER_FLAGS_H_

#include <vector>

#include "common/cli_args.h"

namespace steadyeval {

const std::vector<FlagSpec>& ServerFlags();

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_CONFIG_SERVER_FLAGS_H_
