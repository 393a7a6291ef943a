#pragma once
// ShrinkPlan: which replicas a lower replica count removes, and whether what
// is left still holds every acknowledged write (docs/controller.md "Lowering
// the replica count"). Pure: the caller observes the replicas (the live
// target's view, or each replica's generation on its engine) and acts.
//
// The rule the keepers must satisfy follows the attach rule
// (docs/architecture.md "Who may acknowledge"): with an in-sync generation id
// recorded, the next target serves only from a replica of the in-sync set
// holding it, so one such replica must stay; with the majority rule alone,
// the next target serves the newest history among any majority of the
// remaining replicas, so at least half of them must hold every
// acknowledged write (then every majority reaches one).

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace tandem::controller {

// What the controller knows of one replica of the record.
struct ReplicaFacts {
  // Removal order: a lower standing is removed first.
  enum class Standing {
    kGone,        // not in the live target; unreachable; or never written (generation 0)
    kBehind,      // FAULTED, STALE, CONNECTING; or an older generation
    kRebuilding,  // receives writes, not rebuilt yet
    kCurrent,     // HEALTHY; or the newest generation
  };
  std::string replica_id;
  Standing standing = Standing::kGone;
  // Holds every acknowledged write: HEALTHY in the live target, or (detached)
  // at the newest generation among enough replicas to know it.
  bool holds_all = false;
  bool in_sync = false;  // listed in the record's in-sync set
  bool local = false;    // on the node the volume is attached to
};

// One replica as its engine reports it (a detached volume).
struct StoredReplica {
  std::string replica_id;
  bool reached = false;  // the engine answered with the replica
  uint64_t generation = 0;
  uint64_t generation_id = 0;
  bool in_sync = false;
};

// The facts of a detached volume's replicas from what their engines
// report. With `in_sync_generation_id` (the record's, non-zero), the
// in-sync replicas at that id hold every acknowledged write. Otherwise
// (the majority rule) the newest generation among the replicas reached
// does, provided those reached are a majority of the replicas that may
// hold data (a replica at generation 0 never served: it counts neither as
// reached nor in the count, as at attach); else FAILED_PRECONDITION.
Result<std::vector<ReplicaFacts>> FactsFromStoredReplicas(
    const std::vector<StoredReplica>& replicas, uint64_t in_sync_generation_id);

// The replicas to remove so that `wanted` remain: gone first, then behind,
// rebuilding, current; among equals not in sync before in sync, not local
// before local, the later replica of the record first. Every replica of the
// in-sync set that holds every write goes last.
std::vector<std::string> ChooseVictims(const std::vector<ReplicaFacts>& facts, uint32_t wanted);

// OK when the replicas left after removing `victims` still hold every
// acknowledged write for the next attach (see above); FAILED_PRECONDITION
// saying why not.
Status CheckKeepers(const std::vector<ReplicaFacts>& facts, const std::vector<std::string>& victims,
                    bool in_sync_recorded);

}  // namespace tandem::controller
