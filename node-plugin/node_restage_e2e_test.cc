// A restage under one ControllerPublish after the volume's replica set
// changed (docs/node_plugin.md "The current replica set"): kubelet hands
// NodeStage the publish_context of the publish, which lists the replicas of
// that time; tandem-node builds the target from the controller's current
// record instead (Registration.GetAttachment), so the restaged target has
// exactly the record's replicas and every acknowledged byte.

#include "node-plugin/testing_node_e2e.h"
#include "replica-engine/api/engine_client.h"

namespace tandem::node::e2e {
namespace {

namespace reg = ::tandem::controller::v1;

class NodeRestageTest : public NodeEndToEndTest {
 protected:
  grpc::Status SetReplicas(const std::string& id, int n) {
    csi::ControllerModifyVolumeRequest mod;
    mod.set_volume_id(id);
    (*mod.mutable_mutable_parameters())["replicas"] = std::to_string(n);
    csi::ControllerModifyVolumeResponse resp;
    return ctl_->ControllerModifyVolume(Ctx().get(), mod, &resp);
  }
  // The controller's current context of the volume's attachment to `node`.
  Result<::tandem::csi::PublishContext> Current(const std::string& id, const std::string& node) {
    reg::GetAttachmentRequest req;
    req.set_volume_id(id);
    req.set_node_id(node);
    reg::GetAttachmentResponse resp;
    grpc::Status st = cluster_->Registration()->GetAttachment(Ctx().get(), req, &resp);
    if (!st.ok()) return Status(static_cast<StatusCode>(st.error_code()), st.error_message());
    return ::tandem::csi::DecodePublishContext(resp.publish_context());
  }
  // The live target on node `e`'s engine.
  static Result<engine::v1::Target> LiveTarget(int e, const std::string& id) {
    api::EngineClient client(cluster_->engines()[e].grpc_address(), "");
    return client.GetTarget(id, std::chrono::seconds(5));
  }
  static std::vector<std::string> Addresses(const engine::v1::Target& t) {
    std::vector<std::string> out;
    for (const auto& r : t.replicas()) out.push_back(r.address());
    std::sort(out.begin(), out.end());
    return out;
  }
  static std::vector<std::string> Addresses(const ::tandem::csi::PublishContext& ctx) {
    std::vector<std::string> out;
    for (const auto& r : ctx.replicas) out.push_back(r.address);
    std::sort(out.begin(), out.end());
    return out;
  }
  static bool AllHealthy(const engine::v1::Target& t) {
    return std::all_of(t.replicas().begin(), t.replicas().end(), [](const auto& r) {
      return r.state() == engine::v1::REPLICA_STATE_HEALTHY;
    });
  }
};

// 3 -> 1 while staged and written, then NodeUnstage + NodeStage with the
// publish's context (which lists all three): the target is built on the one
// replica the record keeps, every file reads back there, and — written to
// further and moved to another node — every file reads back from the record.
TEST_F(NodeRestageTest, RestageAfterAShrinkTo1BuildsTheTargetOnTheKeeperAlone) {
  const std::string id = CreateVolume("e2e-restage-shrink", 128 * kMiB, false);
  ASSERT_FALSE(id.empty());
  Attach(nodes_[0], id, "pod-a", false);
  const auto publish_context = last_publish_context_;
  auto files = MakeFiles(21);
  WriteFiles(nodes_[0].target("pod-a", id), files);

  grpc::Status st = SetReplicas(id, 1);
  ASSERT_TRUE(st.ok()) << "ModifyVolume replicas=1: " << st.error_message();
  auto current = Current(id, nodes_[0].name);
  ASSERT_TRUE(current.ok()) << current.status().ToString();
  ASSERT_EQ(current->replicas.size(), 1u);
  auto old = ::tandem::csi::DecodePublishContext(publish_context);
  ASSERT_TRUE(old.ok());
  ASSERT_EQ(old->replicas.size(), 3u);
  EXPECT_EQ(current->epoch, old->epoch) << "a replica change is no new publish";
  EXPECT_TRUE(current->volume_secret.empty()) << "GetAttachment must not hand out the secret";

  UnpublishAndUnstage(nodes_[0], id, "pod-a");
  StageAndPublish(nodes_[0], id, "pod-a2", false, "ext4", publish_context);
  auto target = LiveTarget(0, id);
  ASSERT_TRUE(target.ok()) << target.status().ToString();
  EXPECT_EQ(Addresses(*target), Addresses(*current)) << "the restaged target's replicas";
  EXPECT_EQ(target->epoch(), old->epoch);
  ExpectFiles(nodes_[0].target("pod-a2", id), files);

  auto more = MakeFiles(22);
  std::map<std::string, std::string> later;
  for (const auto& [name, data] : more) later["later-" + std::to_string(later.size())] = data;
  WriteFiles(nodes_[0].target("pod-a2", id), later);
  Detach(nodes_[0], id, "pod-a2");
  Attach(nodes_[1], id, "pod-b", false);
  ExpectFiles(nodes_[1].target("pod-b", id), files);
  ExpectFiles(nodes_[1].target("pod-b", id), later);
  Detach(nodes_[1], id, "pod-b");
}

// 1 -> 2 while staged (the new replica rebuilt online), then a restage with
// the publish's context (which lists one replica): the target has both.
TEST_F(NodeRestageTest, RestageAfterAGrowTo2BuildsTheTargetOnBothReplicas) {
  const std::string id = CreateVolume("e2e-restage-grow", 128 * kMiB, false, {{"replicas", "1"}});
  ASSERT_FALSE(id.empty());
  Attach(nodes_[0], id, "pod-g", false);
  const auto publish_context = last_publish_context_;
  auto files = MakeFiles(23);
  WriteFiles(nodes_[0].target("pod-g", id), files);

  grpc::Status st = SetReplicas(id, 2);
  ASSERT_TRUE(st.ok()) << "ModifyVolume replicas=2: " << st.error_message();
  bool rebuilt = WaitFor(
      [&] {
        auto t = LiveTarget(0, id);
        return t.ok() && t->replicas_size() == 2 && AllHealthy(*t);
      },
      std::chrono::seconds(60));
  ASSERT_TRUE(rebuilt) << "the grown replica never turned HEALTHY in the live target";
  auto current = Current(id, nodes_[0].name);
  ASSERT_TRUE(current.ok()) << current.status().ToString();
  ASSERT_EQ(current->replicas.size(), 2u);

  UnpublishAndUnstage(nodes_[0], id, "pod-g");
  StageAndPublish(nodes_[0], id, "pod-g2", false, "ext4", publish_context);
  auto target = LiveTarget(0, id);
  ASSERT_TRUE(target.ok()) << target.status().ToString();
  EXPECT_EQ(Addresses(*target), Addresses(*current)) << "the restaged target's replicas";
  ExpectFiles(nodes_[0].target("pod-g2", id), files);
  Detach(nodes_[0], id, "pod-g2");
}

// The hole itself: a replica removed by a shrink while its engine was down
// (so its deletion is owed) comes back, still on disk and behind the writes
// acknowledged meanwhile. The publish's context lists it; a target built from
// that context would count it (with the keeper, a majority of the old three).
// The restaged target has the keeper alone and every file.
TEST_F(NodeRestageTest, ARemovedReplicaBackOnDiskIsNotCountedByARestagedTarget) {
  const std::string id = CreateVolume("e2e-restage-victim", 128 * kMiB, false);
  ASSERT_FALSE(id.empty());
  Attach(nodes_[0], id, "pod-v", false);
  const auto publish_context = last_publish_context_;
  auto before = MakeFiles(31);
  WriteFiles(nodes_[0].target("pod-v", id), before);
  auto& victim = cluster_->engines()[2];
  victim.process->Kill();
  std::map<std::string, std::string> after;
  for (const auto& [name, data] : MakeFiles(32))
    after["after-" + std::to_string(after.size())] = data;
  WriteFiles(nodes_[0].target("pod-v", id), after);  // acknowledged without the victim

  grpc::Status st = SetReplicas(id, 1);
  ASSERT_TRUE(st.ok()) << "ModifyVolume replicas=1: " << st.error_message();
  auto current = Current(id, nodes_[0].name);
  ASSERT_TRUE(current.ok()) << current.status().ToString();
  ASSERT_EQ(Addresses(*current), std::vector<std::string>{cluster_->engines()[0].data_address()})
      << "the local replica is kept";

  ASSERT_TRUE(cluster_->StartEngine(&victim).ok());
  api::EngineClient victim_engine(victim.grpc_address(), "");
  RecordProperty("victim_replica_on_disk_at_restage",
                 victim_engine.GetReplica(id, std::chrono::seconds(5)).ok() ? "yes" : "no");
  UnpublishAndUnstage(nodes_[0], id, "pod-v");
  StageAndPublish(nodes_[0], id, "pod-v2", false, "ext4", publish_context);
  auto target = LiveTarget(0, id);
  ASSERT_TRUE(target.ok()) << target.status().ToString();
  EXPECT_EQ(Addresses(*target), Addresses(*current)) << "the restaged target's replicas";
  ExpectFiles(nodes_[0].target("pod-v2", id), before);
  ExpectFiles(nodes_[0].target("pod-v2", id), after);
  Detach(nodes_[0], id, "pod-v2");
  Attach(nodes_[1], id, "pod-w", false);
  ExpectFiles(nodes_[1].target("pod-w", id), before);
  ExpectFiles(nodes_[1].target("pod-w", id), after);
  Detach(nodes_[1], id, "pod-w");
}

}  // namespace
}  // namespace tandem::node::e2e
