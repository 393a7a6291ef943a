#pragma once
// MembershipService: tandem.controller.v1.Membership (replica-engine/proto/
// membership.proto), the membership authority a volume target asks before it
// acknowledges writes below a majority (docs/architecture.md "Who may
// acknowledge"). The in-sync record lives in the volume's record; every
// change is one compare-and-swap that requires leadership and the caller's
// epoch to be the volume's current one, so a target fenced by a newer
// publish or an unpublish can never record anything.
//
// Thread-safety: handlers run concurrently; the store is the only state.

#include "controller/records.h"
#include "replica-engine/proto/membership.grpc.pb.h"

namespace tandem::controller {

class MembershipService final : public ::tandem::controller::v1::Membership::Service {
 public:
  explicit MembershipService(Records* records) : records_(records) {}

  grpc::Status ShrinkInSync(grpc::ServerContext* ctx, const v1::InSyncRequest* req,
                            v1::InSyncResponse* resp) override;
  grpc::Status GrowInSync(grpc::ServerContext* ctx, const v1::InSyncRequest* req,
                          v1::InSyncResponse* resp) override;

  // The body of both (public for tests of the rules without gRPC).
  Status Record(const v1::InSyncRequest& req, bool shrink, v1::InSyncResponse* resp);

 private:
  Records* const records_;
};

}  // namespace tandem::controller
