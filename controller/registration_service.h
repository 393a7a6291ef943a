#pragma once
// RegistrationService: tandem.controller.v1.Registration (proto/
// registration.proto) over the NodeRegistry. Writes require leadership
// (UNAVAILABLE on a follower, like the CSI calls).
//
// Thread-safety: handlers run concurrently; the registry is thread-safe.

#include "controller/node_registry.h"
#include "controller/proto/registration.grpc.pb.h"

namespace tandem::controller {

class RegistrationService final : public ::tandem::controller::v1::Registration::Service {
 public:
  RegistrationService(NodeRegistry* nodes, store::MetadataStore* store, Records* records);

  grpc::Status RegisterNode(grpc::ServerContext* ctx, const v1::RegisterNodeRequest* req,
                            v1::RegisterNodeResponse* resp) override;
  grpc::Status ListNodes(grpc::ServerContext* ctx, const v1::ListNodesRequest* req,
                         v1::ListNodesResponse* resp) override;

 private:
  NodeRegistry* const nodes_;
  store::MetadataStore* const store_;
  Records* const records_;
};

}  // namespace tandem::controller
