#include "worker/cache/converter.h"

#include <signal.h>

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/files.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"
#include "testing/wait.h"
#include "worker/cache/checkpoint_cache.h"

namespace steadyeval {
namespace {

namespace fs = std::filesystem;
using ::steadyeval::testing::ReadFileOrEmpty;
using ::steadyeval::testing::StatusIs;
using ::steadyeval::testing::WriteFile;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ConverterSpecTest, SplitsOnWhitespaceWithQuotesAndEscapes) {
  ASSERT_OK_AND_ASSIGN(ConverterSpec spec,
                       ParseConverterSpec("dcp=python3  /opt/to hf.py --in={src} '{dst}'"));
  EXPECT_EQ(spec.name, "dcp");
  EXPECT_THAT(spec.argv, ElementsAre("python3", "/opt/to", "hf.py", "--in={src}", "{dst}"));
  EXPECT_EQ(spec.command_line, "python3  /opt/to hf.py --in={src} '{dst}'");
  ASSERT_OK_AND_ASSIGN(spec, ParseConverterSpec(
                                 R"(m.v-2=/bin/conv "a b"'c d'e\ f "q\"\\" '' {src} {dst})"));
  EXPECT_THAT(spec.argv, ElementsAre("/bin/conv", "a bc de f", "q\"\\", "", "{src}", "{dst}"));
  EXPECT_THAT(ConverterArgv(spec, "/in", "/out"),
              ElementsAre("/bin/conv", "a bc de f", "q\"\\", "", "/in", "/out"));
}

TEST(ConverterSpecTest, RejectsSpecsWithoutBothPlaceholdersOrMalformed) {
  const auto invalid = [](const std::string& value, const std::string& says) {
    EXPECT_THAT(ParseConverterSpec(value),
                StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr("--converter"), HasSubstr(says))))
        << value;
  };
  invalid("dcp=python3 conv.py {src}", "{dst}");
  invalid("dcp=python3 conv.py {dst}", "{src}");
  invalid("dcp=python3 conv.py", "{src} (the checkpoint folder to read) and {dst}");
  invalid("python3 conv.py {src} {dst}", "NAME=");
  invalid("=python3 conv.py {src} {dst}", "NAME=");
  invalid("d cp=python3 {src} {dst}", "may only hold");
  invalid("dcp=   ", "no command");
  invalid("dcp={src} {dst}", "the command itself");
  invalid("dcp=conv 'unterminated {src} {dst}", "unterminated '");
  invalid("dcp=conv \"unterminated {src} {dst}", "unterminated \"");
  invalid("dcp=conv {src} {dst} \\", "backslash");
}

class ConverterRunTest : public ::testing::Test {
 protected:
  // A converter running `script` with /bin/sh, as `sh SCRIPT {src} {dst}`.
  ConverterSpec Script(const std::string& name, const std::string& script) {
    const std::string path = dir_.Write(name + ".sh", script);
    auto spec = ParseConverterSpec(name + "=/bin/sh " + path + " {src} {dst}");
    EXPECT_OK(spec);
    return *spec;
  }
  ConverterRunOptions Options(int64_t timeout_ms = 60'000) {
    ConverterRunOptions options;
    options.timeout_ms = timeout_ms;
    options.kill_grace_ms = 200;
    options.poll_ms = 10;
    return options;
  }

  ::steadyeval::testing::TempDir dir_;
};

constexpr char kGoodConverter[] =
    "echo \"converting $1\"\n"
    "echo \"$1\" >> \"$(dirname \"$0\")/runs.log\"\n"
    "cp \"$1/weights.bin\" \"$2/model.safetensors\"\n"
    "echo '{\"model_type\": \"llama\"}' > \"$2/config.json\"\n";

TEST_F(ConverterRunTest, RunsTheCommandOnSourceAndDestination) {
  const std::string src = dir_.Write("src/weights.bin", "WEIGHTS");
  const std::string dst = dir_ / "dst";
  fs::create_directories(dst);
  ASSERT_OK(RunConverter(Script("good", kGoodConverter), dir_ / "src", dst, Options()));
  EXPECT_EQ(ReadFileOrEmpty(dst + "/model.safetensors"), "WEIGHTS");
  EXPECT_THAT(ReadFileOrEmpty(dst + "/config.json"), HasSubstr("llama"));
}

TEST_F(ConverterRunTest, ANonzeroExitFailsWithTheCodeAndTheOutputsTail) {
  const ConverterSpec spec = Script("bad", std::string(6000, '#') + "\n" +
                                           "echo 'reading shards'\n"
                                           "echo 'KeyError: model.layers.0 not in .metadata' >&2\n"
                                           "exit 3\n");
  EXPECT_THAT(RunConverter(spec, dir_ / "src", dir_ / "dst", Options()),
              StatusIs(absl::StatusCode::kInternal,
                       AllOf(HasSubstr("converter 'bad'"), HasSubstr("exited with status 3"),
                             HasSubstr("reading shards"),
                             HasSubstr("KeyError: model.layers.0 not in .metadata"))));
  // A long output is cut to its tail.
  const ConverterSpec chatty = Script("chatty", "i=0; while [ $i -lt 500 ]; do echo \"line $i of noise\"; i=$((i+1)); done\n"
                                                "echo LAST >&2; exit 1\n");
  absl::Status s = RunConverter(chatty, dir_ / "src", dir_ / "dst", Options());
  EXPECT_THAT(s.message(), HasSubstr("LAST"));
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("line 0 of noise")));
  EXPECT_LT(s.message().size(), kOutputTailBytes + 1000);
}

TEST_F(ConverterRunTest, AMissingCommandCannotStart) {
  auto spec = ParseConverterSpec("nope=/no/such/converter {src} {dst}");
  ASSERT_OK(spec);
  EXPECT_THAT(RunConverter(*spec, dir_ / "src", dir_ / "dst", Options()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("'nope'"), HasSubstr("/no/such/converter"))));
}

// A converter that hangs (and ignores SIGTERM, and leaves a child behind) is killed, with
// its whole process group, once its timeout passes.
TEST_F(ConverterRunTest, AHangingConverterIsKilledAtItsTimeout) {
  const std::string pid_file = dir_ / "child.pid";
  const ConverterSpec spec = Script("hang", "trap '' TERM\n"
                                            "echo 'loading 1 of 99 shards'\n"
                                            "sleep 1000 &\n"
                                            "echo $! > " + pid_file + "\n"
                                            "wait\n");
  EXPECT_THAT(RunConverter(spec, dir_ / "src", dir_ / "dst", Options(/*timeout_ms=*/500)),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       AllOf(HasSubstr("converter 'hang'"), HasSubstr("timeout of 0.5 s"),
                             HasSubstr("--converter_timeout_s"), HasSubstr("loading 1 of 99 shards"))));
  const pid_t child = std::stoi(ReadFileOrEmpty(pid_file));
  EXPECT_TRUE(::steadyeval::testing::WaitFor([&] { return kill(child, 0) != 0; }, std::chrono::seconds(30)))
      << "the converter's child " << child << " still runs";
}

TEST_F(ConverterRunTest, ACheckThatFailsStopsTheConverter) {
  const ConverterSpec spec = Script("slow", "sleep 1000\n");
  ConverterRunOptions options = Options();
  options.check = [] { return absl::CancelledError("lease lost"); };
  EXPECT_THAT(RunConverter(spec, dir_ / "src", dir_ / "dst", options),
              StatusIs(absl::StatusCode::kCancelled, AllOf(HasSubstr("'slow'"), HasSubstr("lease lost"))));
}

// Through the cache: the output becomes an entry keyed by source and converter, reused
// without running the converter again; bad output is refused.
TEST_F(ConverterRunTest, TheCacheKeepsConvertedOutputAndReusesIt) {
  dir_.Write("src/weights.bin", std::string(300, 'w'));
  CheckpointCacheOptions options;
  options.dir = dir_ / "cache";
  options.limit_bytes = 1000;
  auto cache = CheckpointCache::Create(options);
  ASSERT_OK(cache);
  ASSERT_OK_AND_ASSIGN(const CheckpointIdentity id,
                       IdentifyCheckpoint(*FileSystem::Local(), "local", dir_ / "src"));
  const ConverterSpec good = Script("good", kGoodConverter);
  int sources = 0;
  auto source = [&]() -> absl::StatusOr<CheckpointCache::ConvertSource> {
    ++sources;
    return CheckpointCache::ConvertSource{dir_ / "src", std::nullopt};
  };
  ASSERT_OK_AND_ASSIGN(CacheEntry converted, (*cache)->Convert(id, good, Options(), source));
  EXPECT_EQ(ReadFileOrEmpty(converted.path() + "/model.safetensors"), std::string(300, 'w'));
  EXPECT_TRUE(fs::exists(converted.path() + "/config.json"));
  EXPECT_EQ(converted.key(), ConvertedKey(id, good));
  ASSERT_OK_AND_ASSIGN(CacheEntry again, (*cache)->Convert(id, good, Options(), source));
  EXPECT_EQ(again.path(), converted.path());
  EXPECT_EQ(sources, 1);
  EXPECT_EQ(ReadFileOrEmpty(dir_ / "runs.log"), dir_ / "src\n");  // ran once

  // Another command line under the same name is another entry.
  ConverterSpec changed = good;
  changed.command_line += " ";
  EXPECT_NE(ConvertedKey(id, changed), ConvertedKey(id, good));

  const ConverterSpec no_config = Script("noconfig", "cp \"$1/weights.bin\" \"$2/\"\n");
  EXPECT_THAT((*cache)->Convert(id, no_config, Options(), source),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("'noconfig'"), HasSubstr("config.json"))));
  const ConverterSpec linked = Script("linked", "echo '{}' > \"$2/config.json\"; ln -s \"$1/weights.bin\" \"$2/w\"\n");
  EXPECT_THAT((*cache)->Convert(id, linked, Options(), source),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("symbolic link")));
  // Output that outgrows the cache (1000 bytes, 300 held by the first entry, pinned).
  const ConverterSpec huge = Script("huge", "head -c 2000 /dev/zero > \"$2/model.safetensors\"; sleep 1000\n");
  EXPECT_THAT((*cache)->Convert(id, huge, Options(), source),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("'huge'"), HasSubstr("--cache_bytes"))));
  EXPECT_EQ((*cache)->bytes(), converted.bytes());  // the huge output and its reservation are gone
  EXPECT_EQ((*cache)->entry_count(), 1u);
  EXPECT_TRUE(fs::is_empty(dir_ / "cache/tmp"));
}

}  // namespace
}  // namespace steadyeval
