#include "replica-engine/target/volume_target.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "common/logging.h"

namespace tandem::target {

using client::ClientRequest;
using client::ReplicaClient;
using protocol::Opcode;
using protocol::WireStatus;

namespace {
constexpr const char* kTag = "volume_target";
}  // namespace

const char* ReplicaStateName(ReplicaState s) {
  switch (s) {
    case ReplicaState::kConnecting:
      return "CONNECTING";
    case ReplicaState::kHealthy:
      return "HEALTHY";
    case ReplicaState::kStale:
      return "STALE";
    case ReplicaState::kFaulted:
      return "FAULTED";
  }
  return "UNKNOWN";
}

const char* TargetStateName(TargetState s) {
  switch (s) {
    case TargetState::kStarting:
      return "STARTING";
    case TargetState::kReady:
      return "READY";
    case TargetState::kDegraded:
      return "DEGRADED";
    case TargetState::kFailed:
      return "FAILED";
    case TargetState::kFenced:
      return "FENCED";
  }
  return "UNKNOWN";
}

// One frontend request in flight through the mirror. A fixed pool of these is
// allocated at construction (TargetOptions::max_inflight); a request that finds
// the pool empty waits in a FIFO, so nothing is allocated per I/O.
struct IoCtx {
  enum class Phase : uint8_t { kData, kAwaitBump, kMarkDirty };
  void* impl = nullptr;  // VolumeTarget::Impl
  BlockRequest* req = nullptr;
  Phase phase = Phase::kData;
  uint32_t remaining = 0;   // sub-requests outstanding
  uint32_t sent_mask = 0;   // replicas the data phase went to
  uint32_t ok_mask = 0;     // replicas that acknowledged the data phase
  uint32_t tried_mask = 0;  // reads: replicas already tried
  bool marked = false;      // MARK_DIRTY done on the survivors
  StatusCode first_error = StatusCode::kOk;
  ClientRequest sub[VolumeTarget::kMaxReplicas];
  IoCtx* next = nullptr;
};

class VolumeTarget::Impl final : private EventLoop::Idler {
 public:
  Impl(VolumeTarget* owner, EventLoop* loop, TargetOptions options)
      : owner_(owner), loop_(loop), options_(std::move(options)) {}
  ~Impl() {
    if (idler_added_) loop_->RemoveIdler(this);
    for (Replica& r : replicas_) {
      if (r.client) r.client->Close();
    }
  }

  Status Start();
  void Shutdown(void (*done)(void*), void* arg);
  void Submit(BlockRequest* req);
  TargetStatus GetStatus() const;

  TargetState state_ = TargetState::kStarting;
  uint64_t size_ = 0;
  uint32_t block_size_ = 4096;

 private:
  // One replica connection: the ReplicaClient and what the mirror knows of it.
  struct Replica final : ReplicaClient::Listener {
    Impl* impl = nullptr;
    int index = 0;
    ReplicaEndpoint endpoint;
    std::unique_ptr<ReplicaClient> client;
    ReplicaState state = ReplicaState::kConnecting;
    bool settled = false;  // connected or failed during start-up
    uint64_t generation = 0;
    std::string replica_id;
    uint64_t reads = 0, writes = 0, errors = 0;
    std::string last_error;
    void OnConnected(const protocol::ReplicaInfo& info) override {
      impl->OnReplicaConnected(this, info);
    }
    void OnDisconnected(const Status& why) override { impl->OnReplicaDisconnected(this, why); }
  };

  void BeforeWait() override;

  // Start-up.
  void OnReplicaConnected(Replica* r, const protocol::ReplicaInfo& info);
  void OnReplicaDisconnected(Replica* r, const Status& why);
  void MaybeFinishStart();

  // Faults, generation bumps, fencing.
  void Fault(Replica* r, const Status& why);
  void Fence(const std::string& why);
  void StartBump();
  static void OnBumpDone(ClientRequest* sub);
  void UpdateState();
  uint32_t HealthyMask() const;

  // The I/O path.
  Status Validate(const BlockRequest* req) const;
  void Dispatch(BlockRequest* req);
  void StartWriteLike(IoCtx* c);
  void StartRead(IoCtx* c);
  void StartMarkDirty(IoCtx* c);
  static void OnSubDone(ClientRequest* sub);
  void OnDataPhaseDone(IoCtx* c);
  void AwaitBump(IoCtx* c);
  void Finish(IoCtx* c, StatusCode code);
  // Completes `req` now, or at the next BeforeWait when inside Submit().
  void Complete(BlockRequest* req, StatusCode code);
  void FailLater(BlockRequest* req, StatusCode code);
  void DrainWaiting();
  StatusCode DownCode() const {
    return state_ == TargetState::kFenced ? StatusCode::kFailedPrecondition
                                          : StatusCode::kUnavailable;
  }
  static bool NeedsBump(BlockOp op) { return op != BlockOp::kRead; }

  VolumeTarget* owner_;
  EventLoop* loop_;
  TargetOptions options_;
  std::vector<Replica> replicas_;
  std::vector<IoCtx> ctx_pool_;
  IoCtx* free_ctx_ = nullptr;
  uint32_t inflight_ = 0;  // IoCtx in use
  bool idler_added_ = false;
  bool in_submit_ = false;

  // Requests waiting for an IoCtx, for start-up, or for a generation bump.
  BlockRequest* wait_head_ = nullptr;
  BlockRequest* wait_tail_ = nullptr;
  // Requests completed at the next BeforeWait (never inside Submit).
  BlockRequest* failed_head_ = nullptr;
  BlockRequest* failed_tail_ = nullptr;
  // Writes that reached only some replicas, waiting for the bump.
  IoCtx* bump_wait_head_ = nullptr;

  uint64_t generation_ = 0;
  bool need_bump_ = false;  // a replica left since the last bump
  bool bump_running_ = false;
  uint32_t bump_remaining_ = 0;
  uint64_t bump_generation_ = 0;
  ClientRequest bump_sub_[kMaxReplicas];
  uint32_t close_mask_ = 0;  // clients to Close() at BeforeWait

  bool shutting_down_ = false;
  bool shutdown_flush_sent_ = false;
  BlockRequest shutdown_flush_;
  bool shutdown_finished_ = false;
  void (*shutdown_done_)(void*) = nullptr;
  void* shutdown_arg_ = nullptr;

  TargetStatus counters_;
};

// ------------------------------------------------------------------ start-up

Status VolumeTarget::Impl::Start() {
  if (options_.replicas.empty()) return Status::InvalidArgument("replicas: none given");
  if (options_.replicas.size() > kMaxReplicas) {
    return Status::InvalidArgument("replicas: more than " + std::to_string(kMaxReplicas));
  }
  if (options_.volume_id.empty()) return Status::InvalidArgument("volume_id: empty");
  for (size_t i = 0; i < options_.replicas.size(); ++i) {
    const ReplicaEndpoint& e = options_.replicas[i];
    in_addr a;
    if (inet_pton(AF_INET, e.host.c_str(), &a) != 1) {
      return Status::InvalidArgument("replicas[" + std::to_string(i) + "].host: not IPv4: '" +
                                     e.host + "'");
    }
    if (e.port == 0) {
      return Status::InvalidArgument("replicas[" + std::to_string(i) + "].port: 0");
    }
  }
  size_ = options_.size;
  uint32_t pool = std::max<uint32_t>(1, options_.max_inflight);
  ctx_pool_.resize(pool);
  for (uint32_t i = pool; i-- > 0;) {
    IoCtx& c = ctx_pool_[i];
    c.impl = this;
    for (ClientRequest& s : c.sub) {
      s.ctx = &c;
      s.done = &Impl::OnSubDone;
    }
    c.next = free_ctx_;
    free_ctx_ = &c;
  }
  for (ClientRequest& s : bump_sub_) {
    s.ctx = this;
    s.done = &Impl::OnBumpDone;
  }
  loop_->AddIdler(this);
  idler_added_ = true;
  replicas_.resize(options_.replicas.size());
  for (size_t i = 0; i < replicas_.size(); ++i) {
    Replica& r = replicas_[i];
    r.impl = this;
    r.index = static_cast<int>(i);
    r.endpoint = options_.replicas[i];
    client::ClientOptions co;
    co.host = r.endpoint.host;
    co.port = r.endpoint.port;
    co.volume_id = options_.volume_id;
    co.token = options_.token;
    co.epoch = options_.epoch;
    co.max_inflight = pool;
    co.request_timeout_ms = options_.request_timeout_ms;
    co.connect_timeout_ms = options_.connect_timeout_ms;
    r.client = std::make_unique<ReplicaClient>(loop_, co, &r);
  }
  for (Replica& r : replicas_) {
    Status st = r.client->Connect();
    if (!st.ok()) {
      r.state = ReplicaState::kFaulted;
      r.settled = true;
      r.last_error = st.ToString();
    }
  }
  MaybeFinishStart();
  return Status::Ok();
}

void VolumeTarget::Impl::OnReplicaConnected(Replica* r, const protocol::ReplicaInfo& info) {
  r->replica_id = info.replica_id;
  r->generation = info.generation;
  if (state_ != TargetState::kStarting) {
    // Only start-up connects; a late connect (never expected) is not trusted.
    r->state = ReplicaState::kFaulted;
    close_mask_ |= 1u << r->index;
    return;
  }
  r->settled = true;
  r->state = ReplicaState::kConnecting;  // HEALTHY or STALE once all settled
  if (info.block_size == 0 || (size_ != 0 && info.size != size_)) {
    r->state = ReplicaState::kFaulted;
    r->last_error = "replica size " + std::to_string(info.size) + " differs from volume size " +
                    std::to_string(size_);
    close_mask_ |= 1u << r->index;
  } else if (size_ == 0) {
    size_ = info.size;
    block_size_ = info.block_size;
  } else {
    block_size_ = std::max(block_size_, info.block_size);
  }
  MaybeFinishStart();
}

void VolumeTarget::Impl::OnReplicaDisconnected(Replica* r, const Status& why) {
  if (why.code() == StatusCode::kFailedPrecondition &&
      why.message().find("STALE_EPOCH") != std::string::npos) {
    r->state = ReplicaState::kFaulted;
    r->last_error = why.ToString();
    r->settled = true;
    Fence("replica " + r->endpoint.host + ":" + std::to_string(r->endpoint.port) +
          " has accepted a newer epoch");
    return;
  }
  if (state_ == TargetState::kStarting) {
    r->settled = true;
    r->state = ReplicaState::kFaulted;
    r->last_error = why.ToString();
    MaybeFinishStart();
    return;
  }
  Fault(r, why);
}

void VolumeTarget::Impl::MaybeFinishStart() {
  if (state_ != TargetState::kStarting) return;
  for (const Replica& r : replicas_) {
    if (!r.settled) return;
  }
  uint64_t top = 0;
  bool any = false;
  for (const Replica& r : replicas_) {
    if (r.state == ReplicaState::kConnecting) {
      top = std::max(top, r.generation);
      any = true;
    }
  }
  generation_ = top;
  for (Replica& r : replicas_) {
    if (r.state != ReplicaState::kConnecting) continue;
    if (r.generation == top) {
      r.state = ReplicaState::kHealthy;
    } else {
      // Missed writes the others have: never read, rebuilt before it serves.
      r.state = ReplicaState::kStale;
      close_mask_ |= 1u << r.index;
      TLOG_WARN(kTag, "volume '%s': replica %s:%u is at generation %llu < %llu: STALE",
                options_.volume_id.c_str(), r.endpoint.host.c_str(), r.endpoint.port,
                static_cast<unsigned long long>(r.generation),
                static_cast<unsigned long long>(top));
    }
  }
  if (!any) {
    state_ = TargetState::kFailed;
  } else {
    state_ = TargetState::kDegraded;  // UpdateState() leaves kStarting alone
    UpdateState();
    // A replica that is not with us may have missed nothing yet, but every
    // write from now on skips it: the survivors move to a new generation
    // (and track dirty regions) before the first write is acknowledged.
    if (HealthyMask() != (1u << replicas_.size()) - 1) need_bump_ = true;
  }
  TLOG_INFO(kTag, "volume '%s' epoch %llu: %s, generation %llu, size %llu",
            options_.volume_id.c_str(), static_cast<unsigned long long>(options_.epoch),
            TargetStateName(state_), static_cast<unsigned long long>(generation_),
            static_cast<unsigned long long>(size_));
  loop_->Wake();
}

// --------------------------------------------------- faults, bumps, fencing

uint32_t VolumeTarget::Impl::HealthyMask() const {
  uint32_t m = 0;
  for (const Replica& r : replicas_) {
    if (r.state == ReplicaState::kHealthy) m |= 1u << r.index;
  }
  return m;
}

void VolumeTarget::Impl::UpdateState() {
  if (state_ == TargetState::kFenced || state_ == TargetState::kStarting) return;
  uint32_t healthy = HealthyMask();
  if (healthy == 0) {
    state_ = TargetState::kFailed;
  } else if (healthy == (1u << replicas_.size()) - 1) {
    state_ = TargetState::kReady;
  } else {
    state_ = TargetState::kDegraded;
  }
}

void VolumeTarget::Impl::Fault(Replica* r, const Status& why) {
  ++r->errors;
  if (r->state != ReplicaState::kHealthy) return;
  r->state = ReplicaState::kFaulted;
  r->last_error = why.ToString();
  close_mask_ |= 1u << r->index;
  need_bump_ = true;
  TLOG_WARN(kTag, "volume '%s': replica %s:%u FAULTED: %s", options_.volume_id.c_str(),
            r->endpoint.host.c_str(), r->endpoint.port, why.ToString().c_str());
  UpdateState();
  loop_->Wake();  // BeforeWait closes the client and starts the bump
}

void VolumeTarget::Impl::Fence(const std::string& why) {
  if (state_ == TargetState::kFenced) return;
  TLOG_WARN(kTag, "volume '%s' epoch %llu FENCED: %s", options_.volume_id.c_str(),
            static_cast<unsigned long long>(options_.epoch), why.c_str());
  state_ = TargetState::kFenced;
  for (Replica& r : replicas_) {
    if (r.state == ReplicaState::kHealthy) r.state = ReplicaState::kFaulted;
    close_mask_ |= 1u << r.index;
  }
  loop_->Wake();
}

void VolumeTarget::Impl::StartBump() {
  uint32_t healthy = HealthyMask();
  need_bump_ = false;
  if (healthy == 0) return;
  bump_running_ = true;
  bump_generation_ = generation_ + 1;
  bump_remaining_ = 0;
  for (Replica& r : replicas_) {
    if (!(healthy & (1u << r.index))) continue;
    ClientRequest& s = bump_sub_[r.index];
    s.op = Opcode::kSetGeneration;
    s.flags = protocol::kFlagTrackDirty;
    s.offset = bump_generation_;
    s.length = 0;
    s.buf = nullptr;
    ++bump_remaining_;
  }
  TLOG_INFO(kTag, "volume '%s': bumping generation %llu -> %llu on %u replica(s)",
            options_.volume_id.c_str(), static_cast<unsigned long long>(generation_),
            static_cast<unsigned long long>(bump_generation_), bump_remaining_);
  // Submit after counting: a submit may complete (fail) re-entrantly later in
  // this loop turn, never inside Submit, but keep the count exact regardless.
  for (Replica& r : replicas_) {
    if (healthy & (1u << r.index)) r.client->Submit(&bump_sub_[r.index]);
  }
}

void VolumeTarget::Impl::OnBumpDone(ClientRequest* sub) {
  Impl* self = static_cast<Impl*>(sub->ctx);
  Replica& r = self->replicas_[sub - self->bump_sub_];
  if (sub->status == StatusCode::kOk) {
    r.generation = self->bump_generation_;
  } else if (sub->wire_status == WireStatus::kStaleEpoch) {
    self->Fence("SET_GENERATION refused: stale epoch");
  } else {
    self->Fault(&r, Status(sub->status, "SET_GENERATION failed"));
  }
  if (--self->bump_remaining_ != 0) return;
  self->bump_running_ = false;
  self->generation_ = self->bump_generation_;
  // Writes that skipped a replica may complete once the survivors are at the
  // new generation, and (if not yet done) after their range is marked dirty.
  IoCtx* list = self->bump_wait_head_;
  self->bump_wait_head_ = nullptr;
  while (list != nullptr) {
    IoCtx* c = list;
    list = c->next;
    c->next = nullptr;
    if (self->need_bump_) {  // another replica left meanwhile: wait for the next bump
      c->next = self->bump_wait_head_;
      self->bump_wait_head_ = c;
    } else if (c->marked || c->req->op == BlockOp::kFlush) {
      self->Finish(c, StatusCode::kOk);
    } else {
      self->StartMarkDirty(c);
    }
  }
  self->loop_->Wake();
}

void VolumeTarget::Impl::BeforeWait() {
  // Close clients outside of their own callbacks (Close() fails their
  // requests synchronously).
  while (close_mask_ != 0) {
    int i = __builtin_ctz(close_mask_);
    close_mask_ &= close_mask_ - 1;
    replicas_[i].client->Close();
  }
  if (state_ == TargetState::kFenced || state_ == TargetState::kFailed) {
    // Everything waiting fails; writes waiting for a bump that cannot happen too.
    while (bump_wait_head_ != nullptr) {
      IoCtx* c = bump_wait_head_;
      bump_wait_head_ = c->next;
      Finish(c, DownCode());
    }
  }
  if (need_bump_ && !bump_running_ && state_ != TargetState::kStarting &&
      state_ != TargetState::kFenced) {
    StartBump();
  }
  while (failed_head_ != nullptr) {
    BlockRequest* req = failed_head_;
    failed_head_ = req->next_;
    if (failed_head_ == nullptr) failed_tail_ = nullptr;
    ++counters_.errors;
    req->done(req);
  }
  DrainWaiting();
  if (shutting_down_ && inflight_ == 0 && wait_head_ == nullptr) {
    if (!shutdown_flush_sent_ &&
        (state_ == TargetState::kReady || state_ == TargetState::kDegraded)) {
      shutdown_flush_sent_ = true;
      shutdown_flush_ = BlockRequest{};
      shutdown_flush_.op = BlockOp::kFlush;
      shutdown_flush_.ctx = this;
      shutdown_flush_.done = [](BlockRequest* req) {
        Impl* self = static_cast<Impl*>(req->ctx);
        if (req->status != StatusCode::kOk) {
          TLOG_WARN(kTag, "volume '%s': final flush failed: %s", self->options_.volume_id.c_str(),
                    StatusCodeName(req->status));
        }
      };
      Dispatch(&shutdown_flush_);
      return;
    }
    if (!shutdown_finished_) {
      for (Replica& r : replicas_) r.client->Close();
      auto done = shutdown_done_;
      if (done == nullptr) done = [](void*) {};
      void* arg = shutdown_arg_;
      shutdown_done_ = nullptr;
      shutdown_finished_ = true;
      // Posted: `done` may destroy the target, which must not happen while
      // the loop is walking its idlers.
      loop_->Post([done, arg] { done(arg); });
      return;
    }
  }
}

// ------------------------------------------------------------ the I/O path

Status VolumeTarget::Impl::Validate(const BlockRequest* req) const {
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

void VolumeTarget::Impl::FailLater(BlockRequest* req, StatusCode code) {
  req->status = code;
  req->next_ = nullptr;
  if (failed_tail_ != nullptr) {
    failed_tail_->next_ = req;
  } else {
    failed_head_ = req;
  }
  failed_tail_ = req;
  loop_->Wake();
}

void VolumeTarget::Impl::Submit(BlockRequest* req) {
  req->status = StatusCode::kOk;
  req->next_ = nullptr;
  if (shutting_down_ && req != &shutdown_flush_) {
    FailLater(req, StatusCode::kUnavailable);
    return;
  }
  if (state_ == TargetState::kStarting || wait_head_ != nullptr || free_ctx_ == nullptr ||
      (NeedsBump(req->op) && (need_bump_ || bump_running_))) {
    // Keep FIFO order with what already waits.
    if (wait_tail_ != nullptr) {
      wait_tail_->next_ = req;
    } else {
      wait_head_ = req;
    }
    wait_tail_ = req;
    loop_->Wake();
    return;
  }
  in_submit_ = true;
  Dispatch(req);
  in_submit_ = false;
}

void VolumeTarget::Impl::DrainWaiting() {
  while (wait_head_ != nullptr) {
    if (state_ == TargetState::kStarting) return;
    BlockRequest* req = wait_head_;
    bool down = state_ == TargetState::kFailed || state_ == TargetState::kFenced;
    if (!down && !shutting_down_ &&
        (free_ctx_ == nullptr || (NeedsBump(req->op) && (need_bump_ || bump_running_)))) {
      return;
    }
    wait_head_ = req->next_;
    if (wait_head_ == nullptr) wait_tail_ = nullptr;
    req->next_ = nullptr;
    if (shutting_down_) {
      Complete(req, StatusCode::kUnavailable);
      continue;
    }
    Dispatch(req);
  }
}

void VolumeTarget::Impl::Dispatch(BlockRequest* req) {
  if (state_ == TargetState::kFailed || state_ == TargetState::kFenced) {
    Complete(req, DownCode());
    return;
  }
  Status st = Validate(req);
  if (!st.ok()) {
    Complete(req, st.code());
    return;
  }
  IoCtx* c = free_ctx_;
  free_ctx_ = c->next;
  c->next = nullptr;
  ++inflight_;
  c->req = req;
  c->phase = IoCtx::Phase::kData;
  c->remaining = 0;
  c->sent_mask = c->ok_mask = c->tried_mask = 0;
  c->marked = false;
  c->first_error = StatusCode::kOk;
  if (req->op == BlockOp::kRead) {
    StartRead(c);
  } else {
    StartWriteLike(c);
  }
}

void VolumeTarget::Impl::StartRead(IoCtx* c) {
  // The local replica first, then the one with the fewest requests in flight.
  Replica* best = nullptr;
  for (Replica& r : replicas_) {
    if (r.state != ReplicaState::kHealthy || (c->tried_mask & (1u << r.index))) continue;
    if (best == nullptr || (r.endpoint.local && !best->endpoint.local) ||
        (r.endpoint.local == best->endpoint.local &&
         r.client->inflight() < best->client->inflight())) {
      best = &r;
    }
  }
  if (best == nullptr) {
    Finish(c, c->first_error != StatusCode::kOk ? StatusCode::kUnavailable : DownCode());
    return;
  }
  c->tried_mask |= 1u << best->index;
  c->sent_mask = 1u << best->index;
  c->remaining = 1;
  ClientRequest& s = c->sub[best->index];
  s.op = Opcode::kRead;
  s.flags = 0;
  s.offset = c->req->offset;
  s.length = c->req->length;
  s.buf = c->req->buf;
  ++best->reads;
  best->client->Submit(&s);
}

void VolumeTarget::Impl::StartWriteLike(IoCtx* c) {
  uint32_t healthy = HealthyMask();
  if (healthy == 0) {
    Finish(c, DownCode());
    return;
  }
  Opcode op = Opcode::kWrite;
  switch (c->req->op) {
    case BlockOp::kWrite:
      op = Opcode::kWrite;
      break;
    case BlockOp::kFlush:
      op = Opcode::kFlush;
      break;
    case BlockOp::kTrim:
      op = Opcode::kTrim;
      break;
    case BlockOp::kWriteZeroes:
      op = Opcode::kWriteZeroes;
      break;
    case BlockOp::kRead:
      break;
  }
  c->sent_mask = healthy;
  c->remaining = static_cast<uint32_t>(__builtin_popcount(healthy));
  for (Replica& r : replicas_) {
    if (!(healthy & (1u << r.index))) continue;
    ClientRequest& s = c->sub[r.index];
    s.op = op;
    s.flags = (c->req->flags & kBlockFua) ? protocol::kFlagFua : 0;
    s.offset = op == Opcode::kFlush ? 0 : c->req->offset;
    s.length = op == Opcode::kFlush ? 0 : c->req->length;
    s.buf = c->req->buf;
    ++r.writes;
  }
  for (Replica& r : replicas_) {
    if (healthy & (1u << r.index)) r.client->Submit(&c->sub[r.index]);
  }
}

void VolumeTarget::Impl::StartMarkDirty(IoCtx* c) {
  uint32_t healthy = HealthyMask() & c->ok_mask;
  if (healthy == 0) {
    Finish(c, DownCode());
    return;
  }
  c->phase = IoCtx::Phase::kMarkDirty;
  c->marked = true;
  c->sent_mask = healthy;
  c->ok_mask = 0;
  c->remaining = static_cast<uint32_t>(__builtin_popcount(healthy));
  for (Replica& r : replicas_) {
    if (!(healthy & (1u << r.index))) continue;
    ClientRequest& s = c->sub[r.index];
    s.op = Opcode::kMarkDirty;
    s.flags = 0;
    s.offset = c->req->offset;
    s.length = c->req->length;
    s.buf = nullptr;
  }
  for (Replica& r : replicas_) {
    if (healthy & (1u << r.index)) r.client->Submit(&c->sub[r.index]);
  }
}

void VolumeTarget::Impl::OnSubDone(ClientRequest* sub) {
  IoCtx* c = static_cast<IoCtx*>(sub->ctx);
  Impl* self = static_cast<Impl*>(c->impl);
  int index = static_cast<int>(sub - c->sub);
  Replica& r = self->replicas_[index];
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

void VolumeTarget::Impl::OnDataPhaseDone(IoCtx* c) {
  if (state_ == TargetState::kFenced) {
    Finish(c, StatusCode::kFailedPrecondition);
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
      Finish(c, StatusCode::kOk);
    }
    return;
  }
  if (c->ok_mask == c->sent_mask) {
    Finish(c, StatusCode::kOk);  // on every replica it was sent to
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

void VolumeTarget::Impl::AwaitBump(IoCtx* c) {
  c->phase = IoCtx::Phase::kAwaitBump;
  c->next = bump_wait_head_;
  bump_wait_head_ = c;
  loop_->Wake();
}

void VolumeTarget::Impl::Finish(IoCtx* c, StatusCode code) {
  BlockRequest* req = c->req;
  c->req = nullptr;
  c->next = free_ctx_;
  free_ctx_ = c;
  --inflight_;
  Complete(req, code);
  if (wait_head_ != nullptr) loop_->Wake();
}

void VolumeTarget::Impl::Complete(BlockRequest* req, StatusCode code) {
  if (in_submit_) {
    // The BlockDevice contract: never complete inside Submit().
    FailLater(req, code);
    return;
  }
  req->status = code;
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

// --------------------------------------------------------------- lifecycle

void VolumeTarget::Impl::Shutdown(void (*done)(void*), void* arg) {
  if (shutting_down_) {
    // Idempotent: the first caller's done runs; a later one runs right away
    // if the first already finished.
    if (shutdown_done_ == nullptr && shutdown_finished_ && done != nullptr) {
      loop_->Post([done, arg] { done(arg); });
    }
    return;
  }
  shutting_down_ = true;
  shutdown_done_ = done;
  shutdown_arg_ = arg;
  if (state_ == TargetState::kStarting) {
    state_ = TargetState::kFailed;  // stop waiting for replicas
  }
  loop_->Wake();
}

TargetStatus VolumeTarget::Impl::GetStatus() const {
  TargetStatus s = counters_;
  s.volume_id = options_.volume_id;
  s.state = state_;
  s.size = size_;
  s.epoch = options_.epoch;
  s.generation = generation_;
  for (const Replica& r : replicas_) {
    ReplicaStatus rs;
    rs.address = r.endpoint.host + ":" + std::to_string(r.endpoint.port);
    rs.replica_id = r.replica_id;
    rs.state = r.state;
    rs.generation = r.generation;
    rs.inflight = r.client ? r.client->inflight() : 0;
    rs.reads = r.reads;
    rs.writes = r.writes;
    rs.errors = r.errors;
    rs.last_error = r.last_error;
    s.replicas.push_back(std::move(rs));
  }
  return s;
}

// ------------------------------------------------------------ VolumeTarget

VolumeTarget::VolumeTarget(EventLoop* loop, TargetOptions options)
    : loop_(loop), impl_(std::make_unique<Impl>(this, loop, std::move(options))) {}

VolumeTarget::~VolumeTarget() = default;

Status VolumeTarget::Start() { return impl_->Start(); }
void VolumeTarget::Shutdown(void (*done)(void* arg), void* arg) { impl_->Shutdown(done, arg); }
TargetState VolumeTarget::state() const { return impl_->state_; }
TargetStatus VolumeTarget::GetStatus() const { return impl_->GetStatus(); }
uint64_t VolumeTarget::size() const { return impl_->size_; }
uint32_t VolumeTarget::block_size() const { return impl_->block_size_; }
uint32_t VolumeTarget::max_io_size() const { return protocol::kMaxIoSize; }
void VolumeTarget::Submit(BlockRequest* req) { impl_->Submit(req); }

}  // namespace tandem::target
