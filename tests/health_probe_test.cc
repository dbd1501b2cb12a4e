// `steadyeval-server health` (issue 19: the Kubernetes exec probe, deploy/kubernetes) against
// a real coordinator binary with TLS on and a tokens file: it needs no token, passes with
// the CA (and a --tls_server_name the certificate names), and fails with a clear message
// without the CA, for a name the certificate lacks, once the server is gone, and while
// the store refuses writes (NOT_SERVING).
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

  // The probe dials 127.0.0.1 but checks the certificate for the Service's name.
  CommandResult named = RunCommand({server, "health", "--server", address, "--ca_cert",
                                    certs + "/ca.pem", "--tls_server_name", "localhost"},
                                   60);
  EXPECT_EQ(named.exit_code, 0) << named.out << named.err;
  CommandResult misnamed = RunCommand({server, "health", "--server", address, "--ca_cert",
                                       certs + "/ca.pem", "--tls_server_name", "elsewhere",
                                       "--timeout_seconds", "2"},
                                      60);
  EXPECT_EQ(misnamed.exit_code, 1) << misnamed.out;

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

// A coordinator whose store refuses writes (a reserve larger than any disk) answers
// NOT_SERVING: the probe fails, so readiness takes it out of its Service. The data dir is
// made by a first start without the reserve (a fresh store's first write would be refused).
TEST(HealthProbeTest, FailsWhileTheStoreRefusesWrites) {
  TempDir tmp;
  const std::string server = BinDir() + "/steadyeval-server";
  std::string address;
  for (const std::string reserve : {"0", "1000000000000000000"}) {
    std::filesystem::remove(tmp / "ready");
    auto child = ChildProcess::Start(
        {server, "--data_dir", tmp / "db", "--listen", "127.0.0.1:0", "--metrics_listen",
         "127.0.0.1:0", "--storage_reserve_bytes", reserve, "--ready_file", tmp / "ready"},
        tmp / ("server-" + reserve));
    ASSERT_TRUE(child.ok()) << child.status();
    ASSERT_TRUE(steadyeval::testing::WaitFor(
        [&] { return !ReadFileOrEmpty(tmp / "ready").empty(); }, std::chrono::seconds(30)))
        << child->Logs();
    const std::string ready = ReadFileOrEmpty(tmp / "ready");
    const size_t at = ready.find("\"grpc\":\"") + 8;
    address = ready.substr(at, ready.find('"', at) - at);
    CommandResult probed = RunCommand({server, "health", "--server", address}, 60);
    if (reserve == "0") {
      EXPECT_EQ(probed.exit_code, 0) << probed.err;
    } else {
      EXPECT_EQ(probed.exit_code, 1) << probed.out;
      EXPECT_THAT(probed.err, HasSubstr(absl::StrCat(address, " answers NOT_SERVING")));
    }
    EXPECT_EQ(child->Stop(SIGTERM), 0) << child->Logs();
  }
}

}  // namespace
}  // namespace steadyeval
