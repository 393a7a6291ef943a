// VolumeTarget's public API, its lifecycle (start, the loop turn, shutdown),
// status and live replica changes. The rest of the target is described in
// volume_target_impl.h.

#include "replica-engine/volume/volume_target.h"

#include <arpa/inet.h>

#include <algorithm>

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/client/replica_client.h"
#include "replica-engine/volume/volume_target_impl.h"

namespace tandem::target {

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
    case ReplicaState::kRebuilding:
      return "REBUILDING";
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

// ------------------------------------------------------------------ lifecycle

VolumeTargetImpl::VolumeTargetImpl(EventLoop* loop, TargetOptions options)
    : loop_(loop),
      options_(std::move(options)),
      replicas_(this),
      rebuild_(this, options_.rebuild_rate_bytes_per_sec) {}

Status VolumeTargetImpl::Start() {
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
  replicas_.Configure(options_.replicas);
  if (options_.target_id != 0) replicas_.set_target_id(options_.target_id);
  uint32_t pool = std::max<uint32_t>(1, options_.max_inflight);
  ctx_pool_.resize(pool);
  for (uint32_t i = pool; i-- > 0;) {
    IoCtx& c = ctx_pool_[i];
    c.target = this;
    for (ClientRequest& s : c.sub) {
      s.ctx = &c;
      s.done = &VolumeTargetImpl::OnSubDone;
    }
    free_ctx_.PushFront(&c);
  }
  for (ClientRequest& s : bump_sub_) {
    s.ctx = this;
    s.done = &VolumeTargetImpl::OnBumpDone;
  }
  loop_->AddIdler(this);
  loop_->AddTicker(this, 10);  // reconnects, rebuild rate limit
  idler_added_ = true;
  for (ReplicaSlot& r : replicas_) {
    if (!r.removed) r.channel = NewChannel(&r);
  }
  for (ReplicaSlot& r : replicas_) {
    if (r.removed) {
      r.settled = true;
      continue;
    }
    Status st = r.channel->Connect();
    if (!st.ok()) {
      r.state = ReplicaState::kFaulted;
      r.settled = true;
      r.last_error = st.ToString();
    }
  }
  MaybeFinishStart();
  return Status::Ok();
}

std::unique_ptr<client::ReplicaChannel> VolumeTargetImpl::NewChannel(ReplicaSlot* r) {
  client::ClientOptions co;
  co.host = r->endpoint.host;
  co.port = r->endpoint.port;
  co.volume_id = options_.volume_id;
  co.token = options_.token;
  co.secret = options_.secret;
  co.epoch = options_.epoch;
  co.target_id = replicas_.target_id();
  co.max_inflight = static_cast<uint32_t>(ctx_pool_.size());
  co.request_timeout_ms = options_.request_timeout_ms;
  co.connect_timeout_ms = options_.connect_timeout_ms;
  if (options_.channel_factory) {
    std::unique_ptr<client::ReplicaChannel> ch = options_.channel_factory(loop_, co, r);
    if (ch) return ch;
  }
  return std::make_unique<client::ReplicaClient>(loop_, co, r);
}

VolumeTargetImpl::~VolumeTargetImpl() {
  *self_ref_ = nullptr;  // an authority's late answer finds no target
  if (idler_added_) {
    loop_->RemoveIdler(this);
    loop_->RemoveTicker(this);
  }
  rebuild_.Abandon();
  destroying_ = true;  // requests cancelled by Close() below are not faults
  for (ReplicaSlot& r : replicas_) {
    if (r.channel) r.channel->Close();
  }
}

void VolumeTargetImpl::Shutdown(void (*done)(void*), void* arg) {
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
  rebuild_.Abort("target shutting down");
  resync_.active = false;
  if (state_ == TargetState::kStarting) {
    state_ = TargetState::kFailed;  // stop waiting for replicas
  }
  loop_->Wake();
}

void VolumeTargetImpl::BeforeWait() {
  // Close channels outside of their own callbacks (Close() fails their
  // requests synchronously).
  for (int i = replicas_.TakeNextClose(); i >= 0; i = replicas_.TakeNextClose()) {
    replicas_[i].channel->Close();
  }
  if (state_ == TargetState::kFenced || state_ == TargetState::kFailed) {
    // Everything waiting fails; writes waiting for a bump that cannot happen too.
    while (IoCtx* c = bump_waiters_.PopFront()) Finish(c, DownCode());
  }
  if (need_bump_ && !bump_running_ && state_ != TargetState::kStarting &&
      state_ != TargetState::kFenced) {
    StartBump();
    uint64_t bound =
        options_.quorum_wait_ms != 0 ? options_.quorum_wait_ms : options_.request_timeout_ms;
    if (need_bump_ && quorum_lost_ns_ != 0 &&
        MonotonicNanos() - quorum_lost_ns_ >= bound * 1000000ull) {
      FailQuorumWaiters();
    }
  }
  while (BlockRequest* req = failed_.PopFront()) {
    ++counters_.errors;
    req->done(req);
  }
  DrainWaiting();
  if (!shutting_down_) {
    MaybeGrowInSync();
    Reconnect(MonotonicNanos());
    if (!rebuild_.running()) {
      StartNextRebuild();
    } else {
      rebuild_.Advance();
    }
  }
  if (shutting_down_ && inflight_ == 0 && waiting_.empty()) RunShutdown();
}

// The last steps of Shutdown() once nothing is in flight: a final FLUSH,
// then the connections close and `done` runs.
void VolumeTargetImpl::RunShutdown() {
  if (!shutdown_flush_sent_ &&
      (state_ == TargetState::kReady || state_ == TargetState::kDegraded)) {
    shutdown_flush_sent_ = true;
    shutdown_flush_ = BlockRequest{};
    shutdown_flush_.op = BlockOp::kFlush;
    shutdown_flush_.ctx = this;
    shutdown_flush_.done = [](BlockRequest* req) {
      VolumeTargetImpl* self = static_cast<VolumeTargetImpl*>(req->ctx);
      if (req->status != StatusCode::kOk) {
        TLOG_WARN(kTag, "volume '%s': final flush failed: %s", self->options_.volume_id.c_str(),
                  StatusCodeName(req->status));
      }
    };
    Dispatch(&shutdown_flush_);
    return;
  }
  if (shutdown_finished_) return;
  for (ReplicaSlot& r : replicas_) {
    if (r.channel) r.channel->Close();
  }
  auto done = shutdown_done_;
  if (done == nullptr) done = [](void*) {};
  void* arg = shutdown_arg_;
  shutdown_done_ = nullptr;
  shutdown_finished_ = true;
  // Posted: `done` may destroy the target, which must not happen while the
  // loop is walking its idlers.
  loop_->Post([done, arg] { done(arg); });
}

// The ticker only bounds how long the loop sleeps: BeforeWait, which runs
// every iteration, reconnects replicas and moves a rate-limited rebuild on.
// Nothing is submitted or connected from here: a client's own ticker later in
// this pass would see a request (or connect) younger than its `now`.
void VolumeTargetImpl::OnTick(uint64_t /*now_ns*/) {}

// Reconnects FAULTED and STALE replicas every reconnect_interval_ms; once
// connected, their rebuild starts from BeforeWait.
void VolumeTargetImpl::Reconnect(uint64_t now_ns) {
  if (options_.reconnect_interval_ms == 0 || shutting_down_) return;
  if (state_ != TargetState::kReady && state_ != TargetState::kDegraded) return;
  for (ReplicaSlot& r : replicas_) {
    if (r.removed || (r.state != ReplicaState::kFaulted && r.state != ReplicaState::kStale)) {
      continue;
    }
    client::ClientState cs = r.channel->state();
    if (cs != client::ClientState::kIdle && cs != client::ClientState::kClosed) continue;
    if (now_ns < r.next_reconnect_ns || replicas_.ClosePending(r)) continue;
    r.next_reconnect_ns = now_ns + options_.reconnect_interval_ms * 1000000ull;
    Status st = r.channel->Connect();
    if (!st.ok()) r.last_error = st.ToString();
  }
}

// ------------------------------------------------------------------ status

TargetStatus VolumeTargetImpl::GetStatus() const {
  TargetStatus s = counters_;
  s.volume_id = options_.volume_id;
  s.state = state_;
  s.size = size_;
  s.epoch = options_.epoch;
  s.generation = replicas_.generation();
  s.generation_id = replicas_.generation_id();
  s.last_error = last_error_;
  s.rebuild = rebuild_.Progress(MonotonicNanos());
  s.rebuild.rate_limit_bytes_per_sec = options_.rebuild_rate_bytes_per_sec;
  for (const ReplicaSlot& r : replicas_) {
    if (r.removed) continue;
    ReplicaStatus rs;
    rs.address = r.Address();
    rs.replica_id = r.replica_id;
    rs.state = r.state;
    rs.generation = r.generation;
    rs.generation_id = r.info.generation_id;
    if (replicas_.in_sync_mask() & r.bit()) s.in_sync.push_back(r.replica_id);
    rs.inflight = r.channel ? r.channel->inflight() : 0;
    rs.reads = r.reads;
    rs.writes = r.writes;
    rs.errors = r.errors;
    rs.last_error = r.last_error;
    s.replicas.push_back(std::move(rs));
  }
  return s;
}

// ------------------------------------------------------ live replica changes

Status VolumeTargetImpl::AddReplica(const ReplicaEndpoint& endpoint) {
  if (state_ != TargetState::kReady && state_ != TargetState::kDegraded) {
    return Status::FailedPrecondition(std::string("target is ") + TargetStateName(state_));
  }
  in_addr a;
  if (inet_pton(AF_INET, endpoint.host.c_str(), &a) != 1 || endpoint.port == 0) {
    return Status::InvalidArgument("replica endpoint: bad address '" + endpoint.host + ":" +
                                   std::to_string(endpoint.port) + "'");
  }
  std::string address = endpoint.host + ":" + std::to_string(endpoint.port);
  if (replicas_.Find(address) != nullptr) {
    return Status::AlreadyExists("replica " + address + " is already in the target");
  }
  for (ReplicaSlot& r : replicas_) {
    // A slot whose old connection is still to be closed is not reused yet.
    if (!r.removed || replicas_.ClosePending(r)) continue;
    r.Reset();
    r.endpoint = endpoint;
    r.state = ReplicaState::kFaulted;  // rebuilt once connected
    r.member = false;                  // a member once rebuilt
    r.settled = true;
    r.channel = NewChannel(&r);
    Status st = r.channel->Connect();
    if (!st.ok()) r.last_error = st.ToString();
    // The survivors track from now on: the new replica misses writes until
    // its rebuild starts.
    if (!replicas_.tracking()) need_bump_ = true;
    UpdateState();
    loop_->Wake();
    TLOG_INFO(kTag, "volume '%s': replica %s added", options_.volume_id.c_str(), address.c_str());
    return Status::Ok();
  }
  return Status::ResourceExhausted("target already has " + std::to_string(kMaxReplicas) +
                                   " replicas");
}

Status VolumeTargetImpl::RemoveReplica(const std::string& address) {
  ReplicaSlot* r = replicas_.Find(address);
  if (r == nullptr) return Status::NotFound("no replica " + address + " in the target");
  if (r->state == ReplicaState::kHealthy && replicas_.HealthyMask() == r->bit()) {
    return Status::FailedPrecondition("replica " + address + " is the last HEALTHY one");
  }
  if (r->index == rebuild_.destination()) rebuild_.Abort("replica removed");
  bool was_healthy = r->state == ReplicaState::kHealthy;
  replicas_.Vacate(*r);  // still counted, as not serving, until replaced
  r->state = ReplicaState::kFaulted;
  r->removed = true;
  replicas_.ScheduleClose(*r);
  if (was_healthy) need_bump_ = true;  // the others must not be read as its equals
  UpdateState();
  loop_->Wake();
  TLOG_INFO(kTag, "volume '%s': replica %s removed", options_.volume_id.c_str(), address.c_str());
  return Status::Ok();
}

Status VolumeTargetImpl::RebuildReplica(const std::string& address) {
  ReplicaSlot* r = replicas_.Find(address);
  if (r == nullptr) return Status::NotFound("no replica " + address + " in the target");
  if (r->state == ReplicaState::kFaulted || r->state == ReplicaState::kStale) {
    r->next_reconnect_ns = 0;  // the next tick connects
  }
  loop_->Wake();
  return Status::Ok();
}

void VolumeTargetImpl::SetRebuildRate(uint64_t bytes_per_sec) {
  options_.rebuild_rate_bytes_per_sec = bytes_per_sec;
  rebuild_.SetRate(bytes_per_sec, MonotonicNanos());
}

Status VolumeTargetImpl::Resize(uint64_t new_size) {
  if (state_ != TargetState::kReady && state_ != TargetState::kDegraded) {
    return Status::FailedPrecondition(std::string("target is ") + TargetStateName(state_));
  }
  if (new_size == size_) return Status::Ok();
  if (new_size < size_) {
    return Status::OutOfRange("size " + std::to_string(new_size) +
                              " is smaller than the volume's " + std::to_string(size_) +
                              " bytes: never shrunk");
  }
  if (block_size_ == 0 || new_size % block_size_ != 0) {
    return Status::InvalidArgument("size " + std::to_string(new_size) +
                                   " is not a multiple of the block size " +
                                   std::to_string(block_size_));
  }
  TLOG_INFO(kTag, "volume '%s': grown from %llu to %llu bytes", options_.volume_id.c_str(),
            static_cast<unsigned long long>(size_), static_cast<unsigned long long>(new_size));
  size_ = new_size;
  options_.size = new_size;
  return Status::Ok();
}

// ------------------------------------------------------------ VolumeTarget

VolumeTarget::VolumeTarget(EventLoop* loop, TargetOptions options)
    : loop_(loop), impl_(std::make_unique<VolumeTargetImpl>(loop, std::move(options))) {}

VolumeTarget::~VolumeTarget() = default;

Status VolumeTarget::Start() { return impl_->Start(); }
void VolumeTarget::Shutdown(void (*done)(void* arg), void* arg) { impl_->Shutdown(done, arg); }
TargetState VolumeTarget::state() const { return impl_->state_; }
TargetStatus VolumeTarget::GetStatus() const { return impl_->GetStatus(); }
uint64_t VolumeTarget::size() const { return impl_->size_; }
uint32_t VolumeTarget::block_size() const { return impl_->block_size_; }
uint32_t VolumeTarget::max_io_size() const { return protocol::kMaxIoSize; }
void VolumeTarget::Submit(BlockRequest* req) { impl_->Submit(req); }
Status VolumeTarget::AddReplica(const ReplicaEndpoint& e) { return impl_->AddReplica(e); }
Status VolumeTarget::RemoveReplica(const std::string& a) { return impl_->RemoveReplica(a); }
Status VolumeTarget::RebuildReplica(const std::string& a) { return impl_->RebuildReplica(a); }
void VolumeTarget::SetRebuildRate(uint64_t bytes_per_sec) { impl_->SetRebuildRate(bytes_per_sec); }
Status VolumeTarget::Resize(uint64_t new_size) { return impl_->Resize(new_size); }

}  // namespace tandem::target
