#pragma once
// VolumeHost: the engine on this node as the node plugin sees it — it hosts a
// volume's target and exports it as a file (the FUSE file export) that the
// node attaches through a loop device. The engine, not tandem-node, owns the
// export, so restarting tandem-node never interrupts a volume's I/O.
// EngineVolumeHost (engine_volume_host.h) implements it over the engine's
// gRPC API.

#include <cstdint>
#include <string>

#include "common/result.h"
#include "csi/publish_context.h"

namespace tandem::node {

struct HostedVolume {
  std::string export_path;  // the regular file that is the volume
  uint64_t size_bytes = 0;
  uint64_t epoch = 0;
};

struct VolumeHealth {
  bool abnormal = false;
  std::string message;  // replica states, rebuild progress; "" when healthy
};

class VolumeHost {
 public:
  virtual ~VolumeHost() = default;
  // Creates the volume's target with a file export, or returns the existing
  // one when it was created for the same epoch (idempotent). A target left at
  // an older epoch is replaced; FAILED_PRECONDITION when this node's target
  // holds a newer epoch than `info` (the publish was superseded).
  virtual Result<HostedVolume> Attach(const std::string& volume_id,
                                      const csi::PublishContext& info) = 0;
  // Destroys the target (flushing it first). OK when there is none.
  virtual Status Detach(const std::string& volume_id) = 0;
  virtual Result<HostedVolume> Describe(const std::string& volume_id) = 0;  // NOT_FOUND
  virtual Result<VolumeHealth> Health(const std::string& volume_id) = 0;
  // Grows the volume to at least `size_bytes`; returns the new size.
  virtual Result<uint64_t> Resize(const std::string& volume_id, uint64_t size_bytes) = 0;
};

}  // namespace tandem::node
