#pragma once
// EngineVolumeHost: VolumeHost over the tandem-engine on this node (its gRPC
// management API through api::EngineClient). The engine hosts the target and
// its FUSE file export; tandem-node only asks for them.

#include <string>

#include "node-plugin/volume_host.h"
#include "replica-engine/api/engine_client.h"

namespace tandem::node {

class EngineVolumeHost : public VolumeHost {
 public:
  // `engine` must outlive this. `local_host`: this node's data address; a
  // replica there is marked local (reads prefer it).
  EngineVolumeHost(api::EngineClient* engine, std::string local_host)
      : engine_(engine), local_host_(std::move(local_host)) {}

  Result<HostedVolume> Attach(const std::string& volume_id,
                              const csi::PublishContext& info) override;
  Status Detach(const std::string& volume_id) override;
  Result<HostedVolume> Describe(const std::string& volume_id) override;
  Result<VolumeHealth> Health(const std::string& volume_id) override;
  Result<uint64_t> Resize(const std::string& volume_id, uint64_t size_bytes) override;

 private:
  api::EngineClient* engine_;
  std::string local_host_;
};

// The health of a target as the node reports it (VolumeCondition): abnormal
// unless every replica is HEALTHY, with each replica's state and the
// rebuild's progress and ETA in the message (api::HealthOfTarget, the same
// words the controller reports).
VolumeHealth HealthOf(const engine::v1::Target& target);

}  // namespace tandem::node
