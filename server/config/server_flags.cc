#include "server/config/server_flags.h"

namespace steadyeval {

const std::vector<FlagSpec>& ServerFlags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"config", false,
       "declarative config file (YAML): server settings under these flag names and `runs:` "
       "(see deploy/config/); flags given here override its settings; SIGHUP re-applies it",
       "FILE"},
      {"data_dir", false, "RocksDB folder holding runs, jobs and results (required)", "DIR"},
      {"listen", false, "gRPC address (default 127.0.0.1:50051; port 0 picks one)", "HOST:PORT"},
      {"metrics_listen", false,
       "Prometheus /metrics address (default 127.0.0.1:9100; port 0 picks one)", "HOST:PORT"},
      {"poll_interval_ms", false, "checkpoint polling period per run (default 1000)", "N"},
      {"lease_ttl_ms", false, "job lease time-to-live without heartbeats (default 30000)", "N"},
      {"settle_seconds", false,
       "quiescence for runs created without one (default 30)", "S"},
      {"ready_file", false,
       "write {\"grpc\",\"listen\",\"metrics\",\"pid\"} JSON here once serving", "FILE"},
      {"tls_cert", false, "serve gRPC over TLS with this PEM certificate chain", "FILE"},
      {"tls_key", false, "the PEM private key of --tls_cert", "FILE"},
      {"client_ca", false,
       "require client certificates signed by these PEM roots (mTLS; needs --tls_cert)", "FILE"},
      {"tokens_file", false,
       "bearer tokens allowed to call, one 'ROLE NAME SHA256_HEX' line each (see `tokens add`); "
       "without it every caller may call everything",
       "FILE"},
      {"source_roots", false,
       "folders (comma-separated) run sources must resolve into, symlinks followed, and "
       "s3://bucket/prefix entries s3 sources must be under; without it any folder the "
       "coordinator can read and any bucket its credentials reach is accepted",
       "DIR|s3://BUCKET/PREFIX[,...]"},
      {"s3_endpoints", false,
       "S3-compatible endpoints (comma-separated, e.g. http://127.0.0.1:9000) runs may name "
       "with --s3_endpoint; AWS is always allowed. s3:// runs are read with this process's "
       "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_SHARED_CREDENTIALS_FILE); "
       "AWS_REGION / AWS_DEFAULT_REGION is the region of runs that name none (else us-east-1)",
       "URL[,URL...]"},
      {"insecure", true,
       "allow plaintext gRPC on a non-loopback --listen (only on a network you trust)", ""},
      {"storage_reserve_bytes", false,
       "refuse writes (RESOURCE_EXHAUSTED, retried by workers) unless the data dir's disk "
       "keeps this much free after each write; 0 disables the check (default 1048576)",
       "N"},
      {"storage_max_sst_bytes", false,
       "refuse writes once RocksDB's table files reach this size (default 0: no limit)", "N"},
      {"check", true,
       "check the flags and --config (keys, values, the declared runs as `runs add` would) "
       "and exit without opening the data dir or serving; TLS and tokens files are not read",
       ""},
      {"help", true, "show this help", ""},
  };
  return *flags;
}

}  // namespace steadyeval
