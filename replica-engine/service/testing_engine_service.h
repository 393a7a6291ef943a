#pragma once
// The service tests' engine: a gRPC server on 127.0.0.1 (port 0) serving
// EngineService over a real ReplicaManager, ReplicaServer and TargetManager
// in a temp dir, and an EngineClient to it (EngineServiceTest), plus request
// builders and helpers shared by the service test files.

#include <stdlib.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/event_loop.h"
#include "common/grpc/grpc_server.h"
#include "replica-engine/api/engine_client.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/client/replica_client.h"
#include "replica-engine/service/engine_service.h"

namespace tandem::service::test_support {

namespace pb = ::tandem::engine::v1;
using api::EngineClient;
using rpc::GrpcServer;
using rpc::UnixSocketPath;

constexpr uint64_t kSize = 4ull << 20;
constexpr EngineClient::Timeout kTimeout{10000};

inline bool Exists(const std::string& path) {
  struct stat sb;
  return ::stat(path.c_str(), &sb) == 0;
}

inline pb::CreateReplicaRequest ReplicaRequest(const std::string& volume_id,
                                               uint64_t size = kSize) {
  pb::CreateReplicaRequest req;
  req.set_volume_id(volume_id);
  req.set_replica_id(volume_id + "-r1");
  req.set_size_bytes(size);
  return req;
}

inline pb::CreateTargetRequest TargetRequest(int replicas) {
  pb::CreateTargetRequest req;
  req.set_volume_id("vol-t");
  req.set_epoch(1);
  for (int i = 0; i < replicas; ++i) {
    pb::ReplicaEndpoint* e = req.add_replicas();
    e->set_host("127.0.0.1");
    e->set_port(9501 + i);
  }
  return req;
}

// Records a ReplicaClient's connection events.
struct ClientListener : client::ReplicaClient::Listener {
  bool connected = false;
  bool disconnected = false;
  void OnConnected(const protocol::ReplicaInfo&) override { connected = true; }
  void OnDisconnected(const Status&) override { disconnected = true; }
};

// Runs `loop` until `pred` holds; false after 10 s.
inline bool RunUntil(EventLoop* loop, const std::function<bool()>& pred) {
  const uint64_t deadline = MonotonicNanos() + 10'000'000'000ull;
  while (!pred()) {
    if (MonotonicNanos() > deadline) return false;
    loop->RunOnce(10);
  }
  return true;
}

// Expects `st` to be INVALID_ARGUMENT with `field` in its message.
inline void ExpectInvalid(const Status& st, const std::string& field) {
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find(field), std::string::npos)
      << "message does not name " << field << ": " << st.ToString();
}

class EngineServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { StartEngine(/*mgmt_token=*/""); }

  void StartEngine(const std::string& mgmt_token) {
    char tmpl[] = "/var/tmp/tandem-api-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
    auto backend = backend::BackendFactory::Create("auto");
    ASSERT_TRUE(backend.ok()) << backend.status().ToString();
    backend_ = std::move(*backend);
    replicas_ = std::make_unique<replica::ReplicaManager>(backend_.get(), tmp_ + "/data");
    ASSERT_TRUE(replicas_->LoadAll().ok());
    server::ServerOptions opts;
    opts.buffer_pool_bytes = 16 << 20;  // a 1 MiB buffer in every size class
    replica_server_ =
        std::make_unique<server::ReplicaServer>(replicas_.get(), backend_.get(), opts);
    ASSERT_TRUE(replica_server_->Start().ok());
    targets_ = std::make_unique<attach::TargetManager>(
        tmp_ + "/nbd", targets_on_server_loop_ ? replica_server_->loop() : nullptr,
        target_threads_);
    ASSERT_TRUE(targets_->Start().ok());
    EngineServiceOptions so;
    so.node_id = "node-a";
    so.data_address = "127.0.0.1:" + std::to_string(replica_server_->port());
    so.backend = backend_->Name();
    so.mgmt_token = mgmt_token;
    so.data_dir = tmp_ + "/data";
    so.allowed_devices = allowed_devices_;
    so.allow_remote_nbd = allow_remote_nbd_;
    service_ =
        std::make_unique<EngineService>(replicas_.get(), replica_server_.get(), targets_.get(), so);
    auto grpc = GrpcServer::Start("127.0.0.1:0", service_.get());
    ASSERT_TRUE(grpc.ok()) << grpc.status().ToString();
    grpc_ = std::move(*grpc);
    ASSERT_NE(grpc_->port(), 0);
    address_ = "127.0.0.1:" + std::to_string(grpc_->port());
    client_ = std::make_unique<EngineClient>(address_, mgmt_token);
  }

  // Restarts the engine on a new temp dir with these secure-default options.
  void RestartEngine(std::vector<std::string> allowed_devices, bool allow_remote_nbd) {
    TearDown();
    tmp_.clear();
    allowed_devices_ = std::move(allowed_devices);
    allow_remote_nbd_ = allow_remote_nbd;
    StartEngine("");
  }

  void TearDown() override {
    if (grpc_) grpc_->Shutdown(std::chrono::milliseconds(1000));
    if (targets_) targets_->Shutdown();
    if (replica_server_) replica_server_->Stop();
    if (replicas_) (void)replicas_->CloseAll();
    client_.reset();
    grpc_.reset();
    service_.reset();
    targets_.reset();
    replica_server_.reset();
    replicas_.reset();
    backend_.reset();
    if (!tmp_.empty()) std::filesystem::remove_all(tmp_);
  }

  std::vector<std::string> allowed_devices_;
  bool allow_remote_nbd_ = false;
  // tandem-engine --target-loop=server: the targets run on the replica
  // server's loop (EngineServiceLoopTest runs its tests both ways).
  bool targets_on_server_loop_ = false;
  // tandem-engine --target-threads: the loops of the targets.
  size_t target_threads_ = 1;
  std::string tmp_;
  std::unique_ptr<backend::StorageBackend> backend_;
  std::unique_ptr<replica::ReplicaManager> replicas_;
  std::unique_ptr<server::ReplicaServer> replica_server_;
  std::unique_ptr<attach::TargetManager> targets_;
  std::unique_ptr<EngineService> service_;
  std::unique_ptr<GrpcServer> grpc_;
  std::string address_;
  std::unique_ptr<EngineClient> client_;
};

// The tests that run targets, once with the targets on a loop thread of their
// own and once on the replica server's loop (--target-loop=server).
class EngineServiceLoopTest : public EngineServiceTest, public ::testing::WithParamInterface<bool> {
 protected:
  void SetUp() override {
    targets_on_server_loop_ = GetParam();
    StartEngine(/*mgmt_token=*/"");
  }
};
inline std::string LoopName(const ::testing::TestParamInfo<bool>& p) {
  return p.param ? "ServerLoop" : "OwnLoop";
}

}  // namespace tandem::service::test_support
