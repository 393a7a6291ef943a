// A refused HELLO leaves nothing behind (issue 10): the server keeps a
// volume's state (its replica, open, and its highest epoch) only while a
// session is bound to it, so a refusal neither pins the replica nor freezes
// an epoch the next HELLO should reload.

#include <memory>
#include <string>

#include "tests/support/testing_server.h"

namespace tandem::server::testing {
namespace {

class HelloRefusalTest : public ServerFixture {
 protected:
  // References to vol-1's replica besides the manager's and `r`'s own.
  long ExtraRefs(const std::shared_ptr<replica::Replica>& r) {
    (void)server_->GetStats();  // a barrier: the loop has handled what it was sent
    return r.use_count() - 2;
  }
  // HELLO on a raw connection; the reply's status.
  protocol::WireStatus RawHello(uint64_t epoch, uint64_t target_id) {
    RawPeer p;
    EXPECT_TRUE(p.Connect(port_));
    EXPECT_TRUE(p.Send(HelloFrame("vol-1", kToken, epoch, target_id)));
    protocol::FrameHeader h;
    std::string payload;
    EXPECT_TRUE(p.ReadFrame(&h, &payload));
    EXPECT_TRUE(h.status == protocol::WireStatus::kOk || p.WaitClosed(5000));
    return h.status;
  }
};

TEST_F(HelloRefusalTest, RefusedHelloLeavesNoVolumeStateBehind) {
  StartServer();
  auto r = manager_->Get("vol-1");
  ASSERT_TRUE(r.ok());
  // A target at epoch 5 comes and goes: the replica now refuses lower epochs
  // and other targets at 5.
  {
    TestListener l;
    client::ClientOptions o = Options("vol-1", 5);
    o.target_id = 0xA;
    client::ReplicaClient* c = Connect(&l, o);
    ASSERT_TRUE(l.connected);
    EXPECT_GE(ExtraRefs(*r), 1) << "a bound session holds the replica";
    c->Close();
  }
  const uint64_t deadline = MonotonicNanos() + 5'000'000'000ull;
  while (ExtraRefs(*r) != 0 && MonotonicNanos() < deadline) loop_.RunOnce(10);
  ASSERT_EQ(ExtraRefs(*r), 0) << "the last session gone, the volume state goes";

  EXPECT_EQ(RawHello(3, 0xA), protocol::WireStatus::kStaleEpoch);
  EXPECT_EQ(ExtraRefs(*r), 0) << "a HELLO refused for a lower epoch";
  EXPECT_EQ(RawHello(5, 0xB), protocol::WireStatus::kStaleEpoch);
  EXPECT_EQ(ExtraRefs(*r), 0) << "a HELLO refused for another target's epoch";

  // And the state the next HELLO loads is the replica's current one.
  EXPECT_EQ(RawHello(6, 0xB), protocol::WireStatus::kOk);
  EXPECT_EQ((*r)->metadata().highest_epoch, 6u);
}

}  // namespace
}  // namespace tandem::server::testing
