#pragma once
// PublishInfo: what ControllerPublishVolume hands the node in publish_context
// (string keys, string values, stored by Kubernetes in the VolumeAttachment's
// status): everything the engine on this node needs to create the volume's
// target. Keys are prefixed "tandem.csi.io/"; docs/node_plugin.md lists them.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/result.h"

namespace tandem::node {

struct ReplicaAddress {
  std::string host;  // dotted quad
  uint32_t port = 0;
};

struct PublishInfo {
  uint64_t epoch = 0;                            // "epoch": > 0, raised by every publish
  std::vector<ReplicaAddress> replicas;          // "replicas": "h:p,h:p,..." (1..5)
  uint64_t in_sync_generation_id = 0;            // "in-sync-generation-id": hex, optional
  std::vector<std::string> in_sync_replica_ids;  // "in-sync-replica-ids": "a,b", optional
  uint64_t size_bytes = 0;                       // "size-bytes": optional (0: the replicas')
  std::string secret;                       // "secret": the volume's data-port secret, optional
  uint64_t rebuild_rate_bytes_per_sec = 0;  // "rebuild-rate": optional
};

inline constexpr const char* kPublishKeyPrefix = "tandem.csi.io/";

// Parses and validates publish_context. INVALID_ARGUMENT naming the key that is
// missing or malformed (never echoing the secret).
Result<PublishInfo> ParsePublishContext(const std::map<std::string, std::string>& context);

// The inverse, for the controller and for tests.
std::map<std::string, std::string> EncodePublishContext(const PublishInfo& info);

}  // namespace tandem::node
