#include "common/task.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/sha256.h"
#include "nlohmann/json.hpp"

namespace steadyeval {
namespace {

using json = nlohmann::json;

// Length of the well-formed UTF-8 sequence at s[i], or 0 when it is malformed
// (overlong forms, surrogates and code points above U+10FFFF included).
size_t Utf8SequenceLength(absl::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t b0 = byte(i);
  if (b0 < 0x80) return 1;
  size_t n = 0;
  uint8_t lo = 0x80, hi = 0xbf;  // allowed range of the second byte
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    n = 2;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    n = 3;
    if (b0 == 0xe0) lo = 0xa0;
    if (b0 == 0xed) hi = 0x9f;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    n = 4;
    if (b0 == 0xf0) lo = 0x90;
    if (b0 == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
  }
  return n;
}

absl::Status ParseChoiceLines(absl::string_view filename, absl::string_view content, Task& task) {
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(content, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    auto bad = [&](auto&&... parts) {
      return absl::InvalidArgumentError(absl::StrCat(filename, ":", line_no, ": ", parts...));
    };
    json doc = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return bad("not valid JSON");
    if (!doc.is_object()) return bad("expected a JSON object");
    ChoiceExample ex;
    if (doc.contains("id")) {
      if (doc["id"].is_string()) {
        ex.id = doc["id"].get<std::string>();
      } else if (doc["id"].is_number_integer()) {
        ex.id = std::to_string(doc["id"].get<int64_t>());
      } else {
        return bad("field 'id' must be a string or an integer");
      }
    } else {
      ex.id = std::to_string(task.choice_examples.size());
    }
    const char* query_field = doc.contains("query") ? "query" : "context";
    if (!doc.contains(query_field)) return bad("missing field 'query' (or 'context')");
    if (!doc[query_field].is_string()) return bad("field '", query_field, "' must be a string");
    ex.query = doc[query_field].get<std::string>();
    if (!doc.contains("choices")) return bad("missing field 'choices'");
    if (!doc["choices"].is_array() || doc["choices"].size() < 2) {
      return bad("field 'choices' must be an array of at least two strings");
    }
    for (size_t k = 0; k < doc["choices"].size(); ++k) {
      if (!doc["choices"][k].is_string()) return bad("field 'choices[", k, "]' must be a string");
      ex.choices.push_back(doc["choices"][k].get<std::string>());
    }
    if (!doc.contains("gold")) return bad("missing field 'gold'");
    if (!doc["gold"].is_number_integer()) return bad("field 'gold' must be an integer option index");
    int64_t gold = doc["gold"].get<int64_t>();
    if (gold < 0 || gold >= static_cast<int64_t>(ex.choices.size())) {
      return bad("field 'gold' is ", gold, " but there are ", ex.choices.size(), " choices");
    }
    ex.gold = static_cast<int>(gold);
    task.choice_examples.push_back(std::move(ex));
  }
  if (task.choice_examples.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(filename, ": no examples (empty file)"));
  }
  return absl::OkStatus();
}

absl::Status ParseSampleList(absl::string_view filename, const json& doc, const char* field,
                             bool required, std::vector<GenerationSample>& out) {
  if (!doc.contains(field)) {
    if (!required) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(filename, ": missing field '", field, "'"));
  }
  if (!doc[field].is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(filename, ": field '", field, "' must be an array of {input, output}"));
  }
  const json& list = doc[field];
  for (size_t i = 0; i < list.size(); ++i) {
    const json& s = list[i];
    if (!s.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(filename, ": field '", field, "[", i, "]' must be an object"));
    }
    for (const char* key : {"input", "output"}) {
      if (!s.contains(key)) {
        return absl::InvalidArgumentError(
            absl::StrCat(filename, ": missing field '", field, "[", i, "].", key, "'"));
      }
      if (!s[key].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(filename, ": field '", field, "[", i, "].", key, "' must be a string"));
      }
    }
    out.push_back({s["input"].get<std::string>(), s["output"].get<std::string>()});
  }
  return absl::OkStatus();
}

absl::StatusOr<json> ParseJsonObject(absl::string_view filename, absl::string_view content) {
  json doc = json::parse(content.begin(), content.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(
        filename, ": not valid JSON (generation tasks use llm-jp-eval's evaluation JSON; "
                  "multiple-choice tasks must be named *.jsonl)"));
  }
  if (!doc.is_object()) return absl::InvalidArgumentError(absl::StrCat(filename, ": expected a JSON object"));
  return doc;
}

absl::Status ParseGeneration(absl::string_view filename, absl::string_view content, Task& task) {
  absl::StatusOr<json> parsed = ParseJsonObject(filename, content);
  if (!parsed.ok()) return parsed.status();
  const json& doc = *parsed;
  auto missing = [&](const char* field) {
    return absl::InvalidArgumentError(absl::StrCat(filename, ": missing field '", field, "'"));
  };
  if (!doc.contains("instruction")) return missing("instruction");
  if (!doc["instruction"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(filename, ": field 'instruction' must be a string"));
  }
  task.instruction = doc["instruction"].get<std::string>();
  if (!doc.contains("output_length")) return missing("output_length");
  if (!doc["output_length"].is_number_integer() || doc["output_length"].get<int64_t>() <= 0 ||
      doc["output_length"].get<int64_t>() > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat(filename, ": field 'output_length' must be an integer in 1..100000"));
  }
  task.output_length = static_cast<int>(doc["output_length"].get<int64_t>());
  if (!doc.contains("metrics")) return missing("metrics");
  if (!doc["metrics"].is_array() || doc["metrics"].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(filename, ": field 'metrics' must be a non-empty array of metric names"));
  }
  for (size_t i = 0; i < doc["metrics"].size(); ++i) {
    const json& m = doc["metrics"][i];
    if (!m.is_string() || m.get<std::string>().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(filename, ": field 'metrics[", i, "]' must be a metric name"));
    }
    task.metrics.push_back(m.get<std::string>());
  }
  if (auto s = ParseSampleList(filename, doc, "few_shots", false, task.few_shots); !s.ok()) return s;
  if (auto s = ParseSampleList(filename, doc, "samples", true, task.samples); !s.ok()) return s;
  if (task.samples.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(filename, ": field 'samples' is empty"));
  }
  return absl::OkStatus();
}

// The shots of an llm-jp-eval train file: its samples, in order.
absl::Status ParseTrainFile(const TaskOptions& options, Task& task) {
  const std::string& name = options.train_filename;
  if (auto s = CheckUtf8(name, options.train_content); !s.ok()) return s;
  absl::StatusOr<json> doc = ParseJsonObject(name, options.train_content);
  if (!doc.ok()) return doc.status();
  task.few_shots.clear();
  if (auto s = ParseSampleList(name, *doc, "samples", true, task.few_shots); !s.ok()) return s;
  if (task.few_shots.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": field 'samples' is empty (no shots)"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string Task::primary_metric() const {
  if (!metric_override.empty()) return metric_override;
  if (kind == TaskKind::kMultipleChoice) return "acc";
  return metrics.empty() ? "exact_match" : metrics.front();
}

std::string TaskNameFromFilename(absl::string_view filename) {
  size_t slash = filename.find_last_of('/');
  absl::string_view base = slash == absl::string_view::npos ? filename : filename.substr(slash + 1);
  size_t dot = base.find('.');
  return std::string(dot == absl::string_view::npos ? base : base.substr(0, dot));
}

absl::string_view TaskKindName(TaskKind kind) {
  return kind == TaskKind::kMultipleChoice ? "multiple_choice" : "generation";
}

std::optional<std::string> ParseTaskCategory(absl::string_view text) {
  const std::string upper = absl::AsciiStrToUpper(text);
  for (const char* category : kTaskCategories) {
    if (upper == category) return upper;
  }
  return std::nullopt;
}

std::string TaskCategoryList() { return absl::StrJoin(kTaskCategories, ", "); }

std::string TaskContentHash(absl::string_view content, absl::string_view train_content) {
  if (train_content.empty()) return Sha256Hex(content);
  return Sha256Hex(absl::StrCat(Sha256Hex(content), "+", Sha256Hex(train_content)));
}

absl::Status CheckUtf8(absl::string_view what, absl::string_view text) {
  size_t line = 1;
  for (size_t i = 0; i < text.size();) {
    const size_t n = Utf8SequenceLength(text, i);
    if (n == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": invalid UTF-8 at byte ", i, " (line ", line, "); task files must be UTF-8"));
    }
    if (text[i] == '\n') ++line;
    i += n;
  }
  return absl::OkStatus();
}

absl::StatusOr<Task> ParseTask(absl::string_view filename, absl::string_view content,
                               const TaskOptions& options) {
  Task task;
  task.filename = std::string(filename);
  task.name = TaskNameFromFilename(filename);
  task.sha256 = TaskContentHash(content, options.train_content);
  task.metric_override = options.metric;
  if (task.name.empty()) return absl::InvalidArgumentError(absl::StrCat("task file '", filename, "' has no name"));
  if (auto s = CheckUtf8(filename, content); !s.ok()) return s;
  if (absl::EndsWith(filename, ".jsonl")) {
    task.kind = TaskKind::kMultipleChoice;
    if (auto s = ParseChoiceLines(filename, content, task); !s.ok()) return s;
    task.metrics = {"acc", "acc_norm"};
  } else if (absl::EndsWith(filename, ".json")) {
    task.kind = TaskKind::kGeneration;
    if (auto s = ParseGeneration(filename, content, task); !s.ok()) return s;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "task file '", filename,
        "': name it *.json (llm-jp-eval generation) or *.jsonl (multiple choice)"));
  }
  if (!options.train_filename.empty()) {
    if (task.kind != TaskKind::kGeneration) {
      return absl::InvalidArgumentError(absl::StrCat(
          filename, ": a few-shot train file (", options.train_filename,
          ") applies to generation tasks only"));
    }
    if (auto s = ParseTrainFile(options, task); !s.ok()) return s;
  }
  task.total_samples = static_cast<uint32_t>(task.size());
  if (options.max_samples > 0 && options.max_samples < task.size()) {
    task.samples.resize(std::min<size_t>(task.samples.size(), options.max_samples));
    task.choice_examples.resize(std::min<size_t>(task.choice_examples.size(), options.max_samples));
  }
  return task;
}

}  // namespace steadyeval
