#include "replica-engine/api/engine_client.h"

#include <grpcpp/client_context.h>

#include <utility>

#include "common/grpc/bearer_auth.h"
#include "common/grpc/client_channel.h"
#include "common/grpc/grpc_status.h"

namespace tandem::api {
namespace {

using rpc::FromGrpcStatus;

namespace pb = ::tandem::engine::v1;

// Turns a unary call's outcome into a Result.
template <typename Resp>
Result<Resp> Finish(const grpc::Status& status, Resp resp) {
  if (!status.ok()) return FromGrpcStatus(status);
  return resp;
}

}  // namespace

EngineClient::EngineClient(const std::string& address, std::string token)
    : EngineClient(rpc::NewClientChannel(address), std::move(token)) {}

EngineClient::EngineClient(std::shared_ptr<grpc::Channel> channel, std::string token)
    : token_(std::move(token)), stub_(pb::Engine::NewStub(std::move(channel))) {}

Result<std::unique_ptr<EngineClient>> EngineClient::Connect(const std::string& address,
                                                            std::string token,
                                                            const rpc::TlsConfig& tls) {
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                          rpc::NewClientChannel(address, tls));
  return std::unique_ptr<EngineClient>(new EngineClient(std::move(channel), std::move(token)));
}

std::unique_ptr<grpc::ClientContext> EngineClient::NewContext(Timeout timeout) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  rpc::AddBearerToken(ctx.get(), token_);
  return ctx;
}

Result<pb::EngineInfo> EngineClient::GetEngineInfo(Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::EngineInfo resp;
  grpc::Status st = stub_->GetEngineInfo(ctx.get(), pb::GetEngineInfoRequest(), &resp);
  return Finish(st, std::move(resp));
}

Result<pb::Replica> EngineClient::CreateReplica(const pb::CreateReplicaRequest& req,
                                                Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::Replica resp;
  grpc::Status st = stub_->CreateReplica(ctx.get(), req, &resp);
  return Finish(st, std::move(resp));
}

Status EngineClient::DeleteReplica(const std::string& volume_id, Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::DeleteReplicaRequest req;
  req.set_volume_id(volume_id);
  pb::DeleteReplicaResponse resp;
  return FromGrpcStatus(stub_->DeleteReplica(ctx.get(), req, &resp));
}

Result<pb::Replica> EngineClient::GetReplica(const std::string& volume_id, Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::GetReplicaRequest req;
  req.set_volume_id(volume_id);
  pb::Replica resp;
  grpc::Status st = stub_->GetReplica(ctx.get(), req, &resp);
  return Finish(st, std::move(resp));
}

Result<std::vector<pb::Replica>> EngineClient::ListReplicas(Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::ListReplicasResponse resp;
  grpc::Status st = stub_->ListReplicas(ctx.get(), pb::ListReplicasRequest(), &resp);
  if (!st.ok()) return FromGrpcStatus(st);
  return std::vector<pb::Replica>(resp.replicas().begin(), resp.replicas().end());
}

Result<pb::Target> EngineClient::CreateTarget(const pb::CreateTargetRequest& req, Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::Target resp;
  grpc::Status st = stub_->CreateTarget(ctx.get(), req, &resp);
  return Finish(st, std::move(resp));
}

Status EngineClient::DestroyTarget(const std::string& volume_id, Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::DestroyTargetRequest req;
  req.set_volume_id(volume_id);
  pb::DestroyTargetResponse resp;
  return FromGrpcStatus(stub_->DestroyTarget(ctx.get(), req, &resp));
}

Result<pb::Target> EngineClient::GetTarget(const std::string& volume_id, Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::GetTargetRequest req;
  req.set_volume_id(volume_id);
  pb::Target resp;
  grpc::Status st = stub_->GetTarget(ctx.get(), req, &resp);
  return Finish(st, std::move(resp));
}

Result<std::vector<pb::Target>> EngineClient::ListTargets(Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::ListTargetsResponse resp;
  grpc::Status st = stub_->ListTargets(ctx.get(), pb::ListTargetsRequest(), &resp);
  if (!st.ok()) return FromGrpcStatus(st);
  return std::vector<pb::Target>(resp.targets().begin(), resp.targets().end());
}

Result<pb::Target> EngineClient::AddTargetReplica(const std::string& volume_id,
                                                  const pb::ReplicaEndpoint& replica,
                                                  Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::AddTargetReplicaRequest req;
  req.set_volume_id(volume_id);
  *req.mutable_replica() = replica;
  pb::Target resp;
  grpc::Status st = stub_->AddTargetReplica(ctx.get(), req, &resp);
  return Finish(st, std::move(resp));
}

Result<pb::Target> EngineClient::RemoveTargetReplica(const std::string& volume_id,
                                                     const std::string& address, Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::RemoveTargetReplicaRequest req;
  req.set_volume_id(volume_id);
  req.set_address(address);
  pb::Target resp;
  grpc::Status st = stub_->RemoveTargetReplica(ctx.get(), req, &resp);
  return Finish(st, std::move(resp));
}

Result<pb::Target> EngineClient::RebuildTargetReplica(const std::string& volume_id,
                                                      const std::string& address, Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::RebuildTargetReplicaRequest req;
  req.set_volume_id(volume_id);
  req.set_address(address);
  pb::Target resp;
  grpc::Status st = stub_->RebuildTargetReplica(ctx.get(), req, &resp);
  return Finish(st, std::move(resp));
}

Result<pb::Target> EngineClient::SetRebuildRate(const std::string& volume_id,
                                                uint64_t bytes_per_sec, Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::SetRebuildRateRequest req;
  req.set_volume_id(volume_id);
  req.set_bytes_per_sec(bytes_per_sec);
  pb::Target resp;
  grpc::Status st = stub_->SetRebuildRate(ctx.get(), req, &resp);
  return Finish(st, std::move(resp));
}

Result<pb::Replica> EngineClient::ResizeReplica(const std::string& volume_id, uint64_t size_bytes,
                                                Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::ResizeReplicaRequest req;
  req.set_volume_id(volume_id);
  req.set_size_bytes(size_bytes);
  pb::Replica resp;
  grpc::Status st = stub_->ResizeReplica(ctx.get(), req, &resp);
  return Finish(st, std::move(resp));
}

Result<pb::Target> EngineClient::ResizeTarget(const std::string& volume_id, uint64_t size_bytes,
                                              Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::ResizeTargetRequest req;
  req.set_volume_id(volume_id);
  req.set_size_bytes(size_bytes);
  pb::Target resp;
  grpc::Status st = stub_->ResizeTarget(ctx.get(), req, &resp);
  return Finish(st, std::move(resp));
}

Result<pb::Replica> EngineClient::FenceReplica(const std::string& volume_id, uint64_t epoch,
                                               Timeout timeout) {
  auto ctx = NewContext(timeout);
  pb::FenceReplicaRequest req;
  req.set_volume_id(volume_id);
  req.set_epoch(epoch);
  pb::Replica resp;
  grpc::Status st = stub_->FenceReplica(ctx.get(), req, &resp);
  return Finish(st, std::move(resp));
}

}  // namespace tandem::api
