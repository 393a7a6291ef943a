// Per-session buffer quota (issue 10): a peer that stops reading its socket
// pins at most its share of the shared buffer pool; the other sessions, of
// its volume and of others, keep flowing.

#include <cstring>
#include <string>

#include "tests/support/testing_server.h"

namespace tandem::server::testing {
namespace {

using protocol::Opcode;

class SessionQuotaTest : public ServerFixture {};

// Sends `count` 1 MiB READs on an authenticated raw connection that never
// reads the replies (its receive buffer is tiny, so they pile up on the
// server, holding their buffers until the socket drains).
void FloodReadsWithoutReading(RawPeer* peer, uint16_t port, const std::string& volume, int count) {
  ASSERT_TRUE(peer->Connect(port, 4096));
  ASSERT_TRUE(peer->Send(HelloFrame(volume, kToken, 1)));
  protocol::FrameHeader h;
  std::string payload;
  ASSERT_TRUE(peer->ReadFrame(&h, &payload));
  ASSERT_EQ(h.status, protocol::WireStatus::kOk);
  std::string frames;
  for (int i = 0; i < count; ++i) {
    protocol::FrameHeader r;
    r.opcode = static_cast<uint8_t>(Opcode::kRead);
    r.request_id = 100 + static_cast<uint64_t>(i);
    r.offset = (static_cast<uint64_t>(i) % 32) << 20;
    r.length = protocol::kMaxIoSize;
    frames += EncodeFrame(r, "");
  }
  ASSERT_TRUE(peer->Send(frames));
}

TEST_F(SessionQuotaTest, PeerThatNeverReadsStallsOnlyItself) {
  StartServer();  // 32 MiB pool: three 1 MiB buffers, one per session at share 4
  RawPeer stuck;
  FloodReadsWithoutReading(&stuck, port_, "vol-1", 60);

  // Wait (bounded) until the stuck session has hit its quota: the replies it
  // cannot send hold its buffers. Without a quota it never does, and holds
  // the whole class instead.
  const uint64_t deadline = MonotonicNanos() + 5'000'000'000ull;
  while (server_->GetStats().session_quota_stalls == 0 && MonotonicNanos() < deadline) {
    loop_.RunOnce(10);
  }

  // Other sessions, on the other volume and on the same one, move 1 MiB
  // requests: they find buffers of that class free.
  void* buf = AlignedBuffer(protocol::kMaxIoSize);
  std::memset(buf, 0x5A, protocol::kMaxIoSize);
  for (const char* volume : {"vol-2", "vol-1"}) {
    TestListener l;
    client::ReplicaClient* c = Connect(&l, Options(volume, 1));
    ASSERT_TRUE(l.connected) << volume << ": " << l.why.ToString();
    for (int i = 0; i < 8; ++i) {
      ASSERT_EQ(Do(c, Opcode::kWrite, uint64_t(i) << 20, protocol::kMaxIoSize, buf, 5000),
                StatusCode::kOk)
          << volume << " write " << i;
      ASSERT_EQ(Do(c, Opcode::kRead, uint64_t(i) << 20, protocol::kMaxIoSize, buf, 5000),
                StatusCode::kOk)
          << volume << " read " << i;
    }
    c->Close();
  }
  EXPECT_GT(server_->GetStats().session_quota_stalls, 0u);
  std::free(buf);
}

TEST_F(SessionQuotaTest, ShareOfOneLetsASessionTakeTheWholeClass) {
  // The knob's meaning, checked from the other side: without a quota the
  // stuck peer holds every 1 MiB buffer and another volume's 1 MiB READ
  // cannot start (it would wait until the peer reads).
  options_.session_pool_share = 1;
  StartServer();
  RawPeer stuck;
  FloodReadsWithoutReading(&stuck, port_, "vol-1", 60);
  TestListener l;
  client::ReplicaClient* c = Connect(&l, Options("vol-2", 1));
  ASSERT_TRUE(l.connected);
  void* buf = AlignedBuffer(protocol::kMaxIoSize);
  EXPECT_EQ(Do(c, Opcode::kRead, 0, protocol::kMaxIoSize, buf, 1000),
            StatusCode::kDeadlineExceeded);
  EXPECT_EQ(server_->GetStats().session_quota_stalls, 0u);
  // Small requests use another class and still pass.
  TestListener l2;
  client::ReplicaClient* c2 = Connect(&l2, Options("vol-2", 1));
  EXPECT_EQ(Do(c2, Opcode::kRead, 0, 4096, buf), StatusCode::kOk);
  stuck.Close();  // the server can now drop the pinned replies
  std::free(buf);
}

}  // namespace
}  // namespace tandem::server::testing
