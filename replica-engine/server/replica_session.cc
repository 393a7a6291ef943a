#include "replica-engine/server/replica_session.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/logging.h"
#include "replica-engine/protocol/frame_tx.h"
#include "replica-engine/protocol/hello_proof.h"
#include "replica-engine/server/replica_server.h"

namespace tandem::server {

using protocol::FrameHeader;
using protocol::Opcode;
using protocol::WireStatus;

namespace {
constexpr const char* kTag = "replica_session";
// After HELLO: room for one maximal frame plus slack so a batch of small
// frames can follow. Before HELLO only a control frame (HELLO itself) is
// accepted, so that is all a connection gets until it authenticated.
constexpr size_t kRxSlack = 256 * 1024;
constexpr size_t kRxFull = protocol::kHeaderSize + protocol::kMaxPayload + kRxSlack;
constexpr size_t kRxPreAuth = protocol::kHeaderSize + protocol::kMaxControlPayload;
constexpr size_t kMaxIov = 256;
}  // namespace

ReplicaSession::ReplicaSession(ReplicaServer* server, UniqueFd fd, std::string peer,
                               uint32_t max_inflight)
    : server_(server),
      fd_(std::move(fd)),
      peer_(std::move(peer)),
      rx_(new uint8_t[kRxPreAuth]),
      rx_cap_(kRxPreAuth),
      slots_(max_inflight),
      held_(server->session_quota_.size(), 0) {
  for (Slot& s : slots_) {
    s.session = this;
    s.req.ctx = &s;
    s.req.done = &ReplicaSession::OnIoDone;
    free_.PushFront(&s);
  }
  iov_.resize(kMaxIov);
  accepted_ns_ = MonotonicNanos();
  last_active_ns_ = accepted_ns_;
  server_->rx_bytes_ += rx_cap_;
}

ReplicaSession::~ReplicaSession() {
  server_->rx_bytes_ -= rx_cap_;
  for (DetachWaiter* w : detach_waiters_) {
    if (--w->pending == 0) w->Signal();
  }
}

void ReplicaSession::OnEvents(uint32_t events) {
  if (closing_) return;
  if (events & (EPOLLERR | EPOLLHUP)) {
    // Read what is left first: the peer may have sent frames before hanging up.
    ReadMore();
    if (!closing_) Close("connection closed by peer", false);
    return;
  }
  if (events & EPOLLOUT) {
    writable_ = true;
    if (!tx_.empty()) server_->MarkTxPending(this);
  }
  if (events & EPOLLIN) ReadMore();
}

void ReplicaSession::ReadMore() {
  // Edge-triggered: read until EAGAIN, or until the buffer is full of frames
  // we cannot start yet (stalled); Service() comes back here.
  while (!closing_) {
    if (rx_end_ == rx_cap_) {
      if (rx_begin_ == 0) return;  // full of unstarted frames: wait for Service()
      std::memmove(rx_.get(), rx_.get() + rx_begin_, rx_end_ - rx_begin_);
      rx_end_ -= rx_begin_;
      rx_begin_ = 0;
    }
    ssize_t n = ::recv(fd_.get(), rx_.get() + rx_end_, rx_cap_ - rx_end_, 0);
    if (n > 0) {
      rx_end_ += static_cast<size_t>(n);
      rx_activity_ = true;
      Parse();
      if (stalled_) return;
      continue;
    }
    if (n == 0) {
      Close("connection closed by peer", false);
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    Close(std::strerror(errno), false);
    return;
  }
}

void ReplicaSession::Parse() {
  stalled_ = false;
  while (!closing_ && !close_after_flush_ && rx_end_ - rx_begin_ >= protocol::kHeaderSize) {
    const uint8_t* p = rx_.get() + rx_begin_;
    FrameHeader h;
    protocol::DecodeResult r = protocol::DecodeHeader(p, &h);
    if (r != protocol::DecodeResult::kOk) {
      Close(protocol::DecodeResultName(r), true);
      return;
    }
    if (h.is_reply()) {
      Close("reply frame sent to the server", true);
      return;
    }
    size_t total = protocol::kHeaderSize + h.payload_length;
    if (total > rx_cap_) {
      // Only before HELLO (after it the buffer holds any valid frame): the
      // payload is refused on the header, never read or buffered.
      Close("frame larger than a control frame before HELLO", true);
      return;
    }
    if (rx_end_ - rx_begin_ < total) break;  // wait for the rest of the payload
    const uint8_t* payload = p + protocol::kHeaderSize;
    if (!protocol::CheckPayload(h, payload)) {
      Close("payload crc mismatch", true);
      return;
    }
    if (free_.empty() || !HandleRequest(h, payload)) {
      stalled_ = true;
      return;
    }
    rx_begin_ += total;
  }
  if (rx_begin_ == rx_end_) rx_begin_ = rx_end_ = 0;
}

ReplicaSession::Slot* ReplicaSession::AllocSlot(const FrameHeader& h) {
  Slot* s = free_.PopFront();
  s->reply = FrameHeader{};
  s->reply.opcode = static_cast<uint8_t>(h.opcode | protocol::kReplyBit);
  s->reply.request_id = h.request_id;
  s->reply.offset = h.offset;
  s->reply.length = h.length;
  s->payload = nullptr;
  s->payload_len = 0;
  s->sent = 0;
  return s;
}

bool ReplicaSession::TakeBuffer(Slot* s, uint32_t size) {
  const int c = server_->pool_.size_class(size);
  if (c < 0) return false;  // not reached: lengths are checked against kMaxIoSize
  uint32_t& held = held_[static_cast<size_t>(c)];
  if (held >= server_->session_quota_[static_cast<size_t>(c)]) {
    // This session holds its share of the class (e.g. READ replies its peer
    // does not read): it waits for its own buffers, the others keep theirs.
    ++server_->stats_.session_quota_stalls;
    return false;
  }
  void* buf = server_->pool_.Get(size);
  if (buf == nullptr) {
    server_->pool_starved_ = true;
    return false;
  }
  ++held;
  s->buf = buf;
  s->buf_size = size;
  return true;
}

void ReplicaSession::ReleaseBuffer(Slot* s) {
  if (s->buf == nullptr) return;
  server_->pool_.Put(s->buf, s->buf_size);
  --held_[static_cast<size_t>(server_->pool_.size_class(s->buf_size))];
  s->buf = nullptr;
  server_->OnBufferReleased();
  // A session stalled on its own quota resumes with its own buffers.
  if (stalled_) server_->MarkTxPending(this);
}

void ReplicaSession::FreeSlot(Slot* s) {
  ReleaseBuffer(s);
  s->control.clear();
  // A GET_DIRTY_MAP reply may have grown the string to a megabyte; do not
  // keep that per slot.
  if (s->control.capacity() > protocol::kMaxControlPayload) std::string().swap(s->control);
  free_.PushFront(s);
  if (stalled_) server_->MarkTxPending(this);
}

WireStatus ReplicaSession::CheckRange(const FrameHeader& h, bool needs_length) const {
  if (needs_length && h.length == 0) return WireStatus::kInvalid;
  if (h.offset % block_size_ != 0 || h.length % block_size_ != 0) return WireStatus::kInvalid;
  if (h.offset > size_ || h.length > size_ - h.offset) return WireStatus::kOutOfRange;
  return WireStatus::kOk;
}

// size: the opcode dispatch of the data protocol, one case per request kind.
bool ReplicaSession::HandleRequest(const FrameHeader& h, const uint8_t* payload) {
  if (h.op() == Opcode::kHello) {
    Slot* s = AllocSlot(h);
    if (!HandleHello(s, payload, h.payload_length)) {
      free_.PushFront(s);
      return false;
    }
    return true;
  }
  if (h.op() == Opcode::kChallenge) {
    HandleChallenge(AllocSlot(h), h);
    return true;
  }
  if (!hello_done_) {
    Slot* s = AllocSlot(h);
    QueueReply(s, WireStatus::kNotReady);
    close_after_flush_ = true;
    return true;
  }
  if (superseded_) {
    // Superseded by a newer target: answer, then hang up once every reply is
    // out (docs/protocol.md, Fencing).
    Slot* s = AllocSlot(h);
    QueueReply(s, WireStatus::kStaleEpoch);
    return true;
  }
  switch (h.op()) {
    case Opcode::kSetGeneration:
    case Opcode::kSetRebuildCursor:
      // Retried (Parse stalls, in order) once the persist in flight is done.
      if (MetadataBusy()) {
        ++server_->stats_.requests_waited_for_metadata;
        return false;
      }
      break;
    default:
      break;
  }
  Slot* s = AllocSlot(h);
  WireStatus st = WireStatus::kOk;
  switch (h.op()) {
    case Opcode::kRead:
      st = h.payload_length != 0 ? WireStatus::kInvalid : CheckRange(h, true);
      if (st == WireStatus::kOk && h.length > protocol::kMaxIoSize) st = WireStatus::kInvalid;
      break;
    case Opcode::kWrite:
      st = h.payload_length != h.length ? WireStatus::kInvalid : CheckRange(h, true);
      break;
    case Opcode::kTrim:
    case Opcode::kWriteZeroes:
      st = h.payload_length != 0 ? WireStatus::kInvalid : CheckRange(h, true);
      break;
    case Opcode::kFlush:
      st = h.payload_length != 0 ? WireStatus::kInvalid : WireStatus::kOk;
      break;
    case Opcode::kGetInfo:
      SetInfoReply(s);
      QueueReply(s, WireStatus::kOk);
      return true;
    case Opcode::kMarkDirty:
    case Opcode::kClearDirty:
      st = StartDirtyUpdate(s, h);
      if (st == WireStatus::kOk) return true;  // answered once durable
      QueueReply(s, st);
      return true;
    case Opcode::kSetGeneration:
    case Opcode::kGetDirtyMap:
      QueueReply(s, HandleDirtyOp(s, h, payload));
      return true;
    case Opcode::kGetAllocation:
      QueueReply(s, HandleGetAllocation(s, h));
      return true;
    case Opcode::kSetRebuildCursor:
      QueueReply(s, HandleSetRebuildCursor(h, payload));
      return true;
    default:
      st = WireStatus::kUnsupported;
      break;
  }
  if (st != WireStatus::kOk) {
    QueueReply(s, st);
    return true;
  }
  if (!StartIo(s, h, payload)) {
    // No buffer: give the slot back and retry this frame when one is released.
    free_.PushFront(s);
    return false;
  }
  return true;
}

void ReplicaSession::GrowRx() {
  if (rx_cap_ >= kRxFull) return;
  // Offsets are kept: Parse() still holds rx_begin_ of the HELLO frame.
  std::unique_ptr<uint8_t[]> bigger(new uint8_t[kRxFull]);
  std::memcpy(bigger.get(), rx_.get(), rx_end_);
  rx_ = std::move(bigger);
  server_->rx_bytes_ += kRxFull - rx_cap_;
  rx_cap_ = kRxFull;
}

bool ReplicaSession::StartIo(Slot* s, const FrameHeader& h, const uint8_t* payload) {
  backend::IoRequest& req = s->req;
  req.fd = data_fd_;
  req.offset = h.offset;
  req.length = h.length;
  req.flags = 0;
  req.buf = nullptr;
  req.result = 0;
  switch (h.op()) {
    case Opcode::kRead:
    case Opcode::kWrite: {
      if (!TakeBuffer(s, h.length)) return false;
      void* buf = s->buf;
      req.buf = buf;
      if (h.op() == Opcode::kWrite) {
        req.op = backend::IoOp::kWrite;
        std::memcpy(buf, payload, h.length);  // the one copy: socket buffer -> aligned buffer
        if (h.flags & protocol::kFlagFua) req.flags |= backend::kFlagFua;
      } else {
        req.op = backend::IoOp::kRead;
      }
      break;
    }
    case Opcode::kFlush:
      req.op = backend::IoOp::kFlush;
      s->flush_seq = replica_->NoteFlushReceived();
      break;
    case Opcode::kTrim:
      req.op = backend::IoOp::kDiscard;
      break;
    case Opcode::kWriteZeroes:
      req.op = backend::IoOp::kWriteZeroes;
      break;
    default:
      return true;  // not reached: HandleRequest filters opcodes
  }
  ++inflight_;
  if (h.op() != Opcode::kRead && h.op() != Opcode::kFlush &&
      !replica_->NoteWrite(h.offset, h.length)) {
    // Its dirty-map or activity-log bits are only in memory: park it until a
    // persist covering them is durable (BeforeWait starts one for every write
    // parked this iteration, or the next one when a persist is already in
    // flight).
    ++server_->stats_.writes_parked_for_dirty_map;
    ParkForPersist(s);
    return true;
  }
  server_->backend_->Queue(&req);
  return true;
}

bool ReplicaSession::ResumeDirtyWaiters() {
  if (dirty_.empty()) return false;
  // A closing session's writes are dropped, not submitted: its target has
  // already seen the connection fail (and a fenced target must not write).
  if (closing_) {
    FailDirtyWaiters(-ECANCELED);
    return false;
  }
  replica::Replica* r = replica_.get();
  if (!r->can_persist_async()) {
    // No O_DIRECT meta handle: persist synchronously on this thread. A no-op
    // when another session of the same replica already did in this pass.
    if (r->dirty_unsynced()) ++server_->stats_.dirty_map_syncs;
    Status st = r->SyncDirty();
    if (!st.ok()) {
      TLOG_ERROR(kTag, "%s: persisting the dirty map failed, failing parked writes: %s",
                 peer_.c_str(), st.ToString().c_str());
      FailDirtyWaiters(-EIO);
      return false;
    }
  }
  // Parked in dirty_seq order, so the releasable ones are a prefix.
  while (!dirty_.empty()) {
    Slot* s = dirty_.front();
    const bool durable = r->dirty_durable(s->dirty_seq);
    if (!durable && !r->dirty_failed(s->dirty_seq)) break;
    dirty_.PopFront();
    if (durable) {
      server_->backend_->Queue(&s->req);
    } else {
      s->req.result = -EIO;
      OnIoDone(&s->req);
    }
  }
  if (dirty_.empty()) return false;
  if (!r->persist_in_flight()) {
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

void ReplicaSession::FailDirtyWaiters(int result) {
  // Detach first: completing one may park another.
  SlotQueue failed;
  failed.SpliceBack(&dirty_);
  while (Slot* s = failed.PopFront()) {
    s->req.result = result;
    OnIoDone(&s->req);
  }
}

void ReplicaSession::OnIoDone(backend::IoRequest* req) {
  Slot* s = static_cast<Slot*>(req->ctx);
  ReplicaSession* self = s->session;
  --self->inflight_;
  // The activity log counts every write noted at receipt until it is done,
  // whatever became of it (failed, dropped, or answered STALE_EPOCH), and
  // every FLUSH that made the disk durable.
  switch (req->op) {
    case backend::IoOp::kWrite:
    case backend::IoOp::kDiscard:
    case backend::IoOp::kWriteZeroes:
      self->replica_->NoteWriteDone(s->reply.offset, s->reply.length);
      break;
    case backend::IoOp::kFlush:
      if (req->result >= 0) self->replica_->NoteFlushDone(s->flush_seq, MonotonicNanos());
      break;
    default:
      break;
  }
  // A HELLO of a newer epoch may be waiting for this session's I/O to drain.
  if (self->inflight_ == 0 && (self->closing_ || self->superseded_)) {
    self->server_->WakeStalled();
  }
  if (self->closing_) {
    self->FreeSlot(s);
    if (self->inflight_ == 0) self->server_->ScheduleDelete(self);
    return;
  }
  if (self->superseded_) {
    // Whatever the backend did, the target that sent it no longer owns the
    // volume: it must not count this as done.
    if (req->op == backend::IoOp::kWrite) self->ReleaseBuffer(s);
    self->QueueReply(s, WireStatus::kStaleEpoch);
    return;
  }
  ServerStats& stats = self->server_->stats_;
  ++stats.requests;
  WireStatus st = WireStatus::kOk;
  if (req->result < 0) {
    st = req->result == -ENOSPC ? WireStatus::kNoSpace : WireStatus::kIoError;
    TLOG_WARN(kTag, "%s: %s at %llu+%u failed: %s", self->peer_.c_str(), backend::IoOpName(req->op),
              static_cast<unsigned long long>(req->offset), req->length,
              std::strerror(-req->result));
  } else if ((req->op == backend::IoOp::kRead || req->op == backend::IoOp::kWrite) &&
             static_cast<uint32_t>(req->result) != req->length) {
    st = WireStatus::kIoError;  // short transfer: the file is shorter than the replica size
  }
  if (req->op == backend::IoOp::kRead) {
    if (st == WireStatus::kOk) {
      s->payload = static_cast<const uint8_t*>(s->buf);
      s->payload_len = req->length;
      stats.bytes_read += req->length;
    }
  } else if (req->op == backend::IoOp::kWrite) {
    stats.bytes_written += req->length;
    // The data is on disk; the buffer can serve another request while the
    // reply waits for the socket.
    self->ReleaseBuffer(s);
  }
  self->QueueReply(s, st);
}

void ReplicaSession::QueueReply(Slot* s, WireStatus status) {
  if (status == WireStatus::kStaleEpoch && superseded_) {
    stale_sent_ = true;
    ++server_->stats_.stale_epoch_replies;
  }
  s->reply.status = status;
  s->reply.payload_length = status == WireStatus::kOk ? s->payload_len : 0;
  if (status != WireStatus::kOk) s->payload_len = 0;
  s->reply.payload_crc = s->payload_len ? Crc32c(s->payload, s->payload_len) : 0;
  protocol::EncodeHeader(s->reply, s->hdr);
  tx_.PushBack(s);
  server_->MarkTxPending(this);
}

void ReplicaSession::Service() {
  if (closing_) return;
  if (stalled_) {
    Parse();
    if (!stalled_ && !closing_) ReadMore();
  }
  if (!closing_) Flush();
}

void ReplicaSession::Flush() {
  while (!tx_.empty() && writable_) {
    const size_t n = protocol::GatherFrames(tx_.front(), iov_.data(), iov_.size());
    ssize_t w = ::writev(fd_.get(), iov_.data(), static_cast<int>(n));
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        writable_ = false;  // EPOLLOUT (edge) resumes us
        return;
      }
      Close(std::strerror(errno), false);
      return;
    }
    // A reply written completely frees its slot (and buffer).
    protocol::ConsumeFrames(&tx_, static_cast<size_t>(w), [this](Slot* s) { FreeSlot(s); });
  }
  if (tx_.empty() && inflight_ == 0) {
    if (close_after_flush_) {
      Close("closed after error reply", false);
    } else if (stale_sent_) {
      Close("superseded by a newer epoch; STALE_EPOCH replies sent", false);
    }
  }
}

void ReplicaSession::Supersede() {
  if (superseded_ || closing_) return;
  superseded_ = true;
  // Parked writes have not reached the disk; they never will.
  FailDirtyWaiters(-ESTALE);
}

void ReplicaSession::Close(const char* reason, bool bad_input) {
  if (closing_) return;
  closing_ = true;
  if (bad_input) {
    ++server_->stats_.sessions_closed_bad_input;
    TLOG_WARN(kTag, "%s: closing connection: %s", peer_.c_str(), reason);
  } else {
    TLOG_INFO(kTag, "%s: connection closed: %s", peer_.c_str(), reason);
  }
  ::shutdown(fd_.get(), SHUT_RDWR);
  server_->DetachSession(this);
  // Unsent replies are dropped; their slots go back now. Slots with backend I/O
  // in flight come back in OnIoDone.
  while (Slot* s = tx_.PopFront()) FreeSlot(s);
  if (inflight_ == 0) server_->ScheduleDelete(this);
}

}  // namespace tandem::server
