#include "controller/registration_service.h"

#include <chrono>
#include <map>

#include "common/grpc/grpc_status.h"
#include "common/grpc/handler_guard.h"
#include "controller/attachment_context.h"
#include "csi/validation.h"

namespace tandem::controller {

RegistrationService::RegistrationService(NodeRegistry* nodes, store::MetadataStore* store,
                                         Records* records, csi::InFlight* inflight)
    : nodes_(nodes), store_(store), records_(records), inflight_(inflight) {}

grpc::Status RegistrationService::RegisterNode(grpc::ServerContext*,
                                               const v1::RegisterNodeRequest* req,
                                               v1::RegisterNodeResponse*) {
  return rpc::GuardHandler("RegisterNode", [&]() -> grpc::Status {
    if (!store_->IsLeader()) {
      return rpc::ToGrpcStatus(
          Status::Unavailable("this tandem-controller does not lead; retry against the leader"));
    }
    rec::NodeRecord record;
    record.set_node_id(req->node_id());
    record.set_engine_address(req->engine_address());
    *record.mutable_topology() = req->topology();
    record.set_registered_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count());
    return rpc::ToGrpcStatus(nodes_->Register(record));
  });
}

grpc::Status RegistrationService::ListNodes(grpc::ServerContext*, const v1::ListNodesRequest*,
                                            v1::ListNodesResponse* resp) {
  return rpc::GuardHandler("ListNodes", [&]() -> grpc::Status {
    // What is placed on each node, from the volume records.
    std::map<std::string, std::pair<uint64_t, uint32_t>> placed;
    std::string after;
    for (int page = 0; page < 1000000; ++page) {
      bool more = false;
      auto volumes = records_->ListVolumes(after, 500, &more);
      if (!volumes.ok()) return rpc::ToGrpcStatus(volumes.status());
      for (const auto& v : *volumes) {
        for (const auto& r : v.record.replicas()) {
          placed[r.node_id()].first += v.record.size_bytes();
          placed[r.node_id()].second++;
        }
      }
      if (!more || volumes->empty()) break;
      after = volumes->back().record.volume_id();
    }
    for (const auto& n : nodes_->Snapshot()) {
      auto* out = resp->add_nodes();
      out->set_node_id(n.record.node_id());
      out->set_engine_address(n.record.engine_address());
      *out->mutable_topology() = n.record.topology();
      out->set_up(n.up);
      out->set_data_address(n.info.data_address());
      out->set_last_seen_ms_ago(n.last_seen_ms_ago);
      out->set_last_error(n.last_error);
      out->set_provisioned_bytes(placed[n.record.node_id()].first);
      out->set_replica_count(placed[n.record.node_id()].second);
    }
    return grpc::Status::OK;
  });
}

namespace {

Status CheckAttachedTo(const rec::VolumeRecord& record, const std::string& node_id) {
  const std::string& id = record.volume_id();
  if (!record.has_attachment()) {
    return Status::FailedPrecondition("volume " + id + " is not published (to any node)");
  }
  if (record.attachment().node_id() != node_id) {
    return Status::FailedPrecondition("volume " + id + " is published to node " +
                                      record.attachment().node_id() + ", not to " + node_id);
  }
  // An unpublish raises the record's epoch before it fences and clears the
  // attachment: from then on no target of this attachment may be built.
  if (record.epoch() != record.attachment().epoch()) {
    return Status::FailedPrecondition("volume " + id + " is being unpublished from node " +
                                      node_id + " (epoch " + std::to_string(record.epoch()) +
                                      " raised past the attachment's " +
                                      std::to_string(record.attachment().epoch()) + ")");
  }
  return Status::Ok();
}

}  // namespace

Result<rec::VolumeRecord> RegistrationService::AttachedRecord(const std::string& volume_id,
                                                              const std::string& node_id) {
  // The volume's in-flight guard while the record is read: never one half-way
  // through a ModifyVolume or a replacement (they change the live target
  // first and the record after); while one runs this is ABORTED and the node
  // asks again.
  TANDEM_ASSIGN_OR_RETURN(auto guard, inflight_->TryAcquire("vol:" + volume_id));
  if (!store_->IsLeader()) {
    return Status::Unavailable("this tandem-controller does not lead; retry against the leader");
  }
  TANDEM_ASSIGN_OR_RETURN(auto v, records_->GetVolume(volume_id));
  if (!v) return Status::NotFound("volume " + volume_id + " does not exist");
  TANDEM_RETURN_IF_ERROR(CheckAttachedTo(v->record, node_id));
  return std::move(v->record);
}

grpc::Status RegistrationService::GetAttachment(grpc::ServerContext*,
                                                const v1::GetAttachmentRequest* req,
                                                v1::GetAttachmentResponse* resp) {
  return rpc::GuardHandler("GetAttachment", [&]() -> grpc::Status {
    Status st = csi::RequireField("volume_id", req->volume_id());
    if (st.ok()) st = csi::RequireField("node_id", req->node_id());
    if (!st.ok()) return rpc::ToGrpcStatus(st);
    auto record = AttachedRecord(req->volume_id(), req->node_id());
    if (!record.ok()) return rpc::ToGrpcStatus(record.status());
    // Built after the guard is let go: it may poll every engine (a node not
    // heard from since this controller started), which must not keep a
    // ModifyVolume or the reconciler off the volume meanwhile. The record is
    // the one read under the guard, whole.
    auto ctx = AttachmentContext(*record, nodes_);
    if (!ctx.ok()) return rpc::ToGrpcStatus(ctx.status());
    ctx->volume_secret.clear();  // the node has it from kubelet; never over this API
    for (auto& [k, val] : csi::EncodePublishContext(*ctx)) {
      (*resp->mutable_publish_context())[k] = val;
    }
    return grpc::Status::OK;
  });
}

}  // namespace tandem::controller
