#include "server/config/config_file.h"

#include <filesystem>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_read.h"
#include "common/limits.h"
#include "common/status.h"
#include "common/task.h"
#include "server/config/server_flags.h"
#include "yaml-cpp/yaml.h"

namespace steadyeval {
namespace {

namespace fs = std::filesystem;

// A config file is a page of settings and runs; far larger is not one.
constexpr size_t kMaxConfigFileBytes = 16u << 20;

// The keys of one `runs:` entry (the `runs add` flags, with `tasks` a list of files).
const std::vector<std::string>& RunKeys() {
  static const auto* keys = new std::vector<std::string>{
      "name",          "source",         "s3_endpoint",  "s3_region",  "convert",
      "pattern",       "marker",         "tokenizer",    "few_shots",  "few_shots_from",
      "settle_seconds", "average",       "ensemble",     "prompt_language", "bos",
      "max_new_tokens_delta", "max_samples", "tasks"};
  return *keys;
}

const std::vector<std::string>& TaskKeys() {
  static const auto* keys =
      new std::vector<std::string>{"file", "category", "metric", "max_samples"};
  return *keys;
}

// Parsing context: the file's path (for messages) and folder (for relative paths).
struct Reader {
  std::string path;
  fs::path dir;

  std::string At(const YAML::Node& node) const {
    return absl::StrCat(path, ":", node.Mark().line + 1, ": ");
  }
  absl::Status Error(const YAML::Node& node, absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(At(node), message));
  }
  std::string Resolve(const std::string& p) const {
    if (p.empty() || p.find("://") != std::string::npos || fs::path(p).is_absolute()) return p;
    return (dir / p).lexically_normal().string();
  }
};

absl::Status CheckKeys(const Reader& r, const YAML::Node& map, const std::vector<std::string>& known,
                       absl::string_view where) {
  if (!map.IsMap()) return r.Error(map, absl::StrCat(where, " must be a mapping of key: value"));
  for (const auto& entry : map) {
    const std::string key = entry.first.Scalar();
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      return r.Error(entry.first, absl::StrCat("unknown key '", key, "' in ", where,
                                               " (known: ", absl::StrJoin(known, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ScalarOf(const Reader& r, const YAML::Node& node,
                                     absl::string_view key) {
  if (!node.IsScalar()) {
    return r.Error(node, absl::StrCat("'", key, "' must be a single value, not a list or map"));
  }
  return node.Scalar();
}

template <typename T>
absl::StatusOr<T> NumberOf(const Reader& r, const YAML::Node& node, absl::string_view key) {
  ASSIGN_OR_RETURN(std::string text, ScalarOf(r, node, key));
  T value{};
  if (!YAML::convert<T>::decode(node, value)) {
    return r.Error(node, absl::StrCat("'", key, "' is '", text, "'; it must be a number"));
  }
  return value;
}

// A scalar or a list of scalars, as a flag value ("a,b").
absl::StatusOr<std::string> ListOrScalar(const Reader& r, const YAML::Node& node,
                                         absl::string_view key) {
  if (node.IsScalar()) return node.Scalar();
  if (!node.IsSequence()) return r.Error(node, absl::StrCat("'", key, "' must be a list"));
  std::vector<std::string> items;
  for (const YAML::Node& item : node) {
    ASSIGN_OR_RETURN(std::string value, ScalarOf(r, item, key));
    items.push_back(value);
  }
  return absl::StrJoin(items, ",");
}

// A task file or its few-shot file, bounded as the server bounds one task file.
absl::StatusOr<std::string> ReadTaskFile(const std::string& path) {
  return ReadRegularFile(path, kMaxTaskFileBytes, "task file");
}

// A task's or a run's max_samples (0: all).
absl::StatusOr<uint32_t> MaxSamplesOf(const Reader& r, const YAML::Node& node) {
  ASSIGN_OR_RETURN(int64_t n, NumberOf<int64_t>(r, node, "max_samples"));
  if (n < 0 || n > 100000000) return r.Error(node, "max_samples must be >= 0");
  return static_cast<uint32_t>(n);
}

absl::Status ReadWindows(const Reader& r, const YAML::Node& node, absl::string_view key,
                         google::protobuf::RepeatedField<uint32_t>* out) {
  if (!node.IsSequence()) {
    return r.Error(node, absl::StrCat("'", key, "' must be a list of window sizes, e.g. [2, 4]"));
  }
  for (const YAML::Node& item : node) {
    ASSIGN_OR_RETURN(int64_t n, NumberOf<int64_t>(r, item, key));
    if (n < 2 || n > 1000000) {
      return r.Error(item, absl::StrCat("'", key, "' window size ", n, " must be >= 2"));
    }
    out->Add(static_cast<uint32_t>(n));
  }
  return absl::OkStatus();
}

// One `tasks:` item: a file path, or {file, category, metric, max_samples}.
absl::Status ReadTask(const Reader& r, const YAML::Node& node, const std::string& few_shots_from,
                      uint32_t default_max_samples, DeclaredRun& run) {
  v1::TaskRef ref;
  ref.set_max_samples(default_max_samples);
  std::string file;
  if (node.IsScalar()) {
    file = node.Scalar();
  } else {
    RETURN_IF_ERROR(CheckKeys(r, node, TaskKeys(), "a task"));
    if (!node["file"]) return r.Error(node, "a task needs 'file: PATH'");
    ASSIGN_OR_RETURN(file, ScalarOf(r, node["file"], "file"));
    if (node["category"]) {
      ASSIGN_OR_RETURN(std::string category, ScalarOf(r, node["category"], "category"));
      ref.set_category(category);
    }
    if (node["metric"]) {
      ASSIGN_OR_RETURN(std::string metric, ScalarOf(r, node["metric"], "metric"));
      ref.set_metric(metric);
    }
    if (node["max_samples"]) {
      ASSIGN_OR_RETURN(uint32_t max_samples, MaxSamplesOf(r, node["max_samples"]));
      ref.set_max_samples(max_samples);
    }
  }
  const std::string path = r.Resolve(file);
  absl::StatusOr<std::string> content = ReadTaskFile(path);
  if (absl::IsNotFound(content.status())) {
    return r.Error(node, absl::StrCat("task file ", path, " cannot be read"));
  }
  // Not a regular file, too large, or a failed read: that error names the file and why.
  if (!content.ok()) return r.Error(node, content.status().message());
  v1::TaskContent task;
  task.set_filename(fs::path(path).filename().string());
  task.set_content(*std::move(content));
  // Generation tasks (.json) take few-shot examples from the same-named file of
  // few_shots_from (a folder) or from that file itself, as `runs add --few_shots_from`.
  if (!few_shots_from.empty() && task.filename().size() > 5 &&
      task.filename().substr(task.filename().size() - 5) == ".json") {
    std::error_code ec;
    fs::path train = few_shots_from;
    if (fs::is_directory(train, ec)) train /= task.filename();
    if (fs::exists(train, ec)) {
      ASSIGN_OR_RETURN(std::string train_content, ReadTaskFile(train.string()));
      task.set_train_filename(train.filename().string());
      task.set_train_content(std::move(train_content));
    }
  }
  ref.set_name(TaskNameFromFilename(task.filename()));
  *run.config.add_tasks() = ref;
  run.task_files.push_back(std::move(task));
  return absl::OkStatus();
}

absl::Status ReadScalarField(const Reader& r, const YAML::Node& run_node, const std::string& key,
                             DeclaredRun& run) {
  const YAML::Node node = run_node[key];
  v1::RunConfig& c = run.config;
  if (key == "few_shots") {
    ASSIGN_OR_RETURN(int64_t n, NumberOf<int64_t>(r, node, key));
    if (n < 0 || n > 64) return r.Error(node, "few_shots must be in 0..64");
    c.set_few_shots(static_cast<int32_t>(n));
    return absl::OkStatus();
  }
  if (key == "settle_seconds") {
    ASSIGN_OR_RETURN(double s, NumberOf<double>(r, node, key));
    if (s < 0) return r.Error(node, "settle_seconds must not be negative");
    c.set_settle_seconds(s);
    return absl::OkStatus();
  }
  if (key == "max_new_tokens_delta") {
    ASSIGN_OR_RETURN(int64_t n, NumberOf<int64_t>(r, node, key));
    if (n < 0 || n > 4096) return r.Error(node, "max_new_tokens_delta must be in 0..4096");
    c.set_max_new_tokens_delta(static_cast<int32_t>(n));
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::string value, ScalarOf(r, node, key));
  if (key == "name") c.set_name(value);
  if (key == "source") c.set_source(r.Resolve(value));
  if (key == "s3_endpoint") c.set_s3_endpoint(value);
  if (key == "s3_region") c.set_s3_region(value);
  if (key == "convert") c.set_convert(value);
  if (key == "pattern") c.set_pattern(value);
  if (key == "marker") c.set_marker(value);
  if (key == "tokenizer") c.set_tokenizer_path(r.Resolve(value));
  if (key == "prompt_language") c.set_prompt_language(value);
  if (key == "bos") c.set_bos(value);
  return absl::OkStatus();
}

absl::StatusOr<DeclaredRun> ReadRun(const Reader& r, const YAML::Node& node) {
  RETURN_IF_ERROR(CheckKeys(r, node, RunKeys(), "a run"));
  DeclaredRun run;
  run.line = node.Mark().line + 1;
  run.config.set_few_shots(4);  // as `runs add`
  for (const char* required : {"name", "source", "tasks"}) {
    if (!node[required]) {
      return r.Error(node, absl::StrCat("a run needs '", required, "'"));
    }
  }
  for (const auto& entry : node) {
    const std::string key = entry.first.Scalar();
    if (key == "tasks" || key == "few_shots_from" || key == "max_samples") continue;
    if (key == "average") {
      RETURN_IF_ERROR(ReadWindows(r, entry.second, key, run.config.mutable_average_windows()));
    } else if (key == "ensemble") {
      RETURN_IF_ERROR(ReadWindows(r, entry.second, key, run.config.mutable_ensemble_windows()));
    } else {
      RETURN_IF_ERROR(ReadScalarField(r, node, key, run));
    }
  }
  std::string few_shots_from;
  if (node["few_shots_from"]) {
    ASSIGN_OR_RETURN(few_shots_from, ScalarOf(r, node["few_shots_from"], "few_shots_from"));
    few_shots_from = r.Resolve(few_shots_from);
  }
  uint32_t max_samples = 0;
  if (node["max_samples"]) {
    ASSIGN_OR_RETURN(max_samples, MaxSamplesOf(r, node["max_samples"]));
  }
  const YAML::Node tasks = node["tasks"];
  if (!tasks.IsSequence() || tasks.size() == 0) {
    return r.Error(tasks, "'tasks' must be a non-empty list of task files");
  }
  for (const YAML::Node& task : tasks) {
    RETURN_IF_ERROR(ReadTask(r, task, few_shots_from, max_samples, run));
  }
  return run;
}

absl::StatusOr<ConfigFile> ReadParsed(const Reader& r, const YAML::Node& root) {
  ConfigFile file;
  file.path = r.path;
  if (root.IsNull()) return file;
  std::vector<std::string> known = ConfigSettingKeys();
  known.push_back("runs");
  RETURN_IF_ERROR(CheckKeys(r, root, known, "the config file"));
  for (const auto& entry : root) {
    const std::string key = entry.first.Scalar();
    if (key == "runs") continue;
    ASSIGN_OR_RETURN(std::string value, ListOrScalar(r, entry.second, key));
    if (key == "data_dir" || key == "tls_cert" || key == "tls_key" || key == "client_ca" ||
        key == "tokens_file" || key == "ready_file") {
      value = r.Resolve(value);
    }
    file.settings[key] = value;
    file.setting_lines[key] = entry.first.Mark().line + 1;
  }
  const YAML::Node runs = root["runs"];
  if (!runs) return file;
  if (!runs.IsSequence()) {
    return r.Error(runs, "'runs' must be a list of runs (each item starts with '- name: ...')");
  }
  std::map<std::string, int> names;
  for (const YAML::Node& node : runs) {
    ASSIGN_OR_RETURN(DeclaredRun run, ReadRun(r, node));
    auto [it, added] = names.emplace(run.config.name(), run.line);
    if (!added) {
      return r.Error(node, absl::StrCat("run ", run.config.name(), " is declared twice (also at ",
                                        r.path, ":", it->second, "); run names must be unique"));
    }
    file.runs.push_back(std::move(run));
  }
  return file;
}

}  // namespace

const std::vector<std::string>& ConfigSettingKeys() {
  static const auto* keys = [] {
    auto* keys = new std::vector<std::string>;
    for (const FlagSpec& flag : ServerFlags()) {
      // These act on one invocation (which file, check only, help), not on the server.
      if (flag.name == "config" || flag.name == "check" || flag.name == "help") continue;
      keys->push_back(flag.name);
    }
    return keys;
  }();
  return *keys;
}

absl::StatusOr<ConfigFile> ReadConfigFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadRegularFile(path, kMaxConfigFileBytes, "config file");
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(absl::StrCat("config file ", path, " cannot be read"));
  }
  RETURN_IF_ERROR(text.status());  // not a regular file, too large, or a failed read
  return ReadConfigText(*text, path);
}

absl::StatusOr<ConfigFile> ReadConfigText(const std::string& text, const std::string& path) {
  Reader reader{path, fs::path(path).parent_path()};
  // yaml-cpp reports errors by exception; none leaves this function.
  try {
    const YAML::Node root = YAML::Load(text);
    return ReadParsed(reader, root);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", e.mark.line + 1, ": ", e.msg, " (YAML syntax)"));
  }
}

absl::StatusOr<std::vector<NewRun>> CheckDeclaredRuns(const ConfigFile& file,
                                                      const NewRunOptions& options) {
  std::vector<NewRun> checked;
  for (const DeclaredRun& run : file.runs) {
    absl::StatusOr<NewRun> one = CheckNewRun(run.config, run.task_files, options);
    if (!one.ok()) {
      return absl::Status(one.status().code(), absl::StrCat(file.path, ":", run.line, ": ",
                                                            one.status().message()));
    }
    checked.push_back(*std::move(one));
  }
  return checked;
}

}  // namespace steadyeval
