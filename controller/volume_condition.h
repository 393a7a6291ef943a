#pragma once
// The controller's VolumeCondition of a volume (ControllerGetVolume and
// ListVolumes; CSI's alpha VOLUME_CONDITION controller capability).
//
// An attached volume reports its target's health as the engine hosting it
// sees it (engine GetTarget, summed up by api::HealthOfTarget: DEGRADED with
// each replica's state and the rebuild's progress and ETA, INACCESSIBLE when
// no in-sync replica is reachable) — the same words NodeGetVolumeStats
// reports on the node. A volume not attached anywhere has no target: the
// controller reports whether every replica's node is up.

#include <chrono>

#include "controller/engine_directory.h"
#include "controller/node_registry.h"
#include "controller/records.h"
#include "csi/csi.pb.h"

namespace tandem::controller {

// `timeout` bounds the one engine call (a ListVolumes page makes one per
// attached volume whose node is up).
void FillVolumeCondition(const rec::VolumeRecord& volume, const NodeRegistry& nodes,
                         EngineDirectory* engines, std::chrono::milliseconds timeout,
                         ::csi::v1::VolumeCondition* condition);

}  // namespace tandem::controller
