// The watch output of tandemctl: sizes, rates and ETAs format as documented,
// the bar is empty at 0%, full only at 100% or DONE, and --until-done's
// verdict follows the rebuild and replica states.

#include "tools/tandemctl/progress_bar.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace tandem::tandemctl {
namespace {

namespace pb = ::tandem::engine::v1;

constexpr uint64_t kGiB = 1ull << 30;
constexpr uint64_t kMiB = 1ull << 20;

pb::RebuildStatus Running(uint64_t done, uint64_t total, double rate, double eta) {
  pb::RebuildStatus rb;
  rb.set_state(pb::REBUILD_STATE_RUNNING);
  rb.set_mode(pb::REBUILD_MODE_INCREMENTAL);
  rb.set_source("127.0.0.1:9501");
  rb.set_replica("127.0.0.1:9503");
  rb.set_bytes_done(done);
  rb.set_bytes_total(total);
  rb.set_rate_bytes_per_sec(rate);
  rb.set_eta_seconds(eta);
  return rb;
}

pb::Target WithReplicas(pb::RebuildState rebuild, std::initializer_list<pb::ReplicaState> states) {
  pb::Target t;
  t.set_state(pb::TARGET_STATE_DEGRADED);
  t.mutable_rebuild()->set_state(rebuild);
  int port = 9501;
  for (pb::ReplicaState s : states) {
    pb::ReplicaStatus* r = t.add_replicas();
    r->set_address("127.0.0.1:" + std::to_string(port++));
    r->set_state(s);
  }
  return t;
}

TEST(FormatBytesTest, BinaryUnitsWithOneDecimal) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1.0 KiB");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(kMiB - 1), "1.0 MiB");  // not "1024.0 KiB"
  EXPECT_EQ(FormatBytes(1288490189), "1.2 GiB");
  EXPECT_EQ(FormatBytes(5 * (kGiB << 10)), "5.0 TiB");
  EXPECT_EQ(FormatBytes(UINT64_MAX), "16.0 EiB");
}

TEST(FormatRateTest, PerSecondAndZeroForNothing) {
  EXPECT_EQ(FormatRate(85.3 * kMiB), "85.3 MiB/s");
  EXPECT_EQ(FormatRate(512), "512 B/s");
  EXPECT_EQ(FormatRate(0), "0 B/s");
  EXPECT_EQ(FormatRate(-5), "0 B/s");
  EXPECT_EQ(FormatRate(std::nan("")), "0 B/s");
}

TEST(FormatEtaTest, SecondsMinutesHoursAndUnknown) {
  EXPECT_EQ(FormatEta(0), "0s");
  EXPECT_EQ(FormatEta(16.6), "17s");
  EXPECT_EQ(FormatEta(59.4), "59s");
  EXPECT_EQ(FormatEta(125), "2m05s");
  EXPECT_EQ(FormatEta(3599), "59m59s");
  EXPECT_EQ(FormatEta(3720), "1h02m");
  EXPECT_EQ(FormatEta(-1), "--");
  EXPECT_EQ(FormatEta(std::nan("")), "--");
  EXPECT_EQ(FormatEta(std::numeric_limits<double>::infinity()), "--");
}

TEST(RenderProgressBarTest, RunningShowsBarBytesRateEtaAndDirection) {
  // 45% of 2.5 GiB: 7 of 16 cells (rounded down).
  constexpr uint64_t kTotal = 5 * kGiB / 2;
  pb::RebuildStatus rb = Running(kTotal * 9 / 20, kTotal, 85.3 * kMiB, 16.8);
  EXPECT_EQ(RenderProgressBar(rb),
            "[#######.........]  45%  1.1 GiB / 2.5 GiB  85.3 MiB/s  ETA 17s  "
            "INCREMENTAL from 127.0.0.1:9501 -> 127.0.0.1:9503");
}

TEST(RenderProgressBarTest, ZeroPercentIsAnEmptyBarWithUnknownEta) {
  pb::RebuildStatus rb = Running(0, 2 * kGiB, 0, 0);
  rb.set_mode(pb::REBUILD_MODE_FULL);
  EXPECT_EQ(RenderProgressBar(rb),
            "[................]   0%  0 B / 2.0 GiB  0 B/s  ETA --  "
            "FULL from 127.0.0.1:9501 -> 127.0.0.1:9503");
}

TEST(RenderProgressBarTest, FullBarOnlyWhenEveryByteIsDone) {
  pb::RebuildStatus almost = Running(kGiB - 1, kGiB, kMiB, 0.1);
  std::string line = RenderProgressBar(almost);
  EXPECT_EQ(line.substr(0, 23), "[###############.]  99%") << line;
  pb::RebuildStatus all = Running(kGiB, kGiB, kMiB, 0);
  EXPECT_EQ(RenderProgressBar(all).substr(0, 23), "[################] 100%");
}

TEST(RenderProgressBarTest, DoneIsAFullBarEvenWithNothingToCopy) {
  pb::RebuildStatus rb = Running(0, 0, 0, 0);
  rb.set_state(pb::REBUILD_STATE_DONE);
  EXPECT_EQ(RenderProgressBar(rb, 8),
            "[########] 100%  0 B / 0 B  0 B/s  ETA 0s  "
            "INCREMENTAL from 127.0.0.1:9501 -> 127.0.0.1:9503  DONE");
}

TEST(RenderProgressBarTest, FailedEndsWithTheError) {
  pb::RebuildStatus rb = Running(kGiB / 4, kGiB, 0, 0);
  rb.set_state(pb::REBUILD_STATE_FAILED);
  rb.set_last_error("UNAVAILABLE: source disconnected");
  EXPECT_EQ(RenderProgressBar(rb, 4),
            "[#...]  25%  256.0 MiB / 1.0 GiB  0 B/s  ETA --  INCREMENTAL from 127.0.0.1:9501 "
            "-> 127.0.0.1:9503  FAILED: UNAVAILABLE: source disconnected");
}

TEST(RenderWatchLineTest, BarWhileRunningOrFinishedElseReplicaStates) {
  pb::Target t =
      WithReplicas(pb::REBUILD_STATE_IDLE, {pb::REPLICA_STATE_HEALTHY, pb::REPLICA_STATE_FAULTED});
  const std::string states =
      "DEGRADED  no rebuild running  127.0.0.1:9501=HEALTHY 127.0.0.1:9502=FAULTED";
  EXPECT_EQ(RenderWatchLine(t), states);
  *t.mutable_rebuild() = Running(0, kGiB, 0, 0);
  EXPECT_EQ(RenderWatchLine(t).substr(0, 18), "[................]");
  // An earlier rebuild is DONE but a replica still waits for its own.
  t.mutable_rebuild()->set_state(pb::REBUILD_STATE_DONE);
  EXPECT_EQ(RenderWatchLine(t), states);
  t.mutable_replicas(1)->set_state(pb::REPLICA_STATE_HEALTHY);
  EXPECT_EQ(RenderWatchLine(t).substr(0, 23), "[################] 100%");
}

TEST(JudgeWatchTest, DoneOnlyWhenEveryReplicaIsHealthy) {
  using V = WatchVerdict;
  EXPECT_EQ(JudgeWatch(WithReplicas(pb::REBUILD_STATE_DONE,
                                    {pb::REPLICA_STATE_HEALTHY, pb::REPLICA_STATE_HEALTHY})),
            V::kDone);
  // Nothing ever rebuilt and nothing to rebuild.
  EXPECT_EQ(JudgeWatch(WithReplicas(pb::REBUILD_STATE_IDLE,
                                    {pb::REPLICA_STATE_HEALTHY, pb::REPLICA_STATE_HEALTHY})),
            V::kDone);
  EXPECT_EQ(JudgeWatch(WithReplicas(pb::REBUILD_STATE_RUNNING,
                                    {pb::REPLICA_STATE_HEALTHY, pb::REPLICA_STATE_REBUILDING})),
            V::kContinue);
  // An earlier rebuild is DONE; the next replica is rebuilding, connecting,
  // or (just added) FAULTED until it connects.
  for (pb::ReplicaState next : {pb::REPLICA_STATE_REBUILDING, pb::REPLICA_STATE_CONNECTING,
                                pb::REPLICA_STATE_FAULTED, pb::REPLICA_STATE_STALE}) {
    EXPECT_EQ(JudgeWatch(WithReplicas(pb::REBUILD_STATE_DONE, {pb::REPLICA_STATE_HEALTHY, next})),
              V::kContinue)
        << pb::ReplicaState_Name(next);
  }
  EXPECT_EQ(JudgeWatch(WithReplicas(pb::REBUILD_STATE_IDLE,
                                    {pb::REPLICA_STATE_HEALTHY, pb::REPLICA_STATE_STALE})),
            V::kContinue);
  EXPECT_EQ(JudgeWatch(WithReplicas(pb::REBUILD_STATE_FAILED,
                                    {pb::REPLICA_STATE_HEALTHY, pb::REPLICA_STATE_FAULTED})),
            V::kFailed);
}

}  // namespace
}  // namespace tandem::tandemctl
