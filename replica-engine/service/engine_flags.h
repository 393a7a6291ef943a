#pragma once
// tandem-engine's command line: the flags, and their values parsed and
// validated into an EngineConfig before anything is opened (a bad value is
// a usage error, exit 2). Pure apart from reading the token files, so the
// daemon's exit-2 paths are unit-tested.

#include <string>
#include <vector>

#include "common/flags.h"
#include "common/grpc/tls.h"
#include "common/status.h"
#include "replica-engine/backend/storage_backend.h"
#include "replica-engine/replica/replica.h"
#include "replica-engine/server/replica_server.h"
#include "replica-engine/service/engine_service.h"

namespace tandem::service {

// The replica server's buffer pool splits its bytes evenly over nine size
// classes (4 KiB .. 1 MiB); below 9 MiB the 1 MiB class is empty and every
// 1 MiB request (a rebuild window, a large NBD write) waits forever. 16 MiB
// leaves room for a few.
constexpr uint64_t kMinBufferPool = 16ull << 20;

// --nbd-write-spin-us's bound: a spin holds the loop (every volume and
// replica on it) for up to this long per WRITE.
constexpr uint64_t kMaxNbdWriteSpinUs = 1000;

// Everything the flags decide.
struct EngineConfig {
  // --listen, --auth-token(-file), --busy-poll-us, --cpu, --buffer-pool.
  server::ServerOptions server;
  // --node-id (default: the hostname), the target defaults, --mgmt-token
  // (-file), --data-dir, --allowed-device, --allow-remote-nbd. data_address
  // and backend are filled in once the server runs.
  EngineServiceOptions service;
  std::string backend;                      // --backend
  backend::BackendOptions backend_options;  // --io-uring-defer-taskrun
  std::string grpc_listen;                  // --grpc-listen, as given (a valid endpoint)
  // --grpc-tls-cert, --grpc-tls-key, --grpc-tls-client-ca: TLS for the
  // management API (mutual with a client CA); none: plaintext.
  rpc::TlsConfig grpc_tls;
  std::string nbd_dir;    // --nbd-dir, default <data-dir>/nbd
  std::string port_file;  // --port-file
  std::string grpc_port_file;
  // --controller: the membership authority's endpoint; empty: none.
  std::string controller;
  // --target-loop=server (the default): the attached volumes' targets run on
  // the replica server's loop (one thread for the node's targets and the
  // replicas it serves); own (false): on a loop thread of their own.
  bool targets_on_server_loop = true;
  // --target-threads: the loops the targets are spread over (1..64). Loop 0
  // is the one --target-loop picks, loops 1.. are threads of their own; a
  // volume stays on the loop it was attached on (attach/target_loops.h).
  uint32_t target_threads = 1;
  // --local-replica=on: with targets on the server's loop, the replica this
  // engine holds is reached in-process (local::LocalReplicaChannel).
  bool local_replica = true;
  // --nbd-write-spin-us: frontend::NbdServerOptions::write_payload_spin_us
  // of the NBD exports (0..1000; 0: off).
  uint32_t nbd_write_spin_us = 0;
  // --create-replica, each already within CreateReplica's size rules.
  std::vector<replica::ReplicaConfig> create;
};

// Declares every tandem-engine flag with its default and help text.
void DefineEngineFlags(Flags* flags);

// Parses the values of `flags` (already Parse()d). INVALID_ARGUMENT naming
// the flag (OUT_OF_RANGE for a --create-replica size beyond the metadata
// bound); the secure defaults' bind rules (CheckBindAddress) apply.
// `configured_cpus` bounds --cpu.
Status ParseEngineConfig(const Flags& flags, long configured_cpus, EngineConfig* config);

// --cpu: "-1" (no pinning) or a CPU number in 0..configured_cpus-1, plain
// decimal (no sign, suffix or white space). INVALID_ARGUMENT naming --cpu
// and the range otherwise ("abc", "1x", "" and a CPU the machine does not
// have were silently CPU 0 or a failing pin under atoi).
Status ParseCpu(const std::string& text, long configured_cpus, int* cpu);

// --create-replica "VOLUME_ID:SIZE[:REPLICA_ID]" (replica id default
// "<volume>-r"), size with K/M/G/T suffixes. INVALID_ARGUMENT otherwise.
Status ParseReplicaSpec(const std::string& spec, replica::ReplicaConfig* config);

}  // namespace tandem::service
