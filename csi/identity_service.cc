#include "csi/identity_service.h"

#include <utility>

#include "common/grpc/handler_guard.h"
#include "common/logging.h"

namespace tandem::csi {

namespace {
constexpr const char* kTag = "csi_identity";
}  // namespace

IdentityService::IdentityService(IdentityOptions options) : options_(std::move(options)) {}

grpc::Status IdentityService::GetPluginInfo(grpc::ServerContext*, const v1::GetPluginInfoRequest*,
                                            v1::GetPluginInfoResponse* resp) {
  return rpc::GuardHandler("GetPluginInfo", [&]() -> grpc::Status {
    resp->set_name(kDriverName);
    resp->set_vendor_version(options_.vendor_version);
    return grpc::Status::OK;
  });
}

grpc::Status IdentityService::GetPluginCapabilities(grpc::ServerContext*,
                                                    const v1::GetPluginCapabilitiesRequest*,
                                                    v1::GetPluginCapabilitiesResponse* resp) {
  return rpc::GuardHandler("GetPluginCapabilities", [&]() -> grpc::Status {
    for (const auto& cap : options_.capabilities) *resp->add_capabilities() = cap;
    return grpc::Status::OK;
  });
}

grpc::Status IdentityService::Probe(grpc::ServerContext*, const v1::ProbeRequest*,
                                    v1::ProbeResponse* resp) {
  return rpc::GuardHandler("Probe", [&]() -> grpc::Status {
    Status st = options_.probe ? options_.probe() : Status::Ok();
    resp->mutable_ready()->set_value(st.ok());
    std::lock_guard<std::mutex> lock(mu_);
    std::string reason = st.ok() ? "" : st.ToString();
    if (reason != last_not_ready_) {
      // Probe is called every few seconds by the livenessprobe sidecar: log
      // the transitions, not every call.
      if (st.ok()) {
        TLOG_INFO(kTag, "ready");
      } else {
        TLOG_WARN(kTag, "not ready: %s", reason.c_str());
      }
      last_not_ready_ = std::move(reason);
    }
    return grpc::Status::OK;
  });
}

v1::PluginCapability IdentityService::ServiceCapability(v1::PluginCapability::Service::Type type) {
  v1::PluginCapability cap;
  cap.mutable_service()->set_type(type);
  return cap;
}

v1::PluginCapability IdentityService::ExpansionCapability(
    v1::PluginCapability::VolumeExpansion::Type type) {
  v1::PluginCapability cap;
  cap.mutable_volume_expansion()->set_type(type);
  return cap;
}

}  // namespace tandem::csi
