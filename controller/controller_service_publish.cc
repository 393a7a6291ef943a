// ControllerService: ControllerPublishVolume and ControllerUnpublishVolume.
//
// Publish is metadata: it raises the volume's epoch, records the attachment
// (one Txn) and hands the node what it needs to build the target
// (csi/publish_context.h, built by attachment_context.h; the node asks for it
// again at each stage: Registration.GetAttachment). Unpublish fences before
// it answers OK: the epoch is raised in the store first (so no later publish
// can reuse it), then on the replicas through their engines, so an old
// target — on a dead, partitioned or simply slow node, which Kubernetes may
// force-detach without NodeUnstage — can never acknowledge a write again.

#include <future>

#include "common/logging.h"
#include "controller/attachment_context.h"
#include "controller/controller_service.h"
#include "csi/publish_context.h"
#include "csi/validation.h"

namespace tandem::controller {

namespace {
constexpr const char* kTag = "controller";
}  // namespace

Status ControllerService::DoPublish(const csipb::ControllerPublishVolumeRequest& req,
                                    csipb::ControllerPublishVolumeResponse* resp) {
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_id", req.volume_id()));
  TANDEM_RETURN_IF_ERROR(csi::RequireField("node_id", req.node_id()));
  TANDEM_RETURN_IF_ERROR(csi::RequirePresent("volume_capability", req.has_volume_capability()));
  TANDEM_RETURN_IF_ERROR(csi::CheckCapabilityShape("volume_capability", req.volume_capability()));
  std::string why = csi::UnsupportedCapabilityReason("volume_capability", req.volume_capability());
  if (!why.empty()) return Status::InvalidArgument(why);

  TANDEM_ASSIGN_OR_RETURN(auto guard, inflight_.TryAcquire("vol:" + req.volume_id()));
  TANDEM_RETURN_IF_ERROR(CheckLeader());
  TANDEM_ASSIGN_OR_RETURN(auto v, records_->GetVolume(req.volume_id()));
  if (!v) return Status::NotFound("volume " + req.volume_id() + " does not exist");
  if (v->record.state() != rec::VolumeRecord::READY) {
    return Status::FailedPrecondition("volume " + req.volume_id() + " is " +
                                      rec::VolumeRecord::State_Name(v->record.state()));
  }
  auto node = nodes_->Get(req.node_id());
  if (!node) return Status::NotFound("node " + req.node_id() + " is not registered");

  // A new attachment: an unsettled in-sync shrink may need its fallback.
  if (!v->record.has_attachment()) TANDEM_RETURN_IF_ERROR(SettleUnsettledShrink(&*v));
  rec::VolumeRecord record = v->record;
  bool readonly =
      req.readonly() || csi::IsReadOnlyMode(req.volume_capability().access_mode().mode());
  if (record.has_attachment()) {
    const auto& a = record.attachment();
    if (a.node_id() != req.node_id()) {
      return Status::FailedPrecondition("volume " + req.volume_id() + " is published on node " +
                                        a.node_id() +
                                        " (single-node access); unpublish it there first");
    }
    if (a.readonly() != readonly) {
      return Status::AlreadyExists("volume " + req.volume_id() + " is published on node " +
                                   a.node_id() +
                                   " with readonly=" + (a.readonly() ? "true" : "false"));
    }
    // The same publish again: the same answer (same epoch), nothing changes.
  } else {
    record.set_epoch(record.epoch() + 1);
    auto* a = record.mutable_attachment();
    a->set_node_id(req.node_id());
    a->set_readonly(readonly);
    a->set_epoch(record.epoch());
    record.set_access_type(req.volume_capability().has_block() ? "block" : "mount");
  }

  TANDEM_ASSIGN_OR_RETURN(csi::PublishContext ctx, AttachmentContext(record, nodes_));

  if (!v->record.has_attachment()) {
    TANDEM_ASSIGN_OR_RETURN(v->mod_revision, records_->UpdateVolume(record, v->mod_revision));
    TLOG_INFO(kTag, "ControllerPublishVolume %s -> node %s, epoch %llu", req.volume_id().c_str(),
              req.node_id().c_str(), static_cast<unsigned long long>(ctx.epoch));
  }
  for (auto& [k, val] : csi::EncodePublishContext(ctx)) {
    (*resp->mutable_publish_context())[k] = val;
  }
  return Status::Ok();
}

Status ControllerService::DoUnpublish(const csipb::ControllerUnpublishVolumeRequest& req) {
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_id", req.volume_id()));
  TANDEM_ASSIGN_OR_RETURN(auto guard, inflight_.TryAcquire("vol:" + req.volume_id()));
  TANDEM_RETURN_IF_ERROR(CheckLeader());
  TANDEM_ASSIGN_OR_RETURN(auto v, records_->GetVolume(req.volume_id()));
  // Gone, or not published there: already unpublished (the spec's OK).
  if (!v || !v->record.has_attachment()) return Status::Ok();
  if (!req.node_id().empty() && v->record.attachment().node_id() != req.node_id()) {
    return Status::Ok();
  }
  // 1. A new epoch in the store, attachment kept: if the fence below fails,
  //    the volume stays published (a publish elsewhere is refused) and the
  //    CO retries the unpublish.
  rec::VolumeRecord record = v->record;
  record.set_epoch(record.epoch() + 1);
  TANDEM_ASSIGN_OR_RETURN(v->mod_revision, records_->UpdateVolume(record, v->mod_revision));
  // 2. The replicas refuse every lower epoch from now on.
  TANDEM_RETURN_IF_ERROR(Fence(record, record.epoch()));
  // 3. Detached.
  std::string node = record.attachment().node_id();
  record.clear_attachment();
  TANDEM_ASSIGN_OR_RETURN(v->mod_revision, records_->UpdateVolume(record, v->mod_revision));
  TLOG_INFO(kTag, "ControllerUnpublishVolume %s from node %s: fenced at epoch %llu",
            req.volume_id().c_str(), node.c_str(), static_cast<unsigned long long>(record.epoch()));
  return Status::Ok();
}

Status ControllerService::Fence(const rec::VolumeRecord& record, uint64_t epoch) {
  struct Outcome {
    std::string replica_id;
    Status status;
    uint64_t generation = 0;
  };
  std::vector<std::future<Outcome>> calls;
  for (const auto& r : record.replicas()) {
    std::string address = EngineAddress(r.node_id());
    calls.push_back(std::async(std::launch::async, [this, address, &record, epoch, r] {
      if (address.empty()) {
        return Outcome{r.replica_id(), Status::Unavailable("node " + r.node_id() + " unknown")};
      }
      auto g = engines_->FenceReplica(address, record.volume_id(), epoch, options_.engine_timeout);
      return Outcome{r.replica_id(), g.status(), g.ok() ? *g : 0};
    }));
  }
  size_t fenced = 0, joining = 0;
  bool in_sync_fenced = false;
  std::string errors;
  for (int i = 0; i < static_cast<int>(calls.size()); ++i) {
    Outcome o = calls[i].get();
    // A replica added since the volume was created that reports generation
    // 0 was never rebuilt: the old target does not count it in its majority
    // (it is a rebuild destination) and it holds no acknowledged write, so
    // fencing it proves nothing; it counts neither as fenced nor in n.
    if (o.status.ok() && o.generation == 0 && record.replicas(i).joining()) {
      ++joining;
      continue;
    }
    if (o.status.ok()) {
      ++fenced;
      for (const auto& id : record.in_sync_replica_ids()) {
        if (id == o.replica_id) in_sync_fenced = true;
      }
    } else {
      errors += "; " + o.replica_id + ": " + o.status.ToString();
    }
  }
  // The old target may acknowledge a write only with a majority of the
  // replicas serving, or with every replica of the in-sync record serving
  // (when a generation id was recorded). Unfenced replicas must therefore be
  // no majority, and at least one in-sync replica must be fenced.
  size_t n = static_cast<size_t>(record.replicas_size()) - joining;
  size_t unfenced = n - fenced;
  bool no_majority = unfenced <= n / 2;
  bool in_sync_blocked = record.in_sync_generation_id() == 0 || in_sync_fenced;
  if (no_majority && in_sync_blocked) {
    if (fenced < n) {
      TLOG_WARN(kTag, "volume %s fenced at epoch %llu on %zu of %zu replicas%s",
                record.volume_id().c_str(), static_cast<unsigned long long>(epoch), fenced, n,
                errors.c_str());
    }
    return Status::Ok();
  }
  return Status::Unavailable(
      "volume " + record.volume_id() + ": fenced " + std::to_string(fenced) + " of " +
      std::to_string(n) + " replicas, not enough to stop the old target" +
      (joining ? " (" + std::to_string(joining) + " more never rebuilt: not counted)"
               : std::string()) +
      errors);
}

}  // namespace tandem::controller
