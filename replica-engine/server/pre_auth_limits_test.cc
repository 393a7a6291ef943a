// Pre-authentication limits on the data port (issue 10): a connection cap, a
// cap on connections still in their handshake (the oldest is evicted), a
// handshake timeout, nothing large accepted or allocated before HELLO, and an
// idle timeout for authenticated sessions (which the client's keepalive
// prevents). Other volumes' I/O keeps flowing throughout.

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/testing_server.h"

namespace tandem::server::testing {
namespace {

using protocol::Opcode;

class PreAuthLimitsTest : public ServerFixture {
 protected:
  // A 4 KiB write and read-back on `c`.
  void RoundTrip(client::ReplicaClient* c, uint8_t fill) {
    void* buf = AlignedBuffer(4096);
    std::memset(buf, fill, 4096);
    EXPECT_EQ(Do(c, Opcode::kWrite, 8192, 4096, buf, 5000), StatusCode::kOk);
    std::memset(buf, 0, 4096);
    EXPECT_EQ(Do(c, Opcode::kRead, 8192, 4096, buf, 5000), StatusCode::kOk);
    EXPECT_EQ(static_cast<uint8_t*>(buf)[4095], fill);
    std::free(buf);
  }
};

TEST_F(PreAuthLimitsTest, IdleSocketsAndABigWriteBeforeHelloDoNotStopOtherVolumes) {
  options_.max_connections = 48;
  options_.max_handshaking = 16;
  options_.handshake_timeout_ms = 500;
  StartServer();
  TestListener l;
  client::ReplicaClient* c = Connect(&l, Options("vol-2"));
  ASSERT_TRUE(l.connected) << l.why.ToString();
  RoundTrip(c, 1);

  // 100 sockets that never say anything.
  std::vector<std::unique_ptr<RawPeer>> idle;
  for (int i = 0; i < 100; ++i) {
    idle.push_back(std::make_unique<RawPeer>());
    ASSERT_TRUE(idle.back()->Connect(port_));
    if (i % 20 == 19) RoundTrip(c, static_cast<uint8_t>(i));
  }
  // A 1 MiB WRITE before HELLO: only its header is sent. The server must
  // refuse it on the header alone (a receive buffer for it is never made).
  RawPeer big;
  ASSERT_TRUE(big.Connect(port_));
  protocol::FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kWrite);
  h.request_id = 7;
  h.length = protocol::kMaxIoSize;
  h.payload_length = protocol::kMaxIoSize;
  h.payload_crc = 0;
  std::string header(protocol::kHeaderSize, '\0');
  protocol::EncodeHeader(h, reinterpret_cast<uint8_t*>(header.data()));
  ASSERT_TRUE(big.Send(header + std::string(4096, 'x')));
  EXPECT_TRUE(big.WaitClosed(5000)) << "a 1 MiB WRITE before HELLO must close the connection";
  RoundTrip(c, 2);

  ServerStats st = server_->GetStats();
  EXPECT_LE(st.sessions_handshaking, 16u);
  EXPECT_LE(st.sessions_open, 48u);
  // Receive buffers before HELLO are one control frame each: nothing near
  // 1 MiB per socket (one authenticated session holds a full one).
  EXPECT_LE(st.rx_buffer_bytes, (protocol::kHeaderSize + protocol::kMaxPayload + (256u << 10)) +
                                    48u * (protocol::kHeaderSize + protocol::kMaxControlPayload));
  EXPECT_GT(st.handshakes_evicted + st.connections_refused, 0u);

  // Every idle socket is closed by the server: evicted, refused, or timed out.
  for (auto& p : idle) ASSERT_TRUE(p->WaitClosed(5000));
  st = server_->GetStats();
  EXPECT_GT(st.handshakes_timed_out, 0u);
  EXPECT_EQ(st.sessions_handshaking, 0u);
  RoundTrip(c, 3);
  EXPECT_FALSE(l.disconnected) << l.why.ToString();
}

TEST_F(PreAuthLimitsTest, IdleAuthenticatedSessionClosesButKeepaliveKeepsAClientOpen) {
  options_.idle_timeout_ms = 600;
  StartServer();
  RawPeer silent;
  ASSERT_TRUE(silent.Connect(port_));
  ASSERT_TRUE(silent.Send(HelloFrame("vol-1", kToken, 1)));
  protocol::FrameHeader h;
  std::string payload;
  ASSERT_TRUE(silent.ReadFrame(&h, &payload));
  ASSERT_EQ(h.status, protocol::WireStatus::kOk);

  TestListener l;
  client::ClientOptions o = Options("vol-2");
  o.keepalive_ms = 100;
  client::ReplicaClient* c = Connect(&l, o);
  ASSERT_TRUE(l.connected);

  // The client's loop runs meanwhile (its keepalive is sent from it).
  EXPECT_TRUE(RunUntil([&] { return silent.ClosedNow(); }, 5000))
      << "an authenticated session idle past the timeout";
  EXPECT_GE(server_->GetStats().sessions_idle_closed, 1u);
  // The client sent nothing itself for as long, and is still connected.
  RunUntil([] { return false; }, 1500);
  EXPECT_FALSE(l.disconnected) << l.why.ToString();
  RoundTrip(c, 9);
}

}  // namespace
}  // namespace tandem::server::testing
