#pragma once
// NodeService: CSI's Node service for tandem-node (Identity is csi/identity_service.h).
//
// Stage: the engine on this node creates the volume's target with a file
// export (VolumeHost::Attach) from the attachment's current context, asked of
// the controller (attachments.h, node_service_context.cc); the node attaches
// that file to a loop device with direct I/O and, for a Filesystem volume,
// formats it when blank and mounts it at the staging path. Publish
// bind-mounts the staging mount (or, for a Block volume, the loop device
// node) at the pod's target path. Unpublish and Unstage undo this in reverse;
// every call is idempotent and safe when a previous attempt stopped half-way
// (NodeState records each step).
//
// Concurrent calls for one volume id answer ABORTED (CSI's "operation pending
// for volume"); calls for different volumes run in parallel.

#include <string>

#include "common/grpc/bearer_auth.h"
#include "csi/csi.grpc.pb.h"
#include "csi/inflight.h"
#include "node-plugin/attachments.h"
#include "node-plugin/node_state.h"
#include "node-plugin/volume_host.h"

namespace tandem::node {

struct NodeServiceOptions {
  std::string node_id;
  std::string zone;                  // topology.tandem.csi.io/zone; "" = none
  int64_t max_volumes_per_node = 0;  // 0: no limit
};

inline constexpr const char* kTopologyZoneKey = "topology.tandem.csi.io/zone";
inline constexpr const char* kTopologyNodeKey = "topology.tandem.csi.io/node";

class NodeService final : public ::csi::v1::Node::Service {
 public:
  // `host`, `state` and `attachments` must outlive the service.
  // `attachments` null (no --controller): targets are built from kubelet's
  // publish_context as given, which a later replica change leaves stale.
  NodeService(NodeServiceOptions options, VolumeHost* host, NodeState* state,
              Attachments* attachments = nullptr);

  grpc::Status NodeStageVolume(grpc::ServerContext* ctx,
                               const ::csi::v1::NodeStageVolumeRequest* req,
                               ::csi::v1::NodeStageVolumeResponse* resp) override;
  grpc::Status NodeUnstageVolume(grpc::ServerContext* ctx,
                                 const ::csi::v1::NodeUnstageVolumeRequest* req,
                                 ::csi::v1::NodeUnstageVolumeResponse* resp) override;
  grpc::Status NodePublishVolume(grpc::ServerContext* ctx,
                                 const ::csi::v1::NodePublishVolumeRequest* req,
                                 ::csi::v1::NodePublishVolumeResponse* resp) override;
  grpc::Status NodeUnpublishVolume(grpc::ServerContext* ctx,
                                   const ::csi::v1::NodeUnpublishVolumeRequest* req,
                                   ::csi::v1::NodeUnpublishVolumeResponse* resp) override;
  grpc::Status NodeGetVolumeStats(grpc::ServerContext* ctx,
                                  const ::csi::v1::NodeGetVolumeStatsRequest* req,
                                  ::csi::v1::NodeGetVolumeStatsResponse* resp) override;
  grpc::Status NodeExpandVolume(grpc::ServerContext* ctx,
                                const ::csi::v1::NodeExpandVolumeRequest* req,
                                ::csi::v1::NodeExpandVolumeResponse* resp) override;
  grpc::Status NodeGetCapabilities(grpc::ServerContext* ctx,
                                   const ::csi::v1::NodeGetCapabilitiesRequest* req,
                                   ::csi::v1::NodeGetCapabilitiesResponse* resp) override;
  grpc::Status NodeGetInfo(grpc::ServerContext* ctx, const ::csi::v1::NodeGetInfoRequest* req,
                           ::csi::v1::NodeGetInfoResponse* resp) override;

 private:
  Status Stage(const ::csi::v1::NodeStageVolumeRequest& req);
  Status Unstage(const std::string& volume_id, const std::string& staging_path);
  // node_service_context.cc: the target of a stage, built from the current
  // context of the attachment (`given` is kubelet's publish_context).
  // `confirmed`: a previous stage of this epoch built and checked the target
  // this engine may host (else one found is destroyed and built again).
  Result<HostedVolume> AttachCurrent(const std::string& volume_id, const csi::PublishContext& given,
                                     bool confirmed);
  Result<csi::PublishContext> CurrentContext(const std::string& volume_id,
                                             const csi::PublishContext& given);
  Status Publish(const ::csi::v1::NodePublishVolumeRequest& req);
  Status Unpublish(const std::string& volume_id, const std::string& target_path);
  Status Stats(const ::csi::v1::NodeGetVolumeStatsRequest& req,
               ::csi::v1::NodeGetVolumeStatsResponse* resp);
  Status Expand(const ::csi::v1::NodeExpandVolumeRequest& req,
                ::csi::v1::NodeExpandVolumeResponse* resp);

  NodeServiceOptions options_;
  VolumeHost* host_;
  NodeState* state_;
  Attachments* attachments_;
  rpc::BearerTokenAuth no_auth_;  // CSI runs on a unix socket only kubelet reaches
  csi::InFlight inflight_;        // volume ids with a call running
};

}  // namespace tandem::node
