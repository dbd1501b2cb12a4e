// Certificates for TLS tests, made with /usr/bin/openssl: a CA, a server certificate for
// 127.0.0.1 and localhost signed by it, a client certificate signed by it, and a client and
// a server certificate signed by an unrelated CA.
#ifndef STEADYEVAL_TESTING_CERTIFICATES_H_
#define STEADYEVAL_TESTING_CERTIFICATES_H_

#include <string>

namespace steadyeval::testing {

// Paths of the PEM files, all in `dir`.
struct Certificates {
  std::string dir;
  std::string ca, server_cert, server_key, client_cert, client_key, rogue_cert, rogue_key;
  std::string other_ca, server2_cert, server2_key;  // server2: signed by other_ca
  std::string error;  // set when openssl failed (then the paths are empty)
};

// Made once per test binary, under gtest's temp dir; check `error` before use. Not
// thread-safe on the first call.
const Certificates& TestCertificates();

}  // namespace steadyeval::testing

#endif  // STEADYEVAL_TESTING_CERTIFICATES_H_
