#pragma once
// Conversions between the management API's messages (engine.proto) and the
// engine's own types, with the request validation that must happen before a
// request reaches ReplicaManager or TargetManager.
//
// Every validation error is INVALID_ARGUMENT and its message starts with the
// proto field it is about ("size_bytes 0 is not ...", "replicas[2].port ...").

#include <cstdint>
#include <string>

#include "common/result.h"
#include "replica-engine/proto/engine.pb.h"
#include "replica-engine/replica/replica.h"
#include "replica-engine/target/target_manager.h"

namespace tandem::api {

namespace pb = ::tandem::engine::v1;

// Default block size when CreateReplicaRequest.block_size is 0.
constexpr uint32_t kDefaultBlockSize = 4096;
// CreateTargetRequest.size_bytes must be a multiple of this.
constexpr uint64_t kTargetSizeAlignment = 4096;
// A rebuild rate limit is 0 (none) or at least this many bytes/s: a smaller
// one is almost certainly a missing suffix ("100" for "100M"), and would make
// a rebuild take days.
constexpr uint64_t kMinRebuildRate = 1ull << 20;
// CreateTargetRequest.reconnect_interval_ms, when not 0.
constexpr uint32_t kMinReconnectIntervalMs = 100;
constexpr uint32_t kMaxReconnectIntervalMs = 3600 * 1000;

// The engine's values for the CreateTargetRequest fields that say 0.
struct TargetDefaults {
  uint32_t request_timeout_ms = 5000;
  // 0: never reconnect on a timer (RebuildTargetReplica only).
  uint32_t reconnect_interval_ms = 1000;
  uint64_t rebuild_rate_bytes_per_sec = 0;  // 0: unlimited
};

// Validates a CreateReplicaRequest and turns it into a ReplicaConfig.
Result<replica::ReplicaConfig> ReplicaConfigFromProto(const pb::CreateReplicaRequest& req);
void ReplicaToProto(const replica::Replica& replica, pb::Replica* out);

// Validates a CreateTargetRequest (volume_id, epoch > 0, 1..5 distinct
// dotted-quad IPv4 endpoints with ports 1..65535, size a multiple of 4096,
// nbd_tcp_address "IPv4:PORT" with PORT 0..65535, rebuild rate 0 or >=
// kMinRebuildRate, reconnect interval 0 or in [kMinReconnectIntervalMs,
// kMaxReconnectIntervalMs]) and turns it into a TargetSpec. Fields that say 0
// take the value in `defaults`.
Result<target::TargetSpec> TargetSpecFromProto(const pb::CreateTargetRequest& req,
                                               const TargetDefaults& defaults);
// Validates one endpoint (dotted-quad host, port 1..65535); errors name
// `field` ("replicas[2].port ...", "replica.host ...").
Result<target::ReplicaEndpoint> EndpointFromProto(const std::string& field,
                                                  const pb::ReplicaEndpoint& e);
// Validates a replica address "A.B.C.D:PORT" (port 1..65535) and returns it
// in the form ReplicaStatus.address uses ("127.0.0.1:9501").
Result<std::string> ReplicaAddressFromProto(const std::string& field, const std::string& address);
// 0 or at least kMinRebuildRate; INVALID_ARGUMENT naming `field` otherwise.
Status ValidateRebuildRate(const std::string& field, uint64_t bytes_per_sec);

void TargetToProto(const target::TargetInfo& info, pb::Target* out);
void RebuildStatusToProto(const target::RebuildStatus& status, pb::RebuildStatus* out);

pb::ReplicaState ReplicaStateToProto(target::ReplicaState state);
pb::TargetState TargetStateToProto(target::TargetState state);
pb::RebuildState RebuildStateToProto(target::RebuildState state);
pb::RebuildMode RebuildModeToProto(target::RebuildMode mode);

// Parses "A.B.C.D:PORT" (dotted-quad IPv4). Port 0 is accepted only when
// `allow_any_port`. INVALID_ARGUMENT naming `field` otherwise.
Status ParseIpv4HostPort(const std::string& field, const std::string& text, bool allow_any_port,
                         std::string* host, uint16_t* port);
// Whether `host` is a dotted-quad IPv4 address ("127.0.0.1").
bool IsDottedQuadIpv4(const std::string& host);

}  // namespace tandem::api
