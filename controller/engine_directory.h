#pragma once
// EngineDirectory: every call the controller makes to a node's tandem-engine,
// behind one small interface, keyed by the engine's management address
// (NodeRecord.engine_address). The controller links only the typed engine
// client (tandem::api_client), never the data plane.
//
// GrpcEngineDirectory keeps one EngineClient (one gRPC channel) per address.
// Errors are the engine's (engine.proto), unchanged; an engine that cannot be
// reached is UNAVAILABLE or DEADLINE_EXCEEDED.
//
// Thread-safety: every method may be called concurrently.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/result.h"
#include "replica-engine/proto/engine.pb.h"

namespace tandem::api {
class EngineClient;
}  // namespace tandem::api

namespace tandem::controller {

namespace epb = ::tandem::engine::v1;

class EngineDirectory {
 public:
  using Timeout = std::chrono::milliseconds;
  virtual ~EngineDirectory() = default;

  virtual Result<epb::EngineInfo> GetEngineInfo(const std::string& address, Timeout timeout) = 0;
  // Idempotent (the engine's CreateReplica).
  virtual Result<epb::Replica> CreateReplica(const std::string& address,
                                             const epb::CreateReplicaRequest& req,
                                             Timeout timeout) = 0;
  // The replica of the volume on that engine (its generation and generation
  // id). NOT_FOUND when it has none.
  virtual Result<epb::Replica> GetReplica(const std::string& address, const std::string& volume_id,
                                          Timeout timeout) = 0;
  // OK when absent.
  virtual Status DeleteReplica(const std::string& address, const std::string& volume_id,
                               Timeout timeout) = 0;
  // Raises the replica's highest accepted epoch to at least `epoch`, closing
  // the sessions of every lower epoch (persisted before it answers), so a
  // target with a lower epoch can never write it again. Answers the
  // replica's generation (0: it never held data).
  virtual Result<uint64_t> FenceReplica(const std::string& address, const std::string& volume_id,
                                        uint64_t epoch, Timeout timeout) = 0;
  // Changes the rebuild rate of the volume's target on that engine (0:
  // unlimited). NOT_FOUND when the volume has no target there.
  virtual Status SetRebuildRate(const std::string& address, const std::string& volume_id,
                                uint64_t bytes_per_sec, Timeout timeout) = 0;
  // The volume's live target on that engine gains / loses a replica
  // (engine.proto AddTargetReplica / RemoveTargetReplica). NOT_FOUND when the
  // volume has no target there.
  // Grows the replica (never shrinks; the same size is OK).
  virtual Status ResizeReplica(const std::string& address, const std::string& volume_id,
                               uint64_t size_bytes, Timeout timeout) = 0;
  // Grows the volume's live target there (after its replicas). NOT_FOUND when
  // the volume has no target there.
  virtual Status ResizeTarget(const std::string& address, const std::string& volume_id,
                              uint64_t size_bytes, Timeout timeout) = 0;
  virtual Status AddTargetReplica(const std::string& address, const std::string& volume_id,
                                  const epb::ReplicaEndpoint& replica, Timeout timeout) = 0;
  virtual Status RemoveTargetReplica(const std::string& address, const std::string& volume_id,
                                     const std::string& replica_address, Timeout timeout) = 0;
  // The volume's target on that engine (its state, replicas, rebuild), for
  // the volume's health. NOT_FOUND when the volume has no target there.
  virtual Result<epb::Target> GetTarget(const std::string& address, const std::string& volume_id,
                                        Timeout timeout) = 0;
};

class GrpcEngineDirectory final : public EngineDirectory {
 public:
  // `token`: the engines' management token (empty: none).
  explicit GrpcEngineDirectory(std::string token);
  ~GrpcEngineDirectory() override;

  Result<epb::EngineInfo> GetEngineInfo(const std::string& address, Timeout timeout) override;
  Result<epb::Replica> CreateReplica(const std::string& address,
                                     const epb::CreateReplicaRequest& req,
                                     Timeout timeout) override;
  Result<epb::Replica> GetReplica(const std::string& address, const std::string& volume_id,
                                  Timeout timeout) override;
  Status DeleteReplica(const std::string& address, const std::string& volume_id,
                       Timeout timeout) override;
  Result<uint64_t> FenceReplica(const std::string& address, const std::string& volume_id,
                                uint64_t epoch, Timeout timeout) override;
  Status SetRebuildRate(const std::string& address, const std::string& volume_id,
                        uint64_t bytes_per_sec, Timeout timeout) override;
  Status ResizeReplica(const std::string& address, const std::string& volume_id,
                       uint64_t size_bytes, Timeout timeout) override;
  Status ResizeTarget(const std::string& address, const std::string& volume_id, uint64_t size_bytes,
                      Timeout timeout) override;
  Status AddTargetReplica(const std::string& address, const std::string& volume_id,
                          const epb::ReplicaEndpoint& replica, Timeout timeout) override;
  Status RemoveTargetReplica(const std::string& address, const std::string& volume_id,
                             const std::string& replica_address, Timeout timeout) override;
  Result<epb::Target> GetTarget(const std::string& address, const std::string& volume_id,
                                Timeout timeout) override;

 private:
  api::EngineClient* Client(const std::string& address);

  const std::string token_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<api::EngineClient>> clients_;  // GUARDED_BY(mu_)
};

}  // namespace tandem::controller
