// TargetManager: create/destroy are idempotent, a conflicting spec is
// ALREADY_EXISTS, unreachable replicas are UNAVAILABLE with nothing left
// behind, and the NBD export answers a real NBD client (nbdinfo).

#include "replica-engine/target/target_manager.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "gtest/gtest.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/replica/replica_manager.h"
#include "replica-engine/server/replica_server.h"

namespace tandem::target {
namespace {

constexpr uint64_t kSize = 8ull << 20;

class TargetManagerTest : public ::testing::Test {
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
    tm_ = std::make_unique<TargetManager>(root_ + "/nbd");
    ASSERT_TRUE(tm_->Start().ok());
  }
  void TearDown() override {
    tm_.reset();
    if (server_) server_->Stop();
    if (manager_) (void)manager_->CloseAll();
    std::filesystem::remove_all(root_);
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
};

TEST_F(TargetManagerTest, CreateIsIdempotentAndConflictingSpecIsAlreadyExists) {
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

TEST_F(TargetManagerTest, ExportAnswersNbdinfoWithTheVolumeSize) {
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

TEST_F(TargetManagerTest, DestroyIsIdempotentAndRemovesTheExport) {
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

TEST_F(TargetManagerTest, UnreachableReplicasAreUnavailableAndLeaveNothing) {
  TargetSpec s = Spec(1);
  server_->Stop();
  s.options.connect_timeout_ms = 500;
  auto a = tm_->Create(s);
  EXPECT_EQ(a.status().code(), StatusCode::kUnavailable) << a.status().ToString();
  EXPECT_EQ(tm_->Get("vol-m").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(root_ + "/nbd/vol-m.sock"));
}

}  // namespace
}  // namespace tandem::target
