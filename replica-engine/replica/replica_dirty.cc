// Replica: the dirty map, the activity log and the asynchronous persist of
// the record (replica.h); the lifecycle, generations and resize are in
// replica.cc.
#include "replica-engine/replica/replica.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace tandem::replica {

Status Replica::CheckRange(uint64_t offset, uint64_t length) const {
  const ReplicaMetadata& md = meta_->current();
  if (md.dirty_region_size == 0) {
    return Status::InvalidArgument("replica " + dir_ + " has no dirty map");
  }
  if (length == 0) return Status::InvalidArgument("empty dirty-map range");
  if (offset > md.size || length > md.size - offset) {
    return Status::OutOfRange("range " + std::to_string(offset) + "+" + std::to_string(length) +
                              " is beyond the replica size " + std::to_string(md.size));
  }
  return Status::Ok();
}

bool Replica::IsRegionDirty(uint64_t region) const {
  const std::vector<uint8_t>& map = meta_->current().dirty_map;
  if (region / 8 >= map.size()) return false;
  return (map[region / 8] & (1u << (region % 8))) != 0;
}

bool Replica::SetRegions(uint64_t first, uint64_t last, bool dirty) {
  std::vector<uint8_t>& map = meta_->mutable_current()->dirty_map;
  bool changed = false;
  for (uint64_t r = first; r <= last; ++r) {
    uint8_t& byte = map[r / 8];
    const uint8_t mask = static_cast<uint8_t>(1u << (r % 8));
    const uint8_t want =
        dirty ? static_cast<uint8_t>(byte | mask) : static_cast<uint8_t>(byte & ~mask);
    if (want != byte) {
      byte = want;
      changed = true;
    }
  }
  return changed;
}

bool Replica::NoteWrite(uint64_t offset, uint64_t length) {
  ReplicaMetadata* md = meta_->mutable_current();
  bool changed = false;
  if (md->tracking_dirty) {
    const uint32_t region = md->dirty_region_size;
    changed = SetRegions(offset / region, (offset + length - 1) / region, true);
  }
  if (const uint32_t ext = md->activity_extent_size; ext != 0) {
    std::vector<uint8_t>& map = md->activity_map;
    for (uint64_t e = offset / ext; e <= (offset + length - 1) / ext; ++e) {
      ++al_inflight_[e];
      const uint8_t mask = static_cast<uint8_t>(1u << (e % 8));
      if ((map[e / 8] & mask) == 0) {
        map[e / 8] |= mask;
        changed = true;
      }
    }
  }
  if (changed) {
    dirty_unsynced_ = true;
    ++change_seq_;
  }
  // Conservative: while any bit is unsynced, even a write whose own bits were
  // already set may be relying on a bit another pending write set, so it
  // waits for the same SyncDirty() (which covers all of them at once).
  return !dirty_unsynced_;
}

void Replica::NoteWriteDone(uint64_t offset, uint64_t length) {
  const uint32_t ext = meta_->current().activity_extent_size;
  if (ext == 0) return;
  for (uint64_t e = offset / ext; e <= (offset + length - 1) / ext; ++e) {
    if (al_inflight_[e] > 0 && --al_inflight_[e] == 0) al_quiesced_[e] = ++activity_seq_;
  }
}

uint64_t Replica::NoteFlushReceived() { return ++activity_seq_; }

void Replica::NoteFlushDone(uint64_t flush_seq, uint64_t now_ns) {
  if (meta_->current().activity_extent_size == 0) return;
  // A FLUSH covers every write completed before it was received; one
  // received later covers more, so only the highest receipt counts.
  flush_max_ = std::max(flush_max_, flush_seq);
  if (flush_count_ == kFlushRing) {
    // Full: fold into the newest entry (its later time only delays retiring).
    FlushDone& last = flush_ring_[(flush_head_ + flush_count_ - 1) % kFlushRing];
    last.done_ns = now_ns;
    last.upto = flush_max_;
    return;
  }
  flush_ring_[(flush_head_ + flush_count_) % kFlushRing] = FlushDone{now_ns, flush_max_};
  ++flush_count_;
}

uint64_t Replica::RetireActivity(uint64_t now_ns, uint64_t delay_ns) {
  ReplicaMetadata* md = meta_->mutable_current();
  if (md->activity_extent_size == 0 || closed_) return 0;
  while (flush_count_ > 0 && flush_ring_[flush_head_].done_ns + delay_ns <= now_ns) {
    retire_upto_ = std::max(retire_upto_, flush_ring_[flush_head_].upto);
    flush_head_ = (flush_head_ + 1) % kFlushRing;
    --flush_count_;
  }
  if (retire_upto_ == 0) return 0;
  std::vector<uint8_t>& map = md->activity_map;
  uint64_t cleared = 0;
  for (size_t i = 0; i < map.size(); ++i) {
    uint8_t byte = map[i];
    if (byte == 0) continue;
    if (any_sticky_) byte &= static_cast<uint8_t>(~al_sticky_[i]);
    for (int b = 0; b < 8 && byte != 0; ++b, byte >>= 1) {
      if ((byte & 1) == 0) continue;
      const uint64_t e = uint64_t{i} * 8 + b;
      // Nothing in flight, and its last write completed before a FLUSH was
      // received that has completed (long enough ago).
      if (al_inflight_[e] == 0 && al_quiesced_[e] < retire_upto_) {
        map[i] &= static_cast<uint8_t>(~(1u << b));
        ++cleared;
      }
    }
  }
  if (cleared > 0) ++clear_seq_;
  return cleared;
}

uint64_t Replica::activity_count() const {
  uint64_t n = 0;
  for (uint8_t b : meta_->current().activity_map) n += static_cast<uint64_t>(__builtin_popcount(b));
  return n;
}

Status Replica::SyncDirty() {
  if (!dirty_unsynced_) return Status::Ok();
  TANDEM_RETURN_IF_ERROR(CheckCanUpdate());
  return SyncRecord();
}

Result<bool> Replica::NoteMarkDirty(uint64_t offset, uint64_t length) {
  if (closed_) return Status::FailedPrecondition("replica " + dir_ + " is closed");
  TANDEM_RETURN_IF_ERROR(CheckRange(offset, length));
  const uint32_t region = meta_->current().dirty_region_size;
  if (SetRegions(offset / region, (offset + length - 1) / region, true)) {
    dirty_unsynced_ = true;
    ++change_seq_;
  }
  // As NoteWrite: while anything is unsynced, even bits already set in
  // memory may be waiting for the same persist.
  return !dirty_unsynced_;
}

Result<bool> Replica::NoteClearDirty(uint64_t offset, uint64_t length) {
  if (closed_) return Status::FailedPrecondition("replica " + dir_ + " is closed");
  TANDEM_RETURN_IF_ERROR(CheckRange(offset, length));
  const ReplicaMetadata& md = meta_->current();
  const uint32_t region = md.dirty_region_size;
  const uint64_t end = offset + length;
  if (offset % region != 0 || (end % region != 0 && end != md.size)) {
    return Status::InvalidArgument("clear range " + std::to_string(offset) + "+" +
                                   std::to_string(length) + " is not aligned to the " +
                                   std::to_string(region) + "-byte dirty regions");
  }
  // Cleared in memory now: a write (or MARK_DIRTY) received from here on
  // sets its bit again and waits for a persist encoded after that, so a
  // region re-dirtied meanwhile is never cleared on disk by this request.
  if (SetRegions(offset / region, (end - 1) / region, false)) {
    dirty_unsynced_ = true;
    ++change_seq_;
  }
  return !dirty_unsynced_;
}

Status Replica::MarkDirty(uint64_t offset, uint64_t length) {
  TANDEM_RETURN_IF_ERROR(CheckCanUpdate());
  TANDEM_ASSIGN_OR_RETURN(bool durable, NoteMarkDirty(offset, length));
  return durable ? Status::Ok() : SyncRecord();
}

Status Replica::ClearDirty(uint64_t offset, uint64_t length) {
  TANDEM_RETURN_IF_ERROR(CheckCanUpdate());
  TANDEM_ASSIGN_OR_RETURN(bool durable, NoteClearDirty(offset, length));
  // A failed Sync leaves the bits cleared in memory but set on disk; that is
  // the safe direction (the disk over-reports), and the next Sync retries.
  return durable ? Status::Ok() : SyncRecord();
}

Status Replica::StartPersist(backend::StorageBackend* backend, backend::IoDoneFn done, void* ctx) {
  TANDEM_RETURN_IF_ERROR(CheckCanUpdate());
  if (direct_meta_fd_ < 0) return Status::FailedPrecondition("no O_DIRECT meta handle");
  const size_t slot = meta_->slot_size();
  if (slot > UINT32_MAX) return Status::FailedPrecondition("metadata slot too large");
  if (persist_buf_ == nullptr) {
    // Kept for the replica's life: one slot, allocated at the first persist.
    persist_buf_.reset(
        static_cast<uint8_t*>(std::aligned_alloc(backend::kDirectIoAlignment, slot)));
    if (persist_buf_ == nullptr) return Status::ResourceExhausted("metadata slot buffer");
  }
  // The image is a snapshot: bits set after this wait for the next persist.
  TANDEM_RETURN_IF_ERROR(meta_->EncodeNext(persist_buf_.get()));
  persist_covers_ = change_seq_;
  persist_clears_ = clear_seq_;
  persist_req_ = backend::IoRequest{};
  persist_req_.op = backend::IoOp::kWrite;
  // FUA (RWF_DSYNC): durable at completion, with no separate flush; the slot's
  // blocks were allocated and synced at Create, so nothing else needs syncing.
  persist_req_.flags = backend::kFlagFua;
  persist_req_.fd = direct_meta_fd_;
  persist_req_.offset = meta_->next_slot_offset();
  persist_req_.length = static_cast<uint32_t>(slot);
  persist_req_.buf = persist_buf_.get();
  persist_req_.done = done;
  persist_req_.ctx = ctx;
  persist_in_flight_ = true;
  backend->Queue(&persist_req_);
  return Status::Ok();
}

Status Replica::FinishPersist(int32_t result) {
  persist_in_flight_ = false;
  if (result == static_cast<int32_t>(persist_req_.length)) {
    meta_->CommitNext();
    durable_seq_ = std::max(durable_seq_, persist_covers_);
    dirty_unsynced_ = durable_seq_ != change_seq_;
    clear_durable_ = std::max(clear_durable_, persist_clears_);
    return Status::Ok();
  }
  // The slot may be torn; the current slot still holds the previous record.
  // Writes waiting for these bits fail; bumping the sequence makes the next
  // write that needs them (already set in memory) wait for a fresh persist.
  failed_seq_ = persist_covers_;
  ++change_seq_;
  dirty_unsynced_ = true;
  if (result < 0) return PosixError("persisting metadata of " + dir_, -result);
  return Status::Internal("persisting metadata of " + dir_ + ": short write of " +
                          std::to_string(result) + " bytes");
}

}  // namespace tandem::replica
