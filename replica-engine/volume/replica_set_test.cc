// ReplicaSet holds no I/O: these tests set slot states directly and check
// the acknowledgement rule, the attach choice and the generation ids.
#include "replica-engine/volume/replica_set.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tandem::target {
namespace {

std::vector<ReplicaEndpoint> Endpoints(int n) {
  std::vector<ReplicaEndpoint> out;
  for (int i = 0; i < n; ++i) out.push_back({"127.0.0.1", static_cast<uint16_t>(9500 + i), false});
  return out;
}

TEST(ReplicaSetTest, AcknowledgesWithAMajorityOfMembersOrTheWholeInSyncSet) {
  ReplicaSet set(nullptr);
  set.Configure(Endpoints(3));
  EXPECT_EQ(set.AllMask(), 0b111u);
  EXPECT_EQ(set.MemberMask(), 0b111u);
  EXPECT_TRUE(set.AckAllowed(0b111));
  EXPECT_TRUE(set.AckAllowed(0b011));  // 2 of 3
  EXPECT_FALSE(set.AckAllowed(0b001));
  // An added replica counts only once it is a member (rebuilt).
  set[3].removed = false;
  set[3].member = false;
  EXPECT_EQ(set.AllMask(), 0b1111u);
  EXPECT_TRUE(set.AckAllowed(0b011));
  EXPECT_TRUE(set.AckAllowed(0b1011) && !set.AckAllowed(0b1001));
  // The recorded in-sync set may acknowledge below a majority, only whole,
  // and only for the generation id it was recorded at (the next bump's).
  set.set_in_sync(0b001, set.next_generation_id());
  EXPECT_TRUE(set.AckAllowed(0b001));
  set.set_in_sync(0b101, set.next_generation_id());
  EXPECT_FALSE(set.AckAllowed(0b001));
  EXPECT_TRUE(set.AckAllowed(0b101));
  set.set_in_sync(0b001, set.next_generation_id() + 1);  // an older record
  EXPECT_FALSE(set.AckAllowed(0b001));
}

TEST(ReplicaSetTest, MasksFollowTheSlotStates) {
  ReplicaSet set(nullptr);
  set.Configure(Endpoints(3));
  set[0].state = ReplicaState::kHealthy;
  set[1].state = ReplicaState::kRebuilding;
  set[2].state = ReplicaState::kFaulted;
  EXPECT_EQ(set.HealthyMask(), 0b001u);
  EXPECT_EQ(set.WriteMask(), 0b011u);
  EXPECT_EQ(set.Find("127.0.0.1:9501"), &set[1]);
  EXPECT_EQ(set.Find("127.0.0.1:9503"), nullptr);  // an unused slot
  set.ScheduleClose(set[2]);
  set.ScheduleClose(set[0]);
  EXPECT_TRUE(set.ClosePending(set[2]));
  EXPECT_EQ(set.TakeNextClose(), 0);
  EXPECT_EQ(set.TakeNextClose(), 2);
  EXPECT_EQ(set.TakeNextClose(), -1);
}

// Slot `i` reached at start-up at `generation` with `id` and `history`.
void Reached(ReplicaSet* set, int i, uint64_t generation, uint64_t id,
             std::vector<uint64_t> history = {}) {
  ReplicaSlot& r = (*set)[i];
  r.state = ReplicaState::kConnecting;
  r.generation = generation;
  r.replica_id = "r" + std::to_string(i);
  r.info.generation = generation;
  r.info.generation_id = id;
  r.info.generation_history = std::move(history);
}

TEST(ReplicaSetTest, AttachServesOnlyTheNewestHistory) {
  ReplicaSet set(nullptr);
  set.Configure(Endpoints(3));
  Reached(&set, 0, 7, 0xB, {0xA});
  Reached(&set, 1, 7, 0xB, {0xA});
  Reached(&set, 2, 6, 0xA);
  std::string error;
  ASSERT_TRUE(set.ChooseNewest(InSyncRequirement{}, "v", &error)) << error;
  EXPECT_EQ(set[0].state, ReplicaState::kHealthy);
  EXPECT_EQ(set[1].state, ReplicaState::kHealthy);
  EXPECT_EQ(set[2].state, ReplicaState::kStale);
  EXPECT_TRUE(set.ClosePending(set[2]));  // never read; rebuilt before it serves
  EXPECT_EQ(set.generation(), 7u);
  EXPECT_EQ(set.generation_id(), 0xBu);
  EXPECT_TRUE(set.InLineage(0xA));  // the stale one holds a prefix of ours
  EXPECT_TRUE(set.InLineage(0));
  EXPECT_FALSE(set.InLineage(0xC));
}

TEST(ReplicaSetTest, TwoHistoriesAtOneGenerationNumberAreRefusedNotGuessed) {
  ReplicaSet set(nullptr);
  set.Configure(Endpoints(3));
  Reached(&set, 0, 7, 0xB);
  Reached(&set, 1, 7, 0xC);
  std::string error;
  EXPECT_FALSE(set.ChooseNewest(InSyncRequirement{}, "v", &error));
  EXPECT_NE(error.find("different histories"), std::string::npos) << error;
  EXPECT_EQ(set[0].state, ReplicaState::kStale);
  EXPECT_EQ(set[1].state, ReplicaState::kStale);
}

TEST(ReplicaSetTest, TheControllersInSyncIdMustBeProvenByAReplica) {
  ReplicaSet set(nullptr);
  set.Configure(Endpoints(3));
  Reached(&set, 0, 9, 0xD, {0xC, 0xB});
  Reached(&set, 1, 5, 0xB);
  InSyncRequirement need;
  need.generation_id = 0xC;
  need.replica_ids = {"r0"};
  std::string error;
  ASSERT_TRUE(set.ChooseNewest(need, "v", &error)) << error;
  EXPECT_EQ(set[0].state, ReplicaState::kHealthy);  // 0xC is in its history
  EXPECT_EQ(set[1].state, ReplicaState::kStale);    // 0xB is older than 0xC

  ReplicaSet behind(nullptr);
  behind.Configure(Endpoints(3));
  Reached(&behind, 1, 5, 0xB);
  EXPECT_FALSE(behind.ChooseNewest(need, "v", &error));
  EXPECT_NE(error.find("no reachable replica holds generation id"), std::string::npos) << error;
}

TEST(ReplicaSetTest, ABumpPushesTheOldIdOnTheHistoryAndDrawsTheNext) {
  ReplicaSet set(nullptr);
  set.Configure(Endpoints(2));
  Reached(&set, 0, 3, 0xB, {0xA});
  std::string error;
  ASSERT_TRUE(set.ChooseNewest(InSyncRequirement{}, "v", &error));
  const uint64_t next = set.next_generation_id();
  EXPECT_NE(next, 0u);
  std::string record;
  set.EncodeNextRecord(&record);
  set.AdoptBump(4, record);
  EXPECT_EQ(set.generation(), 4u);
  EXPECT_EQ(set.generation_id(), next);
  EXPECT_NE(set.next_generation_id(), next);
  EXPECT_TRUE(set.InLineage(0xB));
  EXPECT_TRUE(set.InLineage(0xA));
  std::string current;
  set.EncodeCurrentRecord(&current);
  protocol::GenerationRecord rec;
  ASSERT_TRUE(protocol::DecodeGenerationRecord(current, &rec).ok());
  EXPECT_EQ(rec.id, next);
  EXPECT_EQ(rec.history, (std::vector<uint64_t>{0xB, 0xA}));
}

}  // namespace
}  // namespace tandem::target
