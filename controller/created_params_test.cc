// What CreateVolume was asked stays the volume's idempotency key after a
// ControllerModifyVolume changed its replica count and rebuild rate: a
// retried CreateVolume is the same volume, ValidateVolumeCapabilities
// confirms the StorageClass's parameters (docs/controller.md). A real
// tandem-controller (SQLite) and three real engines.

#include "controller/testing_cluster_fixture.h"

namespace tandem::controller::cluster_testing {
namespace {

class CreatedParamsTest : public ClusterTest {
 protected:
  // The StorageClass asks for one replica at 2M/s; the VolumeAttributesClass
  // given at creation (mutable_parameters) for two.
  static csi::CreateVolumeRequest Request() {
    csi::CreateVolumeRequest req;
    req.set_name("created-params");
    req.mutable_capacity_range()->set_required_bytes(8 << 20);
    *req.add_volume_capabilities() = BlockCap();
    (*req.mutable_parameters())["replicas"] = "1";
    (*req.mutable_parameters())["rebuildRate"] = "2M";
    (*req.mutable_mutable_parameters())["replicas"] = "2";
    return req;
  }
  grpc::Status Create(const csi::CreateVolumeRequest& req, csi::CreateVolumeResponse* resp) {
    return ctl_->CreateVolume(Ctx().get(), req, resp);
  }
  bool Confirmed(const std::string& id, const std::map<std::string, std::string>& params,
                 std::string* message) {
    csi::ValidateVolumeCapabilitiesRequest req;
    req.set_volume_id(id);
    *req.add_volume_capabilities() = BlockCap();
    for (const auto& [k, v] : params) (*req.mutable_parameters())[k] = v;
    csi::ValidateVolumeCapabilitiesResponse resp;
    grpc::Status st = ctl_->ValidateVolumeCapabilities(Ctx().get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    *message = resp.message();
    return resp.has_confirmed();
  }
};

TEST_F(CreatedParamsTest, ARetriedCreateVolumeStaysIdempotentAfterAModifyVolume) {
  csi::CreateVolumeResponse created;
  grpc::Status st = Create(Request(), &created);
  ASSERT_TRUE(st.ok()) << st.error_message();
  const std::string id = created.volume().volume_id();
  EXPECT_EQ(created.volume().volume_context().at("replicas"), "2");

  csi::ControllerModifyVolumeRequest mod;
  mod.set_volume_id(id);
  (*mod.mutable_mutable_parameters())["replicas"] = "3";
  (*mod.mutable_mutable_parameters())["rebuildRate"] = "4M";
  csi::ControllerModifyVolumeResponse mresp;
  st = ctl_->ControllerModifyVolume(Ctx().get(), mod, &mresp);
  ASSERT_TRUE(st.ok()) << st.error_message();

  // The CO's retry of the original request: the same volume, as it is now.
  csi::CreateVolumeResponse again;
  st = Create(Request(), &again);
  ASSERT_TRUE(st.ok()) << st.error_code() << " " << st.error_message();
  EXPECT_EQ(again.volume().volume_id(), id);
  EXPECT_EQ(again.volume().volume_context().at("replicas"), "3");

  // Asking for what the volume became is another request.
  csi::CreateVolumeRequest now = Request();
  (*now.mutable_mutable_parameters())["replicas"] = "3";
  st = Create(now, &again);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS) << st.error_message();

  std::string message;
  EXPECT_TRUE(Confirmed(id, {{"replicas", "1"}, {"rebuildRate", "2M"}}, &message)) << message;
  EXPECT_FALSE(Confirmed(id, {{"replicas", "3"}}, &message));
  EXPECT_NE(message.find("created with"), std::string::npos) << message;
}

}  // namespace
}  // namespace tandem::controller::cluster_testing
