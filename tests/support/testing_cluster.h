#pragma once
// Test fixture for the volume target: "nodes" (a backend, a replica manager
// and a replica server each, on 127.0.0.1) holding one replica of a test
// volume, and helpers to run targets on a test-owned EventLoop.

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "gtest/gtest.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/replica/replica_manager.h"
#include "replica-engine/server/replica_server.h"
#include "replica-engine/volume/volume_target.h"

namespace tandem::target::target_testing {

inline uint64_t kVolumeSize = 16ull << 20;  // a fixture may change it before AddNodes
inline constexpr const char* kVolume = "vol-t";
inline constexpr const char* kToken = "tok";

// One "node": a backend, a replica manager and a replica server.
struct Node {
  std::string dir;
  std::unique_ptr<backend::StorageBackend> backend;
  std::unique_ptr<replica::ReplicaManager> manager;
  std::unique_ptr<server::ReplicaServer> server;
  uint16_t port = 0;

  void StartServer() {
    server::ServerOptions o;
    o.port = port;  // 0 the first time; the same port after a restart
    o.auth_token = kToken;
    o.buffer_pool_bytes = 16ull << 20;
    server = std::make_unique<server::ReplicaServer>(manager.get(), backend.get(), o);
    ASSERT_TRUE(server->Start().ok());
    port = server->port();
  }
  std::shared_ptr<replica::Replica> replica() { return *manager->Get(kVolume); }
  // The replica's bytes, read straight from its data file.
  std::vector<uint8_t> Data() {
    std::vector<uint8_t> out(kVolumeSize);
    int fd = ::open((dir + "/replicas/" + kVolume + "/data").c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::pread(fd, out.data(), out.size(), 0), static_cast<ssize_t>(out.size()));
    ::close(fd);
    return out;
  }
};

struct Io {
  BlockRequest req;
  bool done = false;
  Io() {
    req.done = [](BlockRequest* r) { static_cast<Io*>(r->ctx)->done = true; };
    req.ctx = this;
  }
  Io(const Io&) = delete;
  Io& operator=(const Io&) = delete;
};

inline uint8_t* AlignedAlloc(size_t n) {
  return static_cast<uint8_t*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096));
}

class TargetFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/tandem-target-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override {
    targets_.clear();
    for (auto& n : nodes_) {
      if (n->server) n->server->Stop();
      n->server.reset();
      if (n->manager) (void)n->manager->CloseAll();
    }
    nodes_.clear();
    for (uint8_t* b : bufs_) std::free(b);
    std::filesystem::remove_all(root_);
  }

  void AddNodes(int n) {
    for (int i = 0; i < n; ++i) {
      auto node = std::make_unique<Node>();
      node->dir = root_ + "/n" + std::to_string(nodes_.size());
      std::filesystem::create_directories(node->dir);
      auto b = backend::BackendFactory::Create("auto");
      ASSERT_TRUE(b.ok()) << b.status().ToString();
      node->backend = std::move(*b);
      node->manager =
          std::make_unique<replica::ReplicaManager>(node->backend.get(), node->dir + "/replicas");
      ASSERT_TRUE(node->manager->LoadAll().ok());
      replica::ReplicaConfig cfg;
      cfg.volume_id = kVolume;
      cfg.replica_id = "r" + std::to_string(nodes_.size());
      cfg.size = kVolumeSize;
      ASSERT_TRUE(node->manager->Create(cfg).ok());
      node->StartServer();
      nodes_.push_back(std::move(node));
    }
  }

  TargetOptions Options(uint64_t epoch, uint32_t timeout_ms = 2000, uint32_t reconnect_ms = 0) {
    TargetOptions o;
    o.reconnect_interval_ms = reconnect_ms;
    o.volume_id = kVolume;
    o.epoch = epoch;
    o.token = kToken;
    o.request_timeout_ms = timeout_ms;
    o.connect_timeout_ms = 2000;
    for (auto& n : nodes_) o.replicas.push_back({"127.0.0.1", n->port, false});
    return o;
  }
  VolumeTarget* StartTarget(const TargetOptions& o) {
    targets_.push_back(std::make_unique<VolumeTarget>(&loop_, o));
    VolumeTarget* t = targets_.back().get();
    EXPECT_TRUE(t->Start().ok());
    EXPECT_TRUE(RunUntil([&] { return t->state() != TargetState::kStarting; }));
    return t;
  }
  VolumeTarget* NewTarget(uint64_t epoch, uint32_t timeout_ms = 2000, uint32_t reconnect_ms = 0) {
    return StartTarget(Options(epoch, timeout_ms, reconnect_ms));
  }

  bool RunUntil(const std::function<bool()>& pred, int timeout_ms = 10000) {
    uint64_t deadline = MonotonicNanos() + timeout_ms * 1000000ull;
    while (!pred()) {
      if (MonotonicNanos() > deadline) return false;
      loop_.RunOnce(10);
    }
    return true;
  }

  uint8_t* Buf(size_t n) {
    bufs_.push_back(AlignedAlloc(n));
    return bufs_.back();
  }

  StatusCode Do(VolumeTarget* t, BlockOp op, uint64_t off, uint32_t len, void* buf,
                uint32_t flags = 0) {
    Io io;
    io.req.op = op;
    io.req.offset = off;
    io.req.length = len;
    io.req.buf = buf;
    io.req.flags = flags;
    t->Submit(&io.req);
    EXPECT_FALSE(io.done) << "completed inside Submit";
    EXPECT_TRUE(RunUntil([&] { return io.done; }));
    return io.req.status;
  }

  StatusCode WritePattern(VolumeTarget* t, uint64_t off, uint32_t len, uint8_t byte) {
    uint8_t* b = Buf(len);
    std::memset(b, byte, len);
    return Do(t, BlockOp::kWrite, off, len, b);
  }

  std::string root_;
  EventLoop loop_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<std::unique_ptr<VolumeTarget>> targets_;
  std::vector<uint8_t*> bufs_;
};

}  // namespace tandem::target::target_testing
