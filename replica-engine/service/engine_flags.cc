#include "replica-engine/service/engine_flags.h"

#include <unistd.h>

#include <climits>
#include <cstdint>
#include <utility>

#include "common/address.h"
#include "common/grpc/endpoint.h"
#include "replica-engine/attach/target_loops.h"
#include "replica-engine/service/proto_convert.h"
#include "replica-engine/service/secure_defaults.h"

namespace tandem::service {
namespace {

std::string Hostname() {
  char name[HOST_NAME_MAX + 1] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "localhost";
  return name;
}

// --auth-token / --mgmt-token, or the file named by --<flag>-file (not
// visible in ps); both at once is an error.
Status ReadToken(const Flags& flags, const std::string& flag, std::string* token) {
  *token = flags.Get(flag);
  const std::string file = flags.Get(flag + "-file");
  if (file.empty()) return Status::Ok();
  if (!token->empty()) {
    return Status::InvalidArgument("--" + flag + " and --" + flag + "-file are exclusive");
  }
  return ReadSecretFile("--" + flag + "-file", file, token);
}

// --listen, the tokens and the secure defaults' bind rules
// (docs/security.md): without its token, a port binds loopback (or a unix
// socket) unless --insecure-bind.
Status ParseEndpoints(const Flags& flags, EngineConfig* c) {
  TANDEM_RETURN_IF_ERROR(ParseHostPort("--listen", flags.Get("listen"), /*allow_zero_port=*/true,
                                       &c->server.listen_address, &c->server.port));
  TANDEM_RETURN_IF_ERROR(ReadToken(flags, "auth-token", &c->server.auth_token));
  TANDEM_RETURN_IF_ERROR(ReadToken(flags, "mgmt-token", &c->service.mgmt_token));
  const bool insecure_bind = flags.GetBool("insecure-bind");
  TANDEM_RETURN_IF_ERROR(CheckBindAddress("--listen", flags.Get("listen"),
                                          !c->server.auth_token.empty(), "--auth-token",
                                          insecure_bind));
  c->grpc_tls = {flags.Get("grpc-tls-cert"), flags.Get("grpc-tls-key"),
                 flags.Get("grpc-tls-client-ca")};
  if (c->grpc_tls.enabled() && (c->grpc_tls.cert_file.empty() || c->grpc_tls.key_file.empty())) {
    return Status::InvalidArgument(
        "--grpc-tls-cert and --grpc-tls-key are both needed for TLS (--grpc-tls-client-ca "
        "adds client certificates)");
  }
  c->grpc_listen = flags.Get("grpc-listen");
  Result<rpc::Endpoint> grpc = rpc::ParseEndpoint(c->grpc_listen);
  if (!grpc.ok()) return grpc.status().WithContext("--grpc-listen");
  return CheckBindAddress("--grpc-listen", grpc->GrpcAddress(), !c->service.mgmt_token.empty(),
                          "--mgmt-token", insecure_bind);
}

// The replica server's knobs.
Status ParseServerOptions(const Flags& flags, long configured_cpus, EngineConfig* c) {
  uint64_t v = 0;
  TANDEM_RETURN_IF_ERROR(flags.GetUint("busy-poll-us", &v));
  c->server.busy_poll_us = static_cast<uint32_t>(v);
  TANDEM_RETURN_IF_ERROR(flags.GetUint("buffer-pool", &v, /*sizes=*/true));
  if (v < kMinBufferPool) return Status::InvalidArgument("--buffer-pool must be at least 16M");
  c->server.buffer_pool_bytes = v;
  // Data-port limits (docs/security.md).
  TANDEM_RETURN_IF_ERROR(flags.GetUint("max-connections", &v));
  if (v == 0 || v > 1000000) {
    return Status::InvalidArgument("--max-connections must be 1..1000000");
  }
  c->server.max_connections = static_cast<uint32_t>(v);
  TANDEM_RETURN_IF_ERROR(flags.GetUint("handshake-timeout-ms", &v));
  if (v < 100 || v > 600000) {
    return Status::InvalidArgument("--handshake-timeout-ms must be 100..600000");
  }
  c->server.handshake_timeout_ms = static_cast<uint32_t>(v);
  TANDEM_RETURN_IF_ERROR(flags.GetUint("idle-timeout-ms", &v));
  if (v != 0 && (v < 60000 || v > 86400000)) {
    // Below a minute it would race the targets' 30 s keepalive.
    return Status::InvalidArgument("--idle-timeout-ms must be 0 (never) or 60000..86400000");
  }
  c->server.idle_timeout_ms = static_cast<uint32_t>(v);
  return ParseCpu(flags.Get("cpu"), configured_cpus, &c->server.cpu);
}

// What CreateTarget uses when a request leaves a field 0.
Status ParseTargetDefaults(const Flags& flags, TargetDefaults* d) {
  uint64_t v = 0;
  TANDEM_RETURN_IF_ERROR(flags.GetUint("request-timeout-ms", &v));
  if (v == 0 || v > UINT32_MAX) {
    return Status::InvalidArgument("--request-timeout-ms must be in 1..2^32-1");
  }
  d->request_timeout_ms = static_cast<uint32_t>(v);
  TANDEM_RETURN_IF_ERROR(flags.GetUint("rebuild-rate", &v, /*sizes=*/true));
  TANDEM_RETURN_IF_ERROR(ValidateRebuildRate("--rebuild-rate", v));
  d->rebuild_rate_bytes_per_sec = v;
  TANDEM_RETURN_IF_ERROR(flags.GetUint("reconnect-interval-ms", &v));
  if (v != 0 && (v < kMinReconnectIntervalMs || v > kMaxReconnectIntervalMs)) {
    return Status::InvalidArgument("--reconnect-interval-ms must be 0 or in " +
                                   std::to_string(kMinReconnectIntervalMs) + ".." +
                                   std::to_string(kMaxReconnectIntervalMs));
  }
  d->reconnect_interval_ms = static_cast<uint32_t>(v);
  return Status::Ok();
}

}  // namespace

void DefineEngineFlags(Flags* flags) {
  flags->Define("data-dir", "/var/lib/tandem", "directory holding this node's replicas");
  flags->Define("listen", "127.0.0.1:9500", "data protocol address HOST:PORT (port 0: any)");
  flags->Define("backend", "auto", "storage backend: auto, io_uring or libaio");
  flags->Define("io-uring-defer-taskrun", "off",
                "on: the io_uring backend's ring is SINGLE_ISSUER + DEFER_TASKRUN where the "
                "kernel has them (one loop wake-up per completion; measured neutral on a 2-vCPU "
                "VM, docs/performance.md); off: COOP_TASKRUN");
  flags->Define("auth-token", "", "token every target must present (empty: none)");
  flags->Define("create-replica", "",
                "VOLUME_ID:SIZE[:REPLICA_ID] to create at start (repeatable)");
  flags->Define("busy-poll-us", "0", "poll this long before sleeping (latency vs CPU)");
  flags->Define("cpu", "-1", "pin the I/O thread to this CPU");
  flags->Define("buffer-pool", "128M", "bytes of aligned I/O buffers (at least 16M)");
  flags->Define("max-connections", "1024", "data-port connections open at once");
  flags->Define("handshake-timeout-ms", "10000",
                "close a data-port connection without HELLO after this long");
  flags->Define("idle-timeout-ms", "600000",
                "close an authenticated data-port session idle this long (0: never)");
  flags->Define("port-file", "", "write the bound data port here once listening");
  flags->Define("grpc-listen", "127.0.0.1:9600",
                "management API endpoint HOST:PORT (port 0: any), tcp://HOST:PORT, "
                "unix:/path or unix:///path");
  flags->Define("grpc-port-file", "",
                "write the bound gRPC port here once listening (0 for a unix socket)");
  flags->Define("node-id", "", "this node's id (default: the hostname)");
  flags->Define("nbd-dir", "",
                "directory of the targets' NBD unix sockets (default: <data-dir>/nbd)");
  flags->Define("request-timeout-ms", "5000", "default per-request replica timeout of targets");
  flags->Define("rebuild-rate", "0",
                "default rebuild copy rate limit of targets, bytes/s (K/M/G suffixes; 0: "
                "unlimited, else at least 1M)");
  flags->Define("reconnect-interval-ms", "1000",
                "targets reconnect and rebuild FAULTED/STALE replicas this often (0: only on "
                "request, else 100..3600000)");
  flags->Define("mgmt-token", "",
                "when set, every gRPC call needs metadata 'authorization: Bearer <token>'");
  flags->Define("auth-token-file", "",
                "read --auth-token from this file (not visible in ps; trailing newline dropped)");
  flags->Define("mgmt-token-file", "",
                "read --mgmt-token from this file (not visible in ps; trailing newline dropped)");
  flags->Define("insecure-bind", "false",
                "allow --listen without --auth-token and --grpc-listen without --mgmt-token on a "
                "non-loopback address (anyone who reaches them has full access)");
  flags->Define("allowed-device", "",
                "a block device (or file) outside --data-dir that CreateReplica's data_path may "
                "name (repeatable; symlinks are resolved)");
  flags->Define("grpc-tls-cert", "", "TLS certificate (PEM) of the management API");
  flags->Define("grpc-tls-key", "", "TLS private key (PEM) of the management API");
  flags->Define("grpc-tls-client-ca", "",
                "CA (PEM) whose client certificates the management API requires (mutual TLS)");
  flags->Define("controller", "",
                "tandem-controller endpoint (HOST:PORT, tcp://HOST:PORT or unix:///path) serving "
                "the membership authority: targets ask it before acknowledging writes below a "
                "majority of their replicas (empty: the majority rule alone)");
  flags->Define("target-loop", "server",
                "where attached volumes' targets run: server (the replica server's loop: no thread "
                "hand-off between a target and the replicas this engine serves) or own (a loop "
                "thread of their own, as before issue 12; docs/performance.md)");
  flags->Define(
      "target-threads", "1",
      "event loops the attached volumes' targets are spread over, 1..64: loop 0 is the "
      "one --target-loop picks, the others threads of their own; a new volume goes to the "
      "loop with the fewest targets (docs/performance.md)");
  flags->Define("local-replica", "on",
                "on: with --target-loop=server, a target reaches the replica this engine holds "
                "in-process (its ReplicaPort on the same loop: no TCP, no CRC, no copy); off: over "
                "TCP like the remote ones (docs/performance.md)");
  flags->Define("nbd-write-spin-us", "0",
                "when an NBD WRITE's header has come without its payload (64 KiB or less), "
                "retry the socket this long before waiting in epoll, so the payload sent right "
                "after the header costs no second loop wake-up (0: off, max 1000; "
                "docs/performance.md)");
  flags->Define("allow-remote-nbd", "false",
                "let CreateTarget export NBD over TCP on a non-loopback nbd_tcp_address (NBD has "
                "no authentication)");
}

Status ParseEngineConfig(const Flags& flags, long configured_cpus, EngineConfig* c) {
  TANDEM_RETURN_IF_ERROR(ParseEndpoints(flags, c));
  TANDEM_RETURN_IF_ERROR(ParseServerOptions(flags, configured_cpus, c));
  TANDEM_RETURN_IF_ERROR(ParseTargetDefaults(flags, &c->service.target_defaults));
  const std::string data_dir = flags.Get("data-dir");
  c->service.node_id = flags.Get("node-id").empty() ? Hostname() : flags.Get("node-id");
  c->service.data_dir = data_dir;
  c->service.allowed_devices = flags.GetAll("allowed-device");
  c->service.allow_remote_nbd = flags.GetBool("allow-remote-nbd");
  c->backend = flags.Get("backend");
  const std::string defer = flags.Get("io-uring-defer-taskrun");
  if (defer != "on" && defer != "off") {
    return Status::InvalidArgument("--io-uring-defer-taskrun '" + defer + "' is not on or off");
  }
  c->backend_options.single_issuer = defer == "on";
  c->nbd_dir = flags.Get("nbd-dir").empty() ? data_dir + "/nbd" : flags.Get("nbd-dir");
  c->port_file = flags.Get("port-file");
  c->grpc_port_file = flags.Get("grpc-port-file");
  c->controller = flags.Get("controller");
  if (!c->controller.empty()) {
    if (auto ep = rpc::ParseEndpoint(c->controller, /*allow_zero_port=*/false); !ep.ok()) {
      return Status::InvalidArgument("--controller: " + ep.status().message());
    }
  }
  const std::string target_loop = flags.Get("target-loop");
  if (target_loop != "own" && target_loop != "server") {
    return Status::InvalidArgument("--target-loop '" + target_loop + "' is not own or server");
  }
  c->targets_on_server_loop = target_loop == "server";
  uint64_t threads = 0;
  TANDEM_RETURN_IF_ERROR(flags.GetUint("target-threads", &threads));
  if (threads < 1 || threads > attach::TargetLoops::kMaxLoops) {
    return Status::InvalidArgument("--target-threads must be 1.." +
                                   std::to_string(attach::TargetLoops::kMaxLoops));
  }
  c->target_threads = static_cast<uint32_t>(threads);
  const std::string local_replica = flags.Get("local-replica");
  if (local_replica != "on" && local_replica != "off") {
    return Status::InvalidArgument("--local-replica '" + local_replica + "' is not on or off");
  }
  c->local_replica = local_replica == "on";
  uint64_t spin = 0;
  TANDEM_RETURN_IF_ERROR(flags.GetUint("nbd-write-spin-us", &spin));
  if (spin > kMaxNbdWriteSpinUs) {
    return Status::InvalidArgument("--nbd-write-spin-us must be 0.." +
                                   std::to_string(kMaxNbdWriteSpinUs));
  }
  c->nbd_write_spin_us = static_cast<uint32_t>(spin);
  // The same size rules as CreateReplica (block size 4096, a bounded dirty
  // map); the storage is checked once the data dir exists (engine_main).
  for (const std::string& spec : flags.GetAll("create-replica")) {
    replica::ReplicaConfig cfg;
    TANDEM_RETURN_IF_ERROR(ParseReplicaSpec(spec, &cfg));
    TANDEM_RETURN_IF_ERROR(ValidateReplicaSize(cfg).WithContext("--create-replica=" + spec));
    c->create.push_back(std::move(cfg));
  }
  return Status::Ok();
}

Status ParseReplicaSpec(const std::string& spec, replica::ReplicaConfig* cfg) {
  size_t c1 = spec.find(':');
  if (c1 == std::string::npos) {
    return Status::InvalidArgument("--create-replica must be VOLUME_ID:SIZE[:REPLICA_ID]");
  }
  cfg->volume_id = spec.substr(0, c1);
  std::string rest = spec.substr(c1 + 1);
  size_t c2 = rest.find(':');
  std::string size = rest.substr(0, c2);
  cfg->replica_id = c2 == std::string::npos ? cfg->volume_id + "-r" : rest.substr(c2 + 1);
  return ParseSize(size, &cfg->size).WithContext("--create-replica size");
}

Status ParseCpu(const std::string& text, long configured_cpus, int* cpu) {
  if (text == "-1") {
    *cpu = -1;
    return Status::Ok();
  }
  const std::string range = "-1 (no pinning) or 0.." + std::to_string(configured_cpus - 1);
  int64_t v = 0;
  bool ok = !text.empty() && text.size() <= 6;  // bounded: no overflow below
  for (size_t i = 0; ok && i < text.size(); ++i) {
    ok = text[i] >= '0' && text[i] <= '9';
    v = v * 10 + (text[i] - '0');
  }
  if (!ok || v >= configured_cpus) {
    return Status::InvalidArgument("--cpu '" + text + "' is not " + range);
  }
  *cpu = static_cast<int>(v);
  return Status::Ok();
}

}  // namespace tandem::service
