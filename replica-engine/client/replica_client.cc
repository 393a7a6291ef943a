#include "replica-engine/client/replica_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "common/clock.h"
#include "common/crc32c.h"
#include "common/logging.h"
#include "replica-engine/protocol/frame_tx.h"
#include "replica-engine/protocol/hello_proof.h"

namespace tandem::client {

using protocol::FrameHeader;
using protocol::Opcode;
using protocol::StatusCodeOf;
using protocol::WireStatus;

namespace {
constexpr const char* kTag = "replica_client";
constexpr size_t kRxSlack = 256 * 1024;
constexpr size_t kMaxIov = 256;
constexpr uint32_t kTickMs = 50;

}  // namespace

ReplicaClient::ReplicaClient(EventLoop* loop, ClientOptions options, Listener* listener)
    : loop_(loop),
      options_(std::move(options)),
      listener_(listener),
      rx_(new uint8_t[protocol::kHeaderSize + protocol::kMaxPayload + kRxSlack]),
      rx_cap_(protocol::kHeaderSize + protocol::kMaxPayload + kRxSlack),
      slots_(options_.max_inflight == 0 ? 1 : options_.max_inflight),
      iov_(kMaxIov) {
  keepalive_.op = Opcode::kGetInfo;
  keepalive_.done = &ReplicaClient::KeepaliveDone;
  keepalive_.ctx = this;
  loop_->AddIdler(this);
  loop_->AddTicker(this, kTickMs);
}

void ReplicaClient::KeepaliveDone(ClientRequest* req) {
  static_cast<ReplicaClient*>(req->ctx)->keepalive_busy_ = false;
}

ReplicaClient::~ReplicaClient() {
  Close();
  loop_->RemoveIdler(this);
  loop_->RemoveTicker(this);
}

Status ReplicaClient::Connect() {
  if (state_ == ClientState::kConnecting || state_ == ClientState::kHandshaking ||
      state_ == ClientState::kConnected) {
    return Status::FailedPrecondition("replica client is already connecting or connected");
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(options_.port);
  if (inet_pton(AF_INET, options_.host.c_str(), &addr.sin_addr) != 1) {
    return Status::InvalidArgument("replica host is not an IPv4 address: " + options_.host);
  }
  TANDEM_RETURN_IF_ERROR(protocol::ValidateSecret(options_.secret));
  awaiting_nonce_ = !options_.secret.empty();
  if (awaiting_nonce_) {
    // Ask for this connection's nonce first; the HELLO proves the secret
    // over it (OnChallengeReply).
    FrameHeader h;
    h.opcode = static_cast<uint8_t>(Opcode::kChallenge);
    hello_frame_.assign(protocol::kHeaderSize, '\0');
    protocol::EncodeHeader(h, reinterpret_cast<uint8_t*>(hello_frame_.data()));
  } else {
    TANDEM_RETURN_IF_ERROR(BuildHello({}));
  }
  hello_sent_ = 0;

  fd_.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd_.valid()) return PosixError("socket", errno);
  int one = 1;
  setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 &&
      errno != EINPROGRESS) {
    Status st = PosixError("connect " + options_.host + ":" + std::to_string(options_.port), errno);
    fd_.Reset();
    return st;
  }
  TANDEM_RETURN_IF_ERROR(loop_->Add(fd_.get(), EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, this));
  state_ = ClientState::kConnecting;
  writable_ = false;
  rx_begin_ = rx_end_ = 0;
  connect_started_ns_ = MonotonicNanos();
  return Status::Ok();
}

void ReplicaClient::OnEvents(uint32_t events) {
  if (state_ == ClientState::kConnecting) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    OnConnectDone();
    if (state_ != ClientState::kHandshaking) return;
  }
  if (events & EPOLLOUT) writable_ = true;
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) ReadMore();
  if (state_ == ClientState::kHandshaking) {
    SendHello();
  } else if (state_ == ClientState::kConnected && (events & EPOLLOUT)) {
    Flush();
  }
}

void ReplicaClient::OnConnectDone() {
  int err = 0;
  socklen_t len = sizeof(err);
  getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    Fail(PosixError("connect " + options_.host + ":" + std::to_string(options_.port), err), true);
    return;
  }
  state_ = ClientState::kHandshaking;
  writable_ = true;
}

Status ReplicaClient::BuildHello(std::string_view nonce) {
  protocol::HelloRequest hello{options_.epoch, options_.volume_id, options_.token,
                               options_.target_id};
  if (!options_.secret.empty())
    hello.proof = protocol::ComputeHelloProof(options_.secret, nonce, hello);
  std::string payload;
  TANDEM_RETURN_IF_ERROR(protocol::EncodeHello(hello, &payload));
  FrameHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kHello);
  h.payload_length = static_cast<uint32_t>(payload.size());
  h.payload_crc = Crc32c(payload.data(), payload.size());
  hello_frame_.assign(protocol::kHeaderSize, '\0');
  protocol::EncodeHeader(h, reinterpret_cast<uint8_t*>(hello_frame_.data()));
  hello_frame_ += payload;
  return Status::Ok();
}

void ReplicaClient::OnChallengeReply(const FrameHeader& h, const uint8_t* payload) {
  awaiting_nonce_ = false;
  if (h.op() != Opcode::kChallenge) {
    Fail(Status::DataLoss("expected a CHALLENGE reply"), true);
    return;
  }
  if (h.status != WireStatus::kOk || h.payload_length != protocol::kNonceSize) {
    // NOT_READY: a replica from before per-volume secrets.
    Fail(Status(h.status == WireStatus::kOk ? StatusCode::kDataLoss : StatusCodeOf(h.status),
                std::string("replica refused CHALLENGE for volume '") + options_.volume_id +
                    "': " + protocol::WireStatusName(h.status) +
                    (h.status == WireStatus::kNotReady ? " (a replica without per-volume secrets?)"
                                                       : "")),
         true);
    return;
  }
  Status st =
      BuildHello(std::string_view(reinterpret_cast<const char*>(payload), h.payload_length));
  if (!st.ok()) {
    Fail(st.WithContext("HELLO"), true);
    return;
  }
  hello_sent_ = 0;
  SendHello();
}

void ReplicaClient::SendHello() {
  while (writable_ && hello_sent_ < hello_frame_.size()) {
    ssize_t n = ::send(fd_.get(), hello_frame_.data() + hello_sent_,
                       hello_frame_.size() - hello_sent_, MSG_NOSIGNAL);
    if (n > 0) {
      hello_sent_ += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      writable_ = false;
    } else {
      Fail(PosixError("send HELLO", errno), true);
      return;
    }
  }
}

void ReplicaClient::ReadMore() {
  while (state_ == ClientState::kHandshaking || state_ == ClientState::kConnected) {
    if (rx_end_ == rx_cap_) {
      // A frame never exceeds the buffer, so a full buffer always has a
      // consumed prefix to drop.
      std::memmove(rx_.get(), rx_.get() + rx_begin_, rx_end_ - rx_begin_);
      rx_end_ -= rx_begin_;
      rx_begin_ = 0;
    }
    ssize_t n = ::recv(fd_.get(), rx_.get() + rx_end_, rx_cap_ - rx_end_, 0);
    if (n > 0) {
      rx_end_ += static_cast<size_t>(n);
      stats_.bytes_received += static_cast<uint64_t>(n);
      Parse();
      continue;
    }
    if (n == 0) {
      Fail(Status::Unavailable("replica " + options_.host + ":" + std::to_string(options_.port) +
                               " closed the connection"),
           true);
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    Fail(PosixError("recv from replica", errno), true);
    return;
  }
}

void ReplicaClient::Parse() {
  while ((state_ == ClientState::kHandshaking || state_ == ClientState::kConnected) &&
         rx_end_ - rx_begin_ >= protocol::kHeaderSize) {
    const uint8_t* p = rx_.get() + rx_begin_;
    FrameHeader h;
    protocol::DecodeResult r = protocol::DecodeHeader(p, &h);
    if (r != protocol::DecodeResult::kOk || !h.is_reply()) {
      Fail(Status::DataLoss(
               std::string("bad reply frame from replica: ") +
               (r != protocol::DecodeResult::kOk ? protocol::DecodeResultName(r) : "not a reply")),
           true);
      return;
    }
    size_t total = protocol::kHeaderSize + h.payload_length;
    if (rx_end_ - rx_begin_ < total) break;
    const uint8_t* payload = p + protocol::kHeaderSize;
    if (!protocol::CheckPayload(h, payload)) {
      Fail(Status::DataLoss("reply payload crc mismatch"), true);
      return;
    }
    rx_begin_ += total;
    HandleReply(h, payload);
  }
  if (rx_begin_ == rx_end_) rx_begin_ = rx_end_ = 0;
}

// size: the checks of one reply against its request (id, opcode, lengths, crc, payload
// per opcode) in the order the wire format defines them.
void ReplicaClient::HandleReply(const FrameHeader& h, const uint8_t* payload) {
  if (state_ == ClientState::kHandshaking) {
    if (awaiting_nonce_) {
      OnChallengeReply(h, payload);
      return;
    }
    if (h.op() != Opcode::kHello) {
      Fail(Status::DataLoss("expected a HELLO reply"), true);
      return;
    }
    if (h.status != WireStatus::kOk) {
      Fail(Status(StatusCodeOf(h.status), std::string("replica refused HELLO for volume '") +
                                              options_.volume_id +
                                              "': " + protocol::WireStatusName(h.status)),
           true);
      return;
    }
    Status st = protocol::DecodeReplicaInfo(
        std::string_view(reinterpret_cast<const char*>(payload), h.payload_length), &info_);
    if (!st.ok()) {
      Fail(st.WithContext("HELLO reply"), true);
      return;
    }
    window_ = static_cast<uint32_t>(slots_.size());
    if (info_.max_inflight != 0 && info_.max_inflight < window_) window_ = info_.max_inflight;
    free_.Clear();
    for (uint32_t i = window_; i-- > 0;) {
      slots_[i].req = nullptr;
      free_.PushFront(&slots_[i]);
    }
    state_ = ClientState::kConnected;
    last_send_ns_ = MonotonicNanos();
    TLOG_DEBUG(kTag, "connected to %s:%u volume '%s' replica '%s' (window %u)",
               options_.host.c_str(), options_.port, options_.volume_id.c_str(),
               info_.replica_id.c_str(), window_);
    if (listener_ != nullptr) listener_->OnConnected(info_);
    StartQueued();
    return;
  }
  uint32_t idx = static_cast<uint32_t>(h.request_id);
  uint32_t seq = static_cast<uint32_t>(h.request_id >> 32);
  if (idx >= window_ || slots_[idx].req == nullptr || slots_[idx].seq != seq ||
      slots_[idx].sent < protocol::kHeaderSize + slots_[idx].payload_len) {
    Fail(Status::DataLoss("reply for an unknown request id"), true);
    return;
  }
  Slot& s = slots_[idx];
  ClientRequest* req = s.req;
  if (h.op() != req->op) {
    Fail(Status::DataLoss("reply opcode does not match the request"), true);
    return;
  }
  StatusCode code = StatusCodeOf(h.status);
  if (h.status == WireStatus::kOk && req->op == Opcode::kRead) {
    if (h.payload_length != req->length) {
      Fail(Status::DataLoss("READ reply length does not match the request"), true);
      return;
    }
    std::memcpy(req->buf, payload, req->length);  // the one copy on the read path
    req->reply_length = req->length;
  } else if (h.status == WireStatus::kOk &&
             (req->op == Opcode::kGetDirtyMap || req->op == Opcode::kGetAllocation)) {
    // GET_ALLOCATION's buffer is kMaxAllocationReply bytes by contract, which
    // the frame limit already enforces on the reply.
    const uint32_t capacity =
        req->op == Opcode::kGetDirtyMap ? req->length : protocol::kMaxAllocationReply;
    req->reply_length = h.payload_length;
    if (h.payload_length <= capacity && req->buf != nullptr) {
      std::memcpy(req->buf, payload, h.payload_length);
    } else if (h.payload_length != 0) {
      code = StatusCode::kResourceExhausted;  // the caller's buffer is too small
    }
  } else if (h.status == WireStatus::kOk && req->op == Opcode::kGetInfo && req->buf != nullptr) {
    // Fits: the frame limit is kMaxControlPayload, the buffer's capacity.
    std::memcpy(req->buf, payload, h.payload_length);
    req->reply_length = h.payload_length;
  }
  s.req = nullptr;
  free_.PushFront(&s);
  --inflight_;
  req->wire_status = h.status;
  Complete(req, code);
  StartQueued();
}

void ReplicaClient::Complete(ClientRequest* req, StatusCode code) {
  req->status = code;
  if (code == StatusCode::kOk) {
    ++stats_.requests_completed;
  } else {
    ++stats_.requests_failed;
  }
  req->done(req);
}

void ReplicaClient::Submit(ClientRequest* req) {
  req->status = StatusCode::kOk;
  req->wire_status = WireStatus::kOk;
  req->reply_length = 0;
  if (state_ == ClientState::kIdle || state_ == ClientState::kClosed) {
    req->status = StatusCode::kUnavailable;
    failed_.PushBack(req);
    loop_->Wake();
    return;
  }
  queued_.PushBack(req);
  if (state_ != ClientState::kConnected) return;
  StartQueued();
  // Our BeforeWait has run in this iteration and the loop is about to wait:
  // nothing would send this request until something else wakes the loop (a
  // tick, up to tens of ms later). Send now; it was going to be the last
  // batch of this iteration anyway.
  if (loop_->wait_count() == flushed_at_wait_ && !tx_.empty()) {
    ++stats_.late_submits_sent;
    Flush(/*may_fail=*/false);
  }
}

void ReplicaClient::StartQueued() {
  while (!queued_.empty() && !free_.empty() && state_ == ClientState::kConnected) {
    ClientRequest* req = queued_.PopFront();
    Slot* s = free_.PopFront();
    uint32_t idx = static_cast<uint32_t>(s - slots_.data());
    ++s->seq;
    s->req = req;
    s->sent = 0;
    s->sent_ns = MonotonicNanos();
    last_send_ns_ = s->sent_ns;
    const bool sends_payload =
        req->op == Opcode::kWrite || req->op == Opcode::kSetRebuildCursor ||
        (req->op == Opcode::kSetGeneration && req->buf != nullptr && req->length != 0);
    s->payload = sends_payload ? static_cast<const uint8_t*>(req->buf) : nullptr;
    s->payload_len = sends_payload ? req->length : 0;
    FrameHeader h;
    h.opcode = static_cast<uint8_t>(req->op);
    h.flags = req->flags;
    h.request_id = (static_cast<uint64_t>(s->seq) << 32) | idx;
    h.offset = req->offset;
    h.length = req->length;
    h.payload_length = s->payload_len;
    h.payload_crc = sends_payload && req->length != 0 ? Crc32c(req->buf, req->length) : 0;
    protocol::EncodeHeader(h, s->hdr);
    tx_.PushBack(s);
    ++inflight_;
  }
}

void ReplicaClient::BeforeWait() {
  // Detach first: a callback may Submit() again (and fail again).
  RequestQueue failed;
  failed.SpliceBack(&failed_);
  while (ClientRequest* r = failed.PopFront()) Complete(r, r->status);
  flushed_at_wait_ = loop_->wait_count();
  if (state_ == ClientState::kConnected) Flush();
}

void ReplicaClient::Flush(bool may_fail) {
  while (!tx_.empty() && writable_) {
    const size_t n = protocol::GatherFrames(tx_.front(), iov_.data(), iov_.size());
    msghdr msg{};
    msg.msg_iov = iov_.data();
    msg.msg_iovlen = n;
    ssize_t w = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        writable_ = false;
        return;
      }
      if (!may_fail) {
        loop_->Wake();
        return;
      }
      // The replica may have answered before hanging up (a superseded
      // connection sends STALE_EPOCH replies, then closes): take those
      // replies first, so the caller learns why, then fail the rest.
      const int err = errno;
      ReadMore();
      if (state_ == ClientState::kConnected) Fail(PosixError("send to replica", err), true);
      return;
    }
    stats_.bytes_sent += static_cast<uint64_t>(w);
    // A request written completely stays in its slot until its reply.
    protocol::ConsumeFrames(&tx_, static_cast<size_t>(w), [](Slot*) {});
  }
}

void ReplicaClient::OnTick(uint64_t now_ns) {
  if (state_ == ClientState::kConnecting || state_ == ClientState::kHandshaking) {
    // now_ns may predate a Connect() made earlier in this ticker pass.
    if (now_ns > connect_started_ns_ &&
        now_ns - connect_started_ns_ > options_.connect_timeout_ms * 1000000ull) {
      Fail(Status::DeadlineExceeded("connecting to replica " + options_.host + ":" +
                                    std::to_string(options_.port) + " timed out"),
           true);
    }
    return;
  }
  if (state_ != ClientState::kConnected) return;
  if (inflight_ == 0) {
    if (options_.keepalive_ms != 0 && !keepalive_busy_ && queued_.empty() &&
        now_ns > last_send_ns_ && now_ns - last_send_ns_ > options_.keepalive_ms * 1000000ull) {
      keepalive_busy_ = true;
      Submit(&keepalive_);
    }
    return;
  }
  uint64_t limit = options_.request_timeout_ms * 1000000ull;
  for (uint32_t i = 0; i < window_; ++i) {
    if (slots_[i].req != nullptr && now_ns > slots_[i].sent_ns &&
        now_ns - slots_[i].sent_ns > limit) {
      Fail(Status::DeadlineExceeded("replica " + options_.host + ":" +
                                    std::to_string(options_.port) + " did not answer within " +
                                    std::to_string(options_.request_timeout_ms) + " ms"),
           true);
      return;
    }
  }
}

void ReplicaClient::Fail(const Status& why, bool notify) {
  if (state_ == ClientState::kIdle || state_ == ClientState::kClosed) return;
  if (notify) {
    TLOG_WARN(kTag, "volume '%s' replica %s:%u: %s", options_.volume_id.c_str(),
              options_.host.c_str(), options_.port, why.ToString().c_str());
  }
  state_ = ClientState::kClosed;
  if (fd_.valid()) {
    loop_->Remove(fd_.get());
    fd_.Reset();
  }
  StatusCode code = notify ? why.code() : StatusCode::kCancelled;
  if (code == StatusCode::kOk) code = StatusCode::kUnavailable;
  if (notify && code != StatusCode::kDeadlineExceeded) code = StatusCode::kUnavailable;
  // Collect first: a callback may Submit() again or even Connect().
  RequestQueue all;
  for (uint32_t i = 0; i < window_; ++i) {
    if (slots_[i].req != nullptr) {
      all.PushBack(slots_[i].req);
      slots_[i].req = nullptr;
    }
  }
  all.SpliceBack(&queued_);
  all.SpliceBack(&failed_);
  tx_.Clear();
  free_.Clear();
  window_ = 0;
  inflight_ = 0;
  rx_begin_ = rx_end_ = 0;
  while (ClientRequest* r = all.PopFront()) {
    Complete(r, r->status != StatusCode::kOk ? r->status : code);
  }
  if (notify && listener_ != nullptr) listener_->OnDisconnected(why);
}

void ReplicaClient::Close() { Fail(Status(StatusCode::kCancelled, "closed"), false); }

}  // namespace tandem::client
