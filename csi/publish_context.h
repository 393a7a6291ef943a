#pragma once
// PublishContext: what ControllerPublishVolume hands the node (through
// kubelet, in NodeStageVolumeRequest.publish_context) so tandem-node can ask
// its engine for the volume target without calling the controller. The
// contract between tandem-controller (Encode) and tandem-node (Decode).
//
// Keys (all values are text; the format tandem-node's parser,
// node-plugin/publish_context.h, reads):
//   tandem.csi.io/epoch                  attach epoch, decimal, > 0
//   tandem.csi.io/replicas               "<host>:<port>,..." data addresses
//   tandem.csi.io/replica-ids            "<replica_id>,..." in the same order
//   tandem.csi.io/in-sync-generation-id  in-sync generation id, 16 hex digits;
//                                        absent: none recorded (majority rule)
//   tandem.csi.io/in-sync-replica-ids    "<replica_id>,..."; absent: none
//   tandem.csi.io/size-bytes             volume size in bytes, decimal
//   tandem.csi.io/rebuild-rate           bytes/s, decimal; absent: engine default
//   tandem.csi.io/secret                 the volume's secret (hex). The call
//                                        log redacts it (its key names a
//                                        secret: common/grpc/redact.h).
//
// publish_context is stored by Kubernetes in the VolumeAttachment's status:
// the secret there is as protected as that object (docs/controller.md).

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/result.h"

namespace tandem::csi {

struct PublishedReplica {
  std::string replica_id;
  std::string address;  // "host:port" of the replica's engine data protocol
  bool operator==(const PublishedReplica&) const = default;
};

struct PublishContext {
  uint64_t epoch = 0;
  std::vector<PublishedReplica> replicas;
  uint64_t in_sync_generation_id = 0;
  std::vector<std::string> in_sync_replica_ids;
  uint64_t size_bytes = 0;
  uint64_t rebuild_rate_bytes_per_sec = 0;
  std::string volume_secret;
  bool operator==(const PublishContext&) const = default;
};

inline constexpr char kCtxEpoch[] = "tandem.csi.io/epoch";
inline constexpr char kCtxReplicas[] = "tandem.csi.io/replicas";
inline constexpr char kCtxReplicaIds[] = "tandem.csi.io/replica-ids";
inline constexpr char kCtxInSyncGeneration[] = "tandem.csi.io/in-sync-generation-id";
inline constexpr char kCtxInSync[] = "tandem.csi.io/in-sync-replica-ids";
inline constexpr char kCtxSize[] = "tandem.csi.io/size-bytes";
inline constexpr char kCtxRebuildRate[] = "tandem.csi.io/rebuild-rate";
inline constexpr char kCtxVolumeSecret[] = "tandem.csi.io/secret";

std::map<std::string, std::string> EncodePublishContext(const PublishContext& ctx);

// Decodes an encoded map (see DecodePublishContext).
Result<PublishContext> DecodePublishContextMap(const std::map<std::string, std::string>& map);

// INVALID_ARGUMENT naming "publish_context[<key>]" when a key is missing or
// malformed (a NodeStageVolume without a ControllerPublishVolume, or from
// another driver).
template <typename MapT>
Result<PublishContext> DecodePublishContext(const MapT& map) {
  std::map<std::string, std::string> m(map.begin(), map.end());
  return DecodePublishContextMap(m);
}

}  // namespace tandem::csi
