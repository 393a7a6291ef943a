#pragma once
// MembershipAuthority: who may let a volume target acknowledge writes with
// fewer than a majority of its replicas (docs/architecture.md, "Who may
// acknowledge"). In production the controller (tandem.controller.v1.
// Membership, replica-engine/proto/membership.proto); the engine's client of
// it is service/controller_authority.h.
//
// By default a target acknowledges a write only when it is on every serving
// replica and those are a majority of the volume's configured replicas;
// majorities intersect, so the next attach (which must reach a majority) sees
// every acknowledged write. An authority — the controller, whose store records
// each volume's in-sync set — may shrink the in-sync set below a majority: the
// target asks it on a fault, before it acknowledges anything that skipped a
// replica, and the authority records the new set only if the target's epoch is
// still the volume's current one. A later attach is then told the in-sync set
// (TargetOptions::in_sync) and serves only from replicas that hold its
// generation id.
//
// A record names a generation id, and a rebuilt replica receives the ids of
// the generations it caught up with: so once a record exists, the target
// records every generation change first (a shrink below a majority, a clear
// once a majority serves again), and a finished rebuild grows the record.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"

namespace tandem::target {

// One in-sync record, as a target asks the authority to store it.
struct InSyncUpdate {
  std::string volume_id;
  // The target's epoch: recorded only while it is the volume's current one.
  uint64_t epoch = 0;
  // The generation number the record is for: increasing within an epoch, so
  // the authority refuses a late, older request (FAILED_PRECONDITION).
  uint64_t generation = 0;
  // The generation id the replicas below hold; 0 with no replica ids: a
  // majority serves again, the record is cleared (the majority rule alone).
  uint64_t generation_id = 0;
  std::vector<std::string> replica_ids;
  // Increases with every call of a target, and from one target to the next
  // at the same epoch (a restage: it starts from the wall clock in
  // microseconds): the authority applies calls in this order and refuses an
  // older one (ABORTED), so a call delayed past its deadline cannot undo the
  // one that replaced it.
  uint64_t seq = 0;
};

class MembershipAuthority {
 public:
  virtual ~MembershipAuthority() = default;

  // Records `update` before the target moves to generation
  // `update.generation` with fewer replicas. `done` must run exactly once, on
  // the calling target's EventLoop thread (post to it), with:
  //   OK                  recorded: the target may acknowledge with them;
  //   FAILED_PRECONDITION a newer epoch owns the volume (or a newer record
  //                       exists): the target fences;
  //   anything else       not known to be recorded (unreachable, a lost
  //                       answer, ABORTED: superseded or concurrent): the
  //                       target takes it that a record may exist, so writes
  //                       keep waiting (failing after its quorum bound) and
  //                       the next bump first moves or clears the record.
  virtual void ShrinkInSync(const InSyncUpdate& update, std::function<void(Status)> done) = 0;

  // Records a grown in-sync set at the current generation (a rebuilt replica
  // rejoined), or clears the record (generation_id 0: a majority serves).
  // Same `done` contract and answers.
  virtual void GrowInSync(const InSyncUpdate& update, std::function<void(Status)> done) = 0;
};

}  // namespace tandem::target
