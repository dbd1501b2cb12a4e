// Reading a whole file from a path a user or operator names (tokens, certificates, task
// files), bounded: the file must be a regular file (not a FIFO, a device such as
// /dev/zero, or a folder) of at most `max_bytes`, checked on the opened descriptor before
// anything is read.
#ifndef STEADYEVAL_COMMON_FILE_READ_H_
#define STEADYEVAL_COMMON_FILE_READ_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace steadyeval {

// The file's content. `what` names it in errors ("token file", "--tls_cert"): NOT_FOUND
// "cannot read WHAT PATH: reason" when it cannot be opened; INVALID_ARGUMENT "WHAT PATH is
// not a regular file" or "WHAT PATH is N bytes; at most MAX are accepted"; DATA_LOSS when
// reading fails midway.
absl::StatusOr<std::string> ReadRegularFile(const std::string& path, size_t max_bytes,
                                            absl::string_view what);

}  // namespace steadyeval

#endif  // STEADYEVAL_COMMON_FILE_READ_H_
