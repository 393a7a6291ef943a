#include "controller/engine_directory.h"

#include <utility>

#include "replica-engine/api/engine_client.h"

namespace tandem::controller {

GrpcEngineDirectory::GrpcEngineDirectory(std::string token) : token_(std::move(token)) {}
GrpcEngineDirectory::~GrpcEngineDirectory() = default;

api::EngineClient* GrpcEngineDirectory::Client(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& client = clients_[address];
  if (!client) client = std::make_unique<api::EngineClient>(address, token_);
  return client.get();
}

Result<epb::EngineInfo> GrpcEngineDirectory::GetEngineInfo(const std::string& address,
                                                           Timeout timeout) {
  return Client(address)->GetEngineInfo(timeout);
}

Result<epb::Replica> GrpcEngineDirectory::CreateReplica(const std::string& address,
                                                        const epb::CreateReplicaRequest& req,
                                                        Timeout timeout) {
  return Client(address)->CreateReplica(req, timeout);
}

Status GrpcEngineDirectory::DeleteReplica(const std::string& address, const std::string& volume_id,
                                          Timeout timeout) {
  return Client(address)->DeleteReplica(volume_id, timeout);
}

Result<uint64_t> GrpcEngineDirectory::FenceReplica(const std::string& address,
                                                   const std::string& volume_id, uint64_t epoch,
                                                   Timeout timeout) {
  auto r = Client(address)->FenceReplica(volume_id, epoch, timeout);
  if (!r.ok()) return r.status();
  if (r->highest_epoch() < epoch) {
    return Status::Internal("FenceReplica answered OK at epoch " +
                            std::to_string(r->highest_epoch()) + " < " + std::to_string(epoch));
  }
  return r->generation();
}

Status GrpcEngineDirectory::SetRebuildRate(const std::string& address, const std::string& volume_id,
                                           uint64_t bytes_per_sec, Timeout timeout) {
  auto r = Client(address)->SetRebuildRate(volume_id, bytes_per_sec, timeout);
  return r.ok() ? Status::Ok() : r.status();
}

Result<epb::Replica> GrpcEngineDirectory::GetReplica(const std::string& address,
                                                     const std::string& volume_id,
                                                     Timeout timeout) {
  return Client(address)->GetReplica(volume_id, timeout);
}

Result<epb::Target> GrpcEngineDirectory::GetTarget(const std::string& address,
                                                   const std::string& volume_id, Timeout timeout) {
  return Client(address)->GetTarget(volume_id, timeout);
}

Status GrpcEngineDirectory::AddTargetReplica(const std::string& address,
                                             const std::string& volume_id,
                                             const epb::ReplicaEndpoint& replica, Timeout timeout) {
  auto r = Client(address)->AddTargetReplica(volume_id, replica, timeout);
  return r.ok() ? Status::Ok() : r.status();
}

Status GrpcEngineDirectory::RemoveTargetReplica(const std::string& address,
                                                const std::string& volume_id,
                                                const std::string& replica_address,
                                                Timeout timeout) {
  auto r = Client(address)->RemoveTargetReplica(volume_id, replica_address, timeout);
  return r.ok() ? Status::Ok() : r.status();
}

Status GrpcEngineDirectory::ResizeReplica(const std::string& address, const std::string& volume_id,
                                          uint64_t size_bytes, Timeout timeout) {
  auto r = Client(address)->ResizeReplica(volume_id, size_bytes, timeout);
  return r.ok() ? Status::Ok() : r.status();
}

Status GrpcEngineDirectory::ResizeTarget(const std::string& address, const std::string& volume_id,
                                         uint64_t size_bytes, Timeout timeout) {
  auto r = Client(address)->ResizeTarget(volume_id, size_bytes, timeout);
  return r.ok() ? Status::Ok() : r.status();
}

}  // namespace tandem::controller
