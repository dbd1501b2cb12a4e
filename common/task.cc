#include "common/task.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/sha256.h"
#include "nlohmann/json.hpp"

namespace steadyeval {
namespace {

using json = nlohmann::json;

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
    if (!doc.contains(query_field) || !doc[query_field].is_string()) {
      return bad("field 'query' (or 'context') must be a string");
    }
    ex.query = doc[query_field].get<std::string>();
    if (!doc.contains("choices") || !doc["choices"].is_array() || doc["choices"].size() < 2) {
      return bad("field 'choices' must be an array of at least two strings");
    }
    for (const auto& c : doc["choices"]) {
      if (!c.is_string()) return bad("every entry of 'choices' must be a string");
      ex.choices.push_back(c.get<std::string>());
    }
    if (!doc.contains("gold") || !doc["gold"].is_number_integer()) {
      return bad("field 'gold' must be an integer option index");
    }
    int64_t gold = doc["gold"].get<int64_t>();
    if (gold < 0 || gold >= static_cast<int64_t>(ex.choices.size())) {
      return bad("'gold' is ", gold, " but there are ", ex.choices.size(), " choices");
    }
    ex.gold = static_cast<int>(gold);
    task.choice_examples.push_back(std::move(ex));
  }
  if (task.choice_examples.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(filename, ": no examples"));
  }
  return absl::OkStatus();
}

absl::Status ParseSampleList(absl::string_view filename, const json& doc, const char* field,
                             std::vector<GenerationSample>& out) {
  if (!doc.contains(field)) {
    if (absl::string_view(field) == "few_shots") return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(filename, ": missing field '", field, "'"));
  }
  if (!doc[field].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(filename, ": field '", field, "' must be an array"));
  }
  size_t i = 0;
  for (const auto& s : doc[field]) {
    if (!s.is_object() || !s.contains("input") || !s["input"].is_string() ||
        !s.contains("output") || !s["output"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          filename, ": ", field, "[", i, "] needs string fields 'input' and 'output'"));
    }
    out.push_back({s["input"].get<std::string>(), s["output"].get<std::string>()});
    ++i;
  }
  return absl::OkStatus();
}

absl::Status ParseGeneration(absl::string_view filename, absl::string_view content, Task& task) {
  json doc = json::parse(content.begin(), content.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(
        filename, ": not valid JSON (generation tasks use llm-jp-eval's evaluation JSON; "
                  "multiple-choice tasks must be named *.jsonl)"));
  }
  if (!doc.is_object()) return absl::InvalidArgumentError(absl::StrCat(filename, ": expected a JSON object"));
  if (!doc.contains("instruction") || !doc["instruction"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(filename, ": field 'instruction' must be a string"));
  }
  task.instruction = doc["instruction"].get<std::string>();
  if (!doc.contains("output_length") || !doc["output_length"].is_number_integer() ||
      doc["output_length"].get<int64_t>() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(filename, ": field 'output_length' must be a positive integer"));
  }
  task.output_length = static_cast<int>(doc["output_length"].get<int64_t>());
  if (!doc.contains("metrics") || !doc["metrics"].is_array() || doc["metrics"].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(filename, ": field 'metrics' must be a non-empty array of metric names"));
  }
  for (const auto& m : doc["metrics"]) {
    if (!m.is_string()) return absl::InvalidArgumentError(absl::StrCat(filename, ": metric names must be strings"));
    task.metrics.push_back(m.get<std::string>());
  }
  if (auto s = ParseSampleList(filename, doc, "few_shots", task.few_shots); !s.ok()) return s;
  if (auto s = ParseSampleList(filename, doc, "samples", task.samples); !s.ok()) return s;
  if (task.samples.empty()) return absl::InvalidArgumentError(absl::StrCat(filename, ": 'samples' is empty"));
  return absl::OkStatus();
}

}  // namespace

std::string Task::primary_metric() const {
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

absl::StatusOr<Task> ParseTask(absl::string_view filename, absl::string_view content) {
  Task task;
  task.filename = std::string(filename);
  task.name = TaskNameFromFilename(filename);
  task.sha256 = Sha256Hex(content);
  if (task.name.empty()) return absl::InvalidArgumentError(absl::StrCat("task file '", filename, "' has no name"));
  if (absl::EndsWith(filename, ".jsonl")) {
    task.kind = TaskKind::kMultipleChoice;
    if (auto s = ParseChoiceLines(filename, content, task); !s.ok()) return s;
  } else if (absl::EndsWith(filename, ".json")) {
    task.kind = TaskKind::kGeneration;
    if (auto s = ParseGeneration(filename, content, task); !s.ok()) return s;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "task file '", filename,
        "': name it *.json (llm-jp-eval generation) or *.jsonl (multiple choice)"));
  }
  return task;
}

}  // namespace steadyeval
