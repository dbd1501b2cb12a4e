#include "server/rpc/tls.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/file_read.h"
#include "common/status.h"

namespace steadyeval {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxPemBytes = 1 << 20;

// A PEM file named by --`flag`; every failure is the operator's input: INVALID_ARGUMENT.
absl::StatusOr<std::string> ReadPem(const std::string& path, const char* flag) {
  absl::StatusOr<std::string> pem = ReadRegularFile(path, kMaxPemBytes, absl::StrCat("--", flag));
  if (!pem.ok()) return absl::InvalidArgumentError(pem.status().message());
  return pem;
}

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

std::unique_ptr<BIO, BioDeleter> MemoryBio(const std::string& pem) {
  return std::unique_ptr<BIO, BioDeleter>(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

absl::StatusOr<std::unique_ptr<X509, X509Deleter>> FirstCertificate(const std::string& pem,
                                                                    const std::string& path,
                                                                    const char* flag) {
  auto bio = MemoryBio(pem);
  std::unique_ptr<X509, X509Deleter> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " ", path, ": no PEM certificate in it"));
  }
  return cert;
}

// Writes `content` to `path` with mode 0600 via a temporary file and rename.
absl::Status WritePrivateFile(const std::string& path, const std::string& content) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  }
  const bool ok = write(fd, content.data(), content.size()) ==
                      static_cast<ssize_t>(content.size()) &&
                  fsync(fd) == 0;
  close(fd);
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// The PEM files' contents, as checked: what InstallTlsFiles copies is exactly what was
// checked, even if a file changes meanwhile.
struct CheckedPems {
  std::string cert, key, client_ca;  // client_ca empty without mTLS
};

absl::StatusOr<CheckedPems> ReadCheckedPems(const TlsFiles& files) {
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  if (!files.client_ca.empty() && files.cert.empty()) {
    return absl::InvalidArgumentError("--client_ca needs --tls_cert and --tls_key");
  }
  CheckedPems pems;
  if (files.cert.empty()) return pems;
  ASSIGN_OR_RETURN(pems.cert, ReadPem(files.cert, "tls_cert"));
  ASSIGN_OR_RETURN(pems.key, ReadPem(files.key, "tls_key"));
  ASSIGN_OR_RETURN(auto cert, FirstCertificate(pems.cert, files.cert, "tls_cert"));
  auto key_bio = MemoryBio(pems.key);
  std::unique_ptr<EVP_PKEY, KeyDeleter> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_key ", files.key, ": no unencrypted PEM private key in it"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_key ", files.key,
                                                   " does not belong to --tls_cert ", files.cert));
  }
  if (!files.client_ca.empty()) {
    ASSIGN_OR_RETURN(pems.client_ca, ReadPem(files.client_ca, "client_ca"));
    RETURN_IF_ERROR(FirstCertificate(pems.client_ca, files.client_ca, "client_ca").status());
  }
  return pems;
}

}  // namespace

absl::Status CheckTlsFiles(const TlsFiles& files) { return ReadCheckedPems(files).status(); }

absl::Status InstallTlsFiles(const TlsFiles& files, const std::string& watch_dir) {
  ASSIGN_OR_RETURN(CheckedPems pems, ReadCheckedPems(files));
  std::error_code ec;
  fs::create_directories(watch_dir, ec);
  if (ec || chmod(watch_dir.c_str(), 0700) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot create ", watch_dir, ": ", ec.message()));
  }
  // The key first: the provider reloads when either file changes, and it must never pair
  // a new certificate with the old key for long (it re-checks every refresh).
  RETURN_IF_ERROR(WritePrivateFile(watch_dir + "/key.pem", pems.key));
  RETURN_IF_ERROR(WritePrivateFile(watch_dir + "/cert.pem", pems.cert));
  if (!pems.client_ca.empty()) {
    RETURN_IF_ERROR(WritePrivateFile(watch_dir + "/client_ca.pem", pems.client_ca));
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> WatchedTlsCredentials(const std::string& watch_dir,
                                                               bool require_client_cert) {
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider;
  if (require_client_cert) {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        watch_dir + "/key.pem", watch_dir + "/cert.pem", watch_dir + "/client_ca.pem",
        kTlsRefreshSeconds);
  } else {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        watch_dir + "/key.pem", watch_dir + "/cert.pem", kTlsRefreshSeconds);
  }
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (require_client_cert) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

bool IsLoopbackListen(const std::string& address) {
  size_t colon = address.rfind(':');
  std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost" || host == "::1") return true;
  return absl::StartsWith(host, "127.");
}

}  // namespace steadyeval
