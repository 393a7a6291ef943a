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
// Shrink: controller_service_shrink.cc.

#include <algorithm>
#include <future>

#include "common/logging.h"
#include "controller/candidates.h"
#include "controller/controller_service.h"
#include "controller/replica_changes.h"

namespace tandem::controller {

namespace {
constexpr const char* kTag = "controller";
}  // namespace

Status ControllerService::ChangeReplicaCount(Versioned<rec::VolumeRecord>* v, uint32_t wanted) {
  const uint32_t have = static_cast<uint32_t>(v->record.replicas_size());
  if (wanted == have) {
    // The count is the record's: the live target follows it (a shrink
    // abandoned after the target dropped its victims, or set back to this
    // count, left the target with fewer replicas than the record).
    std::vector<std::string> added;
    TANDEM_RETURN_IF_ERROR(
        RestoreLiveTarget(engines_, nodes_, v->record, options_.engine_timeout, &added)
            .WithContext("volume " + v->record.volume_id()));
    for (const auto& r : added) {
      TLOG_INFO(kTag, "ControllerModifyVolume %s: replica %s back in the live target (rebuilding)",
                v->record.volume_id().c_str(), r.c_str());
    }
    return Status::Ok();
  }
  if (wanted > have) return GrowReplicas(v, wanted - have);
  return ShrinkReplicas(v, wanted);
}

// The replicas `grown` added to v's record, by compare-and-swap. The
// membership authority changes the in-sync fields of the same record at any
// time: a conflict re-reads it and adds them again, instead of failing the
// call with replicas already created and in the live target but not in the
// record (a retry might place them elsewhere).
Status ControllerService::RecordAddedReplicas(Versioned<rec::VolumeRecord>* v,
                                              const rec::VolumeRecord& grown) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    rec::VolumeRecord record = v->record;
    for (const auto& r : grown.replicas()) {
      bool known = std::any_of(record.replicas().begin(), record.replicas().end(),
                               [&](const auto& x) { return x.replica_id() == r.replica_id(); });
      if (!known) *record.add_replicas() = r;
    }
    record.set_next_replica_index(
        std::max(record.next_replica_index(), grown.next_replica_index()));
    record.set_replica_count(static_cast<uint32_t>(record.replicas_size()));
    auto updated = records_->UpdateVolume(record, v->mod_revision);
    if (updated.ok()) {
      v->mod_revision = *updated;
      v->record = std::move(record);
      return Status::Ok();
    }
    if (updated.status().code() != StatusCode::kAborted) return updated.status();
    TANDEM_ASSIGN_OR_RETURN(auto fresh, records_->GetVolume(grown.volume_id()));
    if (!fresh) return Status::NotFound("volume " + grown.volume_id() + " is gone");
    *v = std::move(*fresh);
  }
  return Status::Aborted("volume " + grown.volume_id() + " changed concurrently; retry");
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
  TANDEM_RETURN_IF_ERROR(RecordAddedReplicas(v, record));
  TLOG_INFO(kTag, "ControllerModifyVolume %s: %u replica(s)%s", v->record.volume_id().c_str(),
            v->record.replica_count(),
            v->record.has_attachment() ? " (added to the live target: rebuilding online)" : "");
  return Status::Ok();
}

}  // namespace tandem::controller
