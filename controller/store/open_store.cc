// OpenStore: picks the backend from the uri scheme.

#include <unistd.h>

#include <string>
#include <vector>

#include "controller/store/etcd_store.h"
#include "controller/store/metadata_store.h"
#include "controller/store/sqlite_store.h"

namespace tandem::store {

namespace {

std::string DefaultCandidateId() {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return std::string(host[0] ? host : "controller") + "-" + std::to_string(::getpid());
}

std::vector<std::string> SplitEndpoints(std::string_view list) {
  std::vector<std::string> out;
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view part = list.substr(0, comma);
    if (!part.empty()) out.emplace_back(part);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<MetadataStore>> OpenStore(std::string_view uri,
                                                 const StoreOptions& options) {
  StoreOptions opts = options;
  if (opts.candidate_id.empty()) opts.candidate_id = DefaultCandidateId();
  if (opts.election_name.empty() || opts.election_name.find('/') != std::string::npos) {
    return Status::InvalidArgument("election_name must be a non-empty name without '/': " +
                                   opts.election_name);
  }
  if (opts.lease_ttl.count() < 1 || opts.request_timeout.count() < 1) {
    return Status::InvalidArgument("lease_ttl and request_timeout must be positive");
  }
  constexpr std::string_view kSqlite = "sqlite://";
  constexpr std::string_view kEtcd = "etcd://";
  if (uri.starts_with(kSqlite)) {
    auto r = SqliteStore::Open(std::string(uri.substr(kSqlite.size())), opts);
    if (!r.ok()) return r.status();
    return std::unique_ptr<MetadataStore>(std::move(r).value());
  }
  if (uri.starts_with(kEtcd)) {
    std::vector<std::string> endpoints = SplitEndpoints(uri.substr(kEtcd.size()));
    for (const std::string& e : endpoints) {
      if (e.find(':') == std::string::npos || e.find('/') != std::string::npos) {
        return Status::InvalidArgument("etcd endpoint must be host:port: " + e);
      }
    }
    if (endpoints.empty()) return Status::InvalidArgument("etcd uri has no endpoint");
    auto r = EtcdStore::Open(endpoints, opts);
    if (!r.ok()) return r.status();
    return std::unique_ptr<MetadataStore>(std::move(r).value());
  }
  return Status::InvalidArgument("store uri must be sqlite:///dir or etcd://host:port[,...]: " +
                                 std::string(uri));
}

}  // namespace tandem::store
