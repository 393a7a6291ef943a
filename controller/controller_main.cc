// tandem-controller: the CSI Identity and Controller services, the node
// registry and the cluster metadata store.
//
//   tandem-controller --endpoint=unix:///csi/csi.sock --data-dir=/var/lib/tandem-controller
//   tandem-controller --endpoint=unix:///csi/csi.sock --etcd-endpoints=10.0.0.1:2379,10.0.0.2:2379
//
// The embedded SQLite store in --data-dir is the default; --etcd-endpoints
// switches to etcd (several controllers then elect one leader; the others
// answer Probe not-ready and every CSI call UNAVAILABLE until they lead).
// Nodes register through tandem.controller.v1.Registration, served on
// --endpoint and on --registration-endpoint (TCP, for tandem-node on other
// machines) when given, or with --register-node=ID=ENGINE[,label=value...].
// The membership authority (tandem.controller.v1.Membership) the engines'
// targets call is served on both endpoints too (tandem-engine --controller).
//
// Exit codes: 2 for a bad flag, 1 for a failure to start; SIGTERM/SIGINT
// stop the servers (running calls get a grace period), resign and exit 0.

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/flags.h"
#include "common/grpc/grpc_server.h"
#include "common/logging.h"
#include "controller/controller_service.h"
#include "controller/engine_directory.h"
#include "controller/membership_service.h"
#include "controller/node_registry.h"
#include "controller/reconciler.h"
#include "controller/records.h"
#include "controller/registration_service.h"
#include "controller/store/metadata_store.h"
#include "csi/identity_service.h"

namespace {

constexpr const char* kTag = "controller";
constexpr std::chrono::milliseconds kShutdownGrace{2000};

using tandem::Status;

// "ID=ENGINE[,key=value...]" -> NodeRecord.
Status ParseNodeSpec(const std::string& spec, tandem::controller::rec::NodeRecord* out) {
  size_t eq = spec.find('=');
  if (eq == std::string::npos || eq == 0) {
    return Status::InvalidArgument("--register-node must be ID=ENGINE_ADDRESS[,label=value...]: " +
                                   spec);
  }
  out->set_node_id(spec.substr(0, eq));
  std::string rest = spec.substr(eq + 1);
  size_t comma = rest.find(',');
  out->set_engine_address(rest.substr(0, comma));
  while (comma != std::string::npos) {
    size_t next = rest.find(',', comma + 1);
    std::string label = rest.substr(comma + 1, next - comma - 1);
    size_t leq = label.find('=');
    if (leq == std::string::npos || leq == 0) {
      return Status::InvalidArgument("--register-node label must be key=value: " + label);
    }
    (*out->mutable_topology())[label.substr(0, leq)] = label.substr(leq + 1);
    comma = next;
  }
  return Status::Ok();
}

// Everything the flags say, checked.
struct ControllerConfig {
  std::string endpoint;
  std::string data_dir;
  std::string etcd;
  std::string registration_endpoint;
  std::string candidate_id;
  std::string engine_token;
  uint64_t heartbeat_ms = 0, grace_ms = 0, engine_timeout_ms = 0, lease_ttl_s = 0;
  uint64_t reconcile_ms = 0, replace_after_ms = 0, max_rebuilds = 0;
  std::vector<tandem::controller::rec::NodeRecord> initial_nodes;
};

void DefineFlags(tandem::Flags* flags) {
  flags->Define("endpoint", "",
                "CSI endpoint: unix:///path/csi.sock or tcp://HOST:PORT (required)");
  flags->Define("data-dir", "", "directory of the embedded SQLite metadata store");
  flags->Define("etcd-endpoints", "",
                "HOST:PORT[,HOST:PORT...] of an etcd v3 cluster (instead of --data-dir)");
  flags->Define("registration-endpoint", "",
                "extra endpoint serving only the node Registration API (e.g. tcp://0.0.0.0:9700)");
  flags->Define("register-node", "",
                "ID=ENGINE_ADDRESS[,label=value...]: register a node at start (repeatable)");
  flags->Define("engine-token-file", "", "file holding the engines' management token");
  flags->Define("heartbeat-interval-ms", "2000", "engine heartbeat (GetEngineInfo) interval");
  flags->Define("node-grace-ms", "10000", "a node whose engine is silent this long is down");
  flags->Define("engine-timeout-ms", "10000", "timeout of each engine call");
  flags->Define("lease-ttl-seconds", "10",
                "etcd leader lease TTL: a dead leader is replaced within about this long");
  flags->Define("reconcile-interval-ms", "5000", "self-healing pass interval");
  flags->Define("replace-after-ms", "60000",
                "a replica whose node has been down this long is replaced on another node");
  flags->Define("max-rebuilds-per-node", "2",
                "replacements started on one node per minute (rebuild admission)");
  flags->Define("candidate-id", "", "this instance's id in the leader election (default host-pid)");
  flags->Define("debug", "false", "log at debug level");
}

// Parses and checks the flags into `cfg`. Returns -1 to go on, else the exit
// code (0 after --help, 2 for a bad flag, with the message printed).
int ParseConfig(int argc, char** argv, ControllerConfig* cfg) {
  tandem::Flags flags;
  DefineFlags(&flags);
  Status st = flags.Parse(argc, argv);
  if (flags.help_requested()) {
    std::fputs(flags.Usage("tandem-controller").c_str(), stdout);
    return 0;
  }
  if (!st.ok()) {
    std::fprintf(stderr, "tandem-controller: %s\n", st.ToString().c_str());
    return 2;
  }
  if (flags.GetBool("debug")) tandem::SetLogLevel(tandem::LogLevel::kDebug);
  cfg->endpoint = flags.Get("endpoint");
  cfg->data_dir = flags.Get("data-dir");
  cfg->etcd = flags.Get("etcd-endpoints");
  cfg->registration_endpoint = flags.Get("registration-endpoint");
  cfg->candidate_id = flags.Get("candidate-id");
  auto usage_error = [](const std::string& msg) {
    std::fprintf(stderr, "tandem-controller: %s (--help lists the flags)\n", msg.c_str());
    return 2;
  };
  if (cfg->endpoint.empty()) return usage_error("--endpoint is required");
  if (cfg->data_dir.empty() == cfg->etcd.empty()) {
    return usage_error("exactly one of --data-dir and --etcd-endpoints is required");
  }
  if (!cfg->data_dir.empty() && cfg->data_dir[0] != '/') {
    return usage_error("--data-dir must be an absolute path");
  }
  for (auto [name, out] : {std::pair{"lease-ttl-seconds", &cfg->lease_ttl_s},
                           std::pair{"reconcile-interval-ms", &cfg->reconcile_ms},
                           std::pair{"replace-after-ms", &cfg->replace_after_ms},
                           std::pair{"max-rebuilds-per-node", &cfg->max_rebuilds},
                           std::pair{"heartbeat-interval-ms", &cfg->heartbeat_ms},
                           std::pair{"node-grace-ms", &cfg->grace_ms},
                           std::pair{"engine-timeout-ms", &cfg->engine_timeout_ms}}) {
    if (Status s = flags.GetUint(name, out); !s.ok() || *out == 0) {
      return usage_error(std::string("--") + name + " must be a positive number");
    }
  }
  for (const auto& spec : flags.GetAll("register-node")) {
    if (spec.empty()) continue;
    tandem::controller::rec::NodeRecord n;
    if (Status s = ParseNodeSpec(spec, &n); !s.ok()) return usage_error(s.message());
    cfg->initial_nodes.push_back(std::move(n));
  }
  if (!flags.Get("engine-token-file").empty()) {
    Status s = tandem::ReadSecretFile("--engine-token-file", flags.Get("engine-token-file"),
                                      &cfg->engine_token);
    if (!s.ok()) return usage_error(s.message());
  }
  return -1;
}

// Leadership: campaign until elected, then load the registry and register
// the --register-node nodes. Keeps campaigning if the leadership is lost
// (etcd lease), so a follower takes over by itself. Returns once `stopping`.
void RunElection(tandem::store::MetadataStore* store, tandem::controller::NodeRegistry* registry,
                 const std::vector<tandem::controller::rec::NodeRecord>& initial_nodes,
                 std::atomic<bool>* loaded, const std::atomic<bool>* stopping) {
  bool led = false;
  while (!stopping->load()) {
    if (store->IsLeader()) {
      if (!led) {
        led = true;
        TLOG_INFO(kTag, "leading (store %s)", std::string(store->Backend()).c_str());
        if (Status s = registry->Load(); !s.ok()) {
          TLOG_ERROR(kTag, "loading the node registry: %s", s.ToString().c_str());
        }
        for (const auto& n : initial_nodes) {
          if (Status s = registry->Register(n); !s.ok()) {
            TLOG_ERROR(kTag, "--register-node %s: %s", n.node_id().c_str(), s.ToString().c_str());
          }
        }
        registry->PollUnseen();
        *loaded = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    if (led) {
      led = false;
      *loaded = false;
      TLOG_WARN(kTag, "lost the leadership");
    }
    Status s = store->Campaign(std::chrono::milliseconds(1000));
    if (!s.ok() && s.code() != tandem::StatusCode::kDeadlineExceeded) {
      TLOG_WARN(kTag, "campaign: %s", s.ToString().c_str());
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
}

// The Identity service; Probe is ready once this instance leads and `loaded`.
std::unique_ptr<tandem::csi::IdentityService> MakeIdentity(tandem::store::MetadataStore* store,
                                                           const std::atomic<bool>* loaded) {
  using PC = ::csi::v1::PluginCapability;
  tandem::csi::IdentityOptions id_opts;
  id_opts.vendor_version = TANDEM_VERSION;
  id_opts.capabilities = {
      tandem::csi::IdentityService::ServiceCapability(PC::Service::CONTROLLER_SERVICE),
      tandem::csi::IdentityService::ServiceCapability(
          PC::Service::VOLUME_ACCESSIBILITY_CONSTRAINTS),
      tandem::csi::IdentityService::ExpansionCapability(PC::VolumeExpansion::ONLINE)};
  id_opts.probe = [store, loaded]() -> Status {
    auto got = store->Get("/tandem/probe");
    if (!got.ok()) return got.status().WithContext("metadata store");
    if (!store->IsLeader()) return Status::Unavailable("not the leader");
    if (!loaded->load()) return Status::Unavailable("loading the node registry");
    return Status::Ok();
  };
  return std::make_unique<tandem::csi::IdentityService>(std::move(id_opts));
}

// Opens the store, wires the services, serves until SIGTERM/SIGINT (blocked
// in `sigs`), then shuts down in order. Returns the exit code.
int Serve(const ControllerConfig& cfg, sigset_t* sigs) {
  tandem::store::StoreOptions store_opts;
  store_opts.candidate_id = cfg.candidate_id;
  store_opts.lease_ttl = std::chrono::seconds(cfg.lease_ttl_s);
  std::string uri = cfg.data_dir.empty() ? "etcd://" + cfg.etcd : "sqlite://" + cfg.data_dir;
  auto opened = tandem::store::OpenStore(uri, store_opts);
  if (!opened.ok()) {
    TLOG_ERROR(kTag, "opening the metadata store %s: %s", uri.c_str(),
               opened.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<tandem::store::MetadataStore> store = std::move(*opened);
  tandem::controller::Records records(store.get());
  tandem::controller::GrpcEngineDirectory engines(cfg.engine_token);
  tandem::controller::NodeRegistryOptions reg_opts;
  reg_opts.heartbeat_interval = std::chrono::milliseconds(cfg.heartbeat_ms);
  reg_opts.grace = std::chrono::milliseconds(cfg.grace_ms);
  tandem::controller::NodeRegistry registry(&records, &engines, reg_opts);
  tandem::controller::ControllerOptions ctl_opts;
  ctl_opts.engine_timeout = std::chrono::milliseconds(cfg.engine_timeout_ms);
  tandem::csi::InFlight inflight;
  tandem::controller::ControllerService controller(&records, &registry, &engines, &inflight,
                                                   ctl_opts);
  tandem::controller::ReconcilerOptions rec_opts;
  rec_opts.interval = std::chrono::milliseconds(cfg.reconcile_ms);
  rec_opts.replace_after = std::chrono::milliseconds(cfg.replace_after_ms);
  rec_opts.max_rebuilds_per_node = static_cast<uint32_t>(cfg.max_rebuilds);
  rec_opts.engine_timeout = std::chrono::milliseconds(cfg.engine_timeout_ms);
  tandem::controller::Reconciler reconciler(&records, &registry, &engines, &inflight, rec_opts);
  tandem::controller::RegistrationService registration(&registry, store.get(), &records, &inflight);
  // The membership authority the engines' targets call (tandem-engine --controller).
  tandem::controller::MembershipService membership(&records);
  // Set once this instance leads and has loaded and polled the nodes.
  std::atomic<bool> loaded{false};
  std::unique_ptr<tandem::csi::IdentityService> identity = MakeIdentity(store.get(), &loaded);

  std::atomic<bool> stopping{false};
  std::thread election(
      [&] { RunElection(store.get(), &registry, cfg.initial_nodes, &loaded, &stopping); });
  registry.Start();
  reconciler.Start();

  tandem::rpc::GrpcServerOptions server_opts;
  server_opts.endpoint = cfg.endpoint;
  server_opts.services = {identity.get(), &controller, &registration, &membership};
  server_opts.log_tag = "csi";
  auto server = tandem::rpc::GrpcServer::Start(server_opts);
  std::unique_ptr<tandem::rpc::GrpcServer> reg_server;
  Status start_status = server.ok() ? Status::Ok() : server.status();
  if (start_status.ok() && !cfg.registration_endpoint.empty()) {
    tandem::rpc::GrpcServerOptions reg_opts2;
    reg_opts2.endpoint = cfg.registration_endpoint;
    reg_opts2.services = {&registration, &membership};
    reg_opts2.log_tag = "registration";
    auto r = tandem::rpc::GrpcServer::Start(reg_opts2);
    if (r.ok()) {
      reg_server = std::move(*r);
    } else {
      start_status = r.status().WithContext("--registration-endpoint");
    }
  }
  int rc = 0;
  if (!start_status.ok()) {
    TLOG_ERROR(kTag, "starting: %s", start_status.ToString().c_str());
    rc = 1;
  } else {
    TLOG_INFO(kTag, "tandem-controller %s serving CSI on %s", TANDEM_VERSION, cfg.endpoint.c_str());
    int sig = 0;
    sigwait(sigs, &sig);
    TLOG_INFO(kTag, "signal %d: shutting down", sig);
  }
  if (reg_server) reg_server->Shutdown(kShutdownGrace);
  if (server.ok()) (*server)->Shutdown(kShutdownGrace);
  reconciler.Stop();
  stopping = true;
  election.join();
  registry.Stop();
  (void)store->Resign();
  return rc;
}

int Run(int argc, char** argv) {
  ControllerConfig cfg;
  if (int rc = ParseConfig(argc, argv, &cfg); rc >= 0) return rc;
  // Signals are taken by sigwait in Serve; block them before any thread starts.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  return Serve(cfg, &sigs);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tandem-controller: %s\n", e.what());
    return 1;
  }
}
