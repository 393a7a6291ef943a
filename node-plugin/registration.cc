#include "node-plugin/registration.h"

#include <grpcpp/client_context.h>

#include "common/grpc/client_channel.h"
#include "common/grpc/grpc_status.h"
#include "common/logging.h"
#include "controller/proto/registration.grpc.pb.h"

namespace tandem::node {
namespace {
constexpr const char* kTag = "registration";
}  // namespace

Status RegisterOnce(const RegistrationInfo& info, std::chrono::milliseconds timeout) {
  auto stub =
      controller::v1::Registration::NewStub(rpc::NewClientChannel(info.controller_endpoint));
  controller::v1::RegisterNodeRequest req;
  req.set_node_id(info.node_id);
  req.set_engine_address(info.engine_address);
  for (const auto& [k, v] : info.topology) (*req.mutable_topology())[k] = v;
  controller::v1::RegisterNodeResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  return rpc::FromGrpcStatus(stub->RegisterNode(&ctx, req, &resp));
}

Registrar::Registrar(RegistrationInfo info, std::chrono::milliseconds retry)
    : info_(std::move(info)), retry_(retry) {
  thread_ = std::thread([this] {
    std::string last_error;
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      lock.unlock();
      Status st = RegisterOnce(info_, std::chrono::seconds(5));
      lock.lock();
      if (st.ok()) {
        registered_ = true;
        TLOG_INFO(kTag, "node %s registered with the controller at %s", info_.node_id.c_str(),
                  info_.controller_endpoint.c_str());
        return;
      }
      if (st.ToString() != last_error) {  // once per distinct error, not every retry
        last_error = st.ToString();
        TLOG_WARN(kTag, "registering node %s with %s: %s (retrying every %lld ms)",
                  info_.node_id.c_str(), info_.controller_endpoint.c_str(), last_error.c_str(),
                  static_cast<long long>(retry_.count()));
      }
      cv_.wait_for(lock, retry_, [this] { return stop_; });
    }
  });
}

void Registrar::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace tandem::node
