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

// Validates a CreateReplicaRequest and turns it into a ReplicaConfig.
Result<replica::ReplicaConfig> ReplicaConfigFromProto(const pb::CreateReplicaRequest& req);
void ReplicaToProto(const replica::Replica& replica, pb::Replica* out);

// Validates a CreateTargetRequest (volume_id, epoch > 0, 1..5 distinct
// dotted-quad IPv4 endpoints with ports 1..65535, size a multiple of 4096,
// nbd_tcp_address "IPv4:PORT" with PORT 0..65535) and turns it into a
// TargetSpec. request_timeout_ms 0 becomes `default_timeout_ms`.
Result<target::TargetSpec> TargetSpecFromProto(const pb::CreateTargetRequest& req,
                                               uint32_t default_timeout_ms);
void TargetToProto(const target::TargetInfo& info, pb::Target* out);

pb::ReplicaState ReplicaStateToProto(target::ReplicaState state);
pb::TargetState TargetStateToProto(target::TargetState state);

// Parses "A.B.C.D:PORT" (dotted-quad IPv4). Port 0 is accepted only when
// `allow_any_port`. INVALID_ARGUMENT naming `field` otherwise.
Status ParseIpv4HostPort(const std::string& field, const std::string& text, bool allow_any_port,
                         std::string* host, uint16_t* port);
// Whether `host` is a dotted-quad IPv4 address ("127.0.0.1").
bool IsDottedQuadIpv4(const std::string& host);

}  // namespace tandem::api
