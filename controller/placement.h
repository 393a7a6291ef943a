#pragma once
// Placement: which nodes get a volume's replicas. A pure, deterministic
// function of its inputs (no clock, no randomness, no I/O), so the same
// cluster state always gives the same answer and tests can enumerate cases.
//
// Rules, in order:
//   1. Eligible nodes: up, not excluded (the volume's current nodes when a
//      replica is replaced), matching one of the requisite topologies when
//      any are given (a node matches a topology when it has every one of its
//      segments), and with room: a thick volume needs size <= the node's free
//      bytes; any volume needs provisioned + size <= total * overcommit
//      (thin over-commit limit). A node whose capacity is unknown (total 0)
//      is eligible on capacity.
//   2. Fewer eligible nodes than replicas: RESOURCE_EXHAUSTED saying how
//      many nodes were eligible and why the others were not.
//   3. The first replica goes to the first preferred topology that has an
//      eligible node (the consumer's node with WaitForFirstConsumer).
//   4. Each further replica goes to the eligible node that minimises, in
//      order: replicas already chosen in its zone (spread over the zone key),
//      provisioned bytes, replica count, node id.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/result.h"

namespace tandem::controller {

inline constexpr char kZoneKey[] = "topology.tandem.csi.io/zone";

using Segments = std::map<std::string, std::string>;

struct NodeCandidate {
  std::string node_id;
  Segments topology;
  bool up = false;
  // 0: unknown (the engine does not report capacity).
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
  // What the controller already placed there.
  uint64_t provisioned_bytes = 0;
  uint32_t replica_count = 0;
};

struct PlacementRequest {
  uint32_t replicas = 0;
  uint64_t size_bytes = 0;
  bool thin = true;
  // provisioned + size may reach total * overcommit (thin); thick volumes use 1.
  double overcommit = 4.0;
  std::vector<Segments> requisite;
  std::vector<Segments> preferred;
  std::vector<std::string> exclude_nodes;
  std::string zone_key = kZoneKey;
};

// Node ids, one per replica, in placement order.
Result<std::vector<std::string>> Place(const PlacementRequest& request,
                                       const std::vector<NodeCandidate>& nodes);

// Whether `node` has every segment of `topology`.
bool TopologyMatches(const Segments& topology, const Segments& node);

}  // namespace tandem::controller
