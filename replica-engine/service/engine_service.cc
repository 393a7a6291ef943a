#include "replica-engine/service/engine_service.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "common/grpc/grpc_status.h"
#include "common/grpc/handler_guard.h"
#include "common/id.h"
#include "common/logging.h"
#include "replica-engine/service/node_capacity.h"
#include "replica-engine/service/proto_convert.h"
#include "replica-engine/service/secure_defaults.h"

#ifndef TANDEM_VERSION
#define TANDEM_VERSION "0.0.0"
#endif

namespace tandem::service {

using rpc::ToGrpcStatus;

const char kEngineVersion[] = TANDEM_VERSION;

namespace {

constexpr char kTag[] = "engine_api";

namespace pb = ::tandem::engine::v1;

}  // namespace

EngineService::EngineService(replica::ReplicaManager* replicas,
                             server::ReplicaServer* replica_server, attach::TargetManager* targets,
                             EngineServiceOptions options)
    : replicas_(replicas),
      replica_server_(replica_server),
      targets_(targets),
      options_(std::move(options)),
      auth_(options_.mgmt_token) {}

grpc::Status EngineService::GetEngineInfo(Ctx* ctx, const pb::GetEngineInfoRequest*,
                                          pb::EngineInfo* resp) {
  return rpc::ServeCall("GetEngineInfo", auth_, *ctx, [&]() -> grpc::Status {
    resp->set_node_id(options_.node_id);
    resp->set_data_address(options_.data_address);
    resp->set_backend(options_.backend);
    resp->set_version(kEngineVersion);
    // A data dir that cannot be statted reports no capacity (so nothing is
    // placed here) rather than failing the call, which callers also use to
    // see that the engine is up.
    if (Result<FileSystemCapacity> fs = StatFileSystem(options_.data_dir); fs.ok()) {
      resp->set_capacity_total_bytes(fs->total_bytes);
      resp->set_capacity_free_bytes(fs->free_bytes);
      resp->set_capacity_available_bytes(fs->available_bytes);
    } else {
      TLOG_WARN(kTag, "GetEngineInfo: %s", fs.status().ToString().c_str());
    }
    uint64_t provisioned = 0;
    const std::vector<std::shared_ptr<replica::Replica>> all = replicas_->List();
    for (const auto& r : all) provisioned += r->summary().size;
    resp->set_replica_count(static_cast<uint32_t>(all.size()));
    resp->set_provisioned_bytes(provisioned);
    resp->set_target_count(static_cast<uint32_t>(targets_->List().size()));
    return grpc::Status::OK;
  });
}

grpc::Status EngineService::CreateReplica(Ctx* ctx, const pb::CreateReplicaRequest* req,
                                          pb::Replica* resp) {
  return rpc::ServeCall("CreateReplica", auth_, *ctx, [&]() -> grpc::Status {
    Result<replica::ReplicaConfig> config = ReplicaConfigFromProto(*req);
    if (!config.ok()) return ToGrpcStatus(config.status());
    if (!config->data_path.empty()) {
      if (Status st = CheckDataPath(config->data_path, config->volume_id, options_.data_dir,
                                    options_.allowed_devices);
          !st.ok()) {
        return ToGrpcStatus(st);
      }
    }
    if (Status st = CheckReplicaCapacity(*config, options_.data_dir); !st.ok()) {
      return ToGrpcStatus(st);
    }
    Result<std::shared_ptr<replica::Replica>> r = replicas_->Create(*config);
    if (!r.ok()) return ToGrpcStatus(r.status());
    TLOG_INFO(kTag, "CreateReplica %s (%s, %llu bytes): OK", req->volume_id().c_str(),
              req->replica_id().c_str(), static_cast<unsigned long long>(req->size_bytes()));
    ReplicaToProto(**r, resp);
    return grpc::Status::OK;
  });
}

grpc::Status EngineService::DeleteReplica(Ctx* ctx, const pb::DeleteReplicaRequest* req,
                                          pb::DeleteReplicaResponse*) {
  return rpc::ServeCall("DeleteReplica", auth_, *ctx, [&]() -> grpc::Status {
    if (Status st = ValidateId("volume_id", req->volume_id()); !st.ok()) {
      return ToGrpcStatus(st);
    }
    // Sessions hold the replica's shared_ptr; closing them first means no
    // write can reach the data file while (or after) it is removed.
    if (Status st = replica_server_->DetachVolume(req->volume_id()); !st.ok()) {
      return ToGrpcStatus(st.WithContext("detach volume " + req->volume_id()));
    }
    Status st = replicas_->Delete(req->volume_id());
    TLOG_INFO(kTag, "DeleteReplica %s: %s", req->volume_id().c_str(), st.ToString().c_str());
    return ToGrpcStatus(st);
  });
}

grpc::Status EngineService::GetReplica(Ctx* ctx, const pb::GetReplicaRequest* req,
                                       pb::Replica* resp) {
  return rpc::ServeCall("GetReplica", auth_, *ctx, [&]() -> grpc::Status {
    if (Status st = ValidateId("volume_id", req->volume_id()); !st.ok()) {
      return ToGrpcStatus(st);
    }
    Result<std::shared_ptr<replica::Replica>> r = replicas_->Get(req->volume_id());
    if (!r.ok()) return ToGrpcStatus(r.status());
    ReplicaToProto(**r, resp);
    return grpc::Status::OK;
  });
}

grpc::Status EngineService::ListReplicas(Ctx* ctx, const pb::ListReplicasRequest*,
                                         pb::ListReplicasResponse* resp) {
  return rpc::ServeCall("ListReplicas", auth_, *ctx, [&]() -> grpc::Status {
    std::vector<std::shared_ptr<replica::Replica>> all = replicas_->List();
    std::sort(all.begin(), all.end(),
              [](const auto& a, const auto& b) { return a->volume_id() < b->volume_id(); });
    for (const auto& r : all) ReplicaToProto(*r, resp->add_replicas());
    return grpc::Status::OK;
  });
}

grpc::Status EngineService::CreateTarget(Ctx* ctx, const pb::CreateTargetRequest* req,
                                         pb::Target* resp) {
  return rpc::ServeCall("CreateTarget", auth_, *ctx, [&]() -> grpc::Status {
    Result<attach::TargetSpec> spec = TargetSpecFromProto(*req, options_.target_defaults);
    if (!spec.ok()) return ToGrpcStatus(spec.status());
    if (!spec->nbd_tcp_address.empty()) {
      if (Status st = CheckNbdTcpAddress(spec->nbd_tcp_address, options_.allow_remote_nbd);
          !st.ok()) {
        return ToGrpcStatus(st);
      }
    }
    Result<attach::TargetInfo> info = targets_->Create(*spec);
    TLOG_INFO(kTag, "CreateTarget %s epoch %llu: %s", req->volume_id().c_str(),
              static_cast<unsigned long long>(req->epoch()),
              info.ok() ? "OK" : info.status().ToString().c_str());
    if (!info.ok()) return ToGrpcStatus(info.status());
    TargetToProto(*info, resp);
    return grpc::Status::OK;
  });
}

grpc::Status EngineService::DestroyTarget(Ctx* ctx, const pb::DestroyTargetRequest* req,
                                          pb::DestroyTargetResponse*) {
  return rpc::ServeCall("DestroyTarget", auth_, *ctx, [&]() -> grpc::Status {
    if (Status st = ValidateId("volume_id", req->volume_id()); !st.ok()) {
      return ToGrpcStatus(st);
    }
    Status st = targets_->Destroy(req->volume_id());
    TLOG_INFO(kTag, "DestroyTarget %s: %s", req->volume_id().c_str(), st.ToString().c_str());
    return ToGrpcStatus(st);
  });
}

grpc::Status EngineService::GetTarget(Ctx* ctx, const pb::GetTargetRequest* req, pb::Target* resp) {
  return rpc::ServeCall("GetTarget", auth_, *ctx, [&]() -> grpc::Status {
    if (Status st = ValidateId("volume_id", req->volume_id()); !st.ok()) {
      return ToGrpcStatus(st);
    }
    Result<attach::TargetInfo> info = targets_->Get(req->volume_id());
    if (!info.ok()) return ToGrpcStatus(info.status());
    TargetToProto(*info, resp);
    return grpc::Status::OK;
  });
}

grpc::Status EngineService::ListTargets(Ctx* ctx, const pb::ListTargetsRequest*,
                                        pb::ListTargetsResponse* resp) {
  return rpc::ServeCall("ListTargets", auth_, *ctx, [&]() -> grpc::Status {
    std::vector<attach::TargetInfo> all = targets_->List();
    std::sort(all.begin(), all.end(),
              [](const auto& a, const auto& b) { return a.volume_id < b.volume_id; });
    for (const auto& t : all) TargetToProto(t, resp->add_targets());
    return grpc::Status::OK;
  });
}

grpc::Status EngineService::ReplyWithTarget(const Status& st, const std::string& volume_id,
                                            pb::Target* resp) {
  if (!st.ok()) return ToGrpcStatus(st);
  Result<attach::TargetInfo> info = targets_->Get(volume_id);
  if (!info.ok()) return ToGrpcStatus(info.status());  // destroyed meanwhile
  TargetToProto(*info, resp);
  return grpc::Status::OK;
}

grpc::Status EngineService::AddTargetReplica(Ctx* ctx, const pb::AddTargetReplicaRequest* req,
                                             pb::Target* resp) {
  return rpc::ServeCall("AddTargetReplica", auth_, *ctx, [&]() -> grpc::Status {
    if (Status st = ValidateId("volume_id", req->volume_id()); !st.ok()) {
      return ToGrpcStatus(st);
    }
    Result<target::ReplicaEndpoint> endpoint = EndpointFromProto("replica", req->replica());
    if (!endpoint.ok()) return ToGrpcStatus(endpoint.status());
    Status st = targets_->AddReplica(req->volume_id(), *endpoint);
    TLOG_INFO(kTag, "AddTargetReplica %s %s:%u: %s", req->volume_id().c_str(),
              endpoint->host.c_str(), endpoint->port, st.ToString().c_str());
    return ReplyWithTarget(st, req->volume_id(), resp);
  });
}

grpc::Status EngineService::RemoveTargetReplica(Ctx* ctx, const pb::RemoveTargetReplicaRequest* req,
                                                pb::Target* resp) {
  return rpc::ServeCall("RemoveTargetReplica", auth_, *ctx, [&]() -> grpc::Status {
    if (Status st = ValidateId("volume_id", req->volume_id()); !st.ok()) {
      return ToGrpcStatus(st);
    }
    Result<std::string> address = ReplicaAddressFromProto("address", req->address());
    if (!address.ok()) return ToGrpcStatus(address.status());
    Status st = targets_->RemoveReplica(req->volume_id(), *address);
    TLOG_INFO(kTag, "RemoveTargetReplica %s %s: %s", req->volume_id().c_str(), address->c_str(),
              st.ToString().c_str());
    return ReplyWithTarget(st, req->volume_id(), resp);
  });
}

grpc::Status EngineService::RebuildTargetReplica(Ctx* ctx,
                                                 const pb::RebuildTargetReplicaRequest* req,
                                                 pb::Target* resp) {
  return rpc::ServeCall("RebuildTargetReplica", auth_, *ctx, [&]() -> grpc::Status {
    if (Status st = ValidateId("volume_id", req->volume_id()); !st.ok()) {
      return ToGrpcStatus(st);
    }
    Result<std::string> address = ReplicaAddressFromProto("address", req->address());
    if (!address.ok()) return ToGrpcStatus(address.status());
    Status st = targets_->RebuildReplica(req->volume_id(), *address);
    TLOG_INFO(kTag, "RebuildTargetReplica %s %s: %s", req->volume_id().c_str(), address->c_str(),
              st.ToString().c_str());
    return ReplyWithTarget(st, req->volume_id(), resp);
  });
}

grpc::Status EngineService::SetRebuildRate(Ctx* ctx, const pb::SetRebuildRateRequest* req,
                                           pb::Target* resp) {
  return rpc::ServeCall("SetRebuildRate", auth_, *ctx, [&]() -> grpc::Status {
    if (Status st = ValidateId("volume_id", req->volume_id()); !st.ok()) {
      return ToGrpcStatus(st);
    }
    if (Status st = ValidateRebuildRate("bytes_per_sec", req->bytes_per_sec()); !st.ok()) {
      return ToGrpcStatus(st);
    }
    Status st = targets_->SetRebuildRate(req->volume_id(), req->bytes_per_sec());
    TLOG_INFO(kTag, "SetRebuildRate %s %llu: %s", req->volume_id().c_str(),
              static_cast<unsigned long long>(req->bytes_per_sec()), st.ToString().c_str());
    return ReplyWithTarget(st, req->volume_id(), resp);
  });
}

grpc::Status EngineService::ResizeReplica(Ctx* ctx, const pb::ResizeReplicaRequest* req,
                                          pb::Replica* resp) {
  return rpc::ServeCall("ResizeReplica", auth_, *ctx, [&]() -> grpc::Status {
    if (Status st = ValidateResizeReplica(*req); !st.ok()) return ToGrpcStatus(st);
    Result<std::shared_ptr<replica::Replica>> r = replicas_->Get(req->volume_id());
    if (!r.ok()) return ToGrpcStatus(r.status());
    const replica::ReplicaSummary md = (*r)->summary();
    if (req->size_bytes() < md.size) {
      return ToGrpcStatus(Status::OutOfRange("size_bytes " + std::to_string(req->size_bytes()) +
                                             " is smaller than the replica's " +
                                             std::to_string(md.size) + " bytes: never shrunk"));
    }
    if (req->size_bytes() > md.size) {
      // On the replica server's loop: it owns the replica's metadata and the
      // sessions that must see the new size.
      Status st = replica_server_->ResizeVolume(req->volume_id(), req->size_bytes());
      TLOG_INFO(kTag, "ResizeReplica %s to %llu bytes: %s", req->volume_id().c_str(),
                static_cast<unsigned long long>(req->size_bytes()), st.ToString().c_str());
      if (!st.ok()) return ToGrpcStatus(st);
    }
    ReplicaToProto(**r, resp);
    return grpc::Status::OK;
  });
}

grpc::Status EngineService::ResizeTarget(Ctx* ctx, const pb::ResizeTargetRequest* req,
                                         pb::Target* resp) {
  return rpc::ServeCall("ResizeTarget", auth_, *ctx, [&]() -> grpc::Status {
    if (Status st = ValidateResizeTarget(*req); !st.ok()) return ToGrpcStatus(st);
    Result<attach::TargetInfo> info = targets_->Get(req->volume_id());
    if (!info.ok()) return ToGrpcStatus(info.status());
    if (req->size_bytes() < info->status.size) {
      return ToGrpcStatus(Status::OutOfRange(
          "size_bytes " + std::to_string(req->size_bytes()) + " is smaller than the volume's " +
          std::to_string(info->status.size) + " bytes: never shrunk"));
    }
    if (req->size_bytes() == info->status.size) {
      TargetToProto(*info, resp);
      return grpc::Status::OK;
    }
    // Online expansion: the caller grew the replicas first (ResizeReplica).
    Status st = targets_->Resize(req->volume_id(), req->size_bytes());
    TLOG_INFO(kTag, "ResizeTarget %s to %llu bytes: %s", req->volume_id().c_str(),
              static_cast<unsigned long long>(req->size_bytes()), st.ToString().c_str());
    return ReplyWithTarget(st, req->volume_id(), resp);
  });
}

grpc::Status EngineService::FenceReplica(Ctx* ctx, const pb::FenceReplicaRequest* req,
                                         pb::Replica* resp) {
  return rpc::ServeCall("FenceReplica", auth_, *ctx, [&]() -> grpc::Status {
    if (Status st = ValidateFenceReplica(*req); !st.ok()) return ToGrpcStatus(st);
    Result<std::shared_ptr<replica::Replica>> r = replicas_->Get(req->volume_id());
    if (!r.ok()) return ToGrpcStatus(r.status());
    // An epoch at or above the requested one already refuses every older
    // session: nothing to do, and the answer is the same on a retry.
    if ((*r)->summary().highest_epoch < req->epoch()) {
      // Raising it needs the replica server: it owns the replica's metadata
      // (changed on its loop only) and the live sessions to supersede.
      Status st = replica_server_->FenceVolume(req->volume_id(), req->epoch());
      TLOG_INFO(kTag, "FenceReplica %s at epoch %llu: %s", req->volume_id().c_str(),
                static_cast<unsigned long long>(req->epoch()), st.ToString().c_str());
      if (!st.ok()) return ToGrpcStatus(st);
    }
    ReplicaToProto(**r, resp);
    return grpc::Status::OK;
  });
}

}  // namespace tandem::service
