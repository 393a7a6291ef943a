// RebuildPlan is pure: these tests feed it dirty-map pages, activity logs,
// allocation listings and live writes, and check which windows it plans.
#include "replica-engine/volume/rebuild_plan.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tandem::target {
namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kRegion = 64 * 1024;  // the replicas' dirty region size

using Window = RebuildPlan::Window;
using Next = RebuildPlan::Next;

RebuildPlan::Inputs Tracked(uint64_t size, uint64_t since, uint64_t dest_generation) {
  RebuildPlan::Inputs in;
  in.volume_size = size;
  in.tracking = true;
  in.tracking_since = since;
  in.in_lineage = true;
  in.generation = dest_generation;
  return in;
}

// A GET_DIRTY_MAP page over the whole (small) volume with `regions` set.
std::string Bitmap(uint64_t size, uint64_t region, const std::vector<uint64_t>& regions) {
  std::string bits(protocol::DirtyMapBytes(size, static_cast<uint32_t>(region)), '\0');
  for (uint64_t r : regions) bits[r / 8] = static_cast<char>(bits[r / 8] | (1 << (r % 8)));
  return bits;
}

protocol::DirtyMapChunk Page(uint64_t size, uint64_t region, const std::string& bits) {
  protocol::DirtyMapChunk c;
  c.region_size = static_cast<uint32_t>(region);
  c.volume_size = size;
  c.bitmap = bits;
  return c;
}

// Plans every window (no allocation listing expected).
std::vector<Window> PlanAll(RebuildPlan* plan) {
  std::vector<Window> out;
  for (int i = 0; i < 10000; ++i) {
    Window w;
    uint64_t off = 0;
    uint32_t len = 0;
    Next n = plan->NextWindow(&w, &off, &len);
    if (n == Next::kDone) return out;
    EXPECT_EQ(n, Next::kWindow);
    if (n != Next::kWindow) return out;
    out.push_back(w);
  }
  ADD_FAILURE() << "the plan never ends";
  return out;
}

TEST(RebuildPlanTest, ChoosesIncrementalOnlyWhenTheDirtyMapsCoverWhatTheDestinationMissed) {
  const uint64_t size = 64 * kMiB;
  // Tracking since the generation right after the destination's: incremental.
  RebuildPlan::Start s = RebuildPlan::Choose(Tracked(size, 6, 5));
  EXPECT_EQ(s.mode, RebuildMode::kIncremental);
  EXPECT_EQ(s.dirty_limit, size);
  EXPECT_EQ(s.full_from, size);
  // Tracking began later than that: writes of generation 6 are in no map.
  EXPECT_EQ(RebuildPlan::Choose(Tracked(size, 7, 5)).mode, RebuildMode::kFull);
  // A replica that never served (generation 0) is copied in full.
  EXPECT_EQ(RebuildPlan::Choose(Tracked(size, 1, 0)).mode, RebuildMode::kFull);
  // A diverged history: the maps say nothing about it.
  RebuildPlan::Inputs diverged = Tracked(size, 6, 5);
  diverged.in_lineage = false;
  EXPECT_EQ(RebuildPlan::Choose(diverged).dirty_limit, 0u);
  // No tracking at all.
  RebuildPlan::Inputs untracked = Tracked(size, 6, 5);
  untracked.tracking = false;
  RebuildPlan::Start full = RebuildPlan::Choose(untracked);
  EXPECT_EQ(full.mode, RebuildMode::kFull);
  EXPECT_EQ(full.dirty_limit, 0u);
  EXPECT_EQ(full.full_from, 0u);
}

TEST(RebuildPlanTest, ResumesAFullRebuildAtThePersistedCursorWhenTheMapsCoverTheGap) {
  const uint64_t size = 64 * kMiB;
  RebuildPlan::Inputs in = Tracked(size, 4, 0);
  in.rebuild_cursor = 16 * kMiB;
  in.rebuild_generation = 3;
  RebuildPlan::Start s = RebuildPlan::Choose(in);
  EXPECT_EQ(s.mode, RebuildMode::kFull);
  EXPECT_EQ(s.dirty_limit, 16 * kMiB);  // below: only what was written since
  EXPECT_EQ(s.full_from, 16 * kMiB);    // above: everything allocated
  // The maps began after the cursor's generation: start over.
  in.rebuild_generation = 2;
  EXPECT_EQ(RebuildPlan::Choose(in).full_from, 0u);
  // A cursor at the end is no resume point.
  in.rebuild_generation = 3;
  in.rebuild_cursor = size;
  EXPECT_EQ(RebuildPlan::Choose(in).full_from, 0u);
}

TEST(RebuildPlanTest, CopiesTheUnionOfTheDirtyMapsInWindowsOfAtMostOneMebibyte) {
  const uint64_t size = 8 * kMiB;
  RebuildPlan plan;
  plan.Reset(size, 4096, RebuildPlan::Choose(Tracked(size, 2, 1)));
  // Replica A: regions 0, 1 and 40..59 (1.25 MiB in a row); replica B: 3 and 100.
  std::vector<uint64_t> a = {0, 1};
  for (uint64_t r = 40; r < 60; ++r) a.push_back(r);
  std::string bits_a = Bitmap(size, kRegion, a);
  std::string bits_b = Bitmap(size, kRegion, {3, 100});
  uint64_t next = 0;
  ASSERT_TRUE(plan.AddDirtyPage(Page(size, kRegion, bits_a), 0, &next));
  EXPECT_EQ(next, RebuildPlan::kMapDone);  // one page covers the volume
  ASSERT_TRUE(plan.AddDirtyPage(Page(size, kRegion, bits_b), 0, &next));
  EXPECT_EQ(plan.DirtyRegionsBelowLimit(), 2u + 20u + 2u);
  EXPECT_EQ(plan.BytesToVisit(), 24 * kRegion);

  std::vector<Window> w = PlanAll(&plan);
  ASSERT_EQ(w.size(), 5u);
  EXPECT_EQ(w[0].offset, 0u);  // regions 0-1 merged
  EXPECT_EQ(w[0].length, 2 * kRegion);
  EXPECT_EQ(w[1].offset, 3 * kRegion);
  EXPECT_EQ(w[1].length, kRegion);
  EXPECT_EQ(w[2].offset, 40 * kRegion);  // 20 regions: split at 1 MiB
  EXPECT_EQ(w[2].length, kMiB);
  EXPECT_EQ(w[3].offset, 56 * kRegion);
  EXPECT_EQ(w[3].length, 4 * kRegion);
  EXPECT_EQ(w[4].offset, 100 * kRegion);
  for (const Window& x : w) EXPECT_FALSE(x.hole);
}

TEST(RebuildPlanTest, RefusesMapsThatDisagreeOnTheRegionSize) {
  const uint64_t size = 8 * kMiB;
  RebuildPlan plan;
  plan.Reset(size, 4096, RebuildPlan::Choose(Tracked(size, 2, 1)));
  std::string a = Bitmap(size, kRegion, {1});
  std::string b = Bitmap(size, 2 * kRegion, {1});
  uint64_t next = 0;
  ASSERT_TRUE(plan.AddDirtyPage(Page(size, kRegion, a), 0, &next));
  EXPECT_FALSE(plan.AddDirtyPage(Page(size, 2 * kRegion, b), 0, &next));
  // Starting the union again accepts a new region size.
  plan.RestartUnion();
  EXPECT_TRUE(plan.AddDirtyPage(Page(size, 2 * kRegion, b), 0, &next));
  EXPECT_EQ(plan.region_size(), 2 * kRegion);
}

TEST(RebuildPlanTest, ActivityLogExtentsBecomeDirtyRegions) {
  const uint64_t size = 16 * kMiB;
  const uint64_t extent = 4 * kMiB;
  RebuildPlan plan;
  plan.Reset(size, 4096, RebuildPlan::Choose(Tracked(size, 2, 1)));
  // The activity log joins only after a dirty page set the region size.
  std::string log = Bitmap(size, extent, {2});
  plan.AddActivityPage(Page(size, extent, log), 0);
  EXPECT_EQ(plan.DirtyRegionsBelowLimit(), 0u);
  std::string none = Bitmap(size, kRegion, {});
  uint64_t next = 0;
  ASSERT_TRUE(plan.AddDirtyPage(Page(size, kRegion, none), 0, &next));
  EXPECT_EQ(plan.AddActivityPage(Page(size, extent, log), 0), RebuildPlan::kMapDone);
  // Extent 2 = bytes [8 MiB, 12 MiB) = 64 regions.
  EXPECT_EQ(plan.DirtyRegionsBelowLimit(), extent / kRegion);
  EXPECT_TRUE(plan.IsDirty(8 * kMiB / kRegion));
  EXPECT_FALSE(plan.IsDirty(12 * kMiB / kRegion));
  // The attach-time union merges the same way.
  std::vector<uint8_t> start_union = {0x01};  // extent 0
  plan.MergeActivity(start_union, static_cast<uint32_t>(extent));
  EXPECT_EQ(plan.DirtyRegionsBelowLimit(), 2 * extent / kRegion);
  std::vector<Window> w = PlanAll(&plan);
  ASSERT_EQ(w.size(), 8u);  // 2 extents of 4 MiB in 1 MiB windows
  EXPECT_EQ(w[0].offset, 0u);
  EXPECT_EQ(w[4].offset, 8 * kMiB);
}

// An allocation listing as GET_ALLOCATION returns it.
struct Listing {
  std::string payload;
  protocol::AllocationList list;
  Listing(uint64_t covered_end, std::vector<protocol::AllocationExtent> extents) {
    EXPECT_TRUE(protocol::EncodeAllocation(covered_end, extents.data(),
                                           static_cast<uint32_t>(extents.size()), &payload)
                    .ok());
    EXPECT_TRUE(protocol::DecodeAllocation(payload, &list).ok());
  }
};

TEST(RebuildPlanTest, FullRebuildCopiesAllocatedExtentsAndTrimsHoles) {
  const uint64_t size = 8 * kMiB;
  RebuildPlan plan;
  plan.Reset(size, 4096, RebuildPlan::Start{});
  Window w;
  uint64_t off = 1;
  uint32_t len = 0;
  ASSERT_EQ(plan.NextWindow(&w, &off, &len), Next::kNeedAllocation);
  EXPECT_EQ(off, 0u);
  EXPECT_EQ(len, size);
  // Data in [1 MiB, 2.5 MiB) and [6 MiB, 6 MiB + 4 KiB).
  Listing l(size, {{kMiB, 3 * kMiB / 2}, {6 * kMiB, 4096}});
  plan.SetAllocation(l.list);
  std::vector<Window> plan_windows = PlanAll(&plan);
  ASSERT_EQ(plan_windows.size(), 6u);
  EXPECT_TRUE(plan_windows[0].hole);  // [0, 1 MiB)
  EXPECT_EQ(plan_windows[0].length, kMiB);
  EXPECT_FALSE(plan_windows[1].hole);  // [1, 2) MiB
  EXPECT_EQ(plan_windows[1].length, kMiB);
  EXPECT_FALSE(plan_windows[2].hole);  // [2, 2.5) MiB
  EXPECT_EQ(plan_windows[2].length, kMiB / 2);
  EXPECT_TRUE(plan_windows[3].hole);  // [2.5, 6) MiB in one TRIM
  EXPECT_EQ(plan_windows[3].offset, 5 * kMiB / 2);
  EXPECT_EQ(plan_windows[3].length, 7 * kMiB / 2);
  EXPECT_FALSE(plan_windows[4].hole);
  EXPECT_EQ(plan_windows[4].length, 4096u);
  // Everything up to covered_end outside the extents is a hole too.
  EXPECT_TRUE(plan_windows[5].hole);
  EXPECT_EQ(plan_windows[5].offset, 6 * kMiB + 4096);
  EXPECT_EQ(plan_windows[5].offset + plan_windows[5].length, size);
}

TEST(RebuildPlanTest, HolesALiveWriteTouchedAreCopiedNotTrimmed) {
  const uint64_t size = 4 * kMiB;
  RebuildPlan plan;
  plan.Reset(size, 4096, RebuildPlan::Start{});
  Window w;
  uint64_t off = 0;
  uint32_t len = 0;
  ASSERT_EQ(plan.NextWindow(&w, &off, &len), Next::kNeedAllocation);
  Listing l(size, {});  // the source was empty when listed
  plan.SetAllocation(l.list);
  // Then a live write reached the destination in the third MiB.
  plan.MarkTouched(2 * kMiB + 4096, 4096);
  EXPECT_TRUE(plan.Touched(2));
  EXPECT_FALSE(plan.Touched(1));
  std::vector<Window> windows = PlanAll(&plan);
  ASSERT_EQ(windows.size(), 3u);
  EXPECT_TRUE(windows[0].hole);  // [0, 2 MiB): stops at the touched chunk
  EXPECT_EQ(windows[0].length, 2 * kMiB);
  EXPECT_FALSE(windows[1].hole);  // the touched chunk is copied as it is now
  EXPECT_EQ(windows[1].offset, 2 * kMiB);
  EXPECT_EQ(windows[1].length, kMiB);
  EXPECT_TRUE(windows[2].hole);
  EXPECT_EQ(windows[2].offset, 3 * kMiB);
}

TEST(RebuildPlanTest, AResumedFullRebuildCopiesDirtyRegionsBelowTheCursorThenEverythingAbove) {
  const uint64_t size = 8 * kMiB;
  RebuildPlan::Inputs in = Tracked(size, 4, 0);
  in.rebuild_cursor = 4 * kMiB;
  in.rebuild_generation = 3;
  RebuildPlan plan;
  plan.Reset(size, 4096, RebuildPlan::Choose(in));
  std::string bits = Bitmap(size, kRegion, {2, 70 /* above the cursor: ignored */});
  uint64_t next = 0;
  ASSERT_TRUE(plan.AddDirtyPage(Page(size, kRegion, bits), 0, &next));
  EXPECT_EQ(plan.BytesToVisit(), kRegion + 4 * kMiB);
  Window w;
  uint64_t off = 0;
  uint32_t len = 0;
  ASSERT_EQ(plan.NextWindow(&w, &off, &len), Next::kWindow);
  EXPECT_EQ(w.offset, 2 * kRegion);
  EXPECT_EQ(w.length, kRegion);
  ASSERT_EQ(plan.NextWindow(&w, &off, &len), Next::kNeedAllocation);
  EXPECT_EQ(off, 4 * kMiB);  // the listing starts at the cursor
  EXPECT_EQ(len, 4 * kMiB);
  Listing l(size, {{4 * kMiB, 4 * kMiB}});
  plan.SetAllocation(l.list);
  std::vector<Window> rest = PlanAll(&plan);
  ASSERT_EQ(rest.size(), 4u);
  EXPECT_EQ(rest[0].offset, 4 * kMiB);
  EXPECT_FALSE(rest[0].hole);
}

}  // namespace
}  // namespace tandem::target
