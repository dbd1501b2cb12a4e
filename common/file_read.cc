#include "common/file_read.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/text_escape.h"

namespace steadyeval {

absl::StatusOr<std::string> ReadRegularFile(const std::string& path, size_t max_bytes,
                                            absl::string_view what) {
  const std::string shown = Printable(path, 512);
  // O_NONBLOCK: opening a FIFO must not wait for a writer before fstat can refuse it.
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot read ", what, " ", shown, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(what, " ", shown, " is not a regular file"));
  }
  if (static_cast<size_t>(st.st_size) > max_bytes) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(what, " ", shown, " is ", st.st_size,
                                                   " bytes; at most ", max_bytes,
                                                   " are accepted"));
  }
  std::string content(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = read(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      close(fd);
      return absl::DataLossError(
          absl::StrCat("error reading ", what, " ", shown, ": ", std::strerror(error)));
    }
    if (n == 0) break;  // shrank while being read
    done += static_cast<size_t>(n);
  }
  close(fd);
  content.resize(done);
  return content;
}

}  // namespace steadyeval
