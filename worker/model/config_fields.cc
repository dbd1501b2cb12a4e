#include "worker/model/config_fields.h"

#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "common/status.h"

namespace steadyeval {

using nlohmann::json;

absl::StatusOr<json> ParseConfigObject(absl::string_view text) {
  RETURN_IF_ERROR(CheckJsonNesting("config.json", text));
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError("config.json: not a JSON object");
  }
  return doc;
}

absl::Status ConfigFieldError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: field '", field, "' ", what));
}

bool ConfigFieldAbsent(const json& doc, const char* field) {
  return !doc.contains(field) || doc[field].is_null();
}

absl::StatusOr<std::string> ConfigModelType(const json& doc) {
  if (!doc.contains("model_type") || !doc["model_type"].is_string()) {
    return ConfigFieldError("model_type", "is required (a string)");
  }
  return doc["model_type"].get<std::string>();
}

absl::StatusOr<int64_t> ConfigPositiveInt(const json& doc, const char* field,
                                          std::optional<int64_t> fallback) {
  if (ConfigFieldAbsent(doc, field)) {
    if (fallback) return *fallback;
    return ConfigFieldError(field, "is required");
  }
  const json& v = doc[field];
  if (!v.is_number_integer() || v.get<int64_t>() <= 0) {
    return ConfigFieldError(field, "must be a positive integer");
  }
  if (v.get<int64_t>() > kMaxConfigInt) {
    return ConfigFieldError(field, absl::StrCat("is ", v.get<int64_t>(), ", over the limit of ",
                                                kMaxConfigInt, " (corrupt config.json?)"));
  }
  return v.get<int64_t>();
}

absl::StatusOr<double> ConfigPositiveNumber(const json& doc, const char* field,
                                            double fallback, double max,
                                            absl::string_view name) {
  if (ConfigFieldAbsent(doc, field)) return fallback;
  const json& v = doc[field];
  if (!v.is_number() || !(v.get<double>() > 0) || (max > 0 && v.get<double>() > max)) {
    return ConfigFieldError(name.empty() ? absl::string_view(field) : name,
                            max > 0 ? absl::StrCat("must be a number in (0, ", max, "]")
                                    : "must be a positive number");
  }
  return v.get<double>();
}

absl::StatusOr<bool> ConfigBool(const json& doc, const char* field, bool fallback) {
  if (ConfigFieldAbsent(doc, field)) return fallback;
  if (!doc[field].is_boolean()) return ConfigFieldError(field, "must be true or false");
  return doc[field].get<bool>();
}

absl::StatusOr<std::optional<int64_t>> ConfigOptionalTokenId(const json& doc,
                                                             const char* field) {
  if (ConfigFieldAbsent(doc, field)) return std::optional<int64_t>();
  const json& v = doc[field];
  if (!v.is_number_integer() || v.get<int64_t>() < 0) {
    return ConfigFieldError(field, "must be a non-negative integer");
  }
  return std::optional<int64_t>(v.get<int64_t>());
}

absl::StatusOr<std::vector<int64_t>> ConfigEosTokenIds(const json& doc) {
  std::vector<int64_t> ids;
  if (ConfigFieldAbsent(doc, "eos_token_id")) return ids;
  const json& eos = doc["eos_token_id"];
  if (eos.is_array()) {
    for (const json& id : eos) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0) {
        return ConfigFieldError("eos_token_id", "must be an integer or a list of integers");
      }
      ids.push_back(id.get<int64_t>());
    }
  } else {
    ASSIGN_OR_RETURN(std::optional<int64_t> id, ConfigOptionalTokenId(doc, "eos_token_id"));
    ids.push_back(*id);
  }
  return ids;
}

}  // namespace steadyeval
