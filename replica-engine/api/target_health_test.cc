#include "replica-engine/api/target_health.h"

#include <gtest/gtest.h>

namespace tandem::api {
namespace {

namespace pb = engine::v1;

pb::Target ThreeReplicas(pb::TargetState state) {
  pb::Target t;
  t.set_volume_id("vol-1");
  t.set_state(state);
  for (int i = 0; i < 3; ++i) {
    auto* r = t.add_replicas();
    r->set_address("127.0.0.1:700" + std::to_string(i));
    r->set_replica_id("r-" + std::to_string(i));
    r->set_state(pb::REPLICA_STATE_HEALTHY);
  }
  return t;
}

bool Has(const std::string& message, const std::string& part) {
  return message.find(part) != std::string::npos;
}

TEST(TargetHealthTest, EveryReplicaInSyncIsNormal) {
  TargetHealth h = HealthOfTarget(ThreeReplicas(pb::TARGET_STATE_READY));
  EXPECT_FALSE(h.abnormal);
  EXPECT_EQ(h.message, "HEALTHY: 3 of 3 replicas in sync");
}

TEST(TargetHealthTest, DegradedNamesEachReplicaStateAndTheRebuildsProgressAndEta) {
  pb::Target t = ThreeReplicas(pb::TARGET_STATE_DEGRADED);
  t.mutable_replicas(1)->set_state(pb::REPLICA_STATE_FAULTED);
  t.mutable_replicas(1)->set_last_error("connection reset by peer");
  t.mutable_replicas(2)->set_state(pb::REPLICA_STATE_REBUILDING);
  auto* rb = t.mutable_rebuild();
  rb->set_state(pb::REBUILD_STATE_RUNNING);
  rb->set_replica("127.0.0.1:7002");
  rb->set_bytes_total(64 << 20);
  rb->set_bytes_done(16 << 20);
  rb->set_rate_bytes_per_sec(8 << 20);
  rb->set_eta_seconds(6);
  TargetHealth h = HealthOfTarget(t);
  EXPECT_TRUE(h.abnormal);
  EXPECT_EQ(h.message.rfind("DEGRADED: 1 of 3 replicas in sync", 0), 0u) << h.message;
  EXPECT_TRUE(Has(h.message, "replica r-0 (127.0.0.1:7000) HEALTHY")) << h.message;
  EXPECT_TRUE(Has(h.message, "replica r-1 (127.0.0.1:7001) FAULTED: connection reset by peer"))
      << h.message;
  EXPECT_TRUE(
      Has(h.message, "replica r-2 (127.0.0.1:7002) REBUILDING 25.0% (16 MiB of 64 MiB), ETA 6 s"))
      << h.message;
}

TEST(TargetHealthTest, NoRateYetMeansNoMadeUpEta) {
  pb::RebuildStatus rb;
  rb.set_state(pb::REBUILD_STATE_RUNNING);
  rb.set_bytes_total(1 << 20);
  EXPECT_EQ(RebuildProgress(rb), "REBUILDING 0.0% (0 MiB of 1 MiB), ETA unknown");
  rb.set_state(pb::REBUILD_STATE_DONE);
  EXPECT_EQ(RebuildProgress(rb), "");
}

TEST(TargetHealthTest, NoInSyncReplicaIsInaccessible) {
  pb::Target t = ThreeReplicas(pb::TARGET_STATE_FAILED);
  for (auto& r : *t.mutable_replicas()) r.set_state(pb::REPLICA_STATE_FAULTED);
  TargetHealth h = HealthOfTarget(t);
  EXPECT_TRUE(h.abnormal);
  EXPECT_EQ(h.message.rfind("INACCESSIBLE: no in-sync replica is reachable", 0), 0u) << h.message;
  EXPECT_TRUE(Has(h.message, "0 of 3 replicas in sync")) << h.message;
}

TEST(TargetHealthTest, FencedAndStartingAreAbnormal) {
  EXPECT_TRUE(HealthOfTarget(ThreeReplicas(pb::TARGET_STATE_FENCED)).abnormal);
  TargetHealth starting = HealthOfTarget(ThreeReplicas(pb::TARGET_STATE_STARTING));
  EXPECT_TRUE(starting.abnormal);
  EXPECT_EQ(starting.message.rfind("STARTING", 0), 0u);
}

}  // namespace
}  // namespace tandem::api
