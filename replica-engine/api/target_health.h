#pragma once
// TargetHealth: a volume target's status (engine.proto Target) summed up as
// CSI's VolumeCondition wants it — abnormal or not, and one message a person
// can act on. The node plugin (NodeGetVolumeStats) and the controller
// (ControllerGetVolume, ListVolumes) report the same words for the same
// target, so both read it through this.
//
// The message starts with one word:
//   HEALTHY       every replica in sync (abnormal = false)
//   DEGRADED      I/O goes on, some replica is not in sync: each one's state,
//                 its last error, and a running rebuild's progress and ETA
//   INACCESSIBLE  no in-sync replica is reachable: I/O fails
//   FENCED        a newer attach (epoch) took the volume over: I/O fails here
//   STARTING      the target is still connecting to its replicas

#include <string>

#include "replica-engine/proto/engine.pb.h"

namespace tandem::api {

struct TargetHealth {
  bool abnormal = false;
  std::string message;
};

TargetHealth HealthOfTarget(const engine::v1::Target& target);

// "REBUILDING 42.0% (27 MiB of 64 MiB), ETA 3 s" for a running rebuild; ""
// otherwise.
std::string RebuildProgress(const engine::v1::RebuildStatus& rebuild);

}  // namespace tandem::api
