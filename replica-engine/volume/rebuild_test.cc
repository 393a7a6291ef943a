// Online rebuild against real replica servers on 127.0.0.1: a returning
// replica copies only its dirty regions, a new one only the allocated extents
// of the source, live writes during the copy are never overwritten by it, a
// killed rebuilding replica resumes from its checkpoint, and a failed source
// is replaced by another HEALTHY one. Every test ends with byte-identical
// replicas.

#include <fcntl.h>
#include <unistd.h>

#include <random>

#include "tests/support/testing_cluster.h"
#include "tests/support/testing_proxy.h"

namespace tandem::target {
namespace {

using namespace target_testing;  // NOLINT

class RebuildTest : public TargetFixture {
 protected:
  // Waits until no rebuild runs and every replica is HEALTHY.
  bool WaitHealthy(VolumeTarget* t, int timeout_ms = 60000) {
    return RunUntil(
        [&] {
          TargetStatus st = t->GetStatus();
          if (st.state != TargetState::kReady) return false;
          return st.rebuild.state != RebuildState::kRunning;
        },
        timeout_ms);
  }
  void ExpectIdentical() {
    std::vector<uint8_t> first = nodes_[0]->Data();
    for (size_t i = 1; i < nodes_.size(); ++i) {
      EXPECT_TRUE(nodes_[i]->Data() == first) << "replica " << i << " differs from replica 0";
    }
  }
  // Writes `len` bytes of a byte pattern derived from `seed` at `off`.
  void Fill(VolumeTarget* t, uint64_t off, uint32_t len, uint8_t seed) {
    uint8_t* b = Buf(len);
    for (uint32_t i = 0; i < len; ++i) b[i] = static_cast<uint8_t>(seed + i * 7);
    ASSERT_EQ(Do(t, BlockOp::kWrite, off, len, b), StatusCode::kOk);
  }
};

TEST_F(RebuildTest, ReturningReplicaCopiesOnlyTheRegionsWrittenWhileItWasAway) {
  AddNodes(3);
  VolumeTarget* t = NewTarget(1, 2000, /*reconnect_ms=*/100);
  for (uint64_t off = 0; off < kVolumeSize; off += 1 << 20) Fill(t, off, 1 << 20, 1);

  nodes_[2]->server->Stop();
  // 10 regions of 64 KiB written while degraded, some with several writes.
  constexpr uint64_t kRegion = 64 * 1024;
  for (int i = 0; i < 10; ++i) {
    Fill(t, (i * 23 + 5) * kRegion, 4096, static_cast<uint8_t>(i));
    Fill(t, (i * 23 + 5) * kRegion + 8192, 8192, static_cast<uint8_t>(i + 100));
  }
  ASSERT_EQ(t->GetStatus().state, TargetState::kDegraded);
  nodes_[2]->StartServer();  // same port: the target reconnects by itself
  ASSERT_TRUE(WaitHealthy(t));
  TargetStatus st = t->GetStatus();
  EXPECT_EQ(st.rebuild.state, RebuildState::kDone);
  EXPECT_EQ(st.rebuild.mode, RebuildMode::kIncremental);
  EXPECT_EQ(st.rebuilds_completed, 1u);
  // Exactly the 10 dirty regions, not the 16 MiB volume.
  EXPECT_EQ(st.rebuild.bytes_copied, 10 * kRegion);
  for (const ReplicaStatus& r : st.replicas) EXPECT_EQ(r.generation, st.generation);
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  ExpectIdentical();
  // With every replica HEALTHY again the dirty maps are cleared.
  ASSERT_TRUE(RunUntil([&] {
    for (auto& n : nodes_) {
      const replica::ReplicaMetadata& md = n->replica()->metadata();
      for (uint8_t b : md.dirty_map) {
        if (b != 0) return false;
      }
    }
    return true;
  }));
}

TEST_F(RebuildTest, NewReplicaCopiesOnlyAllocatedExtentsOfTheSource) {
  kVolumeSize = 64ull << 20;
  AddNodes(3);
  // A target over the first two; the third joins empty.
  TargetOptions o = Options(1);
  o.replicas.pop_back();
  VolumeTarget* t = StartTarget(o);
  Fill(t, 0, 1 << 20, 3);
  Fill(t, 40ull << 20, 512 << 10, 4);
  Fill(t, 63ull << 20, 4096, 5);
  ASSERT_TRUE(t->AddReplica({"127.0.0.1", nodes_[2]->port, false}).ok());
  EXPECT_EQ(t->AddReplica({"127.0.0.1", nodes_[2]->port, false}).code(),
            StatusCode::kAlreadyExists);
  ASSERT_TRUE(WaitHealthy(t));
  TargetStatus st = t->GetStatus();
  ASSERT_EQ(st.replicas.size(), 3u);
  EXPECT_EQ(st.rebuild.state, RebuildState::kDone);
  EXPECT_EQ(st.rebuild.mode, RebuildMode::kFull);
  // 1.5 MiB + 4 KiB written; file systems allocate in blocks (maybe more with
  // preallocation), but never anything like the 64 MiB volume.
  EXPECT_GE(st.rebuild.bytes_copied, (1536u << 10) + 4096);
  EXPECT_LE(st.rebuild.bytes_copied, 4u << 20);
  ExpectIdentical();
  kVolumeSize = 16ull << 20;
}

TEST_F(RebuildTest, LiveWritesDuringTheCopyAreNeverOverwrittenByIt) {
  AddNodes(3);
  TargetOptions o = Options(1);
  o.replicas.pop_back();
  o.rebuild_rate_bytes_per_sec = 16ull << 20;  // ~1 s of copying: writes interleave
  VolumeTarget* t = StartTarget(o);
  for (uint64_t off = 0; off < kVolumeSize; off += 1 << 20) Fill(t, off, 1 << 20, 9);
  std::vector<uint8_t> model = nodes_[0]->Data();

  ASSERT_TRUE(t->AddReplica({"127.0.0.1", nodes_[2]->port, false}).ok());
  uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  struct Slot {
    Io io;
    uint8_t* buf = nullptr;
    bool busy = false;
  };
  std::vector<Slot> slots(16);
  for (Slot& s : slots) s.buf = Buf(65536);
  int errors = 0;
  auto start = [&](Slot& s) {
    uint32_t len = static_cast<uint32_t>(1 + rng() % 16) * 4096;
    uint64_t off;
    bool clash;
    do {
      off = (rng() % ((kVolumeSize - len) / 4096)) * 4096;
      clash = false;
      for (Slot& x : slots) {
        if (x.busy && off < x.io.req.offset + x.io.req.length && x.io.req.offset < off + len) {
          clash = true;
        }
      }
    } while (clash);
    for (uint32_t i = 0; i < len; ++i) s.buf[i] = static_cast<uint8_t>(rng());
    s.io.done = false;
    s.io.req.op = BlockOp::kWrite;
    s.io.req.offset = off;
    s.io.req.length = len;
    s.io.req.buf = s.buf;
    s.busy = true;
    t->Submit(&s.io.req);
  };
  for (Slot& s : slots) start(s);
  bool rebuilding = true;
  ASSERT_TRUE(RunUntil(
      [&] {
        for (Slot& s : slots) {
          if (!s.busy || !s.io.done) continue;
          s.busy = false;
          if (s.io.req.status != StatusCode::kOk) {
            ++errors;
          } else {
            std::memcpy(model.data() + s.io.req.offset, s.buf, s.io.req.length);
          }
          if (rebuilding) start(s);
        }
        TargetStatus st = t->GetStatus();
        rebuilding = st.rebuild.state == RebuildState::kRunning || st.state != TargetState::kReady;
        for (Slot& s : slots) {
          if (s.busy) return false;
        }
        return !rebuilding;
      },
      60000));
  EXPECT_EQ(errors, 0);
  TargetStatus st = t->GetStatus();
  EXPECT_EQ(st.rebuild.state, RebuildState::kDone);
  EXPECT_GT(st.writes, 100u);
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  for (auto& n : nodes_) EXPECT_TRUE(n->Data() == model) << n->dir;
}

TEST_F(RebuildTest, KilledRebuildingReplicaResumesFromItsCheckpoint) {
  kVolumeSize = 32ull << 20;
  AddNodes(3);
  TargetOptions o = Options(1, 2000, /*reconnect_ms=*/100);
  o.replicas.pop_back();
  o.rebuild_rate_bytes_per_sec = 16ull << 20;
  o.rebuild_checkpoint_bytes = 2ull << 20;
  VolumeTarget* t = StartTarget(o);
  for (uint64_t off = 0; off < kVolumeSize; off += 1 << 20) Fill(t, off, 1 << 20, 11);
  ASSERT_TRUE(t->AddReplica({"127.0.0.1", nodes_[2]->port, false}).ok());
  ASSERT_TRUE(RunUntil([&] { return t->GetStatus().rebuild.bytes_done >= (12ull << 20); }));
  nodes_[2]->server->Stop();   // the rebuilding replica dies mid-copy
  Fill(t, 1 << 20, 4096, 12);  // written while it is away: must reach it
  ASSERT_TRUE(RunUntil([&] { return t->GetStatus().rebuild.state != RebuildState::kRunning; }));
  nodes_[2]->StartServer();
  ASSERT_TRUE(WaitHealthy(t));
  TargetStatus st = t->GetStatus();
  EXPECT_EQ(st.rebuild.state, RebuildState::kDone);
  EXPECT_GE(st.rebuild.resumed_from, 8ull << 20) << "did not resume from the checkpoint";
  EXPECT_LT(st.rebuild.bytes_copied, 26ull << 20);
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  ExpectIdentical();
  kVolumeSize = 16ull << 20;
}

TEST_F(RebuildTest, FailedSourceIsReplacedByAnotherHealthyReplica) {
  kVolumeSize = 32ull << 20;
  AddNodes(4);
  TargetOptions o = Options(1);
  o.replicas.pop_back();
  o.rebuild_rate_bytes_per_sec = 16ull << 20;
  VolumeTarget* t = StartTarget(o);
  for (uint64_t off = 0; off < kVolumeSize; off += 1 << 20) Fill(t, off, 1 << 20, 21);
  ASSERT_TRUE(t->AddReplica({"127.0.0.1", nodes_[3]->port, false}).ok());
  ASSERT_TRUE(RunUntil([&] { return t->GetStatus().rebuild.bytes_done >= (8ull << 20); }));
  std::string source = t->GetStatus().rebuild.source;
  int src = -1;
  for (int i = 0; i < 3; ++i) {
    if ("127.0.0.1:" + std::to_string(nodes_[i]->port) == source) src = i;
  }
  ASSERT_GE(src, 0) << source;
  nodes_[src]->server->Stop();  // the source dies mid-copy
  ASSERT_TRUE(RunUntil(
      [&] {
        TargetStatus st = t->GetStatus();
        return st.rebuild.state != RebuildState::kRunning;
      },
      60000));
  TargetStatus st = t->GetStatus();
  EXPECT_EQ(st.rebuild.state, RebuildState::kDone) << st.rebuild.last_error;
  EXPECT_NE(st.rebuild.source, source);
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  std::vector<uint8_t> ref = nodes_[src == 0 ? 1 : 0]->Data();
  EXPECT_TRUE(nodes_[3]->Data() == ref);
  kVolumeSize = 16ull << 20;
}

TEST_F(RebuildTest, TargetRestartMidRebuildLeavesTheDestinationStale) {
  kVolumeSize = 32ull << 20;
  AddNodes(3);
  TargetOptions o = Options(1);
  o.replicas.pop_back();
  o.rebuild_rate_bytes_per_sec = 16ull << 20;
  VolumeTarget* t = StartTarget(o);
  for (uint64_t off = 0; off < kVolumeSize; off += 1 << 20) Fill(t, off, 1 << 20, 31);
  ASSERT_TRUE(t->AddReplica({"127.0.0.1", nodes_[2]->port, false}).ok());
  ASSERT_TRUE(RunUntil([&] { return t->GetStatus().rebuild.bytes_done >= (4ull << 20); }));
  // The target goes away mid-copy (its engine restarts).
  targets_.clear();
  // A new target over all three: the half-copied replica is behind and is
  // never served as HEALTHY until a rebuild completes.
  TargetOptions o2 = Options(2, 2000, /*reconnect_ms=*/100);
  VolumeTarget* t2 = StartTarget(o2);
  TargetStatus st = t2->GetStatus();
  EXPECT_EQ(st.replicas[2].state, ReplicaState::kStale);
  EXPECT_EQ(st.replicas[0].state, ReplicaState::kHealthy);
  ASSERT_TRUE(WaitHealthy(t2));
  st = t2->GetStatus();
  EXPECT_EQ(st.rebuild.state, RebuildState::kDone);
  ASSERT_EQ(Do(t2, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  ExpectIdentical();
  kVolumeSize = 16ull << 20;
}

TEST_F(RebuildTest, DestinationLostWhileTheCopyWaitsForTheRateLimitIsRebuiltAgain) {
  kVolumeSize = 8ull << 20;
  AddNodes(3);
  TargetOptions o = Options(1, 2000, /*reconnect_ms=*/100);
  o.replicas.pop_back();
  o.rebuild_rate_bytes_per_sec = 2ull << 20;  // one window every 0.5 s: mostly waiting
  VolumeTarget* t = StartTarget(o);
  for (uint64_t off = 0; off < kVolumeSize; off += 1 << 20) Fill(t, off, 1 << 20, 41);
  ASSERT_TRUE(t->AddReplica({"127.0.0.1", nodes_[2]->port, false}).ok());
  ASSERT_TRUE(RunUntil([&] { return t->GetStatus().rebuild.bytes_done >= (2ull << 20); }));
  nodes_[2]->server->Stop();
  ASSERT_TRUE(RunUntil([&] { return t->GetStatus().rebuild.state != RebuildState::kRunning; }));
  t->SetRebuildRate(0);
  nodes_[2]->StartServer();
  ASSERT_TRUE(WaitHealthy(t, 30000)) << t->GetStatus().rebuild.last_error;
  EXPECT_EQ(t->GetStatus().rebuild.state, RebuildState::kDone);
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  ExpectIdentical();
  kVolumeSize = 16ull << 20;
}

// Issue 9, loss 1: a full rebuild decided what to TRIM from an allocation
// listing taken before the live writes landed, and TRIMmed them away on the
// destination. Live writes go into what was a hole of the source when the
// rebuild listed it; afterwards every replica must hold them.
TEST_F(RebuildTest, LiveWritesIntoSourceHolesSurviveAFullRebuild) {
  kVolumeSize = 64ull << 20;
  AddNodes(3);
  TargetOptions o = Options(1);
  o.replicas.pop_back();
  o.rebuild_rate_bytes_per_sec = 16ull << 20;  // ~1 s of copying the low 16 MiB
  VolumeTarget* t = StartTarget(o);
  for (uint64_t off = 0; off < (16ull << 20); off += 1 << 20) Fill(t, off, 1 << 20, 51);
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  std::vector<uint8_t> model = nodes_[0]->Data();
  ASSERT_TRUE(t->AddReplica({"127.0.0.1", nodes_[2]->port, false}).ok());
  // 64 KiB writes into the upper half (a hole of the source at listing time)
  // for as long as the rebuild runs.
  uint8_t* b = Buf(64 << 10);
  uint64_t off = 32ull << 20;
  int writes = 0;
  while (t->GetStatus().rebuild.state == RebuildState::kRunning ||
         t->GetStatus().state != TargetState::kReady) {
    ASSERT_LT(writes, 100000);
    for (uint32_t i = 0; i < (64u << 10); ++i) b[i] = static_cast<uint8_t>(writes * 13 + i);
    ASSERT_EQ(Do(t, BlockOp::kWrite, off, 64 << 10, b), StatusCode::kOk);
    std::memcpy(model.data() + off, b, 64 << 10);
    ++writes;
    off += 64 << 10;
    if (off >= kVolumeSize) off = 32ull << 20;
  }
  EXPECT_GT(writes, 10);
  EXPECT_EQ(t->GetStatus().rebuild.state, RebuildState::kDone);
  EXPECT_EQ(t->GetStatus().rebuild.mode, RebuildMode::kFull);
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    std::vector<uint8_t> d = nodes_[i]->Data();
    size_t diff = 0;
    for (size_t k = 0; k < d.size(); ++k) diff += d[k] != model[k];
    EXPECT_EQ(diff, 0u) << "replica " << i << " differs from the acknowledged writes";
  }
  kVolumeSize = 16ull << 20;
}

// Issue 9: the rebuild cursor was persisted before the copied data was
// durable on the destination; a power loss there would resume past data it
// never had. Every checkpoint now follows a FLUSH of the destination.
TEST_F(RebuildTest, EveryCheckpointFollowsAFlushOfTheDestination) {
  kVolumeSize = 32ull << 20;
  AddNodes(3);
  CountingProxy dest(nodes_[2]->port);
  TargetOptions o = Options(1);
  o.replicas.pop_back();
  o.rebuild_checkpoint_bytes = 2ull << 20;
  VolumeTarget* t = StartTarget(o);
  for (uint64_t off = 0; off < kVolumeSize; off += 1 << 20) Fill(t, off, 1 << 20, 61);
  ASSERT_TRUE(t->AddReplica({"127.0.0.1", dest.port(), false}).ok());
  ASSERT_TRUE(WaitHealthy(t));
  uint64_t cursors = dest.Count(protocol::Opcode::kSetRebuildCursor);
  uint64_t flushes = dest.Count(protocol::Opcode::kFlush);
  ASSERT_GE(cursors, 4u);  // several checkpoints, and the final clear
  // One FLUSH before each checkpoint (the clear at the end follows the
  // finishing FLUSH).
  EXPECT_GE(flushes, cursors);
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  ExpectIdentical();
  kVolumeSize = 16ull << 20;
}

// Issue 9, "unflushed writes on a crashed replica host": a replica whose
// engine or host crashed may have lost writes it had acknowledged but not
// yet flushed (a volatile device cache). Those are not in the survivors'
// dirty maps (they were written while it was serving), but they are in its
// own activity log: its rebuild copies them too.
TEST_F(RebuildTest, ReplicaReopenedAfterACrashGetsItsActivityLogExtentsBack) {
  AddNodes(3);
  if (nodes_[2]->replica()->metadata().activity_extent_size == 0) {
    GTEST_SKIP() << "these replicas keep no activity log";
  }
  VolumeTarget* t = NewTarget(1, 2000, /*reconnect_ms=*/100);
  Fill(t, 4 << 20, 65536, 71);  // acknowledged, never flushed
  Node& n = *nodes_[2];
  n.server->Stop();
  n.manager.reset();  // its engine dies: no clean Close
  {
    // Its device cache lost the write.
    std::vector<uint8_t> zero(65536, 0);
    int fd = ::open((n.dir + "/replicas/" + kVolume + "/data").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, zero.data(), zero.size(), 4 << 20), 65536);
    ::close(fd);
  }
  Fill(t, 12 << 20, 4096, 72);  // written while it is away: in the dirty maps
  n.manager = std::make_unique<replica::ReplicaManager>(n.backend.get(), n.dir + "/replicas");
  ASSERT_TRUE(n.manager->LoadAll().ok());
  EXPECT_FALSE(n.replica()->was_clean());
  n.StartServer();
  ASSERT_TRUE(WaitHealthy(t));
  TargetStatus st = t->GetStatus();
  EXPECT_EQ(st.rebuild.mode, RebuildMode::kIncremental);
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  ExpectIdentical();
  EXPECT_EQ(n.Data()[4 << 20], static_cast<uint8_t>(71));
}

// Found by the fault checker (every engine restarted at once): the last
// target's generation bump reached r0 only, and a write it had in flight
// reached r1 only. The next attach serves r0 and rebuilds r1 incrementally
// from r0's dirty map — which cannot hold that write (it predates the bump).
// The activity logs do: a replica STALE at attach gets its own log's extents
// and those of the HEALTHY replicas' logs copied too.
TEST_F(RebuildTest, ReplicaStaleAtAttachGetsTheExtentsTheLastTargetHadInFlight) {
  AddNodes(3);
  if (nodes_[1]->replica()->metadata().activity_extent_size == 0) {
    GTEST_SKIP() << "these replicas keep no activity log";
  }
  VolumeTarget* t1 = NewTarget(1);
  Fill(t1, 8 << 20, 65536, 81);
  ASSERT_EQ(Do(t1, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  Fill(t1, 4 << 20, 65536, 82);
  targets_.clear();
  for (auto& n : nodes_) n->server->Stop();
  // The bump to generation 7 reached r0 only (it tracks dirty regions from
  // then on); r1 and r2 stayed at 6.
  ASSERT_TRUE(nodes_[0]->replica()->SetGeneration(7, true, 0x7777, {0x6666}).ok());
  ASSERT_TRUE(nodes_[1]->replica()->SetGeneration(6, false, 0x6666, {}).ok());
  ASSERT_TRUE(nodes_[2]->replica()->SetGeneration(6, false, 0x6666, {}).ok());
  {
    // The write in flight that reached r1 only.
    std::vector<uint8_t> b(65536, 0x8F);
    int fd = ::open((nodes_[1]->dir + "/replicas/" + kVolume + "/data").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, b.data(), b.size(), (4 << 20) + 65536), 65536);
    ::close(fd);
  }
  for (auto& n : nodes_) n->StartServer();
  VolumeTarget* t2 = NewTarget(2, 2000, /*reconnect_ms=*/100);
  TargetStatus st = t2->GetStatus();
  ASSERT_EQ(st.replicas[0].state, ReplicaState::kHealthy) << st.last_error;
  EXPECT_EQ(st.replicas[1].state, ReplicaState::kStale);
  ASSERT_TRUE(WaitHealthy(t2));
  EXPECT_EQ(t2->GetStatus().rebuild.mode, RebuildMode::kIncremental);
  ASSERT_EQ(Do(t2, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  ExpectIdentical();
  EXPECT_EQ(nodes_[1]->Data()[(4 << 20) + 65536], 0);
}

}  // namespace
}  // namespace tandem::target
