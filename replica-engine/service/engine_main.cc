// tandem-engine: the per-node data-plane daemon. Hosts the replicas stored
// under --data-dir (served over the data protocol on --listen), the volume
// targets attached on this node (exported over NBD unix sockets in --nbd-dir),
// and the gRPC management API (replica-engine/proto/engine.proto) on
// --grpc-listen.
//
//   tandem-engine --data-dir=/var/lib/tandem --listen=127.0.0.1:9500
//                 --grpc-listen=127.0.0.1:9600 --create-replica=vol-1:1G
//
// Replicas found under --data-dir at start are loaded and served again.
// --request-timeout-ms, --rebuild-rate and --reconnect-interval-ms are the
// defaults of targets whose CreateTarget request leaves those fields 0.
// A bad flag or flag value (ports are plain decimal: --listen=HOST:9k is
// refused; --create-replica follows CreateReplica's size rules) exits 2
// before anything is opened; a failure to start exits 1.
//
// Secure defaults (docs/security.md): without --auth-token, --listen must be
// loopback; without --mgmt-token, --grpc-listen must be loopback or a unix
// socket (created 0600); else exit 2, unless --insecure-bind. A missing token
// is logged as one "WARNING: unprotected: ..." line at start. CreateReplica's
// data_path must be under --data-dir or an --allowed-device; CreateTarget's
// nbd_tcp_address must be loopback unless --allow-remote-nbd.
//
// SIGTERM/SIGINT, in this order: stop the gRPC server (running calls get a
// short grace period), destroy every target (flushing it), stop the replica
// server (in-flight I/O finishes), flush and mark every replica cleanly shut
// down; exit 0.

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/file_util.h"
#include "common/flags.h"
#include "common/grpc/endpoint.h"
#include "common/grpc/grpc_server.h"
#include "common/logging.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/replica/replica_manager.h"
#include "replica-engine/server/replica_server.h"
#include "replica-engine/service/engine_flags.h"
#include "replica-engine/service/engine_service.h"
#include "replica-engine/service/secure_defaults.h"
#include "replica-engine/target/target_manager.h"

namespace {

constexpr const char* kTag = "engine";
// Management calls still running at shutdown get this long to finish.
constexpr std::chrono::milliseconds kGrpcShutdownGrace{2000};
// The replica server's buffer pool splits its bytes evenly over nine size
// classes (4 KiB .. 1 MiB); below 9 MiB the 1 MiB class is empty and every
// 1 MiB request (a rebuild window, a large NBD write) waits forever. 16 MiB
// leaves room for a few.
constexpr uint64_t kMinBufferPool = 16ull << 20;

// "VOLUME_ID:SIZE[:REPLICA_ID]"
tandem::Status ParseReplicaSpec(const std::string& spec, tandem::replica::ReplicaConfig* cfg) {
  size_t c1 = spec.find(':');
  if (c1 == std::string::npos) {
    return tandem::Status::InvalidArgument("--create-replica must be VOLUME_ID:SIZE[:REPLICA_ID]");
  }
  cfg->volume_id = spec.substr(0, c1);
  std::string rest = spec.substr(c1 + 1);
  size_t c2 = rest.find(':');
  std::string size = rest.substr(0, c2);
  cfg->replica_id = c2 == std::string::npos ? cfg->volume_id + "-r" : rest.substr(c2 + 1);
  return tandem::ParseSize(size, &cfg->size).WithContext("--create-replica size");
}

std::string Hostname() {
  char name[HOST_NAME_MAX + 1] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "localhost";
  return name;
}

// Starts the replica server, the target manager and the management API, waits
// for SIGTERM/SIGINT, then stops them in order: gRPC (no new calls can create
// anything), targets (they are clients of replica servers, ours among them:
// flush them while the replicas can still answer), the replica server. A
// startup error stops whatever had started, in the same order, and is
// returned.
tandem::Status Serve(const tandem::Flags& flags, const tandem::server::ServerOptions& opts,
                     tandem::service::EngineServiceOptions service_opts, sigset_t* sigs,
                     tandem::replica::ReplicaManager* manager,
                     tandem::backend::StorageBackend* backend) {
  tandem::server::ReplicaServer server(manager, backend, opts);
  TANDEM_RETURN_IF_ERROR(server.Start());
  service_opts.data_address = opts.listen_address + ":" + std::to_string(server.port());
  service_opts.backend = backend->Name();
  std::printf("listening on %s\n", service_opts.data_address.c_str());
  std::fflush(stdout);
  if (std::string pf = flags.Get("port-file"); !pf.empty()) {
    TANDEM_RETURN_IF_ERROR(tandem::WriteFileAtomically(pf, std::to_string(server.port()) + "\n"));
  }

  const std::string nbd_dir =
      flags.Get("nbd-dir").empty() ? flags.Get("data-dir") + "/nbd" : flags.Get("nbd-dir");
  tandem::target::TargetManager targets(nbd_dir);
  tandem::Status st = targets.Start();
  tandem::service::EngineService service(manager, &server, &targets, service_opts);
  std::unique_ptr<tandem::rpc::GrpcServer> mgmt;
  if (st.ok()) {
    tandem::rpc::GrpcServerOptions grpc_opts;
    grpc_opts.endpoint = flags.Get("grpc-listen");
    grpc_opts.services = {&service};
    grpc_opts.log_tag = "engine_api";
    // Successful calls at debug: `tandemctl target watch` and node plugins
    // poll GetTarget; the service logs every change it makes itself, and
    // failed calls are still logged at info.
    grpc_opts.ok_level = tandem::LogLevel::kDebug;
    auto started = tandem::rpc::GrpcServer::Start(grpc_opts);
    if (started.ok()) {
      mgmt = std::move(*started);
    } else {
      st = started.status();
    }
  }
  if (st.ok()) {
    TLOG_INFO(kTag, "node %s: management API on %s (port %u), NBD sockets in %s",
              service_opts.node_id.c_str(), flags.Get("grpc-listen").c_str(), mgmt->port(),
              nbd_dir.c_str());
    const std::string grpc_address =
        mgmt->port() == 0 ? flags.Get("grpc-listen")
                          : mgmt->endpoint().host + ":" + std::to_string(mgmt->port());
    if (std::string warning =
            tandem::service::UnprotectedWarning(!opts.auth_token.empty(), service_opts.data_address,
                                                !service_opts.mgmt_token.empty(), grpc_address);
        !warning.empty()) {
      TLOG_WARN(kTag, "%s", warning.c_str());
    }
    if (std::string pf = flags.Get("grpc-port-file"); !pf.empty()) {
      st = tandem::WriteFileAtomically(pf, std::to_string(mgmt->port()) + "\n");
    }
  }
  if (st.ok()) {
    int sig = 0;
    sigwait(sigs, &sig);
    TLOG_INFO(kTag, "signal %d: shutting down", sig);
  }
  if (mgmt) mgmt->Shutdown(kGrpcShutdownGrace);
  targets.Shutdown();
  server.Stop();
  return st;
}

// A failure at run time: exit 1.
int Fail(const tandem::Status& st) {
  TLOG_ERROR(kTag, "%s", st.ToString().c_str());
  return 1;
}

// A bad flag value: exit 2, like an unknown flag.
int UsageFail(const tandem::Status& st) {
  std::fprintf(stderr, "%s\n(see tandem-engine --help)\n", st.ToString().c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  tandem::Flags flags;
  flags.Define("data-dir", "/var/lib/tandem", "directory holding this node's replicas");
  flags.Define("listen", "127.0.0.1:9500", "data protocol address HOST:PORT (port 0: any)");
  flags.Define("backend", "auto", "storage backend: auto, io_uring or libaio");
  flags.Define("auth-token", "", "token every target must present (empty: none)");
  flags.Define("create-replica", "", "VOLUME_ID:SIZE[:REPLICA_ID] to create at start (repeatable)");
  flags.Define("busy-poll-us", "0", "poll this long before sleeping (latency vs CPU)");
  flags.Define("cpu", "-1", "pin the I/O thread to this CPU");
  flags.Define("buffer-pool", "128M", "bytes of aligned I/O buffers (at least 16M)");
  flags.Define("port-file", "", "write the bound data port here once listening");
  flags.Define("grpc-listen", "127.0.0.1:9600",
               "management API endpoint HOST:PORT (port 0: any), tcp://HOST:PORT, "
               "unix:/path or unix:///path");
  flags.Define("grpc-port-file", "",
               "write the bound gRPC port here once listening (0 for a unix socket)");
  flags.Define("node-id", "", "this node's id (default: the hostname)");
  flags.Define("nbd-dir", "",
               "directory of the targets' NBD unix sockets (default: <data-dir>/nbd)");
  flags.Define("request-timeout-ms", "5000", "default per-request replica timeout of targets");
  flags.Define("rebuild-rate", "0",
               "default rebuild copy rate limit of targets, bytes/s (K/M/G suffixes; 0: "
               "unlimited, else at least 1M)");
  flags.Define("reconnect-interval-ms", "1000",
               "targets reconnect and rebuild FAULTED/STALE replicas this often (0: only on "
               "request, else 100..3600000)");
  flags.Define("mgmt-token", "",
               "when set, every gRPC call needs metadata 'authorization: Bearer <token>'");
  flags.Define("auth-token-file", "",
               "read --auth-token from this file (not visible in ps; trailing newline dropped)");
  flags.Define("mgmt-token-file", "",
               "read --mgmt-token from this file (not visible in ps; trailing newline dropped)");
  flags.Define("insecure-bind", "false",
               "allow --listen without --auth-token and --grpc-listen without --mgmt-token on a "
               "non-loopback address (anyone who reaches them has full access)");
  flags.Define("allowed-device", "",
               "a block device (or file) outside --data-dir that CreateReplica's data_path may "
               "name (repeatable; symlinks are resolved)");
  flags.Define("allow-remote-nbd", "false",
               "let CreateTarget export NBD over TCP on a non-loopback nbd_tcp_address (NBD has "
               "no authentication)");
  tandem::Status st = flags.Parse(argc, argv);
  if (!st.ok() || flags.help_requested()) {
    std::fprintf(stderr, "%s%s\n", st.ok() ? "" : (st.ToString() + "\n").c_str(),
                 flags.Usage("tandem-engine").c_str());
    return st.ok() ? 0 : 2;
  }

  // Signals are taken synchronously by sigwait on the main thread, so the
  // shutdown runs as normal code, not inside a handler. Blocked before any
  // thread starts, so every thread (gRPC's too) inherits the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Bad flag values exit 2 (usage), before anything is opened.
  tandem::server::ServerOptions opts;
  st = tandem::ParseHostPort("--listen", flags.Get("listen"), /*allow_zero_port=*/true,
                             &opts.listen_address, &opts.port);
  if (!st.ok()) return UsageFail(st);
  std::string mgmt_token;
  for (auto [flag, token] : {std::pair<std::string, std::string*>{"auth-token", &opts.auth_token},
                             {"mgmt-token", &mgmt_token}}) {
    *token = flags.Get(flag);
    if (const std::string file = flags.Get(flag + "-file"); !file.empty()) {
      if (!token->empty()) {
        return UsageFail(tandem::Status::InvalidArgument("--" + flag + " and --" + flag +
                                                         "-file are exclusive"));
      }
      if (!(st = tandem::ReadSecretFile("--" + flag + "-file", file, token)).ok()) {
        return UsageFail(st);
      }
    }
  }
  // Secure defaults (docs/security.md): without its token, a port binds
  // loopback (or a unix socket) unless --insecure-bind.
  const bool insecure_bind = flags.GetBool("insecure-bind");
  st = tandem::service::CheckBindAddress("--listen", flags.Get("listen"), !opts.auth_token.empty(),
                                         "--auth-token", insecure_bind);
  if (!st.ok()) return UsageFail(st);
  auto grpc_endpoint = tandem::rpc::ParseEndpoint(flags.Get("grpc-listen"));
  if (!grpc_endpoint.ok()) return UsageFail(grpc_endpoint.status().WithContext("--grpc-listen"));
  st = tandem::service::CheckBindAddress("--grpc-listen", grpc_endpoint->GrpcAddress(),
                                         !mgmt_token.empty(), "--mgmt-token", insecure_bind);
  if (!st.ok()) return UsageFail(st);
  uint64_t v = 0;
  if (!(st = flags.GetUint("busy-poll-us", &v)).ok()) return UsageFail(st);
  opts.busy_poll_us = static_cast<uint32_t>(v);
  if (!(st = flags.GetUint("buffer-pool", &v, true)).ok()) return UsageFail(st);
  if (v < kMinBufferPool) {
    return UsageFail(tandem::Status::InvalidArgument("--buffer-pool must be at least 16M"));
  }
  opts.buffer_pool_bytes = v;
  if (!(st =
            tandem::service::ParseCpu(flags.Get("cpu"), ::sysconf(_SC_NPROCESSORS_CONF), &opts.cpu))
           .ok()) {
    return UsageFail(st);
  }
  if (!(st = flags.GetUint("request-timeout-ms", &v)).ok()) return UsageFail(st);
  if (v == 0 || v > UINT32_MAX) {
    return UsageFail(tandem::Status::InvalidArgument("--request-timeout-ms must be in 1..2^32-1"));
  }
  const std::string data_dir = flags.Get("data-dir");
  tandem::service::EngineServiceOptions service_opts;
  service_opts.node_id = flags.Get("node-id").empty() ? Hostname() : flags.Get("node-id");
  service_opts.target_defaults.request_timeout_ms = static_cast<uint32_t>(v);
  if (!(st = flags.GetUint("rebuild-rate", &v, /*sizes=*/true)).ok()) return UsageFail(st);
  if (!(st = tandem::service::ValidateRebuildRate("--rebuild-rate", v)).ok()) return UsageFail(st);
  service_opts.target_defaults.rebuild_rate_bytes_per_sec = v;
  if (!(st = flags.GetUint("reconnect-interval-ms", &v)).ok()) return UsageFail(st);
  if (v != 0 && (v < tandem::service::kMinReconnectIntervalMs ||
                 v > tandem::service::kMaxReconnectIntervalMs)) {
    return UsageFail(tandem::Status::InvalidArgument(
        "--reconnect-interval-ms must be 0 or in " +
        std::to_string(tandem::service::kMinReconnectIntervalMs) + ".." +
        std::to_string(tandem::service::kMaxReconnectIntervalMs)));
  }
  service_opts.target_defaults.reconnect_interval_ms = static_cast<uint32_t>(v);
  service_opts.mgmt_token = mgmt_token;
  service_opts.data_dir = data_dir;
  service_opts.allowed_devices = flags.GetAll("allowed-device");
  service_opts.allow_remote_nbd = flags.GetBool("allow-remote-nbd");
  // The same size rules as CreateReplica (block size 4096, a bounded dirty
  // map); the storage is checked once the data dir exists, below.
  std::vector<tandem::replica::ReplicaConfig> create;
  for (const std::string& spec : flags.GetAll("create-replica")) {
    tandem::replica::ReplicaConfig cfg;
    if (!(st = ParseReplicaSpec(spec, &cfg)).ok()) return UsageFail(st);
    if (!(st = tandem::service::ValidateReplicaSize(cfg)).ok()) {
      return UsageFail(st.WithContext("--create-replica=" + spec));
    }
    create.push_back(std::move(cfg));
  }

  auto backend = tandem::backend::BackendFactory::Create(flags.Get("backend"));
  if (!backend.ok()) return Fail(backend.status());
  tandem::replica::ReplicaManager manager(backend->get(), data_dir);
  st = manager.LoadAll();
  if (!st.ok()) TLOG_WARN(kTag, "%s", st.ToString().c_str());
  for (const tandem::replica::ReplicaConfig& cfg : create) {
    st = tandem::service::CheckReplicaCapacity(cfg, data_dir);
    if (st.ok()) st = manager.Create(cfg).status();
    if (!st.ok()) {
      (void)manager.CloseAll();  // see below
      return Fail(st);
    }
  }

  // From here on the replicas are open (marked unclean on disk): every exit
  // path goes through CloseAll, so a failed start (a port in use) does not
  // leave them looking crashed.
  st = Serve(flags, opts, service_opts, &sigs, &manager, backend->get());
  tandem::Status closed = manager.CloseAll();
  if (!st.ok()) return Fail(st);
  if (!closed.ok()) return Fail(closed);
  TLOG_INFO(kTag, "clean shutdown");
  return 0;
}
