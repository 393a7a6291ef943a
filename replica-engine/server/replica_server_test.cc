// ReplicaServer + ReplicaClient over 127.0.0.1: pipelined random I/O checked
// byte for byte against an in-memory model, handshake and fencing rules, and
// bad input closing only the offending connection.

#include "replica-engine/server/replica_server.h"
#include "tests/support/gate_backend.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <random>
#include <string_view>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/crc32c.h"
#include "gtest/gtest.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/client/replica_client.h"

namespace tandem::server {
namespace {

using client::ClientOptions;
using client::ClientRequest;
using client::ReplicaClient;
using protocol::Opcode;

constexpr uint64_t kVolumeSize = 64ull << 20;
constexpr const char* kToken = "secret-token";

struct Listener : ReplicaClient::Listener {
  bool connected = false;
  bool disconnected = false;
  Status why;
  protocol::ReplicaInfo info;
  void OnConnected(const protocol::ReplicaInfo& i) override {
    connected = true;
    info = i;
  }
  void OnDisconnected(const Status& w) override {
    disconnected = true;
    why = w;
  }
};

// A request the tests wait on.
struct Op {
  ClientRequest req;
  bool done = false;
  static void Done(ClientRequest* r) { static_cast<Op*>(r->ctx)->done = true; }
  Op(Opcode op, uint64_t off, uint32_t len, void* buf) { Reset(op, off, len, buf); }
  Op(const Op&) = delete;  // req.ctx points at this object
  Op& operator=(const Op&) = delete;
  void Reset(Opcode op, uint64_t off, uint32_t len, void* buf) {
    req = ClientRequest{};
    done = false;
    req.op = op;
    req.offset = off;
    req.length = len;
    req.buf = buf;
    req.done = &Op::Done;
    req.ctx = this;
  }
};

void* AlignedAlloc(size_t n) { return std::aligned_alloc(4096, (n + 4095) / 4096 * 4096); }

class ReplicaServerTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/tandem-server-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto b = backend::BackendFactory::Create(GetParam());
    if (!b.ok()) GTEST_SKIP() << "backend " << GetParam() << ": " << b.status().ToString();
    auto gate = std::make_unique<testing::GateBackend>(std::move(*b),
                                                       testing::GateBackend::Holds::kDataWrites);
    gate_ = gate.get();
    backend_ = std::move(gate);
    manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_ + "/replicas");
    ASSERT_TRUE(manager_->LoadAll().ok());
    replica::ReplicaConfig cfg;
    cfg.volume_id = "vol-1";
    cfg.replica_id = "r1";
    cfg.size = kVolumeSize;
    ASSERT_TRUE(manager_->Create(cfg).ok());
    StartServer(0);
  }
  void TearDown() override {
    if (gate_ != nullptr) gate_->Open();
    clients_.clear();
    if (server_) server_->Stop();
    server_.reset();
    if (manager_) (void)manager_->CloseAll();
    manager_.reset();
    backend_.reset();
    std::filesystem::remove_all(dir_);
  }

  void StartServer(uint16_t port) {
    ServerOptions opts;
    opts.port = port;
    opts.auth_token = kToken;
    opts.max_inflight_per_session = 64;
    opts.buffer_pool_bytes = 32ull << 20;
    opts.activity_retire_delay_ms = retire_delay_ms_;
    server_ = std::make_unique<ReplicaServer>(manager_.get(), backend_.get(), opts);
    ASSERT_TRUE(server_->Start().ok());
    port_ = server_->port();
  }

  ClientOptions Options(uint64_t epoch = 1) {
    ClientOptions o;
    o.port = port_;
    o.volume_id = "vol-1";
    o.token = kToken;
    o.epoch = epoch;
    o.max_inflight = 32;
    return o;
  }

  // Runs the client loop until `pred` holds; false after `timeout_ms`.
  bool RunUntil(const std::function<bool()>& pred, int timeout_ms = 10000) {
    uint64_t deadline = MonotonicNanos() + timeout_ms * 1000000ull;
    while (!pred()) {
      if (MonotonicNanos() > deadline) return false;
      loop_.RunOnce(10);
    }
    return true;
  }

  ReplicaClient* Connect(Listener* l, const ClientOptions& o) {
    clients_.push_back(std::make_unique<ReplicaClient>(&loop_, o, l));
    ReplicaClient* c = clients_.back().get();
    EXPECT_TRUE(c->Connect().ok());
    EXPECT_TRUE(RunUntil([&] { return l->connected || l->disconnected; }));
    return c;
  }

  StatusCode Do(ReplicaClient* c, Opcode op, uint64_t off, uint32_t len, void* buf,
                uint16_t flags = 0) {
    Op o(op, off, len, buf);
    o.req.flags = flags;
    c->Submit(&o.req);
    EXPECT_TRUE(RunUntil([&] { return o.done; }));
    return o.req.status;
  }

  std::string dir_;
  std::unique_ptr<backend::StorageBackend> backend_;
  testing::GateBackend* gate_ = nullptr;  // backend_, which forwards to the real one
  uint32_t retire_delay_ms_ = ServerOptions{}.activity_retire_delay_ms;
  std::unique_ptr<replica::ReplicaManager> manager_;
  std::unique_ptr<ReplicaServer> server_;
  uint16_t port_ = 0;
  EventLoop loop_;
  std::vector<std::unique_ptr<ReplicaClient>> clients_;
};

TEST_P(ReplicaServerTest, RandomPipelinedIoMatchesModel) {
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected) << l.why.ToString();
  EXPECT_EQ(l.info.size, kVolumeSize);
  EXPECT_EQ(l.info.replica_id, "r1");

  constexpr int kQueueDepth = 32;
  constexpr int kTotalOps = 4000;
  constexpr uint32_t kMaxLen = 64 * 1024;
  std::vector<uint8_t> model(kVolumeSize, 0);
  uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);

  struct Slot {
    Op op{Opcode::kRead, 0, 0, nullptr};
    uint8_t* buf = nullptr;
    bool busy = false;
  };
  std::vector<Slot> slots(kQueueDepth);
  for (Slot& s : slots) s.buf = static_cast<uint8_t*>(AlignedAlloc(kMaxLen));

  auto overlaps_inflight = [&](uint64_t off, uint32_t len) {
    for (Slot& s : slots) {
      if (s.busy && off < s.op.req.offset + s.op.req.length && s.op.req.offset < off + len) {
        return true;
      }
    }
    return false;
  };
  int started = 0, finished = 0, mismatches = 0, errors = 0;
  auto start = [&](Slot& s) {
    uint32_t len, blocks;
    uint64_t off;
    do {
      blocks = 1 + rng() % (kMaxLen / 4096);
      len = blocks * 4096;
      off = (rng() % (kVolumeSize / 4096 - blocks)) * 4096;
    } while (overlaps_inflight(off, len));
    bool write = rng() % 2 == 0;
    s.op.Reset(write ? Opcode::kWrite : Opcode::kRead, off, len, s.buf);
    if (write) {
      for (uint32_t i = 0; i < len; i += 8) {
        uint64_t v = rng();
        std::memcpy(s.buf + i, &v, 8);
      }
    }
    s.busy = true;
    ++started;
    c->Submit(&s.op.req);
  };
  for (Slot& s : slots) start(s);
  ASSERT_TRUE(RunUntil(
      [&] {
        for (Slot& s : slots) {
          if (!s.busy || !s.op.done) continue;
          s.busy = false;
          ++finished;
          const ClientRequest& r = s.op.req;
          if (r.status != StatusCode::kOk) {
            ++errors;
          } else if (r.op == Opcode::kWrite) {
            std::memcpy(model.data() + r.offset, s.buf, r.length);
          } else if (std::memcmp(model.data() + r.offset, s.buf, r.length) != 0) {
            ++mismatches;
          }
          if (started < kTotalOps) start(s);
        }
        return finished == kTotalOps;
      },
      60000));
  EXPECT_EQ(errors, 0);
  EXPECT_EQ(mismatches, 0);

  // Everything written reads back equal to the model, in 1 MiB reads.
  uint8_t* big = static_cast<uint8_t*>(AlignedAlloc(protocol::kMaxIoSize));
  for (uint64_t off = 0; off < kVolumeSize; off += protocol::kMaxIoSize) {
    ASSERT_EQ(Do(c, Opcode::kRead, off, protocol::kMaxIoSize, big), StatusCode::kOk);
    ASSERT_EQ(std::memcmp(model.data() + off, big, protocol::kMaxIoSize), 0) << "at " << off;
  }
  std::free(big);
  for (Slot& s : slots) std::free(s.buf);
  ServerStats stats = server_->GetStats();
  EXPECT_GE(stats.requests, static_cast<uint64_t>(kTotalOps));
}

TEST_P(ReplicaServerTest, TrimWriteZeroesFlushAndFua) {
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected);
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(65536));
  std::memset(buf, 0xAB, 65536);
  ASSERT_EQ(Do(c, Opcode::kWrite, 0, 65536, buf, protocol::kFlagFua), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kWrite, 1 << 20, 65536, buf), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kFlush, 0, 0, nullptr), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kTrim, 0, 65536, nullptr), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kWriteZeroes, 1 << 20, 8192, nullptr), StatusCode::kOk);
  std::vector<uint8_t> zero(65536, 0);
  ASSERT_EQ(Do(c, Opcode::kRead, 0, 65536, buf), StatusCode::kOk);
  EXPECT_EQ(std::memcmp(buf, zero.data(), 65536), 0);
  ASSERT_EQ(Do(c, Opcode::kRead, 1 << 20, 65536, buf), StatusCode::kOk);
  EXPECT_EQ(std::memcmp(buf, zero.data(), 8192), 0);
  for (int i = 8192; i < 65536; ++i) ASSERT_EQ(buf[i], 0xAB) << i;
  std::free(buf);
}

TEST_P(ReplicaServerTest, BadRequestsGetErrorRepliesAndConnectionStays) {
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected);
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(8192));
  EXPECT_EQ(Do(c, Opcode::kRead, kVolumeSize, 4096, buf), StatusCode::kOutOfRange);
  EXPECT_EQ(Do(c, Opcode::kRead, kVolumeSize - 4096, 8192, buf), StatusCode::kOutOfRange);
  EXPECT_EQ(Do(c, Opcode::kRead, 100, 4096, buf), StatusCode::kInvalidArgument);
  EXPECT_EQ(Do(c, Opcode::kWrite, 0, 1000, buf), StatusCode::kInvalidArgument);
  EXPECT_EQ(Do(c, Opcode::kRead, 0, 0, buf), StatusCode::kInvalidArgument);
  EXPECT_EQ(Do(c, static_cast<Opcode>(31), 0, 0, nullptr), StatusCode::kUnimplemented);
  EXPECT_EQ(Do(c, Opcode::kRead, 0, 4096, buf), StatusCode::kOk);
  EXPECT_FALSE(l.disconnected);
  std::free(buf);
}

TEST_P(ReplicaServerTest, HelloRefusals) {
  Listener unknown;
  ClientOptions o = Options();
  o.volume_id = "no-such-volume";
  Connect(&unknown, o);
  EXPECT_TRUE(unknown.disconnected);
  EXPECT_EQ(unknown.why.code(), StatusCode::kNotFound) << unknown.why.ToString();

  Listener badtoken;
  o = Options();
  o.token = "wrong";
  Connect(&badtoken, o);
  EXPECT_TRUE(badtoken.disconnected);
  EXPECT_EQ(badtoken.why.code(), StatusCode::kUnauthenticated) << badtoken.why.ToString();
}

TEST_P(ReplicaServerTest, HigherEpochFencesOlderTarget) {
  std::vector<uint8_t> old_data(4096, 0x11), new_data(4096, 0x22);
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(4096));
  Listener a;
  ReplicaClient* ca = Connect(&a, Options(5));
  ASSERT_TRUE(a.connected);
  std::memcpy(buf, old_data.data(), 4096);
  ASSERT_EQ(Do(ca, Opcode::kWrite, 0, 4096, buf), StatusCode::kOk);

  Listener b;
  ReplicaClient* cb = Connect(&b, Options(6));
  ASSERT_TRUE(b.connected);
  EXPECT_EQ(b.info.highest_epoch, 6u);
  // The old target is told why (not a silent hang-up, which it would take
  // for a replica fault and go on): its next write is answered STALE_EPOCH
  // and does not land; then the replica closes the connection.
  EXPECT_FALSE(a.disconnected);
  std::memcpy(buf, old_data.data(), 4096);
  Op stale(Opcode::kWrite, 8192, 4096, buf);
  ca->Submit(&stale.req);
  ASSERT_TRUE(RunUntil([&] { return stale.done; }));
  EXPECT_EQ(stale.req.status, StatusCode::kFailedPrecondition);
  EXPECT_EQ(stale.req.wire_status, protocol::WireStatus::kStaleEpoch);
  ASSERT_TRUE(RunUntil([&] { return a.disconnected; }));
  ASSERT_EQ(Do(cb, Opcode::kRead, 8192, 4096, buf), StatusCode::kOk);
  EXPECT_EQ(std::vector<uint8_t>(buf, buf + 4096), std::vector<uint8_t>(4096, 0));

  // A lower epoch is refused from now on, also after a server restart.
  Listener c;
  Connect(&c, Options(5));
  EXPECT_EQ(c.why.code(), StatusCode::kFailedPrecondition) << c.why.ToString();
  clients_.clear();
  server_->Stop();
  ASSERT_TRUE(manager_->CloseAll().ok());
  manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_ + "/replicas");
  ASSERT_TRUE(manager_->LoadAll().ok());
  auto r = manager_->Get("vol-1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->metadata().highest_epoch, 6u);
  StartServer(0);
  Listener d;
  Connect(&d, Options(5));
  EXPECT_EQ(d.why.code(), StatusCode::kFailedPrecondition);
  Listener e;
  ReplicaClient* ce = Connect(&e, Options(6));
  ASSERT_TRUE(e.connected);
  std::memcpy(buf, new_data.data(), 4096);
  EXPECT_EQ(Do(ce, Opcode::kWrite, 0, 4096, buf), StatusCode::kOk);
  std::free(buf);
}

// Issue 10: two DetachVolume calls for one volume while its session still has
// I/O in flight. The second used to replace the first one's waiter, and the
// first then waited forever. Both must return once the I/O is done.
TEST_P(ReplicaServerTest, TwoOverlappingDetachVolumeCallsBothReturn) {
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(4096));
  Listener a;
  ReplicaClient* ca = Connect(&a, Options(1));
  ASSERT_TRUE(a.connected);
  gate_->Close();
  std::memset(buf, 0x21, 4096);
  Op held(Opcode::kWrite, 0, 4096, buf);
  ca->Submit(&held.req);
  ASSERT_TRUE(RunUntil([&] { return gate_->held() == 1; }));
  auto first = std::async(std::launch::async, [&] { return server_->DetachVolume("vol-1"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto second = std::async(std::launch::async, [&] { return server_->DetachVolume("vol-1"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  // The write is still in flight: neither may return yet.
  EXPECT_EQ(first.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  EXPECT_EQ(second.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  gate_->Open();
  RunUntil([&] { return held.done; }, 5000);
  ASSERT_EQ(first.wait_for(std::chrono::seconds(10)), std::future_status::ready)
      << "the first DetachVolume never returned";
  ASSERT_EQ(second.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(first.get().ok());
  EXPECT_TRUE(second.get().ok());
  manager_->EndDelete("vol-1");  // detached without a Delete: serve it again
  std::free(buf);
}

TEST_P(ReplicaServerTest, SupersededInFlightWritesAreAnsweredStaleAndLandBeforeTheNewHello) {
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(4096));
  uint8_t* buf2 = static_cast<uint8_t*>(AlignedAlloc(4096));
  Listener a;
  ClientOptions oa = Options(1);
  oa.target_id = 0xA;
  ReplicaClient* ca = Connect(&a, oa);
  ASSERT_TRUE(a.connected);

  // A write of the old target is in flight on the backend (held back)...
  gate_->Close();
  std::memset(buf, 0x11, 4096);
  Op held(Opcode::kWrite, 0, 4096, buf);
  ca->Submit(&held.req);
  ASSERT_TRUE(RunUntil([&] { return gate_->held() == 1; }));

  // ...when a newer target says HELLO: it is not answered while that write
  // can still land.
  Listener b;
  ClientOptions ob = Options(2);
  ob.target_id = 0xB;
  clients_.push_back(std::make_unique<ReplicaClient>(&loop_, ob, &b));
  ReplicaClient* cb = clients_.back().get();
  ASSERT_TRUE(cb->Connect().ok());
  RunUntil([&] { return b.connected || b.disconnected; }, 300);
  EXPECT_FALSE(b.connected);
  EXPECT_FALSE(b.disconnected);
  EXPECT_FALSE(held.done);

  // A new write on the superseded session is answered STALE_EPOCH at once
  // and never reaches the disk.
  std::memset(buf2, 0x33, 4096);
  Op late(Opcode::kWrite, 8192, 4096, buf2);
  ca->Submit(&late.req);
  ASSERT_TRUE(RunUntil([&] { return late.done; }));
  EXPECT_EQ(late.req.wire_status, protocol::WireStatus::kStaleEpoch);
  EXPECT_EQ(late.req.status, StatusCode::kFailedPrecondition);
  EXPECT_FALSE(b.connected);

  // Once the held write completes the old target hears STALE_EPOCH for it
  // too (it must not count it as acknowledged), its connection closes, and
  // only then is the new target's HELLO answered.
  gate_->Open();
  ASSERT_TRUE(RunUntil([&] { return held.done && b.connected; }));
  EXPECT_EQ(held.req.wire_status, protocol::WireStatus::kStaleEpoch);
  ASSERT_TRUE(RunUntil([&] { return a.disconnected; }));
  EXPECT_EQ(b.info.highest_epoch, 2u);
  // The held write landed before the HELLO reply; the late one never did.
  ASSERT_EQ(Do(cb, Opcode::kRead, 0, 4096, buf), StatusCode::kOk);
  EXPECT_EQ(buf[0], 0x11);
  ASSERT_EQ(Do(cb, Opcode::kRead, 8192, 4096, buf), StatusCode::kOk);
  EXPECT_EQ(std::vector<uint8_t>(buf, buf + 4096), std::vector<uint8_t>(4096, 0));
  ServerStats stats = server_->GetStats();
  EXPECT_GE(stats.hellos_waited_for_fenced_io, 1u);
  EXPECT_EQ(stats.stale_epoch_replies, 2u);
  std::free(buf);
  std::free(buf2);
}

TEST_P(ReplicaServerTest, AnEqualEpochBelongsToOneTargetAcrossRestarts) {
  // A fresh replica (epoch 0, no owner) is claimed by the first HELLO, even
  // at epoch 0.
  ClientOptions o0 = Options(0);
  o0.target_id = 0xF0;
  Listener first;
  Connect(&first, o0);
  ASSERT_TRUE(first.connected);
  {
    auto r = manager_->Get("vol-1");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ((*r)->epoch_owner(), 0xF0u);
  }
  o0.target_id = 0xF1;
  Listener second;
  Connect(&second, o0);
  EXPECT_FALSE(second.connected);
  EXPECT_EQ(second.why.code(), StatusCode::kFailedPrecondition) << second.why.ToString();

  // Epoch 3 raised by target A: A may open more connections, B may not.
  ClientOptions oa = Options(3);
  oa.target_id = 0xA;
  ClientOptions ob = Options(3);
  ob.target_id = 0xB;
  Listener a1, a2, b1;
  ReplicaClient* ca = Connect(&a1, oa);
  ASSERT_TRUE(a1.connected);
  Connect(&b1, ob);
  EXPECT_FALSE(b1.connected);
  EXPECT_EQ(b1.why.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(b1.why.message().find("STALE_EPOCH"), std::string::npos) << b1.why.ToString();
  Connect(&a2, oa);
  EXPECT_TRUE(a2.connected);
  // An older target (target_id 0) is another target too.
  Listener legacy;
  Connect(&legacy, Options(3));
  EXPECT_FALSE(legacy.connected);
  // A's sessions were not disturbed.
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(4096));
  std::memset(buf, 0x5A, 4096);
  EXPECT_EQ(Do(ca, Opcode::kWrite, 0, 4096, buf), StatusCode::kOk);

  // The owner is persisted with the epoch: after a restart B is still
  // refused and A (reconnecting) accepted.
  clients_.clear();
  server_->Stop();
  ASSERT_TRUE(manager_->CloseAll().ok());
  manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_ + "/replicas");
  ASSERT_TRUE(manager_->LoadAll().ok());
  auto r = manager_->Get("vol-1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->metadata().highest_epoch, 3u);
  EXPECT_EQ((*r)->epoch_owner(), 0xAu);
  StartServer(0);
  oa.port = ob.port = port_;
  Listener b2, a3;
  Connect(&b2, ob);
  EXPECT_FALSE(b2.connected);
  EXPECT_EQ(b2.why.code(), StatusCode::kFailedPrecondition);
  Connect(&a3, oa);
  EXPECT_TRUE(a3.connected);
  // A higher epoch from B takes over and becomes the owner.
  ob.epoch = 4;
  Listener b3;
  Connect(&b3, ob);
  EXPECT_TRUE(b3.connected);
  EXPECT_EQ((*r)->epoch_owner(), 0xBu);
  std::free(buf);
}

// Sends raw bytes on a fresh connection; returns true if the server closed it.
bool ServerClosesAfter(uint16_t port, const std::string& bytes) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return false;
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  (void)!send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  char sink[4096];
  bool closed = false;
  for (;;) {
    ssize_t n = recv(fd, sink, sizeof(sink), 0);
    if (n > 0) continue;  // an error reply may come first
    closed = n == 0 || (n < 0 && errno == ECONNRESET);
    break;
  }
  close(fd);
  return closed;
}

std::string Frame(protocol::FrameHeader h, const std::string& payload) {
  h.payload_length = static_cast<uint32_t>(payload.size());
  h.payload_crc = payload.empty() ? 0 : Crc32c(payload.data(), payload.size());
  std::string out(protocol::kHeaderSize, '\0');
  protocol::EncodeHeader(h, reinterpret_cast<uint8_t*>(out.data()));
  return out + payload;
}

TEST_P(ReplicaServerTest, MalformedFramesCloseOnlyThatConnection) {
  Listener good;
  ReplicaClient* c = Connect(&good, Options());
  ASSERT_TRUE(good.connected);

  EXPECT_TRUE(ServerClosesAfter(port_, std::string(protocol::kHeaderSize, 'x')));  // bad magic
  protocol::FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kRead);
  std::string f = Frame(h, "");
  f[20] ^= 1;  // header crc no longer matches
  EXPECT_TRUE(ServerClosesAfter(port_, f));
  std::string hello;
  ASSERT_TRUE(protocol::EncodeHello({1, "vol-1", kToken}, &hello).ok());
  f = Frame(h, "");
  std::string bad_payload = Frame({}, hello);
  {
    protocol::FrameHeader hh;
    hh.opcode = static_cast<uint8_t>(Opcode::kHello);
    bad_payload = Frame(hh, hello);
    bad_payload.back() ^= 0x40;  // payload crc mismatch
  }
  EXPECT_TRUE(ServerClosesAfter(port_, bad_payload));
  // Oversized: a valid header announcing more than kMaxPayload.
  std::string big(protocol::kHeaderSize, '\0');
  protocol::FrameHeader hb;
  hb.opcode = static_cast<uint8_t>(Opcode::kWrite);
  hb.payload_length = protocol::kMaxPayload + 1;
  protocol::EncodeHeader(hb, reinterpret_cast<uint8_t*>(big.data()));
  EXPECT_TRUE(ServerClosesAfter(port_, big));
  // A request before HELLO gets NOT_READY and the connection ends.
  EXPECT_TRUE(ServerClosesAfter(port_, Frame(h, "")));

  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(4096));
  EXPECT_EQ(Do(c, Opcode::kRead, 0, 4096, buf), StatusCode::kOk);
  EXPECT_FALSE(good.disconnected);
  std::free(buf);
  EXPECT_GE(server_->GetStats().sessions_closed_bad_input, 4u);
}

TEST_P(ReplicaServerTest, ClientReportsDisconnectAndReconnects) {
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected);
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(4096));
  std::memset(buf, 0x5A, 4096);
  ASSERT_EQ(Do(c, Opcode::kWrite, 4096, 4096, buf), StatusCode::kOk);
  uint16_t port = port_;
  server_->Stop();
  ASSERT_TRUE(RunUntil([&] { return l.disconnected; }));
  EXPECT_EQ(Do(c, Opcode::kRead, 0, 4096, buf), StatusCode::kUnavailable);
  StartServer(port);
  l.connected = l.disconnected = false;
  ASSERT_TRUE(c->Connect().ok());
  ASSERT_TRUE(RunUntil([&] { return l.connected || l.disconnected; }));
  ASSERT_TRUE(l.connected) << l.why.ToString();
  std::memset(buf, 0, 4096);
  ASSERT_EQ(Do(c, Opcode::kRead, 4096, 4096, buf), StatusCode::kOk);
  EXPECT_EQ(buf[0], 0x5A);
  EXPECT_EQ(buf[4095], 0x5A);
  std::free(buf);
}

TEST_P(ReplicaServerTest, HungReplicaTimesOutRequests) {
  // A listener that accepts and never answers stands in for a hung replica.
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(lfd, 4), 0);
  socklen_t len = sizeof(addr);
  getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len);
  Listener l;
  ClientOptions o = Options();
  o.port = ntohs(addr.sin_port);
  o.connect_timeout_ms = 300;
  uint64_t t0 = MonotonicNanos();
  Connect(&l, o);
  EXPECT_TRUE(l.disconnected);
  EXPECT_EQ(l.why.code(), StatusCode::kDeadlineExceeded) << l.why.ToString();
  EXPECT_LT(MonotonicNanos() - t0, 5'000'000'000ull);
  close(lfd);

  // Nothing listening: UNAVAILABLE.
  Listener refused;
  o.port = 1;
  Connect(&refused, o);
  EXPECT_TRUE(refused.disconnected);
  EXPECT_EQ(refused.why.code(), StatusCode::kUnavailable) << refused.why.ToString();
}

TEST_P(ReplicaServerTest, RequestWithoutReplyFailsConnectionAfterTimeout) {
  // A fake replica that completes the handshake and then never answers.
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(lfd, 4), 0);
  socklen_t alen = sizeof(addr);
  getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &alen);
  std::thread fake([lfd] {
    int fd = accept(lfd, nullptr, nullptr);
    std::vector<uint8_t> hdr(protocol::kHeaderSize);
    ASSERT_EQ(recv(fd, hdr.data(), hdr.size(), MSG_WAITALL), static_cast<ssize_t>(hdr.size()));
    protocol::FrameHeader h;
    ASSERT_EQ(protocol::DecodeHeader(hdr.data(), &h), protocol::DecodeResult::kOk);
    std::string payload(h.payload_length, '\0');
    ASSERT_EQ(recv(fd, payload.data(), payload.size(), MSG_WAITALL),
              static_cast<ssize_t>(payload.size()));
    protocol::ReplicaInfo info;
    info.size = kVolumeSize;
    info.block_size = 4096;
    info.max_inflight = 8;
    info.replica_id = "fake";
    std::string body;
    ASSERT_TRUE(protocol::EncodeReplicaInfo(info, &body).ok());
    protocol::FrameHeader r;
    r.opcode = static_cast<uint8_t>(protocol::kReplyBit | h.opcode);
    std::string reply = Frame(r, body);
    ASSERT_EQ(send(fd, reply.data(), reply.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(reply.size()));
    char sink[65536];
    while (recv(fd, sink, sizeof(sink), 0) > 0) {  // swallow requests, answer nothing
    }
    close(fd);
  });
  Listener l;
  ClientOptions o = Options();
  o.port = ntohs(addr.sin_port);
  o.request_timeout_ms = 300;
  ReplicaClient* c = Connect(&l, o);
  ASSERT_TRUE(l.connected) << l.why.ToString();
  EXPECT_EQ(c->info().max_inflight, 8u);
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(4096));
  uint64_t t0 = MonotonicNanos();
  EXPECT_EQ(Do(c, Opcode::kRead, 0, 4096, buf), StatusCode::kDeadlineExceeded);
  uint64_t waited_ms = (MonotonicNanos() - t0) / 1000000;
  EXPECT_GE(waited_ms, 250u);
  EXPECT_LT(waited_ms, 5000u);
  EXPECT_TRUE(l.disconnected);
  EXPECT_EQ(l.why.code(), StatusCode::kDeadlineExceeded);
  clients_.clear();  // closes the socket, so the fake thread ends
  fake.join();
  close(lfd);
  std::free(buf);
}

// --- Generations and dirty maps -------------------------------------------

constexpr uint64_t kRegion = 64 * 1024;  // ReplicaConfig's default dirty_region_size

// Fetches the whole dirty map (one GET_DIRTY_MAP, the test volume is small)
// and lists the dirty regions.
std::vector<uint64_t> DirtyRegionsOf(ReplicaServerTest* t, ReplicaClient* c,
                                     const std::function<StatusCode(ClientRequest*)>& run) {
  std::vector<char> buf(protocol::kMaxPayload);
  ClientRequest req;
  req.op = Opcode::kGetDirtyMap;
  req.offset = 0;
  req.length = static_cast<uint32_t>(buf.size());
  req.buf = buf.data();
  (void)t;
  (void)c;
  EXPECT_EQ(run(&req), StatusCode::kOk);
  protocol::DirtyMapChunk chunk;
  Status st = protocol::DecodeDirtyMap(std::string_view(buf.data(), req.reply_length), &chunk);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(chunk.region_size, kRegion);
  EXPECT_EQ(chunk.volume_size, kVolumeSize);
  EXPECT_EQ(chunk.bitmap.size(), kVolumeSize / kRegion / 8);  // 1 bit per region
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < chunk.bitmap.size() * 8; ++i) {
    if (static_cast<uint8_t>(chunk.bitmap[i / 8]) & (1u << (i % 8))) out.push_back(i);
  }
  return out;
}

class DirtyMapServerTest : public ReplicaServerTest {
 protected:
  // Runs one prepared request to completion.
  StatusCode Run(ReplicaClient* c, ClientRequest* req) {
    bool done = false;
    req->done = [](ClientRequest* r) { *static_cast<bool*>(r->ctx) = true; };
    req->ctx = &done;
    c->Submit(req);
    EXPECT_TRUE(RunUntil([&] { return done; }));
    return req->status;
  }
  StatusCode SetGeneration(ReplicaClient* c, uint64_t gen, bool track,
                           protocol::WireStatus* ws = nullptr) {
    ClientRequest req;
    req.op = Opcode::kSetGeneration;
    req.offset = gen;
    req.flags = track ? protocol::kFlagTrackDirty : 0;
    StatusCode code = Run(c, &req);
    if (ws != nullptr) *ws = req.wire_status;
    return code;
  }
  // GET_INFO, decoded.
  protocol::ReplicaInfo Info(ReplicaClient* c) {
    std::vector<char> buf(protocol::kMaxControlPayload);
    ClientRequest req;
    req.op = Opcode::kGetInfo;
    req.buf = buf.data();
    EXPECT_EQ(Run(c, &req), StatusCode::kOk);
    protocol::ReplicaInfo info;
    Status st = protocol::DecodeReplicaInfo(std::string_view(buf.data(), req.reply_length), &info);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return info;
  }
  StatusCode SetRebuildCursor(ReplicaClient* c, uint64_t cursor, uint64_t generation,
                              uint32_t payload_bytes = protocol::kRebuildCursorSize) {
    uint8_t payload[protocol::kRebuildCursorSize + 8] = {};
    protocol::EncodeRebuildCursor(protocol::RebuildCursor{cursor, generation}, payload);
    ClientRequest req;
    req.op = Opcode::kSetRebuildCursor;
    req.length = payload_bytes;
    req.buf = payload;
    return Run(c, &req);
  }
  // One GET_ALLOCATION; the decoded list (a view into *buf) in *list.
  StatusCode GetAllocation(ReplicaClient* c, uint64_t off, uint32_t len, std::vector<char>* buf,
                           protocol::AllocationList* list) {
    buf->assign(protocol::kMaxAllocationReply, '\0');
    ClientRequest req;
    req.op = Opcode::kGetAllocation;
    req.offset = off;
    req.length = len;
    req.buf = buf->data();
    StatusCode code = Run(c, &req);
    if (code != StatusCode::kOk) return code;
    Status st = protocol::DecodeAllocation(std::string_view(buf->data(), req.reply_length), list);
    EXPECT_TRUE(st.ok()) << st.ToString();
    st = protocol::CheckAllocationAnswers(*list, off, len);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return code;
  }
  // Every allocated extent of [off, off + len), asking again from covered_end
  // until the range is covered; *requests counts the GET_ALLOCATIONs.
  std::vector<protocol::AllocationExtent> AllocatedExtents(ReplicaClient* c, uint64_t off,
                                                           uint32_t len, int* requests = nullptr) {
    std::vector<protocol::AllocationExtent> out;
    std::vector<char> buf;
    const uint64_t end = off + len;
    int n = 0;
    while (off < end && n < 100) {
      protocol::AllocationList list;
      if (GetAllocation(c, off, static_cast<uint32_t>(end - off), &buf, &list) != StatusCode::kOk) {
        ADD_FAILURE() << "GET_ALLOCATION at " << off << " failed";
        break;
      }
      ++n;
      for (uint32_t i = 0; i < list.count; ++i) out.push_back(list.extent(i));
      off = list.covered_end;
    }
    if (requests != nullptr) *requests = n;
    return out;
  }
  std::vector<uint64_t> DirtyRegions(ReplicaClient* c) {
    return DirtyRegionsOf(this, c, [&](ClientRequest* r) { return Run(c, r); });
  }
  // "Crash" the engine: stop serving and drop the replicas without Close(),
  // then load them again from disk and serve them on a new server.
  void CrashAndRestart() {
    clients_.clear();
    server_->Stop();
    server_.reset();
    manager_.reset();  // ~Replica without Close(): not a clean shutdown
    manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_ + "/replicas");
    ASSERT_TRUE(manager_->LoadAll().ok());
    auto r = manager_->Get("vol-1");
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE((*r)->was_clean());
    StartServer(0);
  }
};

TEST_P(DirtyMapServerTest, SetGenerationPersistsAndOnlyGrows) {
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected);
  EXPECT_EQ(l.info.generation, 0u);
  ASSERT_EQ(SetGeneration(c, 5, false), StatusCode::kOk);
  protocol::WireStatus ws;
  EXPECT_EQ(SetGeneration(c, 4, false, &ws), StatusCode::kInvalidArgument);
  EXPECT_EQ(ws, protocol::WireStatus::kInvalid);
  EXPECT_EQ(SetGeneration(c, 5, false, &ws), StatusCode::kOk);  // equal: idempotent
  EXPECT_EQ(ws, protocol::WireStatus::kOk);
  EXPECT_FALSE(l.disconnected);

  CrashAndRestart();
  Listener m;
  ReplicaClient* d = Connect(&m, Options());
  ASSERT_TRUE(m.connected);
  EXPECT_EQ(m.info.generation, 5u);  // the handshake carries it
  EXPECT_EQ(SetGeneration(d, 3, true), StatusCode::kInvalidArgument);
  ASSERT_EQ(SetGeneration(d, 6, false), StatusCode::kOk);
  auto r = manager_->Get("vol-1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->metadata().generation, 6u);
}

TEST_P(DirtyMapServerTest, TrackedWritesMarkExactlyTheirRegionsAndSurviveACrash) {
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected);
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(2 * kRegion));
  std::memset(buf, 0x3C, 2 * kRegion);
  // Not tracking yet: nothing is recorded.
  ASSERT_EQ(Do(c, Opcode::kWrite, 0, 4096, buf), StatusCode::kOk);
  EXPECT_TRUE(DirtyRegions(c).empty());

  ASSERT_EQ(SetGeneration(c, 1, true), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kWrite, 5 * kRegion + 8192, 4096, buf), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kWrite, 5 * kRegion + 16384, 4096, buf), StatusCode::kOk);  // again 5
  ASSERT_EQ(Do(c, Opcode::kWrite, 7 * kRegion + kRegion / 2, kRegion, buf), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kTrim, 20 * kRegion, kRegion, nullptr), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kWriteZeroes, 30 * kRegion + 4096, 4096, nullptr), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kRead, 50 * kRegion, 4096, buf), StatusCode::kOk);  // reads don't mark
  ASSERT_EQ(Do(c, Opcode::kFlush, 0, 0, nullptr), StatusCode::kOk);
  // Eight writes in flight together, each to a fresh region (one batch of
  // dirty-map updates on the server), with distinct data.
  std::vector<uint8_t*> bufs;
  std::vector<std::unique_ptr<Op>> ops;
  for (int i = 0; i < 8; ++i) {
    bufs.push_back(static_cast<uint8_t*>(AlignedAlloc(4096)));
    std::memset(bufs.back(), 0x40 + i, 4096);
    ops.push_back(std::make_unique<Op>(Opcode::kWrite, (40 + i) * kRegion, 4096, bufs.back()));
    c->Submit(&ops.back()->req);
  }
  ASSERT_TRUE(RunUntil([&] {
    for (auto& o : ops) {
      if (!o->done) return false;
    }
    return true;
  }));
  for (auto& o : ops) EXPECT_EQ(o->req.status, StatusCode::kOk);
  ServerStats stats = server_->GetStats();
  // Every first touch waited for a persist; concurrent ones may share one.
  // Not the second write to region 5; plus the very first write (before
  // tracking), whose activity-log extent (0: every write here is in the
  // first 4 MiB) was new.
  EXPECT_EQ(stats.writes_parked_for_dirty_map, 1u + 4u + 8u);
  EXPECT_GE(stats.dirty_map_syncs, 4u + 1u);
  EXPECT_LE(stats.dirty_map_syncs, stats.writes_parked_for_dirty_map);
  std::printf("[ dirty-map batching, %s ] %llu parked writes, %llu metadata syncs\n", GetParam(),
              static_cast<unsigned long long>(stats.writes_parked_for_dirty_map),
              static_cast<unsigned long long>(stats.dirty_map_syncs));

  const std::vector<uint64_t> want = {5, 7, 8, 20, 30, 40, 41, 42, 43, 44, 45, 46, 47};
  EXPECT_EQ(DirtyRegions(c), want);

  CrashAndRestart();
  Listener m;
  ReplicaClient* d = Connect(&m, Options());
  ASSERT_TRUE(m.connected);
  EXPECT_EQ(m.info.generation, 1u);
  EXPECT_EQ(DirtyRegions(d), want);
  for (int i = 0; i < 8; ++i) {  // the batched writes landed
    ASSERT_EQ(Do(d, Opcode::kRead, (40 + i) * kRegion, 4096, buf), StatusCode::kOk);
    EXPECT_EQ(std::memcmp(buf, bufs[i], 4096), 0) << i;
  }
  // Tracking survived the restart: a new write is still recorded.
  ASSERT_EQ(Do(d, Opcode::kWrite, 60 * kRegion, 4096, buf), StatusCode::kOk);
  std::vector<uint64_t> more = want;
  more.push_back(60);
  EXPECT_EQ(DirtyRegions(d), more);
  // Tracking off: writes go unrecorded, the map is kept.
  ASSERT_EQ(SetGeneration(d, 1, false), StatusCode::kOk);
  ASSERT_EQ(Do(d, Opcode::kWrite, 61 * kRegion, 4096, buf), StatusCode::kOk);
  EXPECT_EQ(DirtyRegions(d), more);
  for (uint8_t* b : bufs) std::free(b);
  std::free(buf);
}

TEST_P(DirtyMapServerTest, MarkClearAndGetDirtyMapRoundTrip) {
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected);
  ASSERT_EQ(Do(c, Opcode::kMarkDirty, 3 * kRegion + 4096, 4096, nullptr), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kMarkDirty, 9 * kRegion - 4096, 2 * kRegion, nullptr), StatusCode::kOk);
  EXPECT_EQ(DirtyRegions(c), (std::vector<uint64_t>{3, 8, 9, 10}));
  {
    auto r = manager_->Get("vol-1");  // persisted before the reply
    ASSERT_TRUE(r.ok());
    auto f = replica::MetadataFile::Open((*r)->dir() + "/meta");
    ASSERT_TRUE(f.ok());
    EXPECT_EQ((*f)->current().dirty_map[1], 0x07);  // regions 8, 9, 10
  }
  // A partly covered region is never cleared.
  EXPECT_EQ(Do(c, Opcode::kClearDirty, 8 * kRegion + 4096, kRegion, nullptr),
            StatusCode::kInvalidArgument);
  ASSERT_EQ(Do(c, Opcode::kClearDirty, 8 * kRegion, 2 * kRegion, nullptr), StatusCode::kOk);
  EXPECT_EQ(DirtyRegions(c), (std::vector<uint64_t>{3, 10}));
  EXPECT_EQ(Do(c, Opcode::kMarkDirty, kVolumeSize, 4096, nullptr), StatusCode::kOutOfRange);
  EXPECT_EQ(Do(c, Opcode::kMarkDirty, 100, 4096, nullptr), StatusCode::kInvalidArgument);
  EXPECT_EQ(Do(c, Opcode::kMarkDirty, 0, 0, nullptr), StatusCode::kInvalidArgument);

  // Paging: the chunk starting at region 8 (a multiple of 8 regions), and a
  // capacity that allows a single bitmap byte.
  std::vector<char> small(13);
  ClientRequest req;
  req.op = Opcode::kGetDirtyMap;
  req.offset = 8 * kRegion;
  req.length = static_cast<uint32_t>(small.size());
  req.buf = small.data();
  ASSERT_EQ(Run(c, &req), StatusCode::kOk);
  ASSERT_EQ(req.reply_length, 13u);
  protocol::DirtyMapChunk chunk;
  ASSERT_TRUE(protocol::DecodeDirtyMap(std::string_view(small.data(), 13), &chunk).ok());
  EXPECT_EQ(chunk.bitmap, std::string(1, '\x04'));  // region 10 = bit 2 of byte 1
  req = ClientRequest{};
  req.op = Opcode::kGetDirtyMap;
  req.offset = 4 * kRegion;  // not a multiple of 8 regions
  req.length = 13;
  req.buf = small.data();
  EXPECT_EQ(Run(c, &req), StatusCode::kInvalidArgument);
  req = ClientRequest{};
  req.op = Opcode::kGetDirtyMap;
  req.offset = kVolumeSize;
  req.length = 13;
  req.buf = small.data();
  EXPECT_EQ(Run(c, &req), StatusCode::kOutOfRange);
  req = ClientRequest{};
  req.op = Opcode::kGetDirtyMap;
  req.length = 12;  // no room for a bitmap
  req.buf = small.data();
  EXPECT_EQ(Run(c, &req), StatusCode::kInvalidArgument);
  EXPECT_FALSE(l.disconnected);
}

// Issue 9, delete race: a HELLO between DetachVolume and Delete bound a
// session to the replica whose fds Delete then closed; its later writes
// could reach a reused fd of another volume. Forced deterministically: the
// HELLO is made while the test holds the gap open.
TEST_P(DirtyMapServerTest, HelloBetweenDetachAndDeleteIsRefused) {
  Listener before;
  ReplicaClient* c = Connect(&before, Options());
  ASSERT_TRUE(before.connected);
  ASSERT_TRUE(server_->DetachVolume("vol-1").ok());
  ASSERT_TRUE(RunUntil([&] { return before.disconnected; }));
  EXPECT_TRUE(manager_->IsDeleting("vol-1"));
  (void)c;

  // The gap: the replica is still in the manager, its files still open.
  Listener racer;
  Connect(&racer, Options());
  EXPECT_FALSE(racer.connected);
  EXPECT_EQ(racer.why.code(), StatusCode::kNotFound) << racer.why.ToString();
  // Nor can it be re-created under the delete's feet.
  replica::ReplicaConfig cfg;
  cfg.volume_id = "vol-1";
  cfg.replica_id = "r1";
  cfg.size = kVolumeSize;
  EXPECT_EQ(manager_->Create(cfg).status().code(), StatusCode::kUnavailable);

  ASSERT_TRUE(manager_->Delete("vol-1").ok());
  EXPECT_FALSE(manager_->IsDeleting("vol-1"));
  // Another volume opened now may get the deleted replica's fd numbers; a
  // re-created vol-1 is served again, empty.
  cfg.volume_id = "vol-2";
  cfg.replica_id = "r2";
  ASSERT_TRUE(manager_->Create(cfg).ok());
  cfg.volume_id = "vol-1";
  cfg.replica_id = "r1";
  ASSERT_TRUE(manager_->Create(cfg).ok());
  Listener after;
  ReplicaClient* d = Connect(&after, Options());
  ASSERT_TRUE(after.connected) << after.why.ToString();
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(4096));
  std::memset(buf, 0xEE, 4096);
  ASSERT_EQ(Do(d, Opcode::kRead, 0, 4096, buf), StatusCode::kOk);
  EXPECT_EQ(buf[0], 0);
  std::free(buf);
}

TEST_P(DirtyMapServerTest, DetachVolumeClosesOnlyThatVolumesSessions) {
  replica::ReplicaConfig cfg;
  cfg.volume_id = "vol-2";
  cfg.replica_id = "r2";
  cfg.size = kVolumeSize;
  ASSERT_TRUE(manager_->Create(cfg).ok());
  Listener l1, l1b, l2;
  ReplicaClient* c1 = Connect(&l1, Options());
  ReplicaClient* c1b = Connect(&l1b, Options());
  ClientOptions o2 = Options();
  o2.volume_id = "vol-2";
  ReplicaClient* c2 = Connect(&l2, o2);
  ASSERT_TRUE(l1.connected && l1b.connected && l2.connected);
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(kRegion));
  std::memset(buf, 0x77, kRegion);
  // Requests in flight on vol-1 while it is detached: they must fail, not hang.
  std::vector<std::unique_ptr<Op>> ops;
  for (int i = 0; i < 16; ++i) {
    ops.push_back(std::make_unique<Op>(Opcode::kWrite, i * kRegion, kRegion, buf));
    c1->Submit(&ops.back()->req);
  }
  loop_.RunOnce(0);  // sends them
  ASSERT_TRUE(server_->DetachVolume("vol-1").ok());
  ASSERT_TRUE(RunUntil([&] { return l1.disconnected && l1b.disconnected; }));
  ASSERT_TRUE(RunUntil([&] {
    for (auto& o : ops) {
      if (!o->done) return false;
    }
    return true;
  }));
  EXPECT_EQ(Do(c1, Opcode::kRead, 0, 4096, buf), StatusCode::kUnavailable);
  EXPECT_EQ(Do(c1b, Opcode::kRead, 0, 4096, buf), StatusCode::kUnavailable);
  // The other volume is untouched.
  EXPECT_FALSE(l2.disconnected);
  std::memset(buf, 0x55, 4096);
  ASSERT_EQ(Do(c2, Opcode::kWrite, 4096, 4096, buf), StatusCode::kOk);
  std::memset(buf, 0, 4096);
  ASSERT_EQ(Do(c2, Opcode::kRead, 4096, 4096, buf), StatusCode::kOk);
  EXPECT_EQ(buf[0], 0x55);
  // The replica can now be deleted; detaching again (or an unknown volume) is OK.
  ASSERT_TRUE(manager_->Delete("vol-1").ok());
  EXPECT_TRUE(server_->DetachVolume("vol-1").ok());
  EXPECT_TRUE(server_->DetachVolume("no-such-volume").ok());
  Listener again;
  Connect(&again, Options());
  EXPECT_EQ(again.why.code(), StatusCode::kNotFound) << again.why.ToString();
  EXPECT_EQ(Do(c2, Opcode::kRead, 4096, 4096, buf), StatusCode::kOk);
  std::free(buf);
}

// Not an assertion on speed: prints what dirty tracking costs a 4 KiB write at
// QD1 (first touch of a region = one durable metadata slot write, done
// asynchronously; later writes to the region = a bit test), and what the
// first touches cost QD1 reads of another volume on the same server.
TEST_P(DirtyMapServerTest, FirstTouchCostIsReported) {
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected);
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(4096));
  std::memset(buf, 0x11, 4096);
  constexpr int kWrites = 200;
  auto time_writes = [&](uint64_t first_region) {
    uint64_t t0 = MonotonicNanos();
    for (int i = 0; i < kWrites; ++i) {
      EXPECT_EQ(Do(c, Opcode::kWrite, (first_region + i) * kRegion, 4096, buf), StatusCode::kOk);
    }
    return (MonotonicNanos() - t0) / kWrites / 1000.0;
  };
  double off_us = time_writes(0);
  ASSERT_EQ(SetGeneration(c, 1, true), StatusCode::kOk);
  double first_us = time_writes(300);
  double again_us = time_writes(300);
  std::printf(
      "[ dirty-map cost, %s ] 4 KiB QD1 write: tracking off %.1f us, first touch of a "
      "region %.1f us, region already dirty %.1f us\n",
      GetParam(), off_us, first_us, again_us);
  EXPECT_EQ(DirtyRegions(c).size(), static_cast<size_t>(kWrites));

  // What the first touches cost everybody else on the server: QD1 reads of
  // another volume, on another connection, while this one writes at QD1.
  replica::ReplicaConfig cfg;
  cfg.volume_id = "vol-2";
  cfg.replica_id = "r2";
  cfg.size = kVolumeSize;
  ASSERT_TRUE(manager_->Create(cfg).ok());
  Listener l2;
  ClientOptions o2 = Options();
  o2.volume_id = "vol-2";
  ReplicaClient* other = Connect(&l2, o2);
  ASSERT_TRUE(l2.connected);
  uint8_t* rbuf = static_cast<uint8_t*>(AlignedAlloc(4096));
  ASSERT_EQ(Do(other, Opcode::kWrite, 0, 4096, buf), StatusCode::kOk);
  struct ReadStats {
    double avg_us = 0;
    double max_us = 0;
    int reads = 0;
  };
  auto reads_during_writes = [&](uint64_t first_region) {
    Op w(Opcode::kWrite, first_region * kRegion, 4096, buf);
    Op r(Opcode::kRead, 0, 4096, rbuf);
    c->Submit(&w.req);
    other->Submit(&r.req);
    int writes_done = 0;
    bool reading = true;
    uint64_t read_start = MonotonicNanos();
    uint64_t total_ns = 0, max_ns = 0;
    int reads = 0;
    EXPECT_TRUE(RunUntil(
        [&] {
          if (reading && r.done) {
            EXPECT_EQ(r.req.status, StatusCode::kOk);
            const uint64_t ns = MonotonicNanos() - read_start;
            total_ns += ns;
            max_ns = std::max(max_ns, ns);
            ++reads;
            reading = writes_done < kWrites;
            if (reading) {
              r.Reset(Opcode::kRead, 0, 4096, rbuf);
              read_start = MonotonicNanos();
              other->Submit(&r.req);
            }
          }
          if (writes_done < kWrites && w.done) {
            EXPECT_EQ(w.req.status, StatusCode::kOk);
            if (++writes_done < kWrites) {
              w.Reset(Opcode::kWrite, (first_region + writes_done) * kRegion, 4096, buf);
              c->Submit(&w.req);
            }
          }
          return writes_done == kWrites && !reading;
        },
        60000));
    ReadStats st;
    st.reads = reads;
    st.avg_us = reads ? total_ns / reads / 1000.0 : 0;
    st.max_us = max_ns / 1000.0;
    return st;
  };
  ReadStats during_first = reads_during_writes(600);
  ReadStats during_again = reads_during_writes(600);
  std::printf(
      "[ dirty-map cost, %s ] another volume's 4 KiB QD1 reads meanwhile: during first "
      "touches avg %.1f us, max %.1f us (%d reads); during writes to dirty regions avg %.1f us, "
      "max %.1f us (%d reads)\n",
      GetParam(), during_first.avg_us, during_first.max_us, during_first.reads, during_again.avg_us,
      during_again.max_us, during_again.reads);
  std::free(rbuf);
  std::free(buf);
}

// First touches persist the map asynchronously; meanwhile other sessions of
// the same replica send the requests that update the metadata synchronously
// (they must wait for the persist, not write the same slot), and at the end a
// new target raises the epoch with writes in flight. After a crash every
// acknowledged write has its data and its dirty bit, and every acknowledged
// metadata change is on disk.
TEST_P(DirtyMapServerTest, MetadataUpdatesDuringAsyncPersistsWaitAndStayDurable) {
  Listener l, lm;
  ReplicaClient* c = Connect(&l, Options());
  ReplicaClient* m = Connect(&lm, Options());
  ASSERT_TRUE(l.connected && lm.connected);
  ASSERT_EQ(SetGeneration(m, 1, true), StatusCode::kOk);

  constexpr int kQueueDepth = 8;
  constexpr int kWrites = 240;
  constexpr uint64_t kFirstRegion = 100;
  std::vector<uint8_t*> bufs;
  std::vector<std::unique_ptr<Op>> writes;
  for (int i = 0; i < kWrites; ++i) {
    bufs.push_back(static_cast<uint8_t*>(AlignedAlloc(4096)));
    std::memset(bufs.back(), 1 + i % 250, 4096);
    writes.push_back(
        std::make_unique<Op>(Opcode::kWrite, (kFirstRegion + i) * kRegion, 4096, bufs.back()));
  }
  int next_write = 0, writes_done = 0;
  // The metadata session: SET_REBUILD_CURSOR k, MARK_DIRTY of region 500 + k,
  // SET_GENERATION (tracking stays on), in a loop, one at a time.
  uint8_t cursor_payload[protocol::kRebuildCursorSize];
  ClientRequest meta;
  bool meta_done = true;
  int meta_ops = 0;
  uint64_t last_cursor = 0, last_generation = 1;
  std::vector<uint64_t> marked;
  auto next_meta = [&] {
    meta = ClientRequest{};
    meta.done = [](ClientRequest* r) { *static_cast<bool*>(r->ctx) = true; };
    meta.ctx = &meta_done;
    const int k = meta_ops / 3 + 1;
    switch (meta_ops % 3) {
      case 0:
        protocol::EncodeRebuildCursor({uint64_t(k) * 4096, 1}, cursor_payload);
        meta.op = Opcode::kSetRebuildCursor;
        meta.length = protocol::kRebuildCursorSize;
        meta.buf = cursor_payload;
        break;
      case 1:
        meta.op = Opcode::kMarkDirty;
        meta.offset = (500 + k) * kRegion;
        meta.length = 4096;
        break;
      default:
        meta.op = Opcode::kSetGeneration;
        meta.offset = 1 + k;
        meta.flags = protocol::kFlagTrackDirty;
        break;
    }
    meta_done = false;
    m->Submit(&meta);
  };
  auto meta_finished = [&] {
    EXPECT_EQ(meta.status, StatusCode::kOk) << protocol::OpcodeName(uint8_t(meta.op));
    if (meta.op == Opcode::kSetRebuildCursor) last_cursor = (meta_ops / 3 + 1) * 4096ull;
    if (meta.op == Opcode::kMarkDirty) marked.push_back(meta.offset / kRegion);
    if (meta.op == Opcode::kSetGeneration) last_generation = meta.offset;
    ++meta_ops;
  };
  next_meta();
  ASSERT_TRUE(RunUntil(
      [&] {
        while (next_write < kWrites && next_write - writes_done < kQueueDepth) {
          c->Submit(&writes[next_write++]->req);
        }
        while (writes_done < next_write && writes[writes_done]->done) {
          EXPECT_EQ(writes[writes_done]->req.status, StatusCode::kOk) << writes_done;
          ++writes_done;
        }
        if (meta_done) {
          meta_finished();
          if (writes_done < kWrites) next_meta();
        }
        return writes_done == kWrites && meta_done;
      },
      60000));
  EXPECT_FALSE(l.disconnected || lm.disconnected);

  // A burst of first touches, and a new target raising the epoch meanwhile.
  std::vector<std::unique_ptr<Op>> burst;
  for (int i = 0; i < 16; ++i) {
    burst.push_back(std::make_unique<Op>(Opcode::kWrite, (800 + i) * kRegion, 4096, bufs[i]));
    c->Submit(&burst.back()->req);
  }
  loop_.RunOnce(0);  // sends them
  Listener l2;
  Connect(&l2, Options(2));
  ASSERT_TRUE(l2.connected) << l2.why.ToString();
  ASSERT_TRUE(RunUntil([&] {
    for (auto& o : burst) {
      if (!o->done) return false;
    }
    return true;
  }));
  std::vector<uint64_t> acked = {};
  for (int i = 0; i < kWrites; ++i) acked.push_back(kFirstRegion + i);
  for (int i = 0; i < 16; ++i) {
    if (burst[i]->req.status == StatusCode::kOk) acked.push_back(800 + i);
  }
  ServerStats stats = server_->GetStats();
  std::printf(
      "[ async dirty-map persist, %s ] %llu parked writes, %llu persists, %llu metadata "
      "requests waited for one, %d metadata requests\n",
      GetParam(), static_cast<unsigned long long>(stats.writes_parked_for_dirty_map),
      static_cast<unsigned long long>(stats.dirty_map_syncs),
      static_cast<unsigned long long>(stats.requests_waited_for_metadata), meta_ops);
  EXPECT_EQ(stats.dirty_map_sync_failures, 0u);

  CrashAndRestart();
  Listener r;
  ReplicaClient* d = Connect(&r, Options(2));
  ASSERT_TRUE(r.connected);
  EXPECT_EQ(r.info.highest_epoch, 2u);
  EXPECT_EQ(r.info.generation, last_generation);
  EXPECT_TRUE(r.info.tracking_dirty);
  EXPECT_EQ(r.info.dirty_since_generation, 1u);
  EXPECT_EQ(r.info.rebuild_cursor, last_cursor);
  const std::vector<uint64_t> dirty = DirtyRegions(d);
  for (uint64_t region : acked) {
    EXPECT_TRUE(std::binary_search(dirty.begin(), dirty.end(), region)) << region;
  }
  for (uint64_t region : marked) {
    EXPECT_TRUE(std::binary_search(dirty.begin(), dirty.end(), region)) << region;
  }
  uint8_t* rbuf = static_cast<uint8_t*>(AlignedAlloc(4096));
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_EQ(Do(d, Opcode::kRead, (kFirstRegion + i) * kRegion, 4096, rbuf), StatusCode::kOk);
    EXPECT_EQ(std::memcmp(rbuf, bufs[i], 4096), 0) << i;
  }
  std::free(rbuf);
  for (uint8_t* b : bufs) std::free(b);
}

// --- Rebuild support: allocation, rebuild cursor, dirty_since_generation ----

TEST_P(DirtyMapServerTest, GetAllocationReturnsExactlyTheWrittenExtents) {
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected);
  using protocol::AllocationExtent;
  const uint32_t kLen = static_cast<uint32_t>(kVolumeSize);
  // A fresh replica's data file is all hole.
  EXPECT_TRUE(AllocatedExtents(c, 0, kLen).empty());

  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(256 * 1024));
  std::memset(buf, 0x5A, 256 * 1024);
  // Two adjacent writes make one extent; the last block of the volume too.
  ASSERT_EQ(Do(c, Opcode::kWrite, 1 << 20, 64 * 1024, buf), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kWrite, (1 << 20) + 64 * 1024, 4096, buf), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kWrite, 5 << 20, 4096, buf), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kWrite, 10 << 20, 256 * 1024, buf), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kWrite, kVolumeSize - 4096, 4096, buf), StatusCode::kOk);
  std::vector<AllocationExtent> want = {
      {1 << 20, 68 * 1024}, {5 << 20, 4096}, {10 << 20, 256 * 1024}, {kVolumeSize - 4096, 4096}};
  int requests = 0;
  EXPECT_EQ(AllocatedExtents(c, 0, kLen, &requests), want);
  EXPECT_EQ(requests, 1);
  // Clipped to the range asked about.
  want = {{(1 << 20) + 16384, 52 * 1024}, {5 << 20, 4096}, {10 << 20, 8192}};
  EXPECT_EQ(AllocatedExtents(c, (1 << 20) + 16384, (9 << 20) - 16384 + 8192), want);
  // TRIM punches the hole back.
  ASSERT_EQ(Do(c, Opcode::kTrim, 5 << 20, 4096, nullptr), StatusCode::kOk);
  want = {{1 << 20, 68 * 1024}, {10 << 20, 256 * 1024}, {kVolumeSize - 4096, 4096}};
  EXPECT_EQ(AllocatedExtents(c, 0, kLen), want);
  // The block rules of READ/WRITE apply.
  std::vector<char> rbuf;
  protocol::AllocationList list;
  EXPECT_EQ(GetAllocation(c, 100, 4096, &rbuf, &list), StatusCode::kInvalidArgument);
  EXPECT_EQ(GetAllocation(c, 0, 0, &rbuf, &list), StatusCode::kInvalidArgument);
  EXPECT_EQ(GetAllocation(c, kVolumeSize, 4096, &rbuf, &list), StatusCode::kOutOfRange);
  EXPECT_EQ(GetAllocation(c, 0, UINT32_MAX - 4095, &rbuf, &list), StatusCode::kOutOfRange);
  EXPECT_FALSE(l.disconnected);
  std::free(buf);
}

TEST_P(DirtyMapServerTest, GetAllocationCutShortContinuesFromCoveredEnd) {
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected);
  // More separate extents than one reply carries: 4 KiB every 16 KiB.
  const uint32_t kExtents = protocol::kMaxAllocationExtents + 10;
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(4096));
  std::memset(buf, 0x6B, 4096);
  std::vector<std::unique_ptr<Op>> ops;
  std::vector<protocol::AllocationExtent> want;
  for (uint32_t i = 0; i < kExtents; ++i) {
    want.push_back({i * 16384ull, 4096});
    ops.push_back(std::make_unique<Op>(Opcode::kWrite, i * 16384ull, 4096, buf));
    c->Submit(&ops.back()->req);
  }
  ASSERT_TRUE(RunUntil([&] {
    for (auto& o : ops) {
      if (!o->done) return false;
    }
    return true;
  }));
  for (auto& o : ops) ASSERT_EQ(o->req.status, StatusCode::kOk);

  std::vector<char> rbuf;
  protocol::AllocationList list;
  ASSERT_EQ(GetAllocation(c, 0, static_cast<uint32_t>(kVolumeSize), &rbuf, &list), StatusCode::kOk);
  ASSERT_EQ(list.count, protocol::kMaxAllocationExtents);
  const uint64_t cut = (protocol::kMaxAllocationExtents - 1) * 16384ull + 4096;
  EXPECT_EQ(list.covered_end, cut);  // the end of the last extent returned
  ASSERT_EQ(GetAllocation(c, cut, static_cast<uint32_t>(kVolumeSize - cut), &rbuf, &list),
            StatusCode::kOk);
  EXPECT_EQ(list.count, 10u);
  EXPECT_EQ(list.covered_end, kVolumeSize);
  int requests = 0;
  EXPECT_EQ(AllocatedExtents(c, 0, static_cast<uint32_t>(kVolumeSize), &requests), want);
  EXPECT_EQ(requests, 2);
  std::free(buf);
}

TEST_P(DirtyMapServerTest, RebuildCursorPersistsAcrossACrashAndShowsInHello) {
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected);
  EXPECT_EQ(l.info.rebuild_cursor, 0u);
  EXPECT_EQ(l.info.rebuild_generation, 0u);
  ASSERT_EQ(SetRebuildCursor(c, 24 << 20, 3), StatusCode::kOk);
  {
    auto r = manager_->Get("vol-1");  // persisted before the reply
    ASSERT_TRUE(r.ok());
    auto f = replica::MetadataFile::Open((*r)->dir() + "/meta");
    ASSERT_TRUE(f.ok());
    EXPECT_EQ((*f)->current().rebuild_cursor, 24u << 20);
    EXPECT_EQ((*f)->current().rebuild_generation, 3u);
  }
  protocol::ReplicaInfo info = Info(c);
  EXPECT_EQ(info.rebuild_cursor, 24u << 20);
  EXPECT_EQ(info.rebuild_generation, 3u);
  // Refused, nothing changed: beyond the volume, or a payload of the wrong size.
  EXPECT_EQ(SetRebuildCursor(c, kVolumeSize + 4096, 3), StatusCode::kOutOfRange);
  EXPECT_EQ(SetRebuildCursor(c, 4096, 3, 8), StatusCode::kInvalidArgument);
  EXPECT_EQ(SetRebuildCursor(c, 4096, 3, 24), StatusCode::kInvalidArgument);
  EXPECT_EQ(SetRebuildCursor(c, 4096, 3, 0), StatusCode::kInvalidArgument);
  EXPECT_FALSE(l.disconnected);
  ASSERT_EQ(SetRebuildCursor(c, 32 << 20, 4), StatusCode::kOk);

  CrashAndRestart();
  Listener m;
  ReplicaClient* d = Connect(&m, Options());
  ASSERT_TRUE(m.connected);
  EXPECT_EQ(m.info.rebuild_cursor, 32u << 20);  // the handshake carries it
  EXPECT_EQ(m.info.rebuild_generation, 4u);
  ASSERT_EQ(SetRebuildCursor(d, 0, 4), StatusCode::kOk);  // cleared
  info = Info(d);
  EXPECT_EQ(info.rebuild_cursor, 0u);
  EXPECT_EQ(info.rebuild_generation, 0u);
  CrashAndRestart();
  Listener n;
  Connect(&n, Options());
  ASSERT_TRUE(n.connected);
  EXPECT_EQ(n.info.rebuild_cursor, 0u);
}

TEST_P(DirtyMapServerTest, DirtySinceGenerationIsWhereTrackingStarted) {
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected);
  EXPECT_FALSE(l.info.tracking_dirty);
  EXPECT_EQ(l.info.dirty_since_generation, 0u);
  ASSERT_EQ(SetGeneration(c, 3, true), StatusCode::kOk);  // on: since 3
  protocol::ReplicaInfo info = Info(c);
  EXPECT_TRUE(info.tracking_dirty);
  EXPECT_EQ(info.generation, 3u);
  EXPECT_EQ(info.dirty_since_generation, 3u);
  ASSERT_EQ(SetGeneration(c, 5, true), StatusCode::kOk);  // stays on: still 3
  info = Info(c);
  EXPECT_EQ(info.generation, 5u);
  EXPECT_EQ(info.dirty_since_generation, 3u);

  CrashAndRestart();
  Listener m;
  ReplicaClient* d = Connect(&m, Options());
  ASSERT_TRUE(m.connected);
  EXPECT_TRUE(m.info.tracking_dirty);
  EXPECT_EQ(m.info.dirty_since_generation, 3u);
  ASSERT_EQ(SetGeneration(d, 5, false), StatusCode::kOk);  // off: 0, map kept
  ASSERT_EQ(Do(d, Opcode::kMarkDirty, 0, 4096, nullptr), StatusCode::kOk);
  info = Info(d);
  EXPECT_FALSE(info.tracking_dirty);
  EXPECT_EQ(info.dirty_since_generation, 0u);
  EXPECT_EQ(DirtyRegions(d), std::vector<uint64_t>{0});
  ASSERT_EQ(SetGeneration(d, 6, true), StatusCode::kOk);  // on again: since 6
  info = Info(d);
  EXPECT_EQ(info.dirty_since_generation, 6u);
  // A refused SET_GENERATION changes nothing.
  EXPECT_EQ(SetGeneration(d, 4, false), StatusCode::kInvalidArgument);
  info = Info(d);
  EXPECT_TRUE(info.tracking_dirty);
  EXPECT_EQ(info.dirty_since_generation, 6u);
}

TEST_P(DirtyMapServerTest, SetGenerationPersistsTheTargetsGenerationRecord) {
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected);
  EXPECT_EQ(l.info.generation_id, 0u);  // never set
  EXPECT_TRUE(l.info.generation_history.empty());
  EXPECT_TRUE(l.info.clean_shutdown);  // created by this engine run

  // SET_GENERATION with a GenerationRecord payload (length == payload_length).
  auto set = [&](uint64_t gen, const protocol::GenerationRecord& rec, bool track = false,
                 int64_t length = -1) {
    std::string payload;
    EXPECT_TRUE(protocol::EncodeGenerationRecord(rec, &payload).ok());
    ClientRequest req;
    req.op = Opcode::kSetGeneration;
    req.offset = gen;
    req.flags = track ? protocol::kFlagTrackDirty : 0;
    req.buf = payload.data();
    req.length = length < 0 ? static_cast<uint32_t>(payload.size()) : static_cast<uint32_t>(length);
    Run(c, &req);
    return req.wire_status;
  };
  EXPECT_EQ(set(4, {0xA4, {0xA3, 0xA2}}, true), protocol::WireStatus::kOk);
  protocol::ReplicaInfo info = Info(c);
  EXPECT_EQ(info.generation, 4u);
  EXPECT_TRUE(info.tracking_dirty);
  EXPECT_EQ(info.generation_id, 0xA4u);
  EXPECT_EQ(info.generation_history, (std::vector<uint64_t>{0xA3, 0xA2}));
  // Equal number: accepted, the record replaced.
  EXPECT_EQ(set(4, {0xB4, {0xA4}}, true), protocol::WireStatus::kOk);
  // Lower number: INVALID, nothing changes.
  EXPECT_EQ(set(3, {0xC3, {}}), protocol::WireStatus::kInvalid);
  // Malformed payloads: INVALID, nothing changes, the connection stays.
  EXPECT_EQ(set(5, {0xD5, {}}, false, 4), protocol::WireStatus::kInvalid);  // length mismatch
  {
    uint8_t raw[9] = {0};  // id 0
    ClientRequest req;
    req.op = Opcode::kSetGeneration;
    req.offset = 5;
    req.buf = raw;
    req.length = sizeof(raw);
    Run(c, &req);
    EXPECT_EQ(req.wire_status, protocol::WireStatus::kInvalid);
    raw[0] = 1;
    req.length = 8;  // truncated before history_count
    Run(c, &req);
    EXPECT_EQ(req.wire_status, protocol::WireStatus::kInvalid);
  }
  EXPECT_FALSE(l.disconnected);
  info = Info(c);
  EXPECT_EQ(info.generation, 4u);
  EXPECT_EQ(info.generation_id, 0xB4u);
  EXPECT_EQ(info.generation_history, std::vector<uint64_t>{0xA4});

  // Without a payload (an older target) a bump draws a new id and pushes the
  // previous one; an equal number keeps it.
  ASSERT_EQ(SetGeneration(c, 5, true), StatusCode::kOk);
  info = Info(c);
  EXPECT_NE(info.generation_id, 0u);
  EXPECT_NE(info.generation_id, 0xB4u);
  EXPECT_EQ(info.generation_history, (std::vector<uint64_t>{0xB4, 0xA4}));
  const uint64_t drawn = info.generation_id;
  ASSERT_EQ(SetGeneration(c, 5, false), StatusCode::kOk);
  EXPECT_EQ(Info(c).generation_id, drawn);

  // Durable before the reply; after a crash the HELLO carries it, and the
  // replica reports its unclean shutdown.
  CrashAndRestart();
  Listener m;
  Connect(&m, Options());
  ASSERT_TRUE(m.connected);
  EXPECT_EQ(m.info.generation, 5u);
  EXPECT_EQ(m.info.generation_id, drawn);
  EXPECT_EQ(m.info.generation_history, (std::vector<uint64_t>{0xB4, 0xA4}));
  EXPECT_FALSE(m.info.clean_shutdown);
}

// The activity log as GET_DIRTY_MAP with kFlagActivity returns it.
std::vector<uint64_t> ActiveExtents(const std::function<StatusCode(ClientRequest*)>& run,
                                    uint32_t* extent_size = nullptr) {
  std::vector<char> buf(4096);
  ClientRequest req;
  req.op = Opcode::kGetDirtyMap;
  req.flags = protocol::kFlagActivity;
  req.length = static_cast<uint32_t>(buf.size());
  req.buf = buf.data();
  EXPECT_EQ(run(&req), StatusCode::kOk);
  protocol::DirtyMapChunk chunk;
  Status st = protocol::DecodeDirtyMap(std::string_view(buf.data(), req.reply_length), &chunk);
  EXPECT_TRUE(st.ok()) << st.ToString();
  if (extent_size != nullptr) *extent_size = chunk.region_size;
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < chunk.bitmap.size() * 8; ++i) {
    if (static_cast<uint8_t>(chunk.bitmap[i / 8]) & (1u << (i % 8))) out.push_back(i);
  }
  return out;
}

constexpr uint64_t kExtent = 4u << 20;  // ReplicaConfig's default activity_extent_size

TEST_P(DirtyMapServerTest, ActivityLogMarksWrittenExtentsDurablyAndSurvivesACrash) {
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected);
  EXPECT_EQ(l.info.activity_extent_size, kExtent);
  EXPECT_EQ(l.info.activity_count, 0u);
  auto run = [&](ClientRequest* r) { return Run(c, r); };
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(8192));
  std::memset(buf, 0x61, 8192);
  // Not tracking dirty regions: only the activity log costs a persist, on
  // the first write to each extent.
  ASSERT_EQ(Do(c, Opcode::kWrite, 0, 4096, buf), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kWrite, 8192, 4096, buf), StatusCode::kOk);  // extent 0 again: free
  ASSERT_EQ(Do(c, Opcode::kTrim, 5 * kExtent, 4096, nullptr), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kWriteZeroes, 9 * kExtent - 4096, 8192, nullptr), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kRead, 12 * kExtent, 4096, buf), StatusCode::kOk);  // reads don't mark
  ServerStats stats = server_->GetStats();
  EXPECT_EQ(stats.writes_parked_for_dirty_map, 3u);
  uint32_t unit = 0;
  const std::vector<uint64_t> want = {0, 5, 8, 9};
  EXPECT_EQ(ActiveExtents(run, &unit), want);
  EXPECT_EQ(unit, kExtent);
  EXPECT_EQ(Info(c).activity_count, 4u);
  // Durable before the writes were answered.
  auto md = replica::MetadataFile::Open(dir_ + "/replicas/vol-1/meta");
  ASSERT_TRUE(md.ok());
  EXPECT_EQ((*md)->current().activity_map[0], 0x21);  // extents 0 and 5
  EXPECT_EQ((*md)->current().activity_map[1], 0x03);  // extents 8 and 9

  CrashAndRestart();
  Listener m;
  ReplicaClient* d = Connect(&m, Options());
  ASSERT_TRUE(m.connected);
  EXPECT_FALSE(m.info.clean_shutdown);
  EXPECT_EQ(m.info.activity_count, 4u);
  EXPECT_EQ(ActiveExtents([&](ClientRequest* r) { return Run(d, r); }), want);
  std::free(buf);
}

TEST_P(DirtyMapServerTest, ActivityLogRetiresFlushedExtentsLazilyAndCleanShutdownKeepsIt) {
  server_->Stop();
  retire_delay_ms_ = 0;
  StartServer(0);
  Listener l;
  ReplicaClient* c = Connect(&l, Options());
  ASSERT_TRUE(l.connected);
  auto run = [&](ClientRequest* r) { return Run(c, r); };
  uint8_t* buf = static_cast<uint8_t*>(AlignedAlloc(4096));
  std::memset(buf, 0x62, 4096);
  ASSERT_EQ(Do(c, Opcode::kWrite, 1 * kExtent, 4096, buf), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kWrite, 2 * kExtent, 4096, buf), StatusCode::kOk);
  ASSERT_EQ(Do(c, Opcode::kFlush, 0, 0, nullptr), StatusCode::kOk);
  // Written after the FLUSH was received: not covered by it.
  ASSERT_EQ(Do(c, Opcode::kWrite, 3 * kExtent, 4096, buf), StatusCode::kOk);
  const std::string meta = dir_ + "/replicas/vol-1/meta";
  auto on_disk = [&] {
    auto md = replica::MetadataFile::Open(meta);
    EXPECT_TRUE(md.ok());
    return md.ok() ? (*md)->current().activity_map[0] : 0xFF;
  };
  EXPECT_EQ(on_disk(), 0x0E);  // 1, 2, 3
  // The retire pass runs about once per second and persists what it cleared.
  ASSERT_TRUE(RunUntil([&] { return on_disk() == 0x08; }, 5000)) << int(on_disk());
  EXPECT_EQ(ActiveExtents(run), std::vector<uint64_t>{3});
  ServerStats stats = server_->GetStats();
  EXPECT_EQ(stats.activity_extents_retired, 2u);
  EXPECT_GE(stats.activity_lazy_persists, 1u);
  // Rewriting a retired extent marks it durably again.
  ASSERT_EQ(Do(c, Opcode::kWrite, 1 * kExtent + 4096, 4096, buf), StatusCode::kOk);
  EXPECT_EQ(on_disk(), 0x0A);

  // A clean shutdown keeps the log: a write this replica has may be missing
  // on a peer that stopped first (all engines restarted at once); the next
  // target resyncs these extents.
  clients_.clear();
  server_->Stop();
  ASSERT_TRUE(manager_->CloseAll().ok());
  manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_ + "/replicas");
  ASSERT_TRUE(manager_->LoadAll().ok());
  StartServer(0);
  Listener m;
  ReplicaClient* d = Connect(&m, Options());
  ASSERT_TRUE(m.connected);
  EXPECT_TRUE(m.info.clean_shutdown);
  EXPECT_EQ(m.info.activity_count, 2u);
  EXPECT_EQ(on_disk(), 0x0A);
  // Found at open, they are kept through FLUSHes until the generation moves
  // past the one the replica had at open (the next target's resync is done);
  // then they retire like any other.
  auto rund = [&](ClientRequest* r) { return Run(d, r); };
  ASSERT_EQ(Do(d, Opcode::kFlush, 0, 0, nullptr), StatusCode::kOk);
  RunUntil([] { return false; }, 1500);  // a retire pass or two
  EXPECT_EQ(ActiveExtents(rund), (std::vector<uint64_t>{1, 3}));
  ASSERT_EQ(SetGeneration(d, 1, false), StatusCode::kOk);
  ASSERT_EQ(Do(d, Opcode::kFlush, 0, 0, nullptr), StatusCode::kOk);
  ASSERT_TRUE(RunUntil([&] { return on_disk() == 0; }, 5000)) << int(on_disk());
  EXPECT_EQ(Info(d).activity_count, 0u);
  std::free(buf);
}

INSTANTIATE_TEST_SUITE_P(Backends, DirtyMapServerTest, ::testing::Values("io_uring", "libaio"),
                         [](const auto& p) {
                           return std::string(p.param) == "io_uring" ? "IoUring" : "Libaio";
                         });

// A fake replica answers the client's request STALE_EPOCH and resets the
// connection before the client read the reply; the client's next send then
// fails. It must still deliver the STALE_EPOCH it was sent (the old target
// must learn it is fenced, not see a replica fault).
TEST(ReplicaClientTest, RepliesSentBeforeAResetAreDeliveredBeforeTheSendError) {
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(lfd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(lfd, 1), 0);
  socklen_t alen = sizeof(addr);
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &alen);
  std::atomic<bool> got_request{false}, go{false}, reset{false};
  std::thread fake([&] {
    int fd = ::accept(lfd, nullptr, nullptr);
    auto read_frame = [&](protocol::FrameHeader* h) {
      uint8_t hdr[protocol::kHeaderSize];
      if (::recv(fd, hdr, sizeof(hdr), MSG_WAITALL) != sizeof(hdr)) return false;
      if (protocol::DecodeHeader(hdr, h) != protocol::DecodeResult::kOk) return false;
      std::string payload(h->payload_length, '\0');
      return h->payload_length == 0 || ::recv(fd, payload.data(), payload.size(), MSG_WAITALL) ==
                                           static_cast<ssize_t>(payload.size());
    };
    auto reply = [&](const protocol::FrameHeader& req, protocol::WireStatus st,
                     const std::string& payload) {
      protocol::FrameHeader h;
      h.opcode = static_cast<uint8_t>(req.opcode | protocol::kReplyBit);
      h.request_id = req.request_id;
      h.status = st;
      std::string f = Frame(h, payload);
      (void)!::send(fd, f.data(), f.size(), MSG_NOSIGNAL);
    };
    protocol::FrameHeader h;
    if (!read_frame(&h)) return;
    protocol::ReplicaInfo info;
    info.size = kVolumeSize;
    info.block_size = 4096;
    info.max_inflight = 8;
    info.replica_id = "fake";
    std::string body;
    (void)protocol::EncodeReplicaInfo(info, &body);
    reply(h, protocol::WireStatus::kOk, body);
    if (!read_frame(&h)) return;
    got_request = true;
    while (!go) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    reply(h, protocol::WireStatus::kStaleEpoch, "");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the reply is in flight
    linger lg{1, 0};                                             // close with RST
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    ::close(fd);
    reset = true;
  });

  EventLoop loop;
  Listener l;
  ClientOptions o;
  o.port = ntohs(addr.sin_port);
  o.volume_id = "vol-1";
  o.epoch = 1;
  ReplicaClient c(&loop, o, &l);
  ASSERT_TRUE(c.Connect().ok());
  auto run_until = [&](const std::function<bool()>& pred) {
    const uint64_t deadline = MonotonicNanos() + 10'000'000'000ull;
    while (!pred() && MonotonicNanos() < deadline) loop.RunOnce(10);
    return pred();
  };
  ASSERT_TRUE(run_until([&] { return l.connected; }));
  Op first(Opcode::kFlush, 0, 0, nullptr);
  c.Submit(&first.req);
  ASSERT_TRUE(run_until([&] { return got_request.load(); }));
  // Not running the loop now: the reply and the reset arrive unread.
  go = true;
  while (!reset) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  Op second(Opcode::kFlush, 0, 0, nullptr);
  c.Submit(&second.req);  // sent by the next BeforeWait, into the reset socket
  ASSERT_TRUE(run_until([&] { return first.done && second.done && l.disconnected; }));
  EXPECT_EQ(first.req.wire_status, protocol::WireStatus::kStaleEpoch);
  EXPECT_EQ(first.req.status, StatusCode::kFailedPrecondition);
  EXPECT_NE(second.req.status, StatusCode::kOk);
  fake.join();
  ::close(lfd);
}

TEST(ReplicaServerOptionsTest, PoolTooSmallForOneMaxSizeBufferPerClassIsInvalidArgument) {
  auto b = backend::BackendFactory::Create("auto");
  ASSERT_TRUE(b.ok());
  replica::ReplicaManager manager(b->get(), "/var/tmp/tandem-no-such-dir-for-pool-test");
  ServerOptions o;
  o.buffer_pool_bytes = 8ull << 20;  // 9 classes: ~0.9 MiB each
  ReplicaServer server(&manager, b->get(), o);
  Status st = server.Start();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
}

INSTANTIATE_TEST_SUITE_P(Backends, ReplicaServerTest, ::testing::Values("io_uring", "libaio"),
                         [](const auto& p) {
                           return std::string(p.param) == "io_uring" ? "IoUring" : "Libaio";
                         });

}  // namespace
}  // namespace tandem::server
