#include "replica-engine/api/engine_service.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "common/logging.h"
#include "replica-engine/api/grpc_status.h"
#include "replica-engine/api/proto_convert.h"
#include "replica-engine/api/secure_defaults.h"

#ifndef TANDEM_VERSION
#define TANDEM_VERSION "0.0.0"
#endif

namespace tandem::api {

const char kEngineVersion[] = TANDEM_VERSION;

namespace {

constexpr char kTag[] = "engine_api";
constexpr char kBearer[] = "Bearer ";

namespace pb = ::tandem::engine::v1;

// Compares in time independent of where the strings differ, so the token
// cannot be guessed byte by byte from response times.
bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

namespace internal {

grpc::Status AnswerBadAlloc(const char* method) noexcept {
  try {
    TLOG_ERROR(kTag, "%s: out of memory (std::bad_alloc); the call fails, the engine goes on",
               method);
    return grpc::Status(grpc::RESOURCE_EXHAUSTED, std::string(method) + ": out of memory");
  } catch (...) {
    return grpc::Status(grpc::RESOURCE_EXHAUSTED, std::string());
  }
}

grpc::Status AnswerException(const char* method, const char* what) noexcept {
  try {
    TLOG_ERROR(kTag, "%s: unexpected exception: %s", method, what);
    return grpc::Status(grpc::INTERNAL, std::string(method) + ": unexpected exception: " + what);
  } catch (...) {
    return grpc::Status(grpc::INTERNAL, std::string());
  }
}

}  // namespace internal

EngineService::EngineService(replica::ReplicaManager* replicas,
                             server::ReplicaServer* replica_server, target::TargetManager* targets,
                             EngineServiceOptions options)
    : replicas_(replicas),
      replica_server_(replica_server),
      targets_(targets),
      options_(std::move(options)) {}

Status EngineService::Authorize(const Ctx* ctx) const {
  if (options_.mgmt_token.empty()) return Status::Ok();
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return Status::Unauthenticated("missing authorization metadata");
  std::string_view value(it->second.data(), it->second.size());
  std::string_view prefix(kBearer);
  if (value.substr(0, prefix.size()) != prefix ||
      !ConstantTimeEqual(value.substr(prefix.size()), options_.mgmt_token)) {
    return Status::Unauthenticated("bad management token");
  }
  return Status::Ok();
}

grpc::Status EngineService::GetEngineInfo(Ctx* ctx, const pb::GetEngineInfoRequest*,
                                          pb::EngineInfo* resp) {
  return GuardHandler("GetEngineInfo", [&]() -> grpc::Status {
    if (Status st = Authorize(ctx); !st.ok()) return ToGrpcStatus(st);
    resp->set_node_id(options_.node_id);
    resp->set_data_address(options_.data_address);
    resp->set_backend(options_.backend);
    resp->set_version(kEngineVersion);
    return grpc::Status::OK;
  });
}

grpc::Status EngineService::CreateReplica(Ctx* ctx, const pb::CreateReplicaRequest* req,
                                          pb::Replica* resp) {
  return GuardHandler("CreateReplica", [&]() -> grpc::Status {
    if (Status st = Authorize(ctx); !st.ok()) return ToGrpcStatus(st);
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
  return GuardHandler("DeleteReplica", [&]() -> grpc::Status {
    if (Status st = Authorize(ctx); !st.ok()) return ToGrpcStatus(st);
    if (Status st = replica::ValidateId("volume_id", req->volume_id()); !st.ok()) {
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
  return GuardHandler("GetReplica", [&]() -> grpc::Status {
    if (Status st = Authorize(ctx); !st.ok()) return ToGrpcStatus(st);
    if (Status st = replica::ValidateId("volume_id", req->volume_id()); !st.ok()) {
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
  return GuardHandler("ListReplicas", [&]() -> grpc::Status {
    if (Status st = Authorize(ctx); !st.ok()) return ToGrpcStatus(st);
    std::vector<std::shared_ptr<replica::Replica>> all = replicas_->List();
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
      return a->metadata().volume_id < b->metadata().volume_id;
    });
    for (const auto& r : all) ReplicaToProto(*r, resp->add_replicas());
    return grpc::Status::OK;
  });
}

grpc::Status EngineService::CreateTarget(Ctx* ctx, const pb::CreateTargetRequest* req,
                                         pb::Target* resp) {
  return GuardHandler("CreateTarget", [&]() -> grpc::Status {
    if (Status st = Authorize(ctx); !st.ok()) return ToGrpcStatus(st);
    Result<target::TargetSpec> spec = TargetSpecFromProto(*req, options_.target_defaults);
    if (!spec.ok()) return ToGrpcStatus(spec.status());
    if (!spec->nbd_tcp_address.empty()) {
      if (Status st = CheckNbdTcpAddress(spec->nbd_tcp_address, options_.allow_remote_nbd);
          !st.ok()) {
        return ToGrpcStatus(st);
      }
    }
    Result<target::TargetInfo> info = targets_->Create(*spec);
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
  return GuardHandler("DestroyTarget", [&]() -> grpc::Status {
    if (Status st = Authorize(ctx); !st.ok()) return ToGrpcStatus(st);
    if (Status st = replica::ValidateId("volume_id", req->volume_id()); !st.ok()) {
      return ToGrpcStatus(st);
    }
    Status st = targets_->Destroy(req->volume_id());
    TLOG_INFO(kTag, "DestroyTarget %s: %s", req->volume_id().c_str(), st.ToString().c_str());
    return ToGrpcStatus(st);
  });
}

grpc::Status EngineService::GetTarget(Ctx* ctx, const pb::GetTargetRequest* req, pb::Target* resp) {
  return GuardHandler("GetTarget", [&]() -> grpc::Status {
    if (Status st = Authorize(ctx); !st.ok()) return ToGrpcStatus(st);
    if (Status st = replica::ValidateId("volume_id", req->volume_id()); !st.ok()) {
      return ToGrpcStatus(st);
    }
    Result<target::TargetInfo> info = targets_->Get(req->volume_id());
    if (!info.ok()) return ToGrpcStatus(info.status());
    TargetToProto(*info, resp);
    return grpc::Status::OK;
  });
}

grpc::Status EngineService::ListTargets(Ctx* ctx, const pb::ListTargetsRequest*,
                                        pb::ListTargetsResponse* resp) {
  return GuardHandler("ListTargets", [&]() -> grpc::Status {
    if (Status st = Authorize(ctx); !st.ok()) return ToGrpcStatus(st);
    std::vector<target::TargetInfo> all = targets_->List();
    std::sort(all.begin(), all.end(),
              [](const auto& a, const auto& b) { return a.volume_id < b.volume_id; });
    for (const auto& t : all) TargetToProto(t, resp->add_targets());
    return grpc::Status::OK;
  });
}

grpc::Status EngineService::ReplyWithTarget(const Status& st, const std::string& volume_id,
                                            pb::Target* resp) {
  if (!st.ok()) return ToGrpcStatus(st);
  Result<target::TargetInfo> info = targets_->Get(volume_id);
  if (!info.ok()) return ToGrpcStatus(info.status());  // destroyed meanwhile
  TargetToProto(*info, resp);
  return grpc::Status::OK;
}

grpc::Status EngineService::AddTargetReplica(Ctx* ctx, const pb::AddTargetReplicaRequest* req,
                                             pb::Target* resp) {
  return GuardHandler("AddTargetReplica", [&]() -> grpc::Status {
    if (Status st = Authorize(ctx); !st.ok()) return ToGrpcStatus(st);
    if (Status st = replica::ValidateId("volume_id", req->volume_id()); !st.ok()) {
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
  return GuardHandler("RemoveTargetReplica", [&]() -> grpc::Status {
    if (Status st = Authorize(ctx); !st.ok()) return ToGrpcStatus(st);
    if (Status st = replica::ValidateId("volume_id", req->volume_id()); !st.ok()) {
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
  return GuardHandler("RebuildTargetReplica", [&]() -> grpc::Status {
    if (Status st = Authorize(ctx); !st.ok()) return ToGrpcStatus(st);
    if (Status st = replica::ValidateId("volume_id", req->volume_id()); !st.ok()) {
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
  return GuardHandler("SetRebuildRate", [&]() -> grpc::Status {
    if (Status st = Authorize(ctx); !st.ok()) return ToGrpcStatus(st);
    if (Status st = replica::ValidateId("volume_id", req->volume_id()); !st.ok()) {
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

}  // namespace tandem::api
