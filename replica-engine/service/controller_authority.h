#pragma once
// ControllerAuthority: the membership authority (volume/membership_authority.h)
// of a tandem-engine started with --controller: each ShrinkInSync/GrowInSync
// is a call of the controller's tandem.controller.v1.Membership service
// (replica-engine/proto/membership.proto).
//
// Never blocks the caller: the call is gRPC's callback API, and its answer is
// posted to `reply_loop`, as the interface requires: the loop of the targets
// that use this authority. A TargetManager with several loops
// (--target-threads) gets one authority per loop, the others made with the
// sharing constructor (one connection to the controller). Each call has a deadline; a target that
// gets UNAVAILABLE or DEADLINE_EXCEEDED asks again later and meanwhile its writes wait, bounded by
// its quorum wait.
//
// Thread-safety: the calls may come from any thread. REQUIRES: destroyed
// before `reply_loop` (answers arriving later are dropped).

#include <chrono>
#include <memory>
#include <string>

#include "common/event_loop.h"
#include "replica-engine/proto/membership.grpc.pb.h"
#include "replica-engine/volume/membership_authority.h"

namespace tandem::service {

class ControllerAuthority final : public target::MembershipAuthority {
 public:
  // `address`: the controller's endpoint (endpoint.h grammar). `token`: sent
  // as "authorization: Bearer" when not empty.
  ControllerAuthority(const std::string& address, std::string token, EventLoop* reply_loop,
                      std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  // The same controller, connection, token and timeout as `other`; answers
  // go to `reply_loop`.
  ControllerAuthority(const ControllerAuthority& other, EventLoop* reply_loop);
  ~ControllerAuthority() override;

  void ShrinkInSync(const target::InSyncUpdate& update, std::function<void(Status)> done) override;
  void GrowInSync(const target::InSyncUpdate& update, std::function<void(Status)> done) override;

 private:
  struct Shared;
  struct Call;
  void Start(bool shrink, const target::InSyncUpdate& update, std::function<void(Status)> done);

  std::shared_ptr<Shared> shared_;
  std::string token_;
  std::chrono::milliseconds timeout_;
};

}  // namespace tandem::service
