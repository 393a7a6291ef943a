#include "replica-engine/replica/replica.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/unique_fd.h"
#include "replica-engine/backend/backend_factory.h"

namespace tandem::replica {
namespace {

constexpr uint64_t kSize = 64ull << 20;
constexpr uint64_t kRegionSize = 64 * 1024;  // ReplicaConfig's default dirty_region_size

bool Exists(const std::string& path) {
  struct stat sb;
  return ::stat(path.c_str(), &sb) == 0;
}

class ReplicaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // O_DIRECT needs a real filesystem; /tmp may be tmpfs.
    char tmpl[] = "/var/tmp/tandem-replica-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/vol-1";
    auto b = backend::BackendFactory::Create("auto");
    if (!b.ok()) GTEST_SKIP() << "no backend: " << b.status().ToString();
    backend_ = std::move(*b);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  ReplicaConfig Config() const {
    ReplicaConfig c;
    c.volume_id = "vol-1";
    c.replica_id = "r1";
    c.size = kSize;
    return c;
  }

  // The record on disk, read independently of any open Replica.
  ReplicaMetadata OnDisk() {
    auto f = MetadataFile::Open(dir_ + "/meta");
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    return f.ok() ? (*f)->current() : ReplicaMetadata{};
  }

  std::string root_;
  std::string dir_;
  std::unique_ptr<backend::StorageBackend> backend_;
};

TEST_F(ReplicaTest, CreateMakesSparseDataFileAndMetadata) {
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GE((*r)->fd(), 0);
  EXPECT_TRUE((*r)->was_clean());
  EXPECT_EQ((*r)->dir(), dir_);
  const ReplicaMetadata& md = (*r)->metadata();
  EXPECT_EQ(md.volume_id, "vol-1");
  EXPECT_EQ(md.replica_id, "r1");
  EXPECT_EQ(md.size, kSize);
  EXPECT_EQ(md.block_size, 4096u);
  EXPECT_EQ(md.generation, 0u);
  EXPECT_EQ(md.highest_epoch, 0u);
  EXPECT_FALSE(md.clean_shutdown);
  EXPECT_EQ(md.dirty_region_size, 64u * 1024);
  EXPECT_EQ(md.dirty_map.size(), kSize / (64 * 1024) / 8);

  struct stat sb;
  ASSERT_EQ(::stat((dir_ + "/data").c_str(), &sb), 0);
  EXPECT_EQ(static_cast<uint64_t>(sb.st_size), kSize);
  EXPECT_LE(sb.st_blocks * 512, 64 * 1024) << "data file is not sparse";
  EXPECT_TRUE(Exists(dir_ + "/meta"));
  EXPECT_EQ(OnDisk(), md);
}

mode_t ModeOf(const std::string& path) {
  struct stat sb;
  EXPECT_EQ(::stat(path.c_str(), &sb), 0) << path;
  return sb.st_mode & 07777;
}

TEST_F(ReplicaTest, FilesAndDirectoryArePrivateWhateverTheUmask) {
  // A permissive umask must not widen what the engine creates.
  const mode_t old_umask = ::umask(0);
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ::umask(old_umask);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(ModeOf(dir_), 0700u);
  EXPECT_EQ(ModeOf(dir_ + "/meta"), 0600u);
  EXPECT_EQ(ModeOf(dir_ + "/data"), 0600u);
}

TEST_F(ReplicaTest, OpenTightensModesAnOlderEngineLeft) {
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->Close().ok());
  r->reset();
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  ASSERT_EQ(::chmod((dir_ + "/meta").c_str(), 0644), 0);
  ASSERT_EQ(::chmod((dir_ + "/data").c_str(), 0664), 0);
  auto o = Replica::Open(backend_.get(), dir_);
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(ModeOf(dir_), 0700u);
  EXPECT_EQ(ModeOf(dir_ + "/meta"), 0600u);
  EXPECT_EQ(ModeOf(dir_ + "/data"), 0600u);
}

TEST_F(ReplicaTest, ReopenAfterCloseIsClean) {
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok());
  ReplicaMetadata created = (*r)->metadata();
  ASSERT_TRUE((*r)->Close().ok());
  EXPECT_TRUE((*r)->Close().ok());  // idempotent
  EXPECT_EQ((*r)->fd(), -1);
  EXPECT_TRUE(OnDisk().clean_shutdown);
  r->reset();

  auto o = Replica::Open(backend_.get(), dir_);
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_TRUE((*o)->was_clean());
  EXPECT_GE((*o)->fd(), 0);
  EXPECT_EQ((*o)->metadata(), created);
  // Open marks the replica in use, so a crash from here on is detected.
  EXPECT_FALSE((*o)->metadata().clean_shutdown);
  EXPECT_FALSE(OnDisk().clean_shutdown);
}

TEST_F(ReplicaTest, ReopenWithoutCloseIsUnclean) {
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok());
  r->reset();  // "crash": destroyed without Close()
  auto o = Replica::Open(backend_.get(), dir_);
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_FALSE((*o)->was_clean());
  ASSERT_TRUE((*o)->Close().ok());
  o->reset();

  auto p = Replica::Open(backend_.get(), dir_);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE((*p)->was_clean());
  p->reset();
  auto q = Replica::Open(backend_.get(), dir_);
  ASSERT_TRUE(q.ok());
  EXPECT_FALSE((*q)->was_clean());
}

TEST_F(ReplicaTest, EpochAndGenerationPersist) {
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->SetHighestEpoch(17).ok());
  ASSERT_TRUE((*r)->SetGeneration(3).ok());
  EXPECT_EQ((*r)->metadata().highest_epoch, 17u);
  EXPECT_EQ((*r)->metadata().generation, 3u);
  EXPECT_EQ(OnDisk().highest_epoch, 17u);
  r->reset();  // also without a clean Close

  auto o = Replica::Open(backend_.get(), dir_);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ((*o)->metadata().highest_epoch, 17u);
  EXPECT_EQ((*o)->metadata().generation, 3u);
  ASSERT_TRUE((*o)->SetHighestEpoch(18).ok());
  ASSERT_TRUE((*o)->Close().ok());
  EXPECT_EQ((*o)->SetHighestEpoch(19).code(), StatusCode::kFailedPrecondition);
  o->reset();

  auto p = Replica::Open(backend_.get(), dir_);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)->metadata().highest_epoch, 18u);
  EXPECT_EQ((*p)->metadata().generation, 3u);
}

TEST_F(ReplicaTest, GenerationIdsAndEpochOwnerPersist) {
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->generation_id(), 0u);  // never set
  EXPECT_TRUE((*r)->generation_history().empty());

  // Without a record (an older target): a growing number draws a fresh
  // non-zero id and pushes the previous one (none the first time).
  ASSERT_TRUE((*r)->SetGeneration(1, false).ok());
  const uint64_t id1 = (*r)->generation_id();
  EXPECT_NE(id1, 0u);
  EXPECT_TRUE((*r)->generation_history().empty());
  ASSERT_TRUE((*r)->SetGeneration(2, false).ok());
  const uint64_t id2 = (*r)->generation_id();
  EXPECT_NE(id2, 0u);
  EXPECT_NE(id2, id1);
  EXPECT_EQ((*r)->generation_history(), std::vector<uint64_t>{id1});
  // An equal number keeps the id (turning tracking on is no new generation).
  ASSERT_TRUE((*r)->SetGeneration(2, true).ok());
  EXPECT_EQ((*r)->generation_id(), id2);
  EXPECT_EQ((*r)->generation_history(), std::vector<uint64_t>{id1});

  // With a record: exactly what the target says, replacing the history.
  const std::vector<uint64_t> history = {70, 60, 50};
  ASSERT_TRUE((*r)->SetGeneration(3, true, 80, history).ok());
  EXPECT_EQ((*r)->generation_id(), 80u);
  EXPECT_EQ((*r)->generation_history(), history);
  EXPECT_TRUE((*r)->tracking_dirty());
  // An equal number with another record replaces it; a lower one is refused.
  ASSERT_TRUE((*r)->SetGeneration(3, true, 81, {80}).ok());
  EXPECT_EQ((*r)->generation_id(), 81u);
  EXPECT_EQ((*r)->SetGeneration(2, true, 99, {}).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*r)->SetGeneration(4, true, 0, {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*r)->SetGeneration(4, true, 5, {1, 0}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*r)->SetGeneration(4, true, 5, std::vector<uint64_t>(9, 1)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*r)->generation_id(), 81u);
  EXPECT_EQ((*r)->metadata().generation, 3u);

  // The history is capped at the newest kMaxGenerationHistory ids.
  for (uint64_t g = 4; g < 4 + kMaxGenerationHistory + 2; ++g) {
    ASSERT_TRUE((*r)->SetGeneration(g, true).ok());
  }
  EXPECT_EQ((*r)->generation_history().size(), kMaxGenerationHistory);

  ASSERT_TRUE((*r)->SetHighestEpoch(7, 0xABCDull).ok());
  EXPECT_EQ((*r)->epoch_owner(), 0xABCDull);
  ASSERT_TRUE((*r)->SetHighestEpoch(8).ok());  // keeps the owner
  EXPECT_EQ((*r)->epoch_owner(), 0xABCDull);
  const uint64_t id = (*r)->generation_id();
  const std::vector<uint64_t> hist = (*r)->generation_history();
  r->reset();  // crash

  ReplicaMetadata disk = OnDisk();
  EXPECT_EQ(disk.generation_id, id);
  EXPECT_EQ(disk.generation_history, hist);
  EXPECT_EQ(disk.highest_epoch, 8u);
  EXPECT_EQ(disk.epoch_owner, 0xABCDull);
  auto o = Replica::Open(backend_.get(), dir_);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ((*o)->generation_id(), id);
  EXPECT_EQ((*o)->generation_history(), hist);
  EXPECT_EQ((*o)->epoch_owner(), 0xABCDull);
}

constexpr uint64_t kExtent = 4u << 20;  // ReplicaConfig's default activity_extent_size

bool ActiveOnDisk(const ReplicaMetadata& md, uint64_t e) {
  return e / 8 < md.activity_map.size() && (md.activity_map[e / 8] >> (e % 8)) & 1;
}

TEST_F(ReplicaTest, ActivityLogMarksBeforeTheWriteAndRetiresAfterAFlush) {
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok());
  Replica& rep = **r;
  EXPECT_EQ(rep.activity_extent_size(), kExtent);
  EXPECT_EQ(rep.activity_map().size(), 2u);  // 64 MiB / 4 MiB = 16 extents
  EXPECT_EQ(OnDisk().activity_extent_size, kExtent);

  // First touch of extent 0: must be persisted before the write goes out.
  EXPECT_FALSE(rep.NoteWrite(0, 4096));
  EXPECT_EQ(rep.activity_count(), 1u);
  EXPECT_FALSE(ActiveOnDisk(OnDisk(), 0));
  ASSERT_TRUE(rep.SyncDirty().ok());
  EXPECT_TRUE(ActiveOnDisk(OnDisk(), 0));
  // Already durable: free. A write across extents 1 and 2 marks both.
  EXPECT_TRUE(rep.NoteWrite(8192, 4096));
  EXPECT_FALSE(rep.NoteWrite(2 * kExtent - 4096, 8192));
  ASSERT_TRUE(rep.SyncDirty().ok());
  ReplicaMetadata disk = OnDisk();
  EXPECT_TRUE(ActiveOnDisk(disk, 1) && ActiveOnDisk(disk, 2));
  EXPECT_EQ(rep.activity_count(), 3u);

  uint64_t t = 1000000000ull;
  // Nothing retires without a completed FLUSH, nor with one received while
  // the writes were still in flight.
  EXPECT_EQ(rep.RetireActivity(t, 0), 0u);
  const uint64_t early = rep.NoteFlushReceived();
  rep.NoteWriteDone(0, 4096);
  rep.NoteWriteDone(8192, 4096);
  rep.NoteWriteDone(2 * kExtent - 4096, 8192);
  rep.NoteFlushDone(early, t);
  EXPECT_EQ(rep.RetireActivity(t, 0), 0u);
  // A FLUSH received after they completed, but a new write to extent 2
  // arrives after it: extents 0 and 1 retire, 2 stays — once the FLUSH is
  // `delay` old.
  const uint64_t flush = rep.NoteFlushReceived();
  EXPECT_TRUE(rep.NoteWrite(2 * kExtent, 4096));
  rep.NoteFlushDone(flush, t);
  EXPECT_EQ(rep.RetireActivity(t + 500, 1000), 0u);  // too recent
  EXPECT_EQ(rep.RetireActivity(t + 1000, 1000), 2u);
  EXPECT_EQ(rep.activity_count(), 1u);
  rep.NoteWriteDone(2 * kExtent, 4096);
  EXPECT_EQ(rep.RetireActivity(t + 2000, 1000), 0u);  // its write completed after the FLUSH
  // Cleared in memory only; the disk keeps the bits until the next persist
  // (here a synchronous metadata update).
  EXPECT_TRUE(rep.activity_clear_pending());
  EXPECT_TRUE(ActiveOnDisk(OnDisk(), 0));
  ASSERT_TRUE(rep.SetHighestEpoch(3).ok());
  EXPECT_FALSE(rep.activity_clear_pending());
  disk = OnDisk();
  EXPECT_FALSE(ActiveOnDisk(disk, 0) || ActiveOnDisk(disk, 1));
  EXPECT_TRUE(ActiveOnDisk(disk, 2));
  // Re-touching a retired extent needs a persist again.
  EXPECT_FALSE(rep.NoteWrite(0, 4096));
  ASSERT_TRUE(rep.SyncDirty().ok());
  rep.NoteWriteDone(0, 4096);

  // A clean shutdown keeps the log (a peer may lack these writes; the next
  // target resyncs them).
  ASSERT_TRUE(rep.Close().ok());
  r->reset();
  disk = OnDisk();
  EXPECT_TRUE(disk.clean_shutdown);
  EXPECT_TRUE(ActiveOnDisk(disk, 0));
  EXPECT_TRUE(ActiveOnDisk(disk, 2));
}

TEST_F(ReplicaTest, ActivityLogOfACrashedRunIsKeptUntilTheGenerationMovesOn) {
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->SetGeneration(4).ok());
  EXPECT_FALSE((*r)->NoteWrite(5 * kExtent, 4096));  // acknowledged, never flushed
  ASSERT_TRUE((*r)->SyncDirty().ok());
  (*r)->NoteWriteDone(5 * kExtent, 4096);
  r->reset();  // the host crashes

  auto o = Replica::Open(backend_.get(), dir_);
  ASSERT_TRUE(o.ok());
  Replica& rep = **o;
  EXPECT_FALSE(rep.was_clean());
  EXPECT_EQ(rep.activity_count(), 1u);  // what a target must resync
  // FLUSHes of this run do not retire it (the write may be missing here)...
  const uint64_t f = rep.NoteFlushReceived();
  rep.NoteFlushDone(f, 10);
  EXPECT_EQ(rep.RetireActivity(20, 0), 0u);
  // ...nor does a clean shutdown.
  ASSERT_TRUE(rep.Close().ok());
  o->reset();
  EXPECT_TRUE(ActiveOnDisk(OnDisk(), 5));
  auto p = Replica::Open(backend_.get(), dir_);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)->activity_count(), 1u);
  // An equal generation is no proof of resync; a higher one is (the target
  // raises it once the replica holds the current data).
  ASSERT_TRUE((*p)->SetGeneration(4, true).ok());
  uint64_t f2 = (*p)->NoteFlushReceived();
  (*p)->NoteFlushDone(f2, 10);
  EXPECT_EQ((*p)->RetireActivity(20, 0), 0u);
  ASSERT_TRUE((*p)->SetGeneration(5, true, 0x55, {}).ok());
  EXPECT_EQ((*p)->RetireActivity(30, 0), 1u);
  EXPECT_EQ((*p)->activity_count(), 0u);
}

TEST_F(ReplicaTest, ActivityExtentConfig) {
  ReplicaConfig c = Config();
  c.activity_extent_size = 3000;
  EXPECT_EQ(Replica::Create(backend_.get(), dir_, c).status().code(), StatusCode::kInvalidArgument);
  // Smaller than the dirty region: raised to it.
  c.activity_extent_size = 8192;
  c.dirty_region_size = 1u << 20;
  {
    auto r = Replica::Create(backend_.get(), dir_, c);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ((*r)->activity_extent_size(), 1u << 20);
  }
  std::filesystem::remove_all(dir_);
  // 0: no activity log; without tracking a write needs no metadata at all.
  c = Config();
  c.activity_extent_size = 0;
  auto r = Replica::Create(backend_.get(), dir_, c);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->activity_extent_size(), 0u);
  EXPECT_TRUE((*r)->activity_map().empty());
  EXPECT_TRUE((*r)->NoteWrite(0, 4096));
  (*r)->NoteWriteDone(0, 4096);
  EXPECT_EQ((*r)->RetireActivity(1, 0), 0u);
}

TEST_F(ReplicaTest, GenerationsOnlyGrow) {
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->SetGeneration(5, false).ok());
  EXPECT_EQ((*r)->SetGeneration(4, false).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*r)->SetGeneration(4, true).code(), StatusCode::kFailedPrecondition);
  EXPECT_FALSE((*r)->tracking_dirty());
  ASSERT_TRUE((*r)->SetGeneration(5, false).ok());  // equal: idempotent
  ASSERT_TRUE((*r)->SetGeneration(5, true).ok());   // equal, tracking on
  EXPECT_TRUE((*r)->tracking_dirty());
  EXPECT_EQ((*r)->metadata().generation, 5u);
  EXPECT_EQ(OnDisk().generation, 5u);
  EXPECT_TRUE(OnDisk().tracking_dirty);
}

constexpr uint64_t kRegion = 64 * 1024;

std::vector<uint64_t> DirtyRegions(const Replica& r) {
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < kSize / kRegion; ++i) {
    if (r.IsRegionDirty(i)) out.push_back(i);
  }
  return out;
}

std::vector<uint64_t> DirtyRegions(const ReplicaMetadata& md) {
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < md.dirty_map.size() * 8; ++i) {
    if (md.dirty_map[i / 8] & (1u << (i % 8))) out.push_back(i);
  }
  return out;
}

TEST_F(ReplicaTest, NoteWriteAsksForOneSyncPerNewRegionAndTrackingSurvivesCrash) {
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->SetGeneration(2, true).ok());
  EXPECT_EQ((*r)->dirty_map().size(), kSize / kRegion / 8);  // 1 bit per region
  EXPECT_FALSE((*r)->NoteWrite(0, 4096));                    // region 0 is new: must sync first
  EXPECT_FALSE((*r)->NoteWrite(4096, 4096));                 // region 0 set, but not durable yet
  ASSERT_TRUE((*r)->SyncDirty().ok());
  EXPECT_TRUE((*r)->NoteWrite(8192, 4096));                 // durable: straight through
  EXPECT_FALSE((*r)->NoteWrite(3 * kRegion - 4096, 8192));  // regions 2 and 3
  EXPECT_FALSE((*r)->NoteWrite(kSize - 4096, 4096));        // the last region
  EXPECT_EQ(DirtyRegions(**r), (std::vector<uint64_t>{0, 2, 3, kSize / kRegion - 1}));
  // Only region 0 was persisted when the "crash" happens.
  EXPECT_EQ(DirtyRegions(OnDisk()), (std::vector<uint64_t>{0}));
  ASSERT_TRUE((*r)->SyncDirty().ok());
  EXPECT_EQ(DirtyRegions(OnDisk()), (std::vector<uint64_t>{0, 2, 3, kSize / kRegion - 1}));
  r->reset();  // destroyed without Close()

  auto o = Replica::Open(backend_.get(), dir_);
  ASSERT_TRUE(o.ok());
  EXPECT_FALSE((*o)->was_clean());
  EXPECT_TRUE((*o)->tracking_dirty());
  EXPECT_EQ((*o)->metadata().generation, 2u);
  EXPECT_EQ(DirtyRegions(**o), (std::vector<uint64_t>{0, 2, 3, kSize / kRegion - 1}));
  // Tracking off keeps the map.
  ASSERT_TRUE((*o)->SetGeneration(2, false).ok());
  EXPECT_FALSE(OnDisk().tracking_dirty);
  EXPECT_EQ(DirtyRegions(OnDisk()), (std::vector<uint64_t>{0, 2, 3, kSize / kRegion - 1}));
}

TEST_F(ReplicaTest, MarkAndClearDirtyPersistAndCheckTheirRange) {
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->MarkDirty(kRegion + 4096, 2 * kRegion).ok());  // touches regions 1..3
  EXPECT_EQ(DirtyRegions(OnDisk()), (std::vector<uint64_t>{1, 2, 3}));
  ASSERT_TRUE((*r)->MarkDirty(10 * kRegion, 4096).ok());
  EXPECT_EQ(DirtyRegions(OnDisk()), (std::vector<uint64_t>{1, 2, 3, 10}));
  // Clearing must not drop a region only partly covered.
  EXPECT_EQ((*r)->ClearDirty(kRegion + 4096, kRegion).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*r)->ClearDirty(kRegion, kRegion + 4096).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE((*r)->ClearDirty(2 * kRegion, 2 * kRegion).ok());
  EXPECT_EQ(DirtyRegions(OnDisk()), (std::vector<uint64_t>{1, 10}));
  EXPECT_EQ((*r)->MarkDirty(kSize, 4096).code(), StatusCode::kOutOfRange);
  EXPECT_EQ((*r)->MarkDirty(0, 0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*r)->ClearDirty(kSize - kRegion, 2 * kRegion).code(), StatusCode::kOutOfRange);
  ASSERT_TRUE((*r)->ClearDirty(0, kSize).ok());
  EXPECT_TRUE(DirtyRegions(OnDisk()).empty());
  EXPECT_TRUE(DirtyRegions(**r).empty());
}

TEST_F(ReplicaTest, ClearDirtyAcceptsAPartialLastRegion) {
  ReplicaConfig c = Config();
  c.size = 10 * kRegion + 8192;  // 11 regions, the last one 8 KiB
  auto r = Replica::Create(backend_.get(), dir_, c);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->MarkDirty(c.size - 4096, 4096).ok());
  EXPECT_TRUE((*r)->IsRegionDirty(10));
  ASSERT_TRUE((*r)->ClearDirty(10 * kRegion, 8192).ok());
  EXPECT_FALSE((*r)->IsRegionDirty(10));
}

TEST_F(ReplicaTest, DirtySinceGenerationAndRebuildCursorPersist) {
  {
    auto r = Replica::Create(backend_.get(), dir_, Config());
    ASSERT_TRUE(r.ok());
    Replica& rep = **r;
    ASSERT_TRUE(rep.SetGeneration(3, true).ok());
    EXPECT_EQ(rep.dirty_since_generation(), 3u);
    ASSERT_TRUE(rep.SetGeneration(5, true).ok());  // still tracking: unchanged
    EXPECT_EQ(rep.dirty_since_generation(), 3u);
    ASSERT_TRUE(rep.SetRebuildCursor(8 << 20, 4).ok());
    EXPECT_EQ(rep.rebuild_cursor(), 8u << 20);
    EXPECT_EQ(rep.rebuild_generation(), 4u);
    EXPECT_EQ(rep.SetRebuildCursor(kSize + 4096, 4).code(), StatusCode::kOutOfRange);
    EXPECT_EQ(rep.rebuild_cursor(), 8u << 20);
    // No Close(): the values must be on disk already.
  }
  EXPECT_EQ(OnDisk().dirty_since_generation, 3u);
  EXPECT_EQ(OnDisk().rebuild_cursor, 8u << 20);
  auto r = Replica::Open(backend_.get(), dir_);
  ASSERT_TRUE(r.ok());
  Replica& rep = **r;
  EXPECT_TRUE(rep.tracking_dirty());
  EXPECT_EQ(rep.dirty_since_generation(), 3u);
  EXPECT_EQ(rep.rebuild_cursor(), 8u << 20);
  EXPECT_EQ(rep.rebuild_generation(), 4u);
  ASSERT_TRUE(rep.SetGeneration(5, false).ok());  // off: 0
  EXPECT_EQ(rep.dirty_since_generation(), 0u);
  ASSERT_TRUE(rep.SetGeneration(6, true).ok());  // on again: the new generation
  EXPECT_EQ(rep.dirty_since_generation(), 6u);
  ASSERT_TRUE(rep.SetRebuildCursor(0, 9).ok());  // cleared, generation with it
  EXPECT_EQ(rep.rebuild_cursor(), 0u);
  EXPECT_EQ(rep.rebuild_generation(), 0u);
  EXPECT_EQ(OnDisk().rebuild_cursor, 0u);
  EXPECT_EQ(OnDisk().dirty_since_generation, 6u);
  ASSERT_TRUE(rep.Close().ok());
}

// The asynchronous persist the server uses for first touches, driven here
// by hand through the backend.
TEST_F(ReplicaTest, ResizeGrowsDataAndMapsDurablyAndKeepsTheBits) {
  ReplicaConfig cfg = Config();
  cfg.activity_extent_size = 4u << 20;
  auto r = Replica::Create(backend_.get(), dir_, cfg);
  ASSERT_TRUE(r.ok());
  Replica& rep = **r;
  ASSERT_TRUE(rep.MarkDirty(3 * kRegionSize, 4096).ok());
  ASSERT_TRUE(rep.SetGeneration(1, true).ok());
  EXPECT_FALSE(rep.NoteWrite(kSize - 4096, 4096));  // last region, last extent
  rep.NoteWriteDone(kSize - 4096, 4096);
  ASSERT_TRUE(rep.SyncDirty().ok());

  ASSERT_TRUE(rep.Resize(4 * kSize).ok());
  EXPECT_EQ(rep.metadata().size, 4 * kSize);
  EXPECT_EQ(rep.summary().size, 4 * kSize);
  struct stat sb;
  ASSERT_EQ(::stat((dir_ + "/data").c_str(), &sb), 0);
  EXPECT_EQ(static_cast<uint64_t>(sb.st_size), 4 * kSize);
  ReplicaMetadata md = OnDisk();
  EXPECT_EQ(md.size, 4 * kSize);
  ASSERT_EQ(md.dirty_map.size(), 4 * kSize / kRegionSize / 8);
  EXPECT_TRUE(rep.IsRegionDirty(3));
  EXPECT_TRUE(rep.IsRegionDirty(kSize / kRegionSize - 1));
  EXPECT_FALSE(rep.IsRegionDirty(kSize / kRegionSize));  // grown space is clean
  EXPECT_EQ(md.dirty_map, rep.dirty_map());
  EXPECT_EQ(md.activity_map.size(), rep.activity_map().size());
  EXPECT_EQ(rep.activity_count(), 1u);
  EXPECT_TRUE(md.tracking_dirty);

  // The grown space works on every path: a first touch there is persisted
  // through the (reopened) O_DIRECT handle, data lands in the new range.
  ASSERT_TRUE(rep.can_persist_async());
  EXPECT_FALSE(rep.NoteWrite(3 * kSize, 4096));
  const uint64_t seq = rep.dirty_seq();
  struct Done {
    Replica* rep;
    bool ran = false;
    Status st;
  } done{&rep};
  ASSERT_TRUE(rep.StartPersist(
                     backend_.get(),
                     [](backend::IoRequest* req) {
                       auto* d = static_cast<Done*>(req->ctx);
                       d->ran = true;
                       d->st = d->rep->FinishPersist(req->result);
                     },
                     &done)
                  .ok());
  backend_->Submit();
  for (int i = 0; i < 100 && !done.ran; ++i) backend_->Reap(1, 100000);
  ASSERT_TRUE(done.ran);
  ASSERT_TRUE(done.st.ok()) << done.st.ToString();
  EXPECT_TRUE(rep.dirty_durable(seq));
  EXPECT_TRUE(OnDisk().dirty_map[3 * kSize / kRegionSize / 8] & 1);
  rep.NoteWriteDone(3 * kSize, 4096);

  // A crash now and a reopen: the new size, with both bits.
  r->reset();
  auto o = Replica::Open(backend_.get(), dir_);
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ((*o)->metadata().size, 4 * kSize);
  EXPECT_TRUE((*o)->IsRegionDirty(3));
  EXPECT_TRUE((*o)->IsRegionDirty(3 * kSize / kRegionSize));
  EXPECT_FALSE(Exists(dir_ + "/meta.tmp"));
}

TEST_F(ReplicaTest, ResizeNeverShrinksAndChecksTheSize) {
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok());
  Replica& rep = **r;
  EXPECT_EQ(rep.Resize(kSize / 2).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(rep.Resize(kSize + 1000).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(rep.Resize(0).code(), StatusCode::kInvalidArgument);
  const ReplicaMetadata before = OnDisk();
  EXPECT_TRUE(rep.Resize(kSize).ok());  // same size: nothing written
  EXPECT_EQ(OnDisk(), before);
  EXPECT_EQ(rep.metadata().size, kSize);

  // A data_path file is the operator's: it must already hold the new size.
  const std::string ext = root_ + "/external";
  {
    UniqueFd fd(::open(ext.c_str(), O_RDWR | O_CREAT, 0600));
    ASSERT_TRUE(fd.valid());
    ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(2 * kSize)), 0);
  }
  ReplicaConfig cfg = Config();
  cfg.volume_id = "vol-2";
  cfg.data_path = ext;
  auto e = Replica::Create(backend_.get(), root_ + "/vol-2", cfg);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ((*e)->Resize(4 * kSize).code(), StatusCode::kOutOfRange);
  EXPECT_EQ((*e)->metadata().size, kSize);
  EXPECT_TRUE((*e)->Resize(2 * kSize).ok());
  EXPECT_EQ((*e)->metadata().size, 2 * kSize);
}

TEST_F(ReplicaTest, AsyncPersistMakesBitsDurableAndFailsThemOnError) {
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok());
  Replica& rep = **r;
  ASSERT_TRUE(rep.can_persist_async());
  ASSERT_TRUE(rep.SetGeneration(1, true).ok());
  EXPECT_FALSE(rep.NoteWrite(3 * kRegionSize, 4096));
  const uint64_t seq = rep.dirty_seq();
  EXPECT_FALSE(rep.dirty_durable(seq));

  struct Done {
    Replica* rep;
    bool ran = false;
    bool fail = false;
    Status st;
  } done{&rep};
  auto on_done = [](backend::IoRequest* req) {
    auto* d = static_cast<Done*>(req->ctx);
    d->ran = true;
    d->st = d->rep->FinishPersist(d->fail ? -EIO : req->result);
  };
  ASSERT_TRUE(rep.StartPersist(backend_.get(), on_done, &done).ok());
  EXPECT_TRUE(rep.persist_in_flight());
  // Bits set after the image was taken need the next persist.
  EXPECT_FALSE(rep.NoteWrite(4 * kRegionSize, 4096));
  const uint64_t later = rep.dirty_seq();
  // Synchronous updates would write the same slot: refused, nothing changed.
  EXPECT_EQ(rep.SetGeneration(2, true).code(), StatusCode::kUnavailable);
  EXPECT_EQ(rep.MarkDirty(0, 4096).code(), StatusCode::kUnavailable);
  EXPECT_EQ(rep.SetRebuildCursor(4096, 1).code(), StatusCode::kUnavailable);
  EXPECT_EQ(rep.SetHighestEpoch(9).code(), StatusCode::kUnavailable);
  EXPECT_EQ(rep.metadata().generation, 1u);
  backend_->Submit();
  while (!done.ran) backend_->Reap(1, 1000000);
  ASSERT_TRUE(done.st.ok()) << done.st.ToString();
  EXPECT_FALSE(rep.persist_in_flight());
  EXPECT_TRUE(rep.dirty_durable(seq));
  EXPECT_FALSE(rep.dirty_durable(later));
  EXPECT_EQ(OnDisk().dirty_map[0], 0x08);  // region 3, not yet region 4

  // A failed persist fails the writes it covered; the next one retries.
  done.ran = false;
  done.fail = true;
  ASSERT_TRUE(rep.StartPersist(backend_.get(), on_done, &done).ok());
  backend_->Submit();
  while (!done.ran) backend_->Reap(1, 1000000);
  EXPECT_FALSE(done.st.ok());
  EXPECT_TRUE(rep.dirty_failed(later));
  // (The simulated failure did write its slot; a real one may or may not
  // have: either record is valid, the newer one only marks more.)
  EXPECT_FALSE(rep.NoteWrite(4 * kRegionSize, 4096));  // already set in memory, yet waits
  const uint64_t retry = rep.dirty_seq();
  EXPECT_FALSE(rep.dirty_failed(retry));
  done.ran = false;
  done.fail = false;
  ASSERT_TRUE(rep.StartPersist(backend_.get(), on_done, &done).ok());
  backend_->Submit();
  while (!done.ran) backend_->Reap(1, 1000000);
  ASSERT_TRUE(done.st.ok());
  EXPECT_TRUE(rep.dirty_durable(retry));
  EXPECT_TRUE(rep.NoteWrite(4 * kRegionSize, 4096));  // durable now: no wait
  EXPECT_EQ(OnDisk().dirty_map[0], 0x18);
  ASSERT_TRUE(rep.SetGeneration(2, true).ok());  // free again
  ASSERT_TRUE(rep.Close().ok());
}

TEST_F(ReplicaTest, FindAllocatedRoundsOutToBlocksMergesAndCutsShort) {
  ReplicaConfig cfg = Config();
  cfg.block_size = 16384;
  auto r = Replica::Create(backend_.get(), dir_, cfg);
  ASSERT_TRUE(r.ok());
  Replica& rep = **r;
  {
    // Written behind the replica's back (buffered, 4 KiB file system blocks):
    // 4 KiB inside block 1, 4 KiB at the start of block 2 (so the two round
    // out to one extent), and 4 KiB in blocks 10 and 20.
    int fd = ::open((dir_ + "/data").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    std::vector<char> b(4096, 'x');
    for (uint64_t off : {20480ull, 32768ull, 10 * 16384ull + 8192, 20 * 16384ull}) {
      ASSERT_EQ(::pwrite(fd, b.data(), b.size(), static_cast<off_t>(off)), 4096);
    }
    ASSERT_EQ(::fsync(fd), 0);
    ::close(fd);
  }
  DataExtent out[8];
  uint32_t n = 0;
  uint64_t covered = 0;
  ASSERT_TRUE(rep.FindAllocated(0, kSize, out, 8, &n, &covered).ok());
  EXPECT_EQ(covered, kSize);
  ASSERT_EQ(n, 3u);
  EXPECT_EQ(out[0].offset, 16384u);
  EXPECT_EQ(out[0].length, 2 * 16384u);
  EXPECT_EQ(out[1].offset, 10 * 16384u);
  EXPECT_EQ(out[1].length, 16384u);
  EXPECT_EQ(out[2].offset, 20 * 16384u);
  EXPECT_EQ(out[2].length, 16384u);
  // Room for two: the list covers up to the end of the second.
  ASSERT_TRUE(rep.FindAllocated(0, kSize, out, 2, &n, &covered).ok());
  ASSERT_EQ(n, 2u);
  EXPECT_EQ(covered, 11 * 16384u);
  ASSERT_TRUE(rep.FindAllocated(covered, kSize - covered, out, 2, &n, &covered).ok());
  ASSERT_EQ(n, 1u);
  EXPECT_EQ(out[0].offset, 20 * 16384u);
  EXPECT_EQ(covered, kSize);
  // Clipped to the range; a range of holes has no extent.
  ASSERT_TRUE(rep.FindAllocated(2 * 16384, 9 * 16384, out, 8, &n, &covered).ok());
  ASSERT_EQ(n, 2u);
  EXPECT_EQ(out[0].offset, 2 * 16384u);
  EXPECT_EQ(out[0].length, 16384u);
  EXPECT_EQ(out[1].offset, 10 * 16384u);
  EXPECT_EQ(out[1].length, 16384u);
  ASSERT_TRUE(rep.FindAllocated(30 * 16384, 16384, out, 8, &n, &covered).ok());
  EXPECT_EQ(n, 0u);
  EXPECT_EQ(covered, 31 * 16384u);
  ASSERT_TRUE(rep.Close().ok());
}

TEST_F(ReplicaTest, InvalidConfigNamesTheField) {
  struct Case {
    const char* field;
    void (*mutate)(ReplicaConfig*);
  };
  const Case cases[] = {
      {"volume_id", [](ReplicaConfig* c) { c->volume_id = ""; }},
      {"volume_id", [](ReplicaConfig* c) { c->volume_id = "."; }},
      {"volume_id", [](ReplicaConfig* c) { c->volume_id = ".."; }},
      {"volume_id", [](ReplicaConfig* c) { c->volume_id = "a/b"; }},
      {"volume_id", [](ReplicaConfig* c) { c->volume_id = "vol 1"; }},
      {"volume_id", [](ReplicaConfig* c) { c->volume_id = std::string(129, 'v'); }},
      {"replica_id", [](ReplicaConfig* c) { c->replica_id = ""; }},
      {"replica_id", [](ReplicaConfig* c) { c->replica_id = "r\xc3\xa9"; }},
      {"size", [](ReplicaConfig* c) { c->size = 0; }},
      {"size", [](ReplicaConfig* c) { c->size = kSize + 512; }},
      {"block_size", [](ReplicaConfig* c) { c->block_size = 256; }},
      {"block_size", [](ReplicaConfig* c) { c->block_size = 3000; }},
      {"block_size", [](ReplicaConfig* c) { c->block_size = 128 * 1024; }},
      {"dirty_region_size", [](ReplicaConfig* c) { c->dirty_region_size = 0; }},
      {"dirty_region_size", [](ReplicaConfig* c) { c->dirty_region_size = 2048; }},
      {"dirty_region_size", [](ReplicaConfig* c) { c->dirty_region_size = 96 * 1024; }},
      {"data_path", [](ReplicaConfig* c) { c->data_path = "/" + std::string(1100, 'p'); }},
  };
  for (const Case& tc : cases) {
    ReplicaConfig c = Config();
    tc.mutate(&c);
    auto r = Replica::Create(backend_.get(), dir_, c);
    ASSERT_FALSE(r.ok()) << tc.field;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
    EXPECT_NE(r.status().message().find(tc.field), std::string::npos) << r.status().ToString();
    EXPECT_FALSE(Exists(dir_)) << tc.field;
  }
  // The edges that are valid.
  ReplicaConfig c = Config();
  c.volume_id = std::string(128, 'v');
  c.replica_id = "A-z_0.9";
  c.block_size = 512;
  c.dirty_region_size = 512;
  c.size = 512 * 1001;
  auto r = Replica::Create(backend_.get(), root_ + "/edge", c);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->metadata().dirty_map.size(), 126u);  // ceil(1001 / 8)
}

TEST_F(ReplicaTest, CreateTwiceIsAlreadyExists) {
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->SetHighestEpoch(5).ok());
  auto again = Replica::Create(backend_.get(), dir_, Config());
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
  // The failed attempt must not have touched the existing replica.
  EXPECT_TRUE(Exists(dir_ + "/data"));
  EXPECT_EQ(OnDisk().highest_epoch, 5u);
}

TEST_F(ReplicaTest, CreateOverLeftoverOfInterruptedCreate) {
  ASSERT_EQ(::mkdir(dir_.c_str(), 0755), 0);
  int fd = ::open((dir_ + "/data").c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "stale", 5), 5);
  ::close(fd);
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  struct stat sb;
  ASSERT_EQ(::stat((dir_ + "/data").c_str(), &sb), 0);
  EXPECT_EQ(sb.st_blocks, 0) << "stale data survived";
}

TEST_F(ReplicaTest, ExistingDataPath) {
  const std::string file = root_ + "/backing";
  int fd = ::open(file.c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, kSize * 2), 0);
  ::close(fd);

  ReplicaConfig c = Config();
  c.data_path = file;
  auto r = Replica::Create(backend_.get(), dir_, c);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->metadata().data_path, file);
  EXPECT_FALSE(Exists(dir_ + "/data"));
  ASSERT_TRUE((*r)->Close().ok());
  r->reset();
  auto o = Replica::Open(backend_.get(), dir_);
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_TRUE((*o)->was_clean());
}

TEST_F(ReplicaTest, DataPathTooSmallOrMissingRollsBack) {
  const std::string file = root_ + "/backing";
  int fd = ::open(file.c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, kSize / 2), 0);
  ::close(fd);

  ReplicaConfig c = Config();
  c.data_path = file;
  auto r = Replica::Create(backend_.get(), dir_, c);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_FALSE(Exists(dir_));
  EXPECT_TRUE(Exists(file)) << "a user-given data file must never be removed";

  c.data_path = root_ + "/missing";
  r = Replica::Create(backend_.get(), dir_, c);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_FALSE(Exists(dir_));
}

TEST_F(ReplicaTest, OpenFailures) {
  EXPECT_EQ(Replica::Open(backend_.get(), dir_).status().code(), StatusCode::kNotFound);
  auto r = Replica::Create(backend_.get(), dir_, Config());
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->Close().ok());
  r->reset();
  // A shrunken data file is refused, and Open leaves the record clean.
  ASSERT_EQ(::truncate((dir_ + "/data").c_str(), kSize / 2), 0);
  auto o = Replica::Open(backend_.get(), dir_);
  EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument) << o.status().ToString();
  EXPECT_TRUE(OnDisk().clean_shutdown);
  ASSERT_EQ(::unlink((dir_ + "/data").c_str()), 0);
  EXPECT_EQ(Replica::Open(backend_.get(), dir_).status().code(), StatusCode::kNotFound);
}

TEST(ValidateIdTest, Names) {
  EXPECT_TRUE(ValidateId("volume_id", "pvc-1234.abc_DEF").ok());
  Status st = ValidateId("replica_id", "x/y");
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("replica_id"), std::string::npos);
  EXPECT_TRUE(ValidateId("volume_id", "...").ok());  // only "." and ".." are special
}

}  // namespace
}  // namespace tandem::replica
