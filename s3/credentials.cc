#include "s3/credentials.h"

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace steadyeval {
namespace {

constexpr char kHowToProvide[] =
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary "
    "credentials), or write a profile to AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials "
    "(choose it with AWS_PROFILE)";

std::string GetEnv(const GetEnvFn& getenv_fn, const char* name) {
  const char* value = getenv_fn(name);
  return value == nullptr ? "" : value;
}

using Profile = std::map<std::string, std::string>;  // lowercased key -> value

// The profiles of an AWS credentials file ("[name]" sections of "key = value" lines; '#'
// and ';' start comments; indented lines continue a nested setting and are skipped).
// INVALID_ARGUMENT names the file and line, never a line's content (it may be a secret).
absl::StatusOr<std::map<std::string, Profile>> ParseCredentialsFile(const std::string& path,
                                                                    std::istream& in) {
  std::map<std::string, Profile> profiles;
  Profile* current = nullptr;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const bool indented = !line.empty() && (line[0] == ' ' || line[0] == '\t');
    absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty() || text[0] == '#' || text[0] == ';') continue;
    if (text.front() == '[') {
      if (text.back() != ']') {
        return absl::InvalidArgumentError(absl::StrCat(
            "AWS credentials file ", path, ":", number, ": a section header has no closing ']'"));
      }
      absl::string_view name = absl::StripAsciiWhitespace(text.substr(1, text.size() - 2));
      absl::ConsumePrefix(&name, "profile ");  // the form ~/.aws/config uses
      current = &profiles[std::string(absl::StripAsciiWhitespace(name))];
      continue;
    }
    if (indented) continue;
    const size_t equals = text.find('=');
    if (equals == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "AWS credentials file ", path, ":", number, ": expected \"key = value\" or \"[profile]\""));
    }
    if (current == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "AWS credentials file ", path, ":", number, ": a setting before any [profile] section"));
    }
    std::string key = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text.substr(0, equals)));
    (*current)[key] = std::string(absl::StripAsciiWhitespace(text.substr(equals + 1)));
  }
  return profiles;
}

absl::StatusOr<AwsCredentials> FromFile(const std::string& path, const std::string& profile_name,
                                        const std::string& looked_at) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("no AWS credentials: ", looked_at, "; ", kHowToProvide));
  }
  absl::StatusOr<std::map<std::string, Profile>> profiles = ParseCredentialsFile(path, in);
  if (!profiles.ok()) return profiles.status();
  auto it = profiles->find(profile_name);
  if (it == profiles->end()) {
    return absl::NotFoundError(absl::StrCat("no AWS credentials: the file ", path,
                                            " has no profile [", profile_name,
                                            "] (AWS_PROFILE chooses the profile); ",
                                            kHowToProvide));
  }
  const Profile& profile = it->second;
  AwsCredentials credentials;
  credentials.origin = absl::StrCat(path, " [", profile_name, "]");
  for (const auto& [key, field] :
       {std::pair<const char*, std::string*>{"aws_access_key_id", &credentials.access_key_id},
        {"aws_secret_access_key", &credentials.secret_access_key},
        {"aws_session_token", &credentials.session_token}}) {
    auto value = profile.find(key);
    if (value != profile.end()) *field = value->second;
  }
  if (credentials.access_key_id.empty() || credentials.secret_access_key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AWS credentials file ", path, ": profile [", profile_name,
        "] needs both aws_access_key_id and aws_secret_access_key"));
  }
  return credentials;
}

}  // namespace

absl::StatusOr<AwsCredentials> LoadAwsCredentials(const GetEnvFn& getenv_fn) {
  const std::string key_id = GetEnv(getenv_fn, "AWS_ACCESS_KEY_ID");
  const std::string secret = GetEnv(getenv_fn, "AWS_SECRET_ACCESS_KEY");
  if (!key_id.empty() && !secret.empty()) {
    AwsCredentials credentials;
    credentials.access_key_id = key_id;
    credentials.secret_access_key = secret;
    credentials.session_token = GetEnv(getenv_fn, "AWS_SESSION_TOKEN");
    credentials.origin = "environment";
    return credentials;
  }
  if (!key_id.empty() || !secret.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        key_id.empty() ? "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"
                       : "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
        ": set both, or neither to use a credentials file"));
  }
  std::string profile = GetEnv(getenv_fn, "AWS_PROFILE");
  if (profile.empty()) profile = "default";
  const std::string shared_file = GetEnv(getenv_fn, "AWS_SHARED_CREDENTIALS_FILE");
  if (!shared_file.empty()) {
    return FromFile(shared_file, profile,
                    absl::StrCat("AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set and "
                                 "AWS_SHARED_CREDENTIALS_FILE=",
                                 shared_file, " cannot be read"));
  }
  const std::string home = GetEnv(getenv_fn, "HOME");
  if (home.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "no AWS credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
        "AWS_SHARED_CREDENTIALS_FILE and HOME are all unset; ",
        kHowToProvide));
  }
  const std::string default_file = absl::StrCat(home, "/.aws/credentials");
  return FromFile(default_file, profile,
                  absl::StrCat("AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and "
                               "AWS_SHARED_CREDENTIALS_FILE are not set and ",
                               default_file, " cannot be read"));
}

absl::StatusOr<AwsCredentials> LoadAwsCredentials() {
  return LoadAwsCredentials([](const char* name) { return std::getenv(name); });
}

std::string RegionFromEnvironment(const GetEnvFn& getenv_fn) {
  std::string region = GetEnv(getenv_fn, "AWS_REGION");
  if (region.empty()) region = GetEnv(getenv_fn, "AWS_DEFAULT_REGION");
  return region;
}

}  // namespace steadyeval
