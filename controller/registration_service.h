#pragma once
// RegistrationService: tandem.controller.v1.Registration (proto/
// registration.proto) over the NodeRegistry. Writes and GetAttachment
// require leadership (UNAVAILABLE on a follower, like the CSI calls).
//
// Thread-safety: handlers run concurrently; the registry is thread-safe.

#include "controller/node_registry.h"
#include "controller/proto/registration.grpc.pb.h"
#include "csi/inflight.h"

namespace tandem::controller {

class RegistrationService final : public ::tandem::controller::v1::Registration::Service {
 public:
  // `inflight`: the CSI service's per-volume guard set (GetAttachment takes
  // the volume's key while it reads the record, so it never reads one
  // half-way through a ModifyVolume or a reconciler replacement that changed
  // the live target first; it builds the answer after letting it go).
  RegistrationService(NodeRegistry* nodes, store::MetadataStore* store, Records* records,
                      csi::InFlight* inflight);

  grpc::Status RegisterNode(grpc::ServerContext* ctx, const v1::RegisterNodeRequest* req,
                            v1::RegisterNodeResponse* resp) override;
  grpc::Status ListNodes(grpc::ServerContext* ctx, const v1::ListNodesRequest* req,
                         v1::ListNodesResponse* resp) override;
  grpc::Status GetAttachment(grpc::ServerContext* ctx, const v1::GetAttachmentRequest* req,
                             v1::GetAttachmentResponse* resp) override;

 private:
  // The record of `volume_id`, read under its in-flight guard, if it is
  // attached to `node_id` (GetAttachment's codes otherwise). The guard is
  // let go on return.
  Result<rec::VolumeRecord> AttachedRecord(const std::string& volume_id,
                                           const std::string& node_id);

  NodeRegistry* const nodes_;
  store::MetadataStore* const store_;
  Records* const records_;
  csi::InFlight* const inflight_;
};

}  // namespace tandem::controller
