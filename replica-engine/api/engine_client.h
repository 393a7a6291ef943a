#pragma once
// EngineClient: a typed, synchronous client of one tandem-engine's management
// API (engine.proto), for tandemctl, the controller and the node plugin.
//
//   EngineClient client("127.0.0.1:9600", token);
//   Result<pb::Replica> r = client.GetReplica("vol-1");
//   if (!r.ok() && r.status().code() == StatusCode::kNotFound) ...
//
// Every call takes a timeout; a call that does not finish in time fails with
// DEADLINE_EXCEEDED. Calls fail fast (UNAVAILABLE) when the engine cannot be
// reached rather than waiting for it to come up. Errors carry the engine's
// code and message unchanged (common/grpc/grpc_status.h).
//
// Thread-safety: all methods may be called concurrently (one shared channel).

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/grpc/tls.h"
#include "common/result.h"
#include "replica-engine/proto/engine.grpc.pb.h"

namespace tandem::api {

class EngineClient {
 public:
  using Timeout = std::chrono::milliseconds;
  // Long enough for CreateTarget, which waits for the replicas to connect.
  static constexpr Timeout kDefaultTimeout{30000};

  // `address`: an endpoint (common/grpc/endpoint.h): "HOST:PORT",
  // "tcp://HOST:PORT", "unix:/path", "unix:///path". `token`: the engine's management
  // token, sent as "authorization: Bearer <token>"; empty sends none. No
  // connection is made until the first call.
  EngineClient(const std::string& address, std::string token);
  // The same over TLS (common/grpc/tls.h; plaintext when !tls.enabled()).
  // INVALID_ARGUMENT naming the file when a TLS file is unusable.
  static Result<std::unique_ptr<EngineClient>> Connect(const std::string& address,
                                                       std::string token,
                                                       const rpc::TlsConfig& tls);

  Result<engine::v1::EngineInfo> GetEngineInfo(Timeout timeout = kDefaultTimeout);

  Result<engine::v1::Replica> CreateReplica(const engine::v1::CreateReplicaRequest& req,
                                            Timeout timeout = kDefaultTimeout);
  Status DeleteReplica(const std::string& volume_id, Timeout timeout = kDefaultTimeout);
  Result<engine::v1::Replica> GetReplica(const std::string& volume_id,
                                         Timeout timeout = kDefaultTimeout);
  Result<std::vector<engine::v1::Replica>> ListReplicas(Timeout timeout = kDefaultTimeout);

  Result<engine::v1::Target> CreateTarget(const engine::v1::CreateTargetRequest& req,
                                          Timeout timeout = kDefaultTimeout);
  Status DestroyTarget(const std::string& volume_id, Timeout timeout = kDefaultTimeout);
  Result<engine::v1::Target> GetTarget(const std::string& volume_id,
                                       Timeout timeout = kDefaultTimeout);
  Result<std::vector<engine::v1::Target>> ListTargets(Timeout timeout = kDefaultTimeout);
  // Live replica changes; each returns the target as it is after the change.
  // `address` is "A.B.C.D:PORT" as in ReplicaStatus.address.
  Result<engine::v1::Target> AddTargetReplica(const std::string& volume_id,
                                              const engine::v1::ReplicaEndpoint& replica,
                                              Timeout timeout = kDefaultTimeout);
  Result<engine::v1::Target> RemoveTargetReplica(const std::string& volume_id,
                                                 const std::string& address,
                                                 Timeout timeout = kDefaultTimeout);
  Result<engine::v1::Target> RebuildTargetReplica(const std::string& volume_id,
                                                  const std::string& address,
                                                  Timeout timeout = kDefaultTimeout);
  // bytes_per_sec 0: unlimited.
  Result<engine::v1::Target> SetRebuildRate(const std::string& volume_id, uint64_t bytes_per_sec,
                                            Timeout timeout = kDefaultTimeout);

  // Grow only (engine.proto): the same size is OK, a smaller one
  // OUT_OF_RANGE; growing answers UNIMPLEMENTED until the engine's layers
  // support it.
  Result<engine::v1::Replica> ResizeReplica(const std::string& volume_id, uint64_t size_bytes,
                                            Timeout timeout = kDefaultTimeout);
  Result<engine::v1::Target> ResizeTarget(const std::string& volume_id, uint64_t size_bytes,
                                          Timeout timeout = kDefaultTimeout);
  // Raises the replica's highest epoch to `epoch` so every older target is
  // refused (OK at once when it is already there; UNIMPLEMENTED otherwise
  // until the replica server supports it).
  Result<engine::v1::Replica> FenceReplica(const std::string& volume_id, uint64_t epoch,
                                           Timeout timeout = kDefaultTimeout);

 private:
  // A context with the deadline and the token set.
  std::unique_ptr<grpc::ClientContext> NewContext(Timeout timeout) const;

  EngineClient(std::shared_ptr<grpc::Channel> channel, std::string token);

  std::string token_;
  std::unique_ptr<engine::v1::Engine::Stub> stub_;
};

}  // namespace tandem::api
