// Per-volume secrets through the management API (issue 10): CreateReplica and
// CreateTarget take the volume's secret, validate its length naming the
// field, never return it, and a target attaches only with the same secret.

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <string>

#include "replica-engine/service/testing_engine_service.h"

namespace tandem::service {
namespace {

using namespace ::tandem::service::test_support;  // NOLINT: the shared fixture and helpers
namespace pb = ::tandem::engine::v1;

constexpr const char* kSecret = "the 32-byte secret of vol-t ....";

pb::CreateTargetRequest LocalTarget(uint16_t port, const std::string& secret) {
  pb::CreateTargetRequest req;
  req.set_volume_id("vol-t");
  req.set_epoch(3);
  req.set_secret(secret);
  pb::ReplicaEndpoint* e = req.add_replicas();
  e->set_host("127.0.0.1");
  e->set_port(port);
  e->set_local(true);
  return req;
}

TEST_F(EngineServiceTest, VolumeSecretIsValidatedKeptOwnerOnlyNeverReturnedAndRequired) {
  pb::CreateReplicaRequest short_secret = ReplicaRequest("vol-t");
  short_secret.set_secret("too short");
  ExpectInvalid(client_->CreateReplica(short_secret, kTimeout).status(), "secret");
  ExpectInvalid(
      client_->CreateTarget(LocalTarget(replica_server_->port(), "too short"), kTimeout).status(),
      "secret");

  pb::CreateReplicaRequest req = ReplicaRequest("vol-t");
  req.set_secret(kSecret);
  Result<pb::Replica> r = client_->CreateReplica(req, kTimeout);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->DebugString().find(kSecret), std::string::npos);
  struct stat sb {};
  ASSERT_EQ(::stat((tmp_ + "/data/vol-t/secret").c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  Result<pb::Replica> got = client_->GetReplica("vol-t", kTimeout);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->DebugString().find(kSecret), std::string::npos) << "never returned";

  // Without the secret, or with another one, the target reaches no replica.
  for (const char* secret : {"", "the wrong secret, just as long.."}) {
    Result<pb::Target> t =
        client_->CreateTarget(LocalTarget(replica_server_->port(), secret), kTimeout);
    EXPECT_TRUE(!t.ok() || t->state() != pb::TARGET_STATE_READY)
        << "secret '" << secret << "': " << (t.ok() ? t->DebugString() : t.status().ToString());
    ASSERT_TRUE(client_->DestroyTarget("vol-t", kTimeout).ok());
  }
  Result<pb::Target> t =
      client_->CreateTarget(LocalTarget(replica_server_->port(), kSecret), kTimeout);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->state(), pb::TARGET_STATE_READY);
  ASSERT_EQ(t->replicas_size(), 1);
  EXPECT_EQ(t->replicas(0).state(), pb::REPLICA_STATE_HEALTHY);
  EXPECT_EQ(t->DebugString().find(kSecret), std::string::npos);
}

}  // namespace
}  // namespace tandem::service
