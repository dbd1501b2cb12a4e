#include "server/ingest/run_inputs.h"

#include <filesystem>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/limits.h"
#include "common/status.h"
#include "common/text_escape.h"
#include "s3/s3_endpoint.h"
#include "s3/s3_uri.h"

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

// The s3 roots among --source_roots (parsed: they were checked by ParseSourceRoots).
std::vector<S3Uri> S3Roots(const std::vector<std::string>& roots) {
  std::vector<S3Uri> s3;
  for (const std::string& root : roots) {
    if (!IsS3Uri(root)) continue;
    if (absl::StatusOr<S3Uri> uri = ParseS3Uri(root); uri.ok()) s3.push_back(*std::move(uri));
  }
  return s3;
}

std::vector<std::string> LocalRoots(const std::vector<std::string>& roots) {
  std::vector<std::string> local;
  for (const std::string& root : roots) {
    if (!IsS3Uri(root)) local.push_back(root);
  }
  return local;
}

bool ValidRegion(absl::string_view region) {
  if (region.empty() || region.size() > 64) return false;
  for (char c : region) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-')) return false;
  }
  return true;
}

absl::Status CheckS3Source(v1::RunConfig& config, const SourceRules& rules) {
  absl::StatusOr<S3Uri> parsed = ParseS3Uri(config.source());
  if (!parsed.ok()) return Annotate(parsed.status(), "source");
  const S3Uri uri = *std::move(parsed);
  config.set_source(FormatS3Uri(uri));
  if (!rules.roots.empty()) {
    const std::vector<S3Uri> roots = S3Roots(rules.roots);
    if (std::none_of(roots.begin(), roots.end(),
                     [&](const S3Uri& root) { return IsUnderS3Prefix(root, uri); })) {
      return absl::PermissionDeniedError(absl::StrCat(
          "source '", Printable(config.source(), 512),
          "' is outside the coordinator's --source_roots (", absl::StrJoin(rules.roots, ", "),
          "); add s3://", uri.bucket, " or a prefix of it there to allow it"));
    }
  }
  if (!config.s3_endpoint().empty()) {
    absl::StatusOr<std::string> normalized = NormalizeS3Endpoint(config.s3_endpoint());
    if (!normalized.ok()) return Annotate(normalized.status(), "s3_endpoint");
    const std::string endpoint = *std::move(normalized);
    if (std::find(rules.s3_endpoints.begin(), rules.s3_endpoints.end(), endpoint) ==
        rules.s3_endpoints.end()) {
      return absl::PermissionDeniedError(absl::StrCat(
          "S3 endpoint ", endpoint, " is not allowed by the coordinator's --s3_endpoints (",
          rules.s3_endpoints.empty() ? "none given: only AWS is allowed"
                                     : absl::StrJoin(rules.s3_endpoints, ", "),
          "); start steadyeval-server with --s3_endpoints ", endpoint, " to allow it"));
    }
    config.set_s3_endpoint(endpoint);
  }
  if (config.s3_region().empty()) config.set_s3_region(rules.default_s3_region);
  if (!ValidRegion(config.s3_region())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "s3_region '", Printable(config.s3_region(), 100),
        "' is not a region name (lower-case letters, digits and '-', e.g. us-east-1)"));
  }
  return absl::OkStatus();
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
  if (config.s3_endpoint().size() > kMaxPathBytes) {
    return TooLong("s3_endpoint", config.s3_endpoint().size(), kMaxPathBytes);
  }
  if (config.s3_region().size() > kMaxNameBytes) {
    return TooLong("s3_region", config.s3_region().size(), kMaxNameBytes);
  }
  if (config.convert().size() > kMaxNameBytes) {
    return TooLong("convert", config.convert().size(), kMaxNameBytes);
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

absl::Status CheckRunSource(v1::RunConfig& config, const SourceRules& rules) {
  if (!config.convert().empty() && !IsPlainName(config.convert(), 64)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "convert '", Printable(config.convert(), 100),
        "' is not a converter name (1-64 of [A-Za-z0-9._-], as a worker's --converter NAME=...)"));
  }
  if (IsS3Uri(config.source())) return CheckS3Source(config, rules);
  if (!config.s3_endpoint().empty() || !config.s3_region().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "s3_endpoint and s3_region apply only to s3:// sources; source '",
        Printable(config.source(), 512), "' is a folder (drop --s3_endpoint / --s3_region)"));
  }
  return ResolveSource(config.source(), rules.roots).status();
}

absl::StatusOr<std::string> ResolveSource(const std::string& source,
                                          const std::vector<std::string>& all_roots) {
  const std::vector<std::string> roots = LocalRoots(all_roots);
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
  if (!all_roots.empty() &&
      std::none_of(roots.begin(), roots.end(),
                   [&](const std::string& root) { return IsUnder(resolved, root); })) {
    return absl::PermissionDeniedError(absl::StrCat(
        "source '", Printable(source, 512), "' resolves to ", Printable(resolved.string(), 512),
        ", which is outside the coordinator's --source_roots (", absl::StrJoin(all_roots, ", "),
        ")"));
  }
  return resolved.string();
}

absl::StatusOr<std::vector<std::string>> ParseSourceRoots(const std::string& flag_value) {
  std::vector<std::string> roots;
  for (absl::string_view entry : absl::StrSplit(flag_value, ',', absl::SkipWhitespace())) {
    const std::string path(entry);
    if (IsS3Uri(path)) {
      absl::StatusOr<S3Uri> uri = ParseS3Uri(path);
      if (!uri.ok()) {
        return Annotate(uri.status(),
                        absl::StrCat("--source_roots entry '", Printable(path, 512), "'"));
      }
      roots.push_back(FormatS3Uri(*uri));
      continue;
    }
    std::error_code ec;
    if (path.empty() || path[0] != '/' || !fs::is_directory(path, ec)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--source_roots entry '", Printable(path, 512),
          "' is not an existing absolute folder (or an s3://bucket/prefix)"));
    }
    roots.push_back(fs::canonical(path, ec).string());
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("--source_roots entry '", path, "' cannot be resolved: ", ec.message()));
    }
  }
  return roots;
}

bool IsPlainName(absl::string_view name, size_t max_bytes) {
  if (name.empty() || name.size() > max_bytes) return false;
  for (char c : name) {
    if (!(absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-')) return false;
  }
  return true;
}

absl::StatusOr<std::string> NormalizeS3Endpoint(absl::string_view url) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "S3 endpoint '", Printable(url, 200), "' ", why,
        "; give http(s)://HOST[:PORT], e.g. http://127.0.0.1:9000"));
  };
  const std::string lower = absl::AsciiStrToLower(url);
  const std::optional<HttpUrlParts> parts = SplitHttpUrl(lower);
  if (!parts) return bad("is not an http:// or https:// URL");
  const std::string& scheme = parts->scheme;
  // Unlike S3Client's, no base path: a trailing '/' at most.
  if ((!parts->path.empty() && parts->path != "/") ||
      parts->authority.find_first_of("?#") != std::string::npos) {
    return bad("has a path (buckets are addressed path-style under the endpoint itself)");
  }
  const absl::string_view rest = parts->authority;
  if (rest.find('@') != absl::string_view::npos) return bad("has user info");
  absl::string_view host = rest;
  absl::string_view port;
  // "[v6]:port", "host:port"
  const size_t bracket = rest.rfind(']');
  const size_t colon = rest.rfind(':');
  if (colon != absl::string_view::npos && (bracket == absl::string_view::npos || colon > bracket)) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    int number = 0;
    if (!absl::SimpleAtoi(port, &number) || number < 1 || number > 65535) {
      return bad("has a bad port");
    }
    if ((scheme == "http" && number == 80) || (scheme == "https" && number == 443)) port = "";
  }
  if (host.empty()) return bad("has no host");
  return port.empty() ? absl::StrCat(scheme, "://", host)
                      : absl::StrCat(scheme, "://", host, ":", port);
}

absl::StatusOr<std::vector<std::string>> ParseS3Endpoints(const std::string& flag_value) {
  std::vector<std::string> endpoints;
  for (absl::string_view entry : absl::StrSplit(flag_value, ',', absl::SkipWhitespace())) {
    absl::StatusOr<std::string> endpoint =
        NormalizeS3Endpoint(absl::StripAsciiWhitespace(entry));
    if (!endpoint.ok()) return Annotate(endpoint.status(), "--s3_endpoints");
    if (std::find(endpoints.begin(), endpoints.end(), *endpoint) == endpoints.end()) {
      endpoints.push_back(*std::move(endpoint));
    }
  }
  return endpoints;
}

}  // namespace steadyeval
