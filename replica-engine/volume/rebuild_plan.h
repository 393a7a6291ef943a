#pragma once
// RebuildPlan: what a rebuild copies, and in which windows (docs/architecture.md
// "Rebuild"). Pure: no I/O, no clock. The rebuild job (rebuild_job.h) feeds
// it the replies it gets (dirty-map pages, activity logs, allocation lists)
// and the live writes that reach the destination, and asks it for the next
// window.
//
// - Where to start (Choose): incremental when the survivors' dirty maps
//   cover everything the destination missed; a resumed full rebuild from the
//   destination's persisted cursor when they cover the gap since it; else a
//   full rebuild from byte 0.
// - Dirty regions below dirty_limit() are copied: the union of the HEALTHY
//   replicas' dirty maps and of the activity logs that join it.
// - From full_from() on, every allocated byte of the source is copied and the
//   source's holes are TRIMmed on the destination, except the 1 MiB chunks a
//   live write touched since the rebuild began (MarkTouched): the allocation
//   listing predates those writes, so they are copied, never trimmed.
// - Windows are at most protocol::kMaxIoSize, block aligned, in volume order.

#include <cstdint>
#include <utility>
#include <vector>

// The protocol types (dirty-map pages, allocation lists) come with the
// client, the layer the target talks to (tests/layering/allowlist.txt).
#include "replica-engine/client/replica_channel.h"
#include "replica-engine/volume/volume_target.h"

namespace tandem::target {

class RebuildPlan {
 public:
  // One TRIM of a hole covers at most this many bytes.
  static constexpr uint64_t kMaxHole = 1ull << 30;
  // A page reply said the map is read to its end.
  static constexpr uint64_t kMapDone = UINT64_MAX;

  // What the target knows when the rebuild of a destination begins.
  struct Inputs {
    uint64_t volume_size = 0;
    bool tracking = false;        // the survivors record dirty regions...
    uint64_t tracking_since = 0;  // ...since this generation
    // The destination's generation id is ours or in our history (else it
    // diverged and its dirty regions mean nothing to us).
    bool in_lineage = false;
    uint64_t generation = 0;          // the destination's
    uint64_t rebuild_cursor = 0;      // persisted by an earlier full rebuild (0: none)
    uint64_t rebuild_generation = 0;  // the generation recorded with it
  };
  struct Start {
    RebuildMode mode = RebuildMode::kFull;
    uint64_t dirty_limit = 0;  // dirty regions below this are copied
    uint64_t full_from = 0;    // every allocated byte from here on is
  };
  static Start Choose(const Inputs& in);

  // A copy window: READ it from the source and WRITE it to the destination,
  // or TRIM it there when `hole`.
  struct Window {
    uint64_t offset = 0;
    uint32_t length = 0;
    bool hole = false;
  };
  enum class Next : uint8_t {
    kWindow,          // `w` is planned
    kNeedAllocation,  // list the source's allocation first (SetAllocation)
    kDone,            // nothing left to plan
  };

  void Reset(uint64_t volume_size, uint32_t block_size, const Start& start);
  RebuildMode mode() const { return mode_; }
  uint64_t dirty_limit() const { return dirty_limit_; }
  uint64_t full_from() const { return full_from_; }
  uint64_t cursor() const { return cursor_; }  // next byte to plan
  uint32_t region_size() const { return region_size_; }

  // --- The dirty-region union.
  // ORs in one GET_DIRTY_MAP page that was read at `offset`; `*next` is where
  // the next page starts, or kMapDone. False when its region size differs
  // from the pages before it (the replicas disagree).
  bool AddDirtyPage(const protocol::DirtyMapChunk& page, uint64_t offset, uint64_t* next);
  // Adds one page of an activity log (GET_DIRTY_MAP with kFlagActivity) read
  // at `offset`: its extents become dirty regions. Returns the next offset or
  // kMapDone. No-op before the first dirty page set the region size.
  uint64_t AddActivityPage(const protocol::DirtyMapChunk& page, uint64_t offset);
  // Marks the regions of every extent set in `map` (one bit per `extent`
  // bytes, a multiple of the region size) dirty.
  void MergeActivity(const std::vector<uint8_t>& map, uint32_t extent);
  // A map holder went away mid-way: the union starts again.
  void RestartUnion();
  bool IsDirty(uint64_t region) const;
  // Bytes the rebuild visits: the dirty regions below dirty_limit plus
  // everything from full_from.
  uint64_t BytesToVisit() const;
  uint64_t DirtyRegionsBelowLimit() const;
  // The unit of the dirty union (kMaxIoSize before any map was read).
  uint64_t RegionBytes() const { return region_size_ == 0 ? protocol::kMaxIoSize : region_size_; }

  // --- Windows.
  // Plans the next window at cursor() and moves the cursor past it. On
  // kNeedAllocation, `*alloc_offset` / `*alloc_length` say what to list.
  Next NextWindow(Window* w, uint64_t* alloc_offset, uint32_t* alloc_length);
  // The source's allocated extents from the cursor on, as GET_ALLOCATION
  // answered (checked by the caller).
  void SetAllocation(const protocol::AllocationList& list);
  // A live write reached the destination at [offset, offset + length).
  void MarkTouched(uint64_t offset, uint64_t length);
  bool Touched(uint64_t chunk) const;

 private:
  Next NextDirtyWindow(Window* w);
  Next NextHoleWindow(uint64_t next_data, Window* w);

  uint64_t size_ = 0;
  uint32_t block_size_ = 4096;
  RebuildMode mode_ = RebuildMode::kNone;
  std::vector<uint8_t> dirty_;
  uint32_t region_size_ = 0;
  uint64_t dirty_limit_ = 0;
  uint64_t full_from_ = UINT64_MAX;
  uint64_t cursor_ = 0;
  // Allocated extents of the source from `cursor_` on, valid below alloc_end_.
  std::vector<std::pair<uint64_t, uint64_t>> extents_;
  size_t extent_index_ = 0;
  uint64_t alloc_end_ = 0;
  std::vector<uint8_t> touched_;  // one bit per kMaxIoSize chunk
};

}  // namespace tandem::target
