// ControllerService: construction, the gRPC wrappers, and the read-only
// calls (capabilities, ValidateVolumeCapabilities, ListVolumes,
// ControllerGetVolume, GetCapacity).

#include "controller/controller_service.h"

#include <limits>
#include <map>

#include "common/grpc/grpc_status.h"
#include "common/grpc/handler_guard.h"
#include "controller/candidates.h"
#include "controller/volume_condition.h"
#include "csi/validation.h"

namespace tandem::controller {

namespace {

// ListVolumes tokens are "v1:<last volume id>": opaque to the CO, checked by
// us (anything else is ABORTED, as the spec asks for a token we did not give).
constexpr char kTokenPrefix[] = "v1:";

// One engine call per attached volume for its health: short, so a page of
// ListVolumes with a slow engine still answers in time.
constexpr std::chrono::milliseconds kConditionTimeout{1000};

template <typename Body>
grpc::Status Serve(const char* method, Body&& body) {
  return rpc::GuardHandler(method, [&]() -> grpc::Status { return rpc::ToGrpcStatus(body()); });
}

}  // namespace

ControllerService::ControllerService(Records* records, NodeRegistry* nodes,
                                     EngineDirectory* engines, csi::InFlight* inflight,
                                     ControllerOptions options)
    : records_(records),
      nodes_(nodes),
      engines_(engines),
      options_(options),
      inflight_(*inflight) {}

Status ControllerService::CheckLeader() const {
  if (records_->store()->IsLeader()) return Status::Ok();
  return Status::Unavailable("this tandem-controller does not lead; retry against the leader");
}

std::string ControllerService::EngineAddress(const std::string& node_id) const {
  auto node = nodes_->Get(node_id);
  return node ? node->record.engine_address() : "";
}

void ControllerService::FillVolume(const rec::VolumeRecord& record, csipb::Volume* volume) const {
  volume->set_volume_id(record.volume_id());
  volume->set_capacity_bytes(static_cast<int64_t>(record.size_bytes()));
  auto& ctx = *volume->mutable_volume_context();
  ctx["replicas"] = std::to_string(record.replica_count());
  ctx["fsType"] = record.fs_type();
  ctx["thin"] = record.thin() ? "true" : "false";
  for (const auto& t : record.accessible_topology()) {
    *volume->add_accessible_topology()->mutable_segments() = t.segments();
  }
}

// ------------------------------------------------------------ gRPC wrappers

grpc::Status ControllerService::CreateVolume(grpc::ServerContext*,
                                             const csipb::CreateVolumeRequest* req,
                                             csipb::CreateVolumeResponse* resp) {
  return Serve("CreateVolume", [&] { return DoCreateVolume(*req, resp); });
}
grpc::Status ControllerService::DeleteVolume(grpc::ServerContext*,
                                             const csipb::DeleteVolumeRequest* req,
                                             csipb::DeleteVolumeResponse*) {
  return Serve("DeleteVolume", [&] { return DoDeleteVolume(*req); });
}
grpc::Status ControllerService::ControllerPublishVolume(
    grpc::ServerContext*, const csipb::ControllerPublishVolumeRequest* req,
    csipb::ControllerPublishVolumeResponse* resp) {
  return Serve("ControllerPublishVolume", [&] { return DoPublish(*req, resp); });
}
grpc::Status ControllerService::ControllerUnpublishVolume(
    grpc::ServerContext*, const csipb::ControllerUnpublishVolumeRequest* req,
    csipb::ControllerUnpublishVolumeResponse*) {
  return Serve("ControllerUnpublishVolume", [&] { return DoUnpublish(*req); });
}
grpc::Status ControllerService::ValidateVolumeCapabilities(
    grpc::ServerContext*, const csipb::ValidateVolumeCapabilitiesRequest* req,
    csipb::ValidateVolumeCapabilitiesResponse* resp) {
  return Serve("ValidateVolumeCapabilities", [&] { return DoValidate(*req, resp); });
}
grpc::Status ControllerService::ListVolumes(grpc::ServerContext*,
                                            const csipb::ListVolumesRequest* req,
                                            csipb::ListVolumesResponse* resp) {
  return Serve("ListVolumes", [&] { return DoListVolumes(*req, resp); });
}
grpc::Status ControllerService::ControllerGetVolume(grpc::ServerContext*,
                                                    const csipb::ControllerGetVolumeRequest* req,
                                                    csipb::ControllerGetVolumeResponse* resp) {
  return Serve("ControllerGetVolume", [&] { return DoGetVolume(*req, resp); });
}
grpc::Status ControllerService::GetCapacity(grpc::ServerContext*,
                                            const csipb::GetCapacityRequest* req,
                                            csipb::GetCapacityResponse* resp) {
  return Serve("GetCapacity", [&] { return DoGetCapacity(*req, resp); });
}

grpc::Status ControllerService::ControllerExpandVolume(
    grpc::ServerContext*, const csipb::ControllerExpandVolumeRequest* req,
    csipb::ControllerExpandVolumeResponse* resp) {
  return Serve("ControllerExpandVolume", [&] { return DoExpandVolume(*req, resp); });
}

grpc::Status ControllerService::ControllerModifyVolume(
    grpc::ServerContext*, const csipb::ControllerModifyVolumeRequest* req,
    csipb::ControllerModifyVolumeResponse*) {
  return Serve("ControllerModifyVolume", [&] { return DoModifyVolume(*req); });
}

grpc::Status ControllerService::ControllerGetCapabilities(
    grpc::ServerContext*, const csipb::ControllerGetCapabilitiesRequest*,
    csipb::ControllerGetCapabilitiesResponse* resp) {
  return Serve("ControllerGetCapabilities", [&] {
    using T = csipb::ControllerServiceCapability::RPC;
    // Only what is implemented. EXPAND_VOLUME is offline only (the engine
    // cannot grow an attached target yet): the plugin capability says so.
    for (auto type :
         {T::CREATE_DELETE_VOLUME, T::PUBLISH_UNPUBLISH_VOLUME, T::LIST_VOLUMES, T::GET_CAPACITY,
          T::LIST_VOLUMES_PUBLISHED_NODES, T::GET_VOLUME, T::PUBLISH_READONLY,
          T::SINGLE_NODE_MULTI_WRITER, T::MODIFY_VOLUME, T::EXPAND_VOLUME, T::VOLUME_CONDITION}) {
      resp->add_capabilities()->mutable_rpc()->set_type(type);
    }
    return Status::Ok();
  });
}

// ------------------------------------------------------------- read calls

Status ControllerService::DoValidate(const csipb::ValidateVolumeCapabilitiesRequest& req,
                                     csipb::ValidateVolumeCapabilitiesResponse* resp) {
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_id", req.volume_id()));
  TANDEM_RETURN_IF_ERROR(
      csi::CheckCapabilitiesShape("volume_capabilities", req.volume_capabilities()));
  TANDEM_ASSIGN_OR_RETURN(auto v, records_->GetVolume(req.volume_id()));
  if (!v) return Status::NotFound("volume " + req.volume_id() + " does not exist");
  for (int i = 0; i < req.volume_capabilities().size(); ++i) {
    std::string why = csi::UnsupportedCapabilityReason(
        "volume_capabilities[" + std::to_string(i) + "]", req.volume_capabilities(i));
    if (!why.empty()) {
      resp->set_message(why);
      return Status::Ok();
    }
  }
  if (!req.parameters().empty()) {
    auto params = ParseVolumeParams(req.parameters());
    if (!params.ok()) {
      resp->set_message(params.status().message());
      return Status::Ok();
    }
    // The StorageClass parameters the volume was created with (verbatim in
    // the record), not its replica count now: a ModifyVolume since changed it.
    auto created = ParseVolumeParams(v->record.parameters());
    if (!created.ok() || params->replicas != created->replicas ||
        params->fs_type != v->record.fs_type() || params->thin != v->record.thin()) {
      resp->set_message("parameters differ from the ones the volume was created with");
      return Status::Ok();
    }
  }
  auto* confirmed = resp->mutable_confirmed();
  *confirmed->mutable_volume_context() = req.volume_context();
  *confirmed->mutable_volume_capabilities() = req.volume_capabilities();
  *confirmed->mutable_parameters() = req.parameters();
  *confirmed->mutable_mutable_parameters() = req.mutable_parameters();
  return Status::Ok();
}

Status ControllerService::DoListVolumes(const csipb::ListVolumesRequest& req,
                                        csipb::ListVolumesResponse* resp) {
  if (req.max_entries() < 0) {
    return Status::InvalidArgument("max_entries must not be negative");
  }
  std::string after;
  if (!req.starting_token().empty()) {
    const std::string& t = req.starting_token();
    if (t.rfind(kTokenPrefix, 0) != 0 || t.size() == sizeof(kTokenPrefix) - 1) {
      return Status::Aborted("starting_token \"" + t + "\" was not issued by this plugin");
    }
    after = t.substr(sizeof(kTokenPrefix) - 1);
  }
  bool more = false;
  TANDEM_ASSIGN_OR_RETURN(
      auto volumes, records_->ListVolumes(after, static_cast<size_t>(req.max_entries()), &more));
  for (const auto& v : volumes) {
    auto* e = resp->add_entries();
    FillVolume(v.record, e->mutable_volume());
    if (v.record.has_attachment()) {
      e->mutable_status()->add_published_node_ids(v.record.attachment().node_id());
    }
    FillVolumeCondition(v.record, *nodes_, engines_, kConditionTimeout,
                        e->mutable_status()->mutable_volume_condition());
  }
  if (more && !volumes.empty()) {
    resp->set_next_token(kTokenPrefix + volumes.back().record.volume_id());
  }
  return Status::Ok();
}

Status ControllerService::DoGetVolume(const csipb::ControllerGetVolumeRequest& req,
                                      csipb::ControllerGetVolumeResponse* resp) {
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_id", req.volume_id()));
  TANDEM_ASSIGN_OR_RETURN(auto v, records_->GetVolume(req.volume_id()));
  if (!v) return Status::NotFound("volume " + req.volume_id() + " does not exist");
  FillVolume(v->record, resp->mutable_volume());
  auto* status = resp->mutable_status();
  if (v->record.has_attachment()) status->add_published_node_ids(v->record.attachment().node_id());
  FillVolumeCondition(v->record, *nodes_, engines_, kConditionTimeout,
                      status->mutable_volume_condition());
  return Status::Ok();
}

Status ControllerService::DoGetCapacity(const csipb::GetCapacityRequest& req,
                                        csipb::GetCapacityResponse* resp) {
  for (int i = 0; i < req.volume_capabilities().size(); ++i) {
    std::string field = "volume_capabilities[" + std::to_string(i) + "]";
    TANDEM_RETURN_IF_ERROR(csi::CheckCapabilityShape(field, req.volume_capabilities(i)));
    if (!csi::UnsupportedCapabilityReason(field, req.volume_capabilities(i)).empty()) {
      resp->set_available_capacity(0);
      return Status::Ok();
    }
  }
  VolumeParams params;
  if (!req.parameters().empty()) {
    TANDEM_ASSIGN_OR_RETURN(params, ParseVolumeParams(req.parameters()));
  }
  Segments want(req.accessible_topology().segments().begin(),
                req.accessible_topology().segments().end());
  TANDEM_ASSIGN_OR_RETURN(auto nodes, Candidates());
  // Room per node for one more replica; a volume needs `replicas` distinct
  // nodes, so the largest volume is the replicas-th largest room.
  std::vector<uint64_t> room;
  for (const auto& n : nodes) {
    if (!n.up || !TopologyMatches(want, n.topology) || n.total_bytes == 0) continue;
    double ratio = params.thin ? options_.overcommit : 1.0;
    double limit = static_cast<double>(n.total_bytes) * ratio;
    double left = limit - static_cast<double>(n.provisioned_bytes);
    uint64_t r = left > 0 ? static_cast<uint64_t>(left) : 0;
    if (!params.thin) r = std::min(r, n.free_bytes);
    room.push_back(r);
  }
  std::sort(room.rbegin(), room.rend());
  uint64_t available = 0;
  for (uint64_t r : room) available += r;
  uint64_t max_volume = room.size() >= params.replicas ? room[params.replicas - 1] : 0;
  max_volume = std::min<uint64_t>(max_volume / kBlockSize * kBlockSize, kMaxVolumeBytes);
  // Every replica takes its size on its node, so a volume uses
  // `replicas` times its size of the total.
  resp->set_available_capacity(static_cast<int64_t>(
      std::min<uint64_t>(available / params.replicas, std::numeric_limits<int64_t>::max())));
  resp->mutable_maximum_volume_size()->set_value(static_cast<int64_t>(max_volume));
  resp->mutable_minimum_volume_size()->set_value(static_cast<int64_t>(kBlockSize));
  return Status::Ok();
}

Result<std::vector<NodeCandidate>> ControllerService::Candidates() {
  return CollectCandidates(nodes_, records_);
}

}  // namespace tandem::controller
