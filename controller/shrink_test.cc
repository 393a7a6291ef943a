// ControllerModifyVolume lowering `replicas` (docs/controller.md "Lowering
// the replica count") and the unsettled shrink's fallback ("An unsettled
// shrink"), end to end (the fixture: testing_shrink_fixture.h).

#include "controller/testing_shrink_fixture.h"

namespace tandem::controller::cluster_testing {
namespace {

class ShrinkTest : public ShrinkFixture {};

// Detached 3 -> 2 -> 1: the replica that missed writes (its engine was down
// while they were acknowledged) goes first, each removed replica is deleted
// on its engine, a repeat changes nothing, and every attach in between reads
// every acknowledged byte.
TEST_F(ShrinkTest, DetachedShrinkRemovesTheStaleReplicaFirstAndKeepsEveryByte) {
  Served v;
  ASSERT_NO_FATAL_FAILURE(ServeOnE0("detached", &v));
  const std::string& id = v.id;
  std::vector<uint32_t>& acked = v.acked;
  const int fd = v.fd;
  cluster_.engines()[2].process->Kill();  // e2's replica misses round 2
  EXPECT_EQ(WriteRound(fd, 2, &acked), 0);
  close(fd);
  ASSERT_TRUE(Engine(0).DestroyTarget(id, std::chrono::seconds(30)).ok());
  RestartEngine(2);
  ASSERT_TRUE(Unpublish(id, 0));

  grpc::Status st = SetReplicasRetried(id, 2);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(HoldersBecome(id, {0, 1}), (std::vector<int>{0, 1}))
      << "the stale replica on e2 goes first";
  EXPECT_TRUE(SetReplicas(id, 2).ok());  // repeated
  EXPECT_EQ(BadBlocks(id, 1, acked), 0);

  st = SetReplicas(id, 1);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(HoldersBecome(id, {0}).size(), 1u);
  EXPECT_TRUE(SetReplicas(id, 1).ok());  // repeated
  EXPECT_EQ(BadBlocks(id, 2, acked), 0);
  auto last = Publish(id, 0);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->replicas.size(), 1u);
  EXPECT_TRUE(Unpublish(id, 0));
}

// Published 3 -> 2 -> 1 while a writer writes and fsyncs: the live target
// drops the victim first (the remote ones: the local replica stays), keeps
// acknowledging every write (at 1 of its 3 places through the controller's
// ShrinkInSync), the removed replicas are deleted, and a new attach on
// another node reads every acknowledged block.
TEST_F(ShrinkTest, PublishedShrinkUnderWritesKeepsEveryAcknowledgedBlock) {
  Served v;
  ASSERT_NO_FATAL_FAILURE(ServeOnE0("published", &v));
  const std::string& id = v.id;
  std::vector<uint32_t>& acked = v.acked;
  const int fd = v.fd;
  std::atomic<bool> stop{false};
  std::atomic<uint32_t> rounds{0};
  std::atomic<int> failures{0};
  std::thread writer([&] {
    for (uint32_t round = 2; !stop && round < 10000; ++round) {
      failures += WriteRound(fd, round, &acked);
      rounds = round;
    }
  });
  auto after_rounds = [&](uint32_t n) {
    uint32_t target = rounds + n;
    return testing::WaitFor([&] { return rounds >= target; }, std::chrono::seconds(60));
  };
  EXPECT_TRUE(after_rounds(1));
  auto before = Engine(0).GetTarget(id, std::chrono::seconds(5));
  ASSERT_TRUE(before.ok());
  grpc::Status st = SetReplicas(id, 2);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(after_rounds(2));
  auto live = Engine(0).GetTarget(id, std::chrono::seconds(5));
  ASSERT_TRUE(live.ok());
  EXPECT_EQ(live->replicas_size(), 2);
  // The removal started a new generation on the survivors: the removed
  // replica is recognisably behind.
  EXPECT_GT(live->generation(), before->generation());
  EXPECT_EQ(Holders(id).size(), 2u);
  st = SetReplicas(id, 1);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(after_rounds(2));
  stop = true;
  writer.join();
  close(fd);
  EXPECT_EQ(failures, 0) << "writes failed during the shrink (run dir " << cluster_.root() << ")";
  live = Engine(0).GetTarget(id, std::chrono::seconds(5));
  ASSERT_TRUE(live.ok());
  ASSERT_EQ(live->replicas_size(), 1);
  EXPECT_EQ(EngineOf(live->replicas(0).address()), 0) << "the local replica stays";
  EXPECT_EQ(Holders(id), std::vector<int>{0});
  EXPECT_TRUE(SetReplicas(id, 1).ok());  // repeated

  ASSERT_TRUE(Engine(0).DestroyTarget(id, std::chrono::seconds(30)).ok());
  ASSERT_TRUE(Unpublish(id, 0));
  EXPECT_EQ(BadBlocks(id, 1, acked), 0) << "after " << rounds << " rounds";
}

// A controller killed -9 between step 2 (the live target dropped a replica)
// and step 3 (the record): the target acknowledges on the others meanwhile,
// and the retry on the restarted controller removes that same replica (gone
// from the target, so first in line), not the one it would have chosen.
TEST_F(ShrinkTest, ARetryAfterAControllerCrashMidShrinkRemovesTheReplicaTheTargetDropped) {
  Served v;
  ASSERT_NO_FATAL_FAILURE(ServeOnE0("resume", &v));
  const std::string& id = v.id;
  std::vector<uint32_t>& acked = v.acked;
  const int fd = v.fd;
  // Step 2 as the controller does it, for the replica on e1 (by itself it
  // would remove the later one, on e2); then it dies.
  ASSERT_TRUE(
      Engine(0)
          .RemoveTargetReplica(id, cluster_.engines()[1].data_address(), std::chrono::seconds(5))
          .ok());
  cluster_.KillController();
  EXPECT_EQ(WriteRound(fd, 2, &acked), 0);
  // The removal started a new generation on the others before those writes:
  // the dropped replica is recognisably behind (the old record still lists it).
  auto dropped = Engine(1).GetReplica(id, std::chrono::seconds(5));
  auto kept = Engine(0).GetReplica(id, std::chrono::seconds(5));
  ASSERT_TRUE(dropped.ok() && kept.ok());
  EXPECT_LT(dropped->generation(), kept->generation());
  EXPECT_NE(dropped->generation_id(), kept->generation_id());
  ASSERT_TRUE(cluster_.StartController().ok());
  ctl_ = cluster_.Controller();
  grpc::Status st = SetReplicasRetried(id, 2);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(HoldersBecome(id, {0, 2}), (std::vector<int>{0, 2}));
  EXPECT_EQ(WriteRound(fd, 3, &acked), 0);
  close(fd);
  ASSERT_TRUE(Engine(0).DestroyTarget(id, std::chrono::seconds(30)).ok());
  ASSERT_TRUE(Unpublish(id, 0));
  EXPECT_EQ(BadBlocks(id, 2, acked), 0);
}

// A victim whose engine is down when removed stays retired (its file
// exists); DeleteVolume deletes it too once its node answers, rather than
// leaving it behind (the reconciler, which would also, is kept out here).
TEST_F(ShrinkTest, ARetiredReplicaIsDeletedWithItsVolume) {
  Served v;
  ASSERT_NO_FATAL_FAILURE(RetireTheReplicaOnE2("retired", &v));
  const std::string& id = v.id;
  EXPECT_EQ(Holders(id), (std::vector<int>{0, 1, 2})) << "retired, not deleted yet";
  csi::DeleteVolumeRequest del;
  del.set_volume_id(id);
  csi::DeleteVolumeResponse dresp;
  grpc::Status st = ctl_->DeleteVolume(Ctx().get(), del, &dresp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(Holders(id).empty());
}

// The engine hosting the live target killed -9 in the middle of a 3 -> 1
// shrink, after the target dropped the two others (and, to write at 1 of its
// 3 places, had the controller record the in-sync set {r0}) and before the
// record followed: a retry is refused while the volume is published with no
// target running; once unpublished it removes the two and every block is
// there.
TEST_F(ShrinkTest, AnEngineKilledMidShrinkLosesNothingAndTheRetryFinishes) {
  Served v;
  ASSERT_NO_FATAL_FAILURE(ServeOnE0("engine-crash", &v));
  const std::string& id = v.id;
  std::vector<uint32_t>& acked = v.acked;
  const int fd = v.fd;
  for (int e = 1; e < 3; ++e) {  // step 2 of a shrink to 1
    ASSERT_TRUE(
        Engine(0)
            .RemoveTargetReplica(id, cluster_.engines()[e].data_address(), std::chrono::seconds(5))
            .ok());
  }
  EXPECT_EQ(WriteRound(fd, 2, &acked), 0) << "(run dir " << cluster_.root() << ")";
  cluster_.engines()[0].process->Kill();
  close(fd);
  RestartEngine(0);
  grpc::Status st = SetReplicas(id, 1);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
  ASSERT_TRUE(Unpublish(id, 0));
  st = SetReplicasRetried(id, 1);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(HoldersBecome(id, {0}), std::vector<int>{0});
  EXPECT_EQ(BadBlocks(id, 1, acked), 0);
}

// With the in-sync record naming one replica (two engines died under
// writes), a lower count never drops it: with its engine down it is refused
// (nothing changes); with it back the two others go.
TEST_F(ShrinkTest, TheOnlyInSyncReplicaIsNeverDropped) {
  Served v;
  ASSERT_NO_FATAL_FAILURE(ServeOnE0("in-sync", &v));
  const std::string& id = v.id;
  std::vector<uint32_t>& acked = v.acked;
  const int fd = v.fd;
  cluster_.engines()[1].process->Kill();
  cluster_.engines()[2].process->Kill();
  EXPECT_EQ(WriteRound(fd, 2, &acked), 0) << "(run dir " << cluster_.root() << ")";
  close(fd);
  ASSERT_TRUE(Engine(0).DestroyTarget(id, std::chrono::seconds(30)).ok());
  RestartEngine(1);
  RestartEngine(2);
  ASSERT_TRUE(Unpublish(id, 0));

  cluster_.engines()[0].process->Kill();
  grpc::Status st = SetReplicas(id, 2);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
  EXPECT_NE(st.error_message().find("in-sync"), std::string::npos) << st.error_message();

  RestartEngine(0);
  EXPECT_EQ(Holders(id).size(), 3u);
  st = SetReplicasRetried(id, 1);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(Holders(id), std::vector<int>{0}) << "the in-sync replica on e0 stays";
  EXPECT_EQ(BadBlocks(id, 1, acked), 0);
}

// A target of an earlier publish left on the attached node (force-detached:
// unpublished without NodeUnstage, then published to the same node again and
// not staged yet) is fenced, and an idle one still reports every replica
// HEALTHY: its view must not choose the replicas to delete.
TEST_F(ShrinkTest, ATargetOfAnEarlierPublishIsNotTrusted) {
  Served v;
  ASSERT_NO_FATAL_FAILURE(ServeOnE0("old-target", &v));
  const std::string& id = v.id;
  close(v.fd);
  ASSERT_TRUE(Unpublish(id, 0));  // fences; the old target stays on e0
  auto again = Publish(id, 0);
  ASSERT_TRUE(again.ok()) << again.status().ToString();

  grpc::Status st = SetReplicas(id, 1);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
  EXPECT_NE(st.error_message().find("epoch"), std::string::npos) << st.error_message();
  EXPECT_EQ(Holders(id).size(), 3u) << "nothing deleted";
  auto old = Engine(0).GetTarget(id, std::chrono::seconds(5));
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->replicas_size(), 3) << "the old target was not changed either";

  ASSERT_TRUE(Engine(0).DestroyTarget(id, std::chrono::seconds(30)).ok());
  ASSERT_TRUE(Unpublish(id, 0));
  EXPECT_EQ(BadBlocks(id, 0, v.acked), 0);
}

// Task: the unsettled recorded shrink. A target recorded ShrinkInSync and
// died before any replica got that generation (reproduced by recording it
// through the Membership API after the target is gone): with an in-sync
// replica unreachable the publish keeps the record (the target is
// UNAVAILABLE); with all of them back and none holding the id, it falls back
// to the record before the shrink and every acknowledged block is served.
TEST_F(ShrinkTest, AnUnsettledShrinkFallsBackOnlyWhenEveryInSyncReplicaAnswers) {
  Served v;
  ASSERT_NO_FATAL_FAILURE(ServeOnE0("unsettled", &v));
  const std::string& id = v.id;
  const PublishContext& ctx = v.ctx;
  std::vector<uint32_t>& acked = v.acked;
  const int fd = v.fd;
  close(fd);
  auto live = Engine(0).GetTarget(id, std::chrono::seconds(5));
  ASSERT_TRUE(live.ok());
  ASSERT_TRUE(Engine(0).DestroyTarget(id, std::chrono::seconds(30)).ok());

  const std::string r0 = ctx.replicas[0].replica_id;
  const std::string r1 = ctx.replicas[1].replica_id;
  const uint64_t never_set = std::random_device{}() | 1ull << 40;
  grpc::Status st = RecordShrinkNeverStarted(id, ctx.epoch, *live, never_set, {r0, r1});
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_TRUE(Unpublish(id, 0));

  // r1's engine down: no fallback, the next attach cannot serve.
  int e1 = EngineOf(ctx.replicas[1].address);
  ASSERT_GE(e1, 0);
  cluster_.engines()[e1].process->Kill();
  int other = (e1 + 1) % 3;
  auto kept = Publish(id, other);
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(kept->in_sync_generation_id, never_set);
  auto refused = Attach(id, other, *kept);
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable) << refused.status().ToString();

  // Every in-sync replica back, none at the recorded id: the record before
  // the shrink (the majority rule) again.
  RestartEngine(e1);
  ASSERT_TRUE(Unpublish(id, other));
  EXPECT_EQ(BadBlocks(id, other, acked), 0);
  auto after = Publish(id, other);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->in_sync_generation_id, 0u);
  EXPECT_EQ(after->in_sync_replica_ids, ctx.in_sync_replica_ids);  // as created
  EXPECT_TRUE(Unpublish(id, other));
}

// An unsettled shrink over a recorded one (two engines died under writes:
// the target recorded {r0} and started that generation; then a second shrink
// is recorded and never started): the fallback is the first record — {r0} at
// the generation it holds — and the attach serves every block from it.
TEST_F(ShrinkTest, AnUnsettledShrinkOverARecordedOneFallsBackToThatRecord) {
  Served v;
  ASSERT_NO_FATAL_FAILURE(ServeOnE0("unsettled-twice", &v));
  const std::string& id = v.id;
  const PublishContext& ctx = v.ctx;
  std::vector<uint32_t>& acked = v.acked;
  const int fd = v.fd;
  cluster_.engines()[1].process->Kill();
  cluster_.engines()[2].process->Kill();
  EXPECT_EQ(WriteRound(fd, 2, &acked), 0);
  close(fd);
  auto live = Engine(0).GetTarget(id, std::chrono::seconds(5));
  ASSERT_TRUE(live.ok());
  ASSERT_EQ(live->in_sync_replica_ids_size(), 1) << live->DebugString();
  const uint64_t first = live->generation_id();
  ASSERT_TRUE(Engine(0).DestroyTarget(id, std::chrono::seconds(30)).ok());

  grpc::Status st = RecordShrinkNeverStarted(id, ctx.epoch, *live, first ^ 0x5A5A5A5A5A5A5A5Aull,
                                             {live->in_sync_replica_ids(0)});
  ASSERT_TRUE(st.ok()) << st.error_message();
  RestartEngine(1);
  RestartEngine(2);
  ASSERT_TRUE(Unpublish(id, 0));

  auto next = Publish(id, 1);
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(next->in_sync_generation_id, first);
  EXPECT_EQ(next->in_sync_replica_ids, std::vector<std::string>{live->in_sync_replica_ids(0)});
  ASSERT_TRUE(Unpublish(id, 1));
  EXPECT_EQ(BadBlocks(id, 1, acked), 0);
}

}  // namespace
}  // namespace tandem::controller::cluster_testing
