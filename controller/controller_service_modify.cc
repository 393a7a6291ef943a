// ControllerService: ControllerModifyVolume (VolumeAttributesClass changes).
//
// rebuildRate is applied to the record (the next publish hands it to the
// node) and, when the volume is published, to its live target through the
// attached node's engine. replicas cannot change yet: growing a live volume
// needs the target's AddTargetReplica plus an in-sync record the controller
// does not maintain yet (docs/controller.md), so it is refused, not faked.

#include "common/logging.h"
#include "controller/controller_service.h"
#include "csi/validation.h"

namespace tandem::controller {

namespace {
constexpr const char* kTag = "controller";
}  // namespace

Status ControllerService::DoModifyVolume(const csipb::ControllerModifyVolumeRequest& req) {
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_id", req.volume_id()));
  TANDEM_ASSIGN_OR_RETURN(auto guard, inflight_.TryAcquire("vol:" + req.volume_id()));
  TANDEM_RETURN_IF_ERROR(CheckLeader());
  TANDEM_ASSIGN_OR_RETURN(auto v, records_->GetVolume(req.volume_id()));
  if (!v) return Status::NotFound("volume " + req.volume_id() + " does not exist");
  rec::VolumeRecord record = v->record;
  VolumeParams current;
  current.replicas = record.replica_count();
  current.fs_type = record.fs_type();
  current.thin = record.thin();
  current.rebuild_rate_bytes_per_sec = record.rebuild_rate_bytes_per_sec();
  TANDEM_ASSIGN_OR_RETURN(VolumeParams wanted,
                          ParseMutableParams(req.mutable_parameters(), current));
  if (wanted.replicas != current.replicas) {
    return Status::InvalidArgument(
        "mutable_parameters.replicas: changing the replica count of an existing volume is not "
        "supported yet (it is " +
        std::to_string(current.replicas) + ")");
  }
  if (wanted.rebuild_rate_bytes_per_sec != current.rebuild_rate_bytes_per_sec) {
    record.set_rebuild_rate_bytes_per_sec(wanted.rebuild_rate_bytes_per_sec);
    TANDEM_ASSIGN_OR_RETURN(v->mod_revision, records_->UpdateVolume(record, v->mod_revision));
    TLOG_INFO(kTag, "ControllerModifyVolume %s: rebuildRate %llu", req.volume_id().c_str(),
              static_cast<unsigned long long>(wanted.rebuild_rate_bytes_per_sec));
  }
  // A live target gets the rate now (also on a retry after a failure here).
  // 0 means "the engine's default" in the record but "unlimited" to
  // SetRebuildRate, so a 0 waits for the next publish.
  if (record.has_attachment() && record.rebuild_rate_bytes_per_sec() != 0) {
    std::string address = EngineAddress(record.attachment().node_id());
    if (!address.empty()) {
      Status st =
          engines_->SetRebuildRate(address, record.volume_id(), record.rebuild_rate_bytes_per_sec(),
                                   options_.engine_timeout);
      // NOT_FOUND: published but not staged yet; the node creates the target
      // with the rate from publish_context... of the publish before this
      // change, so say so.
      if (st.code() == StatusCode::kNotFound) {
        TLOG_INFO(kTag,
                  "volume %s: no target on node %s yet; the new rate applies at the next "
                  "publish",
                  record.volume_id().c_str(), record.attachment().node_id().c_str());
      } else if (!st.ok()) {
        return st.WithContext("SetRebuildRate on node " + record.attachment().node_id());
      }
    }
  }
  return Status::Ok();
}

}  // namespace tandem::controller
