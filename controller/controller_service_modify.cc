// ControllerService: ControllerModifyVolume (VolumeAttributesClass changes).
//
// rebuildRate is applied to the record (the next publish hands it to the
// node) and, when the volume is published, to its live target through the
// attached node's engine. replicas grows or shrinks the replica set
// (controller_service_replicas.cc), the live target with it.

#include <future>

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
  if (record.state() != rec::VolumeRecord::READY) {
    return Status::FailedPrecondition("volume " + req.volume_id() + " is " +
                                      rec::VolumeRecord::State_Name(record.state()));
  }
  // The replica count first: a retry after a failure below finds it done.
  TANDEM_RETURN_IF_ERROR(ChangeReplicaCount(&*v, wanted.replicas));
  record = v->record;
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

Status ControllerService::DoExpandVolume(const csipb::ControllerExpandVolumeRequest& req,
                                         csipb::ControllerExpandVolumeResponse* resp) {
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_id", req.volume_id()));
  TANDEM_RETURN_IF_ERROR(csi::RequirePresent("capacity_range", req.has_capacity_range()));
  TANDEM_ASSIGN_OR_RETURN(uint64_t size, VolumeSizeFor(req.capacity_range().required_bytes(),
                                                       req.capacity_range().limit_bytes()));
  TANDEM_ASSIGN_OR_RETURN(auto guard, inflight_.TryAcquire("vol:" + req.volume_id()));
  TANDEM_RETURN_IF_ERROR(CheckLeader());
  TANDEM_ASSIGN_OR_RETURN(auto v, records_->GetVolume(req.volume_id()));
  if (!v) return Status::NotFound("volume " + req.volume_id() + " does not exist");
  rec::VolumeRecord record = v->record;
  // A file system on the volume grows on the node (NodeExpandVolume).
  bool fs = !req.has_volume_capability() || !req.volume_capability().has_block();
  if (size <= record.size_bytes()) {
    // Already that big (a retry, or a smaller request): volumes never shrink.
    resp->set_capacity_bytes(static_cast<int64_t>(record.size_bytes()));
    resp->set_node_expansion_required(fs);
    return Status::Ok();
  }
  std::vector<std::future<Status>> calls;
  for (const auto& r : record.replicas()) {
    std::string address = EngineAddress(r.node_id());
    calls.push_back(std::async(std::launch::async, [this, address, &record, size, r] {
      if (address.empty()) return Status::Unavailable("node " + r.node_id() + " unknown");
      return engines_->ResizeReplica(address, record.volume_id(), size, options_.engine_timeout)
          .WithContext("ResizeReplica on node " + r.node_id());
    }));
  }
  Status first;
  for (auto& c : calls) {
    Status st = c.get();
    if (!st.ok() && first.ok()) first = std::move(st);
  }
  // The record grows only once every replica did; a retry resizes again
  // (the same size is a no-op on the engine).
  TANDEM_RETURN_IF_ERROR(first);
  // Online: the live target grows after its replicas (it would write past
  // their end otherwise). NodeExpandVolume asks the same again (a no-op) and
  // grows the file system. No target there yet (published, not staged): the
  // next stage serves the old size until NodeExpandVolume grows it.
  if (record.has_attachment()) {
    const std::string& node = record.attachment().node_id();
    std::string address = EngineAddress(node);
    if (address.empty()) return Status::Unavailable("node " + node + " unknown");
    Status st = engines_->ResizeTarget(address, record.volume_id(), size, options_.engine_timeout);
    if (!st.ok() && st.code() != StatusCode::kNotFound) {
      return st.WithContext("ResizeTarget on node " + node);
    }
  }
  record.set_size_bytes(size);
  TANDEM_ASSIGN_OR_RETURN(v->mod_revision, records_->UpdateVolume(record, v->mod_revision));
  TLOG_INFO(kTag, "ControllerExpandVolume %s: %llu bytes", req.volume_id().c_str(),
            static_cast<unsigned long long>(size));
  resp->set_capacity_bytes(static_cast<int64_t>(size));
  resp->set_node_expansion_required(fs);
  return Status::Ok();
}

}  // namespace tandem::controller
