// Issue 10, data races: management threads (gRPC handlers) read replicas
// (GetReplica, ListReplicas, an idempotent CreateReplica) while the replica
// server's loop changes their metadata and other threads delete and
// re-create them. They must read Replica::summary() (published under a lock
// at each durable update), never the loop's record. Real server and client
// over 127.0.0.1; meant for the sanitizer builds (ASan in the suite, TSan
// by hand: -fsanitize=thread), where a racy read fails the test.

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
  void OnConnected(const protocol::ReplicaInfo&) override { connected = true; }
  void OnDisconnected(const Status&) override { disconnected = true; }
};

replica::ReplicaConfig Config(const std::string& volume) {
  replica::ReplicaConfig cfg;
  cfg.volume_id = volume;
  cfg.replica_id = "r-" + volume;
  cfg.size = kSize;
  return cfg;
}

TEST(ReplicaSummaryRaceTest, ManagementReadsDuringIoEpochChangesAndDeletes) {
  char tmpl[] = "/var/tmp/tandem-summary-race-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  auto backend = backend::BackendFactory::Create("auto");
  ASSERT_TRUE(backend.ok()) << backend.status().ToString();
  auto manager = std::make_unique<replica::ReplicaManager>(backend->get(), dir);
  ASSERT_TRUE(manager->LoadAll().ok());
  const std::vector<std::string> volumes = {"v0", "v1", "v2"};
  for (const std::string& v : volumes) ASSERT_TRUE(manager->Create(Config(v)).ok());
  ServerOptions opts;
  opts.buffer_pool_bytes = 32ull << 20;
  ReplicaServer server(manager.get(), backend->get(), opts);
  ASSERT_TRUE(server.Start().ok());

  // Readers: what GetReplica, ListReplicas and an idempotent CreateReplica do.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&, t] {
      for (uint64_t i = 0; !stop.load() && i < 10'000'000; ++i) {
        for (const auto& r : manager->List()) {
          replica::ReplicaSummary s = r->summary();
          if (s.volume_id != r->volume_id() || s.size != kSize ||
              s.replica_id != "r-" + s.volume_id) {
            bad.fetch_add(1);
          }
          reads.fetch_add(1);
        }
        const std::string& v = volumes[(i + t) % volumes.size()];
        if (auto r = manager->Get(v); r.ok()) (void)(*r)->summary();
        // The idempotent CreateReplica path compares the existing record.
        auto c = manager->Create(Config(v));
        if (!c.ok() && c.status().code() != StatusCode::kUnavailable) bad.fetch_add(1);
      }
    });
  }

  // The loop's side: a client per volume writes, bumps the generation with
  // tracking (dirty-map persists) and reconnects with a higher epoch (the
  // epoch persisted on the loop); meanwhile v2 is deleted and re-created.
  EventLoop loop;
  auto run_until = [&](const std::function<bool()>& pred) {
    const uint64_t deadline = MonotonicNanos() + 10'000'000'000ull;
    while (!pred() && MonotonicNanos() < deadline) loop.RunOnce(5);
    return pred();
  };
  uint8_t* buf = static_cast<uint8_t*>(std::aligned_alloc(4096, 4096));
  std::memset(buf, 0x33, 4096);
  for (uint64_t round = 1; round <= 12; ++round) {
    for (const std::string& v : {std::string("v0"), std::string("v1")}) {
      ClientOptions o;
      o.port = server.port();
      o.volume_id = v;
      o.epoch = round;
      o.target_id = 100 + round;
      Listener l;
      ReplicaClient c(&loop, o, &l);
      ASSERT_TRUE(c.Connect().ok());
      ASSERT_TRUE(run_until([&] { return l.connected || l.disconnected; }));
      ASSERT_TRUE(l.connected) << v << " round " << round;
      ClientRequest reqs[3];
      int done = 0;
      for (int k = 0; k < 3; ++k) {
        reqs[k].ctx = &done;
        reqs[k].done = [](ClientRequest* r) { ++*static_cast<int*>(r->ctx); };
      }
      reqs[0].op = Opcode::kSetGeneration;
      reqs[0].offset = round;
      reqs[0].flags = protocol::kFlagTrackDirty;
      reqs[1].op = Opcode::kWrite;
      reqs[1].offset = (round % 200) * 65536;
      reqs[1].length = 4096;
      reqs[1].buf = buf;
      reqs[2].op = Opcode::kMarkDirty;
      reqs[2].offset = (round % 100) * 131072;
      reqs[2].length = 4096;
      for (ClientRequest& r : reqs) c.Submit(&r);
      ASSERT_TRUE(run_until([&] { return done == 3; }));
      for (ClientRequest& r : reqs) EXPECT_EQ(r.status, StatusCode::kOk);
      c.Close();
    }
    ASSERT_TRUE(server.DetachVolume("v2").ok());
    ASSERT_TRUE(manager->Delete("v2").ok());
    ASSERT_TRUE(manager->Create(Config("v2")).ok());
  }
  stop.store(true);
  for (std::thread& t : readers) t.join();
  std::free(buf);
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(reads.load(), 0u);
  for (const std::string& v : {std::string("v0"), std::string("v1")}) {
    auto r = manager->Get(v);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ((*r)->summary().generation, 12u);
    EXPECT_EQ((*r)->summary().highest_epoch, 12u);
  }
  server.Stop();
  (void)manager->CloseAll();
  manager.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tandem::server
