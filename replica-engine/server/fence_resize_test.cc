// ReplicaServer::FenceVolume and ResizeVolume (the replica side of the
// engine's FenceReplica / ResizeReplica): real server and client over
// 127.0.0.1, the persisted state checked after a reopen.

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "gtest/gtest.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/client/replica_client.h"
#include "replica-engine/server/replica_server.h"

namespace tandem::server {
namespace {

using client::ClientOptions;
using client::ClientRequest;
using client::ReplicaClient;
using protocol::Opcode;

constexpr uint64_t kSize = 16ull << 20;

struct Listener : ReplicaClient::Listener {
  bool connected = false;
  bool disconnected = false;
  Status why;
  void OnConnected(const protocol::ReplicaInfo&) override { connected = true; }
  void OnDisconnected(const Status& w) override {
    disconnected = true;
    why = w;
  }
};

class FenceResizeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/tandem-fence-resize-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto b = backend::BackendFactory::Create("auto");
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    backend_ = std::move(*b);
    manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_);
    ASSERT_TRUE(manager_->LoadAll().ok());
    replica::ReplicaConfig cfg;
    cfg.volume_id = "v";
    cfg.replica_id = "r";
    cfg.size = kSize;
    ASSERT_TRUE(manager_->Create(cfg).ok());
    ServerOptions opts;
    opts.buffer_pool_bytes = 32ull << 20;
    server_ = std::make_unique<ReplicaServer>(manager_.get(), backend_.get(), opts);
    ASSERT_TRUE(server_->Start().ok());
    buf_ = static_cast<uint8_t*>(std::aligned_alloc(4096, 4096));
  }
  void TearDown() override {
    clients_.clear();
    if (server_) server_->Stop();
    server_.reset();
    if (manager_) (void)manager_->CloseAll();
    manager_.reset();
    backend_.reset();
    std::free(buf_);
    std::filesystem::remove_all(dir_);
  }

  ReplicaClient* Connect(Listener* l, uint64_t epoch, uint64_t target_id) {
    ClientOptions o;
    o.port = server_->port();
    o.volume_id = "v";
    o.epoch = epoch;
    o.target_id = target_id;
    clients_.push_back(std::make_unique<ReplicaClient>(&loop_, o, l));
    EXPECT_TRUE(clients_.back()->Connect().ok());
    EXPECT_TRUE(RunUntil([&] { return l->connected || l->disconnected; }));
    return clients_.back().get();
  }
  bool RunUntil(const std::function<bool()>& pred) {
    const uint64_t deadline = MonotonicNanos() + 10'000'000'000ull;
    while (!pred()) {
      if (MonotonicNanos() > deadline) return false;
      loop_.RunOnce(5);
    }
    return true;
  }
  ClientRequest Do(ReplicaClient* c, Opcode op, uint64_t off, uint32_t len, void* buf) {
    ClientRequest req;
    bool done = false;
    req.op = op;
    req.offset = off;
    req.length = len;
    req.buf = buf;
    req.ctx = &done;
    req.done = [](ClientRequest* r) { *static_cast<bool*>(r->ctx) = true; };
    c->Submit(&req);
    EXPECT_TRUE(RunUntil([&] { return done; }));
    return req;
  }
  // Runs `call` on another thread while this one drives the client loop
  // (the call blocks until the server's loop has done it).
  Status CallWhileLooping(const std::function<Status()>& call) {
    Status st;
    std::atomic<bool> finished{false};
    std::thread t([&] {
      st = call();
      finished.store(true);
    });
    const uint64_t deadline = MonotonicNanos() + 10'000'000'000ull;
    while (!finished.load() && MonotonicNanos() < deadline) {
      loop_.RunOnce(5);
    }
    t.join();
    return st;
  }
  uint64_t PersistedEpoch() {
    auto f = replica::MetadataFile::Open(dir_ + "/v/meta");
    EXPECT_TRUE(f.ok());
    return f.ok() ? (*f)->current().highest_epoch : 0;
  }

  std::string dir_;
  std::unique_ptr<backend::StorageBackend> backend_;
  std::unique_ptr<replica::ReplicaManager> manager_;
  std::unique_ptr<ReplicaServer> server_;
  EventLoop loop_;
  std::vector<std::unique_ptr<ReplicaClient>> clients_;
  uint8_t* buf_ = nullptr;
};

TEST_F(FenceResizeTest, FenceSupersedesOlderSessionsDurably) {
  Listener old_target;
  ReplicaClient* c = Connect(&old_target, 3, 0x31);
  ASSERT_TRUE(old_target.connected);
  std::memset(buf_, 1, 4096);
  ASSERT_EQ(Do(c, Opcode::kWrite, 0, 4096, buf_).status, StatusCode::kOk);

  ASSERT_TRUE(server_->FenceVolume("v", 5).ok());
  EXPECT_EQ(PersistedEpoch(), 5u) << "fence returned before the epoch was durable";
  EXPECT_EQ((*manager_->Get("v"))->summary().highest_epoch, 5u);
  // The old target's session is refused from now on, and nothing it sends
  // lands.
  std::memset(buf_, 2, 4096);
  ClientRequest w = Do(c, Opcode::kWrite, 0, 4096, buf_);
  EXPECT_EQ(w.wire_status, protocol::WireStatus::kStaleEpoch);
  // So is a new HELLO below the fence; the first target at the fence epoch
  // is accepted (no owner recorded) and reads the old target's last
  // acknowledged write.
  Listener stale;
  Connect(&stale, 4, 0x41);
  EXPECT_FALSE(stale.connected);
  EXPECT_EQ(stale.why.code(), StatusCode::kFailedPrecondition) << stale.why.ToString();
  Listener next;
  ReplicaClient* n = Connect(&next, 5, 0x51);
  ASSERT_TRUE(next.connected) << next.why.ToString();
  ASSERT_EQ(Do(n, Opcode::kRead, 0, 4096, buf_).status, StatusCode::kOk);
  EXPECT_EQ(buf_[0], 1);
  EXPECT_EQ(buf_[4095], 1);

  // Lower or equal: nothing changes (a retry gets the same answer), and the
  // new owner keeps its session.
  ASSERT_TRUE(server_->FenceVolume("v", 5).ok());
  ASSERT_TRUE(server_->FenceVolume("v", 2).ok());
  EXPECT_EQ(PersistedEpoch(), 5u);
  EXPECT_EQ(Do(n, Opcode::kRead, 0, 4096, buf_).status, StatusCode::kOk);
  EXPECT_EQ(server_->FenceVolume("nope", 9).code(), StatusCode::kNotFound);
  EXPECT_EQ(server_->FenceVolume("v", 0).code(), StatusCode::kInvalidArgument);

  // Persisted: a restarted engine still refuses the fenced epoch.
  clients_.clear();
  server_->Stop();
  server_.reset();
  manager_.reset();
  manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_);
  ASSERT_TRUE(manager_->LoadAll().ok());
  EXPECT_EQ((*manager_->Get("v"))->summary().highest_epoch, 5u);
}

TEST_F(FenceResizeTest, FenceOfAVolumeWithoutSessionsAndBeforeStart) {
  ASSERT_TRUE(server_->FenceVolume("v", 7).ok());
  EXPECT_EQ(PersistedEpoch(), 7u);
  server_->Stop();
  ASSERT_TRUE(server_->FenceVolume("v", 8).ok());  // no loop: done on this thread
  EXPECT_EQ(PersistedEpoch(), 8u);
}

TEST_F(FenceResizeTest, ResizeLetsLiveSessionsUseTheGrownSpace) {
  Listener l;
  ReplicaClient* c = Connect(&l, 1, 0x11);
  ASSERT_TRUE(l.connected);
  std::memset(buf_, 0x77, 4096);
  EXPECT_EQ(Do(c, Opcode::kWrite, kSize, 4096, buf_).status, StatusCode::kOutOfRange);
  EXPECT_EQ(server_->ResizeVolume("v", kSize / 2).code(), StatusCode::kOutOfRange);
  ASSERT_TRUE(CallWhileLooping([&] { return server_->ResizeVolume("v", 3 * kSize); }).ok());
  EXPECT_EQ((*manager_->Get("v"))->summary().size, 3 * kSize);
  ASSERT_EQ(Do(c, Opcode::kWrite, 3 * kSize - 4096, 4096, buf_).status, StatusCode::kOk);
  std::memset(buf_, 0, 4096);
  ASSERT_EQ(Do(c, Opcode::kRead, 3 * kSize - 4096, 4096, buf_).status, StatusCode::kOk);
  EXPECT_EQ(buf_[0], 0x77);
  EXPECT_EQ(buf_[4095], 0x77);
  EXPECT_EQ(Do(c, Opcode::kWrite, 3 * kSize, 4096, buf_).status, StatusCode::kOutOfRange);
  EXPECT_EQ(server_->ResizeVolume("nope", kSize).code(), StatusCode::kNotFound);

  // A new session sees the new size; a reopen keeps it.
  Listener l2;
  Connect(&l2, 2, 0x12);
  ASSERT_TRUE(l2.connected);
  clients_.clear();
  server_->Stop();
  server_.reset();
  manager_.reset();
  manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), dir_);
  ASSERT_TRUE(manager_->LoadAll().ok());
  EXPECT_EQ((*manager_->Get("v"))->summary().size, 3 * kSize);
}

}  // namespace
}  // namespace tandem::server
