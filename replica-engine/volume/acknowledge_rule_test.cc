// Who may acknowledge (docs/architecture.md): a write is acknowledged only
// when it is on every serving replica and those are a majority of the
// configured replicas, or the membership authority recorded them as the
// in-sync set; an attach must reach a majority (or be told the in-sync set)
// and serves only from replicas holding the newest history. Real replica
// servers on 127.0.0.1; the authority is a test fake (the controller
// implements the real one).

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tests/support/testing_cluster.h"

namespace tandem::target {
namespace {

using namespace target_testing;  // NOLINT

class AcknowledgeRuleTest : public TargetFixture {
 protected:
  // Counts the writes of `n` 4 KiB writes at `off` that were acknowledged.
  int AckedWrites(VolumeTarget* t, uint64_t off, int n, uint8_t byte) {
    int acked = 0;
    for (int i = 0; i < n; ++i) {
      if (WritePattern(t, off + 4096ull * (i % 16), 4096, byte) == StatusCode::kOk) ++acked;
    }
    return acked;
  }
};

// A fake authority: answers every ShrinkInSync with `answer`, on the loop.
class FakeAuthority final : public MembershipAuthority {
 public:
  FakeAuthority(EventLoop* loop, Status answer) : loop_(loop), answer_(std::move(answer)) {}
  void ShrinkInSync(const InSyncUpdate& u, std::function<void(Status)> done) override {
    ++calls;
    last_volume = u.volume_id;
    last_epoch = u.epoch;
    last_remaining = u.replica_ids;
    last_generation_id = u.generation_id;
    Status answer = answer_;
    loop_->Post([done = std::move(done), answer] { done(answer); });
  }
  void GrowInSync(const InSyncUpdate& u, std::function<void(Status)> done) override {
    ++grow_calls;
    last_grow = u;
    Status answer = answer_;
    loop_->Post([done = std::move(done), answer] { done(answer); });
  }
  int grow_calls = 0;
  InSyncUpdate last_grow;
  int calls = 0;
  std::string last_volume;
  uint64_t last_epoch = 0;
  std::vector<std::string> last_remaining;
  uint64_t last_generation_id = 0;

 private:
  EventLoop* loop_;
  Status answer_;
};

// Issue 9, loss 2: target A (epoch 1) over r0, r1, r2; target B (epoch 2)
// over r1 and r2 only, as in a partition that cuts r0 off from B. Every later
// write of A must fail: on r0 alone it is on a minority.
TEST_F(AcknowledgeRuleTest, FencedOutTargetAcknowledgesNothingOnItsMinority) {
  AddNodes(3);
  VolumeTarget* a = StartTarget(Options(1, 2000, /*reconnect_ms=*/100));
  ASSERT_EQ(WritePattern(a, 0, 4096, 0x01), StatusCode::kOk);
  TargetOptions ob = Options(2);
  ob.replicas.erase(ob.replicas.begin());  // B cannot reach r0
  VolumeTarget* b = StartTarget(ob);
  ASSERT_NE(b->state(), TargetState::kFailed) << b->GetStatus().last_error;
  EXPECT_EQ(AckedWrites(a, 1 << 20, 40, 0xEE), 0);
  ASSERT_TRUE(RunUntil([&] { return a->state() == TargetState::kFenced; }))
      << TargetStateName(a->state()) << ": " << a->GetStatus().last_error;
  EXPECT_EQ(WritePattern(a, 0, 4096, 0xEE), StatusCode::kFailedPrecondition);
  // B's view is the truth: nothing of A's lands on B's replicas.
  for (int i = 1; i < 3; ++i) EXPECT_EQ(nodes_[i]->Data()[1 << 20], 0);
}

TEST_F(AcknowledgeRuleTest, MinorityWritesWaitThenFailAndResumeWithAMajority) {
  AddNodes(3);
  TargetOptions o = Options(1, 2000, /*reconnect_ms=*/100);
  o.quorum_wait_ms = 300;
  VolumeTarget* t = StartTarget(o);
  ASSERT_EQ(WritePattern(t, 0, 4096, 0x10), StatusCode::kOk);
  nodes_[1]->server->Stop();
  nodes_[2]->server->Stop();
  uint64_t t0 = MonotonicNanos();
  EXPECT_EQ(WritePattern(t, 8192, 4096, 0x11), StatusCode::kUnavailable);
  EXPECT_GE(MonotonicNanos() - t0, 250ull * 1000000);  // it waited for a majority first
  EXPECT_NE(t->GetStatus().last_error.find("majority"), std::string::npos)
      << t->GetStatus().last_error;
  // Reads are still served from the newest history.
  uint8_t* b = Buf(4096);
  ASSERT_EQ(Do(t, BlockOp::kRead, 0, 4096, b), StatusCode::kOk);
  EXPECT_EQ(b[0], 0x10);
  // A replica back and rebuilt: a majority again, writes are acknowledged.
  nodes_[1]->StartServer();
  ASSERT_TRUE(
      RunUntil([&] { return WritePattern(t, 8192, 4096, 0x12) == StatusCode::kOk; }, 20000));
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  EXPECT_EQ(nodes_[0]->Data()[8192], 0x12);
  EXPECT_EQ(nodes_[1]->Data()[8192], 0x12);
}

TEST_F(AcknowledgeRuleTest, AttachThatReachesOnlyAMinorityDoesNotServe) {
  AddNodes(3);
  nodes_[1]->server->Stop();
  nodes_[2]->server->Stop();
  VolumeTarget* t = NewTarget(1);
  EXPECT_EQ(t->state(), TargetState::kFailed);
  EXPECT_NE(t->GetStatus().last_error.find("majority"), std::string::npos)
      << t->GetStatus().last_error;
  uint8_t* b = Buf(4096);
  EXPECT_EQ(Do(t, BlockOp::kRead, 0, 4096, b), StatusCode::kUnavailable);
}

TEST_F(AcknowledgeRuleTest, AuthorityLetsATwoReplicaVolumeSurviveOneFault) {
  AddNodes(2);
  FakeAuthority authority(&loop_, Status::Ok());
  TargetOptions o = Options(7);
  o.authority = &authority;
  VolumeTarget* t = StartTarget(o);
  ASSERT_EQ(WritePattern(t, 0, 4096, 0x21), StatusCode::kOk);
  EXPECT_EQ(authority.calls, 0);  // both serving: a majority, nobody asked
  nodes_[1]->server->Stop();
  ASSERT_EQ(WritePattern(t, 4096, 4096, 0x22), StatusCode::kOk);
  EXPECT_EQ(authority.calls, 1);
  EXPECT_EQ(authority.last_volume, kVolume);
  EXPECT_EQ(authority.last_epoch, 7u);
  EXPECT_EQ(authority.last_remaining, std::vector<std::string>{"r0"});
  EXPECT_NE(authority.last_generation_id, 0u);
  TargetStatus st = t->GetStatus();
  EXPECT_EQ(st.in_sync, std::vector<std::string>{"r0"});
  EXPECT_EQ(nodes_[0]->Data()[4096], 0x22);
}

// Rejoin (issue 13): a record names a generation id, and a rebuilt replica
// receives that id. So once the record exists the target never moves the
// generation without moving the record first: the rebuilt replica's return to
// a majority clears it (GrowInSync with no id), and the next fault below a
// majority asks again, for the id that bump uses.
TEST_F(AcknowledgeRuleTest, ARebuiltReplicaClearsTheRecordAndTheNextFaultAsksAgain) {
  AddNodes(3);
  FakeAuthority authority(&loop_, Status::Ok());
  TargetOptions o = Options(5, 2000, /*reconnect_ms=*/100);
  o.authority = &authority;
  VolumeTarget* t = StartTarget(o);
  ASSERT_EQ(WritePattern(t, 0, 4096, 0x51), StatusCode::kOk);
  nodes_[1]->server->Stop();
  nodes_[2]->server->Stop();
  ASSERT_EQ(WritePattern(t, 4096, 4096, 0x52), StatusCode::kOk);
  ASSERT_EQ(authority.calls, 1);
  uint64_t first_id = authority.last_generation_id;
  nodes_[1]->StartServer();
  ASSERT_TRUE(RunUntil([&] { return authority.grow_calls >= 1; }, 20000))
      << t->GetStatus().last_error;
  EXPECT_EQ(authority.last_grow.generation_id, 0u);  // 2 of 3: the majority rule again
  EXPECT_TRUE(authority.last_grow.replica_ids.empty());
  EXPECT_EQ(authority.last_grow.epoch, 5u);
  EXPECT_TRUE(t->GetStatus().in_sync.empty());
  nodes_[1]->server->Stop();
  ASSERT_EQ(WritePattern(t, 8192, 4096, 0x53), StatusCode::kOk);
  EXPECT_EQ(authority.calls, 2);
  EXPECT_NE(authority.last_generation_id, first_id);
  EXPECT_EQ(authority.last_remaining, std::vector<std::string>{"r0"});
  EXPECT_EQ(nodes_[0]->Data()[8192], 0x53);
}

// A record handed over at attach is not a licence for the new target's own
// generation: with a majority reached it is cleared before the first bump.
TEST_F(AcknowledgeRuleTest, ARecordGivenAtAttachIsClearedBeforeTheFirstBump) {
  AddNodes(3);
  VolumeTarget* t1 = NewTarget(1);
  ASSERT_EQ(WritePattern(t1, 0, 4096, 0x61), StatusCode::kOk);
  TargetStatus s1 = t1->GetStatus();
  targets_.clear();
  FakeAuthority authority(&loop_, Status::Ok());
  TargetOptions o = Options(2);
  o.authority = &authority;
  o.in_sync.generation_id = s1.generation_id;
  o.in_sync.replica_ids = {"r0", "r1", "r2"};
  VolumeTarget* t2 = StartTarget(o);
  ASSERT_EQ(WritePattern(t2, 4096, 4096, 0x62), StatusCode::kOk);
  EXPECT_EQ(authority.grow_calls, 1);
  EXPECT_EQ(authority.last_grow.generation_id, 0u);
  EXPECT_EQ(authority.calls, 0);
}

TEST_F(AcknowledgeRuleTest, AuthorityRefusingAStaleEpochFencesTheTarget) {
  AddNodes(2);
  FakeAuthority authority(&loop_, Status::FailedPrecondition("epoch 3 is not current"));
  TargetOptions o = Options(3);
  o.authority = &authority;
  VolumeTarget* t = StartTarget(o);
  ASSERT_EQ(WritePattern(t, 0, 4096, 0x31), StatusCode::kOk);
  nodes_[1]->server->Stop();
  EXPECT_EQ(WritePattern(t, 4096, 4096, 0x32), StatusCode::kFailedPrecondition);
  EXPECT_EQ(t->state(), TargetState::kFenced);
  EXPECT_EQ(authority.calls, 1);
}

TEST_F(AcknowledgeRuleTest, WithoutAnAuthorityATwoReplicaVolumeStopsAcknowledgingOnAFault) {
  AddNodes(2);
  TargetOptions o = Options(1);
  o.quorum_wait_ms = 200;
  VolumeTarget* t = StartTarget(o);
  ASSERT_EQ(WritePattern(t, 0, 4096, 0x41), StatusCode::kOk);
  nodes_[1]->server->Stop();
  EXPECT_EQ(AckedWrites(t, 4096, 5, 0x42), 0);
}

// Issue 9, loss 3: r1 faulted (r0 and r2 went on at a new generation), r0's
// node gone, r1 back. A target over r1 alone, told the controller's in-sync
// record (r0, r2 at the newest generation id), must refuse to serve; a target
// that reaches a majority serves the newest history and keeps r1 STALE.
TEST_F(AcknowledgeRuleTest, StaleReplicaCannotProveTheInSyncGenerationAndIsNotServed) {
  AddNodes(3);
  VolumeTarget* t1 = NewTarget(1);
  ASSERT_EQ(WritePattern(t1, 0, 65536, 0x0A), StatusCode::kOk);
  nodes_[1]->server->Stop();
  ASSERT_EQ(WritePattern(t1, 0, 65536, 0x0B), StatusCode::kOk);
  TargetStatus s1 = t1->GetStatus();
  ASSERT_EQ(s1.replicas[1].state, ReplicaState::kFaulted);
  ASSERT_NE(s1.generation_id, 0u);
  InSyncRequirement in_sync;
  in_sync.generation_id = s1.generation_id;
  for (const ReplicaStatus& r : s1.replicas) {
    if (r.state == ReplicaState::kHealthy) in_sync.replica_ids.push_back(r.replica_id);
  }
  ASSERT_EQ(in_sync.replica_ids, (std::vector<std::string>{"r0", "r2"}));
  targets_.clear();
  nodes_[0]->server->Stop();
  nodes_[1]->StartServer();

  TargetOptions o = Options(2);
  o.replicas = {{"127.0.0.1", nodes_[1]->port, false}};
  o.in_sync = in_sync;
  VolumeTarget* t2 = StartTarget(o);
  EXPECT_EQ(t2->state(), TargetState::kFailed);
  std::string why = t2->GetStatus().last_error;
  EXPECT_NE(why.find("UNAVAILABLE"), std::string::npos) << why;
  char hex[24];
  std::snprintf(hex, sizeof(hex), "%016llx",
                static_cast<unsigned long long>(in_sync.generation_id));
  EXPECT_NE(why.find(hex), std::string::npos) << why;
  EXPECT_NE(why.find("r0 r2"), std::string::npos) << why;
  uint8_t* b = Buf(4096);
  EXPECT_EQ(Do(t2, BlockOp::kRead, 0, 4096, b), StatusCode::kUnavailable);

  // Over all three (r0 down): a majority is reached; r2 holds the newest
  // history, r1 does not and is never read.
  VolumeTarget* t3 = NewTarget(3);
  ASSERT_EQ(t3->state(), TargetState::kDegraded) << t3->GetStatus().last_error;
  TargetStatus s3 = t3->GetStatus();
  EXPECT_EQ(s3.replicas[1].state, ReplicaState::kStale);
  EXPECT_EQ(s3.replicas[2].state, ReplicaState::kHealthy);
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(Do(t3, BlockOp::kRead, 4096ull * i, 4096, b), StatusCode::kOk);
    EXPECT_EQ(b[0], 0x0B);
  }
  EXPECT_EQ(t3->GetStatus().replicas[1].reads, 0u);
}

// Equal generation numbers do not make equal histories: two replicas that
// reached the same number by different bumps are not both served.
TEST_F(AcknowledgeRuleTest, SameGenerationNumberWithDifferentIdsIsNotServedAsOne) {
  AddNodes(3);
  for (int i = 0; i < 3; ++i) nodes_[i]->server->Stop();
  auto set = [&](int i, uint64_t gen, uint64_t id) {
    ASSERT_TRUE(nodes_[i]->replica()->SetGeneration(gen, false, id, {}).ok());
  };
  set(0, 5, 0x1111);
  set(1, 5, 0x2222);
  set(2, 5, 0x1111);
  for (auto& n : nodes_) n->StartServer();
  InSyncRequirement in_sync;
  in_sync.generation_id = 0x1111;
  in_sync.replica_ids = {"r0", "r2"};
  TargetOptions o = Options(1);
  o.in_sync = in_sync;
  VolumeTarget* t = StartTarget(o);
  ASSERT_EQ(t->state(), TargetState::kDegraded) << t->GetStatus().last_error;
  TargetStatus st = t->GetStatus();
  EXPECT_EQ(st.replicas[0].state, ReplicaState::kHealthy);
  EXPECT_EQ(st.replicas[1].state, ReplicaState::kStale);
  EXPECT_EQ(st.replicas[2].state, ReplicaState::kHealthy);
  // Without the controller's record the histories at generation 5 conflict.
  targets_.clear();
  for (int i = 0; i < 3; ++i) nodes_[i]->server->Stop();
  set(0, 6, 0x3333);
  set(2, 6, 0x4444);
  for (auto& n : nodes_) n->StartServer();
  VolumeTarget* t2 = NewTarget(2);
  EXPECT_EQ(t2->state(), TargetState::kFailed);
  EXPECT_NE(t2->GetStatus().last_error.find("different histories"), std::string::npos)
      << t2->GetStatus().last_error;
}

// Issue 9, "target crash leaves replicas divergent": writes in flight when a
// target dies may be on some replicas and not others. The activity log names
// their extents; the next attach copies them from one replica to the others
// before it serves, so every replica reads the same.
TEST_F(AcknowledgeRuleTest, AttachAfterATargetCrashResyncsTheActivityLogExtents) {
  AddNodes(3);
  if (nodes_[0]->replica()->metadata().activity_extent_size == 0) {
    GTEST_SKIP() << "these replicas keep no activity log";
  }
  VolumeTarget* t1 = NewTarget(1);
  ASSERT_EQ(WritePattern(t1, 0, 1 << 20, 0x51), StatusCode::kOk);
  ASSERT_EQ(Do(t1, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  ASSERT_EQ(WritePattern(t1, 8 << 20, 65536, 0x52), StatusCode::kOk);
  targets_.clear();  // the target dies (no flush, no clean detach)
  // A write of the dead target that reached r0 only.
  {
    std::vector<uint8_t> b(65536, 0x5F);
    int fd = ::open((nodes_[0]->dir + "/replicas/" + kVolume + "/data").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, b.data(), b.size(), (8 << 20) + 65536), 65536);
    ::fsync(fd);
    ::close(fd);
  }
  ASSERT_NE(nodes_[0]->Data()[(8 << 20) + 65536], nodes_[1]->Data()[(8 << 20) + 65536]);
  VolumeTarget* t2 = NewTarget(2);
  ASSERT_EQ(t2->state(), TargetState::kReady) << t2->GetStatus().last_error;
  TargetStatus st = t2->GetStatus();
  EXPECT_GT(st.activity_resync_bytes, 0u);
  // Only the active extents, not the volume.
  EXPECT_LE(st.activity_resync_bytes, 2 * 2 * (4ull << 20));
  ASSERT_EQ(Do(t2, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  std::vector<uint8_t> d0 = nodes_[0]->Data();
  for (int i = 1; i < 3; ++i) EXPECT_TRUE(nodes_[i]->Data() == d0) << "replica " << i << " differs";
  EXPECT_EQ(d0[8 << 20], 0x52);  // the acknowledged write is everywhere
}

// A replica added to a live volume has never held it: until its rebuild makes
// it HEALTHY it does not count toward the majority, so growing a 1-replica
// volume to 2 does not stall writes (and a fault of the new one loses nothing).
TEST_F(AcknowledgeRuleTest, AnAddedReplicaCountsTowardTheMajorityOnlyOnceRebuilt) {
  AddNodes(2);
  TargetOptions o = Options(1);
  o.replicas.pop_back();
  o.rebuild_rate_bytes_per_sec = 8ull << 20;  // ~2 s of copying
  o.quorum_wait_ms = 200;
  VolumeTarget* t = StartTarget(o);
  for (uint64_t off = 0; off < kVolumeSize; off += 1 << 20) {
    ASSERT_EQ(WritePattern(t, off, 1 << 20, 0x71), StatusCode::kOk);
  }
  ASSERT_TRUE(t->AddReplica({"127.0.0.1", nodes_[1]->port, false}).ok());
  ASSERT_TRUE(RunUntil([&] { return t->GetStatus().rebuild.state == RebuildState::kRunning; }));
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(WritePattern(t, 4096ull * i, 4096, 0x72), StatusCode::kOk) << "write " << i;
  }
  EXPECT_EQ(t->GetStatus().rebuild.state, RebuildState::kRunning);
  ASSERT_TRUE(RunUntil([&] { return t->GetStatus().state == TargetState::kReady; }, 30000));
  // Now both count: one of two is not a majority.
  nodes_[1]->server->Stop();
  EXPECT_EQ(WritePattern(t, 0, 4096, 0x73), StatusCode::kUnavailable);
}

// Issue 17: removing a replica from a live target (the reconciler's
// replacement) must not lower the majority's denominator: the controller's
// record lists the removed replica until it swaps in the new one, and a
// majority of the record must hold every acknowledged write. Here two of
// three are removed: r0 alone is not a majority of the three the record
// lists. A replacement rebuilt takes one removed place: then two of three.
TEST_F(AcknowledgeRuleTest, RemovedReplicasKeepTheirPlaceInTheMajorityUntilReplaced) {
  AddNodes(4);
  TargetOptions o = Options(1);
  o.replicas.pop_back();  // node 3 is the replacement
  o.quorum_wait_ms = 200;
  VolumeTarget* t = StartTarget(o);
  ASSERT_EQ(WritePattern(t, 0, 4096, 0x91), StatusCode::kOk);
  for (int i = 1; i < 3; ++i) {
    ASSERT_TRUE(t->RemoveReplica("127.0.0.1:" + std::to_string(nodes_[i]->port)).ok());
  }
  EXPECT_EQ(WritePattern(t, 4096, 4096, 0x92), StatusCode::kUnavailable)
      << "acknowledged on one replica of the three the record lists";
  ASSERT_TRUE(t->AddReplica({"127.0.0.1", nodes_[3]->port, false}).ok());
  ASSERT_TRUE(RunUntil([&] { return WritePattern(t, 8192, 4096, 0x93) == StatusCode::kOk; }, 20000))
      << t->GetStatus().last_error;
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  EXPECT_EQ(nodes_[3]->Data()[8192], 0x93);
  EXPECT_EQ(nodes_[3]->Data()[0], 0x91);
}

// Issue 17: replicas that never held data (added, e.g. by a grow from three
// to five, and not rebuilt yet: generation 0) are not reached replicas. A new
// target reaching a stale replica and two empty ones of five must not serve
// the stale one: the writes it missed are on the two it did not reach.
TEST_F(AcknowledgeRuleTest, AttachDoesNotCountReplicasThatNeverHeldData) {
  AddNodes(5);
  TargetOptions o = Options(1);
  o.replicas.resize(3);
  VolumeTarget* t1 = StartTarget(o);
  ASSERT_EQ(WritePattern(t1, 0, 4096, 0xA1), StatusCode::kOk);
  nodes_[1]->server->Stop();
  ASSERT_EQ(WritePattern(t1, 4096, 4096, 0xA2), StatusCode::kOk);  // on r0 and r2
  targets_.clear();
  nodes_[0]->server->Stop();
  nodes_[2]->server->Stop();
  nodes_[1]->StartServer();
  VolumeTarget* t2 = NewTarget(2);  // r0..r4; reaches r1 (stale), r3 and r4 (empty)
  EXPECT_EQ(t2->state(), TargetState::kFailed) << "served the stale replica";
  EXPECT_NE(t2->GetStatus().last_error.find("majority"), std::string::npos)
      << t2->GetStatus().last_error;
  uint8_t* b = Buf(4096);
  EXPECT_EQ(Do(t2, BlockOp::kRead, 4096, 4096, b), StatusCode::kUnavailable);
}

// Issue 9: equal epochs must not be accepted from a second target. The
// replicas remember which target owns their highest epoch.
TEST_F(AcknowledgeRuleTest, ASecondTargetWithTheSameEpochIsRefused) {
  AddNodes(3);
  VolumeTarget* a = NewTarget(4);
  ASSERT_EQ(WritePattern(a, 0, 4096, 0x81), StatusCode::kOk);
  VolumeTarget* b = NewTarget(4);
  EXPECT_TRUE(b->state() == TargetState::kFenced || b->state() == TargetState::kFailed)
      << TargetStateName(b->state());
  uint8_t* buf = Buf(4096);
  EXPECT_NE(Do(b, BlockOp::kRead, 0, 4096, buf), StatusCode::kOk);
  // The owner is untouched by the refused one.
  ASSERT_EQ(WritePattern(a, 4096, 4096, 0x82), StatusCode::kOk);
  EXPECT_EQ(a->state(), TargetState::kReady);
}

}  // namespace
}  // namespace tandem::target
