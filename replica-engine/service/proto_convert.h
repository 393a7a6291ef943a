#pragma once
// Conversions between the management API's messages (engine.proto) and the
// engine's own types, with the request validation that must happen before a
// request reaches ReplicaManager or TargetManager.
//
// Every validation error is INVALID_ARGUMENT (OUT_OF_RANGE for a size beyond
// the engine's limits) and its message starts with the proto field it is
// about ("size_bytes 0 is not ...", "replicas[2].port ...").

#include <cstdint>
#include <string>

#include "common/result.h"
#include "replica-engine/proto/engine.pb.h"
#include "replica-engine/replica/replica.h"
#include "replica-engine/attach/target_manager.h"

namespace tandem::service {

namespace pb = ::tandem::engine::v1;

// Default block size when CreateReplicaRequest.block_size is 0, and the only
// one supported: both backends do O_DIRECT I/O in 4 KiB-aligned buffers and
// offsets, so a 512-byte logical block would fault every replica on its
// first unaligned request.
constexpr uint32_t kDefaultBlockSize = 4096;
constexpr uint32_t kSupportedBlockSize = 4096;
// Upper bound on one replica's metadata slot: the 4 KiB header, the dirty map
// (one bit per ReplicaConfig::dirty_region_size, 64 KiB) and the activity log
// (one bit per activity_extent_size, 4 MiB). The engine holds the maps in
// memory (and a slot image per persist), and zero-fills them at create, so an
// unbounded size_bytes would be an unbounded allocation. 64 MiB of maps
// allow volumes up to about 31.5 TiB with the default region sizes.
constexpr uint64_t kMaxReplicaMetadataBytes = 64ull << 20;
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

// Validates a CreateReplicaRequest and turns it into a ReplicaConfig: the
// ids, block_size (0 or kSupportedBlockSize, else INVALID_ARGUMENT), data_path
// (<= 1024 bytes, no NUL), and size_bytes as ValidateReplicaSize. Touches no
// file: CheckReplicaCapacity is the check against the storage.
Result<replica::ReplicaConfig> ReplicaConfigFromProto(const pb::CreateReplicaRequest& req);
// INVALID_ARGUMENT naming size_bytes unless config.size is a positive
// multiple of config.block_size; OUT_OF_RANGE naming size_bytes and the
// limit when its metadata (MetadataSlotSize with config's dirty region and
// activity extent sizes) would exceed kMaxReplicaMetadataBytes.
Status ValidateReplicaSize(const replica::ReplicaConfig& config);
// The largest size (a multiple of config.block_size) whose metadata fits in
// kMaxReplicaMetadataBytes, with config's region sizes (about 31.5 TiB with
// the defaults).
uint64_t MaxReplicaSize(const replica::ReplicaConfig& config);
// Whether the storage can hold config.size bytes, else OUT_OF_RANGE naming
// size_bytes and the limit:
// - no data_path: the data is a sparse file under `data_dir`, so size_bytes
//   may exceed the free space (thin provisioning) but not the total size of
//   the file system holding `data_dir` (statvfs f_blocks * f_frsize);
// - data_path a block device: its size (BLKGETSIZE64);
// - data_path a regular file: its size (it is used as is, never extended).
// A data_path that cannot be opened or is neither is left to
// ReplicaManager::Create to refuse. An error reading the sizes is returned
// as is (statvfs failing on `data_dir`, say).
Status CheckReplicaCapacity(const replica::ReplicaConfig& config, const std::string& data_dir);
void ReplicaToProto(const replica::Replica& replica, pb::Replica* out);

// Validates a CreateTargetRequest (volume_id, epoch > 0, 1..5 distinct
// dotted-quad IPv4 endpoints with ports 1..65535, size a multiple of 4096,
// nbd_tcp_address "IPv4:PORT" with PORT 0..65535, rebuild rate 0 or >=
// kMinRebuildRate, reconnect interval 0 or in [kMinReconnectIntervalMs,
// kMaxReconnectIntervalMs], export_kind as ExportKindFromProto) and turns it
// into a TargetSpec. Fields that say 0
// take the value in `defaults`.
Result<attach::TargetSpec> TargetSpecFromProto(const pb::CreateTargetRequest& req,
                                               const TargetDefaults& defaults);
// CreateTargetRequest.export_kind: UNSPECIFIED and NBD are NBD, FUSE_FILE is
// FUSE_FILE; any other number is INVALID_ARGUMENT naming export_kind.
// (TargetSpecFromProto checks it too, and that nbd_tcp_address comes only
// with NBD.)
Result<pb::ExportKind> ExportKindFromProto(const pb::CreateTargetRequest& req);
// Resize and fence requests: volume_id; size_bytes a positive multiple of
// 4096 (ResizeReplica also within the metadata bound, OUT_OF_RANGE, as
// ValidateReplicaSize); epoch > 0. INVALID_ARGUMENT naming the field.
Status ValidateResizeReplica(const pb::ResizeReplicaRequest& req);
Status ValidateResizeTarget(const pb::ResizeTargetRequest& req);
Status ValidateFenceReplica(const pb::FenceReplicaRequest& req);
// Validates one endpoint (dotted-quad host, port 1..65535); errors name
// `field` ("replicas[2].port ...", "replica.host ...").
Result<target::ReplicaEndpoint> EndpointFromProto(const std::string& field,
                                                  const pb::ReplicaEndpoint& e);
// Validates a replica address "A.B.C.D:PORT" (port 1..65535) and returns it
// in the form ReplicaStatus.address uses ("127.0.0.1:9501").
Result<std::string> ReplicaAddressFromProto(const std::string& field, const std::string& address);
// 0 or at least kMinRebuildRate; INVALID_ARGUMENT naming `field` otherwise.
Status ValidateRebuildRate(const std::string& field, uint64_t bytes_per_sec);

void TargetToProto(const attach::TargetInfo& info, pb::Target* out);
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

}  // namespace tandem::service
