#include "server/ingest/run_inputs.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/limits.h"
#include "common/text_escape.h"

namespace steadyeval {
namespace {

namespace fs = std::filesystem;

absl::Status TooLong(absl::string_view field, size_t size, size_t bound) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, " is ", size, " bytes; at most ", bound, " are accepted"));
}

// Whether `path` is `root` or inside it, both already resolved.
bool IsUnder(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p) {
    if (r->empty()) continue;  // a trailing separator
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}

}  // namespace

absl::Status CheckRunInputLimits(const v1::RunConfig& config,
                                 const std::vector<v1::TaskContent>& task_files) {
  if (config.name().size() > kMaxRunNameBytes) {
    return TooLong("run name", config.name().size(), kMaxRunNameBytes);
  }
  if (config.source().size() > kMaxPathBytes) {
    return TooLong("source", config.source().size(), kMaxPathBytes);
  }
  if (config.tokenizer_path().size() > kMaxPathBytes) {
    return TooLong("tokenizer path", config.tokenizer_path().size(), kMaxPathBytes);
  }
  if (config.pattern().size() > kMaxPatternBytes) {
    return TooLong("step pattern", config.pattern().size(), kMaxPatternBytes);
  }
  const std::string& marker = config.marker();
  if (marker.size() > kMaxMarkerBytes) return TooLong("marker", marker.size(), kMaxMarkerBytes);
  if (!marker.empty()) {
    const fs::path path(marker);
    bool escapes = path.is_absolute();
    for (const fs::path& part : path) escapes = escapes || part == "..";
    if (escapes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "marker '", Printable(marker, 200),
          "' must be a file name inside the checkpoint folder (relative, no '..')"));
    }
  }
  if (static_cast<size_t>(config.average_windows_size()) > kMaxWindowsPerKind ||
      static_cast<size_t>(config.ensemble_windows_size()) > kMaxWindowsPerKind) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", kMaxWindowsPerKind, " average and ", kMaxWindowsPerKind,
                     " ensemble window sizes are accepted"));
  }
  if (task_files.size() > kMaxTaskFiles ||
      static_cast<size_t>(config.tasks_size()) > kMaxTaskFiles) {
    return absl::InvalidArgumentError(
        absl::StrCat("a run takes at most ", kMaxTaskFiles, " task files; got ",
                     std::max<size_t>(task_files.size(), config.tasks_size())));
  }
  for (const v1::TaskContent& file : task_files) {
    if (file.filename().size() > kMaxPathBytes) {
      return TooLong("a task file name", file.filename().size(), kMaxPathBytes);
    }
    if (file.content().size() + file.train_content().size() > kMaxTaskFileBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "task file ", Printable(file.filename(), 200), " is ",
          file.content().size() + file.train_content().size(), " bytes; at most ",
          kMaxTaskFileBytes, " are accepted"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ResolveSource(const std::string& source,
                                          const std::vector<std::string>& roots) {
  std::string dir = source;
  if (absl::StartsWith(dir, "file://")) dir = dir.substr(7);
  std::error_code ec;
  if (dir.empty() || dir[0] != '/' || !fs::is_directory(dir, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("source '", Printable(source, 512),
                     "' is not an existing directory (give an absolute path the coordinator "
                     "can read)"));
  }
  const fs::path resolved = fs::canonical(dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat("source '", Printable(source, 512),
                                                   "' cannot be resolved: ", ec.message()));
  }
  if (!roots.empty() &&
      std::none_of(roots.begin(), roots.end(),
                   [&](const std::string& root) { return IsUnder(resolved, root); })) {
    return absl::PermissionDeniedError(absl::StrCat(
        "source '", Printable(source, 512), "' resolves to ", Printable(resolved.string(), 512),
        ", which is outside the coordinator's --source_roots (", absl::StrJoin(roots, ", "),
        ")"));
  }
  return resolved.string();
}

absl::StatusOr<std::vector<std::string>> ParseSourceRoots(const std::string& flag_value) {
  std::vector<std::string> roots;
  for (absl::string_view entry : absl::StrSplit(flag_value, ',', absl::SkipWhitespace())) {
    const std::string path(entry);
    std::error_code ec;
    if (path.empty() || path[0] != '/' || !fs::is_directory(path, ec)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--source_roots entry '", Printable(path, 512), "' is not an existing absolute folder"));
    }
    roots.push_back(fs::canonical(path, ec).string());
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("--source_roots entry '", path, "' cannot be resolved: ", ec.message()));
    }
  }
  return roots;
}

}  // namespace steadyeval
