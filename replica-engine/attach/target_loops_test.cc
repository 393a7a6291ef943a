// TargetManager over several loops (tandem-engine --target-threads): a new
// volume goes to the loop with the fewest targets (ties: the lowest index)
// and stays there; two volumes on two loops both serve I/O (written bytes
// read back through their NBD exports, libnbd); an idempotent Create answers
// with the existing target on its loop; Destroy frees the loop for the next
// volume; Shutdown destroys the targets of every loop; the local replica is
// served in-process (local::MaybeLocalChannel) only to a target on the
// replica server's loop, a target on another loop reaches it over TCP.
// Every test runs with loop 0 the manager's own thread and the replica
// server's loop (--target-loop=own|server).

#include <libnbd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <future>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "replica-engine/attach/target_manager.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/local/local_replica_channel.h"
#include "replica-engine/replica/replica_manager.h"
#include "replica-engine/server/replica_server.h"

namespace tandem::attach {
namespace {

using target::TargetState;

constexpr uint64_t kSize = 8ull << 20;
const std::vector<std::string> kVolumes = {"vol-a", "vol-b", "vol-c"};

// Writes `n` bytes of a pattern seeded by `seed` at `offset` through the NBD
// unix socket, flushes, reads them back; "" when they match, else why not.
std::string WriteAndReadBack(const TargetInfo& info, uint64_t offset, size_t n, uint8_t seed) {
  std::string uri = "nbd+unix:///" + info.volume_id + "?socket=" + info.nbd_socket;
  nbd_handle* h = nbd_create();
  if (h == nullptr) return std::string("nbd_create: ") + nbd_get_error();
  std::string why;
  std::vector<uint8_t> out(n), in(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(seed + i * 7 + i / 4096);
  if (nbd_connect_uri(h, uri.c_str()) != 0) {
    why = std::string("connect: ") + nbd_get_error();
  } else if (nbd_pwrite(h, out.data(), n, offset, 0) != 0 || nbd_flush(h, 0) != 0 ||
             nbd_pread(h, in.data(), n, offset, 0) != 0) {
    why = std::string("I/O: ") + nbd_get_error();
  } else if (std::memcmp(out.data(), in.data(), n) != 0) {
    why = "read back other bytes than written";
  }
  if (why.empty()) (void)nbd_shutdown(h, 0);
  nbd_close(h);
  return why;
}

class TargetLoopsTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/tandem-tl-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    auto b = backend::BackendFactory::Create("auto");
    ASSERT_TRUE(b.ok());
    backend_ = std::move(*b);
    manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), root_ + "/replicas");
    ASSERT_TRUE(manager_->LoadAll().ok());
    for (const std::string& vol : kVolumes) {
      replica::ReplicaConfig cfg;
      cfg.volume_id = vol;
      cfg.replica_id = vol + "-r0";
      cfg.size = kSize;
      ASSERT_TRUE(manager_->Create(cfg).ok());
    }
    server_ = std::make_unique<server::ReplicaServer>(manager_.get(), backend_.get(),
                                                      server::ServerOptions{});
    ASSERT_TRUE(server_->Start().ok());
  }
  void TearDown() override {
    tm_.reset();
    if (server_) server_->Stop();
    if (manager_) (void)manager_->CloseAll();
    std::filesystem::remove_all(root_);
  }
  // A manager with `loops` loops; loop 0 the server's with GetParam(). With
  // `local`: the engine's channel factory, counting the local channels made.
  void StartManager(size_t loops, bool local = false) {
    tm_ = std::make_unique<TargetManager>(root_ + "/nbd", GetParam() ? server_->loop() : nullptr,
                                          loops);
    if (local) {
      tm_->set_channel_factory([this](EventLoop* loop, const client::ClientOptions& o,
                                      client::ReplicaChannel::Listener* l) {
        auto ch = local::MaybeLocalChannel(server_.get(), "127.0.0.1", server_->port(), loop, o, l);
        if (ch) ++local_channels_;
        return ch;
      });
    }
    ASSERT_TRUE(tm_->Start().ok());
  }
  TargetSpec Spec(const std::string& vol, uint64_t epoch = 1) {
    TargetSpec s;
    s.options.volume_id = vol;
    s.options.epoch = epoch;
    s.options.replicas = {{"127.0.0.1", server_->port(), true}};
    s.ready_timeout_ms = 5000;
    return s;
  }
  // Creates `vol`'s target; its info (loop_index 99 on failure).
  TargetInfo Attach(const std::string& vol, uint64_t epoch = 1) {
    auto info = tm_->Create(Spec(vol, epoch));
    EXPECT_TRUE(info.ok()) << vol << ": " << info.status().ToString();
    if (!info.ok()) {
      TargetInfo failed;
      failed.loop_index = 99;
      return failed;
    }
    EXPECT_EQ(info->status.state, TargetState::kReady);
    return *info;
  }

  std::string root_;
  std::unique_ptr<backend::StorageBackend> backend_;
  std::unique_ptr<replica::ReplicaManager> manager_;
  std::unique_ptr<server::ReplicaServer> server_;
  std::unique_ptr<TargetManager> tm_;
  std::atomic<int> local_channels_{0};
};

TEST_P(TargetLoopsTest, TwoVolumesLandOnTwoLoopsAndBothServeIoAtOnce) {
  StartManager(2);
  ASSERT_EQ(tm_->loop_count(), 2u);
  EXPECT_EQ(tm_->loop(0) == server_->loop(), GetParam());
  EXPECT_NE(tm_->loop(1), server_->loop());
  TargetInfo a = Attach("vol-a");
  TargetInfo b = Attach("vol-b");
  EXPECT_EQ(a.loop_index, 0u);
  EXPECT_EQ(b.loop_index, 1u);
  // Both exports at once, from two threads: each volume's loop serves its own.
  auto io_a = std::async(std::launch::async, [&] { return WriteAndReadBack(a, 0, 1 << 20, 1); });
  auto io_b = std::async(std::launch::async, [&] { return WriteAndReadBack(b, 0, 1 << 20, 2); });
  EXPECT_EQ(io_a.get(), "");
  EXPECT_EQ(io_b.get(), "");
  std::vector<TargetInfo> all = tm_->List();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].volume_id, "vol-a");
  EXPECT_EQ(all[0].loop_index, 0u);
  EXPECT_EQ(all[0].status.bytes_written, 1u << 20);
  EXPECT_EQ(all[1].volume_id, "vol-b");
  EXPECT_EQ(all[1].loop_index, 1u);
  EXPECT_EQ(all[1].status.bytes_read, 1u << 20);
  // A third volume goes to the lowest of the equally loaded loops.
  EXPECT_EQ(Attach("vol-c").loop_index, 0u);
}

TEST_P(TargetLoopsTest, AnIdempotentCreateAndEveryCallReachTheTargetOnItsLoop) {
  StartManager(2);
  ASSERT_EQ(Attach("vol-a").loop_index, 0u);
  ASSERT_EQ(Attach("vol-b").loop_index, 1u);
  ASSERT_TRUE(tm_->Destroy("vol-a").ok());
  // Loop 0 is now the least loaded, but vol-b's target stays where it is.
  auto again = tm_->Create(Spec("vol-b"));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->loop_index, 1u);
  EXPECT_EQ(tm_->Create(Spec("vol-b", 2)).status().code(), StatusCode::kAlreadyExists);
  ASSERT_TRUE(tm_->SetRebuildRate("vol-b", 64ull << 20).ok());
  const std::string replica = "127.0.0.1:" + std::to_string(server_->port());
  EXPECT_EQ(tm_->RemoveReplica("vol-b", replica).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(tm_->RebuildReplica("vol-b", "127.0.0.1:9").code(), StatusCode::kNotFound);
  auto b = tm_->Get("vol-b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->loop_index, 1u);
  EXPECT_EQ(b->status.rebuild.rate_limit_bytes_per_sec, 64ull << 20);
  EXPECT_EQ(tm_->Get("vol-a").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(tm_->SetRebuildRate("vol-a", 0).code(), StatusCode::kNotFound);
}

TEST_P(TargetLoopsTest, DestroyFreesTheLoopAndARecreatedVolumeServes) {
  StartManager(2);
  TargetInfo a = Attach("vol-a");
  TargetInfo b = Attach("vol-b");
  ASSERT_EQ(b.loop_index, 1u);
  ASSERT_EQ(WriteAndReadBack(b, 4096, 64 << 10, 3), "");
  ASSERT_TRUE(tm_->Destroy("vol-b").ok());
  EXPECT_FALSE(std::filesystem::exists(b.nbd_socket));
  EXPECT_TRUE(tm_->Destroy("vol-b").ok());  // idempotent
  // Loop 1 is empty again: the next volume goes there, and so does vol-b at a
  // newer epoch once vol-c leaves.
  EXPECT_EQ(Attach("vol-c").loop_index, 1u);
  ASSERT_TRUE(tm_->Destroy("vol-c").ok());
  TargetInfo b2 = Attach("vol-b", 2);
  EXPECT_EQ(b2.loop_index, 1u);
  EXPECT_EQ(b2.epoch, 2u);
  EXPECT_EQ(WriteAndReadBack(b2, 0, 64 << 10, 4), "");
  EXPECT_EQ(WriteAndReadBack(a, 0, 64 << 10, 5), "");
}

TEST_P(TargetLoopsTest, ShutdownDestroysTheTargetsOfEveryLoop) {
  StartManager(3);
  std::vector<TargetInfo> infos;
  for (const std::string& vol : kVolumes) infos.push_back(Attach(vol));
  for (size_t i = 0; i < infos.size(); ++i) EXPECT_EQ(infos[i].loop_index, i);
  tm_->Shutdown();
  EXPECT_TRUE(tm_->List().empty());
  for (const TargetInfo& i : infos) EXPECT_FALSE(std::filesystem::exists(i.nbd_socket));
  // The replicas were left cleanly: a new manager attaches them again.
  tm_.reset();
  StartManager(3);
  EXPECT_EQ(Attach("vol-c", 2).loop_index, 0u);
}

// The channel factory is called on the target's loop with that loop; the
// engine's (MaybeLocalChannel) makes a local channel only on the server's
// loop, so a target on another loop reaches the same engine's replica over
// TCP (a session on the server), and both serve.
TEST_P(TargetLoopsTest, TheLocalReplicaIsInProcessOnlyOnTheServersLoop) {
  StartManager(2, /*local=*/true);
  const uint64_t sessions_before = server_->GetStats().sessions_accepted;
  TargetInfo a = Attach("vol-a");
  ASSERT_EQ(a.loop_index, 0u);
  EXPECT_EQ(local_channels_.load(), GetParam() ? 1 : 0);
  EXPECT_EQ(server_->GetStats().sessions_accepted - sessions_before, GetParam() ? 0u : 1u);
  TargetInfo b = Attach("vol-b");
  ASSERT_EQ(b.loop_index, 1u);
  EXPECT_EQ(local_channels_.load(), GetParam() ? 1 : 0) << "a local channel off the server's loop";
  EXPECT_EQ(server_->GetStats().sessions_accepted - sessions_before, GetParam() ? 1u : 2u);
  EXPECT_EQ(WriteAndReadBack(a, 0, 256 << 10, 6), "");
  EXPECT_EQ(WriteAndReadBack(b, 0, 256 << 10, 7), "");
}

TEST(TargetLoopsCountTest, TheLoopCountIsClampedToOneToTheMaximum) {
  const std::string dir = "/var/tmp/tandem-tl-count-unused";
  EXPECT_EQ(TargetManager(dir, nullptr, 0).loop_count(), 1u);
  EXPECT_EQ(TargetManager(dir, nullptr, 1000).loop_count(), TargetLoops::kMaxLoops);
  TargetLoops loops(nullptr, 3);
  EXPECT_EQ(loops.Acquire(), 0u);
  EXPECT_EQ(loops.Acquire(), 1u);
  EXPECT_EQ(loops.Acquire(), 2u);
  loops.Release(1);
  EXPECT_EQ(loops.Acquire(), 1u);
  EXPECT_EQ(loops.Acquire(), 0u);
  EXPECT_EQ(loops.Loads(), (std::vector<size_t>{2, 1, 1}));
}

INSTANTIATE_TEST_SUITE_P(Loop0, TargetLoopsTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "ServerLoop" : "OwnLoop";
                         });

}  // namespace
}  // namespace tandem::attach
