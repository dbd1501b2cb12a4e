// A real S3-compatible server for tests: s3rver 3.7.1 (npm), installed into
// testing/s3rver/node_modules by scripts/install-s3rver.sh from the committed lockfile.
// Each S3rver runs on 127.0.0.1 on a port of its own, with its data in a TempDir, and is
// killed when the object dies.
//
// s3rver accepts the key pair S3RVER / S3RVER. It checks that a request's access key id
// exists (an unknown one is HTTP 403 InvalidAccessKeyId) but, in 3.7.1, not the SigV4
// signature itself: the signer is tested against AWS's published vectors instead
// (s3/sigv4_test.cc).
//
// Not thread-safe: start, stop and restart it from the test's thread (clients may use it
// from any thread).
#ifndef STEADYEVAL_TESTING_S3RVER_H_
#define STEADYEVAL_TESTING_S3RVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "s3/credentials.h"
#include "s3/s3_client.h"
#include "testing/process.h"
#include "testing/temp_dir.h"

namespace steadyeval::testing {

class S3rver {
 public:
  // Starts s3rver on a free port and waits until it listens. FAILED_PRECONDITION naming
  // scripts/install-s3rver.sh when s3rver is not installed; UNAVAILABLE (with its logs)
  // when it does not come up.
  static absl::StatusOr<std::unique_ptr<S3rver>> Start();
  ~S3rver();
  S3rver(const S3rver&) = delete;
  S3rver& operator=(const S3rver&) = delete;

  // Stops the server (SIGTERM); its data and port stay reserved for Restart.
  void Stop();
  // Starts it again on the same port with the same data; waits until it listens.
  absl::Status Restart();

  int port() const { return port_; }
  std::string endpoint() const;  // "http://127.0.0.1:PORT"
  static AwsCredentials Credentials();  // S3RVER / S3RVER
  // Options for a client of this server: endpoint, region us-east-1, its credentials, and
  // short timeouts and backoff (a test of retries should not wait seconds).
  S3ClientOptions ClientOptions() const;
  // A client with ClientOptions(), or a fatal test failure.
  std::unique_ptr<S3Client> Client() const;
  std::string Logs() const;  // the current run's stdout and stderr, for failure messages

  // Where the tests look for s3rver: $STEADYEVAL_S3RVER, else
  // testing/s3rver/node_modules/.bin/s3rver in the source tree.
  static std::string BinaryPath();

 private:
  S3rver() = default;
  // Runs s3rver on `port` (0: any free port, read back from its "listening on" line).
  absl::Status Launch(int port);

  TempDir data_dir_;
  ChildProcess process_;
  int port_ = 0;
  int launches_ = 0;
};

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_S3RVER_H_
