#include "node-plugin/publish_context.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstdio>

namespace tandem::node {
namespace {

std::string Key(const char* name) { return std::string(kPublishKeyPrefix) + name; }

std::vector<std::string> SplitComma(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    out.push_back(s.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

Result<uint64_t> ParseU64(const std::string& key, const std::string& value, int base) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v, base);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
    return Status::InvalidArgument("publish_context " + key + " = '" + value + "' is not a " +
                                   (base == 16 ? "hex" : "decimal") + " number");
  }
  return v;
}

Result<ReplicaAddress> ParseAddress(const std::string& key, const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) {
    return Status::InvalidArgument("publish_context " + key + ": '" + text + "' is not host:port");
  }
  ReplicaAddress a;
  a.host = text.substr(0, colon);
  in_addr unused;
  if (inet_pton(AF_INET, a.host.c_str(), &unused) != 1) {
    return Status::InvalidArgument("publish_context " + key + ": '" + a.host +
                                   "' is not an IPv4 address");
  }
  TANDEM_ASSIGN_OR_RETURN(uint64_t port, ParseU64(key, text.substr(colon + 1), 10));
  if (port == 0 || port > 65535) {
    return Status::InvalidArgument("publish_context " + key + ": port out of range in '" + text +
                                   "'");
  }
  a.port = static_cast<uint32_t>(port);
  return a;
}

}  // namespace

Result<PublishInfo> ParsePublishContext(const std::map<std::string, std::string>& context) {
  PublishInfo info;
  auto get = [&](const char* name) -> const std::string* {
    auto it = context.find(Key(name));
    return it == context.end() ? nullptr : &it->second;
  };
  const std::string* epoch = get("epoch");
  if (!epoch) return Status::InvalidArgument("publish_context lacks " + Key("epoch"));
  TANDEM_ASSIGN_OR_RETURN(info.epoch, ParseU64(Key("epoch"), *epoch, 10));
  if (info.epoch == 0)
    return Status::InvalidArgument("publish_context " + Key("epoch") + " must be > 0");

  const std::string* replicas = get("replicas");
  if (!replicas || replicas->empty()) {
    return Status::InvalidArgument("publish_context lacks " + Key("replicas"));
  }
  for (const auto& r : SplitComma(*replicas)) {
    TANDEM_ASSIGN_OR_RETURN(ReplicaAddress a, ParseAddress(Key("replicas"), r));
    info.replicas.push_back(a);
  }
  if (info.replicas.size() > 5) {
    return Status::InvalidArgument("publish_context " + Key("replicas") +
                                   " names more than 5 replicas");
  }
  if (const std::string* g = get("in-sync-generation-id")) {
    TANDEM_ASSIGN_OR_RETURN(info.in_sync_generation_id,
                            ParseU64(Key("in-sync-generation-id"), *g, 16));
  }
  if (const std::string* ids = get("in-sync-replica-ids"); ids && !ids->empty()) {
    info.in_sync_replica_ids = SplitComma(*ids);
  }
  if (const std::string* size = get("size-bytes")) {
    TANDEM_ASSIGN_OR_RETURN(info.size_bytes, ParseU64(Key("size-bytes"), *size, 10));
  }
  if (const std::string* rate = get("rebuild-rate")) {
    TANDEM_ASSIGN_OR_RETURN(info.rebuild_rate_bytes_per_sec,
                            ParseU64(Key("rebuild-rate"), *rate, 10));
  }
  if (const std::string* secret = get("secret")) info.secret = *secret;
  return info;
}

std::map<std::string, std::string> EncodePublishContext(const PublishInfo& info) {
  std::map<std::string, std::string> m;
  m[Key("epoch")] = std::to_string(info.epoch);
  std::string replicas;
  for (const auto& r : info.replicas) {
    if (!replicas.empty()) replicas += ',';
    replicas += r.host + ":" + std::to_string(r.port);
  }
  m[Key("replicas")] = replicas;
  if (info.in_sync_generation_id != 0) {
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx",
             static_cast<unsigned long long>(info.in_sync_generation_id));
    m[Key("in-sync-generation-id")] = hex;
  }
  if (!info.in_sync_replica_ids.empty()) {
    std::string ids;
    for (const auto& id : info.in_sync_replica_ids) ids += (ids.empty() ? "" : ",") + id;
    m[Key("in-sync-replica-ids")] = ids;
  }
  if (info.size_bytes) m[Key("size-bytes")] = std::to_string(info.size_bytes);
  if (info.rebuild_rate_bytes_per_sec)
    m[Key("rebuild-rate")] = std::to_string(info.rebuild_rate_bytes_per_sec);
  if (!info.secret.empty()) m[Key("secret")] = info.secret;
  return m;
}

}  // namespace tandem::node
