#include "controller/shrink_plan.h"

#include <gtest/gtest.h>

namespace tandem::controller {
namespace {

using Standing = ReplicaFacts::Standing;
using Ids = std::vector<std::string>;

ReplicaFacts Fact(const std::string& id, Standing s, bool in_sync = false, bool local = false) {
  ReplicaFacts f;
  f.replica_id = id;
  f.standing = s;
  f.holds_all = s == Standing::kCurrent;
  f.in_sync = in_sync;
  f.local = local;
  return f;
}

StoredReplica Stored(const std::string& id, bool reached, uint64_t gen, uint64_t gen_id,
                     bool in_sync = false) {
  return StoredReplica{id, reached, gen, gen_id, in_sync};
}

TEST(ShrinkPlanTest, RemovesTheLeastUpToDateFirstThenNotLocalThenTheLater) {
  std::vector<ReplicaFacts> f = {Fact("r0", Standing::kCurrent, false, true),
                                 Fact("r1", Standing::kCurrent), Fact("r2", Standing::kRebuilding),
                                 Fact("r3", Standing::kBehind), Fact("r4", Standing::kGone)};
  EXPECT_EQ(ChooseVictims(f, 4), (Ids{"r4"}));
  EXPECT_EQ(ChooseVictims(f, 2), (Ids{"r4", "r3", "r2"}));
  EXPECT_EQ(ChooseVictims(f, 1), (Ids{"r4", "r3", "r2", "r1"}));  // the local one stays
  std::vector<ReplicaFacts> all = {Fact("a", Standing::kCurrent), Fact("b", Standing::kCurrent),
                                   Fact("c", Standing::kCurrent)};
  EXPECT_EQ(ChooseVictims(all, 2), (Ids{"c"}));
  EXPECT_TRUE(ChooseVictims(all, 3).empty());
}

TEST(ShrinkPlanTest, TheInSyncReplicaHoldingEverythingGoesLast) {
  // In-sync r2 (holds all); r0 local and current but not in the record.
  std::vector<ReplicaFacts> f = {Fact("r0", Standing::kCurrent, false, true),
                                 Fact("r1", Standing::kBehind, true),
                                 Fact("r2", Standing::kCurrent, true)};
  EXPECT_EQ(ChooseVictims(f, 1), (Ids{"r1", "r0"}));
  EXPECT_TRUE(CheckKeepers(f, {"r1", "r0"}, true).ok());
  Status st = CheckKeepers(f, {"r2"}, true);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("in-sync"), std::string::npos) << st.ToString();
}

TEST(ShrinkPlanTest, MajorityRuleNeedsHalfTheKeepersHoldingEverything) {
  std::vector<ReplicaFacts> f = {Fact("r0", Standing::kCurrent), Fact("r1", Standing::kCurrent),
                                 Fact("r2", Standing::kBehind), Fact("r3", Standing::kBehind),
                                 Fact("r4", Standing::kBehind)};
  EXPECT_TRUE(CheckKeepers(f, {"r4"}, false).ok());               // 2 of 4
  EXPECT_FALSE(CheckKeepers(f, {"r0"}, false).ok());              // 1 of 4
  EXPECT_TRUE(CheckKeepers(f, {"r4", "r3", "r2"}, false).ok());   // 2 of 2
  EXPECT_FALSE(CheckKeepers(f, {"r0", "r1", "r4"}, false).ok());  // none
  EXPECT_TRUE(CheckKeepers(f, {"r4", "r3"}, false).ok());         // 2 of 3
  EXPECT_FALSE(CheckKeepers(f, {"r0", "r1", "r2", "r3"}, false).ok());
}

TEST(ShrinkPlanTest, StoredFactsFollowTheAttachRule) {
  // Newest generation among a majority: r0, r1 at 5; r2 behind.
  auto f = FactsFromStoredReplicas(
      {Stored("r0", true, 5, 0xA), Stored("r1", true, 5, 0xA), Stored("r2", true, 4, 0x9)}, 0);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(ChooseVictims(*f, 1), (Ids{"r2", "r1"}));
  // Only one of three answers: cannot tell.
  f = FactsFromStoredReplicas(
      {Stored("r0", true, 5, 0xA), Stored("r1", false, 0, 0), Stored("r2", false, 0, 0)}, 0);
  EXPECT_EQ(f.status().code(), StatusCode::kFailedPrecondition);
  // Two never-written (joining) replicas do not count: one of one answered.
  f = FactsFromStoredReplicas(
      {Stored("r0", true, 5, 0xA), Stored("r1", true, 0, 0), Stored("r2", true, 0, 0)}, 0);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(ChooseVictims(*f, 1), (Ids{"r2", "r1"}));
  // The written replica unreachable, the two reached never written: refused.
  f = FactsFromStoredReplicas(
      {Stored("r0", false, 0, 0), Stored("r1", true, 0, 0), Stored("r2", true, 0, 0)}, 0);
  EXPECT_EQ(f.status().code(), StatusCode::kFailedPrecondition);
  // A volume never written: anything goes.
  f = FactsFromStoredReplicas(
      {Stored("r0", true, 0, 0), Stored("r1", true, 0, 0), Stored("r2", true, 0, 0)}, 0);
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(CheckKeepers(*f, ChooseVictims(*f, 1), false).ok());
  // Two histories at one number: refused.
  f = FactsFromStoredReplicas(
      {Stored("r0", true, 5, 0xA), Stored("r1", true, 5, 0xB), Stored("r2", true, 4, 0x9)}, 0);
  EXPECT_EQ(f.status().code(), StatusCode::kFailedPrecondition);
  // The in-sync rule: r1 at the recorded id holds everything, alone.
  f = FactsFromStoredReplicas(
      {Stored("r0", true, 4, 0x9), Stored("r1", true, 5, 0xB, true), Stored("r2", false, 0, 0)},
      0xB);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(ChooseVictims(*f, 1), (Ids{"r2", "r0"}));
  EXPECT_TRUE(CheckKeepers(*f, {"r2", "r0"}, true).ok());
  // ... and nobody at the recorded id: no shrink can be shown safe.
  f = FactsFromStoredReplicas(
      {Stored("r0", true, 4, 0x9), Stored("r1", true, 4, 0x9, true), Stored("r2", true, 4, 0x9)},
      0xB);
  ASSERT_TRUE(f.ok());
  EXPECT_FALSE(CheckKeepers(*f, ChooseVictims(*f, 2), true).ok());
}

}  // namespace
}  // namespace tandem::controller
