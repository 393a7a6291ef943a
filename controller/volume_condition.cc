#include "controller/volume_condition.h"

#include "replica-engine/api/target_health.h"

namespace tandem::controller {

void FillVolumeCondition(const rec::VolumeRecord& volume, const NodeRegistry& nodes,
                         EngineDirectory* engines, std::chrono::milliseconds timeout,
                         ::csi::v1::VolumeCondition* condition) {
  std::string down;
  for (const auto& r : volume.replicas()) {
    auto node = nodes.Get(r.node_id());
    if (!node || !node->up) down += (down.empty() ? "" : ", ") + r.node_id();
  }
  const std::string nodes_down = down.empty() ? "" : "; replica nodes down: " + down;
  if (!volume.has_attachment()) {
    condition->set_abnormal(!down.empty());
    condition->set_message(down.empty() ? "HEALTHY: not attached, every replica's node is up"
                                        : "DEGRADED: not attached" + nodes_down);
    return;
  }
  const std::string& at = volume.attachment().node_id();
  auto node = nodes.Get(at);
  if (!node || !node->up) {
    // Asking a node the registry has found down would only wait out the
    // timeout; the CO fails the volume over (ControllerUnpublish, forced).
    condition->set_abnormal(true);
    condition->set_message("UNKNOWN: node " + at +
                           ", which hosts the volume's target, is down or unregistered" +
                           nodes_down);
    return;
  }
  auto target = engines->GetTarget(node->record.engine_address(), volume.volume_id(), timeout);
  if (!target.ok() && target.status().code() == StatusCode::kNotFound) {
    // Published, not staged yet (or unstaged, not yet unpublished): no
    // target carries I/O, so the replicas' nodes are all there is to say.
    condition->set_abnormal(!down.empty());
    condition->set_message((down.empty() ? "HEALTHY" : "DEGRADED") +
                           std::string(": published to node ") + at + ", no target there yet" +
                           nodes_down);
    return;
  }
  if (!target.ok()) {
    condition->set_abnormal(true);
    condition->set_message("UNKNOWN: the engine of node " + at +
                           " does not report the volume's target: " + target.status().ToString() +
                           nodes_down);
    return;
  }
  api::TargetHealth h = api::HealthOfTarget(*target);
  condition->set_abnormal(h.abnormal);
  condition->set_message(h.message + " (target on node " + at + ")");
}

}  // namespace tandem::controller
