#include "s3/s3_endpoint.h"

#include "absl/strings/ascii.h"

namespace steadyeval {

std::string DefaultS3Region(const std::string& region_from_environment) {
  return region_from_environment.empty() ? kDefaultS3Region : region_from_environment;
}

std::optional<HttpUrlParts> SplitHttpUrl(absl::string_view url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == absl::string_view::npos) return std::nullopt;
  HttpUrlParts parts;
  parts.scheme = absl::AsciiStrToLower(url.substr(0, scheme_end));
  if (parts.scheme != "http" && parts.scheme != "https") return std::nullopt;
  const absl::string_view rest = url.substr(scheme_end + 3);
  const size_t slash = rest.find('/');
  parts.authority = std::string(rest.substr(0, slash));
  if (slash != absl::string_view::npos) parts.path = std::string(rest.substr(slash));
  return parts;
}

}  // namespace steadyeval
