// The tokens file, token lookup and the role matrix (server/rpc/auth.h), and run-input checks
// (server/ingest/run_inputs.h): bounds, markers, source roots.
#include "server/rpc/auth.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "testing/status_matchers.h"
#include "common/text_escape.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/ingest/run_inputs.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::IsOk;
using ::steadyeval::testing::StatusIs;

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

// sha256("hello") as `printf hello | sha256sum` prints it.
constexpr char kHelloSha256[] = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

TEST(TokenTableTest, ParsesLinesCommentsAndBlankLines) {
  auto table = TokenTable::Parse(absl::StrCat("# who may call\n\nreader dash ", kHelloSha256,
                                              "   # grafana\r\n"),
                                 "tokens");
  ASSERT_OK(table);
  EXPECT_EQ(table->size(), 1u);
  auto identity = table->Lookup("hello");
  ASSERT_TRUE(identity.has_value());
  EXPECT_EQ(identity->name, "dash");
  EXPECT_EQ(identity->role, Role::kReader);
  EXPECT_TRUE(identity->authenticated);
  EXPECT_FALSE(table->Lookup("hello ").has_value());  // the token exactly as sent
  EXPECT_FALSE(table->Lookup(kHelloSha256).has_value());
}

TEST(TokenTableTest, ErrorsNameTheFileAndLine) {
  EXPECT_THAT(TokenTable::Parse("admin a b c\n", "t").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("t:1: expected")));
  EXPECT_THAT(TokenTable::Parse(absl::StrCat("\nroot x ", kHelloSha256), "t").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("t:2: unknown role")));
  std::string upper = kHelloSha256;
  upper[0] = 'C';
  EXPECT_THAT(TokenTable::Parse(absl::StrCat("admin x ", upper), "t").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lowercase hex")));
  EXPECT_THAT(TokenTable::Parse(absl::StrCat("admin x\x1b ", kHelloSha256), "t").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NAME must be")));
}

TEST(TokenTableTest, LineAndNewTokenRoundTrip) {
  auto token = TokenTable::NewToken();
  ASSERT_OK(token);
  EXPECT_EQ(token->rfind("se_", 0), 0u);
  EXPECT_GE(token->size(), 40u);
  EXPECT_NE(*token, *TokenTable::NewToken());
  EXPECT_EQ(TokenTable::Line(Role::kWorker, "pool", "hello"),
            absl::StrCat("worker pool ", kHelloSha256));
  auto table = TokenTable::Parse(TokenTable::Line(Role::kAdmin, "ops", *token), "t");
  ASSERT_OK(table);
  EXPECT_EQ(table->Lookup(*token)->role, Role::kAdmin);
}

TEST(AuthenticatorTest, RolesGrantExactlyTheirPermissions) {
  EXPECT_TRUE(Allows(Role::kWorker, Permission::kWorkerCall));
  EXPECT_FALSE(Allows(Role::kWorker, Permission::kQuery));
  EXPECT_FALSE(Allows(Role::kWorker, Permission::kAdminCall));
  EXPECT_FALSE(Allows(Role::kReader, Permission::kWorkerCall));
  EXPECT_TRUE(Allows(Role::kReader, Permission::kQuery));
  EXPECT_FALSE(Allows(Role::kReader, Permission::kAdminCall));
  EXPECT_FALSE(Allows(Role::kAdmin, Permission::kWorkerCall));
  EXPECT_TRUE(Allows(Role::kAdmin, Permission::kQuery));
  EXPECT_TRUE(Allows(Role::kAdmin, Permission::kAdminCall));
}

TEST(AuthenticatorTest, ChecksTheBearerHeader) {
  const fs::path file = fs::path(::testing::TempDir()) / "auth_test_tokens";
  std::ofstream(file) << "reader dash " << kHelloSha256 << "\n";
  auto auth = Authenticator::Create(file.string());
  ASSERT_OK(auth);
  EXPECT_OK((*auth)->Check("Bearer hello", Permission::kQuery));
  EXPECT_THAT((*auth)->Check(std::nullopt, Permission::kQuery).status(),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
  EXPECT_THAT((*auth)->Check("hello", Permission::kQuery).status(),
              StatusIs(absl::StatusCode::kUnauthenticated, HasSubstr("Bearer")));
  EXPECT_THAT((*auth)->Check("Bearer hellO", Permission::kQuery).status(),
              StatusIs(absl::StatusCode::kUnauthenticated, ::testing::_));
  EXPECT_THAT((*auth)->Check("Bearer hello", Permission::kAdminCall).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("role reader")));
  // Disabled: everything allowed, unauthenticated.
  auto open = Authenticator::Create("");
  ASSERT_OK(open);
  auto anyone = (*open)->Check(std::nullopt, Permission::kAdminCall);
  ASSERT_OK(anyone);
  EXPECT_FALSE(anyone->authenticated);
}

TEST(AddTokenTest, AppendsAHashedLineAndRefusesADuplicateName) {
  const fs::path file = fs::path(::testing::TempDir()) / "auth_test_add";
  fs::remove(file);
  auto first = AddToken(file.string(), Role::kWorker, "pool");
  ASSERT_OK(first);
  auto second = AddToken(file.string(), Role::kReader, "pool");  // other role: fine
  ASSERT_OK(second);
  EXPECT_THAT(AddToken(file.string(), Role::kWorker, "pool").status(),
              StatusIs(absl::StatusCode::kAlreadyExists, ::testing::_));
  auto table = TokenTable::Load(file.string());
  ASSERT_OK(table);
  EXPECT_EQ(table->size(), 2u);
  EXPECT_EQ(table->Lookup(*first)->role, Role::kWorker);
  EXPECT_EQ(table->Lookup(*second)->role, Role::kReader);
  EXPECT_EQ(fs::status(file).permissions() & fs::perms::group_read, fs::perms::none);
}

TEST(PrintableTest, EscapesControlCharactersAndCutsLongText) {
  EXPECT_EQ(Printable("plain 日本語"), "plain 日本語");
  EXPECT_EQ(Printable("\x1b[31mred\x07"), "\\x1b[31mred\\x07");
  EXPECT_EQ(Printable("a\nb\tc"), "a\\nb\\tc");
  EXPECT_EQ(Printable("\xc2\x9b" "2J"), "\\u{9b}2J");  // C1 CSI
  EXPECT_EQ(Printable("\xff\xfe"), "\\xff\\xfe");
  EXPECT_EQ(Printable(std::string(10000, 'x'), 8), "xxxxxxxx…(10000 bytes)");
}

TEST(RunInputsTest, BoundsAndMarkers) {
  v1::RunConfig config;
  config.set_name("r");
  EXPECT_OK(CheckRunInputLimits(config, {}));
  config.set_pattern(std::string(100 << 10, 'a'));
  absl::Status long_pattern = CheckRunInputLimits(config, {});
  EXPECT_THAT(long_pattern, StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("step pattern is 102400 bytes")));
  EXPECT_LT(long_pattern.message().size(), 200u);
  config.clear_pattern();
  for (const char* bad : {"../done", "/etc/passwd", "a/../../b"}) {
    config.set_marker(bad);
    EXPECT_THAT(CheckRunInputLimits(config, {}),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("inside the checkpoint")))
        << bad;
  }
  config.set_marker("sub/DONE");
  EXPECT_OK(CheckRunInputLimits(config, {}));
  for (int i = 0; i < 65; ++i) config.add_average_windows(2 + i);
  EXPECT_THAT(CheckRunInputLimits(config, {}), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(RunInputsTest, SourcesMustResolveUnderARoot) {
  const fs::path base = fs::path(::testing::TempDir()) / "run_inputs_roots";
  fs::remove_all(base);
  fs::create_directories(base / "data" / "run1");
  fs::create_directories(base / "data2");
  fs::create_directories(base / "secret");
  fs::create_symlink(base / "secret", base / "data" / "escape");
  auto roots = ParseSourceRoots((base / "data").string() + ",");
  ASSERT_OK(roots);
  ASSERT_EQ(roots->size(), 1u);

  EXPECT_OK(ResolveSource((base / "data" / "run1").string(), *roots));
  EXPECT_OK(ResolveSource("file://" + (base / "data").string(), *roots));
  EXPECT_THAT(ResolveSource((base / "data" / "escape").string(), *roots).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("--source_roots")));
  EXPECT_THAT(ResolveSource((base / "data" / "run1" / ".." / ".." / "secret").string(), *roots)
                  .status(),
              StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));
  // A sibling whose name starts with the root's is not under it.
  EXPECT_THAT(ResolveSource((base / "data2").string(), *roots).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));
  for (const char* system : {"/", "/proc", "/root"}) {
    EXPECT_THAT(ResolveSource(system, *roots).status(), Not(IsOk())) << system;
  }
  // No roots: any readable folder.
  EXPECT_OK(ResolveSource((base / "secret").string(), {}));
  EXPECT_THAT(ResolveSource("relative/dir", {}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(ParseSourceRoots("/no/such/root").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--source_roots")));
}

}  // namespace
}  // namespace steadyeval
