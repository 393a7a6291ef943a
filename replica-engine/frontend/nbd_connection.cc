// size: one NBD connection's state machine (handshake, request parsing, splitting into
// device parts, replies); its parts share the slot and buffer bookkeeping of this file.
#include "replica-engine/frontend/nbd_connection.h"

#include <sched.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/frontend/nbd_server.h"

namespace tandem::frontend {

using target::BlockOp;
using target::BlockRequest;

namespace {

constexpr const char* kTag = "nbd";
// Holds a whole option (header + kMaxOptionLength) and enough requests that a
// burst of small writes is picked up by one recv().
constexpr size_t kRxCap = 256 * 1024;
static_assert(kRxCap >= nbd::kOptionHeaderSize + nbd::kMaxOptionLength);
constexpr size_t kMaxIov = 64;

// Device status -> NBD error (doc/proto.md "Error values").
uint32_t NbdErrorFor(StatusCode code, uint16_t cmd) {
  bool is_write = cmd == nbd::kCmdWrite || cmd == nbd::kCmdWriteZeroes;
  switch (code) {
    case StatusCode::kOk:
      return 0;
    case StatusCode::kInvalidArgument:
      return nbd::kErrInval;
    case StatusCode::kOutOfRange:
      // "SHOULD return ENOSPC if it receives a write request including one or
      // more sectors beyond the size of the device"; EINVAL for reads/trims.
      return is_write ? nbd::kErrNoSpc : nbd::kErrInval;
    case StatusCode::kResourceExhausted:
      return nbd::kErrNoSpc;
    default:
      return nbd::kErrIo;
  }
}

}  // namespace

NbdConnection::NbdConnection(NbdServer* server, UniqueFd fd, std::string name)
    : server_(server),
      loop_(server->loop_),
      device_(server->device_),
      fd_(std::move(fd)),
      name_(std::move(name)),
      spin_ns_(uint64_t{server->options_.write_payload_spin_us} * 1000),
      accepted_ns_(MonotonicNanos()) {
  geometry_.size = device_->size();
  geometry_.block_size = device_->block_size();
  uint32_t bs = geometry_.block_size;
  uint32_t max_io = std::min(device_->max_io_size(), nbd::kMaxPayload);
  max_part_ = std::max(bs, max_io / bs * bs);
}

NbdConnection::~NbdConnection() {
  if (registered_) loop_->Remove(fd_.get());
}

Status NbdConnection::Start() {
  TANDEM_RETURN_IF_ERROR(arena_.Init(kArenaBytes));
  rx_.reset(new uint8_t[kRxCap]);
  slots_.resize(std::max<uint32_t>(1, server_->options_.max_requests_per_connection));
  for (Slot& s : slots_) {
    s.conn = this;
    for (BlockRequest& part : s.parts) {
      part.ctx = &s;
      part.done = &NbdConnection::OnPartDone;
    }
    free_.PushFront(&s);
  }
  iov_.resize(kMaxIov);
  // Edge-triggered: we read until EAGAIN (or until we stall on resources and
  // come back from Service()). EPOLLOUT is asked for only while a send has hit
  // EAGAIN: on a unix socket every read the client makes of our replies
  // signals write space, so a permanent EPOLLOUT would wake the loop once per
  // reply for nothing.
  TANDEM_RETURN_IF_ERROR(loop_->Add(fd_.get(), kReadEvents, this));
  registered_ = true;
  uint8_t greeting[nbd::kGreetingSize];
  nbd::EncodeGreeting(nbd::kFlagFixedNewstyle | nbd::kFlagNoZeroes, greeting);
  hs_out_.assign(reinterpret_cast<const char*>(greeting), sizeof(greeting));
  Flush();
  return Status::Ok();
}

void NbdConnection::OnEvents(uint32_t events) {
  if (finished_ || dead_) return;
  if (events & EPOLLOUT) writable_ = true;
  if (events & EPOLLERR) {
    CloseNow();
  } else {
    // EPOLLHUP/EPOLLRDHUP: read what the peer sent before it hung up; recv()
    // then reports EOF.
    if (events & (EPOLLRDHUP | EPOLLHUP)) rx_hup_seen_ = true;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) {
      rx_maybe_more_ = true;
      Pump();
    }
    Flush();
    if (out_armed_ && writable_ && !dead_) SetWriteInterest(false);
  }
  MaybeFinish();
}

void NbdConnection::SetWriteInterest(bool on) {
  Status st = loop_->Modify(fd_.get(), on ? kReadEvents | EPOLLOUT : kReadEvents, this);
  if (!st.ok()) {
    TLOG_WARN(kTag, "%s: %s", name_.c_str(), st.ToString().c_str());
    CloseNow();
    return;
  }
  out_armed_ = on;
}

void NbdConnection::Service() {
  in_service_ = true;
  do {
    again_ = false;
    Flush();
    if (stalled_ && !read_closed_) {
      // A slot or buffer was released: parse what is buffered, then read the
      // socket again (its edge was consumed while we were stalled).
      stalled_ = false;
      Pump();
      Flush();
    }
  } while (again_ && !finished_);
  in_service_ = false;
  MaybeFinish();
}

void NbdConnection::Kick() {
  if (in_service_) {
    again_ = true;
  } else if (server_ != nullptr) {
    server_->MarkPending(this);
  }
}

void NbdConnection::BeginShutdown() {
  if (phase_ != Phase::kTransmission) {
    CloseNow();
  } else {
    Drain();
  }
}

bool NbdConnection::Abandon() {
  if (registered_) {
    loop_->Remove(fd_.get());
    registered_ = false;
  }
  server_ = nullptr;
  CloseNow();
  fd_.Reset();
  if (rx_slot_ != nullptr) {
    ReleaseSlot(rx_slot_);
    rx_slot_ = nullptr;
  }
  if (device_inflight_ == 0) return true;
  orphaned_ = true;
  return false;
}

// --- Reading ----------------------------------------------------------------

ssize_t NbdConnection::RecvToBuffer() {
  // Only called when the buffered bytes are a partial message (a request
  // header or an option), so this move is small.
  if (rx_begin_ > 0) {
    memmove(rx_.get(), rx_.get() + rx_begin_, rx_end_ - rx_begin_);
    rx_end_ -= rx_begin_;
    rx_begin_ = 0;
  }
  if (!rx_maybe_more_) return -1;
  for (;;) {
    size_t want = kRxCap - rx_end_;
    ssize_t n = ::recv(fd_.get(), rx_.get() + rx_end_, want, 0);
    if (n > 0) {
      rx_end_ += static_cast<size_t>(n);
      NoteRecv(static_cast<size_t>(n), want);
      return n;
    }
    if (n == 0) {
      // Peer closed. In the handshake there is nothing to finish.
      if (phase_ == Phase::kTransmission) {
        Drain();
      } else {
        CloseNow();
      }
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) CloseNow();
    rx_maybe_more_ = false;
    return -1;
  }
}

void NbdConnection::NoteRecv(size_t got, size_t want) {
  // A short read emptied the socket. With EPOLLET any byte arriving after
  // that raises a new EPOLLIN, so the recv() that would only say EAGAIN is
  // skipped (one syscall per wake-up). Not after a hang-up was reported:
  // then we read on until recv() returns the EOF.
  if (got < want && !rx_hup_seen_) rx_maybe_more_ = false;
}

bool NbdConnection::MaySpinForPayload(uint32_t need) const {
  if (spin_ns_ == 0 || need > kMaxSpinPayload) return false;
  // The deadline passed once: this payload waits in epoll from now on.
  return rx_spin_until_ns_ == 0 || MonotonicNanos() < rx_spin_until_ns_;
}

ssize_t NbdConnection::SpinRecvPayload(uint32_t need) {
  uint64_t now = MonotonicNanos();
  if (rx_spin_until_ns_ == 0) {
    rx_spin_until_ns_ = now + spin_ns_;
    if (server_ != nullptr) ++server_->stats_.payload_spins;
  }
  while (now < rx_spin_until_ns_) {
    // Yield, not pause: when the header's wake-up put the loop on the
    // client's CPU (preempting the client before its second send), a busy
    // spin only keeps the payload from being sent (with pause, QD1 lost in
    // both A/B pairs; docs/performance.md). With nothing else runnable
    // sched_yield() returns at once.
    sched_yield();
    ssize_t n = ::recv(fd_.get(), rx_slot_->buf + rx_done_, need, MSG_DONTWAIT);
    if (n > 0 && server_ != nullptr) ++server_->stats_.payload_spin_hits;
    // Bytes, EOF or an error (EINTR included) are the caller's to handle.
    if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) return n;
    now = MonotonicNanos();
  }
  errno = EAGAIN;
  return -1;
}

void NbdConnection::Pump() {
  while (!read_closed_ && !stalled_) {
    if (rx_slot_ != nullptr) {
      uint32_t need = rx_slot_->req.length - rx_done_;
      size_t avail = rx_end_ - rx_begin_;
      if (avail > 0) {
        size_t take = std::min<size_t>(avail, need);
        memcpy(rx_slot_->buf + rx_done_, rx_.get() + rx_begin_, take);
        rx_begin_ += take;
        rx_done_ += static_cast<uint32_t>(take);
      } else {
        // Large payloads go straight into their arena buffer: no extra copy.
        ssize_t n;
        if (rx_maybe_more_) {
          n = ::recv(fd_.get(), rx_slot_->buf + rx_done_, need, 0);
        } else if (MaySpinForPayload(need)) {
          n = SpinRecvPayload(need);
        } else {
          return;
        }
        if (n > 0) {
          rx_done_ += static_cast<uint32_t>(n);
          NoteRecv(static_cast<size_t>(n), need);
        } else if (n == 0) {
          Drain();
          return;
        } else if (errno == EINTR) {
          continue;
        } else {
          if (errno != EAGAIN && errno != EWOULDBLOCK) CloseNow();
          rx_maybe_more_ = false;
          return;
        }
      }
      if (rx_done_ == rx_slot_->req.length) {
        Slot* s = rx_slot_;
        rx_slot_ = nullptr;
        StartRequest(s);
      }
      continue;
    }
    if (discard_left_ > 0) {
      size_t avail = rx_end_ - rx_begin_;
      size_t take = static_cast<size_t>(std::min<uint64_t>(avail, discard_left_));
      rx_begin_ += take;
      discard_left_ -= take;
      if (discard_left_ > 0 && RecvToBuffer() <= 0) return;
      continue;
    }
    if (ParseOne()) continue;
    if (read_closed_ || stalled_) return;
    if (RecvToBuffer() <= 0) return;
  }
}

bool NbdConnection::ParseOne() {
  const uint8_t* p = rx_.get() + rx_begin_;
  size_t avail = rx_end_ - rx_begin_;
  switch (phase_) {
    case Phase::kClientFlags: {
      uint32_t flags = 0;
      nbd::ParseResult r = nbd::ParseClientFlags(p, avail, &flags);
      if (r == nbd::ParseResult::kIncomplete) return false;
      if (r != nbd::ParseResult::kOk) {
        ProtocolError("unknown client flags");
        return false;
      }
      rx_begin_ += nbd::kClientFlagsSize;
      // A client without FIXED_NEWSTYLE is served anyway (the spec allows
      // it); it simply will not send options we would reject.
      no_zeroes_ = (flags & nbd::kClientFlagNoZeroes) != 0;
      phase_ = Phase::kOptions;
      return true;
    }
    case Phase::kOptions:
      if (hs_sent_ < hs_out_.size()) {
        // The previous option's reply is not written yet. Clients must wait
        // for it anyway; one that does not (and does not read) must not make
        // us buffer replies without bound.
        stalled_ = true;
        return false;
      }
      return ParseOption();
    case Phase::kTransmission:
      return ParseRequest();
  }
  return false;
}

bool NbdConnection::ParseOption() {
  const uint8_t* p = rx_.get() + rx_begin_;
  size_t avail = rx_end_ - rx_begin_;
  nbd::OptionHeader h;
  nbd::ParseResult r = nbd::ParseOptionHeader(p, avail, &h);
  if (r == nbd::ParseResult::kIncomplete) return false;
  if (r == nbd::ParseResult::kBadMagic) {
    ProtocolError("bad option magic (expected IHAVEOPT)");
    return false;
  }
  if (r != nbd::ParseResult::kOk) {
    ProtocolError("option length above the 4 KiB limit");
    return false;
  }
  if (avail < nbd::kOptionHeaderSize + h.length) return false;
  rx_begin_ += nbd::kOptionHeaderSize + h.length;
  // The data stays valid: nothing reads the socket until HandleOption returns.
  HandleOption(h.option, p + nbd::kOptionHeaderSize, h.length);
  Flush();
  return true;
}

bool NbdConnection::NameMatches(std::string_view name) const {
  return name.empty() || name == server_->options_.export_name;
}

void NbdConnection::HandleOption(uint32_t option, const uint8_t* data, uint32_t len) {
  TLOG_DEBUG(kTag, "%s: option %s (%u bytes)", name_.c_str(), nbd::OptionName(option), len);
  switch (option) {
    case nbd::kOptExportName: {
      std::string_view name(reinterpret_cast<const char*>(data), len);
      if (!NameMatches(name)) {
        // No error reply exists for EXPORT_NAME: the spec says terminate.
        TLOG_WARN(kTag, "%s: NBD_OPT_EXPORT_NAME for unknown export '%.*s'; closing", name_.c_str(),
                  static_cast<int>(std::min<uint32_t>(len, 256)), name.data());
        CloseNow();
        return;
      }
      nbd::AppendExportNameReply(geometry_.size, server_->tx_flags_, no_zeroes_, &hs_out_);
      EnterTransmission();
      return;
    }
    case nbd::kOptAbort:
      // Data, if any, is ignored, as the spec asks.
      nbd::AppendOptionReply(option, nbd::kRepAck, {}, &hs_out_);
      Drain();
      return;
    case nbd::kOptList:
      if (len != 0) {
        nbd::AppendOptionReply(option, nbd::kRepErrInvalid, "NBD_OPT_LIST takes no data", &hs_out_);
        return;
      }
      nbd::AppendServerReply(server_->options_.export_name, &hs_out_);
      nbd::AppendOptionReply(option, nbd::kRepAck, {}, &hs_out_);
      return;
    case nbd::kOptInfo:
    case nbd::kOptGo:
      HandleInfoOrGo(option, data, len);
      return;
    default:
      // Includes STARTTLS, STRUCTURED_REPLY and the metadata contexts: the
      // client falls back to plain simple replies.
      nbd::AppendOptionReply(option, nbd::kRepErrUnsup, "option not supported", &hs_out_);
      return;
  }
}

void NbdConnection::HandleInfoOrGo(uint32_t option, const uint8_t* data, uint32_t len) {
  nbd::InfoRequest info;
  if (nbd::ParseInfoRequest(data, len, &info) != nbd::ParseResult::kOk) {
    nbd::AppendOptionReply(option, nbd::kRepErrInvalid, "malformed NBD_OPT_INFO/GO data", &hs_out_);
    return;
  }
  if (!NameMatches(info.name)) {
    std::string msg = "unknown export '";
    msg.append(info.name.substr(0, 256));
    msg += "'";
    nbd::AppendOptionReply(option, nbd::kRepErrUnknown, msg, &hs_out_);
    return;
  }
  nbd::AppendInfoExport(option, geometry_.size, server_->tx_flags_, &hs_out_);
  // Sent whether requested or not (the spec allows unrequested info): the
  // minimum is enforced either way, with EINVAL for misaligned requests.
  uint32_t bs = geometry_.block_size;
  uint32_t preferred = std::max<uint32_t>(4096, bs);
  uint32_t max_payload = std::max(preferred, max_part_);
  nbd::AppendInfoBlockSize(option, bs, preferred, max_payload, &hs_out_);
  if (info.Requested(nbd::kInfoName)) {
    nbd::AppendInfoString(option, nbd::kInfoName, server_->options_.export_name, &hs_out_);
  }
  nbd::AppendOptionReply(option, nbd::kRepAck, {}, &hs_out_);
  if (option == nbd::kOptGo) EnterTransmission();
}

void NbdConnection::EnterTransmission() {
  phase_ = Phase::kTransmission;
  TLOG_DEBUG(kTag, "%s: transmission phase", name_.c_str());
}

bool NbdConnection::ParseRequest() {
  const uint8_t* p = rx_.get() + rx_begin_;
  size_t avail = rx_end_ - rx_begin_;
  nbd::Request r;
  nbd::ParseResult pr = nbd::ParseRequest(p, avail, &r);
  if (pr == nbd::ParseResult::kIncomplete) return false;
  if (pr != nbd::ParseResult::kOk) {
    ProtocolError("bad request magic");
    return false;
  }
  if (r.type == nbd::kCmdDisc) {
    // "The server MUST handle all outstanding requests ... and close".
    rx_begin_ += nbd::kRequestSize;
    Drain();
    return false;
  }
  if (r.type == nbd::kCmdWrite && r.length > nbd::kMaxPayload) {
    // Skipping the payload would mean reading up to 4 GiB for nothing; the
    // spec allows a hard disconnect for payloads this large.
    ProtocolError("write payload above 32 MiB");
    return false;
  }
  if (free_.empty()) {
    stalled_ = true;
    return false;
  }
  uint32_t err = nbd::ValidateRequest(r, geometry_);
  uint8_t* buf = nullptr;
  if (err == 0 && (r.type == nbd::kCmdRead || r.type == nbd::kCmdWrite)) {
    buf = arena_.Allocate(r.length);
    if (buf == nullptr) {
      stalled_ = true;
      return false;
    }
  }
  rx_begin_ += nbd::kRequestSize;
  Slot* slot = free_.PopFront();
  slot->req = r;
  slot->buf = buf;
  slot->next = 0;
  slot->parts_inflight = 0;
  slot->status = StatusCode::kOk;
  slot->error = 0;
  if (server_ != nullptr) ++server_->stats_.requests;
  if (err != 0) {
    TLOG_DEBUG(kTag, "%s: %s offset %llu length %u rejected with error %u", name_.c_str(),
               nbd::CommandName(r.type), static_cast<unsigned long long>(r.offset), r.length, err);
    slot->error = err;
    if (r.type == nbd::kCmdWrite) discard_left_ = r.length;
    QueueReply(slot);
    return true;
  }
  if (r.type == nbd::kCmdWrite) {
    rx_slot_ = slot;
    rx_done_ = 0;
    rx_spin_until_ns_ = 0;
    return true;
  }
  StartRequest(slot);
  return true;
}

// --- Device requests ----------------------------------------------------------

void NbdConnection::StartRequest(Slot* slot) {
  if (slot->req.type == nbd::kCmdFlush) {
    // Multi-connection flush semantics (NBD_FLAG_CAN_MULTI_CONN): a FLUSH on
    // any connection must make durable every write completed on any
    // connection before it. All connections of this server submit to the one
    // BlockDevice, whose kFlush covers every write completed before the flush
    // was submitted, whoever submitted it, so passing FLUSH through is
    // correct; nothing is cached per connection here.
    slot->next = slot->req.length;
    BlockRequest* part = &slot->parts[0];
    part->op = BlockOp::kFlush;
    part->flags = 0;
    part->offset = 0;
    part->length = 0;
    part->buf = nullptr;
    part->status = StatusCode::kOk;
    ++slot->parts_inflight;
    ++device_inflight_;
    device_->Submit(part);
    return;
  }
  for (uint32_t i = 0; i < kPartsPerSlot && slot->next < slot->req.length; ++i) {
    SubmitPart(slot, &slot->parts[i]);
  }
}

void NbdConnection::SubmitPart(Slot* slot, BlockRequest* part) {
  const nbd::Request& r = slot->req;
  uint32_t chunk = static_cast<uint32_t>(std::min<uint64_t>(max_part_, r.length - slot->next));
  switch (r.type) {
    case nbd::kCmdRead:
      part->op = BlockOp::kRead;
      break;
    case nbd::kCmdWrite:
      part->op = BlockOp::kWrite;
      break;
    case nbd::kCmdTrim:
      part->op = BlockOp::kTrim;
      break;
    default:
      part->op = BlockOp::kWriteZeroes;
      break;
  }
  // FUA on a read means nothing to persist; on writes it maps 1:1 (on a
  // split write every piece is FUA, so the reply waits for all of them).
  part->flags = (r.flags & nbd::kCmdFlagFua) && part->op != BlockOp::kRead ? target::kBlockFua : 0;
  part->offset = r.offset + slot->next;
  part->length = chunk;
  part->buf = slot->buf != nullptr ? slot->buf + slot->next : nullptr;
  part->status = StatusCode::kOk;
  slot->next += chunk;
  ++slot->parts_inflight;
  ++device_inflight_;
  device_->Submit(part);
}

void NbdConnection::OnPartDone(BlockRequest* part) {
  Slot* slot = static_cast<Slot*>(part->ctx);
  NbdConnection* conn = slot->conn;
  --conn->device_inflight_;
  --slot->parts_inflight;
  if (part->status != StatusCode::kOk && slot->status == StatusCode::kOk) {
    slot->status = part->status;
  }
  if (conn->orphaned_) {
    // The server is gone; this connection owns itself until now.
    if (conn->device_inflight_ == 0) delete conn;
    return;
  }
  if (slot->status == StatusCode::kOk && slot->next < slot->req.length && !conn->dead_) {
    conn->SubmitPart(slot, part);  // next piece of a split request
    return;
  }
  if (slot->parts_inflight > 0) return;
  conn->FinishRequest(slot);
}

void NbdConnection::FinishRequest(Slot* slot) {
  slot->error = NbdErrorFor(slot->status, slot->req.type);
  if (dead_) {
    ReleaseSlot(slot);
    Kick();  // MaybeFinish
    return;
  }
  // A WRITE's data is no longer needed; free it before the reply is sent.
  if (slot->buf != nullptr && (slot->req.type != nbd::kCmdRead || slot->error != 0)) {
    arena_.Free(slot->buf, slot->req.length);
    slot->buf = nullptr;
    if (stalled_) Kick();
  }
  QueueReply(slot);
}

void NbdConnection::QueueReply(Slot* slot) {
  nbd::EncodeSimpleReply(slot->error, slot->req.cookie, slot->reply);
  slot->payload_len = slot->req.type == nbd::kCmdRead && slot->error == 0 ? slot->req.length : 0;
  slot->sent = 0;
  if (server_ != nullptr) {
    if (slot->error != 0) {
      ++server_->stats_.errors;
    } else if (slot->req.type == nbd::kCmdRead) {
      server_->stats_.bytes_read += slot->req.length;
    } else if (slot->req.type == nbd::kCmdWrite) {
      server_->stats_.bytes_written += slot->req.length;
    }
  }
  tx_.PushBack(slot);
  Kick();
}

void NbdConnection::ReleaseSlot(Slot* slot) {
  if (slot->buf != nullptr) {
    arena_.Free(slot->buf, slot->req.length);
    slot->buf = nullptr;
  }
  free_.PushFront(slot);
  if (stalled_) Kick();
}

// --- Writing ------------------------------------------------------------------

void NbdConnection::Flush() {
  while (!dead_ && writable_) {
    size_t n_iov = 0;
    size_t hs_left = hs_out_.size() - hs_sent_;
    if (hs_left > 0) iov_[n_iov++] = {hs_out_.data() + hs_sent_, hs_left};
    for (Slot* s = tx_.front(); s != nullptr && n_iov + 2 <= kMaxIov; s = s->next_slot) {
      if (s->sent < nbd::kSimpleReplySize) {
        iov_[n_iov++] = {s->reply + s->sent, nbd::kSimpleReplySize - s->sent};
        if (s->payload_len > 0) iov_[n_iov++] = {s->buf, s->payload_len};
      } else {
        uint32_t off = s->sent - static_cast<uint32_t>(nbd::kSimpleReplySize);
        iov_[n_iov++] = {s->buf + off, s->payload_len - off};
      }
    }
    if (n_iov == 0) return;
    msghdr msg{};
    msg.msg_iov = iov_.data();
    msg.msg_iovlen = n_iov;
    ssize_t w = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        writable_ = false;  // EPOLLOUT (edge) brings us back
        if (!out_armed_) SetWriteInterest(true);
        return;
      }
      TLOG_DEBUG(kTag, "%s: send: %s", name_.c_str(), strerror(errno));
      CloseNow();
      return;
    }
    size_t left = static_cast<size_t>(w);
    if (hs_left > 0) {
      size_t take = std::min(left, hs_left);
      hs_sent_ += take;
      left -= take;
      if (hs_sent_ == hs_out_.size()) {
        hs_out_.clear();
        hs_sent_ = 0;
        if (stalled_) Kick();
      }
    }
    while (left > 0) {
      Slot* s = tx_.front();
      uint32_t total = static_cast<uint32_t>(nbd::kSimpleReplySize) + s->payload_len;
      size_t take = std::min<size_t>(left, total - s->sent);
      s->sent += static_cast<uint32_t>(take);
      left -= take;
      if (s->sent == total) {
        tx_.PopFront();
        ReleaseSlot(s);
      }
    }
  }
}

// --- Closing ------------------------------------------------------------------

void NbdConnection::ProtocolError(const char* what) {
  TLOG_WARN(kTag, "%s: protocol violation, closing the connection: %s", name_.c_str(), what);
  if (server_ != nullptr) ++server_->stats_.connections_closed_bad_input;
  CloseNow();
}

void NbdConnection::CloseNow() {
  if (dead_) return;
  read_closed_ = true;
  dead_ = true;
  if (fd_.valid()) ::shutdown(fd_.get(), SHUT_RDWR);
  while (Slot* s = tx_.PopFront()) ReleaseSlot(s);
  hs_out_.clear();
  hs_sent_ = 0;
  Kick();
}

void NbdConnection::Drain() {
  read_closed_ = true;
  Kick();
}

void NbdConnection::MaybeFinish() {
  if (finished_ || !read_closed_) return;
  if (rx_slot_ != nullptr) {
    // A WRITE whose payload will never arrive.
    ReleaseSlot(rx_slot_);
    rx_slot_ = nullptr;
  }
  if (device_inflight_ > 0) return;
  if (!dead_ && (!tx_.empty() || hs_sent_ < hs_out_.size())) {
    // Replies still to write. At server shutdown a client that does not read
    // must not hold the drain up: give up on it.
    if (server_ == nullptr || !server_->shutting_down_ || writable_) return;
    CloseNow();
  }
  if (registered_) {
    loop_->Remove(fd_.get());
    registered_ = false;
  }
  if (fd_.valid()) ::shutdown(fd_.get(), SHUT_RDWR);
  finished_ = true;
  TLOG_DEBUG(kTag, "%s: closed", name_.c_str());
  if (server_ != nullptr) server_->MarkPending(this);
}

}  // namespace tandem::frontend
