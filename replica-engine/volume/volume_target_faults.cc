// Faults, generation bumps, the quorum wait and fencing: what happens when a
// replica leaves, so that nothing is acknowledged that is not on every
// serving replica (docs/architecture.md "Volume target", "Who may
// acknowledge").

#include <time.h>

#include <algorithm>

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/volume/volume_target_impl.h"

namespace tandem::target {

using protocol::Opcode;
using protocol::WireStatus;

namespace {
constexpr const char* kTag = "volume_target";

uint64_t RealtimeMicros() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000ull + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}
}  // namespace

void VolumeTargetImpl::UpdateState() {
  if (state_ == TargetState::kFenced || state_ == TargetState::kStarting) return;
  uint32_t healthy = replicas_.HealthyMask();
  if (healthy == 0) {
    state_ = TargetState::kFailed;
  } else if (healthy == replicas_.AllMask()) {
    state_ = TargetState::kReady;
  } else {
    state_ = TargetState::kDegraded;
  }
}

void VolumeTargetImpl::Fault(ReplicaSlot* r, const Status& why) {
  if (destroying_) return;
  ++r->errors;
  if (r->state != ReplicaState::kHealthy && r->state != ReplicaState::kRebuilding) return;
  if (r->state == ReplicaState::kRebuilding && r->index == rebuild_.destination()) {
    rebuild_.Abort(why.ToString());
  }
  // A REBUILDING replica leaving also needs the bump: what it misses from now
  // on must be in the dirty maps for its rebuild to resume.
  r->state = ReplicaState::kFaulted;
  r->faulted_here = true;
  r->next_reconnect_ns = MonotonicNanos() + options_.reconnect_interval_ms * 1000000ull;
  r->last_error = why.ToString();
  replicas_.ScheduleClose(*r);
  need_bump_ = true;
  TLOG_WARN(kTag, "volume '%s': replica %s:%u FAULTED: %s", options_.volume_id.c_str(),
            r->endpoint.host.c_str(), r->endpoint.port, why.ToString().c_str());
  UpdateState();
  loop_->Wake();  // BeforeWait closes the client and starts the bump
}

void VolumeTargetImpl::Fence(const std::string& why) {
  if (state_ == TargetState::kFenced) return;
  last_error_ = "fenced: " + why;
  TLOG_WARN(kTag, "volume '%s' epoch %llu FENCED: %s", options_.volume_id.c_str(),
            static_cast<unsigned long long>(options_.epoch), why.c_str());
  state_ = TargetState::kFenced;
  rebuild_.Abort("fenced");
  replicas_.FaultAllForFencing();
  loop_->Wake();
}

// One call to the authority at a time (answers must apply in order).
// kShrink: before a bump below a majority, the survivors at the next id.
// kGrow: a rebuilt replica rejoined, the healthy ones at the current id.
// kClear: a majority serves again, back to the majority rule.
void VolumeTargetImpl::AskAuthority(AuthorityAsk ask, uint32_t serving) {
  InSyncUpdate u;
  u.volume_id = options_.volume_id;
  u.epoch = options_.epoch;
  // Increasing across this target's calls, and across the targets of one
  // epoch (a restage under one publish starts a new target at the same
  // epoch): the wall clock in microseconds, or one more than the last.
  authority_seq_ = std::max(authority_seq_ + 1, RealtimeMicros());
  u.seq = authority_seq_;
  u.generation = replicas_.generation() + (ask == AuthorityAsk::kShrink ? 1 : 0);
  if (ask != AuthorityAsk::kClear) {
    u.generation_id =
        ask == AuthorityAsk::kShrink ? replicas_.next_generation_id() : replicas_.generation_id();
    for (const ReplicaSlot& r : replicas_) {
      if (serving & r.bit()) u.replica_ids.push_back(r.replica_id);
    }
  }
  shrink_pending_ = true;
  static const char* const kWhat[] = {"shrink", "grow", "clear"};
  const char* what = kWhat[static_cast<int>(ask)];
  TLOG_WARN(kTag,
            "volume '%s': %d of %d replicas serving: asking the authority to %s the in-sync set",
            options_.volume_id.c_str(), __builtin_popcount(serving), replicas_.MemberCount(), what);
  std::shared_ptr<VolumeTargetImpl*> ref = self_ref_;
  auto done = [ref, serving, ask, what, id = u.generation_id](Status st) {
    VolumeTargetImpl* self = *ref;
    if (self == nullptr) return;
    self->shrink_pending_ = false;
    if (st.ok()) {
      self->replicas_.set_in_sync(ask == AuthorityAsk::kClear ? 0 : serving, id);
      self->record_known_ = ask != AuthorityAsk::kClear;
      if (ask != AuthorityAsk::kShrink) self->grow_due_ = false;
      TLOG_INFO(kTag, "volume '%s': the authority recorded the in-sync %s",
                self->options_.volume_id.c_str(), what);
    } else if (st.code() == StatusCode::kFailedPrecondition) {
      self->Fence("the membership authority refused: " + st.ToString());
    } else {
      // The outcome is unknown (the answer was lost, a deadline expired, the
      // controller aborted): the call may have been recorded. So a record may
      // exist, and the generation moves only once a later call has moved or
      // cleared it (BumpAllowed); otherwise a record of this call's id could
      // vouch for replicas that miss the writes after the bump.
      self->record_known_ = true;
      self->last_error_ =
          std::string("in-sync ") + what + " not known to be recorded: " + st.ToString();
      self->shrink_retry_ns_ =
          MonotonicNanos() +
          std::max<uint64_t>(self->options_.reconnect_interval_ms, 100) * 1000000ull;
    }
    self->loop_->Wake();
  };
  if (ask == AuthorityAsk::kShrink) {
    options_.authority->ShrinkInSync(u, std::move(done));
  } else {
    options_.authority->GrowInSync(u, std::move(done));
  }
}

bool VolumeTargetImpl::BumpAllowed(uint32_t healthy) const {
  if (!replicas_.AckAllowed(healthy)) return false;
  // A record names a generation id that rebuilt replicas may hold too: the
  // generation moves only with the record moved first (RecordedFor), or gone.
  return options_.authority == nullptr || !record_known_ || replicas_.RecordedFor(healthy);
}

void VolumeTargetImpl::MaybeGrowInSync() {
  if (!grow_due_ || options_.authority == nullptr || !record_known_) {
    grow_due_ = false;
    return;
  }
  if (need_bump_ || bump_running_ || shrink_pending_ || MonotonicNanos() < shrink_retry_ns_) return;
  if (state_ != TargetState::kReady && state_ != TargetState::kDegraded) return;
  uint32_t healthy = replicas_.HealthyMask();
  AskAuthority(replicas_.Majority(healthy) ? AuthorityAsk::kClear : AuthorityAsk::kGrow, healthy);
}

void VolumeTargetImpl::FailQuorumWaiters() {
  while (IoCtx* c = bump_waiters_.PopFront()) Finish(c, StatusCode::kUnavailable);
  // Writes waiting for the bump fail; reads keep their place.
  BlockRequestQueue pending;
  pending.SpliceBack(&waiting_);
  BlockRequestQueue keep;
  while (BlockRequest* req = pending.PopFront()) {
    if (NeedsBump(req->op)) {
      Complete(req, StatusCode::kUnavailable);
    } else {
      keep.PushBack(req);
    }
  }
  waiting_.SpliceFront(&keep);
}

void VolumeTargetImpl::StartBump() {
  uint32_t healthy = replicas_.HealthyMask();
  if (healthy == 0) {
    need_bump_ = false;
    return;
  }
  if (!BumpAllowed(healthy)) {
    // Less than a majority: nothing that skipped a replica is acknowledged
    // and no new generation starts (a minority's generation would diverge
    // from the majority's). Writes wait for replicas to come back, or for the
    // authority to record the smaller in-sync set (or, with a majority, to
    // clear its record); FailQuorumWaiters bounds it.
    bool majority = replicas_.AckAllowed(healthy);
    uint64_t now = MonotonicNanos();
    if (quorum_lost_ns_ == 0) {
      quorum_lost_ns_ = now;
      last_error_ = std::to_string(__builtin_popcount(healthy)) + " of " +
                    std::to_string(replicas_.MemberCount()) +
                    (majority ? " replicas serving: writes wait for the authority to clear the "
                                "in-sync record"
                              : " replicas serving: writes wait for a majority");
      TLOG_WARN(kTag, "volume '%s': %s", options_.volume_id.c_str(), last_error_.c_str());
    }
    if (options_.authority != nullptr && !shrink_pending_ && now >= shrink_retry_ns_) {
      AskAuthority(majority ? AuthorityAsk::kClear : AuthorityAsk::kShrink, healthy);
    }
    return;
  }
  if (quorum_lost_ns_ != 0) {
    quorum_lost_ns_ = 0;
    last_error_.clear();
  }
  need_bump_ = false;
  bump_running_ = true;
  bump_generation_ = replicas_.generation() + 1;
  // The new generation's id, and ours on the front of its history.
  replicas_.EncodeNextRecord(&bump_payload_);
  bump_remaining_ = 0;
  // Track dirty regions while any replica is not HEALTHY (and keep tracking
  // once on: only StartUntrack turns it off, after clearing the maps).
  bump_track_ = replicas_.tracking() || healthy != replicas_.AllMask();
  for (ReplicaSlot& r : replicas_) {
    if (!(healthy & r.bit())) continue;
    ClientRequest& s = bump_sub_[r.index];
    s.op = Opcode::kSetGeneration;
    s.flags = bump_track_ ? protocol::kFlagTrackDirty : 0;
    s.offset = bump_generation_;
    s.length = static_cast<uint32_t>(bump_payload_.size());
    s.buf = bump_payload_.data();
    ++bump_remaining_;
  }
  TLOG_INFO(kTag, "volume '%s': bumping generation %llu -> %llu on %u replica(s)",
            options_.volume_id.c_str(), static_cast<unsigned long long>(replicas_.generation()),
            static_cast<unsigned long long>(bump_generation_), bump_remaining_);
  // Submit after counting: a submit may complete (fail) re-entrantly later in
  // this loop turn, never inside Submit, but keep the count exact regardless.
  for (ReplicaSlot& r : replicas_) {
    if (healthy & r.bit()) r.channel->Submit(&bump_sub_[r.index]);
  }
}

void VolumeTargetImpl::OnBumpDone(ClientRequest* sub) {
  VolumeTargetImpl* self = static_cast<VolumeTargetImpl*>(sub->ctx);
  ReplicaSlot& r = self->replicas_[static_cast<int>(sub - self->bump_sub_)];
  if (sub->status == StatusCode::kOk) {
    r.generation = self->bump_generation_;
    r.info.generation_id = self->replicas_.next_generation_id();
  } else if (sub->wire_status == WireStatus::kStaleEpoch) {
    self->Fence("SET_GENERATION refused: stale epoch");
  } else {
    self->Fault(&r, Status(sub->status, "SET_GENERATION failed"));
  }
  if (--self->bump_remaining_ != 0) return;
  self->bump_running_ = false;
  self->replicas_.AdoptBump(self->bump_generation_, self->bump_payload_);
  if (self->bump_track_ && !self->replicas_.tracking()) {
    self->replicas_.NoteTracking(self->bump_generation_);
  }
  self->ReleaseBumpWaiters();
}

// Writes that skipped a replica may complete once the survivors are at the
// new generation, and (if not yet done) after their range is marked dirty.
void VolumeTargetImpl::ReleaseBumpWaiters() {
  IoCtxQueue list;
  list.SpliceBack(&bump_waiters_);
  while (IoCtx* c = list.PopFront()) {
    if (need_bump_ || bump_running_) {  // another replica left meanwhile: wait for the next bump
      bump_waiters_.PushFront(c);
    } else if (c->req->op == BlockOp::kFlush) {
      Finish(c, StatusCode::kOk);
    } else if (c->marked) {
      FinishWrite(c);
    } else {
      StartMarkDirty(c);
    }
  }
  loop_->Wake();
}

}  // namespace tandem::target
