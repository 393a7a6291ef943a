#pragma once
// ReplicaSet: the replicas of one VolumeTarget and what the mirror knows about
// them (docs/architecture.md "Volume target" and "Who may acknowledge"):
// - one fixed slot per replica (ReplicaSlot: state, connection, counters);
// - the masks the I/O path fans out over (HEALTHY, HEALTHY + REBUILDING,
//   configured members, every slot in use);
// - the acknowledgement rule, AckAllowed(), the one place it lives;
// - the generation, its random id and the history of ids before it (DRBD's
//   data-generation UUIDs), and whether the replicas track dirty regions;
// - the choice, at attach, of the replicas that hold the newest history;
// - fencing: this target's id (one owner per epoch) and the fault of every
//   serving replica when a newer epoch takes over.
//
// No I/O here: the set holds each replica's ReplicaChannel but the target
// decides what to send. Slots never move (their channels hold them as
// listeners). Threading: the target's loop thread only.

#include <array>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "replica-engine/client/replica_channel.h"
#include "replica-engine/volume/volume_target.h"

namespace tandem::target {

// One replica connection: its ReplicaChannel (TCP, or the local replica
// in-process) and what the mirror knows of it.
struct ReplicaSlot final : client::ReplicaChannel::Listener {
  // Who hears about the slot's connection (the target).
  class Events {
   public:
    virtual void OnReplicaConnected(ReplicaSlot* r, const protocol::ReplicaInfo& info) = 0;
    virtual void OnReplicaDisconnected(ReplicaSlot* r, const Status& why) = 0;

   protected:
    ~Events() = default;
  };

  Events* events = nullptr;
  int index = 0;
  ReplicaEndpoint endpoint;
  std::unique_ptr<client::ReplicaChannel> channel;
  ReplicaState state = ReplicaState::kConnecting;
  bool settled = false;  // connected or failed during start-up
  bool removed = false;  // RemoveReplica(): slot unused
  // Counts toward the majority: listed at create, or added and since
  // rebuilt to HEALTHY (a replica that never held the volume cannot make a
  // quorum lose anything, so adding one does not stall writes).
  bool member = true;
  // This target saw it serve and faulted it itself: the fault handling
  // (dirty marking of every partial write) covers what it may differ in.
  // A replica STALE at attach, or added, was not: what the last target had
  // in flight is in the activity logs only.
  bool faulted_here = false;
  uint64_t generation = 0;
  protocol::ReplicaInfo info;  // from the last handshake
  uint64_t next_reconnect_ns = 0;
  std::string replica_id;
  uint64_t reads = 0, writes = 0, errors = 0;
  std::string last_error;

  uint32_t bit() const { return 1u << index; }
  std::string Address() const { return endpoint.host + ":" + std::to_string(endpoint.port); }
  // Empties the slot for a new replica (the old channel is destroyed); keeps
  // its index and listener.
  void Reset();

  void OnConnected(const protocol::ReplicaInfo& i) override { events->OnReplicaConnected(this, i); }
  void OnDisconnected(const Status& why) override { events->OnReplicaDisconnected(this, why); }
};

class ReplicaSet {
 public:
  static constexpr size_t kSlots = VolumeTarget::kMaxReplicas;

  // Every slot starts removed; Configure() fills the first ones.
  explicit ReplicaSet(ReplicaSlot::Events* events);
  ReplicaSet(const ReplicaSet&) = delete;
  ReplicaSet& operator=(const ReplicaSet&) = delete;

  // Puts `endpoints` (at most kSlots) in the first slots; the rest stay
  // removed. Draws this target's id and the next generation's id.
  void Configure(const std::vector<ReplicaEndpoint>& endpoints);

  ReplicaSlot& operator[](int index) { return slots_[index]; }
  const ReplicaSlot& operator[](int index) const { return slots_[index]; }
  ReplicaSlot* begin() { return slots_.data(); }
  ReplicaSlot* end() { return slots_.data() + kSlots; }
  const ReplicaSlot* begin() const { return slots_.data(); }
  const ReplicaSlot* end() const { return slots_.data() + kSlots; }
  // The slot in use with this "host:port"; nullptr if none.
  ReplicaSlot* Find(const std::string& address);

  // Masks over slot indexes (bit i = slot i).
  uint32_t HealthyMask() const;
  // HEALTHY and REBUILDING: the replicas every write goes to.
  uint32_t WriteMask() const;
  uint32_t AllMask() const;     // every slot not removed
  uint32_t MemberMask() const;  // the configured replicas the majority counts
  // The majority's denominator: the members and the vacated places.
  int MemberCount() const { return __builtin_popcount(MemberMask()) + vacated_; }

  // A member removed from the live target (the reconciler's replacement)
  // keeps its place in the count, as not serving, until a replica added since
  // is rebuilt and takes it (Promote): the controller's record lists the
  // removed one until it swaps in the new one, and a majority of the record
  // must hold every acknowledged write, so the target never lowers its
  // denominator by removing a member (docs/architecture.md "Who may
  // acknowledge").
  void Vacate(ReplicaSlot& r) {
    if (r.member && !r.removed) ++vacated_;
    r.member = false;
  }
  // A rebuilt replica becomes a member, in a vacated place if there is one.
  void Promote(ReplicaSlot& r) {
    if (!r.member && vacated_ > 0) --vacated_;
    r.member = true;
  }

  // Clients to Close() outside their own callbacks (the target's BeforeWait).
  void ScheduleClose(const ReplicaSlot& r) { close_mask_ |= r.bit(); }
  bool ClosePending(const ReplicaSlot& r) const { return (close_mask_ & r.bit()) != 0; }
  // The lowest slot scheduled for closing, now unscheduled; -1 when none.
  int TakeNextClose() {
    if (close_mask_ == 0) return -1;
    int i = __builtin_ctz(close_mask_);
    close_mask_ &= close_mask_ - 1;
    return i;
  }

  // --- Who may acknowledge.
  // May the next bump leave only the replicas of `serving`, and writes on
  // them be acknowledged: a majority of the configured replicas, or a
  // superset of the in-sync set the authority recorded for the very
  // generation id that bump will use (a record of an older id does not do:
  // a replica rebuilt since may hold that id and miss what follows).
  bool AckAllowed(uint32_t serving) const;
  bool Majority(uint32_t serving) const;
  // The authority recorded a subset of `serving` for the next bump's id.
  bool RecordedFor(uint32_t serving) const;
  // The replicas the controller recorded as in sync (TargetOptions::in_sync,
  // all HEALTHY at start, or the authority's last answer), and the generation
  // id they were recorded at; 0: majority rule only.
  uint32_t in_sync_mask() const { return in_sync_mask_; }
  void set_in_sync(uint32_t mask, uint64_t recorded_id) {
    in_sync_mask_ = mask;
    in_sync_id_ = mask == 0 ? 0 : recorded_id;
  }

  // --- Generations.
  uint64_t generation() const { return generation_; }
  void set_generation(uint64_t g) { generation_ = g; }
  uint64_t generation_id() const { return generation_id_; }
  // The id the next bump will use (promised to the authority before it runs).
  uint64_t next_generation_id() const { return next_generation_id_; }
  uint64_t target_id() const { return target_id_; }
  void set_target_id(uint64_t id) { target_id_ = id; }  // before the first HELLO
  // True when `id` is this target's generation id or in its history (a
  // replica at that id has a prefix of our history; 0 = unknown: true).
  bool InLineage(uint64_t id) const;
  // {generation id, history} for a SET_GENERATION that keeps the current
  // generation (rebuild finish, untrack); empty for an older replica set
  // without ids.
  void EncodeCurrentRecord(std::string* out) const;
  // {next generation id, ours on the front of the history} for a bump.
  void EncodeNextRecord(std::string* out) const;
  // A bump to `generation` with the record of EncodeNextRecord() is done:
  // it becomes ours, and a fresh id is drawn for the next one.
  void AdoptBump(uint64_t generation, const std::string& record);

  // Whether the replicas record dirty regions, and since which generation.
  bool tracking() const { return tracking_; }
  uint64_t tracking_since() const { return tracking_since_; }
  // Tracking is on since `since` (raised to the newest of those reported).
  void NoteTracking(uint64_t since);
  void StopTracking() {
    tracking_ = false;
    tracking_since_ = 0;
  }

  // --- Attach.
  // Among the slots still kConnecting (reached at start-up), makes HEALTHY
  // those holding the newest history (the highest generation, one id, and
  // `in_sync.generation_id` when given) and STALE the others, and takes
  // that history as ours. False (with `error`) when none can serve: every
  // reached slot is then STALE.
  bool ChooseNewest(const InSyncRequirement& in_sync, const std::string& volume_id,
                    std::string* error);

  // --- Fencing.
  // A newer epoch owns the volume: every serving replica is FAULTED and every
  // connection scheduled for closing.
  void FaultAllForFencing();

 private:
  uint64_t NewId();

  std::array<ReplicaSlot, kSlots> slots_;
  uint32_t close_mask_ = 0;
  int vacated_ = 0;  // removed members whose place no rebuilt replica took yet
  uint32_t in_sync_mask_ = 0;
  std::mt19937_64 rng_{std::random_device{}()};
  uint64_t generation_ = 0;
  uint64_t generation_id_ = 0;
  std::vector<uint64_t> history_;  // ids before generation_id_, newest first
  uint64_t next_generation_id_ = 0;
  uint64_t in_sync_id_ = 0;  // the generation id in_sync_mask_ was recorded at
  uint64_t target_id_ = 0;   // random, sent in HELLO: one owner per epoch
  bool tracking_ = false;
  uint64_t tracking_since_ = 0;
};

}  // namespace tandem::target
