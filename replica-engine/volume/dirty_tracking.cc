// Which replica rebuilds next, and the end of dirty tracking: once every
// replica is HEALTHY again the dirty maps have done their job, so they are
// cleared (CLEAR_DIRTY) and tracking stops (SET_GENERATION without
// TRACK_DIRTY). Writes wait during those round trips, as during a bump.

#include <algorithm>

#include "common/logging.h"
#include "replica-engine/volume/volume_target_impl.h"

namespace tandem::target {

using protocol::Opcode;

namespace {
constexpr const char* kTag = "rebuild";
}  // namespace

// Picks the next replica that is connected but not serving, and rebuilds it.
void VolumeTargetImpl::StartNextRebuild() {
  // Requests of the last rebuild (clearing the cursor, aborted windows) may
  // still be in flight.
  if (rebuild_.running() || rebuild_.Busy() || untrack_running_ || shutting_down_) return;
  if (state_ != TargetState::kReady && state_ != TargetState::kDegraded) return;
  for (ReplicaSlot& r : replicas_) {
    if (r.removed || r.state == ReplicaState::kHealthy) continue;
    if (r.channel && r.channel->state() == client::ClientState::kConnected) {
      rebuild_.Start(&r);
      return;
    }
  }
  // Every replica serving again: the dirty maps have done their job.
  if (replicas_.tracking() && replicas_.HealthyMask() == replicas_.AllMask() && !need_bump_ &&
      !bump_running_) {
    StartUntrack();
  }
}

// Writes wait meanwhile (as for a bump), so no write is marked after the
// clear and before the tracking stops... except ones already in flight,
// which only leave extra bits (a later rebuild copies a little more).
void VolumeTargetImpl::StartUntrack() {
  bump_running_ = true;  // writes wait, as for a generation bump
  untrack_running_ = true;
  untrack_clear_done_ = false;
  untrack_clear_offset_ = 0;
  TLOG_INFO(kTag, "volume '%s': every replica HEALTHY: clearing dirty maps",
            options_.volume_id.c_str());
  IssueClearRound();
}

// CLEAR_DIRTY of the next 2 GiB (a multiple of any region size) on every
// HEALTHY replica, then, once the whole volume is clear, SET_GENERATION
// without TRACK_DIRTY.
void VolumeTargetImpl::IssueClearRound() {
  uint32_t healthy = replicas_.HealthyMask();
  bool clear = untrack_clear_offset_ < size_;
  uint64_t off = untrack_clear_offset_;
  uint64_t len = clear ? std::min<uint64_t>(size_ - off, 2ull << 30) : 0;
  untrack_clear_offset_ += len;
  if (!clear) untrack_clear_done_ = true;
  untrack_remaining_ = 0;
  if (!clear) replicas_.EncodeCurrentRecord(&untrack_payload_);  // keep our id and history
  for (ReplicaSlot& r : replicas_) {
    if (!(healthy & r.bit())) continue;
    ClientRequest& s = untrack_sub_[r.index];
    s = ClientRequest{};
    s.ctx = this;
    s.done = &VolumeTargetImpl::OnUntrackDone;
    s.op = clear ? Opcode::kClearDirty : Opcode::kSetGeneration;
    s.offset = clear ? off : replicas_.generation();
    s.length = clear ? static_cast<uint32_t>(len) : static_cast<uint32_t>(untrack_payload_.size());
    s.buf = clear ? nullptr : untrack_payload_.data();
    s.flags = 0;  // SET_GENERATION without TRACK_DIRTY: stop tracking
    ++untrack_remaining_;
  }
  if (untrack_remaining_ == 0) {
    untrack_running_ = false;
    bump_running_ = false;
    return;
  }
  for (ReplicaSlot& r : replicas_) {
    if (healthy & r.bit()) r.channel->Submit(&untrack_sub_[r.index]);
  }
}

void VolumeTargetImpl::OnUntrackDone(ClientRequest* sub) {
  VolumeTargetImpl* self = static_cast<VolumeTargetImpl*>(sub->ctx);
  ReplicaSlot& r = self->replicas_[static_cast<int>(sub - self->untrack_sub_)];
  if (sub->status != StatusCode::kOk) {
    self->Fault(&r, Status(sub->status, "clearing the dirty map failed"));
  }
  if (--self->untrack_remaining_ != 0) return;
  if (!self->need_bump_ && self->replicas_.HealthyMask() == self->replicas_.AllMask()) {
    if (!self->untrack_clear_done_) {
      self->IssueClearRound();
      return;
    }
    self->replicas_.StopTracking();
    TLOG_INFO(kTag, "volume '%s': dirty maps cleared, tracking off",
              self->options_.volume_id.c_str());
  }
  // (A replica left meanwhile: tracking stays on; the bump follows.)
  self->untrack_running_ = false;
  self->bump_running_ = false;
  self->loop_->Wake();
}

}  // namespace tandem::target
