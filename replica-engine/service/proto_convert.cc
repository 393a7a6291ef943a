#include "replica-engine/service/proto_convert.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <set>
#include <utility>

#include "common/address.h"
#include "common/id.h"
#include "common/unique_fd.h"
#include "replica-engine/protocol/hello_proof.h"
#include "replica-engine/replica/replica_metadata.h"
#include "replica-engine/volume/stage_histogram.h"

namespace tandem::service {
namespace {

// Bytes of one metadata slot of a replica of `size` bytes with `c`'s dirty
// region and activity extent sizes (the extent is raised to the region size
// as Replica::Create does).
uint64_t MetadataBytes(const replica::ReplicaConfig& c, uint64_t size) {
  const uint32_t activity =
      c.activity_extent_size == 0 ? 0 : std::max(c.activity_extent_size, c.dirty_region_size);
  return replica::MetadataSlotSize(size, c.dirty_region_size, activity);
}

}  // namespace

uint64_t MaxReplicaSize(const replica::ReplicaConfig& c) {
  if (c.block_size == 0) return 0;
  // The slot size grows with the size: the largest block count that fits.
  uint64_t lo = 0, hi = UINT64_MAX / c.block_size;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo + 1) / 2;
    if (MetadataBytes(c, mid * c.block_size) <= kMaxReplicaMetadataBytes) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo * c.block_size;
}

Status ValidateReplicaSize(const replica::ReplicaConfig& c) {
  if (c.size == 0 || c.block_size == 0 || c.size % c.block_size != 0) {
    return Status::InvalidArgument("size_bytes " + std::to_string(c.size) +
                                   " is not a positive multiple of block_size " +
                                   std::to_string(c.block_size));
  }
  const uint64_t meta = MetadataBytes(c, c.size);
  if (meta > kMaxReplicaMetadataBytes) {
    return Status::OutOfRange(
        "size_bytes " + std::to_string(c.size) + " needs " + std::to_string(meta) +
        " bytes of replica metadata (dirty map and activity log), over the limit of " +
        std::to_string(kMaxReplicaMetadataBytes) + " per replica: at most " +
        std::to_string(MaxReplicaSize(c)) + " bytes");
  }
  return Status::Ok();
}

Status CheckReplicaCapacity(const replica::ReplicaConfig& c, const std::string& data_dir) {
  const std::string size = "size_bytes " + std::to_string(c.size);
  if (c.data_path.empty()) {
    struct statvfs vfs;
    if (::statvfs(data_dir.c_str(), &vfs) != 0) return PosixError("statvfs " + data_dir, errno);
    uint64_t total = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(vfs.f_blocks),
                               static_cast<uint64_t>(vfs.f_frsize), &total)) {
      total = UINT64_MAX;
    }
    if (c.size > total) {
      return Status::OutOfRange(size + " exceeds the " + std::to_string(total) +
                                "-byte file system of the data directory " + data_dir +
                                " (replicas are thin-provisioned: the limit is the file "
                                "system's total size, not its free space)");
    }
    return Status::Ok();
  }
  // stat before open: opening a FIFO would block the handler.
  struct stat sb;
  if (::stat(c.data_path.c_str(), &sb) != 0) return Status::Ok();  // Create says why
  uint64_t have = 0;
  const char* what = nullptr;
  if (S_ISREG(sb.st_mode)) {
    have = static_cast<uint64_t>(sb.st_size);
    what = "file";
  } else if (S_ISBLK(sb.st_mode)) {
    UniqueFd fd(::open(c.data_path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd.valid()) return Status::Ok();  // Create says why
    if (::ioctl(fd.get(), BLKGETSIZE64, &have) != 0) {
      return PosixError("BLKGETSIZE64 " + c.data_path, errno);
    }
    what = "block device";
  } else {
    return Status::Ok();  // Create refuses it
  }
  if (c.size > have) {
    return Status::OutOfRange(size + " exceeds data_path " + c.data_path + ", a " + what + " of " +
                              std::to_string(have) + " bytes");
  }
  return Status::Ok();
}

bool IsDottedQuadIpv4(const std::string& host) {
  // inet_pton(AF_INET) accepts exactly the four-part decimal form; inet_aton
  // would also take "127.1" or hex parts, which we do not want on the wire.
  // inet_pton reads up to the first NUL: "10.1.2.3\0x" (valid UTF-8, so a
  // proto3 string may hold it) must not pass as 10.1.2.3, or two spellings of
  // one endpoint would pass as distinct replicas.
  in_addr addr;
  return !host.empty() && host.find('\0') == std::string::npos &&
         inet_pton(AF_INET, host.c_str(), &addr) == 1;
}

Status ParseIpv4HostPort(const std::string& field, const std::string& text, bool allow_any_port,
                         std::string* host, uint16_t* port) {
  std::string h;
  uint16_t p = 0;
  TANDEM_RETURN_IF_ERROR(ParseHostPort(field, text, allow_any_port, &h, &p));
  if (!IsDottedQuadIpv4(h)) {
    return Status::InvalidArgument(field + " host \"" + h + "\" is not a dotted-quad IPv4 address");
  }
  *host = std::move(h);
  *port = p;
  return Status::Ok();
}

// The `secret` field of CreateReplica/CreateTarget: empty or a length the
// data protocol accepts; the message names the field ("secret must be 16 to
// 256 bytes"), never its value.
static Status ValidateSecretField(const std::string& secret) {
  return protocol::ValidateSecret(secret);
}

Result<replica::ReplicaConfig> ReplicaConfigFromProto(const pb::CreateReplicaRequest& req) {
  TANDEM_RETURN_IF_ERROR(ValidateId("volume_id", req.volume_id()));
  TANDEM_RETURN_IF_ERROR(ValidateId("replica_id", req.replica_id()));
  replica::ReplicaConfig c;
  c.volume_id = req.volume_id();
  c.replica_id = req.replica_id();
  c.block_size = req.block_size() == 0 ? kDefaultBlockSize : req.block_size();
  if (c.block_size != kSupportedBlockSize) {
    return Status::InvalidArgument(
        "block_size " + std::to_string(req.block_size()) + " is not supported: only " +
        std::to_string(kSupportedBlockSize) + " (or 0 for it) is, as both storage backends " +
        "need 4 KiB-aligned I/O");
  }
  c.size = req.size_bytes();
  TANDEM_RETURN_IF_ERROR(ValidateReplicaSize(c));
  c.data_path = req.data_path();
  if (c.data_path.size() > 1024) {
    return Status::InvalidArgument("data_path is longer than 1024 bytes");
  }
  if (c.data_path.find('\0') != std::string::npos) {
    // open() would stop at the NUL and use another file than the one named.
    return Status::InvalidArgument("data_path contains a NUL byte");
  }
  TANDEM_RETURN_IF_ERROR(ValidateSecretField(req.secret()));
  c.secret = req.secret();
  return c;
}

void ReplicaToProto(const replica::Replica& replica, pb::Replica* out) {
  // A gRPC thread: the summary, never metadata(), which the server's loop
  // may be changing.
  const replica::ReplicaSummary md = replica.summary();
  out->set_volume_id(md.volume_id);
  out->set_replica_id(md.replica_id);
  out->set_size_bytes(md.size);
  out->set_block_size(md.block_size);
  out->set_generation(md.generation);
  out->set_generation_id(md.generation_id);
  out->set_highest_epoch(md.highest_epoch);
  out->set_clean_shutdown(md.was_clean);
  out->set_data_path(md.resolved_data_path());
}

Result<target::ReplicaEndpoint> EndpointFromProto(const std::string& field,
                                                  const pb::ReplicaEndpoint& e) {
  if (!IsDottedQuadIpv4(e.host())) {
    return Status::InvalidArgument(field + ".host \"" + e.host() +
                                   "\" is not a dotted-quad IPv4 address");
  }
  if (e.port() < 1 || e.port() > 65535) {
    return Status::InvalidArgument(field + ".port " + std::to_string(e.port()) +
                                   " is not in 1..65535");
  }
  return target::ReplicaEndpoint{e.host(), static_cast<uint16_t>(e.port()), e.local()};
}

Result<std::string> ReplicaAddressFromProto(const std::string& field, const std::string& address) {
  std::string host;
  uint16_t port = 0;
  TANDEM_RETURN_IF_ERROR(ParseIpv4HostPort(field, address, /*allow_any_port=*/false, &host, &port));
  // Canonical form ("09501" -> "9501"), as the target names its replicas.
  return host + ":" + std::to_string(port);
}

Status ValidateRebuildRate(const std::string& field, uint64_t bytes_per_sec) {
  if (bytes_per_sec != 0 && bytes_per_sec < kMinRebuildRate) {
    return Status::InvalidArgument(field + " " + std::to_string(bytes_per_sec) +
                                   " is below the minimum of " + std::to_string(kMinRebuildRate) +
                                   " bytes/s (0: unlimited)");
  }
  return Status::Ok();
}

Result<attach::TargetSpec> TargetSpecFromProto(const pb::CreateTargetRequest& req,
                                               const TargetDefaults& defaults) {
  TANDEM_RETURN_IF_ERROR(ValidateId("volume_id", req.volume_id()));
  if (req.epoch() == 0) return Status::InvalidArgument("epoch must be > 0");
  const int n = req.replicas_size();
  if (n < 1 || static_cast<size_t>(n) > target::VolumeTarget::kMaxReplicas) {
    return Status::InvalidArgument("replicas must list 1 to " +
                                   std::to_string(target::VolumeTarget::kMaxReplicas) +
                                   " endpoints, got " + std::to_string(n));
  }
  if (req.size_bytes() % kTargetSizeAlignment != 0) {
    return Status::InvalidArgument("size_bytes " + std::to_string(req.size_bytes()) +
                                   " is not a multiple of " + std::to_string(kTargetSizeAlignment));
  }
  TANDEM_RETURN_IF_ERROR(
      ValidateRebuildRate("rebuild_rate_bytes_per_sec", req.rebuild_rate_bytes_per_sec()));
  const uint32_t reconnect = req.reconnect_interval_ms();
  if (reconnect != 0 &&
      (reconnect < kMinReconnectIntervalMs || reconnect > kMaxReconnectIntervalMs)) {
    return Status::InvalidArgument("reconnect_interval_ms " + std::to_string(reconnect) +
                                   " is not 0 or in " + std::to_string(kMinReconnectIntervalMs) +
                                   ".." + std::to_string(kMaxReconnectIntervalMs));
  }

  attach::TargetSpec spec;
  target::TargetOptions& o = spec.options;
  o.volume_id = req.volume_id();
  o.epoch = req.epoch();
  o.token = req.token();
  TANDEM_RETURN_IF_ERROR(ValidateSecretField(req.secret()));
  o.secret = req.secret();
  o.size = req.size_bytes();
  o.request_timeout_ms =
      req.request_timeout_ms() != 0 ? req.request_timeout_ms() : defaults.request_timeout_ms;
  o.reconnect_interval_ms = reconnect != 0 ? reconnect : defaults.reconnect_interval_ms;
  o.rebuild_rate_bytes_per_sec = req.rebuild_rate_bytes_per_sec() != 0
                                     ? req.rebuild_rate_bytes_per_sec()
                                     : defaults.rebuild_rate_bytes_per_sec;
  o.in_sync.generation_id = req.in_sync_generation_id();
  for (int i = 0; i < req.in_sync_replica_ids_size(); ++i) {
    const std::string field = "in_sync_replica_ids[" + std::to_string(i) + "]";
    TANDEM_RETURN_IF_ERROR(ValidateId(field.c_str(), req.in_sync_replica_ids(i)));
    o.in_sync.replica_ids.push_back(req.in_sync_replica_ids(i));
  }
  if (!o.in_sync.replica_ids.empty() && o.in_sync.generation_id == 0) {
    return Status::InvalidArgument(
        "in_sync_replica_ids given without in_sync_generation_id (the generation they hold)");
  }
  o.quorum_wait_ms = req.quorum_wait_ms();
  std::set<std::pair<std::string, uint32_t>> seen;
  for (int i = 0; i < n; ++i) {
    const pb::ReplicaEndpoint& e = req.replicas(i);
    const std::string field = "replicas[" + std::to_string(i) + "]";
    Result<target::ReplicaEndpoint> endpoint = EndpointFromProto(field, e);
    if (!endpoint.ok()) return endpoint.status();
    if (!seen.emplace(e.host(), e.port()).second) {
      return Status::InvalidArgument(field + " " + e.host() + ":" + std::to_string(e.port()) +
                                     " is listed twice");
    }
    o.replicas.push_back(std::move(*endpoint));
  }
  TANDEM_ASSIGN_OR_RETURN(const pb::ExportKind kind, ExportKindFromProto(req));
  spec.export_kind = kind == pb::EXPORT_KIND_FUSE_FILE ? frontend::ExportKind::kFuseFile
                                                       : frontend::ExportKind::kNbd;
  if (!req.nbd_tcp_address().empty()) {
    if (kind != pb::EXPORT_KIND_NBD) {
      return Status::InvalidArgument("nbd_tcp_address is only for export_kind NBD, not " +
                                     pb::ExportKind_Name(kind));
    }
    std::string host;
    uint16_t port = 0;
    TANDEM_RETURN_IF_ERROR(ParseIpv4HostPort("nbd_tcp_address", req.nbd_tcp_address(),
                                             /*allow_any_port=*/true, &host, &port));
    spec.nbd_tcp_address = req.nbd_tcp_address();
  }
  return spec;
}

Result<pb::ExportKind> ExportKindFromProto(const pb::CreateTargetRequest& req) {
  // The raw number: a newer client may send a value this engine's enum lacks.
  const int kind = static_cast<int>(req.export_kind());
  if (kind == pb::EXPORT_KIND_UNSPECIFIED || kind == pb::EXPORT_KIND_NBD) {
    return pb::EXPORT_KIND_NBD;
  }
  if (kind == pb::EXPORT_KIND_FUSE_FILE) return pb::EXPORT_KIND_FUSE_FILE;
  return Status::InvalidArgument("export_kind " + std::to_string(kind) +
                                 " is not NBD (1) or FUSE_FILE (2)");
}

Status ValidateResizeReplica(const pb::ResizeReplicaRequest& req) {
  TANDEM_RETURN_IF_ERROR(ValidateId("volume_id", req.volume_id()));
  replica::ReplicaConfig config;
  config.volume_id = req.volume_id();
  config.size = req.size_bytes();
  config.block_size = kDefaultBlockSize;
  return ValidateReplicaSize(config);
}

Status ValidateResizeTarget(const pb::ResizeTargetRequest& req) {
  TANDEM_RETURN_IF_ERROR(ValidateId("volume_id", req.volume_id()));
  if (req.size_bytes() == 0 || req.size_bytes() % kTargetSizeAlignment != 0) {
    return Status::InvalidArgument("size_bytes " + std::to_string(req.size_bytes()) +
                                   " is not a positive multiple of " +
                                   std::to_string(kTargetSizeAlignment));
  }
  return Status::Ok();
}

Status ValidateFenceReplica(const pb::FenceReplicaRequest& req) {
  TANDEM_RETURN_IF_ERROR(ValidateId("volume_id", req.volume_id()));
  if (req.epoch() == 0) return Status::InvalidArgument("epoch must be > 0");
  return Status::Ok();
}

pb::ReplicaState ReplicaStateToProto(target::ReplicaState state) {
  switch (state) {
    case target::ReplicaState::kConnecting:
      return pb::REPLICA_STATE_CONNECTING;
    case target::ReplicaState::kHealthy:
      return pb::REPLICA_STATE_HEALTHY;
    case target::ReplicaState::kStale:
      return pb::REPLICA_STATE_STALE;
    case target::ReplicaState::kFaulted:
      return pb::REPLICA_STATE_FAULTED;
    case target::ReplicaState::kRebuilding:
      return pb::REPLICA_STATE_REBUILDING;
  }
  return pb::REPLICA_STATE_UNSPECIFIED;
}

pb::TargetState TargetStateToProto(target::TargetState state) {
  switch (state) {
    case target::TargetState::kStarting:
      return pb::TARGET_STATE_STARTING;
    case target::TargetState::kReady:
      return pb::TARGET_STATE_READY;
    case target::TargetState::kDegraded:
      return pb::TARGET_STATE_DEGRADED;
    case target::TargetState::kFailed:
      return pb::TARGET_STATE_FAILED;
    case target::TargetState::kFenced:
      return pb::TARGET_STATE_FENCED;
  }
  return pb::TARGET_STATE_UNSPECIFIED;
}

pb::RebuildState RebuildStateToProto(target::RebuildState state) {
  switch (state) {
    case target::RebuildState::kIdle:
      return pb::REBUILD_STATE_IDLE;
    case target::RebuildState::kRunning:
      return pb::REBUILD_STATE_RUNNING;
    case target::RebuildState::kDone:
      return pb::REBUILD_STATE_DONE;
    case target::RebuildState::kFailed:
      return pb::REBUILD_STATE_FAILED;
  }
  return pb::REBUILD_STATE_UNSPECIFIED;
}

pb::RebuildMode RebuildModeToProto(target::RebuildMode mode) {
  switch (mode) {
    case target::RebuildMode::kNone:
      return pb::REBUILD_MODE_NONE;
    case target::RebuildMode::kFull:
      return pb::REBUILD_MODE_FULL;
    case target::RebuildMode::kIncremental:
      return pb::REBUILD_MODE_INCREMENTAL;
  }
  return pb::REBUILD_MODE_UNSPECIFIED;
}

void RebuildStatusToProto(const target::RebuildStatus& s, pb::RebuildStatus* out) {
  out->set_state(RebuildStateToProto(s.state));
  out->set_mode(RebuildModeToProto(s.mode));
  out->set_replica(s.replica);
  out->set_source(s.source);
  out->set_bytes_total(s.bytes_total);
  out->set_bytes_done(s.bytes_done);
  out->set_bytes_copied(s.bytes_copied);
  out->set_resumed_from(s.resumed_from);
  out->set_rate_bytes_per_sec(s.rate_bytes_per_sec);
  out->set_eta_seconds(s.eta_seconds);
  out->set_rate_limit_bytes_per_sec(s.rate_limit_bytes_per_sec);
  out->set_last_error(s.last_error);
}

namespace {
void StageLatencyToProto(const std::string& cls,
                         const std::array<target::StageHistogram, target::kStageCount>& h,
                         pb::Target* out) {
  for (int i = 0; i < target::kStageCount; ++i) {
    const target::StageHistogram& s = h[static_cast<size_t>(i)];
    pb::StageLatency* p = out->add_stage_latency();
    p->set_stage(cls + "." + target::StageName(static_cast<target::Stage>(i)));
    p->set_count(s.count());
    p->set_sum_ns(s.sum_ns());
    p->set_p50_ns(s.Percentile(0.5));
    p->set_p99_ns(s.Percentile(0.99));
    p->set_p999_ns(s.Percentile(0.999));
    const int used = s.used_buckets();
    for (int b = 0; b < used; ++b) p->add_buckets(s.bucket(b));
  }
}
}  // namespace

void TargetToProto(const attach::TargetInfo& info, pb::Target* out) {
  const target::TargetStatus& s = info.status;
  out->set_volume_id(info.volume_id);
  out->set_nbd_socket(info.nbd_socket);
  out->set_nbd_tcp_port(info.nbd_tcp_port);
  out->set_export_kind(info.export_description.kind == frontend::ExportKind::kFuseFile
                           ? pb::EXPORT_KIND_FUSE_FILE
                           : pb::EXPORT_KIND_NBD);
  out->set_export_path(info.export_description.path);
  out->set_epoch(info.epoch);
  out->set_loop_index(static_cast<uint32_t>(info.loop_index));
  out->set_state(TargetStateToProto(s.state));
  out->set_generation(s.generation);
  out->set_size_bytes(s.size);
  for (const target::ReplicaStatus& r : s.replicas) {
    pb::ReplicaStatus* p = out->add_replicas();
    p->set_address(r.address);
    p->set_replica_id(r.replica_id);
    p->set_state(ReplicaStateToProto(r.state));
    p->set_generation(r.generation);
    p->set_inflight(r.inflight);
    p->set_reads(r.reads);
    p->set_writes(r.writes);
    p->set_errors(r.errors);
    p->set_last_error(r.last_error);
    p->set_generation_id(r.generation_id);
  }
  out->set_generation_id(s.generation_id);
  out->set_last_error(s.last_error);
  for (const std::string& id : s.in_sync) out->add_in_sync_replica_ids(id);
  out->set_reads(s.reads);
  out->set_writes(s.writes);
  out->set_flushes(s.flushes);
  out->set_errors(s.errors);
  out->set_bytes_read(s.bytes_read);
  out->set_bytes_written(s.bytes_written);
  RebuildStatusToProto(s.rebuild, out->mutable_rebuild());
  out->set_rebuilds_completed(s.rebuilds_completed);
  out->set_rebuild_bytes_copied(s.rebuild_bytes_copied);
  StageLatencyToProto("read", s.latency.read, out);
  StageLatencyToProto("write", s.latency.write, out);
}

}  // namespace tandem::service
