#include "replica-engine/target/volume_target.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "common/clock.h"
#include "common/logging.h"
#include "replica-engine/target/volume_target_impl.h"

namespace tandem::target {

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
  next_gen_id_ = NewGenerationId();
  target_id_ = NewGenerationId();
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
  loop_->AddTicker(this, 10);  // reconnects, rebuild rate limit
  idler_added_ = true;
  // Fixed slots (kMaxReplicas): Replica objects are listeners and must not move.
  replicas_.resize(kMaxReplicas);
  for (size_t i = 0; i < kMaxReplicas; ++i) {
    Replica& r = replicas_[i];
    r.impl = this;
    r.index = static_cast<int>(i);
    r.removed = i >= options_.replicas.size();
    if (r.removed) continue;
    r.endpoint = options_.replicas[i];
    r.client = NewClient(&r);
  }
  for (Replica& r : replicas_) {
    if (r.removed) {
      r.settled = true;
      continue;
    }
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

std::unique_ptr<ReplicaClient> VolumeTarget::Impl::NewClient(Replica* r) {
  client::ClientOptions co;
  co.host = r->endpoint.host;
  co.port = r->endpoint.port;
  co.volume_id = options_.volume_id;
  co.token = options_.token;
  co.epoch = options_.epoch;
  co.target_id = target_id_;
  co.max_inflight = static_cast<uint32_t>(ctx_pool_.size());
  co.request_timeout_ms = options_.request_timeout_ms;
  co.connect_timeout_ms = options_.connect_timeout_ms;
  return std::make_unique<ReplicaClient>(loop_, co, r);
}

VolumeTarget::Impl::~Impl() {
  *self_ref_ = nullptr;  // an authority's late answer finds no target
  if (idler_added_) {
    loop_->RemoveIdler(this);
    loop_->RemoveTicker(this);
  }
  rb_.phase = RbPhase::kIdle;
  destroying_ = true;  // requests cancelled by Close() below are not faults
  for (Replica& r : replicas_) {
    if (r.client) r.client->Close();
  }
}

void VolumeTarget::Impl::OnReplicaConnected(Replica* r, const protocol::ReplicaInfo& info) {
  r->replica_id = info.replica_id;
  r->generation = info.generation;
  r->info = info;
  if (state_ != TargetState::kStarting) {
    // A FAULTED or STALE replica reconnected (or one was added): it is
    // rebuilt before it serves. Until its rebuild starts it gets nothing.
    r->last_error.clear();
    if (info.size != size_ || info.block_size != block_size_) {
      r->last_error = "replica size " + std::to_string(info.size) + " / block " +
                      std::to_string(info.block_size) + " does not match the volume";
      close_mask_ |= 1u << r->index;
    } else if (info.generation > generation_) {
      // Only a newer target could have moved it past us.
      r->last_error = "replica generation " + std::to_string(info.generation) + " is ahead of " +
                      std::to_string(generation_);
      close_mask_ |= 1u << r->index;
    } else {
      TLOG_INFO(kTag, "volume '%s': replica %s is back (generation %llu), queued for rebuild",
                options_.volume_id.c_str(), Address(*r).c_str(),
                static_cast<unsigned long long>(info.generation));
    }
    loop_->Wake();
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
  if (r->state == ReplicaState::kFaulted || r->state == ReplicaState::kStale) {
    r->last_error = why.ToString();  // a reconnect attempt failed; try later
    return;
  }
  Fault(r, why);
}

void VolumeTarget::Impl::MaybeFinishStart() {
  if (state_ != TargetState::kStarting || start_chosen_) return;
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
  // An attach must reach a majority of the configured replicas (or be told
  // by the controller which replicas are in sync): majorities intersect, so
  // the newest history among them has every acknowledged write.
  int configured = __builtin_popcount(MemberMask());
  int reached = 0;
  for (const Replica& r : replicas_) reached += !r.removed && r.state == ReplicaState::kConnecting;
  if (any && options_.in_sync.generation_id == 0 && 2 * reached <= configured) {
    last_error_ = "reached " + std::to_string(reached) + " of " + std::to_string(configured) +
                  " replicas; an attach needs a majority (or the controller's in-sync record)";
    for (Replica& r : replicas_) {
      if (!r.removed && r.state == ReplicaState::kConnecting) {
        r.state = ReplicaState::kStale;
        close_mask_ |= 1u << r.index;
      }
    }
    any = false;
  }
  if (any && !ChooseNewest()) any = false;
  if (!any) {
    if (last_error_.empty()) last_error_ = "no replica reachable";
    state_ = TargetState::kFailed;
    TLOG_INFO(kTag, "volume '%s' epoch %llu: FAILED: %s", options_.volume_id.c_str(),
              static_cast<unsigned long long>(options_.epoch), last_error_.c_str());
    loop_->Wake();
    return;
  }
  start_chosen_ = true;
  StartResync();  // FinishStart() when done
}

void VolumeTarget::Impl::FinishStart() {
  if (state_ != TargetState::kStarting) return;  // shut down meanwhile
  if (!options_.in_sync.replica_ids.empty() && options_.in_sync.generation_id != 0) {
    // The controller's in-sync record may acknowledge below a majority, but
    // only while every replica it names is serving.
    uint32_t mask = 0;
    size_t found = 0;
    for (const std::string& id : options_.in_sync.replica_ids) {
      for (const Replica& r : replicas_) {
        if (!r.removed && r.state == ReplicaState::kHealthy && r.replica_id == id) {
          mask |= 1u << r.index;
          ++found;
          break;
        }
      }
    }
    if (found == options_.in_sync.replica_ids.size()) insync_mask_ = mask;
  }
  state_ = TargetState::kDegraded;  // UpdateState() leaves kStarting alone
  UpdateState();
  for (const Replica& r : replicas_) {
    if (r.state != ReplicaState::kHealthy || !r.info.tracking_dirty) continue;
    tracking_ = true;
    tracking_since_ = std::max(tracking_since_, r.info.dirty_since_generation);
  }
  // Every attach moves the serving replicas to a new generation before the
  // first write, so a replica at generation 0 has never served (it is never
  // rebuilt incrementally) and one that is not with us now is behind. If one
  // is missing, the survivors track dirty regions from this bump on.
  need_bump_ = true;
  TLOG_INFO(kTag, "volume '%s' epoch %llu: %s, generation %llu, size %llu",
            options_.volume_id.c_str(), static_cast<unsigned long long>(options_.epoch),
            TargetStateName(state_), static_cast<unsigned long long>(generation_),
            static_cast<unsigned long long>(size_));
  loop_->Wake();
}

namespace {
std::string Hex(uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(id));
  return buf;
}
bool Holds(const protocol::ReplicaInfo& info, uint64_t id) {
  return info.generation_id == id ||
         std::find(info.generation_history.begin(), info.generation_history.end(), id) !=
             info.generation_history.end();
}
}  // namespace

// Generations are identified by random ids (DRBD's data-generation UUIDs),
// not only counted: a replica serves only if it holds the newest history
// among those reached, and the controller's required id when it gave one.
bool VolumeTarget::Impl::ChooseNewest() {
  const uint64_t required = options_.in_sync.generation_id;
  uint32_t cand = 0;
  std::string reached;
  for (const Replica& r : replicas_) {
    if (r.removed || r.state != ReplicaState::kConnecting) continue;
    reached += " " + Address(r) + "(" + r.replica_id + " generation " +
               std::to_string(r.generation) + " id " + Hex(r.info.generation_id) + ")";
    if (required == 0 || Holds(r.info, required)) cand |= 1u << r.index;
  }
  auto stale_all = [&] {
    for (Replica& r : replicas_) {
      if (r.removed || r.state != ReplicaState::kConnecting) continue;
      r.state = ReplicaState::kStale;
      close_mask_ |= 1u << r.index;
    }
  };
  if (cand == 0) {
    std::string ids;
    for (const std::string& id : options_.in_sync.replica_ids) ids += " " + id;
    last_error_ = "UNAVAILABLE: no reachable replica holds generation id " + Hex(required) +
                  " (in-sync replicas:" + (ids.empty() ? " not named" : ids) +
                  "); reached:" + reached;
    stale_all();
    return false;
  }
  uint64_t top = 0;
  for (const Replica& r : replicas_) {
    if (cand & (1u << r.index)) top = std::max(top, r.generation);
  }
  uint64_t top_id = 0;
  for (const Replica& r : replicas_) {
    if (!(cand & (1u << r.index)) || r.generation != top || r.info.generation_id == 0) continue;
    if (top_id != 0 && r.info.generation_id != top_id) {
      last_error_ = "replicas at generation " + std::to_string(top) +
                    " hold different histories; refusing to choose:" + reached;
      stale_all();
      return false;
    }
    top_id = r.info.generation_id;
  }
  generation_ = top;
  gen_id_ = top_id;
  for (Replica& r : replicas_) {
    if (r.removed || r.state != ReplicaState::kConnecting) continue;
    if ((cand & (1u << r.index)) && r.generation == top && r.info.generation_id == top_id) {
      r.state = ReplicaState::kHealthy;
      gen_history_ = r.info.generation_history;
      continue;
    }
    // Missed writes the others have (or a history nobody vouches for):
    // never read, rebuilt before it serves.
    r.state = ReplicaState::kStale;
    close_mask_ |= 1u << r.index;
    TLOG_WARN(kTag, "volume '%s': replica %s (generation %llu id %s) is behind %llu id %s: STALE",
              options_.volume_id.c_str(), Address(r).c_str(),
              static_cast<unsigned long long>(r.generation), Hex(r.info.generation_id).c_str(),
              static_cast<unsigned long long>(top), Hex(top_id).c_str());
  }
  return true;
}

bool VolumeTarget::Impl::InLineage(uint64_t id) const {
  return id == 0 || id == gen_id_ ||
         std::find(gen_history_.begin(), gen_history_.end(), id) != gen_history_.end();
}

void VolumeTarget::Impl::EncodeCurrentRecord(std::string* out) const {
  out->clear();
  if (gen_id_ == 0) return;  // an older replica set: no record to keep
  protocol::GenerationRecord rec;
  rec.id = gen_id_;
  rec.history = gen_history_;
  (void)protocol::EncodeGenerationRecord(rec, out);
}

// --------------------------------------------------- faults, bumps, fencing

uint32_t VolumeTarget::Impl::HealthyMask() const {
  uint32_t m = 0;
  for (const Replica& r : replicas_) {
    if (!r.removed && r.state == ReplicaState::kHealthy) m |= 1u << r.index;
  }
  return m;
}

uint32_t VolumeTarget::Impl::WriteMask() const {
  uint32_t m = 0;
  for (const Replica& r : replicas_) {
    if (!r.removed && (r.state == ReplicaState::kHealthy || r.state == ReplicaState::kRebuilding)) {
      m |= 1u << r.index;
    }
  }
  return m;
}

uint32_t VolumeTarget::Impl::MemberMask() const {
  uint32_t m = 0;
  for (const Replica& r : replicas_) {
    if (!r.removed && r.member) m |= 1u << r.index;
  }
  return m;
}

uint32_t VolumeTarget::Impl::AllMask() const {
  uint32_t m = 0;
  for (const Replica& r : replicas_) {
    if (!r.removed) m |= 1u << r.index;
  }
  return m;
}

void VolumeTarget::Impl::UpdateState() {
  if (state_ == TargetState::kFenced || state_ == TargetState::kStarting) return;
  uint32_t healthy = HealthyMask();
  if (healthy == 0) {
    state_ = TargetState::kFailed;
  } else if (healthy == AllMask()) {
    state_ = TargetState::kReady;
  } else {
    state_ = TargetState::kDegraded;
  }
}

void VolumeTarget::Impl::Fault(Replica* r, const Status& why) {
  if (destroying_) return;
  ++r->errors;
  if (r->state != ReplicaState::kHealthy && r->state != ReplicaState::kRebuilding) return;
  if (r->state == ReplicaState::kRebuilding && r->index == rb_.dest) {
    RebuildAborted(why.ToString());
  }
  // A REBUILDING replica leaving also needs the bump: what it misses from now
  // on must be in the dirty maps for its rebuild to resume.
  r->state = ReplicaState::kFaulted;
  r->faulted_here = true;
  r->next_reconnect_ns = MonotonicNanos() + options_.reconnect_interval_ms * 1000000ull;
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
  last_error_ = "fenced: " + why;
  TLOG_WARN(kTag, "volume '%s' epoch %llu FENCED: %s", options_.volume_id.c_str(),
            static_cast<unsigned long long>(options_.epoch), why.c_str());
  state_ = TargetState::kFenced;
  RebuildAborted("fenced");
  for (Replica& r : replicas_) {
    if (r.removed) continue;
    if (r.state == ReplicaState::kHealthy || r.state == ReplicaState::kRebuilding) {
      r.state = ReplicaState::kFaulted;
    }
    close_mask_ |= 1u << r.index;
  }
  loop_->Wake();
}

bool VolumeTarget::Impl::AckAllowed(uint32_t serving) const {
  if (2 * __builtin_popcount(serving & MemberMask()) > __builtin_popcount(MemberMask())) {
    return true;
  }
  return insync_mask_ != 0 && (serving & insync_mask_) == insync_mask_;
}

uint64_t VolumeTarget::Impl::NewGenerationId() {
  uint64_t id = 0;
  while (id == 0) id = rng_();
  return id;
}

void VolumeTarget::Impl::AskShrink(uint32_t serving) {
  std::vector<std::string> ids;
  for (const Replica& r : replicas_) {
    if (serving & (1u << r.index)) ids.push_back(r.replica_id);
  }
  shrink_pending_ = true;
  TLOG_WARN(kTag,
            "volume '%s': %d of %d replicas serving: asking the authority to shrink the "
            "in-sync set",
            options_.volume_id.c_str(), __builtin_popcount(serving),
            __builtin_popcount(MemberMask()));
  std::shared_ptr<Impl*> ref = self_ref_;
  options_.authority->ShrinkInSync(
      options_.volume_id, options_.epoch, ids, next_gen_id_, [ref, serving](Status st) {
        Impl* self = *ref;
        if (self == nullptr) return;
        self->shrink_pending_ = false;
        if (st.ok()) {
          self->insync_mask_ = serving;
          TLOG_INFO(kTag, "volume '%s': the authority recorded the in-sync set",
                    self->options_.volume_id.c_str());
        } else if (st.code() == StatusCode::kFailedPrecondition) {
          self->Fence("the membership authority refused: " + st.ToString());
        } else {
          self->last_error_ = "in-sync shrink not recorded: " + st.ToString();
          self->shrink_retry_ns_ =
              MonotonicNanos() +
              std::max<uint64_t>(self->options_.reconnect_interval_ms, 100) * 1000000ull;
        }
        self->loop_->Wake();
      });
}

void VolumeTarget::Impl::FailQuorumWaiters() {
  while (bump_wait_head_ != nullptr) {
    IoCtx* c = bump_wait_head_;
    bump_wait_head_ = c->next;
    Finish(c, StatusCode::kUnavailable);
  }
  BlockRequest* keep_head = nullptr;
  BlockRequest* keep_tail = nullptr;
  while (wait_head_ != nullptr) {
    BlockRequest* req = wait_head_;
    wait_head_ = req->next_;
    req->next_ = nullptr;
    if (NeedsBump(req->op)) {
      Complete(req, StatusCode::kUnavailable);
      continue;
    }
    if (keep_tail != nullptr) {
      keep_tail->next_ = req;
    } else {
      keep_head = req;
    }
    keep_tail = req;
  }
  wait_head_ = keep_head;
  wait_tail_ = keep_tail;
}

void VolumeTarget::Impl::StartBump() {
  uint32_t healthy = HealthyMask();
  if (healthy == 0) {
    need_bump_ = false;
    return;
  }
  if (!AckAllowed(healthy)) {
    // Less than a majority: nothing that skipped a replica is acknowledged
    // and no new generation starts (a minority's generation would diverge
    // from the majority's). Writes wait for replicas to come back, or for the
    // authority to record the smaller in-sync set; FailQuorumWaiters bounds it.
    uint64_t now = MonotonicNanos();
    if (quorum_lost_ns_ == 0) {
      quorum_lost_ns_ = now;
      last_error_ = std::to_string(__builtin_popcount(healthy)) + " of " +
                    std::to_string(__builtin_popcount(MemberMask())) +
                    " replicas serving: writes wait for a majority";
      TLOG_WARN(kTag, "volume '%s': %s", options_.volume_id.c_str(), last_error_.c_str());
    }
    if (options_.authority != nullptr && !shrink_pending_ && now >= shrink_retry_ns_) {
      AskShrink(healthy);
    }
    return;
  }
  if (quorum_lost_ns_ != 0) {
    quorum_lost_ns_ = 0;
    last_error_.clear();
  }
  need_bump_ = false;
  bump_running_ = true;
  bump_generation_ = generation_ + 1;
  {
    // The new generation's id, and ours on the front of its history.
    protocol::GenerationRecord rec;
    rec.id = next_gen_id_;
    if (gen_id_ != 0) rec.history.push_back(gen_id_);
    for (uint64_t h : gen_history_) {
      if (rec.history.size() >= protocol::kMaxGenerationHistory) break;
      rec.history.push_back(h);
    }
    (void)protocol::EncodeGenerationRecord(rec, &bump_payload_);
  }
  bump_remaining_ = 0;
  // Track dirty regions while any replica is not HEALTHY (and keep tracking
  // once on: only StartUntrack turns it off, after clearing the maps).
  bump_track_ = tracking_ || healthy != AllMask();
  for (Replica& r : replicas_) {
    if (!(healthy & (1u << r.index))) continue;
    ClientRequest& s = bump_sub_[r.index];
    s.op = Opcode::kSetGeneration;
    s.flags = bump_track_ ? protocol::kFlagTrackDirty : 0;
    s.offset = bump_generation_;
    s.length = static_cast<uint32_t>(bump_payload_.size());
    s.buf = bump_payload_.data();
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
    r.info.generation_id = self->next_gen_id_;
  } else if (sub->wire_status == WireStatus::kStaleEpoch) {
    self->Fence("SET_GENERATION refused: stale epoch");
  } else {
    self->Fault(&r, Status(sub->status, "SET_GENERATION failed"));
  }
  if (--self->bump_remaining_ != 0) return;
  self->bump_running_ = false;
  self->generation_ = self->bump_generation_;
  {
    protocol::GenerationRecord rec;
    if (protocol::DecodeGenerationRecord(self->bump_payload_, &rec).ok()) {
      self->gen_id_ = rec.id;
      self->gen_history_ = std::move(rec.history);
    }
    self->next_gen_id_ = self->NewGenerationId();
  }
  if (self->bump_track_ && !self->tracking_) {
    self->tracking_ = true;
    self->tracking_since_ = self->bump_generation_;
  }
  self->ReleaseBumpWaiters();
}

// Writes that skipped a replica may complete once the survivors are at the
// new generation, and (if not yet done) after their range is marked dirty.
void VolumeTarget::Impl::ReleaseBumpWaiters() {
  IoCtx* list = bump_wait_head_;
  bump_wait_head_ = nullptr;
  while (list != nullptr) {
    IoCtx* c = list;
    list = c->next;
    c->next = nullptr;
    if (need_bump_ || bump_running_) {  // another replica left meanwhile: wait for the next bump
      c->next = bump_wait_head_;
      bump_wait_head_ = c;
    } else if (c->req->op == BlockOp::kFlush) {
      Finish(c, StatusCode::kOk);
    } else if (c->marked) {
      FinishWrite(c);
    } else {
      StartMarkDirty(c);
    }
  }
  loop_->Wake();
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
    uint64_t bound =
        options_.quorum_wait_ms != 0 ? options_.quorum_wait_ms : options_.request_timeout_ms;
    if (need_bump_ && quorum_lost_ns_ != 0 &&
        MonotonicNanos() - quorum_lost_ns_ >= bound * 1000000ull) {
      FailQuorumWaiters();
    }
  }
  while (failed_head_ != nullptr) {
    BlockRequest* req = failed_head_;
    failed_head_ = req->next_;
    if (failed_head_ == nullptr) failed_tail_ = nullptr;
    ++counters_.errors;
    req->done(req);
  }
  DrainWaiting();
  if (!shutting_down_) {
    Reconnect(MonotonicNanos());
    if (rb_.phase == RbPhase::kIdle) {
      StartNextRebuild();
    } else {
      RebuildStep();
    }
  }
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
      for (Replica& r : replicas_) {
        if (r.client) r.client->Close();
      }
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
  if (RangeLockedFor(req) || OverlapsInflightWrite(req)) {
    // The rebuild is copying this range, or another write to it is on its
    // way to the replicas: this write follows. Overlapping writes in flight
    // together could land in different orders on different replicas.
    req->next_ = nullptr;
    if (range_wait_tail_ != nullptr) {
      range_wait_tail_->next_ = req;
    } else {
      range_wait_head_ = req;
    }
    range_wait_tail_ = req;
    return;
  }
  IoCtx* c = free_ctx_;
  free_ctx_ = c->next;
  c->next = nullptr;
  ++inflight_;
  c->seq = ++dispatch_seq_;
  c->req = req;
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
  uint32_t healthy = WriteMask();
  if (HealthyMask() == 0) {
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
  if (op != Opcode::kFlush && rb_.phase != RbPhase::kIdle && rb_.dest >= 0 &&
      (healthy & (1u << rb_.dest))) {
    MarkTouched(c->req->offset, c->req->length);
  }
  if (op != Opcode::kFlush) {
    c->wprev = nullptr;
    c->wnext = wlist_;
    if (wlist_ != nullptr) wlist_->wprev = c;
    wlist_ = c;
    c->in_wlist = true;
  }
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
  SendControl(c, healthy, Opcode::kMarkDirty, c->req->offset, c->req->length);
}

// A control phase of a request (MARK_DIRTY, FLUSH): one sub-request per
// replica of `mask`, no payload; OnDataPhaseDone runs when all answered.
void VolumeTarget::Impl::SendControl(IoCtx* c, uint32_t mask, Opcode op, uint64_t offset,
                                     uint32_t length) {
  c->sent_mask = mask;
  c->ok_mask = 0;
  c->remaining = static_cast<uint32_t>(__builtin_popcount(mask));
  for (Replica& r : replicas_) {
    if (!(mask & (1u << r.index))) continue;
    ClientRequest& s = c->sub[r.index];
    s.op = op;
    s.flags = 0;
    s.offset = offset;
    s.length = length;
    s.buf = nullptr;
  }
  for (Replica& r : replicas_) {
    if (mask & (1u << r.index)) r.client->Submit(&c->sub[r.index]);
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

bool VolumeTarget::Impl::OverlapsInflightWrite(const BlockRequest* req) const {
  if (req->op == BlockOp::kRead || req->op == BlockOp::kFlush) return false;
  for (const IoCtx* c = wlist_; c != nullptr; c = c->wnext) {
    const BlockRequest* q = c->req;
    if (q->offset < req->offset + req->length && req->offset < q->offset + q->length) return true;
  }
  return false;
}

void VolumeTarget::Impl::UnlinkWrite(IoCtx* c) {
  if (!c->in_wlist) return;
  if (c->wprev != nullptr) {
    c->wprev->wnext = c->wnext;
  } else {
    wlist_ = c->wnext;
  }
  if (c->wnext != nullptr) c->wnext->wprev = c->wprev;
  c->wprev = c->wnext = nullptr;
  c->in_wlist = false;
  ReleaseRangeLock();  // held writes check again
}

void VolumeTarget::Impl::OnDataPhaseDone(IoCtx* c) {
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

void VolumeTarget::Impl::AwaitBump(IoCtx* c) {
  c->phase = IoCtx::Phase::kAwaitBump;
  c->next = bump_wait_head_;
  bump_wait_head_ = c;
  loop_->Wake();
}

void VolumeTarget::Impl::FinishWrite(IoCtx* c) {
  const BlockRequest* q = c->req;
  if (c->fua_flushed || !(q->flags & kBlockFua) ||
      (q->op != BlockOp::kTrim && q->op != BlockOp::kWriteZeroes)) {
    Finish(c, StatusCode::kOk);
    return;
  }
  uint32_t mask = c->ok_mask & WriteMask();
  if (mask == 0) {
    Finish(c, DownCode());
    return;
  }
  c->fua_flushed = true;
  c->phase = IoCtx::Phase::kFuaFlush;
  SendControl(c, mask, Opcode::kFlush, 0, 0);
}

void VolumeTarget::Impl::Finish(IoCtx* c, StatusCode code) {
  UnlinkWrite(c);
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
  RebuildAborted("target shutting down");
  resync_.active = false;
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
  s.generation_id = gen_id_;
  s.last_error = last_error_;
  s.rebuild = rb_status_;
  if (rb_.phase != RbPhase::kIdle && rb_.phase != RbPhase::kUntrack) {
    s.rebuild.rate_bytes_per_sec = rb_.rate;
    if (rb_.rate == 0) {
      double secs = static_cast<double>(MonotonicNanos() - rb_.started_ns) / 1e9;
      if (secs > 0.2)
        s.rebuild.rate_bytes_per_sec = static_cast<double>(rb_status_.bytes_done) / secs;
    }
    uint64_t left = rb_status_.bytes_total > rb_status_.bytes_done
                        ? rb_status_.bytes_total - rb_status_.bytes_done
                        : 0;
    s.rebuild.eta_seconds = s.rebuild.rate_bytes_per_sec > 0
                                ? static_cast<double>(left) / s.rebuild.rate_bytes_per_sec
                                : 0;
  }
  s.rebuild.rate_limit_bytes_per_sec = options_.rebuild_rate_bytes_per_sec;
  for (const Replica& r : replicas_) {
    if (r.removed) continue;
    ReplicaStatus rs;
    rs.address = Address(r);
    rs.replica_id = r.replica_id;
    rs.state = r.state;
    rs.generation = r.generation;
    rs.generation_id = r.info.generation_id;
    if (insync_mask_ & (1u << r.index)) s.in_sync.push_back(r.replica_id);
    rs.inflight = r.client ? r.client->inflight() : 0;
    rs.reads = r.reads;
    rs.writes = r.writes;
    rs.errors = r.errors;
    rs.last_error = r.last_error;
    s.replicas.push_back(std::move(rs));
  }
  return s;
}

// Reconnects FAULTED and STALE replicas now and then (their rebuild starts
// from BeforeWait once connected), and lets a rate-limited rebuild go on.
// The ticker only bounds how long the loop sleeps: BeforeWait, which runs
// every iteration, reconnects replicas and moves a rate-limited rebuild on.
// Nothing is submitted or connected from here: a client's own ticker later in
// this pass would see a request (or connect) younger than its `now`.
void VolumeTarget::Impl::OnTick(uint64_t /*now_ns*/) {}

// Reconnects FAULTED and STALE replicas every reconnect_interval_ms; once
// connected, their rebuild starts from BeforeWait.
void VolumeTarget::Impl::Reconnect(uint64_t now_ns) {
  if (options_.reconnect_interval_ms == 0 || shutting_down_) return;
  if (state_ != TargetState::kReady && state_ != TargetState::kDegraded) return;
  for (Replica& r : replicas_) {
    if (r.removed || (r.state != ReplicaState::kFaulted && r.state != ReplicaState::kStale)) {
      continue;
    }
    client::ClientState cs = r.client->state();
    if (cs != client::ClientState::kIdle && cs != client::ClientState::kClosed) continue;
    if (now_ns < r.next_reconnect_ns || (close_mask_ & (1u << r.index))) continue;
    r.next_reconnect_ns = now_ns + options_.reconnect_interval_ms * 1000000ull;
    Status st = r.client->Connect();
    if (!st.ok()) r.last_error = st.ToString();
  }
}

VolumeTarget::Impl::Replica* VolumeTarget::Impl::FindReplica(const std::string& address) {
  for (Replica& r : replicas_) {
    if (!r.removed && Address(r) == address) return &r;
  }
  return nullptr;
}

Status VolumeTarget::Impl::AddReplica(const ReplicaEndpoint& endpoint) {
  if (state_ != TargetState::kReady && state_ != TargetState::kDegraded) {
    return Status::FailedPrecondition(std::string("target is ") + TargetStateName(state_));
  }
  in_addr a;
  if (inet_pton(AF_INET, endpoint.host.c_str(), &a) != 1 || endpoint.port == 0) {
    return Status::InvalidArgument("replica endpoint: bad address '" + endpoint.host + ":" +
                                   std::to_string(endpoint.port) + "'");
  }
  std::string address = endpoint.host + ":" + std::to_string(endpoint.port);
  if (FindReplica(address) != nullptr) {
    return Status::AlreadyExists("replica " + address + " is already in the target");
  }
  for (Replica& r : replicas_) {
    // A slot whose old connection is still to be closed is not reused yet.
    if (!r.removed || (close_mask_ & (1u << r.index))) continue;
    r = Replica{};
    r.impl = this;
    r.index = static_cast<int>(&r - replicas_.data());
    r.endpoint = endpoint;
    r.state = ReplicaState::kFaulted;  // rebuilt once connected
    r.member = false;                  // a member once rebuilt
    r.settled = true;
    r.client = NewClient(&r);
    Status st = r.client->Connect();
    if (!st.ok()) r.last_error = st.ToString();
    // The survivors track from now on: the new replica misses writes until
    // its rebuild starts.
    if (!tracking_) need_bump_ = true;
    UpdateState();
    loop_->Wake();
    TLOG_INFO(kTag, "volume '%s': replica %s added", options_.volume_id.c_str(), address.c_str());
    return Status::Ok();
  }
  return Status::ResourceExhausted("target already has " + std::to_string(kMaxReplicas) +
                                   " replicas");
}

Status VolumeTarget::Impl::RemoveReplica(const std::string& address) {
  Replica* r = FindReplica(address);
  if (r == nullptr) return Status::NotFound("no replica " + address + " in the target");
  if (r->state == ReplicaState::kHealthy && HealthyMask() == (1u << r->index)) {
    return Status::FailedPrecondition("replica " + address + " is the last HEALTHY one");
  }
  if (r->index == rb_.dest && rb_.phase != RbPhase::kIdle) RebuildAborted("replica removed");
  bool was_healthy = r->state == ReplicaState::kHealthy;
  r->state = ReplicaState::kFaulted;
  r->removed = true;
  close_mask_ |= 1u << r->index;
  if (was_healthy) need_bump_ = true;  // the others must not be read as its equals
  UpdateState();
  loop_->Wake();
  TLOG_INFO(kTag, "volume '%s': replica %s removed", options_.volume_id.c_str(), address.c_str());
  return Status::Ok();
}

Status VolumeTarget::Impl::RebuildReplica(const std::string& address) {
  Replica* r = FindReplica(address);
  if (r == nullptr) return Status::NotFound("no replica " + address + " in the target");
  if (r->state == ReplicaState::kFaulted || r->state == ReplicaState::kStale) {
    r->next_reconnect_ns = 0;  // the next tick connects
  }
  loop_->Wake();
  return Status::Ok();
}

void VolumeTarget::Impl::SetRebuildRate(uint64_t bytes_per_sec) {
  options_.rebuild_rate_bytes_per_sec = bytes_per_sec;
  rb_.tokens = 0;
  rb_.tokens_ns = MonotonicNanos();
  rb_status_.rate_limit_bytes_per_sec = bytes_per_sec;
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
Status VolumeTarget::AddReplica(const ReplicaEndpoint& e) { return impl_->AddReplica(e); }
Status VolumeTarget::RemoveReplica(const std::string& a) { return impl_->RemoveReplica(a); }
Status VolumeTarget::RebuildReplica(const std::string& a) { return impl_->RebuildReplica(a); }
void VolumeTarget::SetRebuildRate(uint64_t bytes_per_sec) { impl_->SetRebuildRate(bytes_per_sec); }

}  // namespace tandem::target
