#include "controller/candidates.h"

#include <map>
#include <string>

namespace tandem::controller {

Result<std::vector<NodeCandidate>> CollectCandidates(NodeRegistry* nodes, Records* records) {
  nodes->PollUnseen();
  std::map<std::string, NodeCandidate> by_id;
  for (const auto& n : nodes->Snapshot()) {
    NodeCandidate c;
    c.node_id = n.record.node_id();
    c.topology = Segments(n.record.topology().begin(), n.record.topology().end());
    c.up = n.up;
    // The data directory's file system (statvfs): replicas are sparse files
    // there. 0 (an engine that does not report it): capacity unknown.
    c.total_bytes = n.info.capacity_total_bytes();
    c.free_bytes = n.info.capacity_available_bytes();
    by_id[c.node_id] = std::move(c);
  }
  std::string after;
  // Paged over every volume: what is placed where is the store's truth.
  for (int page = 0; page < 1000000; ++page) {
    bool more = false;
    TANDEM_ASSIGN_OR_RETURN(auto volumes, records->ListVolumes(after, 500, &more));
    for (const auto& v : volumes) {
      for (const auto& r : v.record.replicas()) {
        auto it = by_id.find(r.node_id());
        if (it == by_id.end()) continue;
        it->second.provisioned_bytes += v.record.size_bytes();
        it->second.replica_count++;
      }
    }
    if (!more || volumes.empty()) break;
    after = volumes.back().record.volume_id();
  }
  std::vector<NodeCandidate> out;
  out.reserve(by_id.size());
  for (auto& [id, c] : by_id) out.push_back(std::move(c));
  return out;
}

}  // namespace tandem::controller
