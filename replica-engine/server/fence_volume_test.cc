// FenceVolume (engine API FenceReplica, issue 13): the controller's unpublish
// raises a replica's epoch without any target, and the old target can no
// longer write: its next request is answered STALE_EPOCH and does not land,
// a new HELLO at its epoch is refused, and the epoch survives a restart.

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/testing_server.h"

namespace tandem::server::testing {
namespace {

class FenceVolumeTest : public ServerFixture {};

TEST_F(FenceVolumeTest, FenceSupersedesTheOldTargetAndPersists) {
  StartServer();
  void* buf = AlignedBuffer(4096);
  std::memset(buf, 0x11, 4096);
  TestListener a;
  client::ClientOptions o = Options("vol-1", 3);
  o.target_id = 0xA;
  client::ReplicaClient* ca = Connect(&a, o);
  ASSERT_TRUE(a.connected);
  ASSERT_EQ(Do(ca, protocol::Opcode::kWrite, 0, 4096, buf), StatusCode::kOk);

  ASSERT_TRUE(server_->FenceVolume("vol-1", 4).ok());
  auto r = manager_->Get("vol-1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->metadata().highest_epoch, 4u);

  // The old target's next write is refused and does not land.
  std::memset(buf, 0x22, 4096);
  TestOp stale(protocol::Opcode::kWrite, 8192, 4096, buf);
  ca->Submit(&stale.req);
  ASSERT_TRUE(RunUntil([&] { return stale.done; }));
  EXPECT_EQ(stale.req.wire_status, protocol::WireStatus::kStaleEpoch);
  ASSERT_TRUE(RunUntil([&] { return a.disconnected; }));
  // Reconnecting at its epoch is refused too.
  TestListener again;
  Connect(&again, o);
  EXPECT_FALSE(again.connected);
  EXPECT_EQ(again.why.code(), StatusCode::kFailedPrecondition) << again.why.ToString();
  // A newer target (the next publish) reads zeroes where the fenced one wrote.
  TestListener b;
  client::ClientOptions ob = Options("vol-1", 5);
  ob.target_id = 0xB;
  client::ReplicaClient* cb = Connect(&b, ob);
  ASSERT_TRUE(b.connected);
  ASSERT_EQ(Do(cb, protocol::Opcode::kRead, 8192, 4096, buf), StatusCode::kOk);
  EXPECT_EQ(std::vector<uint8_t>(static_cast<uint8_t*>(buf), static_cast<uint8_t*>(buf) + 4096),
            std::vector<uint8_t>(4096, 0));
  std::free(buf);
}

TEST_F(FenceVolumeTest, FenceWithoutSessionsPersistsAndLowerEpochIsNoOp) {
  StartServer();
  ASSERT_TRUE(server_->FenceVolume("vol-2", 7).ok());
  ASSERT_TRUE(server_->FenceVolume("vol-2", 2).ok());  // already above: no-op
  auto r = manager_->Get("vol-2");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->metadata().highest_epoch, 7u);
  TestListener l;
  Connect(&l, Options("vol-2", 6));
  EXPECT_FALSE(l.connected);
  EXPECT_EQ(server_->FenceVolume("no-such-volume", 1).code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace tandem::server::testing
