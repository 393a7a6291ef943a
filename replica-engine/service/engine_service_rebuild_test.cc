// Live replica changes through the management API, end to end: a target
// over replicas on separate in-process "nodes" loses one and gains a fresh
// one, which is rebuilt until HEALTHY and byte-identical to the survivor.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/event_loop.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/client/replica_client.h"
#include "replica-engine/service/testing_engine_service.h"

namespace tandem::service {
namespace {

using namespace ::tandem::service::test_support;  // NOLINT: the shared fixture and helpers
namespace pb = ::tandem::engine::v1;
using api::EngineClient;

// Another "node" for the rebuild test: a backend, replica manager and replica
// server of its own in the test's temp dir, holding one replica of `volume`.
// Its own backend, as every node has one: a backend belongs to one thread
// (storage_backend.h), and each ReplicaServer runs its own loop thread.
struct ReplicaNode {
  std::unique_ptr<backend::StorageBackend> backend;  // outlives the two below
  std::unique_ptr<replica::ReplicaManager> manager;
  std::unique_ptr<server::ReplicaServer> server;
  std::string data_path;
  std::string address;

  void Start(const std::string& dir, const std::string& volume, uint64_t size) {
    auto b = backend::BackendFactory::Create("auto");
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    backend = std::move(*b);
    manager = std::make_unique<replica::ReplicaManager>(backend.get(), dir);
    ASSERT_TRUE(manager->LoadAll().ok());
    replica::ReplicaConfig cfg;
    cfg.volume_id = volume;
    cfg.replica_id = volume + "-" + std::filesystem::path(dir).filename().string();
    cfg.size = size;
    ASSERT_TRUE(manager->Create(cfg).ok());
    data_path = dir + "/" + volume + "/data";
    server::ServerOptions opts;
    // Room for a 1 MiB buffer in every size class: the rebuild copies 1 MiB
    // windows (an 8 MiB pool has none of that size).
    opts.buffer_pool_bytes = 16 << 20;
    server = std::make_unique<server::ReplicaServer>(manager.get(), backend.get(), opts);
    ASSERT_TRUE(server->Start().ok());
    address = "127.0.0.1:" + std::to_string(server->port());
  }
  void Stop() {
    if (server) server->Stop();
    if (manager) (void)manager->CloseAll();
  }
  pb::ReplicaEndpoint Endpoint() const {
    pb::ReplicaEndpoint e;
    e.set_host("127.0.0.1");
    e.set_port(server->port());
    return e;
  }
};

// Reads `path` whole (the replica data files are small here).
std::vector<uint8_t> ReadFile(const std::string& path, uint64_t size) {
  std::vector<uint8_t> out(size);
  int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0) << path;
  if (fd < 0) return out;
  EXPECT_EQ(::pread(fd, out.data(), out.size(), 0), static_cast<ssize_t>(out.size()));
  ::close(fd);
  return out;
}

void WriteAt(const std::string& path, uint64_t offset, const std::vector<uint8_t>& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
            static_cast<ssize_t>(bytes.size()));
  ASSERT_EQ(::fsync(fd), 0);
  ::close(fd);
}

const pb::ReplicaStatus* FindReplica(const pb::Target& t, const std::string& address) {
  for (const pb::ReplicaStatus& r : t.replicas()) {
    if (r.address() == address) return &r;
  }
  return nullptr;
}

// A live target loses a replica (RemoveTargetReplica) and gains a fresh one
// (AddTargetReplica), which is rebuilt from the survivor until it is HEALTHY
// and holds the survivor's bytes; CreateTarget stays idempotent for the live
// replica list.
TEST_P(EngineServiceLoopTest, AddTargetReplicaRebuildsAFreshReplicaUntilHealthy) {
  const std::string vol = "vol-r";
  ReplicaNode nodes[3];
  for (int i = 0; i < 3; ++i) {
    nodes[i].Start(tmp_ + "/node" + std::to_string(i), vol, kSize);
  }
  // The same data on the two original replicas (as a mirror left them), in
  // two extents with a hole between them.
  // `a` spans more than one 1 MiB copy window.
  std::vector<uint8_t> a(1536 << 10), b(64 << 10);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i * 7 + 1);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 13 + 5);
  for (int i = 0; i < 2; ++i) {
    WriteAt(nodes[i].data_path, 0, a);
    WriteAt(nodes[i].data_path, kSize - b.size(), b);
  }

  pb::CreateTargetRequest req;
  req.set_volume_id(vol);
  req.set_epoch(1);
  *req.add_replicas() = nodes[0].Endpoint();
  *req.add_replicas() = nodes[1].Endpoint();
  Result<pb::Target> t = client_->CreateTarget(req, kTimeout);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_EQ(t->state(), pb::TARGET_STATE_READY);
  EXPECT_EQ(t->rebuild().state(), pb::REBUILD_STATE_IDLE);
  EXPECT_EQ(t->rebuilds_completed(), 0u);

  Result<pb::Target> removed = client_->RemoveTargetReplica(vol, nodes[1].address, kTimeout);
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  ASSERT_EQ(removed->replicas_size(), 1);
  EXPECT_EQ(removed->replicas(0).address(), nodes[0].address);

  Result<pb::Target> added = client_->AddTargetReplica(vol, nodes[2].Endpoint(), kTimeout);
  ASSERT_TRUE(added.ok()) << added.status().ToString();
  ASSERT_EQ(added->replicas_size(), 2);
  ASSERT_NE(FindReplica(*added, nodes[2].address), nullptr);

  // Bounded: 4 MiB at an unlimited rate takes milliseconds.
  pb::Target last;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  bool healthy = false;
  while (!healthy && std::chrono::steady_clock::now() < deadline) {
    Result<pb::Target> got = client_->GetTarget(vol, kTimeout);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    last = *got;
    const pb::ReplicaStatus* r = FindReplica(last, nodes[2].address);
    ASSERT_NE(r, nullptr);
    healthy = r->state() == pb::REPLICA_STATE_HEALTHY && last.rebuilds_completed() == 1;
    if (!healthy) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(healthy) << last.DebugString();
  EXPECT_EQ(last.state(), pb::TARGET_STATE_READY);
  EXPECT_EQ(last.rebuild().state(), pb::REBUILD_STATE_DONE);
  EXPECT_EQ(last.rebuild().replica(), nodes[2].address);
  EXPECT_EQ(last.rebuild().source(), nodes[0].address);
  EXPECT_EQ(last.rebuild().bytes_done(), last.rebuild().bytes_total());
  EXPECT_GE(last.rebuild_bytes_copied(), a.size() + b.size());

  // The rebuilt replica holds the survivor's bytes, holes included.
  std::vector<uint8_t> want = ReadFile(nodes[0].data_path, kSize);
  std::vector<uint8_t> got = ReadFile(nodes[2].data_path, kSize);
  EXPECT_TRUE(std::equal(a.begin(), a.end(), got.begin()));
  EXPECT_TRUE(std::equal(b.begin(), b.end(), got.end() - b.size()));
  EXPECT_TRUE(want == got) << "the rebuilt replica differs from its source";

  // CreateTarget with the live list (any order) is the same target; the
  // original list is another spec now.
  pb::CreateTargetRequest live = req;
  live.clear_replicas();
  *live.add_replicas() = nodes[2].Endpoint();
  *live.add_replicas() = nodes[0].Endpoint();
  Result<pb::Target> again = client_->CreateTarget(live, kTimeout);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->nbd_socket(), t->nbd_socket());
  EXPECT_EQ(client_->CreateTarget(req, kTimeout).status().code(), StatusCode::kAlreadyExists);

  ASSERT_TRUE(client_->DestroyTarget(vol, kTimeout).ok());
  for (ReplicaNode& n : nodes) n.Stop();
}

}  // namespace
}  // namespace tandem::service
