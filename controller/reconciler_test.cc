// Self-healing, end to end: a 3-replica volume on four real engines,
// published with a live target built from publish_context; the engine of one
// replica is killed for good, or (on a node that stays up) its replica is
// lost. The reconciler replaces that replica on the spare node, swaps it into
// the live target (which rebuilds it online until HEALTHY), and deletes the
// retired replica once its node answers.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "csi/publish_context.h"
#include "replica-engine/api/engine_client.h"
#include "tests/harness/local_cluster.h"

namespace tandem::controller {
namespace {

namespace csi = ::csi::v1;
using testing::LocalCluster;

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return ctx;
}

TEST(ReconcilerTest, ReplicaOnADeadNodeIsReplacedOnASpareAndRebuiltOnline) {
  LocalCluster cluster;
  ASSERT_TRUE(cluster.StartEngines(4).ok());
  ASSERT_TRUE(
      cluster.StartController({"--reconcile-interval-ms=300", "--replace-after-ms=1500"}).ok());
  ASSERT_TRUE(cluster.RegisterEngines().ok());
  auto& engines = cluster.engines();
  auto ctl = cluster.Controller();

  csi::CreateVolumeRequest creq;
  creq.set_name("heal");
  creq.mutable_capacity_range()->set_required_bytes(16 << 20);
  auto* cap = creq.add_volume_capabilities();
  cap->mutable_block();
  cap->mutable_access_mode()->set_mode(csi::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  csi::CreateVolumeResponse created;
  ASSERT_TRUE(ctl->CreateVolume(Ctx().get(), creq, &created).ok());
  const std::string id = created.volume().volume_id();
  api::EngineClient e3(engines[3].grpc_address(), "");
  ASSERT_FALSE(e3.GetReplica(id, std::chrono::seconds(5)).ok()) << "e3 is the spare";

  csi::ControllerPublishVolumeRequest preq;
  preq.set_volume_id(id);
  preq.set_node_id("e0");
  *preq.mutable_volume_capability() = *cap;
  csi::ControllerPublishVolumeResponse pub;
  ASSERT_TRUE(ctl->ControllerPublishVolume(Ctx().get(), preq, &pub).ok());
  auto ctx = ::tandem::csi::DecodePublishContext(pub.publish_context());
  ASSERT_TRUE(ctx.ok());
  engine::v1::CreateTargetRequest treq =
      testing::TargetRequestFor(id, *ctx, engines[0].data_address());
  treq.set_reconnect_interval_ms(200);
  api::EngineClient e0(engines[0].grpc_address(), "");
  ASSERT_TRUE(e0.CreateTarget(treq, std::chrono::seconds(30)).ok());

  const std::string dead = engines[2].data_address();
  engines[2].process->Kill();

  const std::string spare = engines[3].data_address();
  std::string last;
  bool healed = testing::WaitFor(
      [&] {
        auto t = e0.GetTarget(id, std::chrono::seconds(5));
        if (!t.ok()) return false;
        bool spare_healthy = false, dead_gone = true;
        last.clear();
        for (const auto& r : t->replicas()) {
          last += r.address() + "=" + engine::v1::ReplicaState_Name(r.state()) + " ";
          if (r.address() == spare && r.state() == engine::v1::REPLICA_STATE_HEALTHY) {
            spare_healthy = true;
          }
          if (r.address() == dead) dead_gone = false;
        }
        return spare_healthy && dead_gone && t->replicas_size() == 3;
      },
      std::chrono::seconds(60));
  ASSERT_TRUE(healed) << "target replicas: " << last << " (run dir " << cluster.root() << ")";
  auto replica = e3.GetReplica(id, std::chrono::seconds(5));
  ASSERT_TRUE(replica.ok());
  EXPECT_EQ(replica->size_bytes(), static_cast<uint64_t>(16 << 20));

  // The node comes back: its retired replica is deleted.
  ASSERT_TRUE(cluster.StartEngine(&engines[2]).ok());
  api::EngineClient e2(engines[2].grpc_address(), "");
  bool deleted = testing::WaitFor(
      [&] {
        auto r = e2.GetReplica(id, std::chrono::seconds(2));
        return !r.ok() && r.status().code() == StatusCode::kNotFound;
      },
      std::chrono::seconds(30));
  EXPECT_TRUE(deleted) << "the retired replica on e2 was not deleted";
  EXPECT_TRUE(e0.DestroyTarget(id, std::chrono::seconds(30)).ok());
}

// A replica FAULTED on a node that stays up (its disk lost: the replica is
// deleted under the live target, whose reconnects are refused from then on)
// is replaced like one on a down node once FAULTED for replace_after.
TEST(ReconcilerTest, FaultedReplicaOnALiveNodeIsReplacedOnASpareAndRebuiltOnline) {
  LocalCluster cluster;
  ASSERT_TRUE(cluster.StartEngines(4).ok());
  ASSERT_TRUE(
      cluster.StartController({"--reconcile-interval-ms=300", "--replace-after-ms=1500"}).ok());
  ASSERT_TRUE(cluster.RegisterEngines().ok());
  auto& engines = cluster.engines();
  auto ctl = cluster.Controller();
  csi::CreateVolumeRequest creq;
  creq.set_name("heal-live");
  creq.mutable_capacity_range()->set_required_bytes(16 << 20);
  auto* cap = creq.add_volume_capabilities();
  cap->mutable_block();
  cap->mutable_access_mode()->set_mode(csi::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  csi::CreateVolumeResponse created;
  ASSERT_TRUE(ctl->CreateVolume(Ctx().get(), creq, &created).ok());
  const std::string id = created.volume().volume_id();
  csi::ControllerPublishVolumeRequest preq;
  preq.set_volume_id(id);
  preq.set_node_id("e0");
  *preq.mutable_volume_capability() = *cap;
  csi::ControllerPublishVolumeResponse pub;
  ASSERT_TRUE(ctl->ControllerPublishVolume(Ctx().get(), preq, &pub).ok());
  auto ctx = ::tandem::csi::DecodePublishContext(pub.publish_context());
  ASSERT_TRUE(ctx.ok());
  engine::v1::CreateTargetRequest treq =
      testing::TargetRequestFor(id, *ctx, engines[0].data_address());
  treq.set_reconnect_interval_ms(200);
  api::EngineClient e0(engines[0].grpc_address(), "");
  ASSERT_TRUE(e0.CreateTarget(treq, std::chrono::seconds(30)).ok());

  api::EngineClient e2(engines[2].grpc_address(), "");
  ASSERT_TRUE(e2.DeleteReplica(id, std::chrono::seconds(10)).ok());
  const std::string lost = engines[2].data_address(), spare = engines[3].data_address();
  std::string last;
  bool healed = testing::WaitFor(
      [&] {
        auto t = e0.GetTarget(id, std::chrono::seconds(5));
        if (!t.ok()) return false;
        bool spare_healthy = false, lost_gone = true;
        last.clear();
        for (const auto& r : t->replicas()) {
          last += r.address() + "=" + engine::v1::ReplicaState_Name(r.state()) + " ";
          spare_healthy |= r.address() == spare && r.state() == engine::v1::REPLICA_STATE_HEALTHY;
          lost_gone &= r.address() != lost;
        }
        return spare_healthy && lost_gone && t->replicas_size() == 3;
      },
      std::chrono::seconds(60));
  ASSERT_TRUE(healed) << "target replicas: " << last << " (run dir " << cluster.root() << ")";
  api::EngineClient e3(engines[3].grpc_address(), "");
  EXPECT_TRUE(e3.GetReplica(id, std::chrono::seconds(5)).ok());
  EXPECT_TRUE(e0.DestroyTarget(id, std::chrono::seconds(30)).ok());
}

}  // namespace
}  // namespace tandem::controller
