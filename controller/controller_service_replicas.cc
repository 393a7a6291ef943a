// ControllerService: ControllerModifyVolume's `replicas` (a live volume's
// replica count, docs/controller.md).
//
// Grow: new replicas are placed on other nodes (the volume's nodes excluded,
// its requisite topology kept), created with the volume's secret and, when
// published, added to the live target (AddTargetReplica: it receives every
// write at once and is rebuilt online; it counts toward the target's quorum
// only once rebuilt). A detached volume's next attach rebuilds them (its
// replicas at generation 0 are never served).
//
// Shrink: replicas outside the in-sync record go first, the attached node's
// own replica last; never below one, never the last replica of the in-sync
// record. When published the live target drops them first
// (RemoveTargetReplica refuses the last HEALTHY one), then the record, then
// the replicas are deleted on their engines (kept as retired for the
// reconciler when an engine does not answer).

#include <algorithm>
#include <future>

#include "common/logging.h"
#include "controller/candidates.h"
#include "controller/controller_service.h"
#include "controller/replica_changes.h"

namespace tandem::controller {

namespace {
constexpr const char* kTag = "controller";

bool InSync(const rec::VolumeRecord& record, const std::string& replica_id) {
  if (record.in_sync_generation_id() == 0) return false;
  const auto& ids = record.in_sync_replica_ids();
  return std::find(ids.begin(), ids.end(), replica_id) != ids.end();
}
}  // namespace

Status ControllerService::ChangeReplicaCount(Versioned<rec::VolumeRecord>* v, uint32_t wanted) {
  const uint32_t have = static_cast<uint32_t>(v->record.replicas_size());
  if (wanted == have) return Status::Ok();
  if (wanted > have) return GrowReplicas(v, wanted - have);
  return ShrinkReplicas(v, have - wanted);
}

Status ControllerService::GrowReplicas(Versioned<rec::VolumeRecord>* v, uint32_t count) {
  rec::VolumeRecord record = v->record;
  TANDEM_ASSIGN_OR_RETURN(auto candidates, CollectCandidates(nodes_, records_));
  TANDEM_ASSIGN_OR_RETURN(auto chosen,
                          Place(MoreReplicas(record, count, options_.overcommit), candidates));
  std::string attached_engine =
      record.has_attachment() ? EngineAddress(record.attachment().node_id()) : "";
  for (const std::string& node_id : chosen) {
    auto node = nodes_->Get(node_id);
    if (!node || node->info.data_address().empty()) {
      return Status::Unavailable("node " + node_id + " has no known data address");
    }
    TANDEM_ASSIGN_OR_RETURN(
        auto added, CreateNextReplica(engines_, record, node_id, node->record.engine_address(),
                                      options_.engine_timeout));
    if (!attached_engine.empty()) {
      Status st =
          AddToLiveTarget(engines_, attached_engine, record.volume_id(), node->info.data_address(),
                          node_id == record.attachment().node_id(), options_.engine_timeout);
      if (!st.ok()) return st.WithContext("AddTargetReplica on " + record.attachment().node_id());
    }
    *record.add_replicas() = added;
    record.set_next_replica_index(record.next_replica_index() + 1);
  }
  record.set_replica_count(static_cast<uint32_t>(record.replicas_size()));
  TANDEM_ASSIGN_OR_RETURN(v->mod_revision, records_->UpdateVolume(record, v->mod_revision));
  v->record = std::move(record);
  TLOG_INFO(kTag, "ControllerModifyVolume %s: %u replica(s)%s", v->record.volume_id().c_str(),
            v->record.replica_count(),
            v->record.has_attachment() ? " (added to the live target: rebuilding online)" : "");
  return Status::Ok();
}

Status ControllerService::ShrinkReplicas(Versioned<rec::VolumeRecord>* v, uint32_t count) {
  rec::VolumeRecord record = v->record;
  const std::string attached = record.has_attachment() ? record.attachment().node_id() : "";
  // Removal order: outside the in-sync record first, the attached node's
  // replica last, then from the end.
  std::vector<int> order;
  for (int i = record.replicas_size() - 1; i >= 0; --i) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    auto rank = [&](int i) {
      return (InSync(record, record.replicas(i).replica_id()) ? 2 : 0) +
             (record.replicas(i).node_id() == attached ? 1 : 0);
    };
    return rank(a) < rank(b);
  });
  std::vector<rec::ReplicaRecord> removed;
  for (int i : order) {
    if (removed.size() == count) break;
    const rec::ReplicaRecord& r = record.replicas(i);
    if (InSync(record, r.replica_id())) {
      int in_sync_left = 0;
      for (const auto& x : record.replicas()) {
        bool gone = std::any_of(removed.begin(), removed.end(),
                                [&](const auto& g) { return g.replica_id() == x.replica_id(); });
        if (!gone && InSync(record, x.replica_id())) ++in_sync_left;
      }
      if (in_sync_left <= 1) {
        return Status::FailedPrecondition("volume " + record.volume_id() + ": replica " +
                                          r.replica_id() +
                                          " is the last of the in-sync set; not removed");
      }
    }
    removed.push_back(r);
  }
  if (!attached.empty()) {
    std::string engine = EngineAddress(attached);
    for (const auto& r : removed) {
      auto node = nodes_->Get(r.node_id());
      if (!node || node->info.data_address().empty()) continue;  // not in a live target
      Status st = engines_->RemoveTargetReplica(engine, record.volume_id(),
                                                node->info.data_address(), options_.engine_timeout);
      if (!st.ok() && st.code() != StatusCode::kNotFound) {
        return st.WithContext("RemoveTargetReplica on " + attached);
      }
    }
  }
  auto* replicas = record.mutable_replicas();
  auto* ids = record.mutable_in_sync_replica_ids();
  for (const auto& r : removed) {
    for (int i = 0; i < replicas->size(); ++i) {
      if (replicas->Get(i).replica_id() == r.replica_id()) {
        replicas->DeleteSubrange(i, 1);
        break;
      }
    }
    ids->erase(std::remove(ids->begin(), ids->end(), r.replica_id()), ids->end());
    *record.add_retired_replicas() = r;
  }
  record.set_replica_count(static_cast<uint32_t>(record.replicas_size()));
  TANDEM_ASSIGN_OR_RETURN(v->mod_revision, records_->UpdateVolume(record, v->mod_revision));
  // Deleted now where the engine answers; the reconciler deletes the rest
  // (retired) once their nodes answer.
  auto* retired = record.mutable_retired_replicas();
  for (int i = retired->size() - 1; i >= 0; --i) {
    const auto& r = retired->Get(i);
    bool now = std::any_of(removed.begin(), removed.end(),
                           [&](const auto& g) { return g.replica_id() == r.replica_id(); });
    std::string address = EngineAddress(r.node_id());
    if (!now || address.empty()) continue;
    if (engines_->DeleteReplica(address, record.volume_id(), options_.engine_timeout).ok()) {
      retired->DeleteSubrange(i, 1);
    }
  }
  auto updated = records_->UpdateVolume(record, v->mod_revision);
  if (updated.ok()) v->mod_revision = *updated;
  v->record = std::move(record);
  TLOG_INFO(kTag, "ControllerModifyVolume %s: %u replica(s), %zu removed",
            v->record.volume_id().c_str(), v->record.replica_count(), removed.size());
  return Status::Ok();
}

}  // namespace tandem::controller
