#include "server/jobs/lease_secret.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace steadyeval {
namespace {

constexpr absl::string_view kKeyName = "lease_secret_key";
constexpr size_t kKeyBytes = 32;
constexpr size_t kSecretBytes = 16;

}  // namespace

absl::StatusOr<LeaseSecrets> LeaseSecrets::Load(Store* store) {
  ASSIGN_OR_RETURN(std::optional<std::string> stored, store->GetMeta(kKeyName));
  if (stored.has_value()) {
    if (stored->size() != kKeyBytes) {
      return absl::DataLossError(absl::StrCat("the stored lease secret key is ", stored->size(),
                                              " bytes, not ", kKeyBytes, " (restore a backup)"));
    }
    return LeaseSecrets(*std::move(stored));
  }
  std::string key(kKeyBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(key.size())) != 1) {
    return absl::InternalError("cannot draw random bytes for the lease secret key (RAND_bytes)");
  }
  RETURN_IF_ERROR(store->PutMeta(kKeyName, key));
  return LeaseSecrets(std::move(key));
}

std::string LeaseSecrets::For(uint64_t job_id, uint64_t epoch, absl::string_view worker_id) const {
  const std::string message = absl::StrCat("lease/", job_id, "/", epoch, "/", worker_id);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &length);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(mac), std::min<size_t>(length, kSecretBytes)));
}

bool LeaseSecrets::Matches(uint64_t job_id, uint64_t epoch, absl::string_view worker_id,
                           absl::string_view secret) const {
  const std::string expected = For(job_id, epoch, worker_id);
  return secret.size() == expected.size() &&
         CRYPTO_memcmp(secret.data(), expected.data(), expected.size()) == 0;
}

}  // namespace steadyeval
