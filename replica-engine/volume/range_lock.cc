#include "replica-engine/volume/range_lock.h"

namespace tandem::target {

bool RangeLock::AnyOverlaps(const List& list, uint64_t offset, uint64_t length) {
  for (const LockedRange* r = list.front(); r != nullptr; r = List::Next(r)) {
    if (r->Overlaps(offset, length)) return true;
  }
  return false;
}

bool RangeLock::MustWait(const BlockRequest& req) const {
  if (req.op == BlockOp::kRead || req.op == BlockOp::kFlush) return false;
  return AnyOverlaps(windows_, req.offset, req.length) ||
         AnyOverlaps(writes_, req.offset, req.length);
}

void RangeLock::AddWrite(LockedRange* w, uint64_t offset, uint64_t length) {
  w->offset = offset;
  w->length = length;
  writes_.PushFront(w);
}

bool RangeLock::RemoveWrite(LockedRange* w) {
  if (!List::Linked(w)) return false;
  writes_.Remove(w);
  return true;
}

void RangeLock::LockWindow(LockedRange* w) {
  if (!List::Linked(w)) windows_.PushFront(w);
}

bool RangeLock::WindowQuiet(const LockedRange& w) const {
  return !AnyOverlaps(writes_, w.offset, w.length);
}

}  // namespace tandem::target
