// Lease secrets: the proof, on Heartbeat, ReportResults and FailJob, that a request comes
// from the worker a lease was granted to (LeasedJob.lease_secret). Job ids, epochs and
// worker ids are public (ListJobs shows them); the secret is not.
//
// A lease's secret is HMAC-SHA256(key, job id | epoch | worker id) truncated to 128 bits,
// hex encoded, where `key` is 256 random bits (OpenSSL RAND_bytes) made once per database
// and kept in its meta family. Every lease (a new epoch) therefore gets its own
// unpredictable secret, nothing per lease is stored, and the secrets of leases restored
// at start-up stay valid across a coordinator restart. The key is never sent anywhere.
//
// Thread-safe (immutable after Load).
#ifndef STEADYEVAL_SERVER_JOBS_LEASE_SECRET_H_
#define STEADYEVAL_SERVER_JOBS_LEASE_SECRET_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/store/store.h"

namespace steadyeval {

class LeaseSecrets {
 public:
  // Reads the key from `store` (meta "lease_secret_key"), creating and storing a random
  // one on first use. INTERNAL when no random bytes can be had; DATA_LOSS for a stored key
  // of the wrong size.
  static absl::StatusOr<LeaseSecrets> Load(Store* store);

  // The secret of the lease (job_id, epoch) granted to `worker_id`: 32 lowercase hex digits.
  std::string For(uint64_t job_id, uint64_t epoch, absl::string_view worker_id) const;
  // Whether `secret` is that secret (constant-time comparison).
  bool Matches(uint64_t job_id, uint64_t epoch, absl::string_view worker_id,
               absl::string_view secret) const;

 private:
  explicit LeaseSecrets(std::string key) : key_(std::move(key)) {}
  std::string key_;  // raw bytes
};

}  // namespace steadyeval

#endif  // STEADYEVAL_SERVER_JOBS_LEASE_SECRET_H_
