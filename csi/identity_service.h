#pragma once
// IdentityService: the CSI Identity service, the same for tandem-controller
// and tandem-node (one driver name, two processes):
//   GetPluginInfo         name kDriverName, vendor_version = the build's version
//   GetPluginCapabilities the capabilities the process was given
//   Probe                 ready = the process's readiness callback (the
//                         controller: store reachable and leading); a Probe
//                         that is not ready answers OK with ready=false, as the
//                         spec asks, and says why in the log at most once per
//                         change of reason.
//
// Thread-safety: the handlers run concurrently on gRPC's threads; the probe
// callback must be thread-safe.

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "csi/csi.grpc.pb.h"

namespace tandem::csi {

// The generated CSI types (package csi.v1).
namespace v1 = ::csi::v1;

// The CSI driver name: CSIDriver object, StorageClass provisioner and the
// sidecars all use it.
inline constexpr char kDriverName[] = "tandem.csi.io";

struct IdentityOptions {
  std::string vendor_version;
  std::vector<v1::PluginCapability> capabilities;
  // OK: ready; any error: not ready, the message saying why. Empty: always ready.
  std::function<Status()> probe;
};

class IdentityService final : public v1::Identity::Service {
 public:
  explicit IdentityService(IdentityOptions options);

  grpc::Status GetPluginInfo(grpc::ServerContext* ctx, const v1::GetPluginInfoRequest* req,
                             v1::GetPluginInfoResponse* resp) override;
  grpc::Status GetPluginCapabilities(grpc::ServerContext* ctx,
                                     const v1::GetPluginCapabilitiesRequest* req,
                                     v1::GetPluginCapabilitiesResponse* resp) override;
  grpc::Status Probe(grpc::ServerContext* ctx, const v1::ProbeRequest* req,
                     v1::ProbeResponse* resp) override;

  // Helpers to build IdentityOptions::capabilities.
  static v1::PluginCapability ServiceCapability(v1::PluginCapability::Service::Type type);
  static v1::PluginCapability ExpansionCapability(v1::PluginCapability::VolumeExpansion::Type type);

 private:
  const IdentityOptions options_;
  std::mutex mu_;
  std::string last_not_ready_;  // GUARDED_BY(mu_): logged once per change
};

}  // namespace tandem::csi
