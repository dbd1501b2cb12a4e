#include "client/cli.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/format.h"
#include "client/plot.h"
#include "client/watch.h"
#include "api/variant_proto.h"
#include "common/cli_args.h"
#include "common/status.h"
#include "common/prompt.h"
#include "common/scoring.h"
#include "common/task.h"
#include "common/file_read.h"
#include "common/limits.h"
#include "common/text_escape.h"
#include "common/variant.h"

namespace steadyeval::client {
namespace {

namespace fs = std::filesystem;

// Global flags, accepted by every command.
const std::vector<FlagSpec>& GlobalFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"server", false,
       absl::StrCat("coordinator address (default $STEADYEVAL_SERVER or ", kDefaultServer, ")"),
       "HOST:PORT"},
      {"json", true, "print one JSON object (data only) to stdout"},
      {"timeout_s", false, "deadline of each request in seconds (default 30)", "N"},
      {"token_file", false,
       "file whose first line is the bearer token (default $STEADYEVAL_TOKEN_FILE)", "FILE"},
      {"ca_cert", false, "connect over TLS, trusting these PEM roots for the server", "FILE"},
      {"client_cert", false, "PEM client certificate for a server that requires mTLS", "FILE"},
      {"client_key", false, "PEM private key of --client_cert", "FILE"},
      {"help", true, "explain usage"},
  };
  return *flags;
}

// Every command-specific flag; a command lists the names it takes.
const std::vector<FlagSpec>& CommandFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"source", false,
       "where the trainer writes checkpoints: a folder (made absolute) or an S3-compatible "
       "bucket prefix s3://BUCKET/PREFIX (read with the server's own AWS credentials; it "
       "may hold no objects yet)",
       "DIR|s3://BUCKET/PREFIX"},
      {"s3_endpoint", false,
       "S3-compatible endpoint of an s3:// source (MinIO, Ceph RGW, GCS's XML API), addressed "
       "path-style; it must be in the server's --s3_endpoints (default: AWS)",
       "URL"},
      {"s3_region", false,
       "region that signs an s3:// source's requests (default: the server's AWS_REGION, else "
       "us-east-1)",
       "REGION"},
      {"convert", false,
       "converter a worker runs on each checkpoint before loading it (a NAME the workers "
       "declare with --converter NAME='CMD {src} {dst}'), for Megatron, DeepSpeed or PyTorch "
       "DCP checkpoints",
       "NAME"},
      {"tasks", false,
       "task files (.jsonl multiple choice, .json llm-jp-eval), comma-separated, each with an "
       "optional llm-jp-eval category (NLI, QA, RC, MC, EL, FA, MR, MT, HE)",
       "FILE[:CATEGORY][,...]"},
      {"average", false,
       "checkpoint-averaging windows: an avg@n variant per size n >= 2; 'none' for none",
       "N[,N...]"},
      {"ensemble", false,
       "ensemble windows: ens@n (and ens-soft@n) variants per size n >= 2; 'none' for none",
       "N[,N...]"},
      {"few_shots", false, "few-shot examples for generation tasks (default 4)", "K"},
      {"few_shots_from", false,
       "take generation tasks' shots from llm-jp-eval's train split: a folder holding a "
       "file of the same name per task (its first K samples are the shots), or one file",
       "DIR|FILE"},
      {"max_samples", false,
       "evaluate only the first N samples of every task (default: all; llm-jp-eval uses 100)",
       "N"},
      {"metric", false,
       "primary metric of a task, whose value is its score (default: the file's first; acc "
       "for multiple choice)", "TASK=METRIC[,...]"},
      {"prompt_language", false, "prompt template: ja (default) or en", "ja|en"},
      {"bos", false, "BOS token before prompts: auto (tokenizer config, default), add, none",
       "auto|add|none"},
      {"max_new_tokens_delta", false, "tokens added to each task's output_length (default 0)",
       "N"},
      {"pattern", false, "regex with one capture group for the step (default: common names)",
       "REGEX"},
      {"marker", false, "file that must exist in a complete checkpoint (e.g. .complete)", "NAME"},
      {"settle_seconds", false, "a checkpoint must be unchanged this long before evaluation",
       "S"},
      {"tokenizer", false, "tokenizer.model to use instead of each checkpoint's", "FILE"},
      {"run", false, "only this run's jobs", "NAME"},
      {"state", false, "with --run: requeue the run's jobs in this state (only failed)", "failed"},
      {"yes", true, "really delete: the run's checkpoints, jobs, predictions and scores go for good"},
      {"task", false, "only this task", "TASK"},
      {"variant", false, "raw, avg@n, ens@n, ens-soft@n, or all (default all)", "V"},
      {"last", false, "the last K raw points, or the last P% of them (default: the last 20%)",
       "K|P%"},
      {"steps", false, "the steps from A to B, inclusive (instead of --last)", "A:B"},
      {"example", false, "one example, by its index in the task", "I"},
      {"flippiest", false, "the K examples whose raw output changes most often", "K"},
      {"format", false, "jsonl (one JSON object per line) or csv (RFC 4180, with a header)",
       "jsonl|csv"},
      {"out", false, "the image to write: .svg (vector) or .png", "FILE.svg|FILE.png"},
      {"variants", false,
       "variants to draw, comma-separated (default: raw and every variant with scores)",
       "V[,V...]"},
      {"interval_s", false, "seconds between refreshes (default 2)", "S"},
      {"once", true, "print one frame (or with --line one line) and exit"},
      {"line", true, "one compact status line per refresh, printed when it changes"},
      {"yaml", true, "print the run as a config file entry (steadyeval-server --config)"},
      {"to", false,
       "backup folder on the server's machine (made absolute here; created if missing)", "DIR"},
  };
  return *flags;
}

// One command of the CLI. Commands() holds one entry per command, and it is the only place
// a command is defined: parsing (which flags and arguments it takes, its own checks),
// --help (usage line, summary, examples) and dispatch all read the entry.
struct CommandSpec {
  std::vector<std::string> words;        // e.g. {"runs", "add"}
  std::vector<std::string> positionals;  // names, e.g. {"NAME"}; a last "X..." takes any number
  std::vector<std::string> flags;        // command-specific flag names (CommandFlags())
  // The help: before the first ';' it is the command's line in the command list.
  std::string summary;
  std::vector<std::string> examples;
  std::vector<std::string> required_flags;  // shown without brackets; checked when parsing
  // The command's own usage checks beyond the above (flag formats and combinations), made
  // when parsing, before any request; a failure is a usage error (exit code 2). May be null.
  absl::Status (*check)(const Invocation& inv, const ParsedArgs& parsed);
  // Runs the parsed command against `stub`: results to `out`, notes to `err`.
  absl::Status (*run)(const Invocation& inv, v1::EvalService::StubInterface* stub,
                      std::ostream& out, std::ostream& err);
};

// Every command, in --help order (defined after the commands' functions, at the end of
// this namespace).
const std::vector<CommandSpec>& Commands();

const FlagSpec* FindFlag(const std::string& name) {
  for (const auto* list : {&GlobalFlags(), &CommandFlags()}) {
    for (const FlagSpec& f : *list) {
      if (f.name == name) return &f;
    }
  }
  return nullptr;
}

std::string UsageLine(const CommandSpec& c) {
  std::string line = absl::StrCat("steadyeval ", absl::StrJoin(c.words, " "));
  for (const std::string& p : c.positionals) absl::StrAppend(&line, " ", p);
  for (const std::string& f : c.flags) {
    const FlagSpec* spec = FindFlag(f);
    const bool required =
        std::find(c.required_flags.begin(), c.required_flags.end(), f) != c.required_flags.end();
    absl::StrAppend(&line, required ? " " : " [", "--", f,
                    spec->boolean ? "" : absl::StrCat(" ", spec->value_name),
                    required ? "" : "]");
  }
  return line;
}

// Finds the command named by the leading positionals; sets `consumed` to its word count.
const CommandSpec* MatchCommand(const std::vector<std::string>& positionals, size_t& consumed) {
  const CommandSpec* best = nullptr;
  for (const CommandSpec& c : Commands()) {
    if (c.words.size() > positionals.size()) continue;
    if (!std::equal(c.words.begin(), c.words.end(), positionals.begin())) continue;
    if (best == nullptr || c.words.size() > best->words.size()) best = &c;
  }
  consumed = best == nullptr ? 0 : best->words.size();
  return best;
}

absl::Status UsageError(const std::string& reason, const CommandSpec* command) {
  if (command == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(reason, " (see 'steadyeval --help')"));
  }
  return absl::InvalidArgumentError(absl::StrCat(reason, "; usage: ", UsageLine(*command),
                                                 " (see 'steadyeval ",
                                                 absl::StrJoin(command->words, " "),
                                                 " --help')"));
}

// A message on one line, control characters escaped, at most 4 KiB of it.
std::string OneLine(absl::string_view s) {
  std::string out = absl::StrReplaceAll(s, {{"\r\n", " "}, {"\n", " "}, {"\r", " "}});
  return Printable(out, 4096);
}

void SetDeadline(const Invocation& inv, grpc::ClientContext& ctx) {
  ::steadyeval::client::SetDeadline(inv.timeout_s, ctx);
}

void PrintJson(const Json& doc, std::ostream& out) {
  out << doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

std::string MakeAbsolute(const std::string& path) {
  if (path.find("://") != std::string::npos) return path;  // s3://, file://
  std::error_code ec;
  fs::path abs = fs::absolute(path, ec);
  return ec ? path : abs.lexically_normal().string();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  return ReadRegularFile(path, kMaxTaskFileBytes, "task file");
}

bool FileExists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

// "all", or a variant in the one spelling the server accepts (common/variant.h).
bool IsValidVariant(const std::string& variant) {
  return variant == "all" || ParseVariant(variant).ok();
}

// Sets the select oneof of `request` (when not null) from --example / --flippiest.
absl::Status SetExampleSelection(const Invocation& inv, v1::GetExamplesRequest* request) {
  if (inv.HasFlag("example") && inv.HasFlag("flippiest")) {
    return absl::InvalidArgumentError("--example and --flippiest are mutually exclusive");
  }
  uint32_t value = 0;
  if (inv.HasFlag("example")) {
    if (!absl::SimpleAtoi(inv.Flag("example"), &value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad --example '", inv.Flag("example"), "': give the example's index (0, 1, ...)"));
    }
    if (request != nullptr) request->set_example(value);
  }
  if (inv.HasFlag("flippiest")) {
    if (!absl::SimpleAtoi(inv.Flag("flippiest"), &value) || value == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad --flippiest '", inv.Flag("flippiest"), "': give a count K >= 1"));
    }
    if (request != nullptr) request->set_flippiest(value);
  }
  return absl::OkStatus();
}

// Per-task settings of `runs add` beyond the file itself.
struct TaskSettings {
  std::map<std::string, std::string> metric_by_task;  // --metric TASK=METRIC
  uint32_t max_samples = 0;                            // --max_samples
  std::string few_shots_from;                          // --few_shots_from DIR|FILE
};

// The train file for a generation task under --few_shots_from (empty when unused).
absl::StatusOr<std::string> TrainFileFor(const TaskSettings& settings, const std::string& task_path) {
  if (settings.few_shots_from.empty()) return std::string();
  std::error_code ec;
  if (!fs::is_directory(settings.few_shots_from, ec)) return settings.few_shots_from;
  const fs::path candidate = fs::path(settings.few_shots_from) / fs::path(task_path).filename();
  if (!fs::exists(candidate, ec)) {
    return absl::NotFoundError(absl::StrCat(
        "--few_shots_from ", settings.few_shots_from, " has no ", candidate.filename().string(),
        " for task file ", task_path, " (llm-jp-eval keeps each task's train split under the "
        "same file name)"));
  }
  return candidate.string();
}

// Reads one --tasks entry into `req`: the file's content (and its few-shot train file),
// and its TaskRef with the category, metric and sample cap.
absl::Status AddTaskFile(const TaskSpec& spec, const TaskSettings& settings,
                         std::set<std::string>& names, v1::CreateRunRequest& req,
                         std::ostream& err) {
  ASSIGN_OR_RETURN(std::string content, ReadFile(spec.path));
  const std::string filename = fs::path(spec.path).filename().string();
  const std::string name = TaskNameFromFilename(filename);
  TaskOptions options;
  if (auto m = settings.metric_by_task.find(name); m != settings.metric_by_task.end()) {
    options.metric = m->second;
  }
  options.max_samples = settings.max_samples;
  if (absl::EndsWith(filename, ".json")) {
    absl::StatusOr<std::string> train = TrainFileFor(settings, spec.path);
    if (absl::IsNotFound(train.status())) {
      // No train split for this task: its own few_shots serve, if it has any.
      ASSIGN_OR_RETURN(Task own, ParseTask(spec.path, content, options));
      if (own.few_shots.empty()) {
        return absl::NotFoundError(
            absl::StrCat(train.status().message(), ", and the task file has no few_shots"));
      }
      err << "note: " << train.status().message() << "; using the " << own.few_shots.size()
          << " few_shots in " << spec.path << "\n";
      train = std::string();
    }
    RETURN_IF_ERROR(train.status());
    options.train_filename = *train;
    if (!options.train_filename.empty()) {
      ASSIGN_OR_RETURN(options.train_content, ReadFile(options.train_filename));
    }
  }
  ASSIGN_OR_RETURN(Task task, ParseTask(spec.path, content, options));
  RETURN_IF_ERROR(CheckMetricsSupported(task));
  if (!names.insert(task.name).second) {
    return absl::InvalidArgumentError(
        absl::StrCat("two task files are named '", task.name, "' (", spec.path,
                     "): task names must be unique within a run"));
  }
  v1::TaskRef* ref = req.mutable_config()->add_tasks();
  ref->set_name(name);
  ref->set_category(spec.category);
  ref->set_metric(options.metric);
  ref->set_max_samples(options.max_samples);
  v1::TaskContent* tc = req.add_task_files();
  tc->set_filename(filename);
  tc->set_kind(task.kind == TaskKind::kMultipleChoice ? v1::TASK_KIND_MULTIPLE_CHOICE
                                                      : v1::TASK_KIND_GENERATION);
  tc->set_content(std::move(content));
  if (!options.train_filename.empty()) {
    tc->set_train_filename(fs::path(options.train_filename).filename().string());
    tc->set_train_content(std::move(options.train_content));
  }
  return absl::OkStatus();
}

// Parses --metric TASK=METRIC[,...] (repeatable).
absl::StatusOr<std::map<std::string, std::string>> ParseMetricFlags(
    const std::vector<std::string>& values) {
  std::map<std::string, std::string> out;
  for (const std::string& value : values) {
    for (absl::string_view piece : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
      std::pair<std::string, std::string> kv = absl::StrSplit(piece, absl::MaxSplits('=', 1));
      absl::StripAsciiWhitespace(&kv.first);
      absl::StripAsciiWhitespace(&kv.second);
      if (kv.first.empty() || kv.second.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "bad --metric '", piece, "': give TASK=METRIC, e.g. jcommonsenseqa=acc_norm"));
      }
      out[kv.first] = kv.second;
    }
  }
  return out;
}

void PrintRun(const Invocation& inv, const v1::Run& run, const std::string& verb,
              std::ostream& out) {
  if (inv.json) {
    PrintJson(RunToJson(run), out);
    return;
  }
  out << verb << " run " << run.config().name() << "\n";
  v1::GetRunResponse details;
  *details.mutable_run() = run;
  out << RunDetailsText(details, absl::ToUnixMillis(absl::Now()));
}

// ---- The commands: each one's usage check (CommandSpec::check, where it has one) and code
// (CommandSpec::run); Commands() at the end of this namespace lists them.

absl::Status CheckRunsAdd(const Invocation& inv, const ParsedArgs& parsed) {
  for (const std::string& value : inv.flags.at("tasks")) {
    for (absl::string_view piece : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
      RETURN_IF_ERROR(
          ParseTaskSpec(std::string(absl::StripAsciiWhitespace(piece)), FileExists).status());
    }
  }
  ASSIGN_OR_RETURN(int64_t few, parsed.GetInt("few_shots", 4));
  if (few < 0 || few > 64) return absl::InvalidArgumentError("--few_shots must be in 0..64");
  auto max_samples = parsed.GetInt("max_samples", 0);
  if (!max_samples.ok() || *max_samples < 0 || *max_samples > 100000000) {
    return absl::InvalidArgumentError("--max_samples must be a count N >= 1");
  }
  auto delta = parsed.GetInt("max_new_tokens_delta", 0);
  if (!delta.ok() || *delta < 0 || *delta > 4096) {
    return absl::InvalidArgumentError("--max_new_tokens_delta must be in 0..4096");
  }
  if (inv.HasFlag("prompt_language") && !ParsePromptLanguage(inv.Flag("prompt_language"))) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad --prompt_language '", inv.Flag("prompt_language"), "': use ja or en"));
  }
  if (inv.HasFlag("bos") && !ParseBosMode(inv.Flag("bos"))) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad --bos '", inv.Flag("bos"), "': use auto, add or none"));
  }
  if (inv.HasFlag("metric")) RETURN_IF_ERROR(ParseMetricFlags(inv.flags.at("metric")).status());
  ASSIGN_OR_RETURN(double settle, parsed.GetDouble("settle_seconds", 0));
  if (settle < 0) return absl::InvalidArgumentError("--settle_seconds must not be negative");
  return absl::OkStatus();
}

absl::Status RunsAdd(const Invocation& inv, v1::EvalService::StubInterface* stub,
                     std::ostream& out, std::ostream& err) {
  v1::CreateRunRequest req;
  v1::RunConfig& config = *req.mutable_config();
  config.set_name(inv.args[0]);
  const std::string source = inv.Flag("source");
  config.set_source(MakeAbsolute(source));
  config.set_pattern(inv.Flag("pattern"));
  config.set_marker(inv.Flag("marker"));
  config.set_s3_endpoint(inv.Flag("s3_endpoint"));
  config.set_s3_region(inv.Flag("s3_region"));
  config.set_convert(inv.Flag("convert"));
  if (inv.HasFlag("tokenizer")) config.set_tokenizer_path(MakeAbsolute(inv.Flag("tokenizer")));
  int64_t few_shots = 4;
  if (inv.HasFlag("few_shots")) absl::SimpleAtoi(inv.Flag("few_shots"), &few_shots);
  config.set_few_shots(static_cast<int32_t>(few_shots));
  double settle = 0;
  if (inv.HasFlag("settle_seconds")) absl::SimpleAtod(inv.Flag("settle_seconds"), &settle);
  config.set_settle_seconds(settle);

  for (const char* flag : {"average", "ensemble"}) {
    if (!inv.HasFlag(flag)) continue;
    ASSIGN_OR_RETURN(std::vector<uint32_t> windows, ParseWindows(flag, inv.Flag(flag)));
    auto* field = std::string(flag) == "average" ? config.mutable_average_windows()
                                                 : config.mutable_ensemble_windows();
    field->Add(windows.begin(), windows.end());
  }

  config.set_prompt_language(inv.HasFlag("prompt_language") ? inv.Flag("prompt_language") : "ja");
  config.set_bos(inv.HasFlag("bos") ? inv.Flag("bos") : "auto");
  int64_t delta = 0;
  if (inv.HasFlag("max_new_tokens_delta")) absl::SimpleAtoi(inv.Flag("max_new_tokens_delta"), &delta);
  config.set_max_new_tokens_delta(static_cast<int32_t>(delta));

  TaskSettings settings;
  if (inv.HasFlag("metric")) {
    ASSIGN_OR_RETURN(settings.metric_by_task, ParseMetricFlags(inv.flags.at("metric")));
  }
  int64_t max_samples = 0;
  if (inv.HasFlag("max_samples")) absl::SimpleAtoi(inv.Flag("max_samples"), &max_samples);
  settings.max_samples = static_cast<uint32_t>(max_samples);
  if (inv.HasFlag("few_shots_from")) settings.few_shots_from = inv.Flag("few_shots_from");
  std::set<std::string> names;
  for (const std::string& value : inv.flags.at("tasks")) {
    for (absl::string_view piece : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
      ASSIGN_OR_RETURN(TaskSpec spec, ParseTaskSpec(std::string(absl::StripAsciiWhitespace(piece)),
                                                    FileExists));
      RETURN_IF_ERROR(AddTaskFile(spec, settings, names, req, err));
    }
  }
  for (const auto& [task, metric] : settings.metric_by_task) {
    if (!names.count(task)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--metric names task '", task, "', which is not among --tasks (task names are the "
          "file names without extension)"));
    }
  }
  if (req.task_files_size() == 0) return absl::InvalidArgumentError("--tasks names no file");

  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::Run run;
  RETURN_IF_ERROR(ToAbsl(stub->CreateRun(&ctx, req, &run)));
  std::error_code ec;
  if (config.source().find("://") == std::string::npos && !fs::exists(config.source(), ec)) {
    err << "note: " << config.source() << " does not exist yet; checkpoints are picked up once "
        << "the trainer writes them\n";
  }
  PrintRun(inv, run, "created", out);
  return absl::OkStatus();
}

absl::Status CheckRunsUpdate(const Invocation& inv, const ParsedArgs& /*parsed*/) {
  if (!inv.HasFlag("average") && !inv.HasFlag("ensemble")) {
    return absl::InvalidArgumentError("nothing to update: give --average and/or --ensemble");
  }
  return absl::OkStatus();
}

absl::Status RunsUpdate(const Invocation& inv, v1::EvalService::StubInterface* stub,
                        std::ostream& out, std::ostream& /*err*/) {
  v1::UpdateRunRequest req;
  req.set_name(inv.args[0]);
  if (inv.HasFlag("average")) {
    ASSIGN_OR_RETURN(std::vector<uint32_t> windows, ParseWindows("average", inv.Flag("average")));
    req.set_set_average_windows(true);
    req.mutable_average_windows()->Add(windows.begin(), windows.end());
  }
  if (inv.HasFlag("ensemble")) {
    ASSIGN_OR_RETURN(std::vector<uint32_t> windows,
                     ParseWindows("ensemble", inv.Flag("ensemble")));
    req.set_set_ensemble_windows(true);
    req.mutable_ensemble_windows()->Add(windows.begin(), windows.end());
  }
  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::Run run;
  RETURN_IF_ERROR(ToAbsl(stub->UpdateRun(&ctx, req, &run)));
  PrintRun(inv, run, "updated", out);
  return absl::OkStatus();
}

absl::Status RunsList(const Invocation& inv, v1::EvalService::StubInterface* stub,
                      std::ostream& out, std::ostream& /*err*/) {
  std::vector<v1::Run> runs;
  std::string token;
  do {
    grpc::ClientContext ctx;
    SetDeadline(inv, ctx);
    v1::ListRunsRequest req;
    req.set_page_token(token);
    v1::ListRunsResponse resp;
    RETURN_IF_ERROR(ToAbsl(stub->ListRuns(&ctx, req, &resp)));
    runs.insert(runs.end(), resp.runs().begin(), resp.runs().end());
    if (!resp.next_page_token().empty() && resp.next_page_token() == token) {
      return absl::InternalError(
          absl::StrCat("server returned the same page token twice ('", token, "')"));
    }
    token = resp.next_page_token();
  } while (!token.empty());
  if (inv.json) {
    PrintJson(RunsToJson(runs), out);
  } else if (runs.empty()) {
    out << "no runs (add one with 'steadyeval runs add')\n";
  } else {
    out << RunsTable(runs);
  }
  return absl::OkStatus();
}

absl::Status RunsShow(const Invocation& inv, v1::EvalService::StubInterface* stub,
                      std::ostream& out, std::ostream& /*err*/) {
  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::GetRunRequest req;
  req.set_name(inv.args[0]);
  v1::GetRunResponse resp;
  RETURN_IF_ERROR(ToAbsl(stub->GetRun(&ctx, req, &resp)));
  if (inv.HasFlag("yaml")) {
    out << RunAsYaml(resp.run());
  } else if (inv.json) {
    PrintJson(RunDetailsToJson(resp), out);
  } else {
    out << RunDetailsText(resp, absl::ToUnixMillis(absl::Now()));
  }
  return absl::OkStatus();
}

absl::Status ListCheckpoints(const Invocation& inv, v1::EvalService::StubInterface* stub,
                             std::ostream& out, std::ostream& /*err*/) {
  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::ListCheckpointsRequest req;
  req.set_run(inv.args[0]);
  std::vector<v1::Checkpoint> items;
  RETURN_IF_ERROR(ReadAll(stub->ListCheckpoints(&ctx, req).get(), items));
  // The folders not admitted yet (an older server does not know the request).
  std::vector<v1::PendingCheckpoint> pending;
  v1::ListPendingCheckpointsResponse pending_resp;
  {
    grpc::ClientContext pending_ctx;
    SetDeadline(inv, pending_ctx);
    v1::ListPendingCheckpointsRequest pending_req;
    pending_req.set_run(inv.args[0]);
    absl::Status status =
        ToAbsl(stub->ListPendingCheckpoints(&pending_ctx, pending_req, &pending_resp));
    if (!status.ok() && !absl::IsUnimplemented(status)) return status;
    pending.assign(pending_resp.pending().begin(), pending_resp.pending().end());
  }
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  if (inv.json) {
    Json json = CheckpointsToJson(items, pending);
    if (!pending_resp.source_error().empty()) {  // only then: the usual shape stays
      json["source_error"] = pending_resp.source_error();
      json["source_error_since_unix_ms"] = pending_resp.source_error_since_unix_ms();
    }
    PrintJson(json, out);
    return absl::OkStatus();
  }
  if (!pending_resp.source_error().empty()) {
    out << "the server cannot list this run's source (for "
        << FormatAge(now_ms - pending_resp.source_error_since_unix_ms())
        << "; it keeps polling): " << Printable(pending_resp.source_error()) << "\n";
  }
  if (items.empty() && pending.empty()) {
    out << "no checkpoints admitted yet for run " << inv.args[0] << "\n";
  } else {
    out << CheckpointsTable(items, pending, now_ms);
  }
  return absl::OkStatus();
}

absl::Status SetRunPaused(const Invocation& inv, v1::EvalService::StubInterface* stub,
                          std::ostream& out, bool paused) {
  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::SetRunPausedRequest req;
  req.set_name(inv.args[0]);
  req.set_paused(paused);
  v1::Run run;
  RETURN_IF_ERROR(ToAbsl(stub->SetRunPaused(&ctx, req, &run)));
  if (inv.json) {
    PrintJson(RunToJson(run), out);
  } else if (paused) {
    out << "paused run " << inv.args[0]
        << ": no checkpoints are admitted and no jobs leased until `steadyeval runs resume "
        << inv.args[0] << "`\n";
  } else {
    out << "resumed run " << inv.args[0] << "\n";
  }
  return absl::OkStatus();
}

absl::Status RunsPause(const Invocation& inv, v1::EvalService::StubInterface* stub,
                       std::ostream& out, std::ostream& /*err*/) {
  return SetRunPaused(inv, stub, out, /*paused=*/true);
}

absl::Status RunsResume(const Invocation& inv, v1::EvalService::StubInterface* stub,
                        std::ostream& out, std::ostream& /*err*/) {
  return SetRunPaused(inv, stub, out, /*paused=*/false);
}

absl::Status CheckRunsDelete(const Invocation& inv, const ParsedArgs& /*parsed*/) {
  if (!inv.HasFlag("yes")) {
    return absl::InvalidArgumentError(
        absl::StrCat("deleting run ", inv.args[0],
                     " removes its checkpoint records, jobs, predictions and scores for good; "
                     "repeat with --yes to do it"));
  }
  return absl::OkStatus();
}

absl::Status RunsDelete(const Invocation& inv, v1::EvalService::StubInterface* stub,
                        std::ostream& out, std::ostream& /*err*/) {
  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::DeleteRunRequest req;
  req.set_name(inv.args[0]);
  v1::DeleteRunResponse resp;
  RETURN_IF_ERROR(ToAbsl(stub->DeleteRun(&ctx, req, &resp)));
  if (inv.json) {
    PrintJson({{"run", inv.args[0]}, {"keys_deleted", resp.keys_deleted()}}, out);
  } else {
    out << "deleted run " << inv.args[0] << " (" << resp.keys_deleted() << " stored records)\n";
  }
  return absl::OkStatus();
}

absl::Status RunsClearTokenizer(const Invocation& inv, v1::EvalService::StubInterface* stub,
                                std::ostream& out, std::ostream& /*err*/) {
  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::ClearTokenizerPinRequest req;
  req.set_name(inv.args[0]);
  v1::Run run;
  RETURN_IF_ERROR(ToAbsl(stub->ClearTokenizerPin(&ctx, req, &run)));
  if (inv.json) {
    PrintJson(RunToJson(run), out);
  } else {
    out << "run " << inv.args[0]
        << " is pinned to no tokenizer now; the next accepted result pins one again\n";
  }
  return absl::OkStatus();
}

absl::Status CheckJobsRequeue(const Invocation& inv, const ParsedArgs& /*parsed*/) {
  const bool by_run = inv.HasFlag("run") || inv.HasFlag("state");
  if (by_run == !inv.args.empty()) {
    return absl::InvalidArgumentError("give job ids, or --run NAME --state failed (not both)");
  }
  if (by_run && (!inv.HasFlag("run") || absl::AsciiStrToLower(inv.Flag("state")) != "failed")) {
    return absl::InvalidArgumentError(
        "requeue by run needs --run NAME and --state failed (only failed jobs can be "
        "requeued)");
  }
  for (const std::string& id : inv.args) {
    uint64_t value = 0;
    if (!absl::SimpleAtoi(id, &value) || value == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad job id '", id, "': give the numbers `steadyeval jobs` shows in its ID column"));
    }
  }
  return absl::OkStatus();
}

absl::Status JobsRequeue(const Invocation& inv, v1::EvalService::StubInterface* stub,
                         std::ostream& out, std::ostream& /*err*/) {
  v1::RequeueJobsRequest req;
  for (const std::string& id : inv.args) {
    uint64_t value = 0;
    if (absl::SimpleAtoi(id, &value)) req.add_job_ids(value);
  }
  if (inv.HasFlag("run")) {
    req.set_run(inv.Flag("run"));
    req.set_state(v1::JOB_FAILED);
  }
  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::RequeueJobsResponse resp;
  RETURN_IF_ERROR(ToAbsl(stub->RequeueJobs(&ctx, req, &resp)));
  std::vector<uint64_t> ids(resp.requeued().begin(), resp.requeued().end());
  if (inv.json) {
    PrintJson({{"requeued", ids}}, out);
  } else if (ids.empty()) {
    out << "no failed jobs to requeue\n";
  } else {
    out << "requeued " << ids.size() << (ids.size() == 1 ? " job: " : " jobs: ")
        << absl::StrJoin(ids, ", ") << "\n";
  }
  return absl::OkStatus();
}

absl::Status ListJobs(const Invocation& inv, v1::EvalService::StubInterface* stub,
                      std::ostream& out, std::ostream& /*err*/) {
  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::ListJobsRequest req;
  req.set_run(inv.Flag("run"));
  std::vector<v1::Job> items;
  RETURN_IF_ERROR(ReadAll(stub->ListJobs(&ctx, req).get(), items));
  if (inv.json) {
    PrintJson(JobsToJson(items), out);
  } else if (items.empty()) {
    out << "no jobs\n";
  } else {
    out << JobsTable(items);
  }
  return absl::OkStatus();
}

absl::Status ListWorkers(const Invocation& inv, v1::EvalService::StubInterface* stub,
                         std::ostream& out, std::ostream& /*err*/) {
  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::ListWorkersResponse resp;
  RETURN_IF_ERROR(ToAbsl(stub->ListWorkers(&ctx, v1::ListWorkersRequest(), &resp)));
  std::vector<v1::WorkerInfo> workers(resp.workers().begin(), resp.workers().end());
  if (inv.json) {
    PrintJson(WorkersToJson(workers), out);
  } else if (workers.empty()) {
    out << "no workers registered\n";
  } else {
    out << WorkersTable(workers);
  }
  return absl::OkStatus();
}

absl::Status GetScores(const Invocation& inv, v1::EvalService::StubInterface* stub,
                       std::ostream& out, std::ostream& /*err*/) {
  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::GetScoresRequest req;
  req.set_run(inv.args[0]);
  req.set_task(inv.Flag("task"));
  SetVariantFilter(req, inv.Flag("variant"));
  std::vector<v1::Score> items;
  RETURN_IF_ERROR(ReadAll(stub->GetScores(&ctx, req).get(), items));
  if (inv.json) {
    PrintJson(ScoresToJson(inv.args[0], items), out);
  } else if (items.empty()) {
    out << "no scores yet for run " << inv.args[0] << "\n";
  } else {
    out << ScoresTables(items);
  }
  return absl::OkStatus();
}

absl::Status CheckStabilityRange(const Invocation& inv, const ParsedArgs& /*parsed*/) {
  v1::GetStabilityRequest unused;
  return SetStabilityRange(inv, unused);
}

absl::Status Stability(const Invocation& inv, v1::EvalService::StubInterface* stub,
                       std::ostream& out, std::ostream& /*err*/) {
  v1::GetStabilityRequest req;
  req.set_run(inv.args[0]);
  req.set_task(inv.Flag("task"));
  RETURN_IF_ERROR(SetStabilityRange(inv, req));
  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::GetStabilityResponse resp;
  RETURN_IF_ERROR(ToAbsl(stub->GetStability(&ctx, req, &resp)));
  if (resp.run().empty()) resp.set_run(inv.args[0]);
  if (inv.json) {
    PrintJson(StabilityToJson(resp), out);
  } else {
    out << StabilityText(resp);
  }
  return absl::OkStatus();
}

absl::Status CheckExampleSelection(const Invocation& inv, const ParsedArgs& /*parsed*/) {
  return SetExampleSelection(inv, nullptr);
}

absl::Status Examples(const Invocation& inv, v1::EvalService::StubInterface* stub,
                      std::ostream& out, std::ostream& /*err*/) {
  v1::GetExamplesRequest req;
  req.set_run(inv.args[0]);
  req.set_task(inv.Flag("task"));
  RETURN_IF_ERROR(SetExampleSelection(inv, &req));
  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::GetExamplesResponse resp;
  RETURN_IF_ERROR(ToAbsl(stub->GetExamples(&ctx, req, &resp)));
  if (inv.json) {
    PrintJson(ExamplesToJson(inv.args[0], req.task(), resp), out);
  } else if (resp.examples_size() == 0) {
    out << "no examples of task " << req.task() << " in run " << inv.args[0] << "\n";
  } else {
    out << ExamplesText(resp);
  }
  return absl::OkStatus();
}

absl::Status Rescore(const Invocation& inv, v1::EvalService::StubInterface* stub,
                     std::ostream& out, std::ostream& /*err*/) {
  v1::RescoreRequest req;
  req.set_run(inv.args[0]);
  req.set_task(inv.Flag("task"));
  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::RescoreResponse resp;
  RETURN_IF_ERROR(ToAbsl(stub->Rescore(&ctx, req, &resp)));
  if (inv.json) {
    PrintJson({{"values", resp.values()},
               {"predictions", resp.predictions()},
               {"scores_changed", resp.scores_changed()}},
              out);
    return absl::OkStatus();
  }
  out << "rescored " << resp.values() << " values (" << resp.predictions() << " predictions) of run "
      << req.run() << (req.task().empty() ? "" : absl::StrCat(", task ", req.task())) << "; "
      << resp.scores_changed() << " task scores changed; ensembles and stability recomputed\n";
  return absl::OkStatus();
}

absl::Status BackupCommand(const Invocation& inv, v1::EvalService::StubInterface* stub,
                           std::ostream& out, std::ostream& /*err*/) {
  v1::BackupRequest req;
  req.set_to_dir(MakeAbsolute(inv.Flag("to")));
  grpc::ClientContext ctx;
  SetDeadline(inv, ctx);
  v1::BackupResponse resp;
  RETURN_IF_ERROR(ToAbsl(stub->Backup(&ctx, req, &resp)));
  if (inv.json) {
    PrintJson({{"backup_id", resp.backup_id()}, {"bytes", resp.bytes()}, {"path", resp.path()}},
              out);
    return absl::OkStatus();
  }
  out << "backup " << resp.backup_id() << " written to " << resp.path() << " (" << resp.bytes()
      << " bytes added); restore it with: steadyeval-server restore --from " << resp.path()
      << " --data_dir NEW_DIR\n";
  return absl::OkStatus();
}

absl::Status CheckExport(const Invocation& inv, const ParsedArgs& /*parsed*/) {
  const std::string format = absl::AsciiStrToLower(inv.Flag("format"));
  if (format != "jsonl" && format != "csv") {
    return absl::InvalidArgumentError(
        absl::StrCat("bad --format '", inv.Flag("format"), "': use jsonl or csv"));
  }
  return absl::OkStatus();
}

// A buffered CSV row: the fixed columns already rendered, the metrics by column index.
struct CsvRow {
  std::string fixed;
  std::vector<std::pair<size_t, double>> metrics;
};

absl::Status Export(const Invocation& inv, v1::EvalService::StubInterface* stub,
                    std::ostream& out, std::ostream& /*err*/) {
  v1::ExportPredictionsRequest req;
  req.set_run(inv.args[0]);
  req.set_task(inv.Flag("task"));
  const std::string variant = inv.Flag("variant");
  SetVariantFilter(req, variant == "all" ? "" : variant);
  const bool csv = absl::AsciiStrToLower(inv.Flag("format")) == "csv";

  // No deadline: an export streams for as long as there are predictions.
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderInterface<v1::ExportedPrediction>> reader =
      stub->ExportPredictions(&ctx, req);
  if (reader == nullptr) return absl::InternalError("stream could not be opened");
  v1::ExportedPrediction p;
  if (!csv) {
    while (reader->Read(&p)) out << ExportJsonLine(p);
    out.flush();
    return ToAbsl(reader->Finish());
  }

  // CSV needs every metric name for its header, so rows wait for the end of the stream.
  std::vector<std::string> metric_names;  // column order: first seen
  std::map<std::string, size_t> metric_column;
  std::vector<CsvRow> rows;
  while (reader->Read(&p)) {
    CsvRow row;
    row.fixed = absl::StrCat(p.step(), ",", CsvField(p.task()), ",", CsvField(VariantNameOf(p)), ",",
                             p.example(), ",", CsvField(p.output()), ",",
                             CsvField(p.normalized_output()), ",", FormatNumber(p.score()));
    std::map<std::string, double> sorted(p.metrics().begin(), p.metrics().end());
    for (const auto& [metric, value] : sorted) {
      auto [it, inserted] = metric_column.emplace(metric, metric_names.size());
      if (inserted) metric_names.push_back(metric);
      row.metrics.emplace_back(it->second, value);
    }
    rows.push_back(std::move(row));
  }
  RETURN_IF_ERROR(ToAbsl(reader->Finish()));
  out << "step,task,variant,example,output,normalized_output,score";
  for (const std::string& metric : metric_names) out << "," << CsvField(metric);
  out << "\r\n";
  std::vector<std::string> cells(metric_names.size());
  for (const CsvRow& row : rows) {
    std::fill(cells.begin(), cells.end(), std::string());
    for (const auto& [column, value] : row.metrics) cells[column] = FormatNumber(value);
    out << row.fixed;
    for (const std::string& cell : cells) out << "," << cell;
    out << "\r\n";
  }
  out.flush();
  return absl::OkStatus();
}

// The usage checks of the commands whose code is in plot.cc and watch.cc.

absl::Status CheckPlot(const Invocation& inv, const ParsedArgs& parsed) {
  if (!IsPlotPath(inv.Flag("out"))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad --out '", inv.Flag("out"), "': the file name must end in .svg or .png"));
  }
  return CheckStabilityRange(inv, parsed);
}

absl::Status CheckWatch(const Invocation& inv, const ParsedArgs& /*parsed*/) {
  return ValidateWatchFlags(inv);
}

const std::vector<CommandSpec>& Commands() {
  static const auto* commands = new std::vector<CommandSpec>{
      {{"runs", "add"},
       {"NAME"},
       {"source", "tasks", "few_shots", "few_shots_from", "max_samples", "metric",
        "prompt_language", "bos", "max_new_tokens_delta", "pattern", "marker", "settle_seconds",
        "tokenizer", "average", "ensemble", "s3_endpoint", "s3_region", "convert"},
       "start watching a checkpoint folder and evaluating each new checkpoint on the tasks; "
       "the task files are read here and sent to the server",
       {"steadyeval runs add demo --source ./demo-data/ckpt --tasks "
        "examples/tasks/arith_mc.jsonl,examples/tasks/qa_gen.json",
        "steadyeval runs add run42 --source /mnt/ckpt/run42 --tasks "
        "jnli.json:NLI,jsquad.json:RC,jcqa.jsonl:MC --average 2,5,10,20 --ensemble 3,5,10",
        "steadyeval runs add run43 --source /mnt/ckpt/run43 --tasks jcqa.jsonl --marker "
        ".complete --settle_seconds 30",
        "steadyeval runs add run44 --source /mnt/ckpt/run44 --tasks "
        "eval/test/jsquad.json:RC,eval/test/jnli.json:NLI --few_shots_from eval/train "
        "--max_samples 100 --metric jcqa=acc_norm",
        "steadyeval runs add run45 --source s3://ckpt-bucket/run45 --s3_endpoint "
        "http://minio.internal:9000 --tasks jcqa.jsonl",
        "steadyeval runs add run46 --source /mnt/ckpt/run46 --convert dcp --tasks jcqa.jsonl"},
       {"source", "tasks"},
       CheckRunsAdd,
       RunsAdd},
      {{"runs", "update"},
       {"NAME"},
       {"average", "ensemble"},
       "change a run's averaging and ensemble windows; the server schedules the avg@n jobs "
       "and ens@n values now missing (flags not given are left as they are)",
       {"steadyeval runs update run42 --average 2,5,10,20",
        "steadyeval runs update run42 --ensemble 3 --average none"},
       {},
       CheckRunsUpdate,
       RunsUpdate},
      {{"runs", "list"},
       {},
       {},
       "list the watched runs",
       {"steadyeval runs list --json"},
       {},
       nullptr,
       RunsList},
      {{"runs", "pause"},
       {"NAME"},
       {},
       "stop admitting a run's checkpoints and leasing its jobs (jobs already leased finish); "
       "kept across server restarts until `runs resume`",
       {"steadyeval runs pause run42"},
       {},
       nullptr,
       RunsPause},
      {{"runs", "resume"},
       {"NAME"},
       {},
       "admit a paused run's checkpoints and lease its jobs again",
       {"steadyeval runs resume run42"},
       {},
       nullptr,
       RunsResume},
      {{"runs", "delete"},
       {"NAME"},
       {"yes"},
       "delete a run and everything stored for it (checkpoint records, jobs, predictions, "
       "scores, stability figures, metric series); the checkpoint folder itself is not "
       "touched; needs --yes",
       {"steadyeval runs delete run42 --yes"},
       {},
       CheckRunsDelete,
       RunsDelete},
      {{"runs", "clear-tokenizer"},
       {"NAME"},
       {},
       "forget the tokenizer a run is pinned to (after a wrong pin); the next accepted result "
       "pins one again",
       {"steadyeval runs clear-tokenizer run42"},
       {},
       nullptr,
       RunsClearTokenizer},
      {{"runs", "show"},
       {"NAME"},
       {"yaml"},
       "show a run's configuration, checkpoint counts and jobs by state; --yaml prints it as "
       "an entry of a config file's runs: (steadyeval-server --config)",
       {"steadyeval runs show demo", "steadyeval runs show demo --yaml"},
       {},
       nullptr,
       RunsShow},
      {{"checkpoints"},
       {"NAME"},
       {},
       "list a run's admitted checkpoints and their evaluation state, then the folders not "
       "admitted yet with the reason (incomplete, or settling) and how long it has held",
       {"steadyeval checkpoints demo",
        "steadyeval checkpoints demo --json | jq '.checkpoints[] | select(.state==\"failed\")'"},
       {},
       nullptr,
       ListCheckpoints},
      {{"jobs"},
       {},
       {"run"},
       "list evaluation jobs (all runs, or one with --run)",
       {"steadyeval jobs --run demo"},
       {},
       nullptr,
       ListJobs},
      {{"jobs", "requeue"},
       {"ID..."},
       {"run", "state"},
       "put failed jobs back in the queue with a fresh attempt budget (after a failure that "
       "was not the checkpoint's fault): the given job ids, or every failed job of a run",
       {"steadyeval jobs requeue 12 15", "steadyeval jobs requeue --run run42 --state failed"},
       {},
       CheckJobsRequeue,
       JobsRequeue},
      {{"workers"}, {}, {}, "list the workers the coordinator knows", {"steadyeval workers"},
       {},
       nullptr,
       ListWorkers},
      {{"scores"},
       {"NAME"},
       {"task", "variant"},
       "task scores per step: one step x task table per variant",
       {"steadyeval scores demo", "steadyeval scores demo --variant avg@2 --task arith_mc",
        "steadyeval scores demo --json"},
       {},
       nullptr,
       GetScores},
      {{"stability"},
       {"NAME"},
       {"task", "last", "steps"},
       "the stability table: per task, category and AVG and per variant, the mean score, "
       "MTV, example-level MTV and instability score over a step range, with the median "
       "parameter drift",
       {"steadyeval stability run42", "steadyeval stability run42 --last 50%",
        "steadyeval stability run42 --last 10 --task jnli",
        "steadyeval stability run42 --steps 1000:20000 --json"},
       {},
       CheckStabilityRange,
       Stability},
      {{"examples"},
       {"NAME"},
       {"task", "example", "flippiest"},
       "one example's outputs and scores across steps and variants, or the examples whose "
       "output flips most",
       {"steadyeval examples run42 --task jnli --example 17",
        "steadyeval examples run42 --task jnli --flippiest 5 --json"},
       {"task"},
       CheckExampleSelection,
       Examples},
      {{"rescore"},
       {"NAME"},
       {"task"},
       "re-score a run's stored outputs with this server's metric code (after a metric "
       "fix) and recompute its ensembles and stability figures; no worker is involved",
       {"steadyeval rescore run42", "steadyeval rescore run42 --task jsquad"},
       {},
       nullptr,
       Rescore},
      {{"export"},
       {"NAME"},
       {"task", "variant", "format"},
       "stream every stored per-example prediction to stdout as JSONL or CSV (data only; "
       "CSV keeps the rows until the stream ends to know every metric column, so prefer "
       "JSONL for very large exports)",
       {"steadyeval export run42 --format jsonl > run42.jsonl",
        "steadyeval export run42 --task jsquad --variant avg@5 --format csv > jsquad.csv"},
       {"format"},
       CheckExport,
       Export},
      {{"plot"},
       {"NAME"},
       {"out", "task", "variants", "last", "steps"},
       "draw score over step per variant with the stability range shaded, and a per-example "
       "correctness strip, as SVG or PNG; one line per variant (raw thin, averaged and "
       "ensembled bold), the stability range shaded (by default the last 20% of raw points, "
       "as in the stability table, or --last / --steps), and under each chart the raw "
       "variant's per-example correctness (examples x steps: green correct, red incorrect, "
       "amber partial, grey missing; at most the 60 examples that flip most); one chart per "
       "task, stacked, unless --task picks one",
       {"steadyeval plot demo --out demo.svg",
        "steadyeval plot run42 --task jsquad --out jsquad.png",
        "steadyeval plot run42 --task jnli --variants raw,avg@5,ens@5 --out jnli.png",
        "steadyeval plot run42 --last 50% --out run42-half.svg"},
       {"out"},
       CheckPlot,
       PlotCommand},
      {{"backup"},
       {},
       {"to"},
       "back up the live server's database into a folder on the server's machine (RocksDB "
       "backups: each one adds only what changed; restore the latest offline with "
       "`steadyeval-server restore --from DIR --data_dir NEW_DIR`)",
       {"steadyeval backup --to /backups/steadyeval",
        "STEADYEVAL_SERVER=coord:50051 steadyeval backup --to /mnt/backup/steadyeval --json"},
       {"to"},
       nullptr,
       BackupCommand},
      {{"watch"},
       {"NAME"},
       {"interval_s", "once", "line"},
       "a live view of a run's progress, eval lag and latest scores with sparklines; it "
       "shows checkpoints admitted and evaluated, the eval lag (newest admitted step - newest "
       "fully evaluated step), jobs and workers, and per task and variant the "
       "latest score, MTV, IS and a sparkline of recent scores (scale 0..1 for scores in "
       "[0, 1]); on a terminal the frame redraws in place until Ctrl-C, otherwise a frame is "
       "printed only when it changes; a lost server is shown and retried; with --json, one "
       "JSON object per line each time the data changes",
       {"steadyeval watch demo", "steadyeval watch demo --interval_s 10",
        "steadyeval watch demo --once", "steadyeval watch demo --line >> demo-progress.log",
        "steadyeval watch demo --line --once",
        "steadyeval watch demo --once --json | jq .eval_lag_steps"},
       {},
       CheckWatch,
       ExecuteWatch},
  };
  return *commands;
}

}  // namespace

absl::Status ToAbsl(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

void SetDeadline(double timeout_s, grpc::ClientContext& ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
}

absl::StatusOr<TaskSpec> ParseTaskSpec(const std::string& spec,
                                       const std::function<bool(const std::string&)>& exists) {
  const size_t colon = spec.rfind(':');
  if (colon == std::string::npos) return TaskSpec{spec, ""};
  const std::string path = spec.substr(0, colon);
  const std::string suffix = absl::AsciiStrToUpper(spec.substr(colon + 1));
  const bool known = std::any_of(std::begin(kTaskCategories), std::end(kTaskCategories),
                                 [&](const char* c) { return suffix == c; });
  if (known) {
    if (exists(spec) && !exists(path)) return TaskSpec{spec, ""};
    if (path.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tasks entry '", spec, "' has a category but no file"));
    }
    return TaskSpec{path, suffix};
  }
  const bool word = !suffix.empty() && std::all_of(suffix.begin(), suffix.end(), [](char c) {
    return c >= 'A' && c <= 'Z';
  });
  if (word && !exists(spec) &&
      (exists(path) || absl::EndsWith(path, ".json") || absl::EndsWith(path, ".jsonl"))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tasks ", spec, ": unknown category '", spec.substr(colon + 1),
                     "' (use one of ", absl::StrJoin(kTaskCategories, ", "), ")"));
  }
  return TaskSpec{spec, ""};
}

absl::StatusOr<std::vector<uint32_t>> ParseWindows(const std::string& flag,
                                                   const std::string& value) {
  constexpr uint32_t kMaxWindow = kMaxWindowSize;  // the server's bound
  std::vector<uint32_t> windows;
  if (absl::AsciiStrToLower(absl::StripAsciiWhitespace(value)) == "none") return windows;
  for (absl::string_view piece : absl::StrSplit(value, ',')) {
    piece = absl::StripAsciiWhitespace(piece);
    int64_t n = 0;
    if (piece.empty() || !absl::SimpleAtoi(piece, &n)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad --", flag, " '", value, "': give window sizes like 2,5,10 (or none)"));
    }
    if (n < 2 || n > kMaxWindow) {
      return absl::InvalidArgumentError(absl::StrCat("bad --", flag, " '", value, "': window size ",
                                                     n, " must be in 2..", kMaxWindow));
    }
    windows.push_back(static_cast<uint32_t>(n));
  }
  std::sort(windows.begin(), windows.end());
  windows.erase(std::unique(windows.begin(), windows.end()), windows.end());
  if (windows.size() > kMaxWindowsPerKind) {
    return absl::InvalidArgumentError(absl::StrCat("bad --", flag, ": at most ",
                                                   kMaxWindowsPerKind, " window sizes"));
  }
  return windows;
}

absl::Status SetStabilityRange(const Invocation& inv, v1::GetStabilityRequest& request) {
  if (inv.HasFlag("last") && inv.HasFlag("steps")) {
    return absl::InvalidArgumentError("--last and --steps are mutually exclusive");
  }
  if (inv.HasFlag("last")) {
    const std::string value(absl::StripAsciiWhitespace(inv.Flag("last")));
    absl::string_view number = value;
    if (absl::ConsumeSuffix(&number, "%")) {
      double percent = 0;
      if (!absl::SimpleAtod(number, &percent) || !(percent > 0) || percent > 100) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad --last '", value, "': a percentage must be in (0, 100], e.g. 20%"));
      }
      request.set_last_fraction(percent / 100);
      return absl::OkStatus();
    }
    int64_t points = 0;
    if (!absl::SimpleAtoi(number, &points)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad --last '", value, "': give K points (e.g. --last 10) or a percentage (--last 20%)"));
    }
    if (points < 2 || points > std::numeric_limits<uint32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad --last '", value, "': K must be at least 2 (MTV compares adjacent points)"));
    }
    request.set_last_points(static_cast<uint32_t>(points));
    return absl::OkStatus();
  }
  if (inv.HasFlag("steps")) {
    const std::string value = inv.Flag("steps");
    std::vector<std::string> parts = absl::StrSplit(value, ':');
    uint64_t from = 0, to = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &from) ||
        !absl::SimpleAtoi(parts[1], &to)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad --steps '", value, "': give A:B, e.g. --steps 1000:5000"));
    }
    if (from > to) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad --steps '", value, "': A must not exceed B"));
    }
    request.mutable_steps()->set_from_step(from);
    request.mutable_steps()->set_to_step(to);
  }
  return absl::OkStatus();
}

std::string Invocation::Flag(const std::string& name, const std::string& fallback) const {
  auto it = flags.find(name);
  return it == flags.end() || it->second.empty() ? fallback : it->second.back();
}

std::string Invocation::CommandName() const { return absl::StrJoin(command, " "); }

bool IsValidRunName(const std::string& name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
  });
}

absl::StatusOr<Invocation> ParseInvocation(const std::vector<std::string>& args,
                                           const std::string& env_server) {
  std::vector<FlagSpec> all = GlobalFlags();
  all.insert(all.end(), CommandFlags().begin(), CommandFlags().end());
  auto parsed_or = ParseArgs(args, all);

  // Name the command in usage errors even when flag parsing failed.
  std::vector<std::string> words;
  for (const std::string& a : args) {
    if (a.rfind("--", 0) != 0) words.push_back(a);
  }
  size_t consumed = 0;
  const CommandSpec* guess = MatchCommand(words, consumed);
  if (!parsed_or.ok()) {
    std::string reason(parsed_or.status().message());
    const std::string see = " (see --help)";
    if (absl::EndsWith(reason, see)) reason.resize(reason.size() - see.size());
    return UsageError(reason, guess);
  }
  const ParsedArgs& parsed = *parsed_or;

  Invocation inv;
  inv.help = parsed.Has("help");
  inv.json = parsed.Has("json");
  inv.server = parsed.Get("server", env_server.empty() ? kDefaultServer : env_server);
  if (inv.server.empty()) return UsageError("--server needs HOST:PORT", nullptr);
  const char* env_token_file = std::getenv("STEADYEVAL_TOKEN_FILE");
  inv.connection.server = inv.server;
  inv.connection.token_file =
      parsed.Get("token_file", env_token_file == nullptr ? "" : env_token_file);
  inv.connection.ca_cert = parsed.Get("ca_cert");
  inv.connection.client_cert = parsed.Get("client_cert");
  inv.connection.client_key = parsed.Get("client_key");

  std::vector<std::string> positionals = parsed.positionals();
  if (!positionals.empty() && positionals[0] == "help") {  // `steadyeval help runs add`
    inv.help = true;
    positionals.erase(positionals.begin());
  }
  const CommandSpec* command = MatchCommand(positionals, consumed);
  if (command == nullptr) {
    if (inv.help) {
      if (!positionals.empty()) inv.command = {positionals[0]};
      return inv;
    }
    if (positionals.empty()) return UsageError("no command given", nullptr);
    // The wording (and its order of subcommands) is pinned by tests and users; CliHelpTest
    // checks that it names every `runs` command of the table.
    if (positionals[0] == "runs") {
      return UsageError(positionals.size() == 1
                            ? "'runs' needs a subcommand: add, list, show, update, pause, "
                              "resume, delete or clear-tokenizer"
                            : absl::StrCat("unknown command 'runs ", positionals[1],
                                           "' (runs subcommands: add, list, show, update, pause, resume, delete, "
                                           "clear-tokenizer)"),
                        nullptr);
    }
    return UsageError(absl::StrCat("unknown command '", positionals[0], "'"), nullptr);
  }
  inv.command = command->words;
  if (inv.help) return inv;

  auto timeout = parsed.GetDouble("timeout_s", kDefaultTimeoutSeconds);
  if (!timeout.ok()) return UsageError(std::string(timeout.status().message()), command);
  if (!(*timeout > 0)) return UsageError("--timeout_s must be positive", command);
  inv.timeout_s = *timeout;

  for (const FlagSpec& f : CommandFlags()) {
    if (!parsed.Has(f.name)) continue;
    if (std::find(command->flags.begin(), command->flags.end(), f.name) == command->flags.end()) {
      return UsageError(absl::StrCat("'", absl::StrJoin(command->words, " "),
                                     "' does not take --", f.name),
                        command);
    }
    inv.flags[f.name] = parsed.GetAll(f.name);
  }

  inv.args.assign(positionals.begin() + static_cast<std::ptrdiff_t>(consumed), positionals.end());
  // A last positional named "X..." takes any number of arguments, none included.
  const bool variadic = !command->positionals.empty() &&
                        absl::EndsWith(command->positionals.back(), "...");
  const size_t required = command->positionals.size() - (variadic ? 1 : 0);
  if (inv.args.size() < required) {
    return UsageError(absl::StrCat("missing ", command->positionals[inv.args.size()]), command);
  }
  if (!variadic && inv.args.size() > command->positionals.size()) {
    return UsageError(absl::StrCat("unexpected argument '", inv.args[command->positionals.size()],
                                   "'"),
                      command);
  }
  for (size_t i = 0; i < required; ++i) {
    if (command->positionals[i] == "NAME" && !IsValidRunName(inv.args[i])) {
      return UsageError(absl::StrCat("bad run name '", inv.args[i],
                                     "': use letters, digits, '.', '_' and '-'"),
                        command);
    }
  }
  if (inv.HasFlag("run") && !IsValidRunName(inv.Flag("run"))) {
    return UsageError(absl::StrCat("bad run name '", inv.Flag("run"),
                                   "': use letters, digits, '.', '_' and '-'"),
                      command);
  }
  for (const std::string& f : command->required_flags) {
    if (!inv.HasFlag(f) || inv.Flag(f).empty()) {
      return UsageError(absl::StrCat("missing --", f, " ", FindFlag(f)->value_name), command);
    }
  }
  for (const char* f : {"average", "ensemble"}) {
    if (!inv.HasFlag(f)) continue;
    auto windows = ParseWindows(f, inv.Flag(f));
    if (!windows.ok()) return UsageError(std::string(windows.status().message()), command);
  }
  if (inv.HasFlag("variant") && !IsValidVariant(inv.Flag("variant"))) {
    return UsageError(absl::StrCat("bad --variant '", inv.Flag("variant"),
                                   "': use raw, avg@n, ens@n, ens-soft@n (n >= 2) or all"),
                      command);
  }
  if (command->check != nullptr) {
    absl::Status checked = command->check(inv, parsed);
    if (!checked.ok()) return UsageError(std::string(checked.message()), command);
  }
  return inv;
}

std::string UsageText(const std::vector<std::string>& command) {
  size_t consumed = 0;
  const CommandSpec* spec = MatchCommand(command, consumed);
  if (spec != nullptr && consumed == command.size()) {
    std::string out = absl::StrCat("Usage: ", UsageLine(*spec), "\n\n", spec->summary, ".\n");
    if (!spec->flags.empty()) {
      std::vector<FlagSpec> flags;
      for (const std::string& f : spec->flags) flags.push_back(*FindFlag(f));
      absl::StrAppend(&out, "\nFlags:\n", FlagsHelp(flags));
    }
    absl::StrAppend(&out, "\nGlobal flags:\n", FlagsHelp(GlobalFlags()), "\nExamples:\n");
    for (const std::string& e : spec->examples) absl::StrAppend(&out, "  ", e, "\n");
    absl::StrAppend(&out, "\nFlags may appear before or after the command and its arguments.\n");
    return out;
  }
  std::string out =
      "steadyeval: query a steadyeval-server (the checkpoint evaluation coordinator)\n\n"
      "Usage: steadyeval [--server HOST:PORT] [--json] [--timeout_s N] COMMAND [ARGS] "
      "[FLAGS]\n\nCommands:\n";
  std::vector<std::vector<std::string>> rows;
  size_t width = 0;
  for (const CommandSpec& c : Commands()) {
    if (!command.empty() && c.words[0] != command[0]) continue;
    width = std::max(width, absl::StrJoin(c.words, " ").size());
  }
  for (const CommandSpec& c : Commands()) {
    if (!command.empty() && c.words[0] != command[0]) continue;
    std::string name = absl::StrJoin(c.words, " ");
    name.resize(width, ' ');
    std::string summary = c.summary.substr(0, c.summary.find(';'));
    absl::StrAppend(&out, "  ", name, "  ", summary, "\n");
  }
  absl::StrAppend(&out, "\nGlobal flags:\n", FlagsHelp(GlobalFlags()),
                  "\nFlags may appear before or after the command and its arguments.\n"
                  "With --json, stdout holds exactly one JSON object; messages go to stderr.\n"
                  "Errors print one line 'steadyeval: <reason>' on stderr; exit code 1, or 2 "
                  "for bad usage.\n\nExamples:\n"
                  "  steadyeval runs add demo --source ./demo-data/ckpt --tasks "
                  "examples/tasks/arith_mc.jsonl,examples/tasks/qa_gen.json\n"
                  "  steadyeval checkpoints demo\n"
                  "  steadyeval scores demo --variant raw\n"
                  "  steadyeval stability demo --last 20%\n"
                  "  steadyeval export demo --format jsonl > demo.jsonl\n"
                  "  steadyeval plot demo --out demo.png\n"
                  "  STEADYEVAL_SERVER=coord:50051 steadyeval jobs --json\n\n"
                  "Run 'steadyeval COMMAND --help' for a command's flags and examples.\n");
  return out;
}

absl::Status Execute(const Invocation& inv, v1::EvalService::StubInterface* stub,
                     std::ostream& out, std::ostream& err) {
  size_t consumed = 0;
  const CommandSpec* command = MatchCommand(inv.command, consumed);
  if (command == nullptr || consumed != inv.command.size()) {
    return absl::InvalidArgumentError(absl::StrCat("unknown command '", inv.CommandName(), "'"));
  }
  return command->run(inv, stub, out, err);
}

std::vector<std::string> CommandNames() {
  std::vector<std::string> names;
  for (const CommandSpec& c : Commands()) names.push_back(absl::StrJoin(c.words, " "));
  return names;
}

std::string DescribeError(const absl::Status& status, const std::string& server,
                          double timeout_s) {
  const std::string message = OneLine(status.message());
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      // The server answered but its storage refused the write (store.h).
      if (absl::StartsWith(message, "storage: ")) return message;
      return absl::StrCat("cannot reach steadyeval-server at ", server,
                          ": is steadyeval-server running?",
                          message.empty() ? "" : absl::StrCat(" (", message, ")"));
    case absl::StatusCode::kDeadlineExceeded:
      return absl::StrCat("steadyeval-server at ", server, " did not answer within ", timeout_s,
                          "s (raise --timeout_s, or check the server's load)");
    case absl::StatusCode::kUnimplemented:
      return absl::StrCat("steadyeval-server at ", server,
                          " does not support this request (older server?)",
                          message.empty() ? "" : absl::StrCat(": ", message));
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return absl::StrCat("steadyeval-server at ", server, " refused the request: ",
                          message.empty() ? absl::StatusCodeToString(status.code()) : message);
    default:
      return message.empty() ? absl::StatusCodeToString(status.code()) : message;
  }
}

int RunCli(const std::vector<std::string>& args, const std::string& env_server,
           const StubFactory& make_stub, std::ostream& out, std::ostream& err) {
  return RunCli(
      args, env_server,
      ConnectionStubFactory(
          [&make_stub](const Connection& connection)
              -> absl::StatusOr<std::unique_ptr<v1::EvalService::StubInterface>> {
            return make_stub(connection.server);
          }),
      out, err);
}

int RunCli(const std::vector<std::string>& args, const std::string& env_server,
           const ConnectionStubFactory& make_stub, std::ostream& out, std::ostream& err) {
  auto inv = ParseInvocation(args, env_server);
  if (!inv.ok()) {
    err << "steadyeval: " << OneLine(inv.status().message()) << "\n";
    return kExitUsage;
  }
  if (inv->help) {
    out << UsageText(inv->command);
    return kExitOk;
  }
  absl::StatusOr<std::unique_ptr<v1::EvalService::StubInterface>> stub =
      make_stub(inv->connection);
  if (!stub.ok()) {
    err << "steadyeval: " << OneLine(stub.status().message()) << "\n";
    return kExitFailure;
  }
  absl::Status status = Execute(*inv, stub->get(), out, err);
  if (!status.ok()) {
    err << "steadyeval: " << DescribeError(status, inv->server, inv->timeout_s) << "\n";
    return kExitFailure;
  }
  out.flush();
  return kExitOk;
}

}  // namespace steadyeval::client
