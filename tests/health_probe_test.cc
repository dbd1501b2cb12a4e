// `steadyeval-server health` (issue 19: the Kubernetes exec probe, deploy/kubernetes) against
// a real coordinator binary with TLS on and a tokens file: it needs no token, passes with
// the CA, and fails with a clear message without the CA and once the server is gone.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/files.h"
#include "testing/process.h"
#include "testing/temp_dir.h"
#include "testing/wait.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::BinDir;
using ::steadyeval::testing::ChildProcess;
using ::steadyeval::testing::CommandResult;
using ::steadyeval::testing::ReadFileOrEmpty;
using ::steadyeval::testing::RunCommand;
using ::steadyeval::testing::TempDir;
using ::steadyeval::testing::WriteFile;
using ::testing::HasSubstr;

// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl in `dir`.
// Empty on success, else openssl's complaint.
std::string MakeCertificates(const std::string& dir) {
  WriteFile(dir + "/server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  const std::vector<std::vector<std::string>> steps = {
      {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
       "-keyout", dir + "/ca.key", "-out", dir + "/ca.pem", "-days", "2", "-subj", "/CN=test-ca"},
      {"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
       dir + "/server.key", "-out", dir + "/server.csr", "-subj", "/CN=server"},
      {"x509", "-req", "-in", dir + "/server.csr", "-CA", dir + "/ca.pem", "-CAkey",
       dir + "/ca.key", "-CAcreateserial", "-out", dir + "/server.pem", "-days", "2",
       "-extfile", dir + "/server.ext"},
  };
  for (const auto& step : steps) {
    std::vector<std::string> argv = {"/usr/bin/openssl"};
    argv.insert(argv.end(), step.begin(), step.end());
    CommandResult r = RunCommand(argv, 60);
    if (r.exit_code != 0) return absl::StrCat("openssl ", step[0], ": ", r.err);
  }
  return "";
}

TEST(HealthProbeTest, PassesWithTlsAndNoTokenAndFailsClearly) {
  TempDir tmp;
  const std::string certs = tmp / "certs";
  std::filesystem::create_directories(certs);
  ASSERT_EQ(MakeCertificates(certs), "");
  const std::string server = BinDir() + "/steadyeval-server";
  CommandResult added =
      RunCommand({server, "tokens", "add", "admin", "ops", "--tokens_file", tmp / "tokens"});
  ASSERT_EQ(added.exit_code, 0) << added.err;

  auto child = ChildProcess::Start(
      {server, "--data_dir", tmp / "db", "--listen", "127.0.0.1:0", "--metrics_listen",
       "127.0.0.1:0", "--tls_cert", certs + "/server.pem", "--tls_key", certs + "/server.key",
       "--tokens_file", tmp / "tokens", "--ready_file", tmp / "ready"},
      tmp / "server");
  ASSERT_TRUE(child.ok()) << child.status();
  ASSERT_TRUE(steadyeval::testing::WaitFor([&] { return !ReadFileOrEmpty(tmp / "ready").empty(); },
                                           std::chrono::seconds(30)))
      << child->Logs();
  const std::string ready = ReadFileOrEmpty(tmp / "ready");
  const size_t at = ready.find("\"grpc\":\"") + 8;
  const std::string address = ready.substr(at, ready.find('"', at) - at);

  CommandResult ok = RunCommand(
      {server, "health", "--server", address, "--ca_cert", certs + "/ca.pem"}, 60);
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("serving (TLS)"));

  CommandResult plaintext = RunCommand({server, "health", "--server", address}, 60);
  EXPECT_EQ(plaintext.exit_code, 1) << plaintext.out;
  EXPECT_THAT(plaintext.err, HasSubstr(absl::StrCat("health check of ", address)));
  EXPECT_THAT(plaintext.err, HasSubstr("needs --ca_cert"));

  CommandResult usage = RunCommand({server, "health"}, 60);
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_THAT(usage.err, HasSubstr("--server HOST:PORT"));

  ASSERT_EQ(child->Stop(SIGTERM), 0) << child->Logs();
  CommandResult gone = RunCommand({server, "health", "--server", address, "--ca_cert",
                                   certs + "/ca.pem", "--timeout_seconds", "2"},
                                  60);
  EXPECT_EQ(gone.exit_code, 1) << gone.out;
  EXPECT_THAT(gone.err, HasSubstr(absl::StrCat("health check of ", address, " (TLS) failed")));
}

}  // namespace
}  // namespace steadyeval
