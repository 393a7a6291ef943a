// tandem-node: the CSI node plugin. Serves CSI's Node and Identity services on
// --endpoint for kubelet; attaches volumes through the tandem-engine on this
// node (--engine), which hosts each volume's target and its file export.
//
//   tandem-node --endpoint=unix:///var/lib/kubelet/plugins/tandem.csi.io/csi.sock
//               --node-id=node-a --engine=unix:/run/tandem/engine.sock
//
// Restarting tandem-node never interrupts a volume's I/O: the engine owns the
// export, the kernel owns the loop device and the mounts; the state directory
// tells a restarted tandem-node what it staged.

#include <signal.h>

#include <cstdio>

#include "common/flags.h"
#include "common/grpc/grpc_server.h"
#include "common/id.h"
#include "common/logging.h"
#include "csi/identity_service.h"
#include "node-plugin/attachments.h"
#include "node-plugin/engine_volume_host.h"
#include "node-plugin/loop_device.h"
#include "node-plugin/node_service.h"
#include "node-plugin/registration.h"

namespace {

constexpr const char* kTag = "tandem-node";

void DefineFlags(tandem::Flags* f) {
  f->Define("endpoint", "unix:///var/lib/kubelet/plugins/tandem.csi.io/csi.sock",
            "CSI endpoint kubelet calls (unix:///path or tcp://host:port)");
  f->Define("node-id", "", "this node's id, as the controller knows it (required)");
  f->Define("engine", "unix:/run/tandem/engine.sock", "the local tandem-engine's management API");
  f->Define("engine-token-file", "", "file holding the engine's management token");
  f->Define("node-address", "", "this node's data address (IPv4): replicas there are read first");
  f->Define("state-dir", "/var/lib/tandem-node", "where tandem-node records what it staged (0700)");
  f->Define("zone", "", "topology zone reported in NodeGetInfo (topology.tandem.csi.io/zone)");
  f->Define("max-volumes", "0", "max_volumes_per_node reported to the scheduler (0: no limit)");
  f->Define("controller", "",
            "the controller's Registration endpoint: tandem-node registers there and asks it "
            "for each volume's current replica set at NodeStage; empty: neither (targets are "
            "built from kubelet's publish_context, stale after a replica change)");
  f->Define("engine-advertise", "",
            "the engine's management address as the controller reaches it "
            "(default: --engine)");
}

// What a restarted tandem-node finds: every staged volume should still have
// its loop device over the engine's export. Reported, not repaired: kubelet
// re-runs NodeStage for volumes it still needs, and that repairs idempotently.
void ReportAdopted(tandem::node::NodeState& state) {
  auto all = state.List();
  if (!all.ok()) {
    TLOG_WARN(kTag, "reading the state dir: %s", all.status().ToString().c_str());
    return;
  }
  for (const auto& v : *all) {
    auto loop = v.export_path.empty()
                    ? tandem::Result<std::optional<std::string>>(std::optional<std::string>())
                    : tandem::node::FindLoopByBackingFile(v.export_path);
    bool attached = loop.ok() && loop->has_value();
    TLOG_INFO(
        kTag, "staged volume %s at %s: %s", v.volume_id.c_str(), v.staging_path.c_str(),
        attached ? ("attached as " + **loop).c_str() : "not attached (NodeStage will repair it)");
  }
}

}  // namespace

int main(int argc, char** argv) {
  tandem::Flags flags;
  DefineFlags(&flags);
  tandem::Status st = flags.Parse(argc, argv);
  if (st.ok() && !flags.help_requested() && flags.Get("node-id").empty()) {
    st = tandem::Status::InvalidArgument("--node-id is required");
  }
  if (st.ok() && !flags.help_requested())
    st = tandem::ValidateId("--node-id", flags.Get("node-id"));
  uint64_t max_volumes = 0;
  if (st.ok()) st = flags.GetUint("max-volumes", &max_volumes);
  std::string engine_token;
  if (st.ok() && !flags.Get("engine-token-file").empty()) {
    st = tandem::ReadSecretFile("--engine-token-file", flags.Get("engine-token-file"),
                                &engine_token);
  }
  if (!st.ok() || flags.help_requested()) {
    std::fprintf(stderr, "%s%s\n", st.ok() ? "" : (st.ToString() + "\n").c_str(),
                 flags.Usage("tandem-node").c_str());
    return st.ok() ? 0 : 2;
  }

  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto state = tandem::node::NodeState::Open(flags.Get("state-dir"));
  if (!state.ok()) {
    TLOG_ERROR(kTag, "%s", state.status().ToString().c_str());
    return 1;
  }
  ReportAdopted(*state);
  tandem::api::EngineClient engine(flags.Get("engine"), engine_token);
  tandem::node::EngineVolumeHost host(&engine, flags.Get("node-address"));
  tandem::node::NodeServiceOptions options;
  options.node_id = flags.Get("node-id");
  options.zone = flags.Get("zone");
  options.max_volumes_per_node = static_cast<int64_t>(max_volumes);
  std::unique_ptr<tandem::node::ControllerAttachments> attachments;
  if (!flags.Get("controller").empty()) {
    attachments = std::make_unique<tandem::node::ControllerAttachments>(
        flags.Get("controller"), options.node_id, std::chrono::seconds(5));
  } else {
    TLOG_WARN(kTag,
              "no --controller: NodeStage builds targets from kubelet's publish_context, "
              "which a later ModifyVolume `replicas` or replica replacement leaves stale");
  }
  tandem::node::NodeService node(options, &host, &*state, attachments.get());
  tandem::csi::IdentityOptions identity_options;
  identity_options.vendor_version = TANDEM_VERSION;
  identity_options.capabilities = {tandem::csi::IdentityService::ServiceCapability(
      ::csi::v1::PluginCapability::Service::VOLUME_ACCESSIBILITY_CONSTRAINTS)};
  tandem::csi::IdentityService identity(identity_options);

  tandem::rpc::GrpcServerOptions grpc_opts;
  grpc_opts.endpoint = flags.Get("endpoint");
  grpc_opts.services = {&node, &identity};
  grpc_opts.log_tag = "csi_node";
  auto server = tandem::rpc::GrpcServer::Start(grpc_opts);
  if (!server.ok()) {
    TLOG_ERROR(kTag, "%s", server.status().ToString().c_str());
    return 1;
  }
  TLOG_INFO(kTag, "node %s: CSI on %s, engine %s", options.node_id.c_str(),
            flags.Get("endpoint").c_str(), flags.Get("engine").c_str());
  std::unique_ptr<tandem::node::Registrar> registrar;
  if (!flags.Get("controller").empty()) {
    tandem::node::RegistrationInfo reg;
    reg.controller_endpoint = flags.Get("controller");
    reg.node_id = options.node_id;
    reg.engine_address =
        flags.Get("engine-advertise").empty() ? flags.Get("engine") : flags.Get("engine-advertise");
    reg.topology[tandem::node::kTopologyNodeKey] = options.node_id;
    if (!options.zone.empty()) reg.topology[tandem::node::kTopologyZoneKey] = options.zone;
    registrar = std::make_unique<tandem::node::Registrar>(reg, std::chrono::seconds(2));
  }
  int sig = 0;
  sigwait(&sigs, &sig);
  if (registrar) registrar->Stop();
  TLOG_INFO(kTag, "signal %d: shutting down (volumes stay attached)", sig);
  (*server)->Shutdown(std::chrono::seconds(5));
  return 0;
}
