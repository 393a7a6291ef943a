#include "replica-engine/volume/replica_set.h"

#include <algorithm>
#include <cstdio>

#include "common/logging.h"

namespace tandem::target {

namespace {
constexpr const char* kTag = "volume_target";

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

void ReplicaSlot::Reset() {
  Events* keep_events = events;
  int keep_index = index;
  *this = ReplicaSlot{};
  events = keep_events;
  index = keep_index;
}

ReplicaSet::ReplicaSet(ReplicaSlot::Events* events) {
  for (size_t i = 0; i < kSlots; ++i) {
    slots_[i].events = events;
    slots_[i].index = static_cast<int>(i);
    slots_[i].removed = true;
  }
}

void ReplicaSet::Configure(const std::vector<ReplicaEndpoint>& endpoints) {
  next_generation_id_ = NewId();
  target_id_ = NewId();
  for (size_t i = 0; i < kSlots; ++i) {
    ReplicaSlot& r = slots_[i];
    r.removed = i >= endpoints.size();
    if (!r.removed) r.endpoint = endpoints[i];
  }
}

ReplicaSlot* ReplicaSet::Find(const std::string& address) {
  for (ReplicaSlot& r : slots_) {
    if (!r.removed && r.Address() == address) return &r;
  }
  return nullptr;
}

uint32_t ReplicaSet::HealthyMask() const {
  uint32_t m = 0;
  for (const ReplicaSlot& r : slots_) {
    if (!r.removed && r.state == ReplicaState::kHealthy) m |= r.bit();
  }
  return m;
}

uint32_t ReplicaSet::WriteMask() const {
  uint32_t m = 0;
  for (const ReplicaSlot& r : slots_) {
    if (!r.removed && (r.state == ReplicaState::kHealthy || r.state == ReplicaState::kRebuilding)) {
      m |= r.bit();
    }
  }
  return m;
}

uint32_t ReplicaSet::MemberMask() const {
  uint32_t m = 0;
  for (const ReplicaSlot& r : slots_) {
    if (!r.removed && r.member) m |= r.bit();
  }
  return m;
}

uint32_t ReplicaSet::AllMask() const {
  uint32_t m = 0;
  for (const ReplicaSlot& r : slots_) {
    if (!r.removed) m |= r.bit();
  }
  return m;
}

bool ReplicaSet::AckAllowed(uint32_t serving) const {
  return Majority(serving) || RecordedFor(serving);
}

bool ReplicaSet::Majority(uint32_t serving) const {
  return 2 * __builtin_popcount(serving & MemberMask()) > MemberCount();
}

bool ReplicaSet::RecordedFor(uint32_t serving) const {
  return in_sync_mask_ != 0 && in_sync_id_ == next_generation_id_ &&
         (serving & in_sync_mask_) == in_sync_mask_;
}

uint64_t ReplicaSet::NewId() {
  uint64_t id = 0;
  while (id == 0) id = rng_();
  return id;
}

bool ReplicaSet::InLineage(uint64_t id) const {
  return id == 0 || id == generation_id_ ||
         std::find(history_.begin(), history_.end(), id) != history_.end();
}

void ReplicaSet::EncodeCurrentRecord(std::string* out) const {
  out->clear();
  if (generation_id_ == 0) return;  // an older replica set: no record to keep
  protocol::GenerationRecord rec;
  rec.id = generation_id_;
  rec.history = history_;
  (void)protocol::EncodeGenerationRecord(rec, out);
}

void ReplicaSet::EncodeNextRecord(std::string* out) const {
  protocol::GenerationRecord rec;
  rec.id = next_generation_id_;
  if (generation_id_ != 0) rec.history.push_back(generation_id_);
  for (uint64_t h : history_) {
    if (rec.history.size() >= protocol::kMaxGenerationHistory) break;
    rec.history.push_back(h);
  }
  (void)protocol::EncodeGenerationRecord(rec, out);
}

void ReplicaSet::AdoptBump(uint64_t generation, const std::string& record) {
  generation_ = generation;
  protocol::GenerationRecord rec;
  if (protocol::DecodeGenerationRecord(record, &rec).ok()) {
    generation_id_ = rec.id;
    history_ = std::move(rec.history);
  }
  next_generation_id_ = NewId();
}

void ReplicaSet::NoteTracking(uint64_t since) {
  tracking_ = true;
  tracking_since_ = std::max(tracking_since_, since);
}

// Generations are identified by random ids (DRBD's data-generation UUIDs),
// not only counted: a replica serves only if it holds the newest history
// among those reached, and the controller's required id when it gave one.
bool ReplicaSet::ChooseNewest(const InSyncRequirement& in_sync, const std::string& volume_id,
                              std::string* error) {
  const uint64_t required = in_sync.generation_id;
  uint32_t cand = 0;
  std::string reached;
  for (const ReplicaSlot& r : slots_) {
    if (r.removed || r.state != ReplicaState::kConnecting) continue;
    reached += " " + r.Address() + "(" + r.replica_id + " generation " +
               std::to_string(r.generation) + " id " + Hex(r.info.generation_id) + ")";
    if (required == 0 || Holds(r.info, required)) cand |= r.bit();
  }
  auto stale_all = [&] {
    for (ReplicaSlot& r : slots_) {
      if (r.removed || r.state != ReplicaState::kConnecting) continue;
      r.state = ReplicaState::kStale;
      ScheduleClose(r);
    }
  };
  if (cand == 0) {
    std::string ids;
    for (const std::string& id : in_sync.replica_ids) ids += " " + id;
    *error = "UNAVAILABLE: no reachable replica holds generation id " + Hex(required) +
             " (in-sync replicas:" + (ids.empty() ? " not named" : ids) + "); reached:" + reached;
    stale_all();
    return false;
  }
  uint64_t top = 0;
  for (const ReplicaSlot& r : slots_) {
    if (cand & r.bit()) top = std::max(top, r.generation);
  }
  uint64_t top_id = 0;
  for (const ReplicaSlot& r : slots_) {
    if (!(cand & r.bit()) || r.generation != top || r.info.generation_id == 0) continue;
    if (top_id != 0 && r.info.generation_id != top_id) {
      *error = "replicas at generation " + std::to_string(top) +
               " hold different histories; refusing to choose:" + reached;
      stale_all();
      return false;
    }
    top_id = r.info.generation_id;
  }
  generation_ = top;
  generation_id_ = top_id;
  for (ReplicaSlot& r : slots_) {
    if (r.removed || r.state != ReplicaState::kConnecting) continue;
    if ((cand & r.bit()) && r.generation == top && r.info.generation_id == top_id) {
      r.state = ReplicaState::kHealthy;
      history_ = r.info.generation_history;
      continue;
    }
    // Missed writes the others have (or a history nobody vouches for):
    // never read, rebuilt before it serves.
    r.state = ReplicaState::kStale;
    ScheduleClose(r);
    TLOG_WARN(kTag, "volume '%s': replica %s (generation %llu id %s) is behind %llu id %s: STALE",
              volume_id.c_str(), r.Address().c_str(), static_cast<unsigned long long>(r.generation),
              Hex(r.info.generation_id).c_str(), static_cast<unsigned long long>(top),
              Hex(top_id).c_str());
  }
  return true;
}

void ReplicaSet::FaultAllForFencing() {
  for (ReplicaSlot& r : slots_) {
    if (r.removed) continue;
    if (r.state == ReplicaState::kHealthy || r.state == ReplicaState::kRebuilding) {
      r.state = ReplicaState::kFaulted;
    }
    ScheduleClose(r);
  }
}

}  // namespace tandem::target
