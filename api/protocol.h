// The worker protocol's version. RegisterWorker carries it both ways; a coordinator
// refuses a worker whose version differs. Bump it whenever a WorkerService message's
// meaning changes so that old and new binaries cannot half-understand each other.
#ifndef STEADYEVAL_API_PROTOCOL_H_
#define STEADYEVAL_API_PROTOCOL_H_

#include <cstdint>

namespace steadyeval {

// 1: the protocol before versions (RegisterWorkerRequest.protocol_version unset = 0).
// 2: leases carry a secret; GetTask names the worker.
inline constexpr uint32_t kProtocolVersion = 2;

// FailJobRequest.reason of a worker that stops (SIGTERM/SIGINT) and hands its lease back
// unfinished (retryable = true): the job is leasable again at once and the attempt is
// given back, since the checkpoint did nothing wrong.
inline constexpr char kWorkerStoppingReason[] = "worker stopping";

}  // namespace steadyeval

#endif  // STEADYEVAL_API_PROTOCOL_H_
