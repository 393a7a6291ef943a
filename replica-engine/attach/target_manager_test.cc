// TargetManager: create/destroy are idempotent, a conflicting spec is
// ALREADY_EXISTS, unreachable replicas are UNAVAILABLE with nothing left
// behind, the NBD export answers a real NBD client (nbdinfo), a FUSE file
// export carries writes to the replicas, and the live replica calls are
// NOT_FOUND for an unknown volume, retry-safe, and keep Create idempotent for
// the live replica list; an export's blocking set-up (a slow FUSE mount)
// does not stall another volume's I/O on the loop, and a bad NBD TCP address
// leaves nothing behind. Every test runs twice: the manager on its own loop
// thread, and on the replica server's loop (tandem-engine --target-loop=server;
// the target and the replica it serves then share one thread).

#include "replica-engine/attach/target_manager.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <future>
#include <thread>

#include "gtest/gtest.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/frontend/fuse_export.h"
#include "replica-engine/replica/replica_manager.h"
#include "replica-engine/server/replica_server.h"

namespace tandem::attach {
namespace {

using target::ReplicaEndpoint;
using target::TargetState;

constexpr uint64_t kSize = 8ull << 20;

// The parameter: the targets run on the replica server's loop.
class TargetManagerTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    char tmpl[] = "/var/tmp/tandem-tm-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    auto b = backend::BackendFactory::Create("auto");
    ASSERT_TRUE(b.ok());
    backend_ = std::move(*b);
    manager_ = std::make_unique<replica::ReplicaManager>(backend_.get(), root_ + "/replicas");
    ASSERT_TRUE(manager_->LoadAll().ok());
    replica::ReplicaConfig cfg;
    cfg.volume_id = "vol-m";
    cfg.replica_id = "r0";
    cfg.size = kSize;
    ASSERT_TRUE(manager_->Create(cfg).ok());
    server_ = std::make_unique<server::ReplicaServer>(manager_.get(), backend_.get(),
                                                      server::ServerOptions{});
    ASSERT_TRUE(server_->Start().ok());
    tm_ = std::make_unique<TargetManager>(root_ + "/nbd", GetParam() ? server_->loop() : nullptr);
    ASSERT_TRUE(tm_->Start().ok());
  }
  void TearDown() override {
    tm_.reset();
    if (server_) server_->Stop();
    if (server2_) server2_->Stop();
    if (manager_) (void)manager_->CloseAll();
    if (manager2_) (void)manager2_->CloseAll();
    std::filesystem::remove_all(root_);
  }
  // A second node holding a fresh replica of vol-m; returns its port. It has
  // its own backend, as every node does: a backend belongs to one thread
  // (storage_backend.h), and each ReplicaServer runs its own loop thread.
  uint16_t StartSecondNode() {
    auto b = backend::BackendFactory::Create("auto");
    EXPECT_TRUE(b.ok()) << b.status().ToString();
    if (!b.ok()) return 0;
    backend2_ = std::move(*b);
    manager2_ = std::make_unique<replica::ReplicaManager>(backend2_.get(), root_ + "/replicas2");
    EXPECT_TRUE(manager2_->LoadAll().ok());
    replica::ReplicaConfig cfg;
    cfg.volume_id = "vol-m";
    cfg.replica_id = "r1";
    cfg.size = kSize;
    EXPECT_TRUE(manager2_->Create(cfg).ok());
    server2_ = std::make_unique<server::ReplicaServer>(manager2_.get(), backend2_.get(),
                                                       server::ServerOptions{});
    EXPECT_TRUE(server2_->Start().ok());
    return server2_->port();
  }
  // Polls Get until `pred` holds; false after 20 s.
  bool WaitFor(const std::function<bool(const TargetInfo&)>& pred) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      auto info = tm_->Get("vol-m");
      if (info.ok() && pred(*info)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  TargetSpec Spec(uint64_t epoch) {
    TargetSpec s;
    s.options.volume_id = "vol-m";
    s.options.epoch = epoch;
    s.options.replicas = {{"127.0.0.1", server_->port(), true}};
    s.ready_timeout_ms = 5000;
    return s;
  }

  std::string root_;
  std::unique_ptr<backend::StorageBackend> backend_;
  std::unique_ptr<replica::ReplicaManager> manager_;
  std::unique_ptr<server::ReplicaServer> server_;
  std::unique_ptr<TargetManager> tm_;
  std::unique_ptr<backend::StorageBackend> backend2_;  // outlives the two below
  std::unique_ptr<replica::ReplicaManager> manager2_;
  std::unique_ptr<server::ReplicaServer> server2_;
};

TEST_P(TargetManagerTest, CreateIsIdempotentAndConflictingSpecIsAlreadyExists) {
  auto a = tm_->Create(Spec(1));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->status.state, TargetState::kReady);
  EXPECT_EQ(a->status.size, kSize);
  EXPECT_TRUE(std::filesystem::exists(a->nbd_socket));
  auto again = tm_->Create(Spec(1));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->nbd_socket, a->nbd_socket);
  auto other = tm_->Create(Spec(2));
  EXPECT_EQ(other.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(tm_->List().size(), 1u);
}

TEST_P(TargetManagerTest, ExportAnswersNbdinfoWithTheVolumeSize) {
  if (access("/usr/bin/nbdinfo", X_OK) != 0) GTEST_SKIP() << "nbdinfo not installed";
  auto a = tm_->Create(Spec(1));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  std::string cmd = "nbdinfo --size 'nbd+unix:///vol-m?socket=" + a->nbd_socket + "' 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char line[256] = {};
  ASSERT_NE(fgets(line, sizeof(line), p), nullptr);
  EXPECT_EQ(pclose(p), 0) << line;
  EXPECT_EQ(std::stoull(line), kSize);
}

TEST_P(TargetManagerTest, DestroyIsIdempotentAndRemovesTheExport) {
  auto a = tm_->Create(Spec(1));
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(tm_->Destroy("vol-m").ok());
  EXPECT_FALSE(std::filesystem::exists(a->nbd_socket));
  EXPECT_EQ(tm_->Get("vol-m").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(tm_->Destroy("vol-m").ok());
  // Attach again with a newer epoch after the detach.
  auto b = tm_->Create(Spec(2));
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->epoch, 2u);
}

// kubelet's NodeStage -> NodeUnstage -> NodeStage under one ControllerPublish:
// the same engine attaches the same epoch again. With the engine's identity
// the new target is the epoch's owner again; a target of another engine (or
// one with a random id) at that epoch is still refused.
TEST_P(TargetManagerTest, WithAnIdentityTheSameEngineAttachesTheSameEpochAgain) {
  tm_->set_identity(0x1234);
  auto a = tm_->Create(Spec(1));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(tm_->Destroy("vol-m").ok());
  auto again = tm_->Create(Spec(1));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->status.state, TargetState::kReady);
  ASSERT_TRUE(tm_->Destroy("vol-m").ok());

  TargetManager other(root_ + "/nbd-other");
  ASSERT_TRUE(other.Start().ok());
  other.set_identity(0x5678);
  TargetSpec s = Spec(1);
  s.ready_timeout_ms = 2000;
  auto stranger = other.Create(s);
  EXPECT_FALSE(stranger.ok());
  EXPECT_EQ(stranger.status().code(), StatusCode::kFailedPrecondition)
      << stranger.status().ToString();
  EXPECT_EQ(TargetIdFor(0x1234, "vol-m", 1), TargetIdFor(0x1234, "vol-m", 1));
  EXPECT_NE(TargetIdFor(0x1234, "vol-m", 1), TargetIdFor(0x5678, "vol-m", 1));
  EXPECT_NE(TargetIdFor(0x1234, "vol-m", 1), TargetIdFor(0x1234, "vol-m", 2));
  EXPECT_NE(TargetIdFor(0x1234, "vol-m", 1), TargetIdFor(0x1234, "vol-n", 1));
}

TEST_P(TargetManagerTest, UnreachableReplicasAreUnavailableAndLeaveNothing) {
  // A port bound but not listening refuses connections (the server itself
  // keeps running: in one of the modes it runs the targets).
  int closed = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(closed, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(closed, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  ASSERT_EQ(::getsockname(closed, reinterpret_cast<sockaddr*>(&a), &len), 0);
  TargetSpec s = Spec(1);
  s.options.replicas = {{"127.0.0.1", ntohs(a.sin_port), true}};
  s.options.connect_timeout_ms = 500;
  auto created = tm_->Create(s);
  EXPECT_EQ(created.status().code(), StatusCode::kUnavailable) << created.status().ToString();
  EXPECT_EQ(tm_->Get("vol-m").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(root_ + "/nbd/vol-m.sock"));
  ::close(closed);
}

TEST_P(TargetManagerTest, LiveReplicaCallsOnAnUnknownVolumeAreNotFound) {
  ASSERT_TRUE(tm_->Create(Spec(1)).ok());
  ReplicaEndpoint e{"127.0.0.1", 9, false};
  EXPECT_EQ(tm_->AddReplica("nope", e).code(), StatusCode::kNotFound);
  EXPECT_EQ(tm_->RemoveReplica("nope", "127.0.0.1:9").code(), StatusCode::kNotFound);
  EXPECT_EQ(tm_->RebuildReplica("nope", "127.0.0.1:9").code(), StatusCode::kNotFound);
  EXPECT_EQ(tm_->SetRebuildRate("nope", 1 << 20).code(), StatusCode::kNotFound);
  // An unknown replica of a known volume: rebuild cannot, remove has nothing to do.
  EXPECT_EQ(tm_->RebuildReplica("vol-m", "127.0.0.1:9").code(), StatusCode::kNotFound);
  EXPECT_TRUE(tm_->RemoveReplica("vol-m", "127.0.0.1:9").ok());
  // A manager that never started knows no volume either.
  TargetManager idle(root_ + "/nbd-idle");
  EXPECT_EQ(idle.AddReplica("vol-m", e).code(), StatusCode::kNotFound);
  EXPECT_EQ(idle.SetRebuildRate("vol-m", 0).code(), StatusCode::kNotFound);
}

TEST_P(TargetManagerTest, RemovingTheLastHealthyReplicaIsFailedPrecondition) {
  ASSERT_TRUE(tm_->Create(Spec(1)).ok());
  const std::string only = "127.0.0.1:" + std::to_string(server_->port());
  EXPECT_EQ(tm_->RemoveReplica("vol-m", only).code(), StatusCode::kFailedPrecondition);
  auto info = tm_->Get("vol-m");
  ASSERT_TRUE(info.ok());
  ASSERT_EQ(info->status.replicas.size(), 1u);
  // The spec did not change: the original request is still idempotent.
  EXPECT_TRUE(tm_->Create(Spec(1)).ok());
}

TEST_P(TargetManagerTest, SetRebuildRateReachesTheTargetStatus) {
  ASSERT_TRUE(tm_->Create(Spec(1)).ok());
  ASSERT_TRUE(tm_->SetRebuildRate("vol-m", 64ull << 20).ok());
  auto info = tm_->Get("vol-m");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->status.rebuild.rate_limit_bytes_per_sec, 64ull << 20);
  // A changed rate is not another spec.
  EXPECT_TRUE(tm_->Create(Spec(1)).ok());
}

TEST_P(TargetManagerTest, AddAndRemoveReplicaKeepCreateIdempotentForTheLiveList) {
  const uint16_t port2 = StartSecondNode();
  ASSERT_TRUE(tm_->Create(Spec(1)).ok());
  const ReplicaEndpoint second{"127.0.0.1", port2, false};
  ASSERT_TRUE(tm_->AddReplica("vol-m", second).ok());
  // The fresh replica is rebuilt and joins.
  ASSERT_TRUE(WaitFor([](const TargetInfo& i) {
    return i.status.replicas.size() == 2 && i.status.state == TargetState::kReady &&
           i.status.rebuilds_completed == 1;
  }));
  // A retried add is OK; the same host:port with another `local` is not.
  EXPECT_TRUE(tm_->AddReplica("vol-m", second).ok());
  EXPECT_EQ(tm_->AddReplica("vol-m", {"127.0.0.1", port2, true}).code(),
            StatusCode::kAlreadyExists);

  // CreateTarget with the live list, in any order: the same target.
  TargetSpec live = Spec(1);
  live.options.replicas.insert(live.options.replicas.begin(), second);
  auto again = tm_->Create(live);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->status.replicas.size(), 2u);
  // The original list is no longer this target's.
  EXPECT_EQ(tm_->Create(Spec(1)).status().code(), StatusCode::kAlreadyExists);

  const std::string address2 = "127.0.0.1:" + std::to_string(port2);
  ASSERT_TRUE(tm_->RemoveReplica("vol-m", address2).ok());
  EXPECT_TRUE(tm_->RemoveReplica("vol-m", address2).ok());  // retried
  auto info = tm_->Get("vol-m");
  ASSERT_TRUE(info.ok());
  ASSERT_EQ(info->status.replicas.size(), 1u);
  EXPECT_EQ(info->status.replicas[0].address, "127.0.0.1:" + std::to_string(server_->port()));
  EXPECT_TRUE(tm_->Create(Spec(1)).ok());
  EXPECT_EQ(tm_->Create(live).status().code(), StatusCode::kAlreadyExists);
}

// One slow attach (its replica accepts TCP but never answers the HELLO) must
// not hold up another volume's attach; a second create of the slow volume
// while the first runs is ABORTED (the CSI spec's answer to concurrent calls
// on one volume).
TEST_P(TargetManagerTest, ASlowAttachDoesNotBlockOtherVolumesAndConcurrentCallsAreAborted) {
  int silent = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(silent, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(silent, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(silent, 8), 0);  // the kernel completes connects; nobody answers
  socklen_t len = sizeof(a);
  ASSERT_EQ(::getsockname(silent, reinterpret_cast<sockaddr*>(&a), &len), 0);
  TargetSpec slow;
  slow.options.volume_id = "vol-slow";
  slow.options.epoch = 1;
  slow.options.replicas = {{"127.0.0.1", ntohs(a.sin_port), false}};
  slow.options.connect_timeout_ms = 2500;
  slow.options.request_timeout_ms = 2500;
  slow.ready_timeout_ms = 5000;
  auto slow_create = std::async(std::launch::async, [&] { return tm_->Create(slow); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // it is waiting now
  auto again = tm_->Create(slow);
  EXPECT_EQ(again.status().code(), StatusCode::kAborted) << again.status().ToString();
  auto t0 = std::chrono::steady_clock::now();
  auto fast = tm_->Create(Spec(1));
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(fast.ok()) << fast.status().ToString();
  EXPECT_LT(took, std::chrono::milliseconds(1500)) << "the other volume's attach was held up";
  EXPECT_EQ(slow_create.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  auto s = slow_create.get();
  EXPECT_EQ(s.status().code(), StatusCode::kUnavailable) << s.status().ToString();
  EXPECT_TRUE(tm_->Destroy("vol-slow").ok());
  ::close(silent);
}

// The attach layer owns "a target + its export" through the Export seam: the
// same target exported as a file on a FUSE mount (what losetup is given).
TEST_P(TargetManagerTest, FuseFileExportCarriesWritesToTheReplica) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (FUSE mount)";
  if (access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
  TargetSpec s = Spec(1);
  s.export_kind = frontend::ExportKind::kFuseFile;
  auto a = tm_->Create(s);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->export_description.kind, frontend::ExportKind::kFuseFile);
  const std::string file = root_ + "/nbd/vol-m.fuse/volume";
  EXPECT_EQ(a->export_description.path, file);
  EXPECT_TRUE(a->nbd_socket.empty());
  EXPECT_TRUE(tm_->Create(s).ok());                                             // idempotent
  EXPECT_EQ(tm_->Create(Spec(1)).status().code(), StatusCode::kAlreadyExists);  // NBD: another spec

  const std::string block(4096, 'x');
  int fd = ::open(file.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << file;
  EXPECT_EQ(::pwrite(fd, block.data(), block.size(), 8192), ssize_t(block.size()));
  EXPECT_EQ(::fsync(fd), 0);
  ::close(fd);
  ASSERT_TRUE(tm_->Destroy("vol-m").ok());
  EXPECT_FALSE(std::filesystem::exists(root_ + "/nbd/vol-m.fuse"));

  // On the replica's data file.
  std::string got(block.size(), '\0');
  fd = ::open((root_ + "/replicas/vol-m/data").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::pread(fd, got.data(), got.size(), 8192), ssize_t(got.size()));
  ::close(fd);
  EXPECT_EQ(got, block);
}

// A FUSE mount made slow on purpose (the test seam sleeps in the mount step)
// while another volume's target serves I/O on the same loop. The mount runs
// on the creating thread, not on the loop (which may be the replica
// server's, shared by every volume's replica I/O): the I/O must progress
// while the mount sleeps. Both volumes land on loop 0.
std::atomic<uint64_t> g_io_done{0};            // I/Os completed on the busy volume
std::atomic<int64_t> g_progress_in_mount{-1};  // of those, completed while the mount slept
std::atomic<bool> g_in_mount{false};

void SlowMount(const std::string& mount_dir) {
  if (mount_dir.find("vol-slow") == std::string::npos) return;
  g_in_mount = true;
  // Completions already delivered to the I/O thread settle first; after that
  // nothing completes unless the loop runs.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const uint64_t before = g_io_done.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  g_progress_in_mount.store(static_cast<int64_t>(g_io_done.load() - before));
}

TEST_P(TargetManagerTest, ASlowFuseMountDoesNotStallAnotherVolumesIoOnTheLoop) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (FUSE mount)";
  if (access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
  replica::ReplicaConfig cfg;
  cfg.volume_id = "vol-slow";
  cfg.replica_id = "r0";
  cfg.size = kSize;
  ASSERT_TRUE(manager_->Create(cfg).ok());
  TargetSpec busy = Spec(1);
  busy.export_kind = frontend::ExportKind::kFuseFile;
  auto b = tm_->Create(busy);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  int fd = ::open(b->export_description.path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << b->export_description.path;

  // Writes a block, reads it back; counts both, and every byte compared.
  g_io_done = 0;
  g_progress_in_mount = -1;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bytes_written{0}, bytes_read{0}, mismatches{0}, failures{0};
  std::thread io([&] {
    std::string out(4096, '\0'), in(4096, '\0');
    for (uint64_t i = 0; !stop.load(); ++i) {
      const off_t off = static_cast<off_t>((i % 256) * out.size());
      std::fill(out.begin(), out.end(), static_cast<char>('a' + i % 26));
      if (::pwrite(fd, out.data(), out.size(), off) != ssize_t(out.size())) {
        ++failures;
        return;
      }
      bytes_written += out.size();
      ++g_io_done;
      if (::pread(fd, in.data(), in.size(), off) != ssize_t(in.size())) {
        ++failures;
        return;
      }
      bytes_read += in.size();
      ++g_io_done;
      if (in != out) ++mismatches;
    }
  });

  frontend::SetFuseMountHookForTesting(&SlowMount);
  g_in_mount = false;
  TargetSpec slow = Spec(1);
  slow.options.volume_id = "vol-slow";
  slow.export_kind = frontend::ExportKind::kFuseFile;
  // While the mount sleeps, the volume is still held: another Create or a
  // Destroy of it is ABORTED.
  auto concurrent = std::async(std::launch::async, [&] {
    for (int i = 0; i < 2000 && !g_in_mount.load(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return std::make_pair(tm_->Create(slow).status().code(), tm_->Destroy("vol-slow").code());
  });
  auto s = tm_->Create(slow);
  frontend::SetFuseMountHookForTesting(nullptr);
  const auto [create_code, destroy_code] = concurrent.get();
  EXPECT_EQ(create_code, StatusCode::kAborted);
  EXPECT_EQ(destroy_code, StatusCode::kAborted);
  stop = true;
  io.join();
  ::close(fd);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->loop_index, b->loop_index);  // the same loop
  EXPECT_EQ(failures.load(), 0u);
  EXPECT_EQ(mismatches.load(), 0u);
  EXPECT_GT(bytes_written.load(), 0u);
  EXPECT_EQ(bytes_read.load(), bytes_written.load());
  ASSERT_GE(g_progress_in_mount.load(), 0) << "the mount hook did not run";
  EXPECT_GT(g_progress_in_mount.load(), 0)
      << "no I/O of the other volume completed while the FUSE mount was in progress";
  EXPECT_TRUE(tm_->Destroy("vol-slow").ok());
  EXPECT_FALSE(std::filesystem::exists(root_ + "/nbd/vol-slow.fuse"));
}

// A bad NBD TCP address is refused before anything serves (it is resolved
// off the loop) and leaves nothing: no target, no unix socket; the same
// volume then attaches with a good one.
TEST_P(TargetManagerTest, ABadNbdTcpAddressIsRefusedAndLeavesNothing) {
  tm_->set_identity(0x1234);  // the engine's: it may attach epoch 1 again after a refusal
  TargetSpec s = Spec(1);
  s.nbd_tcp_address = "no-such-host.invalid:0";
  auto bad = tm_->Create(s);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument) << bad.status().ToString();
  EXPECT_NE(bad.status().message().find("no-such-host.invalid"), std::string::npos)
      << bad.status().ToString();
  EXPECT_EQ(tm_->Get("vol-m").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(root_ + "/nbd/vol-m.sock"));

  s.nbd_tcp_address = "192.0.2.1:0";  // TEST-NET-1: not an address of this machine
  auto unbound = tm_->Create(s);
  EXPECT_EQ(unbound.status().code(), StatusCode::kUnavailable) << unbound.status().ToString();
  EXPECT_EQ(tm_->Get("vol-m").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(root_ + "/nbd/vol-m.sock"));
  EXPECT_TRUE(tm_->List().empty());

  s.nbd_tcp_address = "127.0.0.1:0";
  auto good = tm_->Create(s);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_NE(good->nbd_tcp_port, 0);
  EXPECT_TRUE(std::filesystem::exists(good->nbd_socket));
}

// The engine stops its targets before its replica server. When the order is
// broken (the server's loop stopped under a live target), shutting the
// manager down must not wait forever for a loop that no longer runs.
TEST_P(TargetManagerTest, ShutdownAfterTheServerLoopStoppedDoesNotHang) {
  if (!GetParam()) GTEST_SKIP() << "only the server's loop can stop under the targets";
  auto a = tm_->Create(Spec(1));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  server_->Stop();  // its loop ends once the sessions (our target's) are closed
  ASSERT_TRUE(server_->loop()->stopped());
  auto done = std::async(std::launch::async, [&] { tm_->Shutdown(); });
  ASSERT_EQ(done.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_FALSE(std::filesystem::exists(a->nbd_socket));
}

INSTANTIATE_TEST_SUITE_P(Loops, TargetManagerTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "ServerLoop" : "OwnLoop";
                         });

}  // namespace
}  // namespace tandem::attach
