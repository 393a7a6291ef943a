#include "replica-engine/local/local_replica_channel.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/logging.h"
#include "replica-engine/protocol/hello_proof.h"
#include "replica-engine/server/replica_server.h"

namespace tandem::local {

using client::ClientRequest;
using client::ClientState;
using protocol::Opcode;
using protocol::StatusCodeOf;
using protocol::WireStatus;

namespace {
constexpr const char* kTag = "local_channel";
constexpr uintptr_t kDirectAlign = 4096;

bool Aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kDirectAlign == 0; }
}  // namespace

LocalReplicaChannel::LocalReplicaChannel(server::ReplicaServer* server,
                                         client::ClientOptions options, Listener* listener)
    : server_(server),
      loop_(server->loop()),
      options_(std::move(options)),
      listener_(listener),
      slots_(options_.max_inflight == 0 ? 1 : options_.max_inflight) {
  for (Slot& s : slots_) {
    s.channel = this;
    s.port.ctx = &s;
    s.port.done = &LocalReplicaChannel::OnPortDone;
    free_.PushFront(&s);
  }
  loop_->AddIdler(this);
}

LocalReplicaChannel::~LocalReplicaChannel() {
  Close();
  loop_->RemoveIdler(this);
}

Status LocalReplicaChannel::Connect() {
  if (state_ != ClientState::kIdle && state_ != ClientState::kClosed) {
    return Status::FailedPrecondition("local replica channel already connecting or connected");
  }
  state_ = ClientState::kConnecting;
  open_pending_ = true;
  if (PastBeforeWait()) loop_->Wake();
  return Status::Ok();
}

void LocalReplicaChannel::BeforeWait() {
  seen_wait_count_ = loop_->wait_count();
  if (open_pending_) Open();
  // Requests held behind a SET_GENERATION/SET_REBUILD_CURSOR that waits for
  // the replica's metadata persist.
  StartQueued();
  // A callback may submit again (deferred again: this loop runs it too).
  while (!done_.empty()) {
    RequestQueue batch;
    batch.SpliceBack(&done_);
    while (ClientRequest* r = batch.PopFront()) r->done(r);
  }
  // The replica was detached from this engine (DetachVolume closed the port).
  if (state_ == ClientState::kConnected && port_ != nullptr && port_->closed()) {
    Fail(Status::Unavailable("local replica of volume '" + options_.volume_id +
                             "' detached from this engine"),
         true);
    return;
  }
  // Superseded: as the server hangs up a superseded session once its
  // STALE_EPOCH replies are out.
  if (stale_seen_ && inflight_ == 0 && state_ == ClientState::kConnected) {
    Fail(Status::Unavailable("local replica of volume '" + options_.volume_id +
                             "' superseded by a newer epoch"),
         true);
  }
}

// size: the HELLO of the data protocol, in process: the proof of the
// secret, the port's answer (retry, refusal) and the ReplicaInfo.
void LocalReplicaChannel::Open() {
  open_pending_ = false;
  if (state_ != ClientState::kConnecting) return;
  if (port_ == nullptr) {
    port_ = std::make_unique<server::ReplicaPort>(server_, "local:" + options_.volume_id,
                                                  static_cast<uint32_t>(slots_.size()));
  }
  protocol::HelloRequest hello{options_.epoch, options_.volume_id, options_.token,
                               options_.target_id};
  if (!options_.secret.empty()) {
    if (port_->nonce().empty()) {
      Status st = port_->MakeNonce();
      if (!st.ok()) {
        Fail(st.WithContext("local HELLO nonce"), true);
        return;
      }
    }
    hello.proof = protocol::ComputeHelloProof(options_.secret, port_->nonce(), hello);
  }
  bool retry = false;
  const WireStatus ws = port_->Open(hello, &retry);
  if (retry) {
    // The replica's metadata is busy or a superseded target's I/O is still
    // in flight: both end with a backend completion, which runs the loop.
    open_pending_ = true;
    return;
  }
  if (ws != WireStatus::kOk) {
    Fail(Status(StatusCodeOf(ws), "replica refused HELLO for volume '" + options_.volume_id +
                                      "': " + protocol::WireStatusName(ws)),
         true);
    return;
  }
  server::PortRequest get_info;
  get_info.op = Opcode::kGetInfo;
  Status st = port_->Control(&get_info) == WireStatus::kOk
                  ? protocol::DecodeReplicaInfo(get_info.control, &info_)
                  : Status::Internal("GET_INFO refused");
  if (!st.ok()) {
    Fail(st.WithContext("local HELLO"), true);
    return;
  }
  state_ = ClientState::kConnected;
  TLOG_INFO(kTag, "volume '%s': local replica '%s' opened in-process at epoch %llu",
            options_.volume_id.c_str(), info_.replica_id.c_str(),
            static_cast<unsigned long long>(options_.epoch));
  if (listener_ != nullptr) listener_->OnConnected(info_);
  StartQueued();
}

void LocalReplicaChannel::Submit(ClientRequest* req) {
  req->status = StatusCode::kOk;
  req->wire_status = WireStatus::kOk;
  req->reply_length = 0;
  if (state_ != ClientState::kConnected) {
    Defer(req, StatusCode::kUnavailable, WireStatus::kOk);
    return;
  }
  ++inflight_;
  // Behind anything already waiting (a slot, or the metadata a control
  // request waits for), in order, as a session parses its frames.
  queued_.PushBack(req);
  StartQueued();
}

bool LocalReplicaChannel::MustWaitForMetadata(const ClientRequest* req) const {
  // As ReplicaSession: these write the metadata synchronously, which the
  // replica refuses (Unavailable -> IO_ERROR, and the target would fault its
  // local replica) while a persist is in flight. They wait for it instead.
  return (req->op == Opcode::kSetGeneration || req->op == Opcode::kSetRebuildCursor) &&
         port_ != nullptr && port_->metadata_busy();
}

void LocalReplicaChannel::StartQueued() {
  while (state_ == ClientState::kConnected && !queued_.empty() && !free_.empty()) {
    // Retried from BeforeWait: the persist ends with a backend completion,
    // which runs the loop. What came after it waits too (kept in order).
    if (MustWaitForMetadata(queued_.front())) return;
    Start(free_.PopFront(), queued_.PopFront());
  }
}

void LocalReplicaChannel::Prepare(Slot* s, ClientRequest* req) {
  server::PortRequest& p = s->port;
  p.op = req->op;
  p.flags = req->flags;
  p.offset = req->offset;
  p.length = req->length;
  p.buf = nullptr;
  p.payload_length = 0;
  switch (req->op) {
    case Opcode::kRead:
    case Opcode::kWrite:
      if (req->op == Opcode::kWrite) p.payload_length = req->length;
      if (Aligned(req->buf) || req->length == 0) {
        p.buf = req->buf;  // O_DIRECT straight from/into the caller's buffer
        break;
      }
      // Misaligned (no caller does this today): an aligned copy for this
      // request, freed when it completes.
      s->bounce = std::aligned_alloc(
          kDirectAlign, (req->length + kDirectAlign - 1) / kDirectAlign * kDirectAlign);
      if (s->bounce != nullptr && req->op == Opcode::kWrite) {
        std::memcpy(s->bounce, req->buf, req->length);
      }
      p.buf = s->bounce;
      break;
    case Opcode::kSetGeneration:
      if (req->buf != nullptr && req->length != 0) {
        p.buf = req->buf;
        p.payload_length = req->length;
      }
      break;
    case Opcode::kSetRebuildCursor:
      p.buf = req->buf;
      p.payload_length = req->length;
      break;
    default:
      break;
  }
}

void LocalReplicaChannel::Start(Slot* s, ClientRequest* req) {
  s->req = req;
  Prepare(s, req);
  if ((req->op == Opcode::kRead || req->op == Opcode::kWrite) && s->port.buf == nullptr &&
      req->length != 0) {
    FreeSlot(s);
    --inflight_;
    Defer(req, StatusCode::kResourceExhausted, WireStatus::kOk);  // no bounce buffer
    return;
  }
  if (!server::ReplicaPort::IsIo(req->op)) {
    const WireStatus ws = port_->Control(&s->port);
    const StatusCode code = ws == WireStatus::kOk ? CopyControlReply(s) : StatusCodeOf(ws);
    if (ws == WireStatus::kStaleEpoch) stale_seen_ = true;
    FreeSlot(s);
    --inflight_;
    Defer(req, code, ws);
    return;
  }
  const WireStatus ws = port_->Start(&s->port);
  if (ws != WireStatus::kOk) {
    if (ws == WireStatus::kStaleEpoch) stale_seen_ = true;
    FreeSlot(s);
    --inflight_;
    Defer(req, StatusCodeOf(ws), ws);
    return;
  }
  server_->WakeForPortWork();
}

StatusCode LocalReplicaChannel::CopyControlReply(Slot* s) {
  ClientRequest* req = s->req;
  const std::string& reply = s->port.control;
  const uint32_t n = static_cast<uint32_t>(reply.size());
  switch (req->op) {
    case Opcode::kGetInfo:
      // Fits: a ReplicaInfo is at most kMaxControlPayload, the buffer's capacity.
      if (req->buf == nullptr) return StatusCode::kOk;
      std::memcpy(req->buf, reply.data(), n);
      req->reply_length = n;
      return StatusCode::kOk;
    case Opcode::kGetDirtyMap:
    case Opcode::kGetAllocation: {
      const uint32_t capacity =
          req->op == Opcode::kGetDirtyMap ? req->length : protocol::kMaxAllocationReply;
      req->reply_length = n;
      if (n <= capacity && req->buf != nullptr) {
        std::memcpy(req->buf, reply.data(), n);
      } else if (n != 0) {
        return StatusCode::kResourceExhausted;  // the caller's buffer is too small
      }
      return StatusCode::kOk;
    }
    default:
      return StatusCode::kOk;
  }
}

void LocalReplicaChannel::OnPortDone(server::PortRequest* preq) {
  Slot* s = static_cast<Slot*>(preq->ctx);
  LocalReplicaChannel* self = s->channel;
  if (self == nullptr) return;  // leaked by a Fail() that could not drain
  ClientRequest* req = s->req;
  if (self->draining_) {
    // Close()/a failure waits for the port's I/O; the request is failed
    // there, once none of its buffers is still in use.
    self->drained_.PushBack(req);
    self->FreeSlot(s);
    return;
  }
  const WireStatus ws = preq->status;
  if (ws == WireStatus::kStaleEpoch) {
    self->stale_seen_ = true;
    if (self->PastBeforeWait()) self->loop_->Wake();  // BeforeWait disconnects
  }
  if (ws == WireStatus::kOk && req->op == Opcode::kRead) {
    if (s->bounce != nullptr) std::memcpy(req->buf, s->bounce, req->length);
    req->reply_length = req->length;
  }
  self->FreeSlot(s);
  --self->inflight_;
  if (!self->server_->in_backend_completion()) {
    // Failed by the port itself inside the server's loop over its ports,
    // volumes or dirty waiters (RaiseEpoch, FenceVolume, RunDirtyWaiters): a
    // callback that closes this channel would destroy the port under it.
    // Answered from BeforeWait instead.
    self->Defer(req, StatusCodeOf(ws), ws);
    return;
  }
  req->wire_status = ws;
  req->status = StatusCodeOf(ws);
  self->in_done_ = true;
  req->done(req);
  self->in_done_ = false;
  self->StartQueued();
}

void LocalReplicaChannel::Defer(ClientRequest* req, StatusCode code, WireStatus ws) {
  req->status = code;
  req->wire_status = ws;
  done_.PushBack(req);
  if (PastBeforeWait()) loop_->Wake();
}

void LocalReplicaChannel::FreeSlot(Slot* s) {
  if (s->bounce != nullptr) {
    std::free(s->bounce);
    s->bounce = nullptr;
  }
  s->req = nullptr;
  s->port.control.clear();
  // A GET_DIRTY_MAP reply may have grown the string to a megabyte; do not
  // keep that per slot (as ReplicaSession::FreeSlot).
  if (s->port.control.capacity() > protocol::kMaxControlPayload) {
    std::string().swap(s->port.control);
  }
  free_.PushFront(s);
}

// size: the failure path keeps the contract's order (drain the port, then
// every outstanding request, then the listener) in one place.
void LocalReplicaChannel::Fail(const Status& why, bool notify) {
  if (notify) {
    TLOG_WARN(kTag, "volume '%s' local replica: %s", options_.volume_id.c_str(),
              why.ToString().c_str());
  }
  state_ = ClientState::kClosed;
  open_pending_ = false;
  stale_seen_ = false;
  if (port_ != nullptr) {
    // The requests' buffers are the caller's: none may still be read or
    // written by the disk when their `done` runs.
    // Closed first: the parked writes DrainPort drops are then answered as
    // a closed port's (not logged and counted as failed WRITEs).
    port_->Close();
    if (port_->inflight() != 0) {
      draining_ = true;
      // Inside a completion only the parked writes can be dropped (timeout
      // 0): the disk cannot be reaped from here.
      const bool drained = server_->DrainPort(port_.get(), in_done_ ? 0 : drain_timeout_ms_);
      draining_ = false;
      if (!drained) AbortWithIoInFlight();
    }
    port_.reset();
  }
  StatusCode code = notify ? why.code() : StatusCode::kCancelled;
  if (code == StatusCode::kOk || (notify && code != StatusCode::kDeadlineExceeded)) {
    code = StatusCode::kUnavailable;
  }
  // Collect first: a callback may Submit() again or even Connect().
  RequestQueue all;
  all.SpliceBack(&drained_);
  all.SpliceBack(&queued_);
  RequestQueue answered;
  answered.SpliceBack(&done_);
  free_.Clear();
  for (Slot& s : slots_) {
    s.channel = this;
    s.port.ctx = &s;
    s.port.done = &LocalReplicaChannel::OnPortDone;
    s.req = nullptr;
    free_.PushFront(&s);
  }
  inflight_ = 0;
  while (ClientRequest* r = all.PopFront()) {
    r->status = code;
    r->wire_status = WireStatus::kOk;
    r->done(r);
  }
  while (ClientRequest* r = answered.PopFront()) r->done(r);
  if (notify && listener_ != nullptr) listener_->OnDisconnected(why);
}

void LocalReplicaChannel::AbortWithIoInFlight() {
  // The contract completes every request inside Close() (the target then
  // reuses or frees its buffers), but the disk still holds some of them: an
  // O_DIRECT READ landing later would scribble into a reused buffer (silent
  // corruption). A crash loses nothing acknowledged (RPO=0): the target
  // answered none of these requests; the replicas decide on restart.
  TLOG_ERROR(kTag,
             "volume '%s': %u local replica I/O(s) still in flight at close (%s); aborting "
             "rather than hand their buffers back while the disk uses them",
             options_.volume_id.c_str(), port_->inflight(),
             in_done_ ? "closed inside a completion" : "the disk did not finish in time");
  std::abort();
}

void LocalReplicaChannel::Close() {
  if (state_ == ClientState::kClosed && port_ == nullptr && done_.empty() && queued_.empty()) {
    return;
  }
  Fail(Status(StatusCode::kCancelled, "closed"), false);
}

std::unique_ptr<client::ReplicaChannel> MaybeLocalChannel(
    server::ReplicaServer* server, const std::string& own_host, uint16_t own_port, EventLoop* loop,
    const client::ClientOptions& options, client::ReplicaChannel::Listener* listener) {
  if (server == nullptr || loop != server->loop()) return nullptr;
  if (options.port != own_port || options.host != own_host) return nullptr;
  if (!server->manager()->Get(options.volume_id).ok()) return nullptr;
  return std::make_unique<LocalReplicaChannel>(server, options, listener);
}

}  // namespace tandem::local
