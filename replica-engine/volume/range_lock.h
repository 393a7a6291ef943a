#pragma once
// RangeLock: the one lock between the live writes of a VolumeTarget and its
// rebuild's copy windows (brief §3 "a range lock keeps a rebuild copy from
// overwriting a newer live write"; SPDK's quiesce_range, DRBD's conflict
// detection).
//
// Two kinds of holders, each a LockedRange embedded in its owner (an IoCtx,
// a rebuild window), so locking allocates nothing:
// - a live write (WRITE, TRIM, WRITE_ZEROES; never READ or FLUSH) holds its
//   range while it is in its data phase, i.e. on its way to the replicas;
// - a rebuild window holds its range from the moment it is planned until its
//   copy is on the destination.
// A new write overlapping either kind waits (Hold) and is released, in
// order, when a holder leaves (ReleaseHeld); it then checks again. Two
// overlapping writes in flight together could land in different orders on
// different replicas; a write overlapping a window would race the copy.
// A window starts copying only when no live write overlapping it is still in
// its data phase (WindowQuiet): the copy then reads what every such write
// left on the source, and later writes reach the destination after it.
//
// Cost: the checks walk the holders, at most the queue depth plus the
// rebuild's windows. Threading: the target's loop thread only.

#include <cstdint>

#include "common/intrusive_list.h"
#include "replica-engine/block_device/block_device.h"

namespace tandem::target {

struct LockedRange {
  uint64_t offset = 0;
  uint64_t length = 0;
  ListHook<LockedRange> hook;

  bool Overlaps(uint64_t off, uint64_t len) const {
    return offset < off + len && off < offset + length;
  }
};

using BlockRequestQueue = IntrusiveQueue<BlockRequest, &BlockRequest::next_>;

class RangeLock {
 public:
  RangeLock() = default;
  RangeLock(const RangeLock&) = delete;
  RangeLock& operator=(const RangeLock&) = delete;

  // Whether `req` must wait: a write-like request overlapping a live write
  // still in its data phase or a rebuild window. Reads and flushes never wait.
  bool MustWait(const BlockRequest& req) const;

  // A live write entered its data phase at [offset, offset + length).
  // REQUIRES: `w` is not held.
  void AddWrite(LockedRange* w, uint64_t offset, uint64_t length);
  // It left it. False (no-op) when `w` was not held.
  bool RemoveWrite(LockedRange* w);

  // A rebuild window holds its range (set in `w`) from now on (no-op when
  // it already does).
  void LockWindow(LockedRange* w);
  // No-op when `w` is not held.
  void UnlockWindow(LockedRange* w) { windows_.Remove(w); }
  // True when no live write overlapping `w` is in its data phase.
  bool WindowQuiet(const LockedRange& w) const;

  // Held requests, in arrival order.
  void Hold(BlockRequest* req) { held_.PushBack(req); }
  bool HasHeld() const { return !held_.empty(); }
  // Moves the held requests, in their order, to the front of `queue`.
  void ReleaseHeld(BlockRequestQueue* queue) { queue->SpliceFront(&held_); }

 private:
  using List = IntrusiveList<LockedRange, &LockedRange::hook>;
  static bool AnyOverlaps(const List& list, uint64_t offset, uint64_t length);

  List writes_;
  List windows_;
  BlockRequestQueue held_;
};

}  // namespace tandem::target
