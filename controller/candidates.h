#pragma once
// CollectCandidates: placement's inputs (placement.h) from the controller's
// state: every registered node with its liveness and reported capacity, and
// what the volume records place on it. Shared by CreateVolume and the
// reconciler.

#include <vector>

#include "common/result.h"
#include "controller/node_registry.h"
#include "controller/placement.h"
#include "controller/records.h"

namespace tandem::controller {

// Polls nodes never polled yet first (a controller that just started must
// not take them for down).
Result<std::vector<NodeCandidate>> CollectCandidates(NodeRegistry* nodes, Records* records);

}  // namespace tandem::controller
