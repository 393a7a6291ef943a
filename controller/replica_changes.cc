#include "controller/replica_changes.h"

#include "common/address.h"
#include "common/logging.h"

namespace tandem::controller {

PlacementRequest MoreReplicas(const rec::VolumeRecord& record, uint32_t count, double overcommit) {
  PlacementRequest req;
  req.replicas = count;
  req.size_bytes = record.size_bytes();
  req.thin = record.thin();
  req.overcommit = overcommit;
  for (const auto& r : record.replicas()) req.exclude_nodes.push_back(r.node_id());
  for (const auto& t : record.accessible_topology()) {
    req.requisite.emplace_back(t.segments().begin(), t.segments().end());
  }
  return req;
}

namespace {

// An engine holds one replica per volume: a retired one still on `node_id`
// (its deletion owed, the node was down) would make a new one there
// ALREADY_EXISTS until the reconciler deleted it. It is in no record an
// attach reads and in no live target (removed from it before it was
// retired), so it goes now; the reconciler then drops it from the retired
// list (the node holds a replica of the record again). Only if the replica
// there is that retired one: an earlier attempt of the same change may have
// created the new one already (then CreateReplica is a repeat).
Status DeleteRetiredOn(EngineDirectory* engines, const rec::VolumeRecord& record,
                       const std::string& node_id, const std::string& engine_address,
                       std::chrono::milliseconds timeout) {
  for (const auto& r : record.retired_replicas()) {
    if (r.node_id() != node_id) continue;
    auto held = engines->GetReplica(engine_address, record.volume_id(), timeout);
    if (held.status().code() == StatusCode::kNotFound) return Status::Ok();
    if (!held.ok()) return held.status().WithContext("GetReplica on " + node_id);
    if (held->replica_id() != r.replica_id()) continue;
    Status st = engines->DeleteReplica(engine_address, record.volume_id(), timeout);
    if (!st.ok() && st.code() != StatusCode::kNotFound) {
      return st.WithContext("deleting retired replica " + r.replica_id() + " on " + node_id);
    }
    TLOG_INFO("controller", "volume %s: retired replica %s deleted on %s to place a new one",
              record.volume_id().c_str(), r.replica_id().c_str(), node_id.c_str());
  }
  return Status::Ok();
}

}  // namespace

Result<rec::ReplicaRecord> CreateNextReplica(EngineDirectory* engines,
                                             const rec::VolumeRecord& record,
                                             const std::string& node_id,
                                             const std::string& engine_address,
                                             std::chrono::milliseconds timeout) {
  rec::ReplicaRecord added;
  added.set_replica_id(record.volume_id() + "-r" + std::to_string(record.next_replica_index()));
  added.set_node_id(node_id);
  added.set_joining(true);  // until rebuilt (generation > 0)
  epb::CreateReplicaRequest creq;
  creq.set_volume_id(record.volume_id());
  creq.set_replica_id(added.replica_id());
  creq.set_size_bytes(record.size_bytes());
  creq.set_block_size(4096);
  // The volume's data-port secret: a target must prove it (docs/protocol.md).
  creq.set_secret(record.secret());
  TANDEM_RETURN_IF_ERROR(DeleteRetiredOn(engines, record, node_id, engine_address, timeout));
  auto created = engines->CreateReplica(engine_address, creq, timeout);
  if (!created.ok()) return created.status().WithContext("CreateReplica on " + node_id);
  return added;
}

Status AddToLiveTarget(EngineDirectory* engines, const std::string& target_engine,
                       const std::string& volume_id, const std::string& data_address, bool local,
                       std::chrono::milliseconds timeout) {
  std::string host;
  uint16_t port = 0;
  TANDEM_RETURN_IF_ERROR(ParseHostPort("data address", data_address, false, &host, &port));
  epb::ReplicaEndpoint ep;
  ep.set_host(host);
  ep.set_port(port);
  ep.set_local(local);
  Status st = engines->AddTargetReplica(target_engine, volume_id, ep, timeout);
  return st.code() == StatusCode::kNotFound ? Status::Ok() : st;
}

Status CheckAttachmentTarget(const epb::Target& target, const rec::VolumeRecord& record) {
  const uint64_t want = record.attachment().epoch();
  if (target.epoch() != want) {
    return Status::FailedPrecondition(
        "volume " + record.volume_id() + ": the target on node " + record.attachment().node_id() +
        " is at epoch " + std::to_string(target.epoch()) + ", not the attachment's " +
        std::to_string(want) + " (left from an earlier publish; the next stage replaces it)");
  }
  if (target.state() != epb::TARGET_STATE_READY && target.state() != epb::TARGET_STATE_DEGRADED) {
    return Status::FailedPrecondition("volume " + record.volume_id() + ": the target on node " +
                                      record.attachment().node_id() + " does not serve (state " +
                                      epb::TargetState_Name(target.state()) + ")");
  }
  return Status::Ok();
}

std::vector<MissingReplica> MissingFromTarget(const epb::Target& target,
                                              const rec::VolumeRecord& record,
                                              NodeRegistry* nodes) {
  std::vector<MissingReplica> missing;
  for (const auto& r : record.replicas()) {
    auto node = nodes->Get(r.node_id());
    std::string data = node ? node->info.data_address() : "";
    bool held = false;
    for (const auto& tr : target.replicas()) {
      held |= (!tr.replica_id().empty() && tr.replica_id() == r.replica_id()) ||
              (!data.empty() && tr.address() == data);
    }
    if (held || !node || !node->up || data.empty()) continue;
    missing.push_back({r.replica_id(), r.node_id(), data});
  }
  return missing;
}

Status RestoreLiveTarget(EngineDirectory* engines, NodeRegistry* nodes,
                         const rec::VolumeRecord& record, std::chrono::milliseconds timeout,
                         std::vector<std::string>* added) {
  if (!record.has_attachment()) return Status::Ok();
  const std::string& attached = record.attachment().node_id();
  auto node = nodes->Get(attached);
  if (!node) return Status::Ok();
  const std::string& engine = node->record.engine_address();
  auto target = engines->GetTarget(engine, record.volume_id(), timeout);
  if (!target.ok()) {
    // NOT_FOUND: not staged yet; else the engine does not answer. Either
    // way the next stage builds the target from the record.
    TLOG_DEBUG("controller", "volume %s: live target on %s not checked: %s",
               record.volume_id().c_str(), attached.c_str(), target.status().ToString().c_str());
    return Status::Ok();
  }
  if (!CheckAttachmentTarget(*target, record).ok()) return Status::Ok();
  for (const MissingReplica& m : MissingFromTarget(*target, record, nodes)) {
    Status st = AddToLiveTarget(engines, engine, record.volume_id(), m.data_address,
                                m.node_id == attached, timeout);
    if (!st.ok()) {
      return st.WithContext("AddTargetReplica " + m.replica_id + " on node " + attached);
    }
    added->push_back(m.replica_id);
  }
  return Status::Ok();
}

}  // namespace tandem::controller
