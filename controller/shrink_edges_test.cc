// Lowering `replicas` at its edges (docs/controller.md "Lowering the replica
// count"): a lower count while the live target's own recorded shrink has not
// reached its survivors, and a grow back onto a node that still holds a
// retired replica of the volume. The fixture: testing_shrink_fixture.h.

#include "controller/testing_shrink_fixture.h"

namespace tandem::controller::cluster_testing {
namespace {

using ShrinkEdgeTest = ShrinkFixture;

// The live target recorded a shrink (ShrinkInSync, reproduced through the
// Membership API for a generation id no replica holds) and has not started
// it: lowering the count would drop the record before it (previous_in_sync),
// the only way back if the target dies now. So the lower count waits, then
// asks for a retry with nothing changed; the target dies, the next publish
// falls back to the record before the shrink, and the lower count goes
// through with every acknowledged block kept.
TEST_F(ShrinkEdgeTest, ALowerCountWaitsForTheTargetsRecordedShrinkToSettle) {
  Served v;
  ASSERT_NO_FATAL_FAILURE(ServeOnE0("settle-first", &v));
  auto live = Engine(0).GetTarget(v.id, std::chrono::seconds(5));
  ASSERT_TRUE(live.ok());
  const uint64_t never_set = std::random_device{}() | 1ull << 40;
  grpc::Status st =
      RecordShrinkNeverStarted(v.id, v.ctx.epoch, *live, never_set,
                               {v.ctx.replicas[0].replica_id, v.ctx.replicas[1].replica_id});
  ASSERT_TRUE(st.ok()) << st.error_message();

  st = SetReplicas(v.id, 2);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_NE(st.error_message().find("recorded shrink"), std::string::npos) << st.error_message();
  live = Engine(0).GetTarget(v.id, std::chrono::seconds(5));
  ASSERT_TRUE(live.ok());
  EXPECT_EQ(live->replicas_size(), 3) << "the live target was not changed";
  EXPECT_EQ(Holders(v.id).size(), 3u);

  // The target dies before starting that generation.
  close(v.fd);
  ASSERT_TRUE(Engine(0).DestroyTarget(v.id, std::chrono::seconds(30)).ok());
  ASSERT_TRUE(Unpublish(v.id, 0));
  auto next = Publish(v.id, 1);
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(next->in_sync_generation_id, 0u) << "back to the record before the shrink";
  ASSERT_TRUE(Unpublish(v.id, 1));

  st = SetReplicasRetried(v.id, 2);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(Holders(v.id).size(), 2u);
  EXPECT_EQ(BadBlocks(v.id, 1, v.acked), 0);
}

// A victim whose engine was down stays retired on its node; a grow that
// places a replica there again deletes it first instead of failing
// ALREADY_EXISTS until the reconciler (kept out here) would have.
TEST_F(ShrinkEdgeTest, AGrowOntoANodeHoldingARetiredReplicaReplacesIt) {
  Served v;
  ASSERT_NO_FATAL_FAILURE(RetireTheReplicaOnE2("grow-over-retired", &v));
  const std::string& id = v.id;
  auto retired = Engine(2).GetReplica(id, std::chrono::seconds(5));
  ASSERT_TRUE(retired.ok()) << "retired, not deleted yet";

  grpc::Status st = SetReplicasRetried(id, 3);
  ASSERT_TRUE(st.ok()) << st.error_message();
  auto placed = Engine(2).GetReplica(id, std::chrono::seconds(5));
  ASSERT_TRUE(placed.ok());
  EXPECT_NE(placed->replica_id(), retired->replica_id()) << "a new replica, not the retired one";
  EXPECT_TRUE(SetReplicas(id, 3).ok());  // repeated
  EXPECT_EQ(BadBlocks(id, 2, v.acked), 0);
  auto ctx = Publish(id, 1);
  ASSERT_TRUE(ctx.ok());
  EXPECT_EQ(ctx->replicas.size(), 3u);
  EXPECT_TRUE(Unpublish(id, 1));
}

}  // namespace
}  // namespace tandem::controller::cluster_testing
