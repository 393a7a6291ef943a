#include "controller/shrink_plan.h"

#include <algorithm>
#include <tuple>

namespace tandem::controller {

using Standing = ReplicaFacts::Standing;

namespace {

Result<std::vector<ReplicaFacts>> FactsByMajority(const std::vector<StoredReplica>& replicas) {
  // Replicas that may hold data: all but those reached at generation 0.
  size_t may_hold = 0, reached = 0;
  uint64_t newest = 0, newest_id = 0;
  bool ids_differ = false;
  for (const auto& r : replicas) {
    if (r.reached && r.generation == 0) continue;
    ++may_hold;
    if (!r.reached) continue;
    ++reached;
    if (r.generation > newest) {
      newest = r.generation;
      newest_id = r.generation_id;
      ids_differ = false;
    } else if (r.generation == newest && r.generation_id != newest_id) {
      ids_differ = true;
    }
  }
  if (may_hold > 0 && reached * 2 <= may_hold) {
    return Status::FailedPrecondition(
        "only " + std::to_string(reached) + " of the " + std::to_string(may_hold) +
        " replicas that may hold data answered: which of them hold every acknowledged write "
        "cannot be told (a majority must answer)");
  }
  if (ids_differ) {
    return Status::FailedPrecondition("two histories at generation " + std::to_string(newest) +
                                      " (different generation ids): not guessing which to keep");
  }
  std::vector<ReplicaFacts> facts;
  for (const auto& r : replicas) {
    ReplicaFacts f;
    f.replica_id = r.replica_id;
    f.in_sync = r.in_sync;
    if (!r.reached) {
      f.standing = Standing::kGone;
    } else if (may_hold == 0) {
      // Never written: every replica reached holds all there is (nothing).
      f.standing = Standing::kCurrent;
      f.holds_all = true;
    } else if (r.generation == 0) {
      f.standing = Standing::kGone;
    } else {
      f.holds_all = r.generation == newest;
      f.standing = f.holds_all ? Standing::kCurrent : Standing::kBehind;
    }
    facts.push_back(f);
  }
  return facts;
}

}  // namespace

Result<std::vector<ReplicaFacts>> FactsFromStoredReplicas(
    const std::vector<StoredReplica>& replicas, uint64_t in_sync_generation_id) {
  if (in_sync_generation_id == 0) return FactsByMajority(replicas);
  // The in-sync rule: only an in-sync replica at the recorded id is known to
  // hold every acknowledged write; the others are kept or removed by how
  // they stand, never counted on.
  std::vector<ReplicaFacts> facts;
  for (const auto& r : replicas) {
    ReplicaFacts f;
    f.replica_id = r.replica_id;
    f.in_sync = r.in_sync;
    if (!r.reached || r.generation == 0) {
      f.standing = Standing::kGone;
    } else if (r.in_sync && r.generation_id == in_sync_generation_id) {
      f.standing = Standing::kCurrent;
      f.holds_all = true;
    } else {
      f.standing = Standing::kBehind;
    }
    facts.push_back(f);
  }
  return facts;
}

std::vector<std::string> ChooseVictims(const std::vector<ReplicaFacts>& facts, uint32_t wanted) {
  std::vector<size_t> order(facts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto key = [&](size_t i) {
    const ReplicaFacts& f = facts[i];
    // Ascending: removed first. The later replica first among equals.
    return std::make_tuple(f.in_sync && f.holds_all, static_cast<int>(f.standing), f.in_sync,
                           f.local, -static_cast<long>(i));
  };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return key(a) < key(b); });
  std::vector<std::string> victims;
  for (size_t i = 0; i + wanted < facts.size(); ++i) victims.push_back(facts[order[i]].replica_id);
  return victims;
}

Status CheckKeepers(const std::vector<ReplicaFacts>& facts, const std::vector<std::string>& victims,
                    bool in_sync_recorded) {
  size_t kept = 0, holding = 0, in_sync_holding = 0;
  for (const auto& f : facts) {
    if (std::find(victims.begin(), victims.end(), f.replica_id) != victims.end()) continue;
    ++kept;
    if (f.holds_all) ++holding;
    if (f.holds_all && f.in_sync) ++in_sync_holding;
  }
  if (kept == 0) return Status::FailedPrecondition("no replica would remain");
  if (in_sync_recorded) {
    if (in_sync_holding > 0) return Status::Ok();
    return Status::FailedPrecondition(
        "no remaining replica of the in-sync record is known to hold its generation (an "
        "in-sync replica unreachable, or none holds it): the next attach could not serve");
  }
  if (holding == 0) {
    return Status::FailedPrecondition(
        "no remaining replica is known to hold every acknowledged write");
  }
  if (holding * 2 < kept) {
    return Status::FailedPrecondition(
        "only " + std::to_string(holding) + " of the " + std::to_string(kept) +
        " remaining replicas hold every acknowledged write: a majority of them might reach "
        "none");
  }
  return Status::Ok();
}

}  // namespace tandem::controller
