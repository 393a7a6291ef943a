// Self-healing, end to end: a 3-replica volume on four real engines,
// published with a live target built from publish_context; the engine of one
// replica is killed for good, or (on a node that stays up) its replica is
// lost. The reconciler replaces that replica on the spare node, swaps it into
// the live target (which rebuilds it online until HEALTHY), and deletes the
// retired replica once its node answers.

#include <thread>

#include "controller/testing_cluster_fixture.h"
#include "csi/publish_context.h"

namespace tandem::controller::cluster_testing {
namespace {

class ReconcilerTest : public ClusterTest {
 protected:
  // Four engines (e3 the spare) and a reconciler that replaces a replica
  // unhealthy for 1.5 s.
  void SetUp() override {
    StartCluster(4, {"--reconcile-interval-ms=300", "--replace-after-ms=1500"});
  }

  // A 3-replica 16 MiB volume (on e0..e2: e3 is the spare), published on e0
  // with its live target built there from publish_context.
  void CreateAndServeOnE0(const std::string& name, std::string* id) {
    auto ctl = cluster_.Controller();
    csi::CreateVolumeRequest creq;
    creq.set_name(name);
    creq.mutable_capacity_range()->set_required_bytes(16 << 20);
    *creq.add_volume_capabilities() = BlockCap();
    csi::CreateVolumeResponse created;
    ASSERT_TRUE(ctl->CreateVolume(Ctx().get(), creq, &created).ok());
    *id = created.volume().volume_id();
    ASSERT_FALSE(Engine(3).GetReplica(*id, std::chrono::seconds(5)).ok()) << "e3 is the spare";
    csi::ControllerPublishVolumeRequest preq;
    preq.set_volume_id(*id);
    preq.set_node_id("e0");
    *preq.mutable_volume_capability() = BlockCap();
    csi::ControllerPublishVolumeResponse pub;
    ASSERT_TRUE(ctl->ControllerPublishVolume(Ctx().get(), preq, &pub).ok());
    auto ctx = ::tandem::csi::DecodePublishContext(pub.publish_context());
    ASSERT_TRUE(ctx.ok());
    engine::v1::CreateTargetRequest treq =
        testing::TargetRequestFor(*id, *ctx, cluster_.engines()[0].data_address());
    treq.set_reconnect_interval_ms(200);
    ASSERT_TRUE(Engine(0).CreateTarget(treq, std::chrono::seconds(30)).ok());
  }

  // Waits until the live target on e0 has three replicas, the spare (e3)
  // HEALTHY among them and the one on engine `gone` not.
  void ExpectHealed(const std::string& id, int gone) {
    const std::string lost = cluster_.engines()[gone].data_address();
    const std::string spare = cluster_.engines()[3].data_address();
    std::string last;
    bool healed = testing::WaitFor(
        [&] {
          auto t = Engine(0).GetTarget(id, std::chrono::seconds(5));
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
    EXPECT_TRUE(healed) << "target replicas: " << last << " (run dir " << cluster_.root() << ")";
  }

  // Through a new stub: a test may have restarted the controller.
  grpc::Status SetReplicas(const std::string& id, int n) {
    return cluster_testing::SetReplicas(cluster_.Controller().get(), id, n);
  }

  // The live target on e0: each replica's address and state.
  std::string TargetReplicas(const std::string& id, int* count) {
    *count = -1;
    auto t = Engine(0).GetTarget(id, std::chrono::seconds(5));
    if (!t.ok()) return t.status().ToString();
    std::string out;
    for (const auto& r : t->replicas()) {
      out += r.address() + "=" + engine::v1::ReplicaState_Name(r.state()) + " ";
    }
    *count = t->replicas_size();
    return out;
  }

  // Step 2 of a shrink (the live target drops the replica on engine `e`)
  // with nothing after it: the record still lists that replica.
  void AbandonShrinkAfterItsFirstStep(const std::string& id, int e) {
    ASSERT_TRUE(
        Engine(0)
            .RemoveTargetReplica(id, cluster_.engines()[e].data_address(), std::chrono::seconds(5))
            .ok());
    int count = 0;
    std::string replicas = TargetReplicas(id, &count);
    ASSERT_EQ(count, 2) << replicas;
  }

  // Waits until the live target on e0 holds the replica on engine `e`
  // HEALTHY, with three replicas in all.
  bool TargetHoldsAgain(const std::string& id, int e, std::string* last) {
    const std::string want = cluster_.engines()[e].data_address() + "=REPLICA_STATE_HEALTHY";
    return testing::WaitFor(
        [&] {
          int count = 0;
          *last = TargetReplicas(id, &count);
          return count == 3 && last->find(want) != std::string::npos;
        },
        std::chrono::seconds(60));
  }
};

TEST_F(ReconcilerTest, ReplicaOnADeadNodeIsReplacedOnASpareAndRebuiltOnline) {
  std::string id;
  ASSERT_NO_FATAL_FAILURE(CreateAndServeOnE0("heal", &id));
  cluster_.engines()[2].process->Kill();
  ExpectHealed(id, 2);
  auto replica = Engine(3).GetReplica(id, std::chrono::seconds(5));
  ASSERT_TRUE(replica.ok());
  EXPECT_EQ(replica->size_bytes(), static_cast<uint64_t>(16 << 20));

  // The node comes back: its retired replica is deleted.
  ASSERT_TRUE(cluster_.StartEngine(&cluster_.engines()[2]).ok());
  bool deleted = testing::WaitFor(
      [&] {
        auto r = Engine(2).GetReplica(id, std::chrono::seconds(2));
        return !r.ok() && r.status().code() == StatusCode::kNotFound;
      },
      std::chrono::seconds(30));
  EXPECT_TRUE(deleted) << "the retired replica on e2 was not deleted";
  EXPECT_TRUE(Engine(0).DestroyTarget(id, std::chrono::seconds(30)).ok());
}

// A replica FAULTED on a node that stays up (its disk lost: the replica is
// deleted under the live target, whose reconnects are refused from then on)
// is replaced like one on a down node once FAULTED for replace_after.
TEST_F(ReconcilerTest, FaultedReplicaOnALiveNodeIsReplacedOnASpareAndRebuiltOnline) {
  std::string id;
  ASSERT_NO_FATAL_FAILURE(CreateAndServeOnE0("heal-live", &id));
  ASSERT_TRUE(Engine(2).DeleteReplica(id, std::chrono::seconds(10)).ok());
  ExpectHealed(id, 2);
  EXPECT_TRUE(Engine(3).GetReplica(id, std::chrono::seconds(5)).ok());
  EXPECT_TRUE(Engine(0).DestroyTarget(id, std::chrono::seconds(30)).ok());
}

// A shrink abandoned after its first step (the live target dropped the
// replica on e2; the record, never changed, still lists it): the reconciler
// adds it back to the target once missing for replace_after, where it is
// rebuilt to HEALTHY. It is the record's replica, not a replacement: the
// spare (e3) gets nothing.
TEST_F(ReconcilerTest, AReplicaOfTheRecordMissingFromTheLiveTargetIsAddedBack) {
  std::string id;
  ASSERT_NO_FATAL_FAILURE(CreateAndServeOnE0("restore", &id));
  ASSERT_NO_FATAL_FAILURE(AbandonShrinkAfterItsFirstStep(id, 2));
  std::string last;
  EXPECT_TRUE(TargetHoldsAgain(id, 2, &last))
      << "target replicas: " << last << " (run dir " << cluster_.root() << ")";
  EXPECT_FALSE(Engine(3).GetReplica(id, std::chrono::seconds(5)).ok()) << "no replacement";
  EXPECT_TRUE(Engine(0).DestroyTarget(id, std::chrono::seconds(30)).ok());
}

// The same repair by the CO: a ModifyVolume at the record's count (the shrink
// set back) adds the missing replica at once (the reconciler kept out).
TEST_F(ReconcilerTest, AModifyVolumeAtTheSameCountAddsTheMissingReplicaBack) {
  ASSERT_TRUE(cluster_.StartController({"--reconcile-interval-ms=600000"}).ok());
  std::string id;
  ASSERT_NO_FATAL_FAILURE(CreateAndServeOnE0("restore-modify", &id));
  ASSERT_NO_FATAL_FAILURE(AbandonShrinkAfterItsFirstStep(id, 1));
  grpc::Status st = SetReplicas(id, 3);
  ASSERT_TRUE(st.ok()) << st.error_message();
  std::string last;
  EXPECT_TRUE(TargetHoldsAgain(id, 1, &last))
      << "target replicas: " << last << " (run dir " << cluster_.root() << ")";
  EXPECT_TRUE(Engine(0).DestroyTarget(id, std::chrono::seconds(30)).ok());
}

// A finished shrink's victim is retired, not in the record: the reconciler
// never adds it back (the record is the authority).
TEST_F(ReconcilerTest, AShrinksVictimIsNotAddedBack) {
  std::string id;
  ASSERT_NO_FATAL_FAILURE(CreateAndServeOnE0("restore-not", &id));
  grpc::Status st = SetReplicas(id, 2);
  ASSERT_TRUE(st.ok()) << st.error_message();
  // Twice replace_after, many passes: the target stays at two.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(4);
  while (std::chrono::steady_clock::now() < until) {
    int count = 0;
    std::string replicas = TargetReplicas(id, &count);
    ASSERT_EQ(count, 2) << replicas;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(Engine(0).DestroyTarget(id, std::chrono::seconds(30)).ok());
}

}  // namespace
}  // namespace tandem::controller::cluster_testing
