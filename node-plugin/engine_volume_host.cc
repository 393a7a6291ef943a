#include "node-plugin/engine_volume_host.h"

#include "common/address.h"
#include "replica-engine/api/target_health.h"

namespace tandem::node {
namespace {

namespace pb = engine::v1;

HostedVolume HostedOf(const pb::Target& t) {
  return HostedVolume{t.export_path(), t.size_bytes(), t.epoch()};
}

}  // namespace

VolumeHealth HealthOf(const pb::Target& t) {
  api::TargetHealth h = api::HealthOfTarget(t);
  return VolumeHealth{h.abnormal, std::move(h.message)};
}

Result<HostedVolume> EngineVolumeHost::Attach(const std::string& volume_id,
                                              const csi::PublishContext& info) {
  auto existing = engine_->GetTarget(volume_id);
  if (existing.ok()) {
    if (existing->epoch() == info.epoch) return HostedOf(*existing);
    if (existing->epoch() > info.epoch) {
      return Status::FailedPrecondition(
          "volume " + volume_id + " is attached here at epoch " +
          std::to_string(existing->epoch()) + ", newer than this publish's " +
          std::to_string(info.epoch) + ": the publish was superseded");
    }
    // A target left by an older attach (tandem-node or the pod moved away and
    // back without a clean unstage): it is fenced by the new epoch anyway.
    TANDEM_RETURN_IF_ERROR(Detach(volume_id));
  } else if (existing.status().code() != StatusCode::kNotFound) {
    return existing.status();
  }
  pb::CreateTargetRequest req;
  req.set_volume_id(volume_id);
  req.set_epoch(info.epoch);
  for (const auto& r : info.replicas) {
    std::string host;
    uint16_t port = 0;
    TANDEM_RETURN_IF_ERROR(
        ParseHostPort("publish_context replica", r.address, false, &host, &port));
    auto* e = req.add_replicas();
    e->set_host(host);
    e->set_port(port);
    e->set_local(!local_host_.empty() && host == local_host_);
  }
  req.set_size_bytes(info.size_bytes);
  // The engine takes the in-sync set only with the generation id it was
  // recorded at; a volume that never recorded one (new, nothing written
  // below a majority yet) attaches by the majority rule.
  if (info.in_sync_generation_id != 0) {
    req.set_in_sync_generation_id(info.in_sync_generation_id);
    for (const auto& id : info.in_sync_replica_ids) req.add_in_sync_replica_ids(id);
  }
  req.set_rebuild_rate_bytes_per_sec(info.rebuild_rate_bytes_per_sec);
  req.set_export_kind(pb::EXPORT_KIND_FUSE_FILE);
  // The volume's secret proves the target to replicas created with it
  // (docs/protocol.md, "Per-volume secrets"); ignored by replicas without one.
  req.set_secret(info.volume_secret);
  TANDEM_ASSIGN_OR_RETURN(pb::Target target, engine_->CreateTarget(req));
  if (target.export_path().empty()) {
    return Status::Internal("the engine created the target of " + volume_id +
                            " without a file export");
  }
  return HostedOf(target);
}

Status EngineVolumeHost::Detach(const std::string& volume_id) {
  Status st = engine_->DestroyTarget(volume_id);
  if (st.code() == StatusCode::kNotFound) return Status::Ok();
  return st;
}

Result<HostedVolume> EngineVolumeHost::Describe(const std::string& volume_id) {
  TANDEM_ASSIGN_OR_RETURN(pb::Target t, engine_->GetTarget(volume_id));
  return HostedOf(t);
}

Result<VolumeHealth> EngineVolumeHost::Health(const std::string& volume_id) {
  TANDEM_ASSIGN_OR_RETURN(pb::Target t, engine_->GetTarget(volume_id));
  return HealthOf(t);
}

Result<uint64_t> EngineVolumeHost::Resize(const std::string& volume_id, uint64_t size_bytes) {
  TANDEM_ASSIGN_OR_RETURN(engine::v1::Target t, engine_->ResizeTarget(volume_id, size_bytes));
  return t.size_bytes();
}

}  // namespace tandem::node
