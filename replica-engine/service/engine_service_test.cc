// The management API end to end in one process: a gRPC server on 127.0.0.1
// (port 0) serving EngineService over a real ReplicaManager, ReplicaServer and
// TargetManager in a temp dir, driven through EngineClient. Checks the exact
// status codes of engine.proto's contract and that validation messages name
// the bad field.

#include "replica-engine/service/engine_service.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/event_loop.h"
#include "common/grpc/grpc_server.h"
#include "replica-engine/api/engine_client.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/client/replica_client.h"
#include "replica-engine/service/testing_engine_service.h"

namespace tandem::service {
namespace {

using namespace ::tandem::service::test_support;  // NOLINT: the shared fixture and helpers
namespace pb = ::tandem::engine::v1;
using api::EngineClient;
using rpc::GrpcServer;
using rpc::UnixSocketPath;

TEST_F(EngineServiceTest, GetEngineInfoReportsNodeAddressBackendAndVersion) {
  Result<pb::EngineInfo> info = client_->GetEngineInfo(kTimeout);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->node_id(), "node-a");
  EXPECT_EQ(info->data_address(), "127.0.0.1:" + std::to_string(replica_server_->port()));
  EXPECT_EQ(info->backend(), backend_->Name());
  EXPECT_EQ(info->version(), kEngineVersion);
  EXPECT_FALSE(info->version().empty());
}

TEST_F(EngineServiceTest, CreateReplicaReturnsItAndCreatesItsFiles) {
  Result<pb::Replica> r = client_->CreateReplica(ReplicaRequest("vol-1"), kTimeout);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->volume_id(), "vol-1");
  EXPECT_EQ(r->replica_id(), "vol-1-r1");
  EXPECT_EQ(r->size_bytes(), kSize);
  EXPECT_EQ(r->block_size(), 4096u);
  EXPECT_EQ(r->generation(), 0u);
  EXPECT_EQ(r->highest_epoch(), 0u);
  EXPECT_EQ(r->data_path(), tmp_ + "/data/vol-1/data");
  EXPECT_TRUE(Exists(tmp_ + "/data/vol-1/meta"));
  EXPECT_TRUE(Exists(r->data_path()));
}

TEST_F(EngineServiceTest, CreateReplicaTwiceWithSameRequestIsIdempotent) {
  Result<pb::Replica> a = client_->CreateReplica(ReplicaRequest("vol-1"), kTimeout);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  Result<pb::Replica> b = client_->CreateReplica(ReplicaRequest("vol-1"), kTimeout);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(a->SerializeAsString(), b->SerializeAsString());
}

TEST_F(EngineServiceTest, CreateReplicaWithDifferentSpecIsAlreadyExists) {
  ASSERT_TRUE(client_->CreateReplica(ReplicaRequest("vol-1"), kTimeout).ok());
  Result<pb::Replica> bigger = client_->CreateReplica(ReplicaRequest("vol-1", 2 * kSize), kTimeout);
  EXPECT_EQ(bigger.status().code(), StatusCode::kAlreadyExists) << bigger.status().ToString();
  pb::CreateReplicaRequest other_id = ReplicaRequest("vol-1");
  other_id.set_replica_id("r2");
  Result<pb::Replica> renamed = client_->CreateReplica(other_id, kTimeout);
  EXPECT_EQ(renamed.status().code(), StatusCode::kAlreadyExists) << renamed.status().ToString();
  // The original is untouched.
  Result<pb::Replica> got = client_->GetReplica("vol-1", kTimeout);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->size_bytes(), kSize);
  EXPECT_EQ(got->replica_id(), "vol-1-r1");
}

TEST_F(EngineServiceTest, CreateReplicaRejectsBadFieldsNamingThem) {
  ExpectInvalid(client_->CreateReplica(ReplicaRequest("bad/volume"), kTimeout).status(),
                "volume_id");
  ExpectInvalid(client_->CreateReplica(ReplicaRequest(""), kTimeout).status(), "volume_id");
  ExpectInvalid(client_->CreateReplica(ReplicaRequest("vol-1", 0), kTimeout).status(),
                "size_bytes");
  ExpectInvalid(client_->CreateReplica(ReplicaRequest("vol-1", kSize + 512), kTimeout).status(),
                "size_bytes");
  pb::CreateReplicaRequest req = ReplicaRequest("vol-1");
  req.set_block_size(1000);
  ExpectInvalid(client_->CreateReplica(req, kTimeout).status(), "block_size");
  req.set_block_size(4096);
  req.set_size_bytes(4096 * 3 + 2048);
  ExpectInvalid(client_->CreateReplica(req, kTimeout).status(), "size_bytes");
  req = ReplicaRequest("vol-1");
  req.set_replica_id("no spaces");
  ExpectInvalid(client_->CreateReplica(req, kTimeout).status(), "replica_id");
  // Nothing was created by any of them.
  EXPECT_EQ(client_->GetReplica("vol-1", kTimeout).status().code(), StatusCode::kNotFound);
}

// Issue 10: 2^62 bytes made Replica::Create allocate and zero-fill a dirty
// map of 2^43 bytes inside the gRPC handler.
TEST_F(EngineServiceTest, CreateReplicaOfAHugeSizeIsOutOfRangeAndTheEngineKeepsServing) {
  Result<pb::Replica> huge =
      client_->CreateReplica(ReplicaRequest("vol-huge", 1ull << 62), kTimeout);
  EXPECT_EQ(huge.status().code(), StatusCode::kOutOfRange) << huge.status().ToString();
  EXPECT_EQ(huge.status().message().rfind("size_bytes", 0), 0u) << huge.status().ToString();
  EXPECT_NE(huge.status().message().find(std::to_string(kMaxReplicaMetadataBytes)),
            std::string::npos)
      << huge.status().ToString();
  EXPECT_EQ(client_->GetReplica("vol-huge", kTimeout).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(Exists(tmp_ + "/data/vol-huge"));
  // Another volume is served as before.
  Result<pb::Replica> r = client_->CreateReplica(ReplicaRequest("vol-1"), kTimeout);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Result<std::vector<pb::Replica>> all = client_->ListReplicas(kTimeout);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].volume_id(), "vol-1");
}

TEST_F(EngineServiceTest, CreateReplicaBeyondTheDataDirsFileSystemIsOutOfRange) {
  struct statvfs vfs;
  ASSERT_EQ(::statvfs((tmp_ + "/data").c_str(), &vfs), 0);
  const uint64_t total = uint64_t(vfs.f_blocks) * vfs.f_frsize;
  const uint64_t size = (total / 4096 + 1) * 4096;
  replica::ReplicaConfig defaults;
  if (size > MaxReplicaSize(defaults)) {
    GTEST_SKIP() << "the file system is larger than the metadata limit allows";
  }
  Result<pb::Replica> r = client_->CreateReplica(ReplicaRequest("vol-big", size), kTimeout);
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange) << r.status().ToString();
  EXPECT_EQ(r.status().message().rfind("size_bytes " + std::to_string(size), 0), 0u)
      << r.status().ToString();
  EXPECT_NE(r.status().message().find("not its free space"), std::string::npos)
      << r.status().ToString();
  EXPECT_FALSE(Exists(tmp_ + "/data/vol-big"));
}

TEST_F(EngineServiceTest, CreateReplicaWithADataPathSmallerThanTheSizeIsOutOfRange) {
  const std::string path = tmp_ + "/data/disk.img";  // under the data dir
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, kSize), 0);
  ::close(fd);
  pb::CreateReplicaRequest req = ReplicaRequest("vol-1", 2 * kSize);
  req.set_data_path(path);
  Result<pb::Replica> r = client_->CreateReplica(req, kTimeout);
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange) << r.status().ToString();
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().ToString();
  req.set_size_bytes(kSize);
  Result<pb::Replica> fits = client_->CreateReplica(req, kTimeout);
  ASSERT_TRUE(fits.ok()) << fits.status().ToString();
  EXPECT_EQ(fits->data_path(), path);
}

// Issue 10, secure defaults: data_path is resolved (symlinks, "..") and must
// be under the data dir or an --allowed-device.
TEST_F(EngineServiceTest, CreateReplicaWithADataPathOutsideTheDataDirIsPermissionDenied) {
  const std::string outside = tmp_ + "/outside.img";
  int fd = ::open(outside.c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, kSize), 0);
  ::close(fd);
  ASSERT_EQ(::symlink(outside.c_str(), (tmp_ + "/data/link.img").c_str()), 0);
  for (const std::string& path :
       {outside, tmp_ + "/data/../outside.img", tmp_ + "/data/link.img"}) {
    pb::CreateReplicaRequest req = ReplicaRequest("vol-1");
    req.set_data_path(path);
    Status st = client_->CreateReplica(req, kTimeout).status();
    EXPECT_EQ(st.code(), StatusCode::kPermissionDenied) << path << ": " << st.ToString();
    EXPECT_NE(st.message().find("data_path"), std::string::npos) << st.ToString();
    EXPECT_EQ(client_->GetReplica("vol-1", kTimeout).status().code(), StatusCode::kNotFound);
  }
  // Another replica's data file is not a data_path either.
  ASSERT_TRUE(client_->CreateReplica(ReplicaRequest("vol-2"), kTimeout).ok());
  pb::CreateReplicaRequest steal = ReplicaRequest("vol-1");
  steal.set_data_path(tmp_ + "/data/vol-2/data");
  EXPECT_EQ(client_->CreateReplica(steal, kTimeout).status().code(), StatusCode::kPermissionDenied);

  // Listed with --allowed-device (through a link), the file is accepted.
  const std::string dir = tmp_;
  tmp_.clear();  // keep the files across the restart
  RestartEngine({dir + "/data/link.img"}, false);
  pb::CreateReplicaRequest req = ReplicaRequest("vol-1");
  req.set_data_path(outside);
  Result<pb::Replica> r = client_->CreateReplica(req, kTimeout);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  std::filesystem::remove_all(dir);
}

// Issue 10, secure defaults: the NBD TCP export binds loopback unless the
// engine allows other addresses.
TEST_F(EngineServiceTest, CreateTargetWithANonLoopbackNbdTcpAddressIsPermissionDenied) {
  pb::CreateTargetRequest req = TargetRequest(1);
  req.set_nbd_tcp_address("0.0.0.0:0");
  Status st = client_->CreateTarget(req, kTimeout).status();
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied) << st.ToString();
  EXPECT_EQ(st.message().rfind("nbd_tcp_address", 0), 0u) << st.ToString();
  EXPECT_NE(st.message().find("--allow-remote-nbd"), std::string::npos) << st.ToString();
  EXPECT_EQ(client_->GetTarget("vol-t", kTimeout).status().code(), StatusCode::kNotFound);
}

// Issue 10, secure defaults: management gRPC on a unix socket, mode 0600
// whatever the umask, in both spellings of the address.
TEST_F(EngineServiceTest, GrpcOnAUnixSocketIsMode0600AndServes) {
  const mode_t old_umask = ::umask(0);  // would make a 0777 socket
  for (const std::string& prefix : {std::string("unix:"), std::string("unix://")}) {
    const std::string path = tmp_ + "/mgmt.sock";
    EXPECT_EQ(UnixSocketPath(prefix + path), path);
    auto server = GrpcServer::Start(prefix + path, service_.get());
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    EXPECT_EQ((*server)->port(), 0);
    struct stat sb;
    ASSERT_EQ(::stat(path.c_str(), &sb), 0);
    EXPECT_TRUE(S_ISSOCK(sb.st_mode));
    EXPECT_EQ(sb.st_mode & 0777, 0600u) << std::oct << (sb.st_mode & 0777);
    EngineClient client("unix:" + path, "");
    Result<pb::EngineInfo> info = client.GetEngineInfo(kTimeout);
    EXPECT_TRUE(info.ok()) << info.status().ToString();
    (*server)->Shutdown(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(::umask(old_umask), 0u);  // restored
  EXPECT_EQ(UnixSocketPath("127.0.0.1:9600"), "");
}

// Issue 10: block_size 512 was accepted, and one 512-byte read then faulted
// every replica (the backends need 4 KiB alignment).
TEST_F(EngineServiceTest, CreateReplicaWith512ByteBlocksIsInvalidArgument) {
  pb::CreateReplicaRequest req = ReplicaRequest("vol-1");
  req.set_block_size(512);
  Result<pb::Replica> r = client_->CreateReplica(req, kTimeout);
  ExpectInvalid(r.status(), "block_size");
  EXPECT_NE(r.status().message().find("4096"), std::string::npos) << r.status().ToString();
  EXPECT_EQ(client_->GetReplica("vol-1", kTimeout).status().code(), StatusCode::kNotFound);
}

TEST_F(EngineServiceTest, GetReplicaOfAbsentVolumeIsNotFound) {
  Result<pb::Replica> r = client_->GetReplica("nope", kTimeout);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  ExpectInvalid(client_->GetReplica("../etc", kTimeout).status(), "volume_id");
}

TEST_F(EngineServiceTest, DeleteReplicaRemovesItAndDeletingAgainIsOk) {
  ASSERT_TRUE(client_->CreateReplica(ReplicaRequest("vol-1"), kTimeout).ok());
  ASSERT_TRUE(client_->DeleteReplica("vol-1", kTimeout).ok());
  EXPECT_EQ(client_->GetReplica("vol-1", kTimeout).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(Exists(tmp_ + "/data/vol-1"));
  Status again = client_->DeleteReplica("vol-1", kTimeout);
  EXPECT_TRUE(again.ok()) << again.ToString();
  Status never = client_->DeleteReplica("never-existed", kTimeout);
  EXPECT_TRUE(never.ok()) << never.ToString();
  ExpectInvalid(client_->DeleteReplica("..", kTimeout), "volume_id");
}

TEST_F(EngineServiceTest, DeleteReplicaClosesTheVolumesDataSessionsFirst) {
  ASSERT_TRUE(client_->CreateReplica(ReplicaRequest("vol-1"), kTimeout).ok());
  EventLoop loop;
  ASSERT_TRUE(loop.init_status().ok());
  client::ClientOptions co;
  co.port = replica_server_->port();
  co.volume_id = "vol-1";
  co.epoch = 1;
  ClientListener listener;
  client::ReplicaClient data_client(&loop, co, &listener);
  ASSERT_TRUE(data_client.Connect().ok());
  ASSERT_TRUE(RunUntil(&loop, [&] { return listener.connected || listener.disconnected; }));
  ASSERT_TRUE(listener.connected);

  ASSERT_TRUE(client_->DeleteReplica("vol-1", kTimeout).ok());
  // The target side sees its connection drop: no write can follow the delete.
  EXPECT_TRUE(RunUntil(&loop, [&] { return listener.disconnected; }));
  EXPECT_EQ(client_->GetReplica("vol-1", kTimeout).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(Exists(tmp_ + "/data/vol-1"));
}

TEST_F(EngineServiceTest, ListReplicasIsSortedByVolumeId) {
  for (const char* v : {"vol-c", "vol-a", "vol-b", "a-first"}) {
    ASSERT_TRUE(client_->CreateReplica(ReplicaRequest(v), kTimeout).ok());
  }
  Result<std::vector<pb::Replica>> all = client_->ListReplicas(kTimeout);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 4u);
  EXPECT_EQ((*all)[0].volume_id(), "a-first");
  EXPECT_EQ((*all)[1].volume_id(), "vol-a");
  EXPECT_EQ((*all)[2].volume_id(), "vol-b");
  EXPECT_EQ((*all)[3].volume_id(), "vol-c");
}

TEST_F(EngineServiceTest, CreateTargetRejectsBadRequestsNamingTheField) {
  ExpectInvalid(client_->CreateTarget(TargetRequest(0), kTimeout).status(), "replicas");
  ExpectInvalid(client_->CreateTarget(TargetRequest(6), kTimeout).status(), "replicas");

  pb::CreateTargetRequest dup = TargetRequest(3);
  dup.mutable_replicas(2)->set_port(dup.replicas(0).port());
  ExpectInvalid(client_->CreateTarget(dup, kTimeout).status(), "replicas[2]");

  pb::CreateTargetRequest bad_host = TargetRequest(2);
  bad_host.mutable_replicas(1)->set_host("replica-1.example");
  ExpectInvalid(client_->CreateTarget(bad_host, kTimeout).status(), "replicas[1].host");

  pb::CreateTargetRequest port0 = TargetRequest(1);
  port0.mutable_replicas(0)->set_port(0);
  ExpectInvalid(client_->CreateTarget(port0, kTimeout).status(), "replicas[0].port");

  pb::CreateTargetRequest epoch0 = TargetRequest(1);
  epoch0.set_epoch(0);
  ExpectInvalid(client_->CreateTarget(epoch0, kTimeout).status(), "epoch");

  pb::CreateTargetRequest bad_volume = TargetRequest(1);
  bad_volume.set_volume_id("a:b");
  ExpectInvalid(client_->CreateTarget(bad_volume, kTimeout).status(), "volume_id");

  pb::CreateTargetRequest bad_size = TargetRequest(1);
  bad_size.set_size_bytes(1000);
  ExpectInvalid(client_->CreateTarget(bad_size, kTimeout).status(), "size_bytes");

  pb::CreateTargetRequest bad_nbd = TargetRequest(1);
  bad_nbd.set_nbd_tcp_address("0.0.0.0");
  ExpectInvalid(client_->CreateTarget(bad_nbd, kTimeout).status(), "nbd_tcp_address");
}

TEST_F(EngineServiceTest, DestroyTargetOfAbsentVolumeIsOk) {
  Status st = client_->DestroyTarget("vol-t", kTimeout);
  EXPECT_TRUE(st.ok()) << st.ToString();
  ExpectInvalid(client_->DestroyTarget("", kTimeout), "volume_id");
}

TEST_F(EngineServiceTest, GetTargetOfAbsentVolumeIsNotFound) {
  Result<pb::Target> t = client_->GetTarget("vol-t", kTimeout);
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound) << t.status().ToString();
  Result<std::vector<pb::Target>> all = client_->ListTargets(kTimeout);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_TRUE(all->empty());
}

TEST_F(EngineServiceTest, LiveReplicaCallsRejectBadRequestsNamingTheField) {
  pb::ReplicaEndpoint good;
  good.set_host("127.0.0.1");
  good.set_port(9501);
  pb::ReplicaEndpoint bad_host = good;
  bad_host.set_host("replica-1.example");
  ExpectInvalid(client_->AddTargetReplica("vol-t", bad_host, kTimeout).status(), "replica.host");
  pb::ReplicaEndpoint bad_port = good;
  bad_port.set_port(70000);
  ExpectInvalid(client_->AddTargetReplica("vol-t", bad_port, kTimeout).status(), "replica.port");
  ExpectInvalid(client_->AddTargetReplica("a/b", good, kTimeout).status(), "volume_id");

  for (const char* bad :
       {"", "127.0.0.1", "127.0.0.1:0", "localhost:9501", "127.0.0.1:9501:local"}) {
    ExpectInvalid(client_->RemoveTargetReplica("vol-t", bad, kTimeout).status(), "address");
    ExpectInvalid(client_->RebuildTargetReplica("vol-t", bad, kTimeout).status(), "address");
  }
  ExpectInvalid(client_->RemoveTargetReplica("", "127.0.0.1:9501", kTimeout).status(), "volume_id");
  ExpectInvalid(client_->RebuildTargetReplica("..", "127.0.0.1:9501", kTimeout).status(),
                "volume_id");

  ExpectInvalid(client_->SetRebuildRate("vol-t", 100, kTimeout).status(), "bytes_per_sec");
  ExpectInvalid(client_->SetRebuildRate("a b", 0, kTimeout).status(), "volume_id");

  pb::CreateTargetRequest slow = TargetRequest(1);
  slow.set_rebuild_rate_bytes_per_sec(4096);
  ExpectInvalid(client_->CreateTarget(slow, kTimeout).status(), "rebuild_rate_bytes_per_sec");
  pb::CreateTargetRequest busy = TargetRequest(1);
  busy.set_reconnect_interval_ms(10);
  ExpectInvalid(client_->CreateTarget(busy, kTimeout).status(), "reconnect_interval_ms");
}

TEST_F(EngineServiceTest, LiveReplicaCallsOnAVolumeWithNoTargetAreNotFound) {
  pb::ReplicaEndpoint e;
  e.set_host("127.0.0.1");
  e.set_port(9501);
  EXPECT_EQ(client_->AddTargetReplica("vol-t", e, kTimeout).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(client_->RemoveTargetReplica("vol-t", "127.0.0.1:9501", kTimeout).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(client_->RebuildTargetReplica("vol-t", "127.0.0.1:9501", kTimeout).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(client_->SetRebuildRate("vol-t", 0, kTimeout).status().code(), StatusCode::kNotFound);
}

TEST_P(EngineServiceLoopTest, CreateTargetOverALocalReplicaIsReadyAndIdempotent) {
  ASSERT_TRUE(client_->CreateReplica(ReplicaRequest("vol-t"), kTimeout).ok());
  pb::CreateTargetRequest req;
  req.set_volume_id("vol-t");
  req.set_epoch(3);
  pb::ReplicaEndpoint* e = req.add_replicas();
  e->set_host("127.0.0.1");
  e->set_port(replica_server_->port());
  e->set_local(true);

  Result<pb::Target> t = client_->CreateTarget(req, kTimeout);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->volume_id(), "vol-t");
  EXPECT_EQ(t->epoch(), 3u);
  EXPECT_EQ(t->state(), pb::TARGET_STATE_READY);
  EXPECT_EQ(t->size_bytes(), kSize);
  EXPECT_EQ(t->nbd_socket(), tmp_ + "/nbd/vol-t.sock");
  EXPECT_TRUE(Exists(t->nbd_socket()));
  ASSERT_EQ(t->replicas_size(), 1);
  EXPECT_EQ(t->replicas(0).address(), "127.0.0.1:" + std::to_string(replica_server_->port()));
  EXPECT_EQ(t->replicas(0).state(), pb::REPLICA_STATE_HEALTHY);
  EXPECT_EQ(t->replicas(0).replica_id(), "vol-t-r1");

  // The same request again: the same target.
  Result<pb::Target> again = client_->CreateTarget(req, kTimeout);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->nbd_socket(), t->nbd_socket());
  EXPECT_EQ(again->epoch(), 3u);
  // Another epoch for the attached volume: ALREADY_EXISTS, the target stays.
  pb::CreateTargetRequest other = req;
  other.set_epoch(4);
  EXPECT_EQ(client_->CreateTarget(other, kTimeout).status().code(), StatusCode::kAlreadyExists);

  Result<pb::Target> got = client_->GetTarget("vol-t", kTimeout);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->epoch(), 3u);
  Result<std::vector<pb::Target>> all = client_->ListTargets(kTimeout);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].volume_id(), "vol-t");

  ASSERT_TRUE(client_->DestroyTarget("vol-t", kTimeout).ok());
  EXPECT_EQ(client_->GetTarget("vol-t", kTimeout).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(client_->DestroyTarget("vol-t", kTimeout).ok());
}

TEST_P(EngineServiceLoopTest, CreateTargetWithNoReachableReplicaIsUnavailableAndLeavesNothing) {
  // A port nobody listens on: bind one, note it, close it.
  auto probe = GrpcServer::Start("127.0.0.1:0", service_.get());
  ASSERT_TRUE(probe.ok());
  const uint16_t dead_port = (*probe)->port();
  (*probe)->Shutdown(std::chrono::milliseconds(0));

  pb::CreateTargetRequest req = TargetRequest(1);
  req.mutable_replicas(0)->set_port(dead_port);
  Result<pb::Target> t = client_->CreateTarget(req, kTimeout);
  EXPECT_EQ(t.status().code(), StatusCode::kUnavailable) << t.status().ToString();
  EXPECT_EQ(client_->GetTarget("vol-t", kTimeout).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(Exists(tmp_ + "/nbd/vol-t.sock"));
}

// tandem-engine --target-threads=2: two volumes attached through the API run
// on two loops (loop 0 the server's with --target-loop=server) and are
// listed, answered idempotently and destroyed like any.
TEST_P(EngineServiceLoopTest, TwoTargetsOnTwoLoopsAreServedThroughTheApi) {
  TearDown();
  target_threads_ = 2;
  StartEngine("");
  for (const char* vol : {"vol-a", "vol-b"}) {
    ASSERT_TRUE(client_->CreateReplica(ReplicaRequest(vol), kTimeout).ok());
    pb::CreateTargetRequest req;
    req.set_volume_id(vol);
    req.set_epoch(1);
    pb::ReplicaEndpoint* e = req.add_replicas();
    e->set_host("127.0.0.1");
    e->set_port(replica_server_->port());
    e->set_local(true);
    Result<pb::Target> t = client_->CreateTarget(req, kTimeout);
    ASSERT_TRUE(t.ok()) << vol << ": " << t.status().ToString();
    EXPECT_EQ(t->state(), pb::TARGET_STATE_READY);
    EXPECT_TRUE(Exists(t->nbd_socket()));
    Result<pb::Target> again = client_->CreateTarget(req, kTimeout);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(again->nbd_socket(), t->nbd_socket());
  }
  auto a = targets_->Get("vol-a");
  auto b = targets_->Get("vol-b");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->loop_index, 0u);
  EXPECT_EQ(b->loop_index, 1u);
  Result<std::vector<pb::Target>> all = client_->ListTargets(kTimeout);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].volume_id(), "vol-a");
  EXPECT_EQ((*all)[1].volume_id(), "vol-b");
  // Where each runs, through the API (Target.loop_index).
  EXPECT_EQ((*all)[0].loop_index(), 0u);
  EXPECT_EQ((*all)[1].loop_index(), 1u);
  Result<pb::Target> got_b = client_->GetTarget("vol-b", kTimeout);
  ASSERT_TRUE(got_b.ok()) << got_b.status().ToString();
  EXPECT_EQ(got_b->loop_index(), 1u);
  for (const char* vol : {"vol-b", "vol-a"}) {
    ASSERT_TRUE(client_->DestroyTarget(vol, kTimeout).ok());
    EXPECT_EQ(client_->GetTarget(vol, kTimeout).status().code(), StatusCode::kNotFound);
  }
}

TEST_F(EngineServiceTest, GrpcServerServesOnAUnixSocket) {
  const std::string path = tmp_ + "/engine.sock";
  auto unix_server = GrpcServer::Start("unix:" + path, service_.get());
  ASSERT_TRUE(unix_server.ok()) << unix_server.status().ToString();
  EXPECT_EQ((*unix_server)->port(), 0);
  EngineClient unix_client("unix:" + path, "");
  Result<pb::EngineInfo> info = unix_client.GetEngineInfo(kTimeout);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->node_id(), "node-a");
  (*unix_server)->Shutdown(std::chrono::milliseconds(0));
}

TEST_F(EngineServiceTest, GrpcServerRejectsBadAddressesAndPortsInUse) {
  for (const char* bad : {"127.0.0.1", "127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:x", "unix:"}) {
    auto s = GrpcServer::Start(bad, service_.get());
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  // SO_REUSEPORT is off: a second server cannot share the first one's port.
  auto second = GrpcServer::Start(address_, service_.get());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable) << second.status().ToString();
}

TEST_F(EngineServiceTest, ClientOfAnEngineThatIsNotThereFailsUnavailable) {
  grpc_->Shutdown(std::chrono::milliseconds(0));
  Result<pb::EngineInfo> info = client_->GetEngineInfo(kTimeout);
  EXPECT_EQ(info.status().code(), StatusCode::kUnavailable) << info.status().ToString();
}

// The one instantiation of the suite's TEST_Ps in every file of service_tests.
INSTANTIATE_TEST_SUITE_P(Loops, EngineServiceLoopTest, ::testing::Bool(), LoopName);

class EngineServiceTokenTest : public EngineServiceTest {
 protected:
  void SetUp() override { StartEngine("mgmt-secret"); }
};

TEST_F(EngineServiceTokenTest, CallsWithoutTheTokenAreUnauthenticated) {
  EngineClient anonymous(address_, "");
  EngineClient wrong(address_, "mgmt-secreT");
  for (EngineClient* c : {&anonymous, &wrong}) {
    EXPECT_EQ(c->GetEngineInfo(kTimeout).status().code(), StatusCode::kUnauthenticated);
    EXPECT_EQ(c->CreateReplica(ReplicaRequest("vol-1"), kTimeout).status().code(),
              StatusCode::kUnauthenticated);
    EXPECT_EQ(c->DeleteReplica("vol-1", kTimeout).code(), StatusCode::kUnauthenticated);
    EXPECT_EQ(c->GetReplica("vol-1", kTimeout).status().code(), StatusCode::kUnauthenticated);
    EXPECT_EQ(c->ListReplicas(kTimeout).status().code(), StatusCode::kUnauthenticated);
    // Authentication comes before validation: no hint about the request.
    EXPECT_EQ(c->CreateTarget(TargetRequest(0), kTimeout).status().code(),
              StatusCode::kUnauthenticated);
    EXPECT_EQ(c->DestroyTarget("vol-t", kTimeout).code(), StatusCode::kUnauthenticated);
    EXPECT_EQ(c->GetTarget("vol-t", kTimeout).status().code(), StatusCode::kUnauthenticated);
    EXPECT_EQ(c->ListTargets(kTimeout).status().code(), StatusCode::kUnauthenticated);
    EXPECT_EQ(c->AddTargetReplica("vol-t", pb::ReplicaEndpoint(), kTimeout).status().code(),
              StatusCode::kUnauthenticated);
    EXPECT_EQ(c->RemoveTargetReplica("vol-t", "", kTimeout).status().code(),
              StatusCode::kUnauthenticated);
    EXPECT_EQ(c->RebuildTargetReplica("vol-t", "", kTimeout).status().code(),
              StatusCode::kUnauthenticated);
    EXPECT_EQ(c->SetRebuildRate("vol-t", 1, kTimeout).status().code(),
              StatusCode::kUnauthenticated);
  }
  // Nothing was created by the rejected CreateReplica calls.
  EXPECT_EQ(client_->GetReplica("vol-1", kTimeout).status().code(), StatusCode::kNotFound);
}

TEST_F(EngineServiceTokenTest, CallsWithTheTokenSucceed) {
  ASSERT_TRUE(client_->GetEngineInfo(kTimeout).ok());
  Result<pb::Replica> r = client_->CreateReplica(ReplicaRequest("vol-1"), kTimeout);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(client_->GetReplica("vol-1", kTimeout).ok());
}

}  // namespace
}  // namespace tandem::service
