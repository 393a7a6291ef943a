#include "tests/harness/local_cluster.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/address.h"
#include "common/mount_info.h"

namespace tandem::controller::testing {

namespace {

std::string Env(const char* name, const char* fallback) {
  const char* v = getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

std::shared_ptr<grpc::Channel> Channel(const std::string& socket) {
  return grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials());
}

// An engine killed with -9 leaves its FUSE exports mounted with no daemon
// (every access ENOTCONN), and remove_all then stops at them: detach every
// mount under `root`, deepest first.
void DetachMountsUnder(const std::string& root) {
  auto all = ReadMountInfo();
  if (!all.ok()) return;
  std::vector<std::string> mounts;
  for (const MountInfoEntry& m : *all) {
    if (m.mount_point.rfind(root + "/", 0) == 0) mounts.push_back(m.mount_point);
  }
  std::sort(mounts.begin(), mounts.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const std::string& m : mounts) umount2(m.c_str(), MNT_DETACH);
}

}  // namespace

LocalCluster::LocalCluster()
    : engine_bin_(Env("TANDEM_ENGINE", TANDEM_TEST_ENGINE_BIN)),
      controller_bin_(Env("TANDEM_CONTROLLER", TANDEM_TEST_CONTROLLER_BIN)),
      controller_(std::make_unique<Process>()) {
  char tmpl[] = "/var/tmp/tandem-ctl.XXXXXX";
  char* dir = mkdtemp(tmpl);
  root_ = dir != nullptr ? dir : "/var/tmp/tandem-ctl.failed";
  store_flag_ = "--data-dir=" + root_ + "/controller";
}

LocalCluster::~LocalCluster() {
  controller_->Kill();
  for (auto& e : engines_) {
    if (e.process) e.process->Kill();
  }
  if (getenv("TANDEM_KEEP_RUN_DIR") == nullptr) {
    DetachMountsUnder(root_);
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
}

Status LocalCluster::StartEngines(int n) {
  for (int i = 0; i < n; ++i) {
    EngineNode e;
    e.name = "e" + std::to_string(i);
    e.dir = root_ + "/" + e.name;
    std::filesystem::create_directories(e.dir + "/data");
    std::filesystem::create_directories(e.dir + "/nbd");
    engines_.push_back(std::move(e));
  }
  for (auto& e : engines_) TANDEM_RETURN_IF_ERROR(StartEngine(&e));
  return Status::Ok();
}

Status LocalCluster::StartEngine(EngineNode* e) {
  std::string port_file = e->dir + "/port", grpc_port_file = e->dir + "/grpc_port";
  unlink(port_file.c_str());
  unlink(grpc_port_file.c_str());
  e->process = std::make_unique<Process>();
  TANDEM_RETURN_IF_ERROR(e->process->Start(
      {engine_bin_, "--data-dir=" + e->dir + "/data", "--node-id=" + e->name,
       "--listen=127.0.0.1:" + std::to_string(e->data_port), "--port-file=" + port_file,
       "--grpc-listen=127.0.0.1:" + std::to_string(e->grpc_port),
       "--grpc-port-file=" + grpc_port_file, "--nbd-dir=" + e->dir + "/nbd",
       // The membership authority: the controller serves it on its socket.
       "--controller=" + csi_endpoint()},
      e->dir + "/engine.log"));
  bool up = WaitFor(
      [&] { return !ReadSmallFile(port_file).empty() && !ReadSmallFile(grpc_port_file).empty(); },
      std::chrono::seconds(20));
  if (!up) return Status::Unavailable("engine " + e->name + " did not start (see engine.log)");
  e->data_port = static_cast<uint16_t>(std::stoi(ReadSmallFile(port_file)));
  e->grpc_port = static_cast<uint16_t>(std::stoi(ReadSmallFile(grpc_port_file)));
  return Status::Ok();
}

std::vector<std::string> LocalCluster::ControllerArgv(const std::string& socket_path,
                                                      const std::vector<std::string>& extra) const {
  std::vector<std::string> argv = {controller_bin_, "--endpoint=unix://" + socket_path, store_flag_,
                                   "--heartbeat-interval-ms=200", "--node-grace-ms=3000"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

Status LocalCluster::StartController(const std::vector<std::string>& extra_flags) {
  controller_extra_ = extra_flags;
  controller_->Kill();
  TANDEM_RETURN_IF_ERROR(controller_->Start(ControllerArgv(root_ + "/csi.sock", controller_extra_),
                                            root_ + "/controller.log"));
  bool ready = WaitFor(
      [&] {
        auto stub = Identity();
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
        ::csi::v1::ProbeRequest req;
        ::csi::v1::ProbeResponse resp;
        return stub->Probe(&ctx, req, &resp).ok() && resp.has_ready() && resp.ready().value();
      },
      std::chrono::seconds(20));
  if (!ready) return Status::Unavailable("tandem-controller not ready (see controller.log)");
  return Status::Ok();
}

Status LocalCluster::StartSecondController(Process* process, const std::string& socket_path,
                                           const std::string& log_name,
                                           const std::vector<std::string>& extra_flags) {
  return process->Start(ControllerArgv(socket_path, extra_flags), root_ + "/" + log_name);
}

void LocalCluster::KillController() { controller_->Kill(); }

Status LocalCluster::RegisterEngines() {
  auto stub = Registration();
  for (size_t i = 0; i < engines_.size(); ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ::tandem::controller::v1::RegisterNodeRequest req;
    req.set_node_id(engines_[i].name);
    req.set_engine_address(engines_[i].grpc_address());
    (*req.mutable_topology())["topology.tandem.csi.io/zone"] = "z" + std::to_string(i);
    ::tandem::controller::v1::RegisterNodeResponse resp;
    grpc::Status st = stub->RegisterNode(&ctx, req, &resp);
    if (!st.ok()) {
      return Status(static_cast<StatusCode>(st.error_code()),
                    "RegisterNode: " + st.error_message());
    }
  }
  return Status::Ok();
}

std::unique_ptr<::csi::v1::Identity::Stub> LocalCluster::Identity() {
  return ::csi::v1::Identity::NewStub(Channel(root_ + "/csi.sock"));
}
std::unique_ptr<::csi::v1::Controller::Stub> LocalCluster::Controller() {
  return ::csi::v1::Controller::NewStub(Channel(root_ + "/csi.sock"));
}
std::unique_ptr<::tandem::controller::v1::Registration::Stub> LocalCluster::Registration() {
  return ::tandem::controller::v1::Registration::NewStub(Channel(root_ + "/csi.sock"));
}

engine::v1::CreateTargetRequest TargetRequestFor(const std::string& volume_id,
                                                 const ::tandem::csi::PublishContext& ctx,
                                                 const std::string& local_data_address) {
  engine::v1::CreateTargetRequest req;
  req.set_volume_id(volume_id);
  req.set_epoch(ctx.epoch);
  req.set_size_bytes(ctx.size_bytes);
  req.set_secret(ctx.volume_secret);
  if (ctx.in_sync_generation_id != 0) {
    req.set_in_sync_generation_id(ctx.in_sync_generation_id);
    for (const auto& id : ctx.in_sync_replica_ids) req.add_in_sync_replica_ids(id);
  }
  for (const auto& r : ctx.replicas) {
    std::string host;
    uint16_t port = 0;
    // publish_context was checked by DecodePublishContext: an address that
    // does not parse leaves port 0, which CreateTarget refuses loudly.
    (void)ParseHostPort("replica", r.address, false, &host, &port);
    auto* ep = req.add_replicas();
    ep->set_host(host);
    ep->set_port(port);
    ep->set_local(!local_data_address.empty() && r.address == local_data_address);
  }
  return req;
}

}  // namespace tandem::controller::testing
