#include "csi/publish_context.h"

#include <charconv>
#include <cstdio>

namespace tandem::csi {

namespace {

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos - start));
    if (pos == std::string::npos) break;
    start = pos + 1;
  }
  return out;
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ",") + i;
  return out;
}

Status Bad(const char* key, const std::string& why) {
  return Status::InvalidArgument(std::string("publish_context[") + key + "] " + why);
}

const std::string* Find(const std::map<std::string, std::string>& map, const char* key) {
  auto it = map.find(key);
  return it == map.end() ? nullptr : &it->second;
}

Status ParseU64(const char* key, const std::string& v, int base, uint64_t* out) {
  const char* end = v.data() + v.size();
  auto [p, ec] = std::from_chars(v.data(), end, *out, base);
  if (v.empty() || ec != std::errc() || p != end) {
    return Bad(key, base == 16 ? "is not a hex number" : "is not a decimal number");
  }
  return Status::Ok();
}

}  // namespace

std::map<std::string, std::string> EncodePublishContext(const PublishContext& ctx) {
  std::map<std::string, std::string> m;
  m[kCtxEpoch] = std::to_string(ctx.epoch);
  std::vector<std::string> addresses, ids;
  for (const auto& r : ctx.replicas) {
    addresses.push_back(r.address);
    ids.push_back(r.replica_id);
  }
  m[kCtxReplicas] = Join(addresses);
  m[kCtxReplicaIds] = Join(ids);
  if (ctx.in_sync_generation_id != 0) {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(ctx.in_sync_generation_id));
    m[kCtxInSyncGeneration] = hex;
  }
  if (!ctx.in_sync_replica_ids.empty()) m[kCtxInSync] = Join(ctx.in_sync_replica_ids);
  m[kCtxSize] = std::to_string(ctx.size_bytes);
  if (ctx.rebuild_rate_bytes_per_sec != 0) {
    m[kCtxRebuildRate] = std::to_string(ctx.rebuild_rate_bytes_per_sec);
  }
  if (!ctx.volume_secret.empty()) m[kCtxVolumeSecret] = ctx.volume_secret;
  return m;
}

Result<PublishContext> DecodePublishContextMap(const std::map<std::string, std::string>& map) {
  PublishContext ctx;
  const std::string* epoch = Find(map, kCtxEpoch);
  if (!epoch) return Bad(kCtxEpoch, "missing (was the volume published by tandem-controller?)");
  TANDEM_RETURN_IF_ERROR(ParseU64(kCtxEpoch, *epoch, 10, &ctx.epoch));
  if (ctx.epoch == 0) return Bad(kCtxEpoch, "must be > 0");
  const std::string* replicas = Find(map, kCtxReplicas);
  if (!replicas || replicas->empty()) return Bad(kCtxReplicas, "lists no replica");
  std::vector<std::string> addresses = Split(*replicas, ',');
  std::vector<std::string> ids;
  if (const std::string* v = Find(map, kCtxReplicaIds)) ids = Split(*v, ',');
  if (!ids.empty() && ids.size() != addresses.size()) {
    return Bad(kCtxReplicaIds, "does not list one id per replica address");
  }
  for (size_t i = 0; i < addresses.size(); ++i) {
    if (addresses[i].find(':') == std::string::npos) {
      return Bad(kCtxReplicas, "entry \"" + addresses[i] + "\" is not <host>:<port>");
    }
    ctx.replicas.push_back({ids.empty() ? "" : ids[i], addresses[i]});
  }
  if (const std::string* v = Find(map, kCtxInSyncGeneration)) {
    TANDEM_RETURN_IF_ERROR(ParseU64(kCtxInSyncGeneration, *v, 16, &ctx.in_sync_generation_id));
  }
  if (const std::string* v = Find(map, kCtxInSync)) {
    ctx.in_sync_replica_ids = Split(*v, ',');
    for (const auto& id : ctx.in_sync_replica_ids) {
      if (id.empty()) return Bad(kCtxInSync, "has an empty replica id");
    }
  }
  if (const std::string* v = Find(map, kCtxSize)) {
    TANDEM_RETURN_IF_ERROR(ParseU64(kCtxSize, *v, 10, &ctx.size_bytes));
  }
  if (const std::string* v = Find(map, kCtxRebuildRate)) {
    TANDEM_RETURN_IF_ERROR(ParseU64(kCtxRebuildRate, *v, 10, &ctx.rebuild_rate_bytes_per_sec));
  }
  if (const std::string* v = Find(map, kCtxVolumeSecret)) ctx.volume_secret = *v;
  return ctx;
}

}  // namespace tandem::csi
