// The target's per-stage latency histograms against real replica servers on
// 127.0.0.1: every completed request is counted once per stage of its class,
// every replica's round trip once per sub-request, and the stages nest (a
// request's total covers its queue, data and finish stages).

#include <cstdint>

#include "gtest/gtest.h"
#include "replica-engine/volume/stage_histogram.h"
#include "replica-engine/volume/volume_target.h"
#include "tests/support/testing_cluster.h"

namespace tandem::target {
namespace {

using namespace target_testing;  // NOLINT
using StageLatencyTest = TargetFixture;

const StageHistogram& Of(const std::array<StageHistogram, kStageCount>& cls, Stage s) {
  return cls[static_cast<size_t>(s)];
}

TEST_F(StageLatencyTest, EveryRequestIsCountedOncePerStageOfItsClass) {
  AddNodes(3);
  VolumeTarget* t = NewTarget(1);
  ASSERT_EQ(t->state(), TargetState::kReady);
  constexpr int kWrites = 12, kReads = 7;
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_EQ(WritePattern(t, static_cast<uint64_t>(i) * 4096, 4096, static_cast<uint8_t>(i)),
              StatusCode::kOk);
  }
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  uint8_t* b = Buf(4096);
  for (int i = 0; i < kReads; ++i) {
    ASSERT_EQ(Do(t, BlockOp::kRead, static_cast<uint64_t>(i) * 4096, 4096, b), StatusCode::kOk);
  }
  const StageLatencies l = t->GetStatus().latency;
  const uint64_t writes = kWrites + 1;  // the FLUSH is in the write class
  for (Stage s : {Stage::kQueue, Stage::kData, Stage::kFinish, Stage::kTotal}) {
    EXPECT_EQ(Of(l.write, s).count(), writes) << StageName(s);
    EXPECT_EQ(Of(l.read, s).count(), static_cast<uint64_t>(kReads)) << StageName(s);
  }
  // Writes go to all three replicas, reads to one.
  EXPECT_EQ(Of(l.write, Stage::kReplica).count(), 3 * writes);
  EXPECT_EQ(Of(l.read, Stage::kReplica).count(), static_cast<uint64_t>(kReads));
  for (const auto* cls : {&l.read, &l.write}) {
    const uint64_t parts = Of(*cls, Stage::kQueue).sum_ns() + Of(*cls, Stage::kData).sum_ns() +
                           Of(*cls, Stage::kFinish).sum_ns();
    EXPECT_GE(Of(*cls, Stage::kTotal).sum_ns(), parts);
    EXPECT_GT(Of(*cls, Stage::kData).sum_ns(), 0u);  // a round trip takes some time
  }
  // The slowest replica decides a write's data phase (its max is at least
  // the mean of its three round trips); a read's is its one round trip.
  EXPECT_GE(3 * Of(l.write, Stage::kData).sum_ns(), Of(l.write, Stage::kReplica).sum_ns());
  EXPECT_EQ(Of(l.read, Stage::kData).sum_ns(), Of(l.read, Stage::kReplica).sum_ns());
}

TEST_F(StageLatencyTest, RejectedRequestsNeverReachTheReplicaStages) {
  AddNodes(1);
  VolumeTarget* t = NewTarget(1);
  uint8_t* b = Buf(8192);
  EXPECT_EQ(Do(t, BlockOp::kWrite, 512, 4096, b), StatusCode::kInvalidArgument);
  const StageLatencies l = t->GetStatus().latency;
  EXPECT_EQ(Of(l.write, Stage::kData).count(), 0u);
  EXPECT_EQ(Of(l.write, Stage::kReplica).count(), 0u);
}

}  // namespace
}  // namespace tandem::target
