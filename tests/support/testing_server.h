#pragma once
// Test helpers for the replica server's resource-limit and authentication
// tests: a real ReplicaServer (backend "auto") on 127.0.0.1 serving two
// volumes, ReplicaClients on a test-owned loop, and RawPeer, a blocking socket
// that speaks the protocol by hand (to misbehave: never read, stay silent,
// send a payload before HELLO).
//
// Header-only, tests only. Every wait is bounded.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/crc32c.h"
#include "gtest/gtest.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/client/replica_client.h"
#include "replica-engine/server/replica_server.h"

namespace tandem::server::testing {

constexpr uint64_t kVolumeSize = 64ull << 20;

struct TestListener : client::ReplicaClient::Listener {
  bool connected = false;
  bool disconnected = false;
  Status why;
  void OnConnected(const protocol::ReplicaInfo&) override { connected = true; }
  void OnDisconnected(const Status& w) override {
    disconnected = true;
    why = w;
  }
};

// A request the tests wait on.
struct TestOp {
  client::ClientRequest req;
  bool done = false;
  static void Done(client::ClientRequest* r) { static_cast<TestOp*>(r->ctx)->done = true; }
  TestOp(protocol::Opcode op, uint64_t off, uint32_t len, void* buf) {
    req.op = op;
    req.offset = off;
    req.length = len;
    req.buf = buf;
    req.done = &TestOp::Done;
    req.ctx = this;
  }
  TestOp(const TestOp&) = delete;  // req.ctx points at this object
  TestOp& operator=(const TestOp&) = delete;
};

inline std::string EncodeFrame(protocol::FrameHeader h, const std::string& payload) {
  h.payload_length = static_cast<uint32_t>(payload.size());
  h.payload_crc = payload.empty() ? 0 : Crc32c(payload.data(), payload.size());
  std::string out(protocol::kHeaderSize, '\0');
  protocol::EncodeHeader(h, reinterpret_cast<uint8_t*>(out.data()));
  return out + payload;
}

// A blocking client socket driven by hand.
class RawPeer {
 public:
  RawPeer() = default;
  ~RawPeer() { Close(); }
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  // rcvbuf > 0: a small receive buffer (set before connect), so replies the
  // peer does not read pile up on the server instead of in the kernel.
  bool Connect(uint16_t port, int rcvbuf = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  int fd() const { return fd_; }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool Send(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads one frame (header + payload) within timeout_ms; false on close,
  // timeout or a bad header.
  bool ReadFrame(protocol::FrameHeader* h, std::string* payload, int timeout_ms = 5000) {
    uint8_t hdr[protocol::kHeaderSize];
    if (!ReadExact(hdr, sizeof(hdr), timeout_ms)) return false;
    if (protocol::DecodeHeader(hdr, h) != protocol::DecodeResult::kOk) return false;
    payload->assign(h->payload_length, '\0');
    return h->payload_length == 0 ||
           ReadExact(reinterpret_cast<uint8_t*>(payload->data()), payload->size(), timeout_ms);
  }
  // True once the server closed the connection (EOF or reset) within
  // timeout_ms, reading and dropping whatever it sent first.
  bool WaitClosed(int timeout_ms) {
    const uint64_t deadline = MonotonicNanos() + uint64_t(timeout_ms) * 1000000;
    while (MonotonicNanos() < deadline) {
      if (ClosedNow(50)) return true;
    }
    return false;
  }
  // One check, waiting at most wait_ms: true when the server has closed it.
  bool ClosedNow(int wait_ms = 0) {
    char sink[4096];
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, wait_ms) <= 0) return false;
    ssize_t n = ::recv(fd_, sink, sizeof(sink), MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

 private:
  bool ReadExact(uint8_t* out, size_t n, int timeout_ms) {
    const uint64_t deadline = MonotonicNanos() + uint64_t(timeout_ms) * 1000000;
    size_t got = 0;
    while (got < n) {
      if (MonotonicNanos() > deadline) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      ssize_t r = ::recv(fd_, out + got, n - got, MSG_DONTWAIT);
      if (r == 0) return false;
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        return false;
      }
      got += static_cast<size_t>(r);
    }
    return true;
  }

  int fd_ = -1;
};

// A HELLO frame (request id 1).
inline std::string HelloFrame(const std::string& volume, const std::string& token, uint64_t epoch,
                              uint64_t target_id = 0) {
  protocol::HelloRequest hello{epoch, volume, token, target_id};
  std::string payload;
  EXPECT_TRUE(protocol::EncodeHello(hello, &payload).ok());
  protocol::FrameHeader h;
  h.opcode = static_cast<uint8_t>(protocol::Opcode::kHello);
  h.request_id = 1;
  return EncodeFrame(h, payload);
}

// A real server on 127.0.0.1 with volumes "vol-1" and "vol-2", and a loop
// for the test's clients.
constexpr const char* kToken = "secret-token";

class ServerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/tandem-server-limits-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto b = backend::BackendFactory::Create("auto");
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    backend_ = std::move(*b);
    manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_ + "/replicas");
    ASSERT_TRUE(manager_->LoadAll().ok());
    for (const char* v : {"vol-1", "vol-2"}) {
      replica::ReplicaConfig cfg;
      cfg.volume_id = v;
      cfg.replica_id = std::string("r-") + v;
      cfg.size = kVolumeSize;
      ASSERT_TRUE(manager_->Create(cfg).ok());
    }
    options_.auth_token = kToken;
    options_.max_inflight_per_session = 64;
    options_.buffer_pool_bytes = 32ull << 20;
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

  // Starts the server with options_ (change them first).
  void StartServer() {
    server_ = std::make_unique<ReplicaServer>(manager_.get(), backend_.get(), options_);
    ASSERT_TRUE(server_->Start().ok());
    port_ = server_->port();
  }

  client::ClientOptions Options(const std::string& volume, uint64_t epoch = 1) {
    client::ClientOptions o;
    o.port = port_;
    o.volume_id = volume;
    o.token = kToken;
    o.epoch = epoch;
    o.max_inflight = 32;
    return o;
  }

  bool RunUntil(const std::function<bool()>& pred, int timeout_ms = 10000) {
    const uint64_t deadline = MonotonicNanos() + uint64_t(timeout_ms) * 1000000;
    while (!pred()) {
      if (MonotonicNanos() > deadline) return false;
      loop_.RunOnce(10);
    }
    return true;
  }

  client::ReplicaClient* Connect(TestListener* l, const client::ClientOptions& o) {
    clients_.push_back(std::make_unique<client::ReplicaClient>(&loop_, o, l));
    client::ReplicaClient* c = clients_.back().get();
    EXPECT_TRUE(c->Connect().ok());
    EXPECT_TRUE(RunUntil([&] { return l->connected || l->disconnected; }));
    return c;
  }

  // One request, waited for at most timeout_ms; DEADLINE_EXCEEDED when it
  // did not complete in time (the request is then cancelled with the client).
  StatusCode Do(client::ReplicaClient* c, protocol::Opcode op, uint64_t off, uint32_t len,
                void* buf, int timeout_ms = 10000) {
    TestOp o(op, off, len, buf);
    c->Submit(&o.req);
    if (!RunUntil([&] { return o.done; }, timeout_ms)) {
      c->Close();  // completes o (CANCELLED) before it goes out of scope
      return StatusCode::kDeadlineExceeded;
    }
    return o.req.status;
  }

  std::string dir_;
  std::unique_ptr<backend::StorageBackend> backend_;
  std::unique_ptr<replica::ReplicaManager> manager_;
  ServerOptions options_;
  std::unique_ptr<ReplicaServer> server_;
  uint16_t port_ = 0;
  EventLoop loop_;
  std::vector<std::unique_ptr<client::ReplicaClient>> clients_;
};

// Sends this process's stderr (where the log goes) to a file while alive.
class CaptureStderr {
 public:
  explicit CaptureStderr(const std::string& path) : path_(path) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~CaptureStderr() { Restore(); }
  void Restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  // Log lines containing `needle`.
  int Count(const std::string& needle) const {
    std::ifstream in(path_);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) n += line.find(needle) != std::string::npos;
    return n;
  }

 private:
  std::string path_;
  int saved_ = -1;
};

inline void* AlignedBuffer(size_t n) { return std::aligned_alloc(4096, (n + 4095) / 4096 * 4096); }

}  // namespace tandem::server::testing
