#include "replica-engine/service/controller_authority.h"

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/grpc/bearer_auth.h"
#include "common/grpc/client_channel.h"
#include "common/grpc/grpc_status.h"

namespace tandem::service {

namespace pb = ::tandem::controller::v1;

// What outlives the authority: the stub (calls in flight use it) and the loop
// answers go to, cleared when the authority goes.
struct ControllerAuthority::Shared {
  std::shared_ptr<pb::Membership::Stub> stub;  // shared by the authorities of one controller
  std::mutex mu;
  EventLoop* loop = nullptr;  // guarded by mu
};

namespace {
// One stub per controller address for the life of the process, never
// destroyed (reachable from a static, so not a leak to LeakSanitizer). The
// channel is never torn down because Debian's gRPC (1.51) can free its
// callback-API completion queue twice when the last such channel goes while
// gRPC's threads still poll that queue (ASan, ControllerAuthorityTest, under
// load). An engine talks to one controller: this is its one connection.
std::shared_ptr<pb::Membership::Stub> StubFor(const std::string& address) {
  static std::mutex mu;
  static auto* stubs = new std::map<std::string, std::shared_ptr<pb::Membership::Stub>>();
  std::lock_guard<std::mutex> l(mu);
  std::shared_ptr<pb::Membership::Stub>& stub = (*stubs)[address];
  if (!stub) stub = pb::Membership::NewStub(rpc::NewClientChannel(address));
  return stub;
}
}  // namespace

struct ControllerAuthority::Call {
  std::shared_ptr<Shared> shared;
  grpc::ClientContext ctx;
  pb::InSyncRequest req;
  pb::InSyncResponse resp;
  std::function<void(Status)> done;
};

ControllerAuthority::ControllerAuthority(const std::string& address, std::string token,
                                         EventLoop* reply_loop, std::chrono::milliseconds timeout)
    : shared_(std::make_shared<Shared>()), token_(std::move(token)), timeout_(timeout) {
  shared_->stub = StubFor(address);
  shared_->loop = reply_loop;
}

ControllerAuthority::ControllerAuthority(const ControllerAuthority& other, EventLoop* reply_loop)
    : shared_(std::make_shared<Shared>()), token_(other.token_), timeout_(other.timeout_) {
  shared_->stub = other.shared_->stub;
  shared_->loop = reply_loop;
}

ControllerAuthority::~ControllerAuthority() {
  std::lock_guard<std::mutex> l(shared_->mu);
  shared_->loop = nullptr;
}

void ControllerAuthority::ShrinkInSync(const target::InSyncUpdate& update,
                                       std::function<void(Status)> done) {
  Start(true, update, std::move(done));
}

void ControllerAuthority::GrowInSync(const target::InSyncUpdate& update,
                                     std::function<void(Status)> done) {
  Start(false, update, std::move(done));
}

void ControllerAuthority::Start(bool shrink, const target::InSyncUpdate& u,
                                std::function<void(Status)> done) {
  auto* call = new Call;
  call->shared = shared_;
  call->done = std::move(done);
  call->ctx.set_deadline(std::chrono::system_clock::now() + timeout_);
  if (!token_.empty()) rpc::AddBearerToken(&call->ctx, token_);
  call->req.set_volume_id(u.volume_id);
  call->req.set_epoch(u.epoch);
  call->req.set_generation(u.generation);
  call->req.set_generation_id(u.generation_id);
  for (const std::string& id : u.replica_ids) call->req.add_replica_ids(id);
  call->req.set_seq(u.seq);
  // Runs on a gRPC thread: the answer goes to the targets' loop.
  auto finish = [call](grpc::Status gs) {
    Status st = rpc::FromGrpcStatus(gs);
    {
      std::lock_guard<std::mutex> l(call->shared->mu);
      if (call->shared->loop != nullptr) {
        call->shared->loop->Post([done = std::move(call->done), st] { done(st); });
      }
    }
    delete call;
  };
  auto* async = call->shared->stub->async();
  if (shrink) {
    async->ShrinkInSync(&call->ctx, &call->req, &call->resp, std::move(finish));
  } else {
    async->GrowInSync(&call->ctx, &call->req, &call->resp, std::move(finish));
  }
}

}  // namespace tandem::service
