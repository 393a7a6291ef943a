#pragma once
// The fixture of the tests that serve a volume from a live target, as
// tandem-node builds it at NodeStage from publish_context, exported as a FUSE
// file (membership_test.cc, the shrink tests): a real controller and three
// real engines started with --controller (testing_cluster_fixture.h).

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "controller/testing_cluster_fixture.h"
#include "csi/publish_context.h"

namespace tandem::controller::cluster_testing {

using PublishContext = ::tandem::csi::PublishContext;

inline constexpr size_t kBlock = 64 << 10;

// Block `block` as written in round `round`; round 0 is the volume as
// created (zeros).
inline void Fill(std::vector<char>* buf, uint64_t block, uint32_t round) {
  if (round == 0) {
    std::fill(buf->begin(), buf->end(), 0);
    return;
  }
  for (size_t i = 0; i < buf->size(); i += 8) {
    uint64_t v = (block << 32) ^ round ^ (i * 0x9E3779B97F4A7C15ull);
    std::memcpy(buf->data() + i, &v, 8);
  }
}

class FuseTargetTest : public ClusterTest {
 protected:
  using ClusterTest::ClusterTest;

  void SetUp() override {
    if (geteuid() != 0 || access("/dev/fuse", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs root and /dev/fuse (FUSE file export)";
    }
    ClusterTest::SetUp();
  }

  Result<PublishContext> Publish(const std::string& id, int node) {
    csi::ControllerPublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_node_id("e" + std::to_string(node));
    *req.mutable_volume_capability() = BlockCap();
    csi::ControllerPublishVolumeResponse resp;
    grpc::Status st = ctl_->ControllerPublishVolume(Ctx().get(), req, &resp);
    if (!st.ok()) return Status(static_cast<StatusCode>(st.error_code()), st.error_message());
    return ::tandem::csi::DecodePublishContext(resp.publish_context());
  }
  grpc::Status UnpublishOnce(const std::string& id, int node) {
    csi::ControllerUnpublishVolumeRequest req;
    req.set_volume_id(id);
    req.set_node_id("e" + std::to_string(node));
    csi::ControllerUnpublishVolumeResponse resp;
    return ctl_->ControllerUnpublishVolume(Ctx().get(), req, &resp);
  }
  // What tandem-node does at NodeStage: the target from publish_context,
  // exported as a FUSE file.
  Result<engine::v1::Target> Attach(const std::string& id, int node, const PublishContext& ctx) {
    engine::v1::CreateTargetRequest treq =
        testing::TargetRequestFor(id, ctx, cluster_.engines()[node].data_address());
    treq.set_reconnect_interval_ms(200);
    treq.set_request_timeout_ms(2000);
    treq.set_export_kind(engine::v1::EXPORT_KIND_FUSE_FILE);
    return Engine(node).CreateTarget(treq, std::chrono::seconds(30));
  }
};

}  // namespace tandem::controller::cluster_testing
