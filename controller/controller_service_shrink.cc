// ControllerService: ControllerModifyVolume lowering `replicas` (online
// shrink; docs/controller.md "Lowering the replica count" has the argument).
//
// Like a joint-configuration change, the live target's quorum changes
// before the record's and only gets stricter in between:
// 1. observe the replicas (the live target's view when published, else each
//    replica's generation on its engine) and choose the victims
//    (shrink_plan.h), refusing when the rest would not hold every
//    acknowledged write;
// 2. published: RemoveTargetReplica for each victim (the target keeps the
//    removed one's place in its majority's denominator, so from then on it
//    acknowledges only what a majority of the smaller set, or the recorded
//    in-sync set, holds), then observe the target again and check the
//    keepers with what it says now;
// 3. one compare-and-swap of the record: the victims leave `replicas` for
//    `retired_replicas`, the in-sync set is intersected with the keepers,
//    previous_in_sync is dropped (only once the target's recorded in-sync
//    shrink, if any, has settled: WaitForShrinkToSettle, else UNAVAILABLE);
// 4. DeleteReplica of each victim on its engine (retired ones the reconciler
//    deletes when their node answers again).
// Every step is idempotent and a retry resumes: a victim already out of the
// target is chosen first again, and once recorded the count is reached.

#include <algorithm>
#include <future>

#include "common/logging.h"
#include "controller/controller_service.h"
#include "controller/replica_changes.h"
#include "controller/shrink_plan.h"

namespace tandem::controller {

namespace {
constexpr const char* kTag = "controller";

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

bool InSync(const rec::VolumeRecord& record, const std::string& id) {
  return std::any_of(record.in_sync_replica_ids().begin(), record.in_sync_replica_ids().end(),
                     [&](const std::string& x) { return x == id; });
}
}  // namespace

// The live target's view of each replica of the record (matched by the
// replica id it reported, else by its node's data address), and in
// `addresses` the target's address of each replica it holds.
Result<std::vector<ReplicaFacts>> ControllerService::LiveFacts(
    const rec::VolumeRecord& record, std::map<std::string, std::string>* addresses) {
  const std::string& node = record.attachment().node_id();
  std::string engine = EngineAddress(node);
  if (engine.empty()) return Status::Unavailable("node " + node + " is not registered");
  auto target = engines_->GetTarget(engine, record.volume_id(), options_.engine_timeout);
  if (target.status().code() == StatusCode::kNotFound) {
    return Status::FailedPrecondition(
        "volume " + record.volume_id() + " is published on node " + node +
        " but its target is not running there (not staged yet, or its engine restarted): "
        "lower the replica count once it runs or the volume is unpublished");
  }
  if (!target.ok()) return target.status().WithContext("GetTarget on node " + node);
  TANDEM_RETURN_IF_ERROR(CheckAttachmentTarget(*target, record));
  std::vector<ReplicaFacts> facts;
  addresses->clear();
  for (const auto& r : record.replicas()) {
    ReplicaFacts f;
    f.replica_id = r.replica_id();
    f.in_sync = InSync(record, r.replica_id());
    f.local = r.node_id() == node;
    auto rn = nodes_->Get(r.node_id());
    std::string data = rn ? rn->info.data_address() : "";
    for (const auto& tr : target->replicas()) {
      bool same = tr.replica_id().empty() ? (!data.empty() && tr.address() == data)
                                          : tr.replica_id() == r.replica_id();
      if (!same) continue;
      (*addresses)[r.replica_id()] = tr.address();
      switch (tr.state()) {
        case epb::REPLICA_STATE_HEALTHY:
          f.standing = ReplicaFacts::Standing::kCurrent;
          f.holds_all = true;
          break;
        case epb::REPLICA_STATE_REBUILDING:
          f.standing = ReplicaFacts::Standing::kRebuilding;
          break;
        default:
          f.standing = ReplicaFacts::Standing::kBehind;
      }
    }
    facts.push_back(f);
  }
  return facts;
}

// A detached volume: each replica's generation as its engine reports it.
Result<std::vector<ReplicaFacts>> ControllerService::StoredFacts(const rec::VolumeRecord& record) {
  std::vector<std::future<StoredReplica>> calls;
  for (const auto& r : record.replicas()) {
    std::string engine = EngineAddress(r.node_id());
    bool in_sync = InSync(record, r.replica_id());
    calls.push_back(std::async(std::launch::async, [this, engine, in_sync, &record, r] {
      StoredReplica s;
      s.replica_id = r.replica_id();
      s.in_sync = in_sync;
      if (engine.empty()) return s;
      auto got = engines_->GetReplica(engine, record.volume_id(), options_.engine_timeout);
      if (!got.ok()) return s;
      s.reached = true;
      s.generation = got->generation();
      s.generation_id = got->generation_id();
      return s;
    }));
  }
  std::vector<StoredReplica> stored;
  for (auto& c : calls) stored.push_back(c.get());
  return FactsFromStoredReplicas(stored, record.in_sync_generation_id());
}

Status ControllerService::ShrinkReplicas(Versioned<rec::VolumeRecord>* v, uint32_t wanted) {
  const rec::VolumeRecord record = v->record;
  const std::string& id = record.volume_id();
  const bool published = record.has_attachment();
  const bool in_sync = record.in_sync_generation_id() != 0;
  std::map<std::string, std::string> addresses;
  auto facts = published ? LiveFacts(record, &addresses) : StoredFacts(record);
  TANDEM_RETURN_IF_ERROR(facts.status().WithContext("volume " + id));
  std::vector<std::string> victims = ChooseVictims(*facts, wanted);
  TANDEM_RETURN_IF_ERROR(
      CheckKeepers(*facts, victims, in_sync)
          .WithContext("volume " + id + ": lowering replicas to " + std::to_string(wanted)));
  if (published) {
    // Step 3 drops the record before an unsettled in-sync shrink, so only
    // once that one reached its survivors: not started at all before then.
    TANDEM_RETURN_IF_ERROR(WaitForShrinkToSettle(record).WithContext("volume " + id));
    // 2. The live target first: its majority's denominator stays, so it only
    //    gets stricter until the record follows.
    std::string engine = EngineAddress(record.attachment().node_id());
    for (const std::string& victim : victims) {
      auto a = addresses.find(victim);
      if (a == addresses.end()) continue;  // not in the target (any more)
      Status st = engines_->RemoveTargetReplica(engine, id, a->second, options_.engine_timeout);
      if (!st.ok()) {
        return st.WithContext("RemoveTargetReplica " + victim + " on node " +
                              record.attachment().node_id());
      }
    }
    // What the target holds now decides (a keeper may have faulted since).
    TANDEM_ASSIGN_OR_RETURN(auto now, LiveFacts(record, &addresses));
    for (const std::string& victim : victims) {
      if (addresses.count(victim) != 0) {
        return Status::Unavailable("volume " + id + ": replica " + victim +
                                   " is still in the live target; retry");
      }
    }
    TANDEM_RETURN_IF_ERROR(CheckKeepers(now, victims, in_sync)
                               .WithContext("volume " + id + ": after removing " +
                                            std::to_string(victims.size()) +
                                            " replica(s) from the live target (retry)"));
  }
  TANDEM_RETURN_IF_ERROR(RecordRemovedReplicas(v, victims));
  DeleteRemovedReplicas(v, victims);
  std::string names;
  for (const auto& x : victims) names += " " + x;
  TLOG_INFO(kTag, "ControllerModifyVolume %s: %u replica(s), removed%s%s", id.c_str(),
            v->record.replica_count(), names.c_str(),
            published ? " (from the live target first)" : "");
  return Status::Ok();
}

// 3. The record follows, by compare-and-swap (the membership authority
// writes the in-sync fields at any time: a conflict re-reads and re-applies).
Status ControllerService::RecordRemovedReplicas(Versioned<rec::VolumeRecord>* v,
                                                const std::vector<std::string>& victims) {
  const std::string id = v->record.volume_id();
  for (int attempt = 0; attempt < 8; ++attempt) {
    rec::VolumeRecord record = v->record;
    auto* replicas = record.mutable_replicas();
    for (int i = replicas->size() - 1; i >= 0; --i) {
      if (!Contains(victims, replicas->Get(i).replica_id())) continue;
      *record.add_retired_replicas() = replicas->Get(i);
      replicas->DeleteSubrange(i, 1);
    }
    record.set_replica_count(static_cast<uint32_t>(record.replicas_size()));
    auto* ids = record.mutable_in_sync_replica_ids();
    ids->erase(std::remove_if(ids->begin(), ids->end(),
                              [&](const std::string& x) { return Contains(victims, x); }),
               ids->end());
    if (record.in_sync_generation_id() != 0 && ids->empty()) {
      return Status::FailedPrecondition("volume " + id +
                                        ": the in-sync record now names only replicas being "
                                        "removed; nothing recorded (retry)");
    }
    // A fallback to the record before an unsettled shrink (publish) assumes
    // the replica set it was recorded for: not offered across a removal. So
    // the removal is recorded only once the target's recorded shrink reached
    // a surviving in-sync replica (then no fallback is ever needed); until
    // then the record stays as it is (the state of a crash between steps 2
    // and 3, safe) and the caller retries.
    TANDEM_RETURN_IF_ERROR(WaitForShrinkToSettle(record).WithContext("volume " + id));
    record.clear_previous_in_sync();
    auto updated = records_->UpdateVolume(record, v->mod_revision);
    if (updated.ok()) {
      v->mod_revision = *updated;
      v->record = std::move(record);
      return Status::Ok();
    }
    if (updated.status().code() != StatusCode::kAborted) return updated.status();
    TANDEM_ASSIGN_OR_RETURN(auto fresh, records_->GetVolume(id));
    if (!fresh) return Status::NotFound("volume " + id + " is gone");
    *v = std::move(*fresh);
  }
  return Status::Aborted("volume " + id + " changed concurrently; retry");
}

// 4. The victims' data goes; those deleted leave the retired list (the
// others stay there for the reconciler).
void ControllerService::DeleteRemovedReplicas(Versioned<rec::VolumeRecord>* v,
                                              const std::vector<std::string>& victims) {
  std::vector<std::string> deleted;
  for (const auto& r : v->record.retired_replicas()) {
    if (!Contains(victims, r.replica_id())) continue;
    std::string engine = EngineAddress(r.node_id());
    Status st = engine.empty() ? Status::Unavailable("node unknown")
                               : engines_->DeleteReplica(engine, v->record.volume_id(),
                                                         options_.engine_timeout);
    if (st.ok()) {
      deleted.push_back(r.replica_id());
    } else {
      TLOG_WARN(kTag, "volume %s: removed replica %s not deleted yet on %s (%s): retired",
                v->record.volume_id().c_str(), r.replica_id().c_str(), r.node_id().c_str(),
                st.ToString().c_str());
    }
  }
  for (int attempt = 0; attempt < 8 && !deleted.empty(); ++attempt) {
    rec::VolumeRecord record = v->record;
    auto* retired = record.mutable_retired_replicas();
    for (int i = retired->size() - 1; i >= 0; --i) {
      if (Contains(deleted, retired->Get(i).replica_id())) retired->DeleteSubrange(i, 1);
    }
    auto updated = records_->UpdateVolume(record, v->mod_revision);
    if (updated.ok()) {
      v->mod_revision = *updated;
      v->record = std::move(record);
      return;
    }
    auto fresh = records_->GetVolume(v->record.volume_id());
    if (updated.status().code() != StatusCode::kAborted || !fresh.ok() || !*fresh) return;
    *v = std::move(**fresh);
  }
}

}  // namespace tandem::controller
