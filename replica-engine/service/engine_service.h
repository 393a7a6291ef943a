#pragma once
// EngineService: the tandem-engine management API (replica-engine/proto/
// engine.proto) over the node's ReplicaManager, ReplicaServer and
// TargetManager.
//
// Every request is validated here, before it reaches a manager, so a bad
// request is INVALID_ARGUMENT (OUT_OF_RANGE for a size beyond the engine's
// limits, PERMISSION_DENIED for a data_path or nbd_tcp_address the secure
// defaults refuse: secure_defaults.h) naming the field and never
// half-applied. Errors are our Status
// codes, which are gRPC's (common/grpc/grpc_status.h). No handler lets an
// exception out: each runs in rpc::ServeCall (common/grpc/handler_guard.h),
// which answers std::bad_alloc with RESOURCE_EXHAUSTED and any other
// exception with INTERNAL, and logs it; the engine keeps serving. When a
// management token is configured every call must carry the metadata
// "authorization: Bearer <token>", else UNAUTHENTICATED.
//
// Thread-safety: gRPC calls the handlers from its own threads, concurrently;
// the service keeps no mutable state of its own and the managers are
// thread-safe.

#include <cstdint>
#include <string>
#include <vector>

#include "common/grpc/bearer_auth.h"
#include "replica-engine/proto/engine.grpc.pb.h"
#include "replica-engine/replica/replica_manager.h"
#include "replica-engine/server/replica_server.h"
#include "replica-engine/service/proto_convert.h"
#include "replica-engine/attach/target_manager.h"

namespace tandem::service {

// tandem-engine's version, reported by GetEngineInfo.
extern const char kEngineVersion[];

struct EngineServiceOptions {
  std::string node_id;
  // Data-protocol address targets connect to ("host:port").
  std::string data_address;
  // Storage backend in use ("io_uring" / "libaio").
  std::string backend;
  // CreateTarget's request_timeout_ms, reconnect_interval_ms and
  // rebuild_rate_bytes_per_sec when the request says 0.
  TargetDefaults target_defaults;
  // Empty: no authentication.
  std::string mgmt_token;
  // The ReplicaManager's root; required. CreateReplica bounds size_bytes by
  // the total size of its file system (CheckReplicaCapacity) and fails if it
  // cannot statvfs it.
  std::string data_dir;
  // Secure defaults (secure_defaults.h, docs/security.md): a CreateReplica
  // data_path must be under data_dir or one of these (tandem-engine
  // --allowed-device); a CreateTarget nbd_tcp_address must be loopback
  // unless allow_remote_nbd (--allow-remote-nbd).
  std::vector<std::string> allowed_devices;
  bool allow_remote_nbd = false;
};

class EngineService final : public ::tandem::engine::v1::Engine::Service {
 public:
  // REQUIRES: the managers and the server outlive the service (and the gRPC
  // server it is registered with).
  EngineService(replica::ReplicaManager* replicas, server::ReplicaServer* replica_server,
                attach::TargetManager* targets, EngineServiceOptions options);

  using Ctx = grpc::ServerContext;
  grpc::Status GetEngineInfo(Ctx* ctx, const engine::v1::GetEngineInfoRequest* req,
                             engine::v1::EngineInfo* resp) override;
  grpc::Status CreateReplica(Ctx* ctx, const engine::v1::CreateReplicaRequest* req,
                             engine::v1::Replica* resp) override;
  grpc::Status DeleteReplica(Ctx* ctx, const engine::v1::DeleteReplicaRequest* req,
                             engine::v1::DeleteReplicaResponse* resp) override;
  grpc::Status GetReplica(Ctx* ctx, const engine::v1::GetReplicaRequest* req,
                          engine::v1::Replica* resp) override;
  grpc::Status ListReplicas(Ctx* ctx, const engine::v1::ListReplicasRequest* req,
                            engine::v1::ListReplicasResponse* resp) override;
  grpc::Status CreateTarget(Ctx* ctx, const engine::v1::CreateTargetRequest* req,
                            engine::v1::Target* resp) override;
  grpc::Status DestroyTarget(Ctx* ctx, const engine::v1::DestroyTargetRequest* req,
                             engine::v1::DestroyTargetResponse* resp) override;
  grpc::Status GetTarget(Ctx* ctx, const engine::v1::GetTargetRequest* req,
                         engine::v1::Target* resp) override;
  grpc::Status ListTargets(Ctx* ctx, const engine::v1::ListTargetsRequest* req,
                           engine::v1::ListTargetsResponse* resp) override;
  grpc::Status AddTargetReplica(Ctx* ctx, const engine::v1::AddTargetReplicaRequest* req,
                                engine::v1::Target* resp) override;
  grpc::Status RemoveTargetReplica(Ctx* ctx, const engine::v1::RemoveTargetReplicaRequest* req,
                                   engine::v1::Target* resp) override;
  grpc::Status RebuildTargetReplica(Ctx* ctx, const engine::v1::RebuildTargetReplicaRequest* req,
                                    engine::v1::Target* resp) override;
  grpc::Status SetRebuildRate(Ctx* ctx, const engine::v1::SetRebuildRateRequest* req,
                              engine::v1::Target* resp) override;
  // Validated; the same size (an epoch already in force) changes nothing;
  // otherwise the replica server grows or fences the replica, and the
  // target manager grows the live target (engine.proto).
  grpc::Status ResizeReplica(Ctx* ctx, const engine::v1::ResizeReplicaRequest* req,
                             engine::v1::Replica* resp) override;
  grpc::Status ResizeTarget(Ctx* ctx, const engine::v1::ResizeTargetRequest* req,
                            engine::v1::Target* resp) override;
  grpc::Status FenceReplica(Ctx* ctx, const engine::v1::FenceReplicaRequest* req,
                            engine::v1::Replica* resp) override;

 private:
  // Answers a target call that changed `volume_id`'s target: `st` if it
  // failed, else the target as it is now.
  grpc::Status ReplyWithTarget(const Status& st, const std::string& volume_id,
                               engine::v1::Target* resp);

  replica::ReplicaManager* replicas_;
  server::ReplicaServer* replica_server_;
  attach::TargetManager* targets_;
  EngineServiceOptions options_;
  rpc::BearerTokenAuth auth_;  // options_.mgmt_token
};

}  // namespace tandem::service
