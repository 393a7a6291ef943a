// The rebuild's I/O driver; see rebuild_job.h for the walk and
// rebuild_plan.h for what is copied.

#include "replica-engine/volume/rebuild_job.h"

#include <algorithm>
#include <cstdlib>

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/volume/volume_target_impl.h"

namespace tandem::target {

using protocol::Opcode;

namespace {
constexpr const char* kTag = "rebuild";
}  // namespace

RebuildJob::RebuildJob(VolumeTargetImpl* target, uint64_t rate_bytes_per_sec)
    : t_(target), bucket_(rate_bytes_per_sec, protocol::kMaxIoSize) {}

// ---------------------------------------------------------------- start

void RebuildJob::Start(ReplicaSlot* dest) {
  const uint64_t size = t_->size_;
  dest_ = dest->index;
  source_ = -1;
  request_ = Request::kNone;
  req_target_ = -1;
  map_replica_ = -1;
  map_offset_ = 0;
  map_activity_ = false;
  dest_activity_done_ = false;
  generation_payload_.clear();
  last_cursor_persist_ = 0;
  finish_generation_ = 0;
  started_ns_ = MonotonicNanos();
  rate_mark_ns_ = started_ns_;
  rate_mark_done_ = 0;
  rate_ = 0;
  bucket_.Reset(started_ns_);
  for (Window& w : windows_) {
    if (!w.buf) w.buf.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, protocol::kMaxIoSize)));
    w.req.ctx = this;
    w.req.done = &RebuildJob::OnDone;
    w.req_target = -1;
  }
  reply_.resize(protocol::kMaxPayload);
  req_.ctx = this;
  req_.done = &RebuildJob::OnDone;
  // From here on every live write reaches the destination too.
  dest->state = ReplicaState::kRebuilding;
  drain_seq_ = t_->dispatch_seq_;
  const protocol::ReplicaInfo& di = dest->info;
  const ReplicaSet& set = t_->replicas_;
  RebuildPlan::Inputs in;
  in.volume_size = size;
  in.tracking = set.tracking();
  in.tracking_since = set.tracking_since();
  in.in_lineage = set.InLineage(di.generation_id);
  in.generation = di.generation;
  in.rebuild_cursor = di.rebuild_cursor;
  in.rebuild_generation = di.rebuild_generation;
  plan_.Reset(size, t_->block_size_, RebuildPlan::Choose(in));
  status_ = RebuildStatus{};
  status_.state = RebuildState::kRunning;
  status_.mode = plan_.mode();
  status_.replica = dest->Address();
  status_.resumed_from = plan_.full_from() == size ? 0 : plan_.full_from();
  status_.rate_limit_bytes_per_sec = bucket_.rate();
  const std::string& volume = t_->options_.volume_id;
  TLOG_INFO(kTag, "volume '%s': %s rebuild of %s (generation %llu -> %llu)%s", volume.c_str(),
            RebuildModeName(plan_.mode()), dest->Address().c_str(),
            static_cast<unsigned long long>(di.generation),
            static_cast<unsigned long long>(set.generation()),
            status_.resumed_from ? ", resuming from the persisted cursor" : "");
  TLOG_DEBUG(kTag,
             "volume '%s': destination cursor %llu at generation %llu, tracking %d since %llu",
             volume.c_str(), static_cast<unsigned long long>(di.rebuild_cursor),
             static_cast<unsigned long long>(di.rebuild_generation), set.tracking() ? 1 : 0,
             static_cast<unsigned long long>(set.tracking_since()));
  phase_ = Phase::kDrain;
  Advance();
}

bool RebuildJob::PickSource() {
  ReplicaSlot* best = nullptr;
  for (ReplicaSlot& r : t_->replicas_) {
    if (r.state != ReplicaState::kHealthy) continue;
    if (best == nullptr || (r.endpoint.local && !best->endpoint.local) ||
        (r.endpoint.local == best->endpoint.local &&
         r.channel->inflight() < best->channel->inflight())) {
      best = &r;
    }
  }
  if (best == nullptr) return false;
  if (source_ != best->index) status_.source = best->Address();
  source_ = best->index;
  return true;
}

bool RebuildJob::Busy() const {
  if (request_ != Request::kNone && request_ != Request::kLockWait) return true;
  for (const Window& w : windows_) {
    if (w.request != Request::kNone && w.request != Request::kLockWait) return true;
  }
  return false;
}

// Below this byte everything is on the destination: the lowest window not
// yet done, or the planning cursor.
uint64_t RebuildJob::Checkpoint() const {
  uint64_t c = plan_.cursor();
  for (const Window& w : windows_) {
    if (w.request != Request::kNone) c = std::min(c, w.plan.offset);
  }
  return c;
}

// ---------------------------------------------------------------- the walk

void RebuildJob::Advance() {
  if (phase_ != Phase::kCopy && request_ != Request::kNone) return;  // a reply is due
  if (phase_ == Phase::kIdle) return;
  if (phase_ == Phase::kDrain) AdvanceDrain();
  if (phase_ == Phase::kDirtyMap) AdvanceDirtyMap();
  if (phase_ == Phase::kCopy) AdvanceCopy();
  if (phase_ == Phase::kFinish) AdvanceFinish();
}

void RebuildJob::AdvanceDrain() {
  // Writes dispatched before the destination was REBUILDING may still be
  // on their way into the survivors' dirty maps: let them finish first.
  if (t_->WritesDispatchedBefore(drain_seq_)) return;
  if (!PickSource()) {
    Failed("no HEALTHY replica to copy from");
    return;
  }
  if (plan_.dirty_limit() == 0) {
    phase_ = Phase::kCopy;
    return;
  }
  phase_ = Phase::kDirtyMap;
  map_replica_ = -1;
  map_offset_ = 0;
}

// Union of the maps of every HEALTHY replica, page by page; then the
// activity logs that join it. Leaves kDirtyMap for kCopy when all are read.
void RebuildJob::AdvanceDirtyMap() {
  if (map_replica_ < 0 || map_offset_ == RebuildPlan::kMapDone) {
    if (!NextMapHolder()) return;  // issued the destination's log, or on to kCopy
  }
  IssueControl(Request::kMap, Opcode::kGetDirtyMap, &t_->replicas_[map_replica_], map_offset_,
               static_cast<uint32_t>(reply_.size()), reply_.data(),
               map_activity_ ? protocol::kFlagActivity : 0);
}

// Moves to the next map to read (true), or reads the destination's log, or
// ends the union (false).
bool RebuildJob::NextMapHolder() {
  int next = -1;
  for (const ReplicaSlot& r : t_->replicas_) {
    if (!map_activity_ && r.index > map_replica_ && r.state == ReplicaState::kHealthy) {
      next = r.index;
      break;
    }
  }
  ReplicaSlot& dest = t_->replicas_[dest_];
  // Only a destination reopened after an unclean shutdown (its engine or
  // host crashed) can have lost writes it had acknowledged: then its log
  // joins the plan. One that merely lost its connection lost nothing; and a
  // resumed full rebuild needs none of it (below its checkpoint everything
  // was flushed before the cursor moved, and the live writes it got are in
  // the survivors' dirty maps).
  // A destination this target did not fault itself (STALE at attach) may
  // also hold writes the last target had in flight that reached it and not
  // the source: its log joins too, and so does the union of the logs the
  // HEALTHY replicas had at attach.
  const bool foreign_fault = !dest.faulted_here;
  const bool lost_unflushed =
      !dest.info.clean_shutdown && plan_.mode() == RebuildMode::kIncremental;
  if (next < 0 && !dest_activity_done_ && plan_.region_size() != 0 && foreign_fault &&
      !t_->start_al_.empty()) {
    plan_.MergeActivity(t_->start_al_, t_->start_al_extent_);
  }
  if (next < 0 && !dest_activity_done_ && plan_.region_size() != 0 &&
      dest.info.activity_count > 0 && (foreign_fault || lost_unflushed)) {
    dest_activity_done_ = true;
    map_activity_ = true;
    map_replica_ = dest_;
    map_offset_ = 0;
    IssueControl(Request::kMap, Opcode::kGetDirtyMap, &dest, 0,
                 static_cast<uint32_t>(reply_.size()), reply_.data(), protocol::kFlagActivity);
    return false;
  }
  if (next < 0) {
    phase_ = Phase::kCopy;
    // Dirty regions below dirty_limit only: above it a resumed full rebuild
    // copies everything anyway.
    uint64_t regions = plan_.DirtyRegionsBelowLimit();
    status_.bytes_total = plan_.BytesToVisit();
    TLOG_INFO(kTag, "volume '%s': %llu dirty region(s) of %llu bytes to copy",
              t_->options_.volume_id.c_str(), static_cast<unsigned long long>(regions),
              static_cast<unsigned long long>(plan_.RegionBytes()));
    return false;
  }
  map_replica_ = next;
  map_offset_ = 0;
  return true;
}

void RebuildJob::AdvanceCopy() {
  if (status_.bytes_total == 0 && plan_.dirty_limit() == 0) status_.bytes_total = t_->size_;
  bool planned_all = false;
  if (!PlanWindows(&planned_all)) return;  // failed
  StartWindows();
  if (phase_ != Phase::kCopy) return;  // failed
  if (MaybeCheckpoint()) return;
  if (!planned_all || request_ != Request::kNone) return;
  for (const Window& w : windows_) {
    if (w.request != Request::kNone) return;
  }
  phase_ = Phase::kFinish;
}

// Plans free windows in volume order and locks their ranges (the control
// request may be busy fetching the allocation map: planning waits for it).
// False when the rebuild failed.
bool RebuildJob::PlanWindows(bool* planned_all) {
  for (Window& w : windows_) {
    if (w.request != Request::kNone) continue;
    if (request_ != Request::kNone) break;
    uint64_t alloc_offset = 0;
    uint32_t alloc_length = 0;
    RebuildPlan::Next next = plan_.NextWindow(&w.plan, &alloc_offset, &alloc_length);
    if (next == RebuildPlan::Next::kDone) {
      *planned_all = true;
      break;
    }
    if (next == RebuildPlan::Next::kNeedAllocation) {
      // `w` stays free until the listing is back.
      if (t_->replicas_[source_].state != ReplicaState::kHealthy && !PickSource()) {
        Failed("no HEALTHY replica to copy from");
        return false;
      }
      IssueControl(Request::kAllocation, Opcode::kGetAllocation, &t_->replicas_[source_],
                   alloc_offset, alloc_length, reply_.data());
      break;
    }
    // Overlapping writes wait from now on.
    w.request = Request::kLockWait;
    w.range.offset = w.plan.offset;
    w.range.length = w.plan.length;
    t_->range_lock_.LockWindow(&w.range);
  }
  return true;
}

// Starts planned windows whose range is quiet, within the rate limit and
// after queued application requests; the lowest offset first, so the
// checkpoint moves on and no window starves for tokens.
void RebuildJob::StartWindows() {
  Window* order[kWindows];
  int n = 0;
  for (Window& w : windows_) {
    if (w.request == Request::kLockWait) order[n++] = &w;
  }
  for (int i = 1; i < n; ++i) {  // insertion sort: n <= kWindows
    for (int j = i; j > 0 && order[j]->plan.offset < order[j - 1]->plan.offset; --j) {
      std::swap(order[j], order[j - 1]);
    }
  }
  // Priority: while the application has requests in flight, the copy keeps
  // at most kWindowsUnderLoad windows going (the rate limit bounds it
  // further); an idle volume gets all of them.
  int busy = 0;
  for (const Window& w : windows_) {
    if (w.request != Request::kNone && w.request != Request::kLockWait) ++busy;
  }
  const int allowed = t_->ApplicationBusy() ? kWindowsUnderLoad : kWindows;
  ReplicaSlot& dest = t_->replicas_[dest_];
  for (int i = 0; i < n && busy < allowed; ++i) {
    Window& w = *order[i];
    if (!w.plan.hole) {
      if (bucket_.Available(MonotonicNanos()) < w.plan.length) break;  // the ticker comes back
      if (t_->RequestsWaitForSlot()) break;
      if (t_->replicas_[source_].state != ReplicaState::kHealthy && !PickSource()) {
        Failed("no HEALTHY replica to copy from");
        return;
      }
    }
    if (!t_->range_lock_.WindowQuiet(w.range)) continue;
    ++busy;
    if (w.plan.hole) {
      IssueWindow(&w, Request::kTrim, Opcode::kTrim, &dest);
    } else {
      bucket_.Take(w.plan.length);
      IssueWindow(&w, Request::kRead, Opcode::kRead, &t_->replicas_[source_]);
    }
    if (phase_ != Phase::kCopy) return;
  }
}

// A checkpoint for a later resume: everything below it is on the
// destination (or in the dirty maps, if it misses writes later). True when
// the cursor's FLUSH went out.
bool RebuildJob::MaybeCheckpoint() {
  const uint64_t cp = Checkpoint();
  if (request_ != Request::kNone || plan_.mode() != RebuildMode::kFull || cp < plan_.full_from() ||
      cp >= t_->size_ || cp - last_cursor_persist_ < t_->options_.rebuild_checkpoint_bytes) {
    return false;
  }
  last_cursor_persist_ = cp;
  EncodeCursor(cp, t_->replicas_.generation());
  // The windows below cp have been answered but may sit in the
  // destination's volatile cache: make them durable before the cursor says
  // so, or a power loss there would resume past lost data.
  IssueControl(Request::kCursorFlush, Opcode::kFlush, &t_->replicas_[dest_], 0, 0, nullptr);
  return true;
}

void RebuildJob::AdvanceFinish() {
  if (request_ != Request::kNone) return;
  // The generation is about to move: finish at the new one. (A bump that
  // waits for a majority may be waiting for this very replica: then finish
  // at the current generation, and the bump includes it.)
  if (t_->GenerationAboutToMove()) return;
  finish_generation_ = t_->replicas_.generation();
  IssueControl(Request::kFlush, Opcode::kFlush, &t_->replicas_[dest_], 0, 0, nullptr);
}

// ---------------------------------------------------------------- requests

void RebuildJob::IssueControl(Request request, Opcode op, ReplicaSlot* r, uint64_t offset,
                              uint32_t length, void* buf, uint16_t flags) {
  request_ = request;
  req_target_ = r->index;
  req_.op = op;
  req_.flags = flags;
  req_.offset = offset;
  req_.length = length;
  req_.buf = buf;
  r->channel->Submit(&req_);
}

void RebuildJob::IssueWindow(Window* w, Request request, Opcode op, ReplicaSlot* r) {
  w->request = request;
  t_->range_lock_.LockWindow(&w->range);  // held until the copy is on the destination
  w->req_target = r->index;
  w->req.op = op;
  w->req.flags = 0;
  w->req.offset = w->plan.offset;
  w->req.length = w->plan.length;
  w->req.buf = op == Opcode::kTrim ? nullptr : w->buf.get();
  r->channel->Submit(&w->req);
}

}  // namespace tandem::target
