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
      held_(server->session_quota_.size(), 0),
      port_(server, peer_, max_inflight) {
  for (Slot& s : slots_) {
    s.session = this;
    s.req.ctx = &s;
    s.req.done = &ReplicaSession::OnPortDone;
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
    if (stalled_ && stalled_at_header_) return;  // Service() resumes
    if (direct_ != nullptr) {
      if (!ReadDirect()) return;
      continue;
    }
    if (rx_end_ == rx_cap_) {
      if (rx_begin_ == 0) return;  // full of unstarted frames: wait for Service()
      std::memmove(rx_.get(), rx_.get() + rx_begin_, rx_end_ - rx_begin_);
      rx_end_ -= rx_begin_;
      rx_begin_ = 0;
    }
    ssize_t n = ::recv(fd_.get(), rx_.get() + rx_end_, RxWindow(), 0);
    if (n > 0) {
      rx_end_ += static_cast<size_t>(n);
      rx_activity_ = true;
      server_->stats_.bytes_received += static_cast<uint64_t>(n);
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

size_t ReplicaSession::RxWindow() const {
  const size_t room = rx_cap_ - rx_end_;
  const size_t have = rx_end_ - rx_begin_;
  if (!header_first_ || have >= protocol::kHeaderSize) return room;
  return std::min(room, protocol::kHeaderSize - have);
}

bool ReplicaSession::ReadDirect() {
  const uint32_t want = direct_hdr_.payload_length - direct_got_;
  // The receive buffer is empty (StartDirect): it takes the next header only,
  // so that a next large WRITE's payload can come in place too.
  iovec iov[2];
  iov[0].iov_base = static_cast<uint8_t*>(direct_->buf) + direct_got_;
  iov[0].iov_len = want;
  iov[1].iov_base = rx_.get();
  iov[1].iov_len = protocol::kHeaderSize;
  const ssize_t n = ::readv(fd_.get(), iov, 2);
  if (n > 0) {
    rx_activity_ = true;
    server_->stats_.bytes_received += static_cast<uint64_t>(n);
    const uint32_t in_place = static_cast<uint32_t>(std::min<size_t>(want, static_cast<size_t>(n)));
    direct_got_ += in_place;
    direct_bytes_ += in_place;
    server_->stats_.write_bytes_direct += in_place;
    rx_begin_ = 0;
    rx_end_ = static_cast<size_t>(n) - in_place;
    if (in_place < want) return true;
    FinishDirect();
    if (closing_) return false;
    Parse();
    return !stalled_;
  }
  if (n == 0) {
    Close("connection closed by peer", false);
    return false;
  }
  if (errno == EINTR) return true;
  if (errno != EAGAIN && errno != EWOULDBLOCK) Close(std::strerror(errno), false);
  return false;
}

ReplicaSession::Direct ReplicaSession::StartDirect(const FrameHeader& h, const uint8_t* payload,
                                                   size_t have) {
  // Only a WRITE that will start: after HELLO, on a port not superseded,
  // passing the port's checks. Anything else takes the receive buffer's
  // path, which answers it as before.
  if (!hello_done_ || h.op() != Opcode::kWrite ||
      h.payload_length < server_->options_.direct_rx_min_bytes || port_.superseded()) {
    return Direct::kNo;
  }
  // No slot, or no buffer within the quota (TakeBuffer records the stall and
  // the pool's starvation, so a release wakes us): backpressure at the
  // header, the payload stays in the socket.
  if (free_.empty()) return Direct::kWait;
  Slot* s = AllocSlot(h);
  if (port_.Check(s->req) != WireStatus::kOk) {
    free_.PushFront(s);
    return Direct::kNo;
  }
  if (!TakeBuffer(s, h.length)) {
    free_.PushFront(s);
    return Direct::kWait;
  }
  s->req.buf = s->buf;
  std::memcpy(s->buf, payload, have);  // what the last recv already brought
  copied_bytes_ += have;
  server_->stats_.write_bytes_copied += have;
  ++server_->stats_.writes_received_direct;
  direct_ = s;
  direct_hdr_ = h;
  direct_got_ = static_cast<uint32_t>(have);
  rx_begin_ = rx_end_ = 0;
  return Direct::kStarted;
}

void ReplicaSession::FinishDirect() {
  // CRC over the aligned buffer, before the backend sees it: a mismatch
  // closes the session (Close frees the slot) and nothing is written.
  if (!protocol::CheckPayload(direct_hdr_, direct_->buf)) {
    Close("payload crc mismatch", true);
    return;
  }
  Slot* s = direct_;
  direct_ = nullptr;
  // Checked again: the port may have been superseded while the payload came.
  const WireStatus st = port_.Check(s->req);
  if (st != WireStatus::kOk) {
    ReleaseBuffer(s);
    QueueReply(s, st);
    return;
  }
  StartOnPort(s);
}

void ReplicaSession::Parse() {
  stalled_ = false;
  stalled_at_header_ = false;
  while (direct_ == nullptr && !closing_ && !close_after_flush_ &&
         rx_end_ - rx_begin_ >= protocol::kHeaderSize) {
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
    header_first_ =
        h.op() == Opcode::kWrite && h.payload_length >= server_->options_.direct_rx_min_bytes;
    if (rx_end_ - rx_begin_ < total) {
      // Wait for the rest of the payload: in its aligned buffer when it is
      // worth it (the receive buffer is then empty), else here.
      const Direct d =
          StartDirect(h, p + protocol::kHeaderSize, rx_end_ - rx_begin_ - protocol::kHeaderSize);
      if (d == Direct::kNo) break;
      stalled_ = stalled_at_header_ = d == Direct::kWait;
      return;
    }
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
  PortRequest& r = s->req;
  r.op = h.op();
  r.flags = h.flags;
  r.offset = h.offset;
  r.length = h.length;
  r.payload_length = h.payload_length;
  r.buf = nullptr;
  return s;
}

void ReplicaSession::UseControlReply(Slot* s) {
  s->payload = reinterpret_cast<const uint8_t*>(s->req.control.data());
  s->payload_len = static_cast<uint32_t>(s->req.control.size());
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
  s->req.control.clear();
  // A GET_DIRTY_MAP reply may have grown the string to a megabyte; do not
  // keep that per slot.
  if (s->req.control.capacity() > protocol::kMaxControlPayload) {
    std::string().swap(s->req.control);
  }
  free_.PushFront(s);
  if (stalled_) server_->MarkTxPending(this);
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
  if (port_.superseded()) {
    // Superseded by a newer target: answer, then hang up once every reply is
    // out (docs/protocol.md, Fencing).
    Slot* s = AllocSlot(h);
    QueueReply(s, WireStatus::kStaleEpoch);
    return true;
  }
  if ((h.op() == Opcode::kSetGeneration || h.op() == Opcode::kSetRebuildCursor) &&
      port_.metadata_busy()) {
    // Retried (Parse stalls, in order) once the persist in flight is done.
    ++server_->stats_.requests_waited_for_metadata;
    return false;
  }
  Slot* s = AllocSlot(h);
  if (!ReplicaPort::IsIo(h.op())) {
    // Answered now; the request's payload (a record) is read in place.
    s->req.buf = const_cast<uint8_t*>(payload);
    const WireStatus st = port_.Control(&s->req);
    s->req.buf = nullptr;
    if (st == WireStatus::kOk) UseControlReply(s);
    QueueReply(s, st);
    return true;
  }
  const WireStatus st = port_.Check(s->req);
  if (st != WireStatus::kOk) {
    QueueReply(s, st);
    return true;
  }
  if (!StartIo(s, payload)) {
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

bool ReplicaSession::StartIo(Slot* s, const uint8_t* payload) {
  PortRequest& r = s->req;
  if (r.op == Opcode::kRead || r.op == Opcode::kWrite) {
    if (!TakeBuffer(s, r.length)) return false;
    r.buf = s->buf;
    if (r.op == Opcode::kWrite) {
      // The payload came whole in the receive buffer: one copy into the
      // aligned buffer.
      std::memcpy(r.buf, payload, r.length);
      copied_bytes_ += r.length;
      server_->stats_.write_bytes_copied += r.length;
    }
  }
  StartOnPort(s);
  return true;
}

void ReplicaSession::StartOnPort(Slot* s) {
  const WireStatus st = port_.Start(&s->req);
  if (st != WireStatus::kOk) {
    // Refused after Check() passed (e.g. the replica refused a MARK_DIRTY).
    ReleaseBuffer(s);
    QueueReply(s, st);
  }
}

void ReplicaSession::OnPortDone(PortRequest* r) {
  Slot* s = static_cast<Slot*>(r->ctx);
  ReplicaSession* self = s->session;
  if (self->closing_) {
    self->FreeSlot(s);
    if (self->inflight() == 0) self->server_->ScheduleDelete(self);
    return;
  }
  if (r->op == Opcode::kRead && r->status == WireStatus::kOk) {
    s->payload = static_cast<const uint8_t*>(s->buf);
    s->payload_len = r->length;
  } else if (r->op == Opcode::kWrite) {
    // The data is on disk (or never will be): the buffer can serve another
    // request while the reply waits for the socket.
    self->ReleaseBuffer(s);
  }
  self->QueueReply(s, r->status);
}

void ReplicaSession::QueueReply(Slot* s, WireStatus status) {
  if (status == WireStatus::kStaleEpoch && port_.superseded()) {
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
  if (tx_.empty() && inflight() == 0) {
    if (close_after_flush_) {
      Close("closed after error reply", false);
    } else if (stale_sent_) {
      Close("superseded by a newer epoch; STALE_EPOCH replies sent", false);
    }
  }
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
  if (copied_bytes_ != 0 || direct_bytes_ != 0) {
    TLOG_INFO(kTag, "%s: WRITE payload bytes received in place %llu, copied %llu", peer_.c_str(),
              static_cast<unsigned long long>(direct_bytes_),
              static_cast<unsigned long long>(copied_bytes_));
  }
  ::shutdown(fd_.get(), SHUT_RDWR);
  server_->DetachSession(this);
  port_.Close();
  // Unsent replies are dropped; their slots go back now. Slots with backend I/O
  // in flight come back in OnIoDone.
  while (Slot* s = tx_.PopFront()) FreeSlot(s);
  if (direct_ != nullptr) {  // a payload half received: never started
    Slot* s = direct_;
    direct_ = nullptr;
    FreeSlot(s);
  }
  if (inflight() == 0) server_->ScheduleDelete(this);
}

}  // namespace tandem::server
