// Online rebuild of one replica of a live VolumeTarget (brief §3 "Rebuild").
//
// The destination is REBUILDING from the moment the rebuild starts: every
// live write goes to it as well (WriteMask). The copy then walks the volume in
// windows of at most kMaxIoSize. For each window it takes the range lock:
// it waits until no live write overlapping the window is in its data phase and
// holds back new ones, READs the window from a HEALTHY source and WRITEs it to
// the destination, and releases the lock. A live write therefore either landed
// on the source before the copy read it, or reaches the destination after the
// copy wrote it: the copy never overwrites newer data.
//
// What is copied:
// - incremental: the regions set in the union of the HEALTHY replicas' dirty
//   maps, when those maps cover everything the destination missed (tracking
//   began no later than the generation after the destination's own);
// - full: every allocated extent of the source (GET_ALLOCATION, i.e.
//   SEEK_DATA/SEEK_HOLE), TRIMming the holes on the destination (cheap where it
//   has a hole too; a half-rebuilt replica may hold data there). A full rebuild persists a cursor
//   on the destination every TargetOptions::rebuild_checkpoint_bytes; a later rebuild of the same
//   replica resumes from it (plus the dirty regions below it) when the dirty maps cover the gap.
// When the copy is done the destination is flushed, moved to the current
// generation and becomes HEALTHY in one loop turn. When every replica is
// HEALTHY again, the dirty maps are cleared and tracking stops.

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/target/volume_target_impl.h"

namespace tandem::target {

using protocol::Opcode;
using protocol::WireStatus;

namespace {
constexpr const char* kTag = "rebuild";
constexpr uint64_t kMaxHole = 1ull << 30;  // one TRIM covers at most this
}  // namespace

const char* RebuildModeName(RebuildMode m) {
  switch (m) {
    case RebuildMode::kNone:
      return "NONE";
    case RebuildMode::kFull:
      return "FULL";
    case RebuildMode::kIncremental:
      return "INCREMENTAL";
  }
  return "UNKNOWN";
}

const char* RebuildStateName(RebuildState s) {
  switch (s) {
    case RebuildState::kIdle:
      return "IDLE";
    case RebuildState::kRunning:
      return "RUNNING";
    case RebuildState::kDone:
      return "DONE";
    case RebuildState::kFailed:
      return "FAILED";
  }
  return "UNKNOWN";
}

// ------------------------------------------------------------- scheduling

// Picks the next replica that is connected but not serving, and rebuilds it.
void VolumeTarget::Impl::StartNextRebuild() {
  // Requests of the last rebuild (clearing the cursor, aborted windows) may
  // still be in flight.
  if (rb_.phase != RbPhase::kIdle || RebuildBusy() || shutting_down_) return;
  if (state_ != TargetState::kReady && state_ != TargetState::kDegraded) return;
  for (Replica& r : replicas_) {
    if (r.removed || r.state == ReplicaState::kHealthy) continue;
    if (r.client && r.client->state() == client::ClientState::kConnected) {
      StartRebuild(&r);
      return;
    }
  }
  // Every replica serving again: the dirty maps have done their job.
  if (tracking_ && HealthyMask() == AllMask() && !need_bump_ && !bump_running_) StartUntrack();
}

void VolumeTarget::Impl::StartRebuild(Replica* dest) {
  Rebuild& rb = rb_;
  rb = Rebuild{};
  rb.dest = dest->index;
  rb.started_ns = MonotonicNanos();
  rb.rate_mark_ns = rb.started_ns;
  rb.tokens_ns = rb.started_ns;
  for (RbWindow& w : rb.win) {
    w.buf.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, protocol::kMaxIoSize)));
    w.req.ctx = this;
    w.req.done = &Impl::OnRbDone;
  }
  rb.reply.resize(protocol::kMaxPayload);
  rb.touched.assign((size_ / protocol::kMaxIoSize + 8) / 8, 0);
  rb.req.ctx = this;
  rb.req.done = &Impl::OnRbDone;
  // From here on every live write reaches the destination too.
  dest->state = ReplicaState::kRebuilding;
  rb.drain_seq = dispatch_seq_;
  const protocol::ReplicaInfo& di = dest->info;
  uint64_t g = di.generation;
  // The dirty maps only describe what a replica of our own history missed:
  // one whose generation id we do not know has diverged, copy everything.
  bool covered = tracking_ && tracking_since_ != 0 && InLineage(di.generation_id);
  if (covered && g >= 1 && tracking_since_ <= g + 1) {
    rb.mode = RebuildMode::kIncremental;
    rb.dirty_limit = size_;
    rb.full_from = size_;
  } else if (covered && di.rebuild_cursor > 0 && di.rebuild_cursor < size_ &&
             tracking_since_ <= di.rebuild_generation + 1) {
    rb.mode = RebuildMode::kFull;
    rb.dirty_limit = di.rebuild_cursor;
    rb.full_from = di.rebuild_cursor;
  } else {
    rb.mode = RebuildMode::kFull;
    rb.dirty_limit = 0;
    rb.full_from = 0;
  }
  rb_status_ = RebuildStatus{};
  rb_status_.state = RebuildState::kRunning;
  rb_status_.mode = rb.mode;
  rb_status_.replica = Address(*dest);
  rb_status_.resumed_from = rb.full_from == size_ ? 0 : rb.full_from;
  rb_status_.rate_limit_bytes_per_sec = options_.rebuild_rate_bytes_per_sec;
  TLOG_INFO(kTag, "volume '%s': %s rebuild of %s (generation %llu -> %llu)%s",
            options_.volume_id.c_str(), RebuildModeName(rb.mode), Address(*dest).c_str(),
            static_cast<unsigned long long>(g), static_cast<unsigned long long>(generation_),
            rb_status_.resumed_from ? ", resuming from the persisted cursor" : "");
  TLOG_DEBUG(kTag,
             "volume '%s': destination cursor %llu at generation %llu, tracking %d since %llu",
             options_.volume_id.c_str(), static_cast<unsigned long long>(di.rebuild_cursor),
             static_cast<unsigned long long>(di.rebuild_generation), tracking_ ? 1 : 0,
             static_cast<unsigned long long>(tracking_since_));
  rb.phase = RbPhase::kDrain;
  RebuildStep();
}

bool VolumeTarget::Impl::PickRebuildSource() {
  Replica* best = nullptr;
  for (Replica& r : replicas_) {
    if (r.state != ReplicaState::kHealthy) continue;
    if (best == nullptr || (r.endpoint.local && !best->endpoint.local) ||
        (r.endpoint.local == best->endpoint.local &&
         r.client->inflight() < best->client->inflight())) {
      best = &r;
    }
  }
  if (best == nullptr) return false;
  if (rb_.source != best->index) rb_status_.source = Address(*best);
  rb_.source = best->index;
  return true;
}

// ------------------------------------------------------------ range lock

bool VolumeTarget::Impl::RangeLockedFor(const BlockRequest* req) const {
  if (rb_.phase != RbPhase::kCopy || req->op == BlockOp::kRead || req->op == BlockOp::kFlush) {
    return false;
  }
  for (const RbWindow& w : rb_.win) {
    if (w.step != RbStep::kNone && req->offset < w.off + w.len &&
        w.off < req->offset + req->length) {
      return true;
    }
  }
  return false;
}

// True when no live write overlapping the window is still in its data phase.
bool VolumeTarget::Impl::WindowLocked(const RbWindow& w) const {
  for (const IoCtx& c : ctx_pool_) {
    if (c.req == nullptr || c.phase != IoCtx::Phase::kData) continue;
    const BlockRequest* q = c.req;
    if (q->op == BlockOp::kRead || q->op == BlockOp::kFlush) continue;
    if (q->offset < w.off + w.len && w.off < q->offset + q->length) return false;
  }
  return true;
}

// Writes held back by the range lock go back to the head of the queue (in
// their order); those still overlapping a window are held again.
void VolumeTarget::Impl::ReleaseRangeLock() {
  if (range_wait_head_ == nullptr) return;
  range_wait_tail_->next_ = wait_head_;
  if (wait_head_ == nullptr) wait_tail_ = range_wait_tail_;
  wait_head_ = range_wait_head_;
  range_wait_head_ = range_wait_tail_ = nullptr;
  loop_->Wake();
}

// A request of the rebuild (control or window) is still in flight.
bool VolumeTarget::Impl::RebuildBusy() const {
  if (rb_.step != RbStep::kNone && rb_.step != RbStep::kLockWait) return true;
  for (const RbWindow& w : rb_.win) {
    if (w.step != RbStep::kNone && w.step != RbStep::kLockWait) return true;
  }
  return false;
}

// Below this byte everything is on the destination: the lowest window not
// yet done, or the planning cursor.
uint64_t VolumeTarget::Impl::Checkpoint() const {
  uint64_t c = rb_.cursor;
  for (const RbWindow& w : rb_.win) {
    if (w.step != RbStep::kNone) c = std::min(c, w.off);
  }
  return c;
}

// ---------------------------------------------------------- the copy loop

void VolumeTarget::Impl::MarkTouched(uint64_t off, uint64_t len) {
  if (rb_.touched.empty() || len == 0) return;
  for (uint64_t c = off / protocol::kMaxIoSize; c <= (off + len - 1) / protocol::kMaxIoSize; ++c) {
    if (c / 8 < rb_.touched.size()) rb_.touched[c / 8] |= static_cast<uint8_t>(1u << (c % 8));
  }
}

bool VolumeTarget::Impl::Touched(uint64_t chunk) const {
  return chunk / 8 < rb_.touched.size() && ((rb_.touched[chunk / 8] >> (chunk % 8)) & 1) != 0;
}

// Marks the regions of every extent set in `map` (one bit per `extent`
// bytes, a multiple of the region size) dirty in the rebuild plan.
void VolumeTarget::Impl::MergeActivity(const std::vector<uint8_t>& map, uint32_t extent) {
  Rebuild& rb = rb_;
  if (extent == 0 || rb.region_size == 0) return;
  for (size_t i = 0; i < map.size(); ++i) {
    for (int bit = 0; map[i] != 0 && bit < 8; ++bit) {
      if (!((map[i] >> bit) & 1)) continue;
      uint64_t off = (i * 8 + bit) * uint64_t{extent};
      uint64_t end = std::min(size_, off + extent);
      for (uint64_t r = off / rb.region_size; r * rb.region_size < end; ++r) {
        if (r / 8 < rb.dirty.size()) rb.dirty[r / 8] |= static_cast<uint8_t>(1u << (r % 8));
      }
    }
  }
}

bool VolumeTarget::Impl::IsDirty(uint64_t region) const {
  size_t byte = region / 8;
  return byte < rb_.dirty.size() && ((rb_.dirty[byte] >> (region % 8)) & 1) != 0;
}

uint64_t VolumeTarget::Impl::Tokens(uint64_t now_ns) {
  uint64_t rate = options_.rebuild_rate_bytes_per_sec;
  if (rate == 0) return UINT64_MAX;
  uint64_t cap = std::max<uint64_t>(protocol::kMaxIoSize, rate / 10);
  uint64_t add = (now_ns - rb_.tokens_ns) * rate / 1000000000ull;
  if (add > 0) {
    rb_.tokens = std::min(cap, rb_.tokens + add);
    rb_.tokens_ns = now_ns;
  }
  return rb_.tokens;
}

// Plans window `w` at rb_.cursor and moves the cursor past it. False when
// there is nothing left. May issue a GET_ALLOCATION (rb_.step = kAlloc) and
// return true without planning `w`.
bool VolumeTarget::Impl::NextWindow(RbWindow* w) {
  Rebuild& rb = rb_;
  uint64_t region = rb.region_size == 0 ? protocol::kMaxIoSize : rb.region_size;
  // Dirty regions below dirty_limit.
  while (rb.cursor < rb.dirty_limit) {
    uint64_t r = rb.cursor / region;
    if (!IsDirty(r)) {
      // Skip clean regions a byte of the map at a time where possible.
      if (r % 8 == 0 && r / 8 < rb.dirty.size() && rb.dirty[r / 8] == 0) {
        rb.cursor = std::min(rb.dirty_limit, (r + 8) * region);
      } else {
        rb.cursor = std::min(rb.dirty_limit, (r + 1) * region);
      }
      continue;
    }
    uint64_t end = (r + 1) * region;
    while (end < rb.dirty_limit && end - rb.cursor < protocol::kMaxIoSize &&
           IsDirty(end / region)) {
      end += region;
    }
    end = std::min({end, rb.dirty_limit, rb.cursor + protocol::kMaxIoSize});
    w->off = rb.cursor;
    w->len = static_cast<uint32_t>(end - rb.cursor);
    w->hole = false;
    rb.cursor = end;
    return true;
  }
  if (rb.cursor < rb.full_from) rb.cursor = rb.full_from;
  if (rb.cursor >= size_) return false;
  // Allocated extents of the source from the cursor on.
  if (rb.cursor >= rb.alloc_end) {
    rb.extents.clear();
    rb.extent_index = 0;
    uint64_t len = std::min<uint64_t>(size_ - rb.cursor, kMaxHole * 2);
    if (replicas_[rb.source].state != ReplicaState::kHealthy && !PickRebuildSource()) {
      RebuildFailed("no HEALTHY replica to copy from");
      return true;
    }
    IssueRb(RbStep::kAlloc, Opcode::kGetAllocation, &replicas_[rb.source], rb.cursor,
            static_cast<uint32_t>(len), rb.reply.data());
    return true;
  }
  while (rb.extent_index < rb.extents.size() &&
         rb.extents[rb.extent_index].first + rb.extents[rb.extent_index].second <= rb.cursor) {
    ++rb.extent_index;
  }
  uint64_t next_data = rb.extent_index < rb.extents.size()
                           ? std::max(rb.extents[rb.extent_index].first, rb.cursor)
                           : rb.alloc_end;
  if (next_data > rb.cursor) {
    // A hole in the source when it was listed: punch it on the destination
    // too, except where a live write has landed since (the listing predates
    // it; the destination has that write). Those chunks are copied from the
    // source as it is under the range lock. Every write that can touch this
    // range before the window completes is dispatched already (newer ones are
    // held by the lock), so its mark is visible here.
    uint64_t hole_end = std::min({next_data, rb.alloc_end, rb.cursor + kMaxHole});
    uint64_t chunk = rb.cursor / protocol::kMaxIoSize;
    if (Touched(chunk)) {
      uint64_t end = std::min(hole_end, (chunk + 1) * protocol::kMaxIoSize);
      w->off = rb.cursor;
      w->len = static_cast<uint32_t>(end - rb.cursor);
      w->hole = false;
      rb.cursor = end;
      return true;
    }
    for (uint64_t c = chunk + 1; c * protocol::kMaxIoSize < hole_end; ++c) {
      if (Touched(c)) {
        hole_end = c * protocol::kMaxIoSize;
        break;
      }
    }
    w->off = rb.cursor;
    w->len = static_cast<uint32_t>(hole_end - rb.cursor);
    w->hole = true;
    rb.cursor = hole_end;
    return true;
  }
  const auto& ext = rb.extents[rb.extent_index];
  uint64_t end = std::min({ext.first + ext.second, rb.alloc_end, rb.cursor + protocol::kMaxIoSize});
  // Windows stay block aligned (extents are file system blocks; be safe).
  w->off = rb.cursor / block_size_ * block_size_;
  end = std::min((end + block_size_ - 1) / block_size_ * block_size_, size_);
  w->len = static_cast<uint32_t>(end - w->off);
  w->hole = false;
  rb.cursor = end;
  return true;
}

void VolumeTarget::Impl::IssueRb(RbStep step, Opcode op, Replica* r, uint64_t off, uint32_t len,
                                 void* buf, uint16_t flags) {
  rb_.step = step;
  rb_.req_target = r->index;
  rb_.req.op = op;
  rb_.req.flags = flags;
  rb_.req.offset = off;
  rb_.req.length = len;
  rb_.req.buf = buf;
  r->client->Submit(&rb_.req);
}

void VolumeTarget::Impl::IssueWin(RbWindow* w, RbStep step, Opcode op, Replica* r) {
  w->step = step;
  w->req_target = r->index;
  w->req.op = op;
  w->req.flags = 0;
  w->req.offset = w->off;
  w->req.length = w->len;
  w->req.buf = op == Opcode::kTrim ? nullptr : w->buf.get();
  r->client->Submit(&w->req);
}

void VolumeTarget::Impl::OnRbDone(ClientRequest* req) {
  Impl* self = static_cast<Impl*>(req->ctx);
  if (req == &self->rb_.req) {
    self->OnRbReply(req);
    return;
  }
  for (RbWindow& w : self->rb_.win) {
    if (&w.req == req) {
      self->OnWinReply(&w);
      return;
    }
  }
}

void VolumeTarget::Impl::OnWinReply(RbWindow* w) {
  Rebuild& rb = rb_;
  RbStep step = w->step;
  w->step = RbStep::kNone;
  if (rb.phase == RbPhase::kIdle) {  // aborted while in flight
    loop_->Wake();
    return;
  }
  Replica& target = replicas_[w->req_target];
  if (w->req.status != StatusCode::kOk) {
    Status why(w->req.status, std::string("rebuild ") +
                                  protocol::OpcodeName(static_cast<uint8_t>(w->req.op)) + " on " +
                                  Address(target) + " failed");
    if (w->req.wire_status == WireStatus::kStaleEpoch) {
      Fence("a replica refused a rebuild request: stale epoch");
      RebuildFailed("fenced");
      return;
    }
    if (w->req_target == rb.dest) {
      Fault(&target, why);  // aborts the rebuild (see Fault)
      ReleaseRangeLock();
      return;
    }
    // The source failed: fault it; the window is copied again from another
    // HEALTHY replica (it stays planned, so overlapping writes stay held).
    w->step = RbStep::kLockWait;
    Fault(&target, why);
    if (rb.phase == RbPhase::kIdle) return;
    if (!PickRebuildSource()) {
      RebuildFailed("no HEALTHY replica left to copy from");
      return;
    }
    loop_->Wake();
    return;
  }
  if (step == RbStep::kRead) {
    IssueWin(w, RbStep::kWrite, Opcode::kWrite, &replicas_[rb.dest]);
    return;
  }
  // kWrite / kTrim: the window is on the destination.
  if (step == RbStep::kWrite) {
    rb_status_.bytes_copied += w->len;
    counters_.rebuild_bytes_copied += w->len;
  }
  rb_status_.bytes_done += w->len;
  ReleaseRangeLock();
  uint64_t now = MonotonicNanos();
  if (now - rb.rate_mark_ns >= 1000000000ull) {
    double secs = static_cast<double>(now - rb.rate_mark_ns) / 1e9;
    double r = static_cast<double>(rb_status_.bytes_done - rb.rate_mark_done) / secs;
    rb.rate = rb.rate == 0 ? r : 0.5 * rb.rate + 0.5 * r;
    rb.rate_mark_ns = now;
    rb.rate_mark_done = rb_status_.bytes_done;
  }
  RebuildStep();
}

// Advances the rebuild as far as it can without waiting for a reply. Called
// after each reply, and from BeforeWait / OnTick while waiting for the range
// lock, the rate limit or a generation bump.
void VolumeTarget::Impl::RebuildStep() {
  Rebuild& rb = rb_;
  if (rb.phase != RbPhase::kCopy && rb.step != RbStep::kNone) return;  // a reply is due
  Replica& dest = replicas_[rb.dest];
  switch (rb.phase) {
    case RbPhase::kIdle:
    case RbPhase::kUntrack:
      return;
    case RbPhase::kDrain:
      // Writes dispatched before the destination was REBUILDING may still be
      // on their way into the survivors' dirty maps: let them finish first.
      for (const IoCtx& c : ctx_pool_) {
        if (c.req != nullptr && c.seq < rb.drain_seq && c.req->op != BlockOp::kRead) return;
      }
      if (!PickRebuildSource()) {
        RebuildFailed("no HEALTHY replica to copy from");
        return;
      }
      if (rb.dirty_limit == 0) {
        rb.phase = RbPhase::kCopy;
        break;
      }
      rb.phase = RbPhase::kDirtyMap;
      rb.map_replica = -1;
      rb.map_offset = 0;
      [[fallthrough]];
    case RbPhase::kDirtyMap: {
      // Union of the maps of every HEALTHY replica, page by page.
      if (rb.map_replica < 0 || rb.map_offset == UINT64_MAX) {
        int next = -1;
        for (const Replica& r : replicas_) {
          if (!rb.map_activity && r.index > rb.map_replica && r.state == ReplicaState::kHealthy) {
            next = r.index;
            break;
          }
        }
        // Only a destination reopened after an unclean shutdown (its engine
        // or host crashed) can have lost writes it had acknowledged: then its
        // log joins the plan. One that merely lost its connection lost
        // nothing; and a resumed full rebuild needs none of it (below its
        // checkpoint everything was flushed before the cursor moved, and the
        // live writes it got are in the survivors' dirty maps).
        // A destination this target did not fault itself (STALE at attach)
        // may also hold writes the last target had in flight that reached
        // it and not the source: its log joins too, and so does the union of
        // the logs the HEALTHY replicas had at attach.
        const bool foreign_fault = !dest.faulted_here;
        const bool lost_unflushed =
            !dest.info.clean_shutdown && rb.mode == RebuildMode::kIncremental;
        if (next < 0 && !rb.dest_activity_done && rb.region_size != 0 && foreign_fault &&
            !start_al_.empty()) {
          MergeActivity(start_al_, start_al_extent_);
        }
        if (next < 0 && !rb.dest_activity_done && rb.region_size != 0 &&
            dest.info.activity_count > 0 && (foreign_fault || lost_unflushed)) {
          rb.dest_activity_done = true;
          rb.map_activity = true;
          rb.map_replica = rb.dest;
          rb.map_offset = 0;
          IssueRb(RbStep::kMap, Opcode::kGetDirtyMap, &dest, 0,
                  static_cast<uint32_t>(rb.reply.size()), rb.reply.data(), protocol::kFlagActivity);
          return;
        }
        if (next < 0) {
          rb.phase = RbPhase::kCopy;
          // Dirty regions below dirty_limit only: above it a resumed full
          // rebuild copies everything anyway.
          uint64_t region = rb.region_size == 0 ? protocol::kMaxIoSize : rb.region_size;
          uint64_t regions = 0;
          for (uint64_t r = 0; r * region < rb.dirty_limit; ++r) regions += IsDirty(r) ? 1 : 0;
          rb_status_.bytes_total = std::min(size_, regions * region);
          if (rb.full_from < size_) rb_status_.bytes_total += size_ - rb.full_from;
          TLOG_INFO(kTag, "volume '%s': %llu dirty region(s) of %llu bytes to copy",
                    options_.volume_id.c_str(), static_cast<unsigned long long>(regions),
                    static_cast<unsigned long long>(region));
          break;
        }
        rb.map_replica = next;
        rb.map_offset = 0;
      }
      IssueRb(RbStep::kMap, Opcode::kGetDirtyMap, &replicas_[rb.map_replica], rb.map_offset,
              static_cast<uint32_t>(rb.reply.size()), rb.reply.data(),
              rb.map_activity ? protocol::kFlagActivity : 0);
      return;
    }
    case RbPhase::kCopy:
    case RbPhase::kFinish:
      break;
  }
  if (rb.phase == RbPhase::kCopy) {
    if (rb_status_.bytes_total == 0 && rb.dirty_limit == 0) rb_status_.bytes_total = size_;
    // Plan free windows in volume order (the control request may be busy
    // fetching the allocation map: planning waits for it).
    bool planned_all = false;
    for (RbWindow& w : rb.win) {
      if (w.step != RbStep::kNone) continue;
      if (rb.step != RbStep::kNone) break;
      if (!NextWindow(&w)) {
        planned_all = true;
        break;
      }
      if (rb.phase != RbPhase::kCopy) return;  // failed
      if (rb.step == RbStep::kAlloc) break;    // w stays free until the map is back
      w.step = RbStep::kLockWait;              // overlapping writes wait from now on
    }
    // Start planned windows whose range is quiet, within the rate limit and
    // after queued application requests; the lowest offset first, so the
    // checkpoint moves on and no window starves for tokens.
    RbWindow* order[kRbWindows];
    int n = 0;
    for (RbWindow& w : rb.win) {
      if (w.step == RbStep::kLockWait) order[n++] = &w;
    }
    for (int i = 1; i < n; ++i) {  // insertion sort: n <= kRbWindows
      for (int j = i; j > 0 && order[j]->off < order[j - 1]->off; --j) {
        std::swap(order[j], order[j - 1]);
      }
    }
    // Priority: while the application has requests in flight, the copy keeps
    // at most kRbWindowsUnderLoad windows going (the rate limit bounds it
    // further); an idle volume gets all of them.
    int busy = 0;
    for (const RbWindow& w : rb.win) {
      if (w.step != RbStep::kNone && w.step != RbStep::kLockWait) ++busy;
    }
    const int allowed = (inflight_ > 0 || wait_head_ != nullptr) ? kRbWindowsUnderLoad : kRbWindows;
    for (int i = 0; i < n && busy < allowed; ++i) {
      RbWindow& w = *order[i];
      if (!w.hole) {
        if (Tokens(MonotonicNanos()) < w.len) break;  // the ticker comes back
        if (wait_head_ != nullptr && free_ctx_ == nullptr) break;
        if (replicas_[rb.source].state != ReplicaState::kHealthy && !PickRebuildSource()) {
          RebuildFailed("no HEALTHY replica to copy from");
          return;
        }
      }
      if (!WindowLocked(w)) continue;
      ++busy;
      if (w.hole) {
        IssueWin(&w, RbStep::kTrim, Opcode::kTrim, &dest);
      } else {
        if (options_.rebuild_rate_bytes_per_sec != 0) rb.tokens -= w.len;
        IssueWin(&w, RbStep::kRead, Opcode::kRead, &replicas_[rb.source]);
      }
      if (rb.phase != RbPhase::kCopy) return;
    }
    // A checkpoint for a later resume: everything below it is on the
    // destination (or in the dirty maps, if it misses writes later).
    uint64_t cp = Checkpoint();
    if (rb.step == RbStep::kNone && rb.mode == RebuildMode::kFull && cp >= rb.full_from &&
        cp < size_ && cp - rb.last_cursor_persist >= options_.rebuild_checkpoint_bytes) {
      rb.last_cursor_persist = cp;
      EncodeCursor(cp, generation_);
      // The windows below cp have been answered but may sit in the
      // destination's volatile cache: make them durable before the cursor
      // says so, or a power loss there would resume past lost data.
      IssueRb(RbStep::kCursorFlush, Opcode::kFlush, &dest, 0, 0, nullptr);
      return;
    }
    if (!planned_all || rb.step != RbStep::kNone) return;
    for (const RbWindow& w : rb.win) {
      if (w.step != RbStep::kNone) return;
    }
    rb.phase = RbPhase::kFinish;
  }
  if (rb.phase == RbPhase::kFinish) {
    if (rb.step != RbStep::kNone) return;
    // The generation is about to move: finish at the new one. (A bump that
    // waits for a majority may be waiting for this very replica: then finish
    // at the current generation, and the bump includes it.)
    if (bump_running_ || (need_bump_ && AckAllowed(HealthyMask()))) return;
    rb.finish_generation = generation_;
    IssueRb(RbStep::kFlush, Opcode::kFlush, &dest, 0, 0, nullptr);
  }
}

void VolumeTarget::Impl::OnRbReply(ClientRequest* req) {
  Rebuild& rb = rb_;
  RbStep step = rb.step;
  rb.step = RbStep::kNone;
  Replica& target = replicas_[rb.req_target];
  if (rb.phase == RbPhase::kIdle) {  // finished or aborted while in flight
    loop_->Wake();                   // BeforeWait may start the next one
    return;
  }
  if (req->status != StatusCode::kOk) {
    Status why(req->status, std::string("rebuild ") +
                                protocol::OpcodeName(static_cast<uint8_t>(req->op)) + " on " +
                                Address(target) + " failed");
    if (req->wire_status == WireStatus::kStaleEpoch) {
      Fence("a replica refused a rebuild request: stale epoch");
      RebuildFailed("fenced");
      return;
    }
    if (rb.req_target == rb.dest) {
      Fault(&target, why);  // aborts the rebuild (see Fault)
      return;
    }
    // The source (or a map holder) failed: fault it and carry on from
    // another HEALTHY replica, redoing the current step.
    Fault(&target, why);
    if (rb.phase == RbPhase::kIdle) return;
    if (!PickRebuildSource()) {
      RebuildFailed("no HEALTHY replica left to copy from");
      return;
    }
    if (rb.phase == RbPhase::kDirtyMap) {
      // Start the union again: a map holder went away mid-way.
      rb.dirty.clear();
      rb.region_size = 0;
      rb.map_replica = -1;
      rb.map_activity = false;
      rb.dest_activity_done = false;
    }
    loop_->Wake();
    return;
  }
  switch (step) {
    case RbStep::kMap: {
      protocol::DirtyMapChunk chunk;
      Status st = protocol::DecodeDirtyMap(
          std::string_view(reinterpret_cast<const char*>(rb.reply.data()), req->reply_length),
          &chunk);
      if (!st.ok()) {
        RebuildFailed("bad GET_DIRTY_MAP reply: " + st.ToString());
        return;
      }
      if (rb.map_activity) {
        // The destination's log: its extents (multiples of the region size)
        // become dirty regions.
        uint64_t first = rb.map_offset / chunk.region_size;
        std::vector<uint8_t> page(protocol::DirtyMapBytes(size_, chunk.region_size), 0);
        for (size_t i = 0; i < chunk.bitmap.size() && first / 8 + i < page.size(); ++i) {
          page[first / 8 + i] = static_cast<uint8_t>(chunk.bitmap[i]);
        }
        MergeActivity(page, chunk.region_size);
        uint64_t covered = (first + chunk.bitmap.size() * 8) * chunk.region_size;
        rb.map_offset = (chunk.bitmap.empty() || covered >= size_) ? UINT64_MAX : covered;
        break;
      }
      if (rb.region_size == 0) {
        rb.region_size = chunk.region_size;
        rb.dirty.assign(protocol::DirtyMapBytes(size_, chunk.region_size), 0);
      } else if (chunk.region_size != rb.region_size) {
        RebuildFailed("replicas disagree on the dirty region size");
        return;
      }
      size_t first = static_cast<size_t>(rb.map_offset / rb.region_size / 8);
      for (size_t i = 0; i < chunk.bitmap.size() && first + i < rb.dirty.size(); ++i) {
        rb.dirty[first + i] |= static_cast<uint8_t>(chunk.bitmap[i]);
      }
      uint64_t covered = (first + chunk.bitmap.size()) * 8ull * rb.region_size;
      rb.map_offset = (chunk.bitmap.empty() || covered >= size_) ? UINT64_MAX : covered;
      break;
    }
    case RbStep::kAlloc: {
      protocol::AllocationList list;
      Status st = protocol::DecodeAllocation(
          std::string_view(reinterpret_cast<const char*>(rb.reply.data()), req->reply_length),
          &list);
      if (st.ok()) st = protocol::CheckAllocationAnswers(list, req->offset, req->length);
      if (!st.ok()) {
        RebuildFailed("bad GET_ALLOCATION reply: " + st.ToString());
        return;
      }
      rb.extents.clear();
      for (uint32_t i = 0; i < list.count; ++i) {
        protocol::AllocationExtent e = list.extent(i);
        rb.extents.emplace_back(e.offset, e.length);
      }
      rb.extent_index = 0;
      rb.alloc_end = std::min(list.covered_end, size_);
      break;
    }
    case RbStep::kCursorFlush:
      IssueRb(RbStep::kCursor, Opcode::kSetRebuildCursor, &replicas_[rb.dest], 0,
              sizeof(rb.cursor_payload), rb.cursor_payload);
      return;
    case RbStep::kCursor:
      break;
    case RbStep::kFlush:
      // The destination takes our generation id and history with the number.
      EncodeCurrentRecord(&rb.gen_payload);
      IssueRb(RbStep::kSetGen, Opcode::kSetGeneration, &replicas_[rb.dest], rb.finish_generation,
              static_cast<uint32_t>(rb.gen_payload.size()), rb.gen_payload.data(),
              tracking_ ? protocol::kFlagTrackDirty : 0);
      return;
    case RbStep::kSetGen:
      if (bump_running_ || generation_ != rb.finish_generation ||
          (need_bump_ && AckAllowed(HealthyMask()))) {
        // The survivors moved on meanwhile: catch up before serving.
        rb.phase = RbPhase::kFinish;
        loop_->Wake();
        return;
      }
      EncodeCursor(0, 0);
      IssueRb(RbStep::kClearCursor, Opcode::kSetRebuildCursor, &replicas_[rb.dest], 0,
              sizeof(rb.cursor_payload), rb.cursor_payload);
      // Serving now: the destination has every byte and the generation.
      FinishRebuild();
      return;
    case RbStep::kClearCursor:
    case RbStep::kNone:
    case RbStep::kLockWait:
    case RbStep::kRead:
    case RbStep::kWrite:
    case RbStep::kTrim:
      break;
  }
  RebuildStep();
}

void VolumeTarget::Impl::EncodeCursor(uint64_t cursor, uint64_t generation) {
  protocol::EncodeRebuildCursor({cursor, generation}, rb_.cursor_payload);
}

void VolumeTarget::Impl::FinishRebuild() {
  Replica& dest = replicas_[rb_.dest];
  dest.state = ReplicaState::kHealthy;
  dest.member = true;
  dest.generation = rb_.finish_generation;
  dest.info.generation_id = gen_id_;
  rb_status_.state = RebuildState::kDone;
  rb_status_.eta_seconds = 0;
  ++counters_.rebuilds_completed;
  double secs = static_cast<double>(MonotonicNanos() - rb_.started_ns) / 1e9;
  // The average over the whole rebuild stays visible once it is done.
  rb_status_.rate_bytes_per_sec =
      secs > 0 ? static_cast<double>(rb_status_.bytes_copied) / secs : 0;
  TLOG_INFO(kTag, "volume '%s': %s rebuild of %s done: %llu bytes copied in %.1f s",
            options_.volume_id.c_str(), RebuildModeName(rb_.mode), Address(dest).c_str(),
            static_cast<unsigned long long>(rb_status_.bytes_copied), secs);
  // The cursor clear (kClearCursor) is still in flight on rb_.req: the
  // rebuild slot frees when it answers (OnRbReply sees phase kIdle).
  rb_.phase = RbPhase::kIdle;
  rb_.step = RbStep::kClearCursor;
  UpdateState();
  loop_->Wake();
}

void VolumeTarget::Impl::RebuildFailed(const std::string& why) {
  TLOG_WARN(kTag, "volume '%s': rebuild failed: %s", options_.volume_id.c_str(), why.c_str());
  rb_status_.state = RebuildState::kFailed;
  rb_status_.last_error = why;
  if (rb_.dest >= 0 && replicas_[rb_.dest].state == ReplicaState::kRebuilding) {
    Replica& d = replicas_[rb_.dest];
    d.state = ReplicaState::kFaulted;
    d.last_error = "rebuild failed: " + why;
    close_mask_ |= 1u << d.index;
    need_bump_ = true;  // it got some writes the others track from now on
  }
  rb_.phase = RbPhase::kIdle;
  // Waiting windows (rate limit, range lock) have no request in flight:
  // nothing else frees them, and StartNextRebuild() waits for all of them.
  if (rb_.step == RbStep::kLockWait) rb_.step = RbStep::kNone;
  for (RbWindow& w : rb_.win) {
    if (w.step == RbStep::kLockWait) w.step = RbStep::kNone;
  }
  ReleaseRangeLock();
  UpdateState();
  loop_->Wake();
}

// The destination faulted (Fault() calls this): the rebuild stops; it is
// restarted, resuming where possible, when the replica comes back.
void VolumeTarget::Impl::RebuildAborted(const std::string& why) {
  if (rb_.phase == RbPhase::kIdle) return;
  TLOG_WARN(kTag, "volume '%s': rebuild of %s interrupted at %llu/%llu bytes: %s",
            options_.volume_id.c_str(), rb_status_.replica.c_str(),
            static_cast<unsigned long long>(rb_status_.bytes_done),
            static_cast<unsigned long long>(rb_status_.bytes_total), why.c_str());
  rb_status_.state = RebuildState::kFailed;
  rb_status_.last_error = "interrupted: " + why;
  rb_.phase = RbPhase::kIdle;
  // Waiting windows (rate limit, range lock) have no request in flight:
  // nothing else frees them, and StartNextRebuild() waits for all of them.
  if (rb_.step == RbStep::kLockWait) rb_.step = RbStep::kNone;
  for (RbWindow& w : rb_.win) {
    if (w.step == RbStep::kLockWait) w.step = RbStep::kNone;
  }
  ReleaseRangeLock();
}

// Every replica is HEALTHY: clear the dirty maps, then stop tracking. Writes
// wait meanwhile (as for a bump), so no write is marked after the clear and
// before the tracking stops... except ones already in flight, which only
// leave extra bits (a later rebuild copies a little more).
void VolumeTarget::Impl::StartUntrack() {
  bump_running_ = true;  // writes wait, as for a generation bump
  rb_.phase = RbPhase::kUntrack;
  rb_.untrack_clear_done = false;
  rb_.untrack_clear_offset = 0;
  TLOG_INFO(kTag, "volume '%s': every replica HEALTHY: clearing dirty maps",
            options_.volume_id.c_str());
  IssueClearRound();
}

// CLEAR_DIRTY of the next 2 GiB (a multiple of any region size) on every
// HEALTHY replica, then, once the whole volume is clear, SET_GENERATION
// without TRACK_DIRTY.
void VolumeTarget::Impl::IssueClearRound() {
  Rebuild& rb = rb_;
  uint32_t healthy = HealthyMask();
  bool clear = rb.untrack_clear_offset < size_;
  uint64_t off = rb.untrack_clear_offset;
  uint64_t len = clear ? std::min<uint64_t>(size_ - off, 2ull << 30) : 0;
  rb.untrack_clear_offset += len;
  if (!clear) rb.untrack_clear_done = true;
  rb.untrack_remaining = 0;
  if (!clear) EncodeCurrentRecord(&rb.untrack_payload);  // keep our id and history
  for (Replica& r : replicas_) {
    if (!(healthy & (1u << r.index))) continue;
    ClientRequest& s = rb.untrack_sub[r.index];
    s = ClientRequest{};
    s.ctx = this;
    s.done = &Impl::OnUntrackDone;
    s.op = clear ? Opcode::kClearDirty : Opcode::kSetGeneration;
    s.offset = clear ? off : generation_;
    s.length =
        clear ? static_cast<uint32_t>(len) : static_cast<uint32_t>(rb.untrack_payload.size());
    s.buf = clear ? nullptr : rb.untrack_payload.data();
    s.flags = 0;  // SET_GENERATION without TRACK_DIRTY: stop tracking
    ++rb.untrack_remaining;
  }
  if (rb.untrack_remaining == 0) {
    rb.phase = RbPhase::kIdle;
    bump_running_ = false;
    return;
  }
  for (Replica& r : replicas_) {
    if (healthy & (1u << r.index)) r.client->Submit(&rb.untrack_sub[r.index]);
  }
}

void VolumeTarget::Impl::OnUntrackDone(ClientRequest* sub) {
  Impl* self = static_cast<Impl*>(sub->ctx);
  Replica& r = self->replicas_[sub - self->rb_.untrack_sub];
  if (sub->status != StatusCode::kOk) {
    self->Fault(&r, Status(sub->status, "clearing the dirty map failed"));
  }
  Rebuild& rb = self->rb_;
  if (--rb.untrack_remaining != 0) return;
  if (!self->need_bump_ && self->HealthyMask() == self->AllMask()) {
    if (!rb.untrack_clear_done) {
      self->IssueClearRound();
      return;
    }
    self->tracking_ = false;
    self->tracking_since_ = 0;
    TLOG_INFO(kTag, "volume '%s': dirty maps cleared, tracking off",
              self->options_.volume_id.c_str());
  }
  // (A replica left meanwhile: tracking stays on; the bump follows.)
  rb.phase = RbPhase::kIdle;
  self->bump_running_ = false;
  self->loop_->Wake();
}

}  // namespace tandem::target
