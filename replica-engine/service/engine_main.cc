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
#include "common/grpc/grpc_server.h"
#include "common/logging.h"
#include "replica-engine/attach/target_manager.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/local/local_replica_channel.h"
#include "replica-engine/replica/replica_manager.h"
#include "replica-engine/server/replica_server.h"
#include "replica-engine/service/controller_authority.h"
#include "replica-engine/service/engine_flags.h"
#include "replica-engine/service/engine_identity.h"
#include "replica-engine/service/engine_service.h"
#include "replica-engine/service/secure_defaults.h"

namespace {

constexpr const char* kTag = "engine";
// Management calls still running at shutdown get this long to finish.
constexpr std::chrono::milliseconds kGrpcShutdownGrace{2000};

// Starts the replica server, the target manager and the management API, waits
// for SIGTERM/SIGINT, then stops them in order: gRPC (no new calls can create
// anything), targets (they are clients of replica servers, ours among them:
// flush them while the replicas can still answer), the replica server. A
// startup error stops whatever had started, in the same order, and is
// returned.
// The engine's identity (service/engine_identity.h) for its targets' owner ids.
tandem::Status GiveIdentity(const std::string& data_dir, tandem::attach::TargetManager* targets) {
  tandem::Result<uint64_t> identity = tandem::service::LoadOrCreateEngineIdentity(data_dir);
  if (!identity.ok()) return identity.status();
  targets->set_identity(*identity);
  return tandem::Status::Ok();
}

tandem::Status Serve(const tandem::service::EngineConfig& config, sigset_t* sigs,
                     tandem::replica::ReplicaManager* manager,
                     tandem::backend::StorageBackend* backend) {
  const tandem::server::ServerOptions& opts = config.server;
  tandem::service::EngineServiceOptions service_opts = config.service;
  tandem::server::ReplicaServer server(manager, backend, opts);
  TANDEM_RETURN_IF_ERROR(server.Start());
  service_opts.data_address = opts.listen_address + ":" + std::to_string(server.port());
  service_opts.backend = backend->Name();
  std::printf("listening on %s\n", service_opts.data_address.c_str());
  std::fflush(stdout);
  if (const std::string& pf = config.port_file; !pf.empty()) {
    TANDEM_RETURN_IF_ERROR(tandem::WriteFileAtomically(pf, std::to_string(server.port()) + "\n"));
  }

  const std::string& nbd_dir = config.nbd_dir;
  // --target-loop=server: loop 0 of the targets is the replica server's (and
  // so the targets stop before it: targets.Shutdown() below runs before
  // server.Stop()); --target-threads adds loops of the manager's own.
  tandem::attach::TargetManager targets(
      nbd_dir, config.targets_on_server_loop ? server.loop() : nullptr, config.target_threads);
  targets.set_nbd_write_spin_us(config.nbd_write_spin_us);
  if (config.targets_on_server_loop && config.local_replica) {
    // A replica endpoint naming this engine's data address, for a volume
    // this engine holds, is served in-process to a target on the server's
    // loop (local::LocalReplicaChannel); MaybeLocalChannel returns null for a
    // target on any other loop, which then reaches it over TCP like any
    // other replica.
    targets.set_channel_factory([&server, host = opts.listen_address, port = server.port()](
                                    tandem::EventLoop* loop, const tandem::client::ClientOptions& o,
                                    tandem::client::ReplicaChannel::Listener* l) {
      return tandem::local::MaybeLocalChannel(&server, host, port, loop, o, l);
    });
    TLOG_INFO(kTag, "this engine's own replicas are served in-process to targets on loop 0");
  }
  tandem::Status st = targets.Start();
  if (st.ok()) st = GiveIdentity(config.service.data_dir, &targets);
  if (st.ok()) {
    TLOG_INFO(kTag, "targets on %zu loop(s); loop 0: %s", targets.loop_count(),
              config.targets_on_server_loop ? "the replica server's" : "a thread of its own");
  }
  // Declared after `targets`, so destroyed first (their answers go to its
  // loops): one authority per target loop, sharing one controller connection.
  std::vector<std::unique_ptr<tandem::service::ControllerAuthority>> authorities;
  if (!config.controller.empty()) {
    for (size_t i = 0; i < targets.loop_count(); ++i) {
      authorities.push_back(i == 0 ? std::make_unique<tandem::service::ControllerAuthority>(
                                         config.controller, "", targets.loop(0))
                                   : std::make_unique<tandem::service::ControllerAuthority>(
                                         *authorities[0], targets.loop(i)));
      targets.set_authority(i, authorities.back().get());
    }
    TLOG_INFO(kTag, "membership authority: tandem-controller at %s", config.controller.c_str());
  }
  tandem::service::EngineService service(manager, &server, &targets, service_opts);
  std::unique_ptr<tandem::rpc::GrpcServer> mgmt;
  if (st.ok()) {
    tandem::rpc::GrpcServerOptions grpc_opts;
    grpc_opts.endpoint = config.grpc_listen;
    grpc_opts.tls = config.grpc_tls;
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
              service_opts.node_id.c_str(), config.grpc_listen.c_str(), mgmt->port(),
              nbd_dir.c_str());
    const std::string grpc_address =
        mgmt->port() == 0 ? config.grpc_listen
                          : mgmt->endpoint().host + ":" + std::to_string(mgmt->port());
    if (std::string warning =
            tandem::service::UnprotectedWarning(!opts.auth_token.empty(), service_opts.data_address,
                                                !service_opts.mgmt_token.empty(), grpc_address);
        !warning.empty()) {
      TLOG_WARN(kTag, "%s", warning.c_str());
    }
    if (const std::string& pf = config.grpc_port_file; !pf.empty()) {
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
  tandem::service::DefineEngineFlags(&flags);
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
  tandem::service::EngineConfig config;
  st = tandem::service::ParseEngineConfig(flags, ::sysconf(_SC_NPROCESSORS_CONF), &config);
  if (!st.ok()) return UsageFail(st);

  auto backend = tandem::backend::BackendFactory::Create(config.backend, config.backend_options);
  if (!backend.ok()) return Fail(backend.status());
  const std::string& data_dir = config.service.data_dir;
  tandem::replica::ReplicaManager manager(backend->get(), data_dir);
  st = manager.LoadAll();
  if (!st.ok()) TLOG_WARN(kTag, "%s", st.ToString().c_str());
  for (const tandem::replica::ReplicaConfig& cfg : config.create) {
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
  st = Serve(config, &sigs, &manager, backend->get());
  tandem::Status closed = manager.CloseAll();
  if (!st.ok()) return Fail(st);
  if (!closed.ok()) return Fail(closed);
  TLOG_INFO(kTag, "clean shutdown");
  return 0;
}
