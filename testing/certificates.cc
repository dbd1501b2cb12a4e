#include "testing/certificates.h"

#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "testing/files.h"
#include "testing/process.h"

namespace steadyeval::testing {
namespace {

// Runs openssl with `args`; "" on success, else the command and openssl's complaint.
std::string Openssl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = RunCommand(argv, 60);
  if (r.exit_code != 0) return absl::StrCat("openssl ", absl::StrJoin(args, " "), ": ", r.err);
  return "";
}

}  // namespace

const Certificates& TestCertificates() {
  static Certificates* certs = [] {
    auto* c = new Certificates;
    c->dir = (std::filesystem::path(::testing::TempDir()) / "test_certificates").string();
    std::filesystem::remove_all(c->dir);
    std::filesystem::create_directories(c->dir);
    const std::string d = c->dir + "/";
    WriteFile(d + "server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    WriteFile(d + "client.ext", "extendedKeyUsage=clientAuth\n");
    const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt",
                                         "ec_paramgen_curve:prime256v1", "-nodes"};
    auto with = [&](std::vector<std::string> head, const std::vector<std::string>& tail) {
      head.insert(head.end(), tail.begin(), tail.end());
      return head;
    };
    for (const char* ca : {"ca", "other_ca"}) {
      std::string e = Openssl(with(with({"req", "-x509"}, ec),
                                   {"-keyout", d + ca + ".key", "-out", d + ca + ".pem", "-days",
                                    "2", "-subj", absl::StrCat("/CN=test-", ca)}));
      if (!e.empty()) { c->error = e; return c; }
    }
    struct Leaf { const char* name; const char* ca; const char* ext; };
    for (const Leaf& leaf : {Leaf{"server", "ca", "server.ext"}, Leaf{"client", "ca", "client.ext"},
                             Leaf{"rogue", "other_ca", "client.ext"},
                             Leaf{"server2", "other_ca", "server.ext"}}) {
      const std::string n = leaf.name;
      std::string e = Openssl(with(with({"req"}, ec), {"-keyout", d + n + ".key", "-out",
                                                       d + n + ".csr", "-subj", "/CN=" + n}));
      if (e.empty()) {
        e = Openssl({"x509", "-req", "-in", d + n + ".csr", "-CA", d + leaf.ca + ".pem",
                     "-CAkey", d + leaf.ca + ".key", "-CAcreateserial", "-out", d + n + ".pem",
                     "-days", "2", "-extfile", d + leaf.ext});
      }
      if (!e.empty()) { c->error = e; return c; }
    }
    c->ca = d + "ca.pem";
    c->other_ca = d + "other_ca.pem";
    c->server_cert = d + "server.pem";
    c->server_key = d + "server.key";
    c->client_cert = d + "client.pem";
    c->client_key = d + "client.key";
    c->rogue_cert = d + "rogue.pem";
    c->rogue_key = d + "rogue.key";
    c->server2_cert = d + "server2.pem";
    c->server2_key = d + "server2.key";
    return c;
  }();
  return *certs;
}

}  // namespace steadyeval::testing
