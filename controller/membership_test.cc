// The membership authority over the wire (issue 13, docs/architecture.md
// "Who may acknowledge"): a real tandem-controller (SQLite) serving
// tandem.controller.v1.Membership and real tandem-engine processes started
// with --controller, a live target behind a FUSE file export.
//
// - Two of three replica engines are SIGKILLed while a writer writes and
//   fsyncs: the target asks the controller to shrink the in-sync set, the
//   controller records it, and writes go on being acknowledged.
// - "A new target over a stale replica alone": published elsewhere when only
//   replicas outside the recorded in-sync set are reachable, the target is
//   UNAVAILABLE; with the in-sync replica back it serves every byte written,
//   rebuilds the others, and the record is cleared (a majority again).
// - The service's rules: stale epoch FAILED_PRECONDITION, repeats OK, an
//   older generation refused.
// "Old target keeps writing after a new publish gets no acknowledged write"
// is node-plugin/node_e2e_test.cc
// FailoverToAnotherNodeFencesTheFrozenOneAndKeepsEveryFsyncedByte
// (real controller, SIGSTOPped engine, forced unpublish) and, engine-level,
// replica-engine/volume/acknowledge_rule_test.cc.

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "controller/testing_fuse_target.h"
#include "replica-engine/proto/membership.grpc.pb.h"

namespace tandem::controller::cluster_testing {
namespace {

constexpr uint64_t kSize = 16 << 20;

class MembershipTest : public FuseTargetTest {
 protected:
  MembershipTest() : FuseTargetTest(kSize) {}

  void SetUp() override {
    FuseTargetTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    membership_ = ::tandem::controller::v1::Membership::NewStub(grpc::CreateChannel(
        "unix:" + cluster_.root() + "/csi.sock", grpc::InsecureChannelCredentials()));
  }

  // The replica id on engine `node`'s data address, from publish_context.
  static std::string ReplicaIdAt(const PublishContext& ctx, const std::string& address) {
    for (const auto& r : ctx.replicas) {
      if (r.address == address) return r.replica_id;
    }
    return "";
  }

  // One Membership call as a target makes it (seq 0: unnumbered; no id and
  // no replicas: a clear).
  grpc::Status InSync(bool shrink, const std::string& id, uint64_t epoch, uint64_t seq,
                      uint64_t gen, uint64_t gen_id, const std::vector<std::string>& ids) {
    ::tandem::controller::v1::InSyncRequest req;
    req.set_volume_id(id);
    req.set_epoch(epoch);
    req.set_seq(seq);
    req.set_generation(gen);
    req.set_generation_id(gen_id);
    for (const auto& s : ids) req.add_replica_ids(s);
    ::tandem::controller::v1::InSyncResponse resp;
    return shrink ? membership_->ShrinkInSync(Ctx().get(), req, &resp)
                  : membership_->GrowInSync(Ctx().get(), req, &resp);
  }

  std::unique_ptr<::tandem::controller::v1::Membership::Stub> membership_;
};

TEST_F(MembershipTest, ShrinkIsRecordedAndAStaleReplicaAloneIsNotServed) {
  const std::string id = CreateVolume("auth");
  auto ctx = Publish(id, 0);
  ASSERT_TRUE(ctx.ok()) << ctx.status().ToString();
  EXPECT_EQ(ctx->in_sync_generation_id, 0u);
  auto target = Attach(id, 0, *ctx);
  ASSERT_TRUE(target.ok()) << target.status().ToString();
  const std::string file = target->export_path();
  const std::string r0 = ReplicaIdAt(*ctx, cluster_.engines()[0].data_address());
  ASSERT_FALSE(r0.empty());

  // A writer: block b, round n; every acknowledged (fsync'd) round is what
  // the volume must hold. Two replica engines die in the middle.
  int fd = open(file.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << file << ": " << strerror(errno);
  const uint64_t blocks = kSize / kBlock;
  std::vector<uint32_t> acked(blocks, 0);
  std::vector<char> buf(kBlock);
  int failures = 0;
  for (uint32_t round = 1; round <= 6; ++round) {
    if (round == 3) {
      cluster_.engines()[1].process->Kill();
      cluster_.engines()[2].process->Kill();
    }
    for (uint64_t b = 0; b < blocks; b += round) {
      Fill(&buf, b, round);
      if (pwrite(fd, buf.data(), kBlock, static_cast<off_t>(b * kBlock)) !=
          static_cast<ssize_t>(kBlock)) {
        ++failures;
        continue;
      }
      if (fdatasync(fd) != 0) {
        ++failures;
        continue;
      }
      acked[b] = round;
    }
  }
  EXPECT_EQ(failures, 0) << "writes failed after two replicas died (run dir " << cluster_.root()
                         << ")";
  close(fd);
  // The target reports the set the authority recorded: r0 alone.
  auto t = Engine(0).GetTarget(id, std::chrono::seconds(5));
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->in_sync_replica_ids_size(), 1) << t->DebugString();
  EXPECT_EQ(t->in_sync_replica_ids(0), r0);

  // Detach (fencing needs a majority of the replicas: e1, e2 back first,
  // with the old target gone so that nothing rebuilds them).
  ASSERT_TRUE(Engine(0).DestroyTarget(id, std::chrono::seconds(30)).ok());
  ASSERT_TRUE(cluster_.StartEngine(&cluster_.engines()[1]).ok());
  ASSERT_TRUE(cluster_.StartEngine(&cluster_.engines()[2]).ok());
  grpc::Status un;
  ASSERT_TRUE(
      testing::WaitFor([&] { return (un = UnpublishOnce(id, 0)).ok(); }, std::chrono::seconds(30)))
      << un.error_message();

  // Only the stale replicas reachable: the next publish hands over the
  // controller's record, and the target refuses to serve.
  cluster_.engines()[0].process->Kill();
  auto ctx1 = Publish(id, 1);
  ASSERT_TRUE(ctx1.ok()) << ctx1.status().ToString();
  EXPECT_NE(ctx1->in_sync_generation_id, 0u);
  EXPECT_EQ(ctx1->in_sync_replica_ids, std::vector<std::string>{r0});
  auto stale = Attach(id, 1, *ctx1);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.status().code(), StatusCode::kUnavailable) << stale.status().ToString();
  EXPECT_NE(stale.status().message().find("generation id"), std::string::npos)
      << stale.status().ToString();

  // The in-sync replica back: every acknowledged byte is there, the others
  // are rebuilt, and with all three serving the record is cleared.
  // (The refused target claimed epoch ctx1->epoch on the replicas it
  // reached: a retry is a new publish.)
  ASSERT_TRUE(cluster_.StartEngine(&cluster_.engines()[0]).ok());
  // (Retried as the CO does: the controller's channels to the restarted
  // engines may still be in gRPC's reconnect backoff.)
  ASSERT_TRUE(
      testing::WaitFor([&] { return (un = UnpublishOnce(id, 1)).ok(); }, std::chrono::seconds(60)))
      << un.error_message();
  ctx1 = Publish(id, 1);
  ASSERT_TRUE(ctx1.ok()) << ctx1.status().ToString();
  EXPECT_EQ(ctx1->in_sync_replica_ids, std::vector<std::string>{r0});
  target = Attach(id, 1, *ctx1);
  ASSERT_TRUE(target.ok()) << target.status().ToString();
  fd = open(target->export_path().c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::vector<char> want(kBlock);
  int bad = 0;
  for (uint64_t b = 0; b < blocks; ++b) {
    ASSERT_EQ(pread(fd, buf.data(), kBlock, static_cast<off_t>(b * kBlock)),
              static_cast<ssize_t>(kBlock));
    Fill(&want, b, acked[b]);
    bad += std::memcmp(buf.data(), want.data(), kBlock) != 0;
  }
  close(fd);
  EXPECT_EQ(bad, 0) << "blocks differing from what was acknowledged";
  bool ready = testing::WaitFor(
      [&] {
        auto s = Engine(1).GetTarget(id, std::chrono::seconds(5));
        return s.ok() && s->state() == engine::v1::TARGET_STATE_READY;
      },
      std::chrono::seconds(60));
  ASSERT_TRUE(ready) << "the stale replicas were not rebuilt (run dir " << cluster_.root() << ")";
  ASSERT_TRUE(Engine(1).DestroyTarget(id, std::chrono::seconds(30)).ok());
  ASSERT_TRUE(UnpublishOnce(id, 1).ok());
  auto ctx2 = Publish(id, 2);
  ASSERT_TRUE(ctx2.ok());
  EXPECT_EQ(ctx2->in_sync_generation_id, 0u) << "the rejoin did not clear the record";
  EXPECT_TRUE(ctx2->in_sync_replica_ids.empty());
  EXPECT_TRUE(UnpublishOnce(id, 2).ok());
}

TEST_F(MembershipTest, ServiceRefusesStaleEpochsAndOlderGenerationsAndRepeatsAreOk) {
  const std::string id = CreateVolume("rules");
  auto ctx = Publish(id, 0);
  ASSERT_TRUE(ctx.ok());
  auto call = [&](bool shrink, uint64_t epoch, uint64_t gen, uint64_t gen_id,
                  const std::vector<std::string>& ids) {
    return InSync(shrink, id, epoch, 0, gen, gen_id, ids);
  };
  const std::string r0 = ctx->replicas[0].replica_id, r1 = ctx->replicas[1].replica_id;
  const uint64_t e = ctx->epoch;
  EXPECT_EQ(call(true, e + 1, 5, 0xAB, {r0}).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(call(true, e, 5, 0xAB, {r0}).error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(call(true, e, 5, 0xAB, {r0}).error_code(), grpc::StatusCode::OK);  // repeated
  EXPECT_EQ(call(true, e, 4, 0xAA, {r0, r1}).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(call(true, e, 5, 0xAC, {r0}).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(call(false, e, 5, 0xAB, {r0, r1}).error_code(), grpc::StatusCode::OK);  // rejoin
  // A late shrink of that generation no longer applies.
  EXPECT_EQ(call(true, e, 5, 0xAB, {r0}).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(call(true, e, 6, 0xAD, {"nobody"}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(call(true, e, 6, 0, {}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // The record travels with the next publish; an unpublished volume refuses.
  ASSERT_TRUE(UnpublishOnce(id, 0).ok());
  EXPECT_EQ(call(false, e, 7, 0, {}).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  auto next = Publish(id, 1);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->in_sync_generation_id, 0xABu);
  EXPECT_EQ(next->in_sync_replica_ids, (std::vector<std::string>{r0, r1}));
  EXPECT_EQ(call(false, next->epoch, 1, 0, {}).error_code(), grpc::StatusCode::OK);  // cleared
  ASSERT_TRUE(UnpublishOnce(id, 1).ok());
  next = Publish(id, 1);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->in_sync_generation_id, 0u);
  ASSERT_TRUE(UnpublishOnce(id, 1).ok());
}

// Issue 17: a target's call whose deadline expired may still reach the
// controller after the call that replaced it (a grow after the clear that
// followed it, both at one generation number). Numbered calls are ordered by
// seq: the late one is refused as superseded (ABORTED, which the target takes
// for "ask again", never FAILED_PRECONDITION, which would fence it), and a
// clear for a lower generation number after a shrink for the next one is
// accepted (a majority came back before the shrink's answer did).
TEST_F(MembershipTest, ServiceOrdersNumberedCallsBySeqAndRefusesALateOlderOne) {
  const std::string id = CreateVolume("seq");
  auto ctx = Publish(id, 0);
  ASSERT_TRUE(ctx.ok());
  auto call = [&](bool shrink, uint64_t seq, uint64_t gen, uint64_t gen_id,
                  const std::vector<std::string>& ids) {
    return InSync(shrink, id, ctx->epoch, seq, gen, gen_id, ids);
  };
  const std::string r0 = ctx->replicas[0].replica_id, r1 = ctx->replicas[1].replica_id;
  EXPECT_EQ(call(true, 1, 5, 0xAB, {r0}).error_code(), grpc::StatusCode::OK);
  // Its answer was lost; a majority is back: clear at generation 4.
  EXPECT_EQ(call(false, 2, 4, 0, {}).error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(call(false, 2, 4, 0, {}).error_code(), grpc::StatusCode::OK);  // repeated
  EXPECT_EQ(call(true, 3, 5, 0xAC, {r0}).error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(call(false, 4, 5, 0xAC, {r0, r1}).error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(call(false, 5, 5, 0, {}).error_code(), grpc::StatusCode::OK);
  // The grow (seq 4) arrives again after the clear that replaced it.
  EXPECT_EQ(call(false, 4, 5, 0xAC, {r0, r1}).error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(call(true, 3, 5, 0xAC, {r0}).error_code(), grpc::StatusCode::ABORTED);
  ASSERT_TRUE(UnpublishOnce(id, 0).ok());
  auto next = Publish(id, 1);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->in_sync_generation_id, 0u) << "a late grow undid the clear";
  EXPECT_TRUE(next->in_sync_replica_ids.empty());
  ASSERT_TRUE(UnpublishOnce(id, 1).ok());
}

// Issue 17: an unpublish's fence must stop the old target, whose majority
// does not count replicas added and never rebuilt. A 1-replica volume,
// published, grown to 3 (two new replicas at generation 0, not yet rebuilt):
// with the original replica's engine down, fencing the two new ones does not
// stop a target writing the original alone, so the unpublish is UNAVAILABLE.
TEST_F(MembershipTest, UnpublishDoesNotCountNeverRebuiltReplicasAsFenced) {
  const std::string id = CreateVolume("joining", 1);
  auto ctx = Publish(id, 0);
  ASSERT_TRUE(ctx.ok());
  ASSERT_EQ(ctx->replicas.size(), 1u);
  grpc::Status st = SetReplicas(ctl_.get(), id, 3);
  ASSERT_TRUE(st.ok()) << st.error_message();
  int original = -1;
  for (int i = 0; i < 3; ++i) {
    if (cluster_.engines()[i].data_address() == ctx->replicas[0].address) original = i;
  }
  ASSERT_GE(original, 0);
  cluster_.engines()[original].process->Kill();
  st = UnpublishOnce(id, 0);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE)
      << "fenced two never-rebuilt replicas and took it for a majority: " << st.error_message();
  EXPECT_NE(st.error_message().find("never rebuilt"), std::string::npos) << st.error_message();
}

// Issue 17: the membership authority writes the volume record at any time,
// so a ModifyVolume grow must not fail (with its replicas created and added
// to the live target but not recorded) when the record changed under it:
// it re-reads it and records the new replicas.
TEST_F(MembershipTest, ModifyVolumeGrowRecordsItsReplicasWhileTheAuthorityWrites) {
  const std::string id = CreateVolume("grow-race", 1);
  auto ctx = Publish(id, 0);
  ASSERT_TRUE(ctx.ok());
  std::atomic<bool> stop{false};
  std::atomic<int> recorded{0};
  std::thread writer([&] {
    // Clears with increasing seq: each one is a write of the record.
    for (uint64_t seq = 1; !stop && seq < 20000; ++seq) {
      if (InSync(false, id, ctx->epoch, seq, 1, 0, {}).ok()) ++recorded;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  while (recorded < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  grpc::Status st = SetReplicas(ctl_.get(), id, 3);
  stop = true;
  writer.join();
  EXPECT_TRUE(st.ok()) << st.error_message();
  ASSERT_TRUE(UnpublishOnce(id, 0).ok());
  auto next = Publish(id, 1);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->replicas.size(), 3u);
  EXPECT_TRUE(UnpublishOnce(id, 1).ok());
}

}  // namespace
}  // namespace tandem::controller::cluster_testing
