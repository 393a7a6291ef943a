// ReplicaServer + ReplicaClient over 127.0.0.1: pipelined random I/O checked
// byte for byte against an in-memory model, handshake and fencing rules, and
// bad input closing only the offending connection.

#include "replica-engine/server/replica_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
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
    backend_ = std::move(*b);
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
  // The old target's connection is dropped; its write must fail and not land.
  ASSERT_TRUE(RunUntil([&] { return a.disconnected; }));
  std::memcpy(buf, old_data.data(), 4096);
  EXPECT_NE(Do(ca, Opcode::kWrite, 8192, 4096, buf), StatusCode::kOk);
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

INSTANTIATE_TEST_SUITE_P(Backends, ReplicaServerTest, ::testing::Values("io_uring", "libaio"),
                         [](const auto& p) {
                           return std::string(p.param) == "io_uring" ? "IoUring" : "Libaio";
                         });

}  // namespace
}  // namespace tandem::server
