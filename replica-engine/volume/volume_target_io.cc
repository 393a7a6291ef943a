// The I/O path: a counting fan-out (SPDK raid1's shape). A frontend request
// takes an IoCtx; writes, TRIM, WRITE_ZEROES and FLUSH go to every HEALTHY
// and REBUILDING replica, reads to one HEALTHY replica, and the request
// completes when all answered, after a generation bump and MARK_DIRTY when
// some replica missed it.

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/volume/volume_target_impl.h"

namespace tandem::target {

using protocol::Opcode;
using protocol::WireStatus;

namespace {
// BlockRequest::scratch_ slot holding the request's Submit time (ns).
constexpr int kSubmitNsScratch = 0;
}  // namespace

StageHistogram& VolumeTargetImpl::StageOf(const BlockRequest* req, Stage stage) {
  auto& cls = req->op == BlockOp::kRead ? counters_.latency.read : counters_.latency.write;
  return cls[static_cast<size_t>(stage)];
}

Status VolumeTargetImpl::Validate(const BlockRequest* req) const {
  if (req->op == BlockOp::kFlush) return Status::Ok();
  if (req->length == 0 || req->offset % block_size_ != 0 || req->length % block_size_ != 0) {
    return Status::InvalidArgument("offset/length not multiples of the block size");
  }
  if (req->length > protocol::kMaxIoSize) {
    return Status::InvalidArgument("request larger than max_io_size");
  }
  if (req->offset > size_ || req->length > size_ - req->offset) {
    return Status::OutOfRange("request beyond the end of the volume");
  }
  return Status::Ok();
}

void VolumeTargetImpl::FailLater(BlockRequest* req, StatusCode code) {
  req->status = code;
  failed_.PushBack(req);
  loop_->Wake();
}

void VolumeTargetImpl::Submit(BlockRequest* req) {
  req->status = StatusCode::kOk;
  req->next_ = nullptr;
  req->scratch_[kSubmitNsScratch] = MonotonicNanos();
  if (shutting_down_ && req != &shutdown_flush_) {
    FailLater(req, StatusCode::kUnavailable);
    return;
  }
  if (state_ == TargetState::kStarting || !waiting_.empty() || free_ctx_.empty() ||
      (NeedsBump(req->op) && (need_bump_ || bump_running_))) {
    // Keep FIFO order with what already waits.
    waiting_.PushBack(req);
    loop_->Wake();
    return;
  }
  in_submit_ = true;
  Dispatch(req);
  in_submit_ = false;
}

void VolumeTargetImpl::DrainWaiting() {
  while (!waiting_.empty()) {
    if (state_ == TargetState::kStarting) return;
    BlockRequest* req = waiting_.front();
    bool down = state_ == TargetState::kFailed || state_ == TargetState::kFenced;
    if (!down && !shutting_down_ &&
        (free_ctx_.empty() || (NeedsBump(req->op) && (need_bump_ || bump_running_)))) {
      return;
    }
    waiting_.PopFront();
    if (shutting_down_) {
      Complete(req, StatusCode::kUnavailable);
      continue;
    }
    Dispatch(req);
  }
}

void VolumeTargetImpl::Dispatch(BlockRequest* req) {
  if (state_ == TargetState::kFailed || state_ == TargetState::kFenced) {
    Complete(req, DownCode());
    return;
  }
  Status st = Validate(req);
  if (!st.ok()) {
    Complete(req, st.code());
    return;
  }
  if (range_lock_.MustWait(*req)) {
    // The rebuild is copying this range, or another write to it is on its
    // way to the replicas: this write follows. Overlapping writes in flight
    // together could land in different orders on different replicas.
    range_lock_.Hold(req);
    return;
  }
  IoCtx* c = free_ctx_.PopFront();
  ++inflight_;
  c->seq = ++dispatch_seq_;
  c->req = req;
  c->sent_ns = MonotonicNanos();
  c->data_done_ns = 0;
  const uint64_t submitted = req->scratch_[kSubmitNsScratch];
  if (submitted != 0) StageOf(req, Stage::kQueue).Record(c->sent_ns - submitted);
  c->phase = IoCtx::Phase::kData;
  c->remaining = 0;
  c->sent_mask = c->ok_mask = c->tried_mask = 0;
  c->marked = false;
  c->fua_flushed = false;
  c->first_error = StatusCode::kOk;
  if (req->op == BlockOp::kRead) {
    StartRead(c);
  } else {
    StartWriteLike(c);
  }
}

bool VolumeTargetImpl::WritesDispatchedBefore(uint64_t seq) const {
  for (const IoCtx& c : ctx_pool_) {
    if (c.req != nullptr && c.seq < seq && c.req->op != BlockOp::kRead) return true;
  }
  return false;
}

void VolumeTargetImpl::StartRead(IoCtx* c) {
  // The local replica first, then the one with the fewest requests in flight.
  ReplicaSlot* best = nullptr;
  for (ReplicaSlot& r : replicas_) {
    if (r.state != ReplicaState::kHealthy || (c->tried_mask & r.bit())) continue;
    if (best == nullptr || (r.endpoint.local && !best->endpoint.local) ||
        (r.endpoint.local == best->endpoint.local &&
         r.channel->inflight() < best->channel->inflight())) {
      best = &r;
    }
  }
  if (best == nullptr) {
    Finish(c, c->first_error != StatusCode::kOk ? StatusCode::kUnavailable : DownCode());
    return;
  }
  if (c->tried_mask != 0) c->sent_ns = MonotonicNanos();  // a retry: its own round trip
  c->tried_mask |= best->bit();
  c->sent_mask = best->bit();
  c->remaining = 1;
  ClientRequest& s = c->sub[best->index];
  s.op = Opcode::kRead;
  s.flags = 0;
  s.offset = c->req->offset;
  s.length = c->req->length;
  s.buf = c->req->buf;
  ++best->reads;
  best->channel->Submit(&s);
}

namespace {
Opcode WireOpcode(BlockOp op) {
  switch (op) {
    case BlockOp::kWrite:
      return Opcode::kWrite;
    case BlockOp::kFlush:
      return Opcode::kFlush;
    case BlockOp::kTrim:
      return Opcode::kTrim;
    case BlockOp::kWriteZeroes:
      return Opcode::kWriteZeroes;
    case BlockOp::kRead:
      break;
  }
  return Opcode::kWrite;
}
}  // namespace

void VolumeTargetImpl::StartWriteLike(IoCtx* c) {
  uint32_t healthy = replicas_.WriteMask();
  if (replicas_.HealthyMask() == 0) {
    Finish(c, DownCode());
    return;
  }
  const Opcode op = WireOpcode(c->req->op);
  c->sent_mask = healthy;
  c->remaining = static_cast<uint32_t>(__builtin_popcount(healthy));
  if (op != Opcode::kFlush) {
    rebuild_.NoteLiveWrite(healthy, c->req->offset, c->req->length);
    range_lock_.AddWrite(&c->range, c->req->offset, c->req->length);
  }
  for (ReplicaSlot& r : replicas_) {
    if (!(healthy & r.bit())) continue;
    ClientRequest& s = c->sub[r.index];
    s.op = op;
    s.flags = (c->req->flags & kBlockFua) ? protocol::kFlagFua : 0;
    s.offset = op == Opcode::kFlush ? 0 : c->req->offset;
    s.length = op == Opcode::kFlush ? 0 : c->req->length;
    s.buf = c->req->buf;
    ++r.writes;
  }
  for (ReplicaSlot& r : replicas_) {
    if (healthy & r.bit()) r.channel->Submit(&c->sub[r.index]);
  }
}

void VolumeTargetImpl::StartMarkDirty(IoCtx* c) {
  uint32_t healthy = replicas_.HealthyMask() & c->ok_mask;
  if (healthy == 0) {
    Finish(c, DownCode());
    return;
  }
  c->phase = IoCtx::Phase::kMarkDirty;
  c->marked = true;
  SendControl(c, healthy, Opcode::kMarkDirty, c->req->offset, c->req->length);
}

// A control phase of a request (MARK_DIRTY, FLUSH): one sub-request per
// replica of `mask`, no payload; OnDataPhaseDone runs when all answered.
void VolumeTargetImpl::SendControl(IoCtx* c, uint32_t mask, Opcode op, uint64_t offset,
                                   uint32_t length) {
  c->sent_mask = mask;
  c->ok_mask = 0;
  c->remaining = static_cast<uint32_t>(__builtin_popcount(mask));
  c->sent_ns = MonotonicNanos();
  for (ReplicaSlot& r : replicas_) {
    if (!(mask & r.bit())) continue;
    ClientRequest& s = c->sub[r.index];
    s.op = op;
    s.flags = 0;
    s.offset = offset;
    s.length = length;
    s.buf = nullptr;
  }
  for (ReplicaSlot& r : replicas_) {
    if (mask & r.bit()) r.channel->Submit(&c->sub[r.index]);
  }
}

void VolumeTargetImpl::OnSubDone(ClientRequest* sub) {
  IoCtx* c = static_cast<IoCtx*>(sub->ctx);
  VolumeTargetImpl* self = c->target;
  int index = static_cast<int>(sub - c->sub);
  ReplicaSlot& r = self->replicas_[index];
  const uint64_t now = MonotonicNanos();
  self->StageOf(c->req, Stage::kReplica).Record(now - c->sent_ns);
  if (c->phase == IoCtx::Phase::kData && c->remaining == 1 && c->data_done_ns == 0) {
    c->data_done_ns = now;
    self->StageOf(c->req, Stage::kData).Record(now - c->sent_ns);
  }
  if (sub->status == StatusCode::kOk) {
    c->ok_mask |= 1u << index;
  } else {
    if (c->first_error == StatusCode::kOk) c->first_error = sub->status;
    if (sub->wire_status == WireStatus::kStaleEpoch) {
      self->Fence("a replica refused a request: stale epoch");
    } else if (self->state_ != TargetState::kFenced) {
      self->Fault(
          &r, Status(sub->status, std::string(protocol::OpcodeName(static_cast<uint8_t>(sub->op))) +
                                      " failed: " + StatusCodeName(sub->status)));
    }
  }
  if (--c->remaining != 0) return;
  self->OnDataPhaseDone(c);
}

void VolumeTargetImpl::UnlinkWrite(IoCtx* c) {
  if (!range_lock_.RemoveWrite(&c->range)) return;
  ReleaseRangeLock();  // held writes check again
}

void VolumeTargetImpl::ReleaseRangeLock() {
  if (!range_lock_.HasHeld()) return;
  range_lock_.ReleaseHeld(&waiting_);
  loop_->Wake();
}

void VolumeTargetImpl::OnDataPhaseDone(IoCtx* c) {
  UnlinkWrite(c);
  if (state_ == TargetState::kFenced) {
    Finish(c, StatusCode::kFailedPrecondition);
    return;
  }
  if (c->phase == IoCtx::Phase::kFuaFlush) {
    if (c->ok_mask == 0) {
      Finish(c, DownCode());
    } else if (c->ok_mask == c->sent_mask) {
      Finish(c, StatusCode::kOk);
    } else {
      // A replica failed the FLUSH (and is FAULTED): as for a write that
      // skipped one, the survivors move on and mark the range, then flush.
      c->marked = false;
      c->fua_flushed = false;
      AwaitBump(c);
    }
    return;
  }
  if (c->req->op == BlockOp::kRead) {
    if (c->ok_mask != 0) {
      Finish(c, StatusCode::kOk);
    } else {
      StartRead(c);  // the failing replica is FAULTED; try another
    }
    return;
  }
  if (c->ok_mask == 0) {
    // On no replica: the request had no effect anyone can rely on.
    Finish(c, c->first_error == StatusCode::kResourceExhausted ? StatusCode::kResourceExhausted
                                                               : DownCode());
    return;
  }
  bool bump_ahead = need_bump_ || bump_running_;
  if (c->phase == IoCtx::Phase::kMarkDirty) {
    // The range is in the dirty maps of the survivors that answered; if one
    // of them left meanwhile, wait until the rest are at a newer generation.
    if (bump_ahead) {
      AwaitBump(c);
    } else {
      FinishWrite(c);
    }
    return;
  }
  if (c->ok_mask == c->sent_mask) {
    FinishWrite(c);  // on every replica it was sent to
    return;
  }
  // Some replica missed this write: it is acknowledged only once the survivors
  // are at a new generation and have the range in their dirty maps. The
  // survivors may have reached the new generation before this write's data
  // phase ended (replies come out of order): then mark right away.
  if (bump_ahead) {
    AwaitBump(c);
  } else if (c->req->op == BlockOp::kFlush) {
    Finish(c, StatusCode::kOk);
  } else {
    StartMarkDirty(c);
  }
}

void VolumeTargetImpl::AwaitBump(IoCtx* c) {
  c->phase = IoCtx::Phase::kAwaitBump;
  bump_waiters_.PushFront(c);
  loop_->Wake();
}

void VolumeTargetImpl::FinishWrite(IoCtx* c) {
  const BlockRequest* q = c->req;
  if (c->fua_flushed || !(q->flags & kBlockFua) ||
      (q->op != BlockOp::kTrim && q->op != BlockOp::kWriteZeroes)) {
    Finish(c, StatusCode::kOk);
    return;
  }
  uint32_t mask = c->ok_mask & replicas_.WriteMask();
  if (mask == 0) {
    Finish(c, DownCode());
    return;
  }
  c->fua_flushed = true;
  c->phase = IoCtx::Phase::kFuaFlush;
  SendControl(c, mask, Opcode::kFlush, 0, 0);
}

void VolumeTargetImpl::Finish(IoCtx* c, StatusCode code) {
  UnlinkWrite(c);
  BlockRequest* req = c->req;
  if (c->data_done_ns != 0) StageOf(req, Stage::kFinish).Record(MonotonicNanos() - c->data_done_ns);
  c->req = nullptr;
  free_ctx_.PushFront(c);
  --inflight_;
  Complete(req, code);
  if (!waiting_.empty()) loop_->Wake();
}

void VolumeTargetImpl::Complete(BlockRequest* req, StatusCode code) {
  if (in_submit_) {
    // The BlockDevice contract: never complete inside Submit().
    FailLater(req, code);
    return;
  }
  req->status = code;
  const uint64_t submitted = req->scratch_[kSubmitNsScratch];
  if (submitted != 0) StageOf(req, Stage::kTotal).Record(MonotonicNanos() - submitted);
  if (code != StatusCode::kOk) {
    ++counters_.errors;
  } else {
    switch (req->op) {
      case BlockOp::kRead:
        ++counters_.reads;
        counters_.bytes_read += req->length;
        break;
      case BlockOp::kFlush:
        ++counters_.flushes;
        break;
      default:
        ++counters_.writes;
        counters_.bytes_written += req->length;
        break;
    }
  }
  req->done(req);
}

}  // namespace tandem::target
