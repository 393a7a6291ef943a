// VolumeTarget against real replica servers on 127.0.0.1: mirrored writes land
// on every replica byte for byte, a replica fault bumps the survivors'
// generation before the next acknowledgement, stale replicas are never read,
// a newer epoch fences the older target, and no healthy replica means errors.

#include "replica-engine/volume/volume_target.h"

#include "tests/support/testing_cluster.h"
#include "tests/support/testing_proxy.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <vector>

#include "common/clock.h"
#include "gtest/gtest.h"
#include "replica-engine/backend/backend_factory.h"
#include "replica-engine/replica/replica_manager.h"
#include "replica-engine/server/replica_server.h"

namespace tandem::target {
namespace {

using namespace target_testing;  // NOLINT
using VolumeTargetTest = TargetFixture;

TEST_F(VolumeTargetTest, PipelinedWritesLandOnEveryReplicaByteForByte) {
  AddNodes(3);
  VolumeTarget* t = NewTarget(1);
  ASSERT_EQ(t->state(), TargetState::kReady);
  EXPECT_EQ(t->size(), kVolumeSize);

  std::vector<uint8_t> model(kVolumeSize, 0);
  uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  constexpr int kDepth = 32, kOps = 2000;
  constexpr uint32_t kMaxLen = 64 * 1024;
  struct Slot {
    Io io;
    uint8_t* buf = nullptr;
    bool busy = false;
  };
  std::vector<Slot> slots(kDepth);
  for (Slot& s : slots) s.buf = Buf(kMaxLen);
  int started = 0, finished = 0, errors = 0, mismatches = 0;
  auto overlaps = [&](uint64_t off, uint32_t len) {
    for (Slot& s : slots) {
      if (s.busy && off < s.io.req.offset + s.io.req.length && s.io.req.offset < off + len) {
        return true;
      }
    }
    return false;
  };
  auto start = [&](Slot& s) {
    uint32_t len;
    uint64_t off;
    do {
      len = static_cast<uint32_t>(1 + rng() % (kMaxLen / 4096)) * 4096;
      off = (rng() % ((kVolumeSize - len) / 4096)) * 4096;
    } while (overlaps(off, len));
    bool write = rng() % 3 != 0;
    if (write) {
      for (uint32_t i = 0; i < len; i += 8) {
        uint64_t v = rng();
        std::memcpy(s.buf + i, &v, 8);
      }
    }
    s.io.done = false;
    s.io.req.op = write ? BlockOp::kWrite : BlockOp::kRead;
    s.io.req.offset = off;
    s.io.req.length = len;
    s.io.req.buf = s.buf;
    s.io.req.flags = (write && rng() % 10 == 0) ? kBlockFua : 0;
    s.busy = true;
    ++started;
    t->Submit(&s.io.req);
  };
  for (Slot& s : slots) start(s);
  ASSERT_TRUE(RunUntil(
      [&] {
        for (Slot& s : slots) {
          if (!s.busy || !s.io.done) continue;
          s.busy = false;
          ++finished;
          const BlockRequest& r = s.io.req;
          if (r.status != StatusCode::kOk) {
            ++errors;
          } else if (r.op == BlockOp::kWrite) {
            std::memcpy(model.data() + r.offset, s.buf, r.length);
          } else if (std::memcmp(model.data() + r.offset, s.buf, r.length) != 0) {
            ++mismatches;
          }
          if (started < kOps) start(s);
        }
        return finished == kOps;
      },
      60000));
  EXPECT_EQ(errors, 0);
  EXPECT_EQ(mismatches, 0);
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  for (auto& n : nodes_) EXPECT_TRUE(n->Data() == model) << "replica " << n->dir << " differs";
  TargetStatus st = t->GetStatus();
  EXPECT_GT(st.writes, 0u);
  EXPECT_GT(st.reads, 0u);
  EXPECT_EQ(st.errors, 0u);
}

TEST_F(VolumeTargetTest, RejectsMisalignedAndOutOfRangeRequests) {
  AddNodes(1);
  VolumeTarget* t = NewTarget(1);
  uint8_t* b = Buf(8192);
  EXPECT_EQ(Do(t, BlockOp::kWrite, 512, 4096, b), StatusCode::kInvalidArgument);
  EXPECT_EQ(Do(t, BlockOp::kRead, 0, 100, b), StatusCode::kInvalidArgument);
  EXPECT_EQ(Do(t, BlockOp::kWrite, kVolumeSize - 4096, 8192, b), StatusCode::kOutOfRange);
  EXPECT_EQ(Do(t, BlockOp::kRead, kVolumeSize, 4096, b), StatusCode::kOutOfRange);
  EXPECT_EQ(Do(t, BlockOp::kWrite, 0, 4096, b), StatusCode::kOk);  // still serving
}

// Online expansion: the replicas grow first (a replica larger than the
// volume is served at the volume's size), then the target; a write past the
// old end lands on every replica and reads back. Never shrunk.
TEST_F(VolumeTargetTest, ResizeGrowsTheLiveVolumeAfterItsReplicas) {
  AddNodes(3);
  VolumeTarget* t = StartTarget(Options(1, 2000, /*reconnect_ms=*/100));
  const uint64_t old_size = kVolumeSize, new_size = 2 * kVolumeSize;
  EXPECT_EQ(WritePattern(t, old_size, 4096, 0x11), StatusCode::kOutOfRange);
  for (auto& n : nodes_) ASSERT_TRUE(n->server->ResizeVolume(kVolume, new_size).ok());
  // Replicas already larger: the target still serves the old size.
  ASSERT_EQ(WritePattern(t, old_size - 4096, 4096, 0x12), StatusCode::kOk);
  EXPECT_EQ(t->size(), old_size);
  EXPECT_EQ(t->Resize(old_size - 4096).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(t->Resize(new_size + 512).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(t->Resize(new_size).ok());
  ASSERT_TRUE(t->Resize(new_size).ok());  // repeated
  EXPECT_EQ(t->size(), new_size);
  ASSERT_EQ(WritePattern(t, new_size - 8192, 8192, 0x13), StatusCode::kOk);
  uint8_t* b = Buf(8192);
  ASSERT_EQ(Do(t, BlockOp::kRead, new_size - 8192, 8192, b), StatusCode::kOk);
  EXPECT_EQ(b[0], 0x13);
  EXPECT_EQ(b[8191], 0x13);
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  // A replica reconnecting at the new size is rebuilt and serves again.
  nodes_[2]->server->Stop();
  ASSERT_EQ(WritePattern(t, old_size, 4096, 0x14), StatusCode::kOk);
  nodes_[2]->StartServer();
  ASSERT_TRUE(RunUntil([&] { return t->state() == TargetState::kReady; }, 20000))
      << t->GetStatus().last_error;
  EXPECT_EQ(t->size(), new_size);
}

TEST_F(VolumeTargetTest, FaultedReplicaIsSkippedAndSurvivorsMoveToNewGeneration) {
  AddNodes(3);
  VolumeTarget* t = NewTarget(1);
  ASSERT_EQ(WritePattern(t, 0, 65536, 0x11), StatusCode::kOk);
  uint64_t g0 = t->GetStatus().generation;

  nodes_[2]->server->Stop();  // replica 2 goes away
  // Written after the fault: acknowledged only once the survivors are at a
  // newer generation with the range in their dirty maps.
  ASSERT_EQ(WritePattern(t, 1 << 20, 65536, 0x22), StatusCode::kOk);
  ASSERT_EQ(WritePattern(t, 4 << 20, 4096, 0x33), StatusCode::kOk);
  TargetStatus st = t->GetStatus();
  EXPECT_EQ(st.state, TargetState::kDegraded);
  EXPECT_EQ(st.replicas[2].state, ReplicaState::kFaulted);
  EXPECT_FALSE(st.replicas[2].last_error.empty());
  EXPECT_GT(st.generation, g0);
  for (int i = 0; i < 2; ++i) {
    const replica::ReplicaMetadata& md = nodes_[i]->replica()->metadata();
    EXPECT_EQ(md.generation, st.generation) << "survivor " << i;
    // The regions written while degraded are in the survivors' dirty maps.
    ASSERT_GT(md.dirty_region_size, 0u);
    auto dirty = [&](uint64_t off) {
      uint64_t region = off / md.dirty_region_size;
      return (md.dirty_map[region / 8] >> (region % 8)) & 1;
    };
    EXPECT_TRUE(dirty(1 << 20)) << "survivor " << i;
    EXPECT_TRUE(dirty(4 << 20)) << "survivor " << i;
  }
  EXPECT_EQ(nodes_[2]->replica()->metadata().generation, g0);
  // The data is on the survivors.
  for (int i = 0; i < 2; ++i) {
    std::vector<uint8_t> d = nodes_[i]->Data();
    EXPECT_EQ(d[1 << 20], 0x22);
    EXPECT_EQ(d[4 << 20], 0x33);
  }
}

TEST_F(VolumeTargetTest, NoHealthyReplicaFailsEveryRequest) {
  AddNodes(2);
  VolumeTarget* t = NewTarget(1);
  nodes_[0]->server->Stop();
  nodes_[1]->server->Stop();
  uint8_t* b = Buf(4096);
  std::memset(b, 0x5a, 4096);
  StatusCode w = Do(t, BlockOp::kWrite, 0, 4096, b);
  EXPECT_NE(w, StatusCode::kOk);
  EXPECT_EQ(t->state(), TargetState::kFailed);
  EXPECT_EQ(Do(t, BlockOp::kWrite, 0, 4096, b), StatusCode::kUnavailable);
  EXPECT_EQ(Do(t, BlockOp::kRead, 0, 4096, b), StatusCode::kUnavailable);
  EXPECT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kUnavailable);
}

TEST_F(VolumeTargetTest, LowerGenerationReplicaIsStaleAndNeverRead) {
  AddNodes(3);
  // Replica 2 missed writes: its generation is behind the others'. (Replicas
  // at one generation share its id; generation ids tell histories apart.)
  for (int i = 0; i < 3; ++i) nodes_[i]->server->Stop();
  ASSERT_TRUE(nodes_[0]->replica()->SetGeneration(5, false, 0xAAAA, {0xBBBB}).ok());
  ASSERT_TRUE(nodes_[1]->replica()->SetGeneration(5, false, 0xAAAA, {0xBBBB}).ok());
  ASSERT_TRUE(nodes_[2]->replica()->SetGeneration(4, false, 0xBBBB, {}).ok());
  for (auto& n : nodes_) n->StartServer();
  VolumeTarget* t = NewTarget(1);
  TargetStatus st = t->GetStatus();
  EXPECT_EQ(st.state, TargetState::kDegraded);
  EXPECT_EQ(st.replicas[2].state, ReplicaState::kStale);
  EXPECT_EQ(st.replicas[0].state, ReplicaState::kHealthy);
  uint8_t* b = Buf(4096);
  for (int i = 0; i < 20; ++i) ASSERT_EQ(Do(t, BlockOp::kRead, 0, 4096, b), StatusCode::kOk);
  st = t->GetStatus();
  EXPECT_EQ(st.replicas[2].reads, 0u);
  // The first write moved the healthy ones past generation 5.
  ASSERT_EQ(WritePattern(t, 0, 4096, 0x44), StatusCode::kOk);
  EXPECT_GT(nodes_[0]->replica()->metadata().generation, 5u);
  EXPECT_EQ(nodes_[2]->replica()->metadata().generation, 4u);
  EXPECT_EQ(nodes_[2]->Data()[0], 0);
}

TEST_F(VolumeTargetTest, FailedReadIsRetriedOnAnotherReplica) {
  AddNodes(2);
  ASSERT_NE(NewTarget(1), nullptr);
  VolumeTarget* t = targets_.back().get();
  ASSERT_EQ(WritePattern(t, 8192, 4096, 0x66), StatusCode::kOk);
  // Make replica 0 the preferred (local) one, then take it away.
  targets_.clear();
  TargetOptions o;
  o.volume_id = kVolume;
  o.epoch = 2;
  o.token = kToken;
  o.replicas = {{"127.0.0.1", nodes_[0]->port, true}, {"127.0.0.1", nodes_[1]->port, false}};
  targets_.push_back(std::make_unique<VolumeTarget>(&loop_, o));
  t = targets_.back().get();
  ASSERT_TRUE(t->Start().ok());
  ASSERT_TRUE(RunUntil([&] { return t->state() != TargetState::kStarting; }));
  ASSERT_EQ(t->state(), TargetState::kReady);
  uint8_t* b = Buf(4096);
  Io io;
  io.req.op = BlockOp::kRead;
  io.req.offset = 8192;
  io.req.length = 4096;
  io.req.buf = b;
  t->Submit(&io.req);
  nodes_[0]->server->Stop();
  ASSERT_TRUE(RunUntil([&] { return io.done; }));
  EXPECT_EQ(io.req.status, StatusCode::kOk);
  EXPECT_EQ(b[0], 0x66);
  TargetStatus st = t->GetStatus();
  EXPECT_EQ(st.replicas[0].state, ReplicaState::kFaulted);
  EXPECT_GE(st.replicas[1].reads, 1u);
}

TEST_F(VolumeTargetTest, NewerEpochFencesOlderTargetAndItsWritesNeverLand) {
  AddNodes(3);
  VolumeTarget* a = NewTarget(1);
  ASSERT_EQ(WritePattern(a, 0, 4096, 0x01), StatusCode::kOk);
  VolumeTarget* b = NewTarget(2);
  ASSERT_NE(b->state(), TargetState::kFailed);
  // Every write of the old target fails from now on; none of its data lands.
  for (int i = 0; i < 5; ++i) {
    EXPECT_NE(WritePattern(a, 65536, 4096, 0xEE), StatusCode::kOk) << "write " << i;
  }
  EXPECT_TRUE(a->state() == TargetState::kFenced || a->state() == TargetState::kFailed)
      << TargetStateName(a->state());
  uint8_t* buf = Buf(4096);
  ASSERT_EQ(Do(b, BlockOp::kRead, 65536, 4096, buf), StatusCode::kOk);
  EXPECT_EQ(buf[0], 0);
  ASSERT_EQ(Do(b, BlockOp::kRead, 0, 4096, buf), StatusCode::kOk);
  EXPECT_EQ(buf[0], 0x01);
  for (auto& n : nodes_) EXPECT_EQ(n->Data()[65536], 0);
  // A target with the old epoch cannot come back.
  VolumeTarget* c = NewTarget(1);
  EXPECT_TRUE(c->state() == TargetState::kFenced || c->state() == TargetState::kFailed);
}

TEST_F(VolumeTargetTest, ShutdownFlushesAndCompletes) {
  AddNodes(2);
  VolumeTarget* t = NewTarget(1);
  ASSERT_EQ(WritePattern(t, 0, 4096, 0x77), StatusCode::kOk);
  bool done = false;
  t->Shutdown([](void* arg) { *static_cast<bool*>(arg) = true; }, &done);
  ASSERT_TRUE(RunUntil([&] { return done; }));
  uint8_t* b = Buf(4096);
  EXPECT_NE(Do(t, BlockOp::kWrite, 0, 4096, b), StatusCode::kOk);
}

TEST_F(VolumeTargetTest, OverlappingWritesInFlightTogetherLeaveReplicasIdentical) {
  AddNodes(3);
  VolumeTarget* t = NewTarget(1);
  constexpr int kRounds = 100, kWriters = 4;
  std::vector<uint8_t*> bufs;
  for (int i = 0; i < kWriters; ++i) bufs.push_back(Buf(65536));
  for (int round = 0; round < kRounds; ++round) {
    Io io[kWriters];
    uint64_t off = static_cast<uint64_t>(round % 32) * 65536;
    for (int i = 0; i < kWriters; ++i) {
      std::memset(bufs[i], round * kWriters + i + 1, 65536);
      io[i].req.op = BlockOp::kWrite;
      // Overlapping, not identical, ranges: every pair shares blocks.
      io[i].req.offset = off + static_cast<uint64_t>(i) * 4096;
      io[i].req.length = 65536 - 4096 * kWriters;
      io[i].req.buf = bufs[i];
      t->Submit(&io[i].req);
    }
    ASSERT_TRUE(RunUntil([&] {
      for (auto& x : io) {
        if (!x.done) return false;
      }
      return true;
    }));
    for (auto& x : io) ASSERT_EQ(x.req.status, StatusCode::kOk);
  }
  ASSERT_EQ(Do(t, BlockOp::kFlush, 0, 0, nullptr), StatusCode::kOk);
  std::vector<uint8_t> first = nodes_[0]->Data();
  for (size_t i = 1; i < nodes_.size(); ++i) {
    EXPECT_TRUE(nodes_[i]->Data() == first) << "replica " << i << " differs";
  }
}

// Issue 9: FUA was dropped for TRIM and WRITE_ZEROES (the data protocol has
// FUA on WRITE only), so the NBD reply went out before durability. With FUA
// the target flushes every replica that holds the change before it answers.
TEST_F(VolumeTargetTest, FuaTrimAndWriteZeroesAreFlushedOnEveryReplicaBeforeTheReply) {
  AddNodes(2);
  CountingProxy p0(nodes_[0]->port), p1(nodes_[1]->port);
  TargetOptions o = Options(1);
  o.replicas = {{"127.0.0.1", p0.port(), false}, {"127.0.0.1", p1.port(), false}};
  VolumeTarget* t = StartTarget(o);
  ASSERT_EQ(WritePattern(t, 0, 65536, 0x61), StatusCode::kOk);
  uint64_t f0 = p0.Count(protocol::Opcode::kFlush), f1 = p1.Count(protocol::Opcode::kFlush);
  ASSERT_EQ(Do(t, BlockOp::kTrim, 0, 8192, nullptr), StatusCode::kOk);
  EXPECT_EQ(p0.Count(protocol::Opcode::kFlush), f0) << "a TRIM without FUA needs no flush";
  ASSERT_EQ(Do(t, BlockOp::kTrim, 8192, 8192, nullptr, kBlockFua), StatusCode::kOk);
  EXPECT_EQ(p0.Count(protocol::Opcode::kFlush), f0 + 1);
  EXPECT_EQ(p1.Count(protocol::Opcode::kFlush), f1 + 1);
  ASSERT_EQ(Do(t, BlockOp::kWriteZeroes, 16384, 8192, nullptr, kBlockFua), StatusCode::kOk);
  EXPECT_EQ(p0.Count(protocol::Opcode::kFlush), f0 + 2);
  EXPECT_EQ(p1.Count(protocol::Opcode::kFlush), f1 + 2);
  for (auto& n : nodes_) {
    std::vector<uint8_t> d = n->Data();
    for (size_t i = 0; i < 24576; ++i) ASSERT_EQ(d[i], 0) << i;
    EXPECT_EQ(d[24576], 0x61);
  }
}

}  // namespace
}  // namespace tandem::target
