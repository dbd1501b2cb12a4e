// `steadyeval-server health` (issue 19: the Kubernetes exec probe, deploy/kubernetes) against
// a real coordinator binary with TLS on and a tokens file: it needs no token, passes with
// the CA (and a --tls_server_name the certificate names), and fails with a clear message
// without the CA, for a name the certificate lacks, once the server is gone, and while
// the store refuses writes (NOT_SERVING).
#include <signal.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/certificates.h"
#include "testing/files.h"
#include "testing/process.h"
#include "testing/service_processes.h"
#include "testing/status_matchers.h"
#include "testing/temp_dir.h"

namespace steadyeval {
namespace {

using ::steadyeval::testing::BinDir;
using ::steadyeval::testing::Certificates;
using ::steadyeval::testing::CommandResult;
using ::steadyeval::testing::RunCommand;
using ::steadyeval::testing::ServiceProcesses;
using ::steadyeval::testing::TempDir;
using ::steadyeval::testing::TestCertificates;
using ::testing::HasSubstr;

TEST(HealthProbeTest, PassesWithTlsAndNoTokenAndFailsClearly) {
  TempDir tmp;
  const Certificates& certs = TestCertificates();
  ASSERT_EQ(certs.error, "");
  const std::string server = BinDir() + "/steadyeval-server";
  CommandResult added =
      RunCommand({server, "tokens", "add", "admin", "ops", "--tokens_file", tmp / "tokens"});
  ASSERT_EQ(added.exit_code, 0) << added.err;

  ServiceProcesses services(tmp.path());
  ASSERT_OK(services.StartCoordinator({"--tls_cert", certs.server_cert, "--tls_key",
                                       certs.server_key, "--tokens_file", tmp / "tokens"}));
  const std::string address = services.address();

  CommandResult ok = RunCommand(
      {server, "health", "--server", address, "--ca_cert", certs.ca}, 60);
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("serving (TLS)"));

  // The probe dials 127.0.0.1 but checks the certificate for the Service's name.
  CommandResult named = RunCommand({server, "health", "--server", address, "--ca_cert",
                                    certs.ca, "--tls_server_name", "localhost"},
                                   60);
  EXPECT_EQ(named.exit_code, 0) << named.out << named.err;
  CommandResult misnamed = RunCommand({server, "health", "--server", address, "--ca_cert",
                                       certs.ca, "--tls_server_name", "elsewhere",
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

  ASSERT_EQ(services.coordinator().Stop(SIGTERM), 0) << services.Logs();
  CommandResult gone = RunCommand({server, "health", "--server", address, "--ca_cert",
                                   certs.ca, "--timeout_seconds", "2"},
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
  ServiceProcesses services(tmp.path());
  for (const std::string reserve : {"0", "1000000000000000000"}) {
    ASSERT_OK(services.StartCoordinator({"--storage_reserve_bytes", reserve}));
    const std::string address = services.address();
    CommandResult probed = RunCommand({server, "health", "--server", address}, 60);
    if (reserve == "0") {
      EXPECT_EQ(probed.exit_code, 0) << probed.err;
    } else {
      EXPECT_EQ(probed.exit_code, 1) << probed.out;
      EXPECT_THAT(probed.err, HasSubstr(absl::StrCat(address, " answers NOT_SERVING")));
    }
    EXPECT_EQ(services.coordinator().Stop(SIGTERM), 0) << services.Logs();
  }
}

}  // namespace
}  // namespace steadyeval
