// Attach: connecting to the replicas, choosing the ones that serve (a
// majority, or the controller's in-sync record; the newest history among
// them), and the first generation bump. Replicas that come back later are
// queued for a rebuild here too.

#include <algorithm>

#include "common/logging.h"
#include "replica-engine/volume/volume_target_impl.h"

namespace tandem::target {

namespace {
constexpr const char* kTag = "volume_target";
}  // namespace

void VolumeTargetImpl::OnReplicaConnected(ReplicaSlot* r, const protocol::ReplicaInfo& info) {
  r->replica_id = info.replica_id;
  r->generation = info.generation;
  r->info = info;
  if (state_ != TargetState::kStarting) {
    // A FAULTED or STALE replica reconnected (or one was added): it is
    // rebuilt before it serves. Until its rebuild starts it gets nothing.
    r->last_error.clear();
    // Larger is fine: replicas grow before their target (online expansion).
    if (info.size < size_ || info.block_size != block_size_) {
      r->last_error = "replica size " + std::to_string(info.size) + " / block " +
                      std::to_string(info.block_size) + " does not match the volume";
      replicas_.ScheduleClose(*r);
    } else if (info.generation > replicas_.generation()) {
      // Only a newer target could have moved it past us.
      r->last_error = "replica generation " + std::to_string(info.generation) + " is ahead of " +
                      std::to_string(replicas_.generation());
      replicas_.ScheduleClose(*r);
    } else {
      TLOG_INFO(kTag, "volume '%s': replica %s is back (generation %llu), queued for rebuild",
                options_.volume_id.c_str(), r->Address().c_str(),
                static_cast<unsigned long long>(info.generation));
    }
    loop_->Wake();
    return;
  }
  r->settled = true;
  r->state = ReplicaState::kConnecting;  // HEALTHY or STALE once all settled
  // A replica larger than the volume was grown for an expansion the caller
  // has not applied to the target yet: it serves the given size.
  if (info.block_size == 0 || (size_ != 0 && info.size < size_)) {
    r->state = ReplicaState::kFaulted;
    r->last_error = "replica size " + std::to_string(info.size) + " is below the volume size " +
                    std::to_string(size_);
    replicas_.ScheduleClose(*r);
  } else if (size_ == 0) {
    size_ = info.size;
    block_size_ = info.block_size;
  } else {
    block_size_ = std::max(block_size_, info.block_size);
  }
  MaybeFinishStart();
}

void VolumeTargetImpl::OnReplicaDisconnected(ReplicaSlot* r, const Status& why) {
  if (why.code() == StatusCode::kFailedPrecondition &&
      why.message().find("STALE_EPOCH") != std::string::npos) {
    r->state = ReplicaState::kFaulted;
    r->last_error = why.ToString();
    r->settled = true;
    Fence("replica " + r->Address() + " has accepted a newer epoch");
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

void VolumeTargetImpl::MaybeFinishStart() {
  if (state_ != TargetState::kStarting || start_chosen_) return;
  for (const ReplicaSlot& r : replicas_) {
    if (!r.settled) return;
  }
  uint64_t top = 0;
  bool any = false;
  for (const ReplicaSlot& r : replicas_) {
    if (r.state == ReplicaState::kConnecting) {
      top = std::max(top, r.generation);
      any = true;
    }
  }
  replicas_.set_generation(top);
  // An attach must reach a majority of the configured replicas (or be told
  // by the controller which replicas are in sync): majorities intersect, so
  // the newest history among them has every acknowledged write. A replica at
  // generation 0 never served (every attach bumps before the first write):
  // added and not rebuilt yet, it holds no acknowledged write, so it counts
  // neither as reached nor in the denominator (reaching a stale replica and
  // two empty ones of five is not a majority). A volume no replica of which
  // holds data yet attaches only with every replica reached: an unreached one
  // may hold what the reached empty ones never had.
  int members = replicas_.MemberCount();
  int reached = 0, empty = 0;
  for (const ReplicaSlot& r : replicas_) {
    if (r.removed || r.state != ReplicaState::kConnecting) continue;
    ++(r.generation == 0 ? empty : reached);
  }
  int configured = members - empty;
  bool never_written = top == 0 && configured == 0;
  if (any && options_.in_sync.generation_id == 0 && !never_written && 2 * reached <= configured) {
    last_error_ = "reached " + std::to_string(reached) + " of " + std::to_string(configured) +
                  " replicas holding data (" + std::to_string(empty) +
                  " more reached hold none: never rebuilt); an attach needs a majority (or "
                  "the controller's in-sync record)";
    for (ReplicaSlot& r : replicas_) {
      if (!r.removed && r.state == ReplicaState::kConnecting) {
        r.state = ReplicaState::kStale;
        replicas_.ScheduleClose(r);
      }
    }
    any = false;
  }
  if (any && !replicas_.ChooseNewest(options_.in_sync, options_.volume_id, &last_error_)) {
    any = false;
  }
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

void VolumeTargetImpl::FinishStart() {
  if (state_ != TargetState::kStarting) return;  // shut down meanwhile
  if (!options_.in_sync.replica_ids.empty() && options_.in_sync.generation_id != 0) {
    // The controller's in-sync record may acknowledge below a majority, but
    // only while every replica it names is serving.
    uint32_t mask = 0;
    size_t found = 0;
    for (const std::string& id : options_.in_sync.replica_ids) {
      for (const ReplicaSlot& r : replicas_) {
        if (!r.removed && r.state == ReplicaState::kHealthy && r.replica_id == id) {
          mask |= r.bit();
          ++found;
          break;
        }
      }
    }
    // Reported only: acknowledging below a majority needs a record of the
    // next bump's id (ReplicaSet::AckAllowed), which the authority gives.
    if (found == options_.in_sync.replica_ids.size()) {
      replicas_.set_in_sync(mask, options_.in_sync.generation_id);
    }
  }
  // The authority holds a record: the first bump moves it (or clears it).
  record_known_ = options_.authority != nullptr && options_.in_sync.generation_id != 0;
  state_ = TargetState::kDegraded;  // UpdateState() leaves kStarting alone
  UpdateState();
  for (const ReplicaSlot& r : replicas_) {
    if (r.state != ReplicaState::kHealthy || !r.info.tracking_dirty) continue;
    replicas_.NoteTracking(r.info.dirty_since_generation);
  }
  // Every attach moves the serving replicas to a new generation before the
  // first write, so a replica at generation 0 has never served (it is never
  // rebuilt incrementally) and one that is not with us now is behind. If one
  // is missing, the survivors track dirty regions from this bump on.
  need_bump_ = true;
  TLOG_INFO(kTag, "volume '%s' epoch %llu: %s, generation %llu, size %llu",
            options_.volume_id.c_str(), static_cast<unsigned long long>(options_.epoch),
            TargetStateName(state_), static_cast<unsigned long long>(replicas_.generation()),
            static_cast<unsigned long long>(size_));
  loop_->Wake();
}

}  // namespace tandem::target
