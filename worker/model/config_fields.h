// Readers for the fields of a checkpoint's config.json (Hugging Face layout), shared by
// the model families' config parsers (model_config.cc, gpt_neox_model.cc,
// gpt2_model.cc) so that every family reads and reports a field the same way.
//
// A field that is absent or JSON null takes its fallback (or, where there is none, is
// "required"). Errors are INVALID_ARGUMENT with messages of the form
// `config.json: field '<name>' <what>`, e.g. "config.json: field 'n_head' must be a
// positive integer". Thread-safe (pure functions).
#ifndef STEADYEVAL_WORKER_MODEL_CONFIG_FIELDS_H_
#define STEADYEVAL_WORKER_MODEL_CONFIG_FIELDS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace steadyeval {

// `text` parsed as a JSON object; INVALID_ARGUMENT "config.json: not a JSON object"
// otherwise, or when it nests deeper than kMaxJsonNesting (common/json_limits.h).
absl::StatusOr<nlohmann::json> ParseConfigObject(absl::string_view text);

// INVALID_ARGUMENT "config.json: field '<field>' <what>".
absl::Status ConfigFieldError(absl::string_view field, absl::string_view what);

// Whether `field` of `doc` is absent or null.
bool ConfigFieldAbsent(const nlohmann::json& doc, const char* field);

// The string `model_type`; INVALID_ARGUMENT when absent or not a string.
absl::StatusOr<std::string> ConfigModelType(const nlohmann::json& doc);

// Largest size, count or length a config.json field may give (2^31 - 1). Real models are
// orders of magnitude below it; products of two such fields fit in int64_t.
inline constexpr int64_t kMaxConfigInt = 2147483647;

// A positive integer field, at most kMaxConfigInt; `fallback` when absent (nullopt: the
// field is required).
absl::StatusOr<int64_t> ConfigPositiveInt(const nlohmann::json& doc, const char* field,
                                          std::optional<int64_t> fallback = std::nullopt);

// A number field > 0 and, when `max` > 0, <= max; `fallback` when absent. Messages name
// it `name` when given (e.g. "rope_parameters.rope_theta" for a field of a nested
// object), else `field`.
absl::StatusOr<double> ConfigPositiveNumber(const nlohmann::json& doc, const char* field,
                                            double fallback, double max = 0,
                                            absl::string_view name = {});

// A boolean field; `fallback` when absent.
absl::StatusOr<bool> ConfigBool(const nlohmann::json& doc, const char* field, bool fallback);

// A non-negative integer token id; nullopt when absent.
absl::StatusOr<std::optional<int64_t>> ConfigOptionalTokenId(const nlohmann::json& doc,
                                                             const char* field);

// `eos_token_id` as Llama and GPT-2 configs give it: an integer or a list of integers
// (each non-negative); empty when absent.
absl::StatusOr<std::vector<int64_t>> ConfigEosTokenIds(const nlohmann::json& doc);

}  // namespace steadyeval

#endif  // STEADYEVAL_WORKER_MODEL_CONFIG_FIELDS_H_
