// The rebuild's replies: what each answer of the source or the destination
// moves on, how failures are handled (a failed source is replaced, a failed
// destination stops the job), and the job's end states and progress. The
// walk itself is in rebuild_job.cc.

#include <algorithm>

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/volume/rebuild_job.h"
#include "replica-engine/volume/volume_target_impl.h"

namespace tandem::target {

using client::ClientRequest;
using protocol::Opcode;
using protocol::WireStatus;

namespace {
constexpr const char* kTag = "rebuild";
}  // namespace

void RebuildJob::OnDone(ClientRequest* req) {
  RebuildJob* self = static_cast<RebuildJob*>(req->ctx);
  if (req == &self->req_) {
    self->OnControlReply(req);
    return;
  }
  for (Window& w : self->windows_) {
    if (&w.req == req) {
      self->OnWindowReply(&w);
      return;
    }
  }
}

void RebuildJob::OnWindowReply(Window* w) {
  Request request = w->request;
  w->request = Request::kNone;
  t_->range_lock_.UnlockWindow(&w->range);
  if (phase_ == Phase::kIdle) {  // aborted while in flight
    t_->loop_->Wake();
    return;
  }
  if (w->req.status != StatusCode::kOk) {
    OnWindowFailed(w);
    return;
  }
  if (request == Request::kRead) {
    IssueWindow(w, Request::kWrite, Opcode::kWrite, &t_->replicas_[dest_]);
    return;
  }
  // kWrite / kTrim: the window is on the destination.
  if (request == Request::kWrite) {
    status_.bytes_copied += w->plan.length;
    t_->counters_.rebuild_bytes_copied += w->plan.length;
  }
  status_.bytes_done += w->plan.length;
  t_->ReleaseRangeLock();
  UpdateRate(MonotonicNanos());
  Advance();
}

void RebuildJob::OnWindowFailed(Window* w) {
  ReplicaSlot& target = t_->replicas_[w->req_target];
  Status why(w->req.status, std::string("rebuild ") +
                                protocol::OpcodeName(static_cast<uint8_t>(w->req.op)) + " on " +
                                target.Address() + " failed");
  if (w->req.wire_status == WireStatus::kStaleEpoch) {
    t_->Fence("a replica refused a rebuild request: stale epoch");
    Failed("fenced");
    return;
  }
  if (w->req_target == dest_) {
    t_->Fault(&target, why);  // aborts the rebuild (see Fault)
    t_->ReleaseRangeLock();
    return;
  }
  // The source failed: fault it; the window is copied again from another
  // HEALTHY replica (it stays planned, so overlapping writes stay held).
  w->request = Request::kLockWait;
  t_->range_lock_.LockWindow(&w->range);
  t_->Fault(&target, why);
  if (phase_ == Phase::kIdle) return;
  if (!PickSource()) {
    Failed("no HEALTHY replica left to copy from");
    return;
  }
  t_->loop_->Wake();
}

void RebuildJob::UpdateRate(uint64_t now_ns) {
  if (now_ns - rate_mark_ns_ < 1000000000ull) return;
  double secs = static_cast<double>(now_ns - rate_mark_ns_) / 1e9;
  double r = static_cast<double>(status_.bytes_done - rate_mark_done_) / secs;
  rate_ = rate_ == 0 ? r : 0.5 * rate_ + 0.5 * r;
  rate_mark_ns_ = now_ns;
  rate_mark_done_ = status_.bytes_done;
}

void RebuildJob::OnControlReply(ClientRequest* req) {
  Request request = request_;
  request_ = Request::kNone;
  if (phase_ == Phase::kIdle) {  // finished or aborted while in flight
    t_->loop_->Wake();           // BeforeWait may start the next one
    return;
  }
  if (req->status != StatusCode::kOk) {
    OnControlFailed(req);
    return;
  }
  ReplicaSlot& dest = t_->replicas_[dest_];
  switch (request) {
    case Request::kMap:
      if (!OnMapReply(*req)) return;
      break;
    case Request::kAllocation:
      if (!OnAllocationReply(*req)) return;
      break;
    case Request::kCursorFlush:
      IssueControl(Request::kCursor, Opcode::kSetRebuildCursor, &dest, 0, sizeof(cursor_payload_),
                   cursor_payload_);
      return;
    case Request::kFlush:
      // The destination takes our generation id and history with the number.
      t_->replicas_.EncodeCurrentRecord(&generation_payload_);
      IssueControl(Request::kSetGeneration, Opcode::kSetGeneration, &dest, finish_generation_,
                   static_cast<uint32_t>(generation_payload_.size()), generation_payload_.data(),
                   t_->replicas_.tracking() ? protocol::kFlagTrackDirty : 0);
      return;
    case Request::kSetGeneration:
      if (t_->bump_running_ || t_->replicas_.generation() != finish_generation_ ||
          t_->GenerationAboutToMove()) {
        // The survivors moved on meanwhile: catch up before serving.
        phase_ = Phase::kFinish;
        t_->loop_->Wake();
        return;
      }
      EncodeCursor(0, 0);
      IssueControl(Request::kClearCursor, Opcode::kSetRebuildCursor, &dest, 0,
                   sizeof(cursor_payload_), cursor_payload_);
      // Serving now: the destination has every byte and the generation.
      Finished();
      return;
    case Request::kCursor:
    case Request::kClearCursor:
    case Request::kNone:
    case Request::kLockWait:
    case Request::kRead:
    case Request::kWrite:
    case Request::kTrim:
      break;
  }
  Advance();
}

void RebuildJob::OnControlFailed(ClientRequest* req) {
  ReplicaSlot& target = t_->replicas_[req_target_];
  Status why(req->status, std::string("rebuild ") +
                              protocol::OpcodeName(static_cast<uint8_t>(req->op)) + " on " +
                              target.Address() + " failed");
  if (req->wire_status == WireStatus::kStaleEpoch) {
    t_->Fence("a replica refused a rebuild request: stale epoch");
    Failed("fenced");
    return;
  }
  if (req_target_ == dest_) {
    t_->Fault(&target, why);  // aborts the rebuild (see Fault)
    return;
  }
  // The source (or a map holder) failed: fault it and carry on from
  // another HEALTHY replica, redoing the current step.
  t_->Fault(&target, why);
  if (phase_ == Phase::kIdle) return;
  if (!PickSource()) {
    Failed("no HEALTHY replica left to copy from");
    return;
  }
  if (phase_ == Phase::kDirtyMap) {
    // Start the union again: a map holder went away mid-way.
    plan_.RestartUnion();
    map_replica_ = -1;
    map_activity_ = false;
    dest_activity_done_ = false;
  }
  t_->loop_->Wake();
}

bool RebuildJob::OnMapReply(const ClientRequest& req) {
  protocol::DirtyMapChunk chunk;
  Status st = protocol::DecodeDirtyMap(
      std::string_view(reinterpret_cast<const char*>(reply_.data()), req.reply_length), &chunk);
  if (!st.ok()) {
    Failed("bad GET_DIRTY_MAP reply: " + st.ToString());
    return false;
  }
  if (map_activity_) {
    map_offset_ = plan_.AddActivityPage(chunk, map_offset_);
    return true;
  }
  if (!plan_.AddDirtyPage(chunk, map_offset_, &map_offset_)) {
    Failed("replicas disagree on the dirty region size");
    return false;
  }
  return true;
}

bool RebuildJob::OnAllocationReply(const ClientRequest& req) {
  protocol::AllocationList list;
  Status st = protocol::DecodeAllocation(
      std::string_view(reinterpret_cast<const char*>(reply_.data()), req.reply_length), &list);
  if (st.ok()) st = protocol::CheckAllocationAnswers(list, req.offset, req.length);
  if (!st.ok()) {
    Failed("bad GET_ALLOCATION reply: " + st.ToString());
    return false;
  }
  plan_.SetAllocation(list);
  return true;
}

void RebuildJob::EncodeCursor(uint64_t cursor, uint64_t generation) {
  protocol::EncodeRebuildCursor({cursor, generation}, cursor_payload_);
}

// ---------------------------------------------------------------- the end

void RebuildJob::Finished() {
  ReplicaSlot& dest = t_->replicas_[dest_];
  dest.state = ReplicaState::kHealthy;
  t_->replicas_.Promote(dest);
  dest.generation = finish_generation_;
  dest.info.generation_id = t_->replicas_.generation_id();
  status_.state = RebuildState::kDone;
  status_.eta_seconds = 0;
  ++t_->counters_.rebuilds_completed;
  t_->grow_due_ = true;  // in sync again: the authority's record grows (BeforeWait)
  double secs = static_cast<double>(MonotonicNanos() - started_ns_) / 1e9;
  // The average over the whole rebuild stays visible once it is done.
  status_.rate_bytes_per_sec = secs > 0 ? static_cast<double>(status_.bytes_copied) / secs : 0;
  TLOG_INFO(kTag, "volume '%s': %s rebuild of %s done: %llu bytes copied in %.1f s",
            t_->options_.volume_id.c_str(), RebuildModeName(plan_.mode()), dest.Address().c_str(),
            static_cast<unsigned long long>(status_.bytes_copied), secs);
  // The cursor clear (kClearCursor) is still in flight on req_: the job's
  // slot frees when it answers (OnControlReply sees kIdle).
  phase_ = Phase::kIdle;
  request_ = Request::kClearCursor;
  t_->UpdateState();
  t_->loop_->Wake();
}

// Waiting windows (rate limit, range lock) have no request in flight:
// nothing else frees them, and a new job waits for all of them. Windows in
// flight no longer hold their range either: the job that planned them is over.
void RebuildJob::UnlockWindows() {
  if (request_ == Request::kLockWait) request_ = Request::kNone;
  for (Window& w : windows_) {
    if (w.request == Request::kLockWait) w.request = Request::kNone;
    t_->range_lock_.UnlockWindow(&w.range);
  }
  t_->ReleaseRangeLock();
}

void RebuildJob::Failed(const std::string& why) {
  TLOG_WARN(kTag, "volume '%s': rebuild failed: %s", t_->options_.volume_id.c_str(), why.c_str());
  status_.state = RebuildState::kFailed;
  status_.last_error = why;
  if (dest_ >= 0 && t_->replicas_[dest_].state == ReplicaState::kRebuilding) {
    ReplicaSlot& d = t_->replicas_[dest_];
    d.state = ReplicaState::kFaulted;
    d.last_error = "rebuild failed: " + why;
    t_->replicas_.ScheduleClose(d);
    t_->need_bump_ = true;  // it got some writes the others track from now on
  }
  phase_ = Phase::kIdle;
  UnlockWindows();
  t_->UpdateState();
  t_->loop_->Wake();
}

void RebuildJob::Abort(const std::string& why) {
  if (phase_ == Phase::kIdle) return;
  TLOG_WARN(kTag, "volume '%s': rebuild of %s interrupted at %llu/%llu bytes: %s",
            t_->options_.volume_id.c_str(), status_.replica.c_str(),
            static_cast<unsigned long long>(status_.bytes_done),
            static_cast<unsigned long long>(status_.bytes_total), why.c_str());
  status_.state = RebuildState::kFailed;
  status_.last_error = "interrupted: " + why;
  phase_ = Phase::kIdle;
  UnlockWindows();
}

// ---------------------------------------------------------------- status

void RebuildJob::SetRate(uint64_t bytes_per_sec, uint64_t now_ns) {
  bucket_.SetRate(bytes_per_sec, now_ns);
  status_.rate_limit_bytes_per_sec = bytes_per_sec;
}

RebuildStatus RebuildJob::Progress(uint64_t now_ns) const {
  RebuildStatus s = status_;
  if (phase_ == Phase::kIdle) return s;
  s.rate_bytes_per_sec = rate_;
  if (rate_ == 0) {
    double secs = static_cast<double>(now_ns - started_ns_) / 1e9;
    if (secs > 0.2) s.rate_bytes_per_sec = static_cast<double>(status_.bytes_done) / secs;
  }
  uint64_t left =
      status_.bytes_total > status_.bytes_done ? status_.bytes_total - status_.bytes_done : 0;
  s.eta_seconds = s.rate_bytes_per_sec > 0 ? static_cast<double>(left) / s.rate_bytes_per_sec : 0;
  return s;
}

}  // namespace tandem::target
