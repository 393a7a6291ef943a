#pragma once
// The steps that change a volume's replica set, shared by the reconciler's
// replacements (reconciler.cc) and ModifyVolume's `replicas`
// (controller_service_replicas.cc): where a new replica may go, creating it
// on its engine, and adding it to the volume's live target.

#include <chrono>
#include <string>
#include <vector>

#include "controller/engine_directory.h"
#include "controller/node_registry.h"
#include "controller/placement.h"
#include "controller/records.h"

namespace tandem::controller {

// Placement of `count` more replicas of `record`: its nodes excluded, its
// requisite topology kept.
PlacementRequest MoreReplicas(const rec::VolumeRecord& record, uint32_t count, double overcommit);

// The next replica of `record` on `node_id` ("<volume>-r<next_replica_index>";
// the caller bumps the index in the record), created on `engine_address`
// with the volume's size and secret. Same request again: OK (idempotent).
// A retired replica of the volume still on that node is deleted first.
Result<rec::ReplicaRecord> CreateNextReplica(EngineDirectory* engines,
                                             const rec::VolumeRecord& record,
                                             const std::string& node_id,
                                             const std::string& engine_address,
                                             std::chrono::milliseconds timeout);

// Adds the replica at `data_address` ("host:port") to the volume's live
// target on `target_engine` (it is rebuilt online). OK also when the volume
// has no target there (published, not staged: the next stage has it).
Status AddToLiveTarget(EngineDirectory* engines, const std::string& target_engine,
                       const std::string& volume_id, const std::string& data_address, bool local,
                       std::chrono::milliseconds timeout);

// OK when `target` (GetTarget on the attached node's engine) is the one the
// record's attachment built: its epoch is the attachment's and it serves
// (READY or DEGRADED). A target of an older epoch can stay on that engine
// after a force-detach until the next stage replaces it; it is fenced, and
// an idle one still reports the replica states it saw before, so its view
// says nothing about who holds the acknowledged writes: FAILED_PRECONDITION.
Status CheckAttachmentTarget(const epb::Target& target, const rec::VolumeRecord& record);

// A replica of the record that the live target lacks.
struct MissingReplica {
  std::string replica_id;
  std::string node_id;
  std::string data_address;
};

// The replicas of `record` (its `replicas`: never a retired one) that the
// live `target` does not hold, neither by the replica id it reports nor by
// their node's data address, and whose node is up with a known data address
// (a down one would only be FAULTED there; the reconciler replaces it).
std::vector<MissingReplica> MissingFromTarget(const epb::Target& target,
                                              const rec::VolumeRecord& record, NodeRegistry* nodes);

// Adds back to the attachment's live target the replicas of `record` it
// lacks (MissingFromTarget): a shrink abandoned after the target dropped
// its victims (the record never followed, or the count was set back) leaves
// the target with fewer replicas than the record. They are rebuilt online,
// like any replica that comes back. Only the attachment's own serving target
// is changed (CheckAttachmentTarget); none, another or an unreachable one:
// OK, nothing done (the next stage builds the target from the record). The
// caller holds the volume's in-flight guard and `record` is current, so no
// shrink is under way and a replica it removed is retired, not listed.
// `added` gets the ids added.
Status RestoreLiveTarget(EngineDirectory* engines, NodeRegistry* nodes,
                         const rec::VolumeRecord& record, std::chrono::milliseconds timeout,
                         std::vector<std::string>* added);

}  // namespace tandem::controller
