#pragma once
// What the controller's end-to-end tests share: a real tandem-controller
// (SQLite) with real tandem-engines registered (tests/harness/local_cluster.h),
// the deadline of their calls and the volume they ask for.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "replica-engine/api/engine_client.h"
#include "tests/harness/local_cluster.h"

namespace tandem::controller::cluster_testing {

namespace csi = ::csi::v1;

inline std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 30) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return ctx;
}

// A single-node-writer block volume: what tandem-node stages.
inline csi::VolumeCapability BlockCap() {
  csi::VolumeCapability cap;
  cap.mutable_block();
  cap.mutable_access_mode()->set_mode(csi::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  return cap;
}

// ControllerModifyVolume to `n` replicas (a grow or a shrink).
inline grpc::Status SetReplicas(csi::Controller::Stub* ctl, const std::string& id, int n,
                                int seconds = 30) {
  csi::ControllerModifyVolumeRequest mod;
  mod.set_volume_id(id);
  (*mod.mutable_mutable_parameters())["replicas"] = std::to_string(n);
  csi::ControllerModifyVolumeResponse resp;
  return ctl->ControllerModifyVolume(Ctx(seconds).get(), mod, &resp);
}

class ClusterTest : public ::testing::Test {
 protected:
  // Volumes CreateVolume makes are `volume_bytes` large.
  explicit ClusterTest(uint64_t volume_bytes = 8 << 20) : volume_bytes_(volume_bytes) {}

  void SetUp() override { StartCluster(); }

  // `engines` engines e0.., registered with a controller started with `flags`.
  void StartCluster(int engines = 3, const std::vector<std::string>& flags = {}) {
    ASSERT_TRUE(cluster_.StartEngines(engines).ok());
    ASSERT_TRUE(cluster_.StartController(flags).ok());
    ASSERT_TRUE(cluster_.RegisterEngines().ok());
    ctl_ = cluster_.Controller();
  }

  std::string CreateVolume(const std::string& name, int replicas = 3) {
    csi::CreateVolumeRequest req;
    req.set_name(name);
    req.mutable_capacity_range()->set_required_bytes(volume_bytes_);
    *req.add_volume_capabilities() = BlockCap();
    (*req.mutable_parameters())["replicas"] = std::to_string(replicas);
    csi::CreateVolumeResponse resp;
    grpc::Status st = ctl_->CreateVolume(Ctx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.volume().volume_id();
  }

  api::EngineClient Engine(int node) {
    return api::EngineClient(cluster_.engines()[node].grpc_address(), "");
  }

  const uint64_t volume_bytes_;
  testing::LocalCluster cluster_;
  std::unique_ptr<csi::Controller::Stub> ctl_;
};

}  // namespace tandem::controller::cluster_testing
