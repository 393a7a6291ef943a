#include "controller/placement.h"

#include <algorithm>
#include <tuple>

namespace tandem::controller {

bool TopologyMatches(const Segments& topology, const Segments& node) {
  for (const auto& [key, value] : topology) {
    auto it = node.find(key);
    if (it == node.end() || it->second != value) return false;
  }
  return true;
}

namespace {

// Empty when eligible, else why not (for the RESOURCE_EXHAUSTED message).
std::string Ineligible(const PlacementRequest& req, const NodeCandidate& n) {
  if (!n.up) return "down";
  if (std::find(req.exclude_nodes.begin(), req.exclude_nodes.end(), n.node_id) !=
      req.exclude_nodes.end()) {
    return "already holds a replica";
  }
  if (!req.requisite.empty() &&
      std::none_of(req.requisite.begin(), req.requisite.end(),
                   [&](const Segments& t) { return TopologyMatches(t, n.topology); })) {
    return "outside the requisite topology";
  }
  if (n.total_bytes != 0) {
    if (!req.thin && req.size_bytes > n.free_bytes) return "not enough free space";
    double ratio = req.thin ? req.overcommit : 1.0;
    double limit = static_cast<double>(n.total_bytes) * ratio;
    if (static_cast<double>(n.provisioned_bytes) + static_cast<double>(req.size_bytes) > limit) {
      return "over-commit limit reached";
    }
  }
  return "";
}

std::string ZoneOf(const PlacementRequest& req, const NodeCandidate& n) {
  auto it = n.topology.find(req.zone_key);
  return it == n.topology.end() ? "" : it->second;
}

}  // namespace

Result<std::vector<std::string>> Place(const PlacementRequest& req,
                                       const std::vector<NodeCandidate>& nodes) {
  if (req.replicas == 0) return Status::InvalidArgument("placement of 0 replicas");
  std::vector<const NodeCandidate*> eligible;
  std::map<std::string, int> reasons;
  for (const auto& n : nodes) {
    std::string why = Ineligible(req, n);
    if (why.empty()) {
      eligible.push_back(&n);
    } else {
      reasons[why]++;
    }
  }
  if (eligible.size() < req.replicas) {
    std::string msg = std::to_string(req.replicas) + " replicas of " +
                      std::to_string(req.size_bytes) + " bytes need as many distinct nodes; " +
                      std::to_string(eligible.size()) + " of " + std::to_string(nodes.size()) +
                      " registered nodes are eligible";
    for (const auto& [why, count] : reasons) msg += "; " + std::to_string(count) + " " + why;
    return Status::ResourceExhausted(msg);
  }
  // Deterministic base order: by node id.
  std::sort(eligible.begin(), eligible.end(),
            [](const NodeCandidate* a, const NodeCandidate* b) { return a->node_id < b->node_id; });

  std::vector<const NodeCandidate*> chosen;
  std::map<std::string, int> per_zone;
  auto take = [&](size_t i) {
    per_zone[ZoneOf(req, *eligible[i])]++;
    chosen.push_back(eligible[i]);
    eligible.erase(eligible.begin() + static_cast<std::ptrdiff_t>(i));
  };
  auto better = [&](const NodeCandidate* a, const NodeCandidate* b) {
    return std::make_tuple(per_zone[ZoneOf(req, *a)], a->provisioned_bytes, a->replica_count,
                           a->node_id) < std::make_tuple(per_zone[ZoneOf(req, *b)],
                                                         b->provisioned_bytes, b->replica_count,
                                                         b->node_id);
  };
  for (const auto& pref : req.preferred) {
    size_t best = eligible.size();
    for (size_t i = 0; i < eligible.size(); ++i) {
      if (!TopologyMatches(pref, eligible[i]->topology)) continue;
      if (best == eligible.size() || better(eligible[i], eligible[best])) best = i;
    }
    if (best != eligible.size()) {
      take(best);
      break;
    }
  }
  while (chosen.size() < req.replicas) {
    size_t best = 0;
    for (size_t i = 1; i < eligible.size(); ++i) {
      if (better(eligible[i], eligible[best])) best = i;
    }
    take(best);
  }
  std::vector<std::string> out;
  out.reserve(chosen.size());
  for (const auto* n : chosen) out.push_back(n->node_id);
  return out;
}

}  // namespace tandem::controller
