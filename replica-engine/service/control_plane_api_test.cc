// What engine.proto grew for the control plane (issue 11), through the real
// gRPC service: node capacity and counts in EngineInfo, the export of a
// target (kind and path, also in ListTargets for a restarted node plugin),
// and the resize and fence calls (validated; ResizeReplica and FenceReplica
// done by the replica server, ResizeTarget by the live target and its FUSE
// file export).

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>

#include "common/grpc/testing_certs.h"
#include "replica-engine/service/testing_engine_service.h"

namespace tandem::service {
namespace {

using namespace ::tandem::service::test_support;  // NOLINT: the shared fixture
namespace pb = ::tandem::engine::v1;

// A one-replica target over this engine's own replica of "vol-t".
pb::CreateTargetRequest LocalTarget(uint16_t port) {
  pb::CreateTargetRequest req;
  req.set_volume_id("vol-t");
  req.set_epoch(3);
  pb::ReplicaEndpoint* e = req.add_replicas();
  e->set_host("127.0.0.1");
  e->set_port(port);
  e->set_local(true);
  return req;
}

TEST_F(EngineServiceTest, EngineInfoReportsDataDirCapacityAndNodeCounts) {
  ASSERT_TRUE(client_->CreateReplica(ReplicaRequest("vol-a"), kTimeout).ok());
  ASSERT_TRUE(client_->CreateReplica(ReplicaRequest("vol-b", 2 * kSize), kTimeout).ok());
  Result<pb::EngineInfo> info = client_->GetEngineInfo(kTimeout);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  struct statvfs vfs;
  ASSERT_EQ(::statvfs((tmp_ + "/data").c_str(), &vfs), 0);
  EXPECT_EQ(info->capacity_total_bytes(), uint64_t{vfs.f_blocks} * vfs.f_frsize);
  EXPECT_GT(info->capacity_available_bytes(), 0u);
  EXPECT_LE(info->capacity_available_bytes(), info->capacity_free_bytes());
  EXPECT_LE(info->capacity_free_bytes(), info->capacity_total_bytes());
  EXPECT_EQ(info->replica_count(), 2u);
  EXPECT_EQ(info->provisioned_bytes(), 3 * kSize);
  EXPECT_EQ(info->target_count(), 0u);
  EXPECT_FALSE(info->version().empty());

  ASSERT_TRUE(client_->CreateReplica(ReplicaRequest("vol-t"), kTimeout).ok());
  ASSERT_TRUE(client_->CreateTarget(LocalTarget(replica_server_->port()), kTimeout).ok());
  info = client_->GetEngineInfo(kTimeout);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->replica_count(), 3u);
  EXPECT_EQ(info->target_count(), 1u);
}

TEST_P(EngineServiceLoopTest, TargetsReportTheirNbdExportAlsoInListTargets) {
  ASSERT_TRUE(client_->CreateReplica(ReplicaRequest("vol-t"), kTimeout).ok());
  pb::CreateTargetRequest req = LocalTarget(replica_server_->port());
  Result<pb::Target> t = client_->CreateTarget(req, kTimeout);  // UNSPECIFIED: NBD
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->export_kind(), pb::EXPORT_KIND_NBD);
  EXPECT_EQ(t->export_path(), tmp_ + "/nbd/vol-t.sock");
  EXPECT_EQ(t->export_path(), t->nbd_socket());
  // Explicit NBD is the same spec: idempotent.
  req.set_export_kind(pb::EXPORT_KIND_NBD);
  Result<pb::Target> again = client_->CreateTarget(req, kTimeout);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->export_path(), t->export_path());

  // What a restarted node plugin sees: every target with its export, epoch
  // and replicas.
  Result<std::vector<pb::Target>> all = client_->ListTargets(kTimeout);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 1u);
  const pb::Target& listed = (*all)[0];
  EXPECT_EQ(listed.volume_id(), "vol-t");
  EXPECT_EQ(listed.export_kind(), pb::EXPORT_KIND_NBD);
  EXPECT_EQ(listed.export_path(), t->export_path());
  EXPECT_EQ(listed.epoch(), 3u);
  ASSERT_EQ(listed.replicas_size(), 1);
  EXPECT_EQ(listed.replicas(0).address(), "127.0.0.1:" + std::to_string(replica_server_->port()));
}

TEST_P(EngineServiceLoopTest, FuseFileExportServesTheFileAndBadKindsAreInvalid) {
  ASSERT_TRUE(client_->CreateReplica(ReplicaRequest("vol-t"), kTimeout).ok());
  pb::CreateTargetRequest req = LocalTarget(replica_server_->port());
  req.set_export_kind(pb::EXPORT_KIND_FUSE_FILE);
  if (geteuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0) {
    Result<pb::Target> t = client_->CreateTarget(req, kTimeout);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_EQ(t->export_kind(), pb::EXPORT_KIND_FUSE_FILE);
    EXPECT_EQ(t->export_path(), tmp_ + "/nbd/vol-t.fuse/volume");
    EXPECT_TRUE(t->nbd_socket().empty()) << t->nbd_socket();
    struct stat st;
    ASSERT_EQ(stat(t->export_path().c_str(), &st), 0) << t->export_path();
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), t->size_bytes());
    // Another export kind for the same volume is another spec.
    pb::CreateTargetRequest nbd = req;
    nbd.set_export_kind(pb::EXPORT_KIND_NBD);
    EXPECT_EQ(client_->CreateTarget(nbd, kTimeout).status().code(), StatusCode::kAlreadyExists);
    ASSERT_TRUE(client_->DestroyTarget("vol-t", kTimeout).ok());
    EXPECT_NE(stat(t->export_path().c_str(), &st), 0) << "FUSE file left after destroy";
  }
  EXPECT_EQ(client_->GetTarget("vol-t", kTimeout).status().code(), StatusCode::kNotFound);

  req.set_nbd_tcp_address("127.0.0.1:0");  // only for NBD
  ExpectInvalid(client_->CreateTarget(req, kTimeout).status(), "nbd_tcp_address");
  req.clear_nbd_tcp_address();
  req.set_export_kind(static_cast<pb::ExportKind>(3));  // reserved (ublk)
  ExpectInvalid(client_->CreateTarget(req, kTimeout).status(), "export_kind");
  req.set_export_kind(static_cast<pb::ExportKind>(77));
  ExpectInvalid(client_->CreateTarget(req, kTimeout).status(), "export_kind");
  EXPECT_EQ(client_->GetTarget("vol-t", kTimeout).status().code(), StatusCode::kNotFound);
}

TEST_F(EngineServiceTest, ResizeReplicaIsValidatedAndNeverShrinks) {
  ExpectInvalid(client_->ResizeReplica("bad/id", kSize, kTimeout).status(), "volume_id");
  ExpectInvalid(client_->ResizeReplica("vol-1", 1000, kTimeout).status(), "size_bytes");
  EXPECT_EQ(client_->ResizeReplica("vol-1", 1ull << 60, kTimeout).status().code(),
            StatusCode::kOutOfRange);
  EXPECT_EQ(client_->ResizeReplica("vol-1", kSize, kTimeout).status().code(),
            StatusCode::kNotFound);
  ASSERT_TRUE(client_->CreateReplica(ReplicaRequest("vol-1"), kTimeout).ok());
  EXPECT_EQ(client_->ResizeReplica("vol-1", kSize / 2, kTimeout).status().code(),
            StatusCode::kOutOfRange);
  Result<pb::Replica> same = client_->ResizeReplica("vol-1", kSize, kTimeout);
  ASSERT_TRUE(same.ok()) << same.status().ToString();
  EXPECT_EQ(same->size_bytes(), kSize);
  Result<pb::Replica> grown = client_->ResizeReplica("vol-1", 2 * kSize, kTimeout);
  ASSERT_TRUE(grown.ok()) << grown.status().ToString();
  EXPECT_EQ(grown->size_bytes(), 2 * kSize);
  EXPECT_EQ(client_->GetReplica("vol-1", kTimeout)->size_bytes(), 2 * kSize);
  EXPECT_EQ(client_->ResizeReplica("vol-1", kSize, kTimeout).status().code(),
            StatusCode::kOutOfRange);  // never shrunk back
}

TEST_F(EngineServiceTest, ResizeTargetIsValidatedAndNeverShrinks) {
  ExpectInvalid(client_->ResizeTarget("vol-t", 4097, kTimeout).status(), "size_bytes");
  ExpectInvalid(client_->ResizeTarget("vol-t", 0, kTimeout).status(), "size_bytes");
  EXPECT_EQ(client_->ResizeTarget("vol-t", kSize, kTimeout).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(client_->CreateReplica(ReplicaRequest("vol-t"), kTimeout).ok());
  ASSERT_TRUE(client_->CreateTarget(LocalTarget(replica_server_->port()), kTimeout).ok());
  EXPECT_EQ(client_->ResizeTarget("vol-t", kSize - 4096, kTimeout).status().code(),
            StatusCode::kOutOfRange);
  Result<pb::Target> same = client_->ResizeTarget("vol-t", kSize, kTimeout);
  ASSERT_TRUE(same.ok()) << same.status().ToString();
  EXPECT_EQ(same->size_bytes(), kSize);
  // Not a multiple of the block size.
  EXPECT_EQ(client_->ResizeTarget("vol-t", kSize + 512, kTimeout).status().code(),
            StatusCode::kInvalidArgument);
}

// Online expansion, engine level: the replica grows, then the live target;
// the FUSE file reports the new size, a write past the old end is stored and
// read back, also by the next target over the same replica.
TEST_P(EngineServiceLoopTest, ResizeTargetGrowsALiveVolumeAndItsFuseFile) {
  if (geteuid() != 0 || access("/dev/fuse", R_OK | W_OK) != 0) {
    GTEST_SKIP() << "needs root and /dev/fuse";
  }
  ASSERT_TRUE(client_->CreateReplica(ReplicaRequest("vol-t"), kTimeout).ok());
  pb::CreateTargetRequest req = LocalTarget(replica_server_->port());
  req.set_export_kind(pb::EXPORT_KIND_FUSE_FILE);
  Result<pb::Target> t = client_->CreateTarget(req, kTimeout);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  const std::string file = t->export_path();
  ASSERT_TRUE(client_->ResizeReplica("vol-t", 2 * kSize, kTimeout).ok());
  Result<pb::Target> grown = client_->ResizeTarget("vol-t", 2 * kSize, kTimeout);
  ASSERT_TRUE(grown.ok()) << grown.status().ToString();
  EXPECT_EQ(grown->size_bytes(), 2 * kSize);
  EXPECT_TRUE(client_->ResizeTarget("vol-t", 2 * kSize, kTimeout).ok());  // repeated
  struct stat st;
  ASSERT_EQ(stat(file.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 2 * kSize);

  std::string data(65536, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + 3);
  const off_t past = static_cast<off_t>(kSize + kSize / 2);
  int fd = open(file.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, data.data(), data.size(), past), static_cast<ssize_t>(data.size()));
  ASSERT_EQ(fsync(fd), 0);
  std::string back(data.size(), '\0');
  ASSERT_EQ(pread(fd, back.data(), back.size(), past), static_cast<ssize_t>(back.size()));
  close(fd);
  EXPECT_EQ(back, data);

  // The next target over the replica has the new size and the bytes.
  ASSERT_TRUE(client_->DestroyTarget("vol-t", kTimeout).ok());
  req.set_epoch(req.epoch() + 1);
  req.set_size_bytes(2 * kSize);
  t = client_->CreateTarget(req, kTimeout);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->size_bytes(), 2 * kSize);
  fd = open(t->export_path().c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::string again(data.size(), '\0');
  ASSERT_EQ(pread(fd, again.data(), again.size(), past), static_cast<ssize_t>(again.size()));
  close(fd);
  EXPECT_EQ(again, data);
  ASSERT_TRUE(client_->DestroyTarget("vol-t", kTimeout).ok());
}

TEST_P(EngineServiceLoopTest, FenceReplicaIsValidatedAndRaisesTheEpoch) {
  ExpectInvalid(client_->FenceReplica("vol-t", 0, kTimeout).status(), "epoch");
  ExpectInvalid(client_->FenceReplica("", 5, kTimeout).status(), "volume_id");
  EXPECT_EQ(client_->FenceReplica("vol-t", 5, kTimeout).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(client_->CreateReplica(ReplicaRequest("vol-t"), kTimeout).ok());
  // A target at epoch 3 raises the replica to 3.
  ASSERT_TRUE(client_->CreateTarget(LocalTarget(replica_server_->port()), kTimeout).ok());
  for (uint64_t epoch : {1, 3}) {
    Result<pb::Replica> r = client_->FenceReplica("vol-t", epoch, kTimeout);
    ASSERT_TRUE(r.ok()) << epoch << ": " << r.status().ToString();
    EXPECT_EQ(r->highest_epoch(), 3u);
  }
  // A higher epoch is raised (the replica server supersedes the target).
  Result<pb::Replica> higher = client_->FenceReplica("vol-t", 4, kTimeout);
  ASSERT_TRUE(higher.ok()) << higher.status().ToString();
  EXPECT_EQ(higher->highest_epoch(), 4u);
}

// The management API over mutual TLS (what the controller uses across
// nodes): a client with a certificate from the engine's CA is served, one
// without is refused before any handler runs.
TEST_F(EngineServiceTest, ManagementApiOverMutualTls) {
  rpc::test_certs::TestCertificates certs;
  if (!certs.ok()) GTEST_SKIP() << certs.error();
  rpc::GrpcServerOptions options;
  options.endpoint = "127.0.0.1:0";
  options.services = {service_.get()};
  options.tls = certs.Server(/*mutual=*/true);
  auto server = rpc::GrpcServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string((*server)->port());

  auto client = api::EngineClient::Connect(endpoint, "", certs.Client("client"));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  Result<pb::EngineInfo> info = (*client)->GetEngineInfo(kTimeout);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->node_id(), "node-a");

  auto anonymous = api::EngineClient::Connect(endpoint, "", certs.Client(""));
  ASSERT_TRUE(anonymous.ok());
  EXPECT_EQ((*anonymous)->GetEngineInfo(std::chrono::milliseconds(2000)).status().code(),
            StatusCode::kUnavailable);
  api::EngineClient plaintext(endpoint, "");
  EXPECT_FALSE(plaintext.GetEngineInfo(std::chrono::milliseconds(2000)).ok());
  EXPECT_EQ(
      api::EngineClient::Connect(endpoint, "", {"", "", certs.File("nope.crt")}).status().code(),
      StatusCode::kInvalidArgument);
  (*server)->Shutdown(std::chrono::milliseconds(100));
}

}  // namespace
}  // namespace tandem::service
