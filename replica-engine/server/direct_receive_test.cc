// WRITE payloads received straight into their aligned buffer (issue 12,
// ServerOptions::direct_rx_min_bytes): the frames a peer sends are cut at
// every byte across the server's recv calls, large and small writes mix, a
// bad CRC on a payload received in place closes the session with nothing
// written, and a WRITE whose header finds no slot or buffer waits in the
// receive buffer as before. The property: the bytes read back are the bytes
// written.

#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/gate_backend.h"
#include "tests/support/testing_server.h"

namespace tandem::server::testing {
namespace {

using protocol::FrameHeader;
using protocol::Opcode;
using protocol::WireStatus;

constexpr uint32_t kBlock = 4096;

class DirectReceiveTest : public ServerFixture {
 protected:
  // Authenticates `peer` on vol-1 and records the server's byte count, so
  // Sent() can wait until the server has read what the peer sent.
  void Hello(RawPeer* peer) {
    base_received_ = server_->GetStats().bytes_received;
    sent_ = 0;
    ASSERT_TRUE(peer->Connect(port_));
    SendAll(peer, HelloFrame("vol-1", kToken, 1));
    FrameHeader h;
    std::string payload;
    ASSERT_TRUE(peer->ReadFrame(&h, &payload));
    ASSERT_EQ(h.status, WireStatus::kOk);
  }
  void SendAll(RawPeer* peer, const std::string& bytes) {
    ASSERT_TRUE(peer->Send(bytes));
    sent_ += bytes.size();
  }
  // Waits (bounded) until the server has received every byte sent: the next
  // send then reaches it in another recv.
  void WaitReceived() {
    const uint64_t deadline = MonotonicNanos() + 5'000'000'000ull;
    while (server_->GetStats().bytes_received - base_received_ < sent_) {
      ASSERT_LT(MonotonicNanos(), deadline) << "server did not read " << sent_ << " bytes";
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  static std::string WriteFrame(uint64_t id, uint64_t offset, const std::string& data) {
    FrameHeader h;
    h.opcode = static_cast<uint8_t>(Opcode::kWrite);
    h.request_id = id;
    h.offset = offset;
    h.length = static_cast<uint32_t>(data.size());
    return EncodeFrame(h, data);
  }
  static std::string Pattern(uint32_t len, uint32_t seed) {
    std::string s(len, '\0');
    std::mt19937 rng(seed);
    for (auto& c : s) c = static_cast<char>(rng());
    return s;
  }
  // READs [offset, offset + len) on `peer` (at most 1 MiB at a time).
  std::string ReadBack(RawPeer* peer, uint64_t offset, uint32_t len) {
    std::string out;
    for (uint32_t done = 0; done < len;) {
      const uint32_t n = std::min<uint32_t>(len - done, protocol::kMaxIoSize);
      FrameHeader h;
      h.opcode = static_cast<uint8_t>(Opcode::kRead);
      h.request_id = 900000 + done;
      h.offset = offset + done;
      h.length = n;
      EXPECT_TRUE(peer->Send(EncodeFrame(h, "")));
      FrameHeader r;
      std::string payload;
      if (!peer->ReadFrame(&r, &payload) || r.status != WireStatus::kOk) {
        ADD_FAILURE() << "READ at " << offset + done << " failed";
        return out;
      }
      out += payload;
      done += n;
    }
    return out;
  }
  // Reads one reply and checks it answers request `id` OK.
  static void ExpectReply(RawPeer* peer, uint64_t id) {
    FrameHeader r;
    std::string payload;
    ASSERT_TRUE(peer->ReadFrame(&r, &payload)) << "no reply to " << id;
    EXPECT_EQ(r.request_id, id);
    EXPECT_EQ(r.status, WireStatus::kOk) << "request " << id;
  }

  // Writes one 4 KiB block per byte of a frame (48 + 4096 frames): the stream
  // of frames is sent in pieces, frame i cut at its byte i, each piece only
  // after the server read the previous one. So the server's recv sees every
  // cut: in the header, in the payload, at its end, and each piece brings
  // the tail of one frame with the head of the next.
  void SplitAtEveryByte() {
    RawPeer peer;
    Hello(&peer);
    const uint32_t frame_len = protocol::kHeaderSize + kBlock;
    std::string stream;
    for (uint32_t i = 0; i < frame_len; ++i) {
      stream += WriteFrame(100 + i, uint64_t(i) * kBlock, Pattern(kBlock, i));
    }
    size_t from = 0;
    for (uint32_t i = 0; i <= frame_len; ++i) {
      const size_t to = i < frame_len ? size_t(i) * frame_len + i : stream.size();
      SendAll(&peer, stream.substr(from, to - from));
      from = to;
      WaitReceived();
      // The pieces so far hold frames 0 .. i-1 whole: their replies.
      if (i > 0) ExpectReply(&peer, 100 + i - 1);
      if (HasFailure()) return;
    }
    const std::string back = ReadBack(&peer, 0, frame_len * kBlock);
    ASSERT_EQ(back.size(), size_t(frame_len) * kBlock);
    for (uint32_t i = 0; i < frame_len; ++i) {
      ASSERT_EQ(back.compare(size_t(i) * kBlock, kBlock, Pattern(kBlock, i)), 0) << "block " << i;
    }
    const ServerStats st = server_->GetStats();
    EXPECT_EQ(st.sessions_closed_bad_input, 0u);
    EXPECT_EQ(st.write_bytes_copied + st.write_bytes_direct, uint64_t(frame_len) * kBlock);
  }

  uint64_t base_received_ = 0;
  uint64_t sent_ = 0;
};

TEST_F(DirectReceiveTest, FramesCutAtEveryByteInPlace) {
  options_.direct_rx_min_bytes = 1;  // every WRITE in place when it can
  StartServer();
  SplitAtEveryByte();
  const ServerStats st = server_->GetStats();
  // Every frame but the ones whose payload came whole with their header.
  EXPECT_GT(st.writes_received_direct, 4000u);
  EXPECT_GT(st.write_bytes_direct, st.write_bytes_copied);
}

TEST_F(DirectReceiveTest, FramesCutAtEveryByteCopied) {
  options_.direct_rx_min_bytes = UINT32_MAX;  // the receive buffer's path only
  StartServer();
  SplitAtEveryByte();
  EXPECT_EQ(server_->GetStats().write_bytes_direct, 0u);
}

// Through the real client: 1 MiB, 64 KiB, 16 KiB and 4 KiB writes in flight
// together (the default threshold: the large ones in place, the small ones
// copied), then read back.
TEST_F(DirectReceiveTest, LargeAndSmallWritesReadBackEqual) {
  StartServer();
  TestListener l;
  client::ClientOptions o = Options("vol-1");
  o.max_inflight = 64;
  client::ReplicaClient* c = Connect(&l, o);
  ASSERT_TRUE(l.connected) << l.why.ToString();
  const uint32_t sizes[] = {protocol::kMaxIoSize, 64 << 10, kBlock, 16 << 10, kBlock, 8 << 10};
  struct Write {
    std::unique_ptr<TestOp> op;
    void* buf;
    uint32_t len;
  };
  std::vector<Write> writes;
  uint64_t offset = 0;
  for (int round = 0; round < 6; ++round) {
    for (uint32_t len : sizes) {
      void* buf = AlignedBuffer(len);
      const std::string p = Pattern(len, static_cast<uint32_t>(writes.size()));
      std::memcpy(buf, p.data(), len);
      writes.push_back({std::make_unique<TestOp>(Opcode::kWrite, offset, len, buf), buf, len});
      offset += len;
    }
  }
  ASSERT_LE(offset, kVolumeSize);
  for (auto& w : writes) c->Submit(&w.op->req);
  ASSERT_TRUE(RunUntil([&] {
    for (auto& w : writes) {
      if (!w.op->done) return false;
    }
    return true;
  }));
  offset = 0;
  for (size_t i = 0; i < writes.size(); ++i) {
    ASSERT_EQ(writes[i].op->req.status, StatusCode::kOk) << "write " << i;
    void* back = AlignedBuffer(writes[i].len);
    ASSERT_EQ(Do(c, Opcode::kRead, offset, writes[i].len, back), StatusCode::kOk);
    EXPECT_EQ(std::memcmp(back, writes[i].buf, writes[i].len), 0) << "write " << i;
    std::free(back);
    std::free(writes[i].buf);
    offset += writes[i].len;
  }
  const ServerStats st = server_->GetStats();
  EXPECT_GT(st.write_bytes_direct, 0u);
  EXPECT_GT(st.write_bytes_copied, 0u);  // the 4 and 8 KiB ones at least
  EXPECT_EQ(st.write_bytes_direct + st.write_bytes_copied, offset);
}

// A payload received in place whose CRC does not match: the session closes
// as it always did and nothing reaches the disk.
TEST_F(DirectReceiveTest, BadCrcOnAPayloadReceivedInPlaceClosesAndWritesNothing) {
  StartServer();
  RawPeer peer;
  Hello(&peer);
  std::string frame = WriteFrame(5, 0, Pattern(64 << 10, 5));
  frame[protocol::kHeaderSize + 1000] ^= 1;  // after the crc was computed
  // The header and a first part, read by the server before the rest is sent.
  SendAll(&peer, frame.substr(0, protocol::kHeaderSize + 100));
  WaitReceived();
  ASSERT_EQ(server_->GetStats().writes_received_direct, 1u);
  SendAll(&peer, frame.substr(protocol::kHeaderSize + 100));
  EXPECT_TRUE(peer.WaitClosed(5000));
  ServerStats st = server_->GetStats();
  EXPECT_EQ(st.sessions_closed_bad_input, 1u);
  EXPECT_EQ(st.bytes_written, 0u);
  EXPECT_EQ(st.write_bytes_direct, (64u << 10) - 100);

  RawPeer reader;
  Hello(&reader);
  EXPECT_EQ(ReadBack(&reader, 0, 64 << 10), std::string(64 << 10, '\0'));
}

// A newer target takes the volume over while a payload is being received in
// place: the write is answered STALE_EPOCH when it is complete and never
// reaches the disk (the port's checks run again before it starts).
TEST_F(DirectReceiveTest, FencedWhileAPayloadIsReceivedInPlace) {
  StartServer();
  RawPeer old_target;
  Hello(&old_target);
  const std::string frame = WriteFrame(5, 0, Pattern(64 << 10, 5));
  SendAll(&old_target, frame.substr(0, protocol::kHeaderSize + 100));
  WaitReceived();
  ASSERT_EQ(server_->GetStats().writes_received_direct, 1u);

  RawPeer new_target;
  ASSERT_TRUE(new_target.Connect(port_));
  ASSERT_TRUE(new_target.Send(HelloFrame("vol-1", kToken, 2)));
  FrameHeader h;
  std::string payload;
  ASSERT_TRUE(new_target.ReadFrame(&h, &payload));
  ASSERT_EQ(h.status, WireStatus::kOk);

  SendAll(&old_target, frame.substr(protocol::kHeaderSize + 100));
  ASSERT_TRUE(old_target.ReadFrame(&h, &payload));
  EXPECT_EQ(h.request_id, 5u);
  EXPECT_EQ(h.status, WireStatus::kStaleEpoch);
  EXPECT_TRUE(old_target.WaitClosed(5000));
  EXPECT_EQ(server_->GetStats().bytes_written, 0u);
  EXPECT_EQ(ReadBack(&new_target, 0, 64 << 10), std::string(64 << 10, '\0'));
}

// A backend whose data writes the test holds on the "disk".
class DirectReceiveGatedTest : public DirectReceiveTest {
 protected:
  void SetUp() override {
    DirectReceiveTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_TRUE(manager_->CloseAll().ok());
    manager_.reset();
    auto gate = std::make_unique<GateBackend>(std::move(backend_), GateBackend::Holds::kDataWrites);
    gate_ = gate.get();
    backend_ = std::move(gate);
    manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_ + "/replicas");
    ASSERT_TRUE(manager_->LoadAll().ok());
  }
  void TearDown() override {
    if (gate_ != nullptr) gate_->Open();
    DirectReceiveTest::TearDown();
  }
  void WaitHeld(uint32_t n) {
    for (int i = 0; i < 5000 && gate_->held() < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(gate_->held(), n);
  }
  // `held` writes of `len` held on the disk take what the session has (its
  // slots, or its buffer quota); one more of `len` arrives in two pieces,
  // then a 4 KiB one. The session stalls at the third one's header (its
  // payload stays in the socket: backpressure) until the disk lets the first
  // ones go; then it is received in place, and the 4 KiB one after it.
  // Every reply OK and the data read back.
  void ExhaustThenWrite(uint32_t len, uint32_t held) {
    RawPeer peer;
    Hello(&peer);
    std::vector<std::string> data;
    std::vector<uint64_t> offsets;
    std::string first, rest;
    for (uint32_t i = 0; i < held + 2; ++i) {
      data.push_back(Pattern(i <= held ? len : kBlock, 50 + i));
      offsets.push_back(uint64_t(i) * len);
      (i < held ? first : rest) += WriteFrame(10 + i, offsets[i], data[i]);
    }
    gate_->Close();
    SendAll(&peer, first);
    WaitHeld(held);
    const uint64_t direct_before = server_->GetStats().writes_received_direct;
    const size_t cut = protocol::kHeaderSize + len / 2;
    SendAll(&peer, rest.substr(0, cut));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    SendAll(&peer, rest.substr(cut));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    // No slot or buffer for it: nothing more started, nothing in place, and
    // the server stopped reading.
    ServerStats st = server_->GetStats();
    EXPECT_EQ(gate_->held(), held);
    EXPECT_EQ(st.writes_received_direct, direct_before);
    EXPECT_LT(st.bytes_received - base_received_, sent_);
    gate_->Open();
    std::vector<bool> answered(held + 2, false);
    for (uint32_t n = 0; n < held + 2; ++n) {
      FrameHeader r;
      std::string payload;
      ASSERT_TRUE(peer.ReadFrame(&r, &payload));
      ASSERT_GE(r.request_id, 10u);
      ASSERT_LT(r.request_id, 10u + held + 2);
      EXPECT_EQ(r.status, WireStatus::kOk) << "request " << r.request_id;
      answered[r.request_id - 10] = true;
    }
    for (uint32_t i = 0; i < held + 2; ++i) {
      EXPECT_TRUE(answered[i]) << "request " << 10 + i;
      EXPECT_EQ(ReadBack(&peer, offsets[i], static_cast<uint32_t>(data[i].size())), data[i])
          << "write " << i;
    }
    st = server_->GetStats();
    EXPECT_EQ(st.writes_received_direct, direct_before + 1);
    EXPECT_EQ(st.sessions_closed_bad_input, 0u);
  }
  GateBackend* gate_ = nullptr;
};

TEST_F(DirectReceiveGatedTest, SlotsExhaustedMidPayload) {
  options_.max_inflight_per_session = 2;
  StartServer();
  ExhaustThenWrite(64 << 10, 2);
}

TEST_F(DirectReceiveGatedTest, BufferQuotaExhaustedMidPayload) {
  // 32 MiB pool: three 1 MiB buffers, one per session at share 4.
  StartServer();
  ExhaustThenWrite(protocol::kMaxIoSize, 1);
}

}  // namespace
}  // namespace tandem::server::testing
