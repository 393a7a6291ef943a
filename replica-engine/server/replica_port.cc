// ReplicaPort: HELLO binding and the I/O path (checks, the activity log and
// dirty map before a write reaches the disk, completion). The synchronous
// control requests are in replica_port_control.cc; see replica_port.h.
#include "replica-engine/server/replica_port.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/protocol/hello_proof.h"
#include "replica-engine/server/replica_server.h"

namespace tandem::server {

using protocol::Opcode;
using protocol::WireStatus;

namespace {
constexpr const char* kTag = "replica_port";
}  // namespace

ReplicaPort::ReplicaPort(ReplicaServer* server, std::string peer, uint32_t max_inflight)
    : server_(server), peer_(std::move(peer)), max_inflight_(max_inflight) {
  server_->ports_.push_back(this);
}

ReplicaPort::~ReplicaPort() {
  if (!closed_) server_->UnbindPort(this);
  for (DetachWaiter* w : detach_waiters_) {
    if (--w->pending == 0) w->Signal();
  }
  auto& all = server_->ports_;
  all.erase(std::remove(all.begin(), all.end(), this), all.end());
  if (dirty_waiting_) {
    auto& w = server_->dirty_waiting_;
    w.erase(std::remove(w.begin(), w.end(), this), w.end());
  }
}

WireStatus ReplicaPort::Open(const protocol::HelloRequest& hello, bool* retry) {
  *retry = false;
  if (opened() || closed_) return WireStatus::kInvalid;  // one HELLO per port
  VolumeState* vol = nullptr;
  WireStatus ws = server_->AcceptHello(this, hello, &vol, retry);
  if (*retry) return WireStatus::kOk;
  if (ws != WireStatus::kOk) {
    TLOG_WARN(kTag, "%s: HELLO for volume '%s' epoch %llu refused: %s", peer_.c_str(),
              hello.volume_id.c_str(), static_cast<unsigned long long>(hello.epoch),
              protocol::WireStatusName(ws));
    return ws;
  }
  epoch_ = hello.epoch;
  target_id_ = hello.target_id;
  volume_ = vol;
  replica_ = vol->replica;
  data_fd_ = replica_->fd();
  size_ = replica_->metadata().size;
  block_size_ = replica_->metadata().block_size;
  TLOG_INFO(kTag, "%s: volume '%s' attached at epoch %llu", peer_.c_str(), hello.volume_id.c_str(),
            static_cast<unsigned long long>(epoch_));
  return WireStatus::kOk;
}

Status ReplicaPort::MakeNonce() { return protocol::RandomNonce(&nonce_); }

bool ReplicaPort::IsIo(Opcode op) {
  switch (op) {
    case Opcode::kRead:
    case Opcode::kWrite:
    case Opcode::kFlush:
    case Opcode::kTrim:
    case Opcode::kWriteZeroes:
    case Opcode::kMarkDirty:
    case Opcode::kClearDirty:
      return true;
    default:
      return false;
  }
}

WireStatus ReplicaPort::CheckRange(const PortRequest& r, bool needs_length) const {
  if (needs_length && r.length == 0) return WireStatus::kInvalid;
  if (r.offset % block_size_ != 0 || r.length % block_size_ != 0) return WireStatus::kInvalid;
  if (r.offset > size_ || r.length > size_ - r.offset) return WireStatus::kOutOfRange;
  return WireStatus::kOk;
}

WireStatus ReplicaPort::Check(const PortRequest& r) const {
  if (!opened() || closed_) return WireStatus::kNotReady;
  if (superseded_) return WireStatus::kStaleEpoch;
  switch (r.op) {
    case Opcode::kRead: {
      const WireStatus st = r.payload_length != 0 ? WireStatus::kInvalid : CheckRange(r, true);
      if (st == WireStatus::kOk && r.length > protocol::kMaxIoSize) return WireStatus::kInvalid;
      return st;
    }
    case Opcode::kWrite:
      return r.payload_length != r.length ? WireStatus::kInvalid : CheckRange(r, true);
    case Opcode::kTrim:
    case Opcode::kWriteZeroes:
      return r.payload_length != 0 ? WireStatus::kInvalid : CheckRange(r, true);
    case Opcode::kFlush:
      return r.payload_length != 0 ? WireStatus::kInvalid : WireStatus::kOk;
    case Opcode::kMarkDirty:
    case Opcode::kClearDirty:
      if (r.payload_length != 0) return WireStatus::kInvalid;
      if (replica_->dirty_region_size() == 0) return WireStatus::kUnsupported;
      return CheckRange(r, true);
    default:
      return WireStatus::kUnsupported;
  }
}

WireStatus ReplicaPort::Start(PortRequest* r) {
  const WireStatus st = Check(*r);
  if (st != WireStatus::kOk) return st;
  r->port_ = this;
  r->status = WireStatus::kOk;
  backend::IoRequest& io = r->io;
  io.fd = data_fd_;
  io.offset = r->offset;
  io.length = r->length;
  io.flags = 0;
  io.buf = nullptr;
  io.result = 0;
  io.ctx = r;
  io.done = &ReplicaPort::OnIoDone;
  switch (r->op) {
    case Opcode::kMarkDirty:
    case Opcode::kClearDirty:
      return StartDirtyUpdate(r);
    case Opcode::kRead:
      io.op = backend::IoOp::kRead;
      io.buf = r->buf;
      break;
    case Opcode::kWrite:
      io.op = backend::IoOp::kWrite;
      io.buf = r->buf;
      if (r->flags & protocol::kFlagFua) io.flags |= backend::kFlagFua;
      break;
    case Opcode::kFlush:
      io.op = backend::IoOp::kFlush;
      r->flush_seq = replica_->NoteFlushReceived();
      break;
    case Opcode::kTrim:
      io.op = backend::IoOp::kDiscard;
      break;
    default:  // kWriteZeroes: Check() let nothing else through
      io.op = backend::IoOp::kWriteZeroes;
      break;
  }
  ++inflight_;
  if (r->op != Opcode::kRead && r->op != Opcode::kFlush &&
      !replica_->NoteWrite(r->offset, r->length)) {
    // Its dirty-map or activity-log bits are only in memory: park it until a
    // persist covering them is durable (BeforeWait starts one for every write
    // parked this iteration, or the next one when a persist is already in
    // flight).
    ++server_->stats_.writes_parked_for_dirty_map;
    ParkForPersist(r);
    return WireStatus::kOk;
  }
  server_->backend_->Queue(&io);
  return WireStatus::kOk;
}

WireStatus ReplicaPort::StartDirtyUpdate(PortRequest* r) {
  // In memory now; the reply waits for a persist covering it, which the
  // parked writes' group commit provides (one slot write for every change of
  // a loop iteration), so a MARK_DIRTY storm costs no fdatasync on the loop.
  Result<bool> durable = r->op == Opcode::kMarkDirty
                             ? replica_->NoteMarkDirty(r->offset, r->length)
                             : replica_->NoteClearDirty(r->offset, r->length);
  if (!durable.ok()) return FromReplicaStatus(durable.status());
  r->io.op = backend::IoOp::kNop;  // completes with 0: answered like an I/O
  ++inflight_;
  if (*durable) {
    server_->backend_->Queue(&r->io);
  } else {
    ParkForPersist(r);
  }
  return WireStatus::kOk;
}

void ReplicaPort::ParkForPersist(PortRequest* r) {
  r->dirty_seq = replica_->dirty_seq();
  dirty_.PushBack(r);
  server_->MarkDirtyWaiting(this);
}

bool ReplicaPort::ResumeDirtyWaiters() {
  if (dirty_.empty()) return false;
  // A closed port's writes are dropped, not submitted: its target has
  // already seen the connection fail (and a fenced target must not write).
  if (closed_) {
    FailDirtyWaiters(-ECANCELED);
    return false;
  }
  replica::Replica* rep = replica_.get();
  if (!rep->can_persist_async()) {
    // No O_DIRECT meta handle: persist synchronously on this thread. A no-op
    // when another port of the same replica already did in this pass.
    if (rep->dirty_unsynced()) ++server_->stats_.dirty_map_syncs;
    Status st = rep->SyncDirty();
    if (!st.ok()) {
      TLOG_ERROR(kTag, "%s: persisting the dirty map failed, failing parked writes: %s",
                 peer_.c_str(), st.ToString().c_str());
      FailDirtyWaiters(-EIO);
      return false;
    }
  }
  // Parked in dirty_seq order, so the releasable ones are a prefix.
  while (!dirty_.empty()) {
    PortRequest* r = dirty_.front();
    const bool durable = rep->dirty_durable(r->dirty_seq);
    if (!durable && !rep->dirty_failed(r->dirty_seq)) break;
    dirty_.PopFront();
    if (durable) {
      server_->backend_->Queue(&r->io);
    } else {
      r->io.result = -EIO;
      OnIoDone(&r->io);
    }
  }
  if (dirty_.empty()) return false;
  if (!rep->persist_in_flight()) {
    Status st = server_->StartPersist(replica_);
    if (!st.ok()) {
      TLOG_ERROR(kTag, "%s: cannot persist the dirty map, failing parked writes: %s", peer_.c_str(),
                 st.ToString().c_str());
      FailDirtyWaiters(-EIO);
      return false;
    }
  }
  return true;
}

void ReplicaPort::FailDirtyWaiters(int result) {
  // Detach first: completing one may park another.
  RequestQueue failed;
  failed.SpliceBack(&dirty_);
  while (PortRequest* r = failed.PopFront()) {
    r->io.result = result;
    OnIoDone(&r->io);
  }
}

// size: the completion's bookkeeping (activity log, wake-ups, stats) and the
// result -> reply status mapping, in the order the rules need them.
void ReplicaPort::OnIoDone(backend::IoRequest* io) {
  PortRequest* r = static_cast<PortRequest*>(io->ctx);
  ReplicaPort* self = r->port_;
  --self->inflight_;
  // The activity log counts every write noted at receipt until it is done,
  // whatever became of it (failed, dropped, or answered STALE_EPOCH), and
  // every FLUSH that made the disk durable.
  switch (io->op) {
    case backend::IoOp::kWrite:
    case backend::IoOp::kDiscard:
    case backend::IoOp::kWriteZeroes:
      self->replica_->NoteWriteDone(r->offset, r->length);
      break;
    case backend::IoOp::kFlush:
      if (io->result >= 0) self->replica_->NoteFlushDone(r->flush_seq, MonotonicNanos());
      break;
    default:
      break;
  }
  // A HELLO of a newer epoch may be waiting for this port's I/O to drain,
  // and a DetachVolume for a closed in-process port's.
  if (self->inflight_ == 0 && (self->closed_ || self->superseded_)) {
    self->server_->WakeStalled();
    for (DetachWaiter* w : self->detach_waiters_) {
      if (--w->pending == 0) w->Signal();
    }
    self->detach_waiters_.clear();
  }
  if (self->closed_) {
    r->status = WireStatus::kNotReady;  // no one is waiting for the answer
  } else if (self->superseded_) {
    // Whatever the backend did, the target that sent it no longer owns the
    // volume: it must not count this as done.
    r->status = WireStatus::kStaleEpoch;
  } else {
    ServerStats& stats = self->server_->stats_;
    ++stats.requests;
    WireStatus st = WireStatus::kOk;
    if (io->result < 0) {
      st = io->result == -ENOSPC ? WireStatus::kNoSpace : WireStatus::kIoError;
      TLOG_WARN(kTag, "%s: %s at %llu+%u failed: %s", self->peer_.c_str(),
                backend::IoOpName(io->op), static_cast<unsigned long long>(io->offset), io->length,
                std::strerror(-io->result));
    } else if ((io->op == backend::IoOp::kRead || io->op == backend::IoOp::kWrite) &&
               static_cast<uint32_t>(io->result) != io->length) {
      st = WireStatus::kIoError;  // short transfer: the file is shorter than the replica size
    }
    if (io->op == backend::IoOp::kRead && st == WireStatus::kOk) stats.bytes_read += io->length;
    if (io->op == backend::IoOp::kWrite) stats.bytes_written += io->length;
    r->status = st;
  }
  r->done(r);
}

void ReplicaPort::Close() {
  if (closed_) return;
  closed_ = true;
  // Parked writes are failed by the next ResumeDirtyWaiters (the server still
  // lists this port); in-flight ones complete through `done`.
  server_->UnbindPort(this);
  volume_ = nullptr;
}

void ReplicaPort::Supersede() {
  if (superseded_ || closed_) return;
  superseded_ = true;
  // Parked writes have not reached the disk; they never will.
  FailDirtyWaiters(-ESTALE);
}

}  // namespace tandem::server
