#include "replica-engine/volume/rebuild_plan.h"

#include <algorithm>

namespace tandem::target {

using protocol::kMaxIoSize;

RebuildPlan::Start RebuildPlan::Choose(const Inputs& in) {
  // The dirty maps only describe what a replica of our own history missed:
  // one whose generation id we do not know has diverged, copy everything.
  const bool covered = in.tracking && in.tracking_since != 0 && in.in_lineage;
  Start s;
  if (covered && in.generation >= 1 && in.tracking_since <= in.generation + 1) {
    s.mode = RebuildMode::kIncremental;
    s.dirty_limit = in.volume_size;
    s.full_from = in.volume_size;
  } else if (covered && in.rebuild_cursor > 0 && in.rebuild_cursor < in.volume_size &&
             in.tracking_since <= in.rebuild_generation + 1) {
    // A full rebuild resumed at the destination's checkpoint: below it only
    // what was written since, above it everything.
    s.mode = RebuildMode::kFull;
    s.dirty_limit = in.rebuild_cursor;
    s.full_from = in.rebuild_cursor;
  } else {
    s.mode = RebuildMode::kFull;
    s.dirty_limit = 0;
    s.full_from = 0;
  }
  return s;
}

void RebuildPlan::Reset(uint64_t volume_size, uint32_t block_size, const Start& start) {
  size_ = volume_size;
  block_size_ = block_size;
  mode_ = start.mode;
  dirty_limit_ = start.dirty_limit;
  full_from_ = start.full_from;
  dirty_.clear();
  region_size_ = 0;
  cursor_ = 0;
  extents_.clear();
  extent_index_ = 0;
  alloc_end_ = 0;
  touched_.assign((size_ / kMaxIoSize + 8) / 8, 0);
}

// ------------------------------------------------------ the dirty-region union

bool RebuildPlan::AddDirtyPage(const protocol::DirtyMapChunk& page, uint64_t offset,
                               uint64_t* next) {
  if (region_size_ == 0) {
    region_size_ = page.region_size;
    dirty_.assign(protocol::DirtyMapBytes(size_, page.region_size), 0);
  } else if (page.region_size != region_size_) {
    return false;
  }
  size_t first = static_cast<size_t>(offset / region_size_ / 8);
  for (size_t i = 0; i < page.bitmap.size() && first + i < dirty_.size(); ++i) {
    dirty_[first + i] |= static_cast<uint8_t>(page.bitmap[i]);
  }
  uint64_t covered = (first + page.bitmap.size()) * 8ull * region_size_;
  *next = (page.bitmap.empty() || covered >= size_) ? kMapDone : covered;
  return true;
}

uint64_t RebuildPlan::AddActivityPage(const protocol::DirtyMapChunk& page, uint64_t offset) {
  // The log's extents (multiples of the region size) become dirty regions.
  uint64_t first = offset / page.region_size;
  std::vector<uint8_t> map(protocol::DirtyMapBytes(size_, page.region_size), 0);
  for (size_t i = 0; i < page.bitmap.size() && first / 8 + i < map.size(); ++i) {
    map[first / 8 + i] = static_cast<uint8_t>(page.bitmap[i]);
  }
  MergeActivity(map, page.region_size);
  uint64_t covered = (first + page.bitmap.size() * 8) * page.region_size;
  return (page.bitmap.empty() || covered >= size_) ? kMapDone : covered;
}

void RebuildPlan::MergeActivity(const std::vector<uint8_t>& map, uint32_t extent) {
  if (extent == 0 || region_size_ == 0) return;
  for (size_t i = 0; i < map.size(); ++i) {
    for (int bit = 0; map[i] != 0 && bit < 8; ++bit) {
      if (!((map[i] >> bit) & 1)) continue;
      uint64_t off = (i * 8 + bit) * uint64_t{extent};
      uint64_t end = std::min(size_, off + extent);
      for (uint64_t r = off / region_size_; r * region_size_ < end; ++r) {
        if (r / 8 < dirty_.size()) dirty_[r / 8] |= static_cast<uint8_t>(1u << (r % 8));
      }
    }
  }
}

void RebuildPlan::RestartUnion() {
  dirty_.clear();
  region_size_ = 0;
}

bool RebuildPlan::IsDirty(uint64_t region) const {
  size_t byte = region / 8;
  return byte < dirty_.size() && ((dirty_[byte] >> (region % 8)) & 1) != 0;
}

uint64_t RebuildPlan::DirtyRegionsBelowLimit() const {
  uint64_t regions = 0;
  for (uint64_t r = 0; r * RegionBytes() < dirty_limit_; ++r) regions += IsDirty(r) ? 1 : 0;
  return regions;
}

uint64_t RebuildPlan::BytesToVisit() const {
  uint64_t bytes = std::min(size_, DirtyRegionsBelowLimit() * RegionBytes());
  if (full_from_ < size_) bytes += size_ - full_from_;
  return bytes;
}

// ------------------------------------------------------------------ windows

void RebuildPlan::MarkTouched(uint64_t offset, uint64_t length) {
  if (touched_.empty() || length == 0) return;
  for (uint64_t c = offset / kMaxIoSize; c <= (offset + length - 1) / kMaxIoSize; ++c) {
    if (c / 8 < touched_.size()) touched_[c / 8] |= static_cast<uint8_t>(1u << (c % 8));
  }
}

bool RebuildPlan::Touched(uint64_t chunk) const {
  return chunk / 8 < touched_.size() && ((touched_[chunk / 8] >> (chunk % 8)) & 1) != 0;
}

void RebuildPlan::SetAllocation(const protocol::AllocationList& list) {
  extents_.clear();
  for (uint32_t i = 0; i < list.count; ++i) {
    protocol::AllocationExtent e = list.extent(i);
    extents_.emplace_back(e.offset, e.length);
  }
  extent_index_ = 0;
  alloc_end_ = std::min(list.covered_end, size_);
}

RebuildPlan::Next RebuildPlan::NextDirtyWindow(Window* w) {
  const uint64_t region = RegionBytes();
  while (cursor_ < dirty_limit_) {
    uint64_t r = cursor_ / region;
    if (!IsDirty(r)) {
      // Skip clean regions a byte of the map at a time where possible.
      if (r % 8 == 0 && r / 8 < dirty_.size() && dirty_[r / 8] == 0) {
        cursor_ = std::min(dirty_limit_, (r + 8) * region);
      } else {
        cursor_ = std::min(dirty_limit_, (r + 1) * region);
      }
      continue;
    }
    uint64_t end = (r + 1) * region;
    while (end < dirty_limit_ && end - cursor_ < kMaxIoSize && IsDirty(end / region)) {
      end += region;
    }
    end = std::min({end, dirty_limit_, cursor_ + kMaxIoSize});
    w->offset = cursor_;
    w->length = static_cast<uint32_t>(end - cursor_);
    w->hole = false;
    cursor_ = end;
    return Next::kWindow;
  }
  return Next::kDone;
}

// A hole in the source when it was listed: punch it on the destination too,
// except where a live write has landed since (the listing predates it; the
// destination has that write). Those chunks are copied from the source as it
// is under the range lock. Every write that can touch this range before the
// window completes is dispatched already (newer ones are held by the lock),
// so its mark is visible here.
RebuildPlan::Next RebuildPlan::NextHoleWindow(uint64_t next_data, Window* w) {
  uint64_t hole_end = std::min({next_data, alloc_end_, cursor_ + kMaxHole});
  uint64_t chunk = cursor_ / kMaxIoSize;
  if (Touched(chunk)) {
    uint64_t end = std::min(hole_end, (chunk + 1) * kMaxIoSize);
    w->offset = cursor_;
    w->length = static_cast<uint32_t>(end - cursor_);
    w->hole = false;
    cursor_ = end;
    return Next::kWindow;
  }
  for (uint64_t c = chunk + 1; c * kMaxIoSize < hole_end; ++c) {
    if (Touched(c)) {
      hole_end = c * kMaxIoSize;
      break;
    }
  }
  w->offset = cursor_;
  w->length = static_cast<uint32_t>(hole_end - cursor_);
  w->hole = true;
  cursor_ = hole_end;
  return Next::kWindow;
}

RebuildPlan::Next RebuildPlan::NextWindow(Window* w, uint64_t* alloc_offset,
                                          uint32_t* alloc_length) {
  if (NextDirtyWindow(w) == Next::kWindow) return Next::kWindow;
  if (cursor_ < full_from_) cursor_ = full_from_;
  if (cursor_ >= size_) return Next::kDone;
  // Allocated extents of the source from the cursor on.
  if (cursor_ >= alloc_end_) {
    extents_.clear();
    extent_index_ = 0;
    *alloc_offset = cursor_;
    *alloc_length = static_cast<uint32_t>(std::min<uint64_t>(size_ - cursor_, kMaxHole * 2));
    return Next::kNeedAllocation;
  }
  while (extent_index_ < extents_.size() &&
         extents_[extent_index_].first + extents_[extent_index_].second <= cursor_) {
    ++extent_index_;
  }
  uint64_t next_data = extent_index_ < extents_.size()
                           ? std::max(extents_[extent_index_].first, cursor_)
                           : alloc_end_;
  if (next_data > cursor_) return NextHoleWindow(next_data, w);
  const auto& ext = extents_[extent_index_];
  uint64_t end = std::min({ext.first + ext.second, alloc_end_, cursor_ + kMaxIoSize});
  // Windows stay block aligned (extents are file system blocks; be safe).
  w->offset = cursor_ / block_size_ * block_size_;
  end = std::min((end + block_size_ - 1) / block_size_ * block_size_, size_);
  w->length = static_cast<uint32_t>(end - w->offset);
  w->hole = false;
  cursor_ = end;
  return Next::kWindow;
}

}  // namespace tandem::target
