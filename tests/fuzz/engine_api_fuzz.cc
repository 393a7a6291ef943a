// libFuzzer target for the management API's request conversion
// (replica-engine/service/proto_convert.h): what stands between a gRPC request
// (anyone holding the management token) and ReplicaManager / TargetManager.
//
// Input: one selector byte, then the serialized request message exactly as
// gRPC would hand it to EngineService after parsing it off the wire; the
// selector picks the RPC (CreateReplica, CreateTarget, AddTargetReplica,
// Remove/RebuildTargetReplica, SetRebuildRate), and the checks run what that
// handler runs before it touches a manager. Checked properties:
// - conversion never crashes, and fails only with INVALID_ARGUMENT whose
//   message starts with a field of the request (or OUT_OF_RANGE naming
//   size_bytes: a replica whose metadata would exceed the limit);
// - whatever it accepts satisfies the documented rules, re-checked here
//   independently: ids in [A-Za-z0-9._-]{1,128} (not "." / ".."), block size
//   4096, a replica's metadata (header, dirty map at 1 bit per 64 KiB,
//   activity log at 1 bit per 4 MiB) within kMaxReplicaMetadataBytes, and a
//   CreateReplicaRequest meeting every rule is accepted; sizes positive
//   multiples, data_path without NUL, 1..kMaxReplicas
//   endpoints that are dotted-quad IPv4 hosts (no bytes after the address,
//   e.g. an embedded NUL) with ports 1..65535 and distinct as endpoints (not
//   only as strings), rebuild rate 0 or >= kMinRebuildRate, reconnect
//   interval 0 or in range, in-sync ids only with a generation id, a
//   canonical "A.B.C.D:PORT" replica address that converts to itself.
//
// Seeds (tests/fuzz/corpus/engine_api) are text-format requests encoded
// with protoc, e.g.:
//   (printf '\001'; protoc --encode=tandem.engine.v1.CreateTargetRequest \
//     replica-engine/proto/engine.proto < request.txtpb) > corpus/engine_api/x

#include <arpa/inet.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <set>
#include <string>
#include <utility>

#include <google/protobuf/stubs/logging.h>

#include "replica-engine/service/proto_convert.h"

namespace {

namespace service = tandem::service;
namespace pb = tandem::service::pb;
using tandem::Status;
using tandem::StatusCode;

void Check(bool cond) {
  if (!cond) __builtin_trap();
}

bool ValidId(const std::string& id) {
  if (id.empty() || id.size() > 128 || id == "." || id == "..") return false;
  for (char c : id) {
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

// A dotted quad with nothing after it; *addr is the address.
bool ValidHost(const std::string& host, in_addr* addr) {
  return !host.empty() && std::strlen(host.c_str()) == host.size() &&
         inet_pton(AF_INET, host.c_str(), addr) == 1;
}

// An error names the request field it is about.
void CheckError(const Status& st, std::initializer_list<const char*> fields) {
  Check(st.code() == StatusCode::kInvalidArgument);
  bool named = false;
  for (const char* f : fields) named = named || st.message().rfind(f, 0) == 0;
  Check(named);
}

void CheckReplicaAddress(const std::string& field, const std::string& address) {
  tandem::Result<std::string> r = service::ReplicaAddressFromProto(field, address);
  if (!r.ok()) {
    CheckError(r.status(), {field.c_str()});
    return;
  }
  const size_t colon = r->rfind(':');
  Check(colon != std::string::npos);
  in_addr addr;
  Check(ValidHost(r->substr(0, colon), &addr));
  const std::string port = r->substr(colon + 1);
  Check(!port.empty() && port[0] != '0' && port.size() <= 5);
  Check(std::stoul(port) >= 1 && std::stoul(port) <= 65535);
  tandem::Result<std::string> again = service::ReplicaAddressFromProto(field, *r);
  Check(again.ok() && *again == *r);  // canonical
}

// Bytes of a replica's metadata slot, computed from docs/replica_metadata.md
// rather than with the engine's helper: a 4 KiB header, then the dirty map
// (1 bit per 64 KiB) and the activity log (1 bit per 4 MiB), rounded up to
// 4 KiB.
uint64_t MetadataBytes(uint64_t size) {
  auto map_bytes = [size](uint64_t unit) {
    const uint64_t bits = size / unit + (size % unit != 0);
    return bits / 8 + (bits % 8 != 0);
  };
  const uint64_t maps = map_bytes(64 << 10) + map_bytes(4 << 20);
  return 4096 + (maps + 4095) / 4096 * 4096;
}

// docs/protocol.md, "Per-volume secrets": none, or 16 to 256 bytes.
bool ValidSecret(const std::string& s) { return s.empty() || (s.size() >= 16 && s.size() <= 256); }

void CreateReplica(const pb::CreateReplicaRequest& req) {
  tandem::Result<tandem::replica::ReplicaConfig> c = service::ReplicaConfigFromProto(req);
  const std::string& path = req.data_path();
  const bool valid = ValidId(req.volume_id()) && ValidId(req.replica_id()) &&
                     (req.block_size() == 0 || req.block_size() == 4096) && req.size_bytes() > 0 &&
                     req.size_bytes() % 4096 == 0 &&
                     MetadataBytes(req.size_bytes()) <= service::kMaxReplicaMetadataBytes &&
                     path.size() <= 1024 && path.find('\0') == std::string::npos &&
                     ValidSecret(req.secret());
  Check(c.ok() == valid);
  if (!c.ok()) {
    if (c.status().code() == StatusCode::kOutOfRange) {
      Check(c.status().message().rfind("size_bytes", 0) == 0);
      Check(MetadataBytes(req.size_bytes()) > service::kMaxReplicaMetadataBytes);
      return;
    }
    CheckError(c.status(),
               {"volume_id", "replica_id", "block_size", "size_bytes", "data_path", "secret"});
    return;
  }
  Check(c->volume_id == req.volume_id() && c->replica_id == req.replica_id());
  Check(c->block_size == service::kSupportedBlockSize);
  Check(c->size == req.size_bytes());
  Check(c->data_path == path);
  Check(c->secret == req.secret());
}

void CreateTarget(const pb::CreateTargetRequest& req, const service::TargetDefaults& defaults) {
  tandem::Result<tandem::attach::TargetSpec> spec = service::TargetSpecFromProto(req, defaults);
  if (!spec.ok()) {
    CheckError(spec.status(), {"volume_id", "epoch", "replicas", "size_bytes",
                               "rebuild_rate_bytes_per_sec", "reconnect_interval_ms",
                               "in_sync_replica_ids", "nbd_tcp_address", "export_kind", "secret"});
    return;
  }
  // export_kind: UNSPECIFIED, NBD or FUSE_FILE; a TCP address only with NBD.
  const int kind = static_cast<int>(req.export_kind());
  Check(kind >= 0 && kind <= 2);
  Check(req.nbd_tcp_address().empty() || kind <= 1);
  const tandem::target::TargetOptions& o = spec->options;
  Check(ValidId(o.volume_id) && o.volume_id == req.volume_id());
  Check(o.epoch > 0 && o.epoch == req.epoch());
  Check(o.token == req.token());
  // The volume's secret: empty or 16..256 bytes, passed through unchanged.
  Check(ValidSecret(req.secret()) && o.secret == req.secret());
  Check(o.size % service::kTargetSizeAlignment == 0 && o.size == req.size_bytes());
  Check(!o.replicas.empty() && o.replicas.size() <= tandem::target::VolumeTarget::kMaxReplicas);
  Check(o.replicas.size() == static_cast<size_t>(req.replicas_size()));
  std::set<std::pair<uint32_t, uint16_t>> endpoints;
  for (size_t i = 0; i < o.replicas.size(); ++i) {
    const tandem::target::ReplicaEndpoint& e = o.replicas[i];
    in_addr addr;
    Check(ValidHost(e.host, &addr));
    Check(e.port >= 1 && e.port == req.replicas(static_cast<int>(i)).port());
    Check(e.local == req.replicas(static_cast<int>(i)).local());
    // Two entries for one replica would count it twice towards a majority.
    Check(endpoints.emplace(addr.s_addr, e.port).second);
  }
  const uint64_t rate = o.rebuild_rate_bytes_per_sec;
  Check(req.rebuild_rate_bytes_per_sec() == 0
            ? rate == defaults.rebuild_rate_bytes_per_sec
            : rate == req.rebuild_rate_bytes_per_sec() && rate >= service::kMinRebuildRate);
  const uint32_t reconnect = o.reconnect_interval_ms;
  Check(req.reconnect_interval_ms() == 0 ? reconnect == defaults.reconnect_interval_ms
                                         : reconnect == req.reconnect_interval_ms() &&
                                               reconnect >= service::kMinReconnectIntervalMs &&
                                               reconnect <= service::kMaxReconnectIntervalMs);
  Check(o.request_timeout_ms ==
        (req.request_timeout_ms() != 0 ? req.request_timeout_ms() : defaults.request_timeout_ms));
  Check(o.in_sync.generation_id == req.in_sync_generation_id());
  Check(o.in_sync.replica_ids.size() == static_cast<size_t>(req.in_sync_replica_ids_size()));
  for (const std::string& id : o.in_sync.replica_ids) Check(ValidId(id));
  Check(o.in_sync.replica_ids.empty() || o.in_sync.generation_id != 0);
  Check(spec->nbd_tcp_address == req.nbd_tcp_address());
  if (!spec->nbd_tcp_address.empty()) {
    const size_t colon = spec->nbd_tcp_address.rfind(':');
    Check(colon != std::string::npos);
    in_addr addr;
    Check(ValidHost(spec->nbd_tcp_address.substr(0, colon), &addr));
    std::string host;
    uint16_t port = 0;
    Check(service::ParseIpv4HostPort("nbd_tcp_address", spec->nbd_tcp_address, true, &host, &port)
              .ok());
    Check(ValidHost(host, &addr));
  }
}

void AddTargetReplica(const pb::AddTargetReplicaRequest& req) {
  if (!tandem::replica::ValidateId("volume_id", req.volume_id()).ok()) {
    Check(!ValidId(req.volume_id()));
    return;
  }
  Check(ValidId(req.volume_id()));
  tandem::Result<tandem::target::ReplicaEndpoint> e =
      service::EndpointFromProto("replica", req.replica());
  if (!e.ok()) {
    CheckError(e.status(), {"replica"});
    return;
  }
  in_addr addr;
  Check(ValidHost(e->host, &addr));
  Check(e->port >= 1 && e->port == req.replica().port());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Proto3 strings that are not UTF-8 fail to parse (as in the server), and
  // protobuf logs each one; the log is noise here.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 64 * 1024) return 0;
  const uint8_t selector = data[0];
  const void* msg = data + 1;
  const int len = static_cast<int>(size - 1);
  switch (selector % 6) {
    case 0: {
      pb::CreateReplicaRequest req;
      if (req.ParseFromArray(msg, len)) CreateReplica(req);
      break;
    }
    case 1: {
      pb::CreateTargetRequest req;
      if (!req.ParseFromArray(msg, len)) break;
      CreateTarget(req, service::TargetDefaults{});
      // The engine's defaults come from its flags; any values work the same.
      service::TargetDefaults d;
      d.request_timeout_ms = 1;
      d.reconnect_interval_ms = 0;
      d.rebuild_rate_bytes_per_sec = service::kMinRebuildRate;
      CreateTarget(req, d);
      break;
    }
    case 2: {
      pb::AddTargetReplicaRequest req;
      if (req.ParseFromArray(msg, len)) AddTargetReplica(req);
      break;
    }
    case 3: {
      pb::RemoveTargetReplicaRequest req;
      if (req.ParseFromArray(msg, len)) CheckReplicaAddress("address", req.address());
      break;
    }
    case 4: {
      pb::RebuildTargetReplicaRequest req;
      if (!req.ParseFromArray(msg, len)) break;
      CheckReplicaAddress("address", req.address());
      // The same parser with port 0 allowed (nbd_tcp_address).
      std::string host;
      uint16_t port = 0;
      if (service::ParseIpv4HostPort("nbd_tcp_address", req.address(), true, &host, &port).ok()) {
        in_addr addr;
        Check(ValidHost(host, &addr));
      }
      break;
    }
    case 5: {
      pb::SetRebuildRateRequest req;
      if (!req.ParseFromArray(msg, len)) break;
      const Status st = service::ValidateRebuildRate("bytes_per_sec", req.bytes_per_sec());
      Check(st.ok() ==
            (req.bytes_per_sec() == 0 || req.bytes_per_sec() >= service::kMinRebuildRate));
      if (!st.ok()) CheckError(st, {"bytes_per_sec"});
      break;
    }
  }
  return 0;
}
