// ControllerService: CreateVolume and DeleteVolume.
//
// CreateVolume is a small state machine kept in the store, so a controller
// killed at any point resumes on the CO's retry:
//   1. record CREATING (placement decided, ids and secret chosen) together
//      with the name index, in one Txn;
//   2. CreateReplica on every chosen engine (idempotent, in parallel);
//   3. record READY.
// A retry that finds CREATING redoes 2 and 3. A replica the engine refuses
// (too big, no space) rolls the volume back: replicas deleted, record gone.

#include <algorithm>
#include <chrono>
#include <future>
#include <random>

#include <google/protobuf/util/message_differencer.h>

#include "common/logging.h"
#include "controller/controller_service.h"
#include "csi/validation.h"

namespace tandem::controller {

namespace {

constexpr const char* kTag = "controller";

std::string RandomHex(size_t bytes) {
  std::random_device rd;  // /dev/urandom on Linux
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes * 2);
  for (size_t i = 0; i < bytes; ++i) {
    unsigned b = rd() & 0xff;
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0xf]);
  }
  return out;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::vector<Segments> ToSegments(
    const google::protobuf::RepeatedPtrField<csipb::Topology>& topologies) {
  std::vector<Segments> out;
  for (const auto& t : topologies) out.emplace_back(t.segments().begin(), t.segments().end());
  return out;
}

// Whether a CreateVolume asking for `p` asks what the volume's own
// CreateVolume asked (its parameters as recorded verbatim; the provisioner's
// own keys, csi.storage.k8s.io/..., are not compared). Not the volume as it
// is now: a ModifyVolume since changed its replica count or rebuild rate,
// and the CO's retry of the original CreateVolume must stay idempotent.
bool SameParams(const VolumeParams& p, const rec::VolumeRecord& r) {
  auto asked = ParseCreateParams(r.parameters(), r.create_mutable_parameters());
  if (!asked.ok()) return false;  // recorded only once parsed: never
  return p.replicas == asked->replicas && p.fs_type == asked->fs_type && p.thin == asked->thin &&
         p.rebuild_rate_bytes_per_sec == asked->rebuild_rate_bytes_per_sec;
}

bool IsPermanent(StatusCode code) {
  return code == StatusCode::kInvalidArgument || code == StatusCode::kOutOfRange ||
         code == StatusCode::kAlreadyExists || code == StatusCode::kResourceExhausted ||
         code == StatusCode::kPermissionDenied || code == StatusCode::kFailedPrecondition;
}

}  // namespace

// size: CreateVolume's contract in one reading order (validation, the idempotent answer
// for an existing name, placement, the record); each step's status code is part of it.
Status ControllerService::DoCreateVolume(const csipb::CreateVolumeRequest& req,
                                         csipb::CreateVolumeResponse* resp) {
  TANDEM_RETURN_IF_ERROR(csi::RequireField("name", req.name()));
  TANDEM_RETURN_IF_ERROR(
      csi::CheckCapabilitiesShape("volume_capabilities", req.volume_capabilities()));
  for (int i = 0; i < req.volume_capabilities().size(); ++i) {
    std::string why = csi::UnsupportedCapabilityReason(
        "volume_capabilities[" + std::to_string(i) + "]", req.volume_capabilities(i));
    if (!why.empty()) return Status::InvalidArgument(why);
  }
  if (req.has_volume_content_source()) {
    return Status::InvalidArgument(
        "volume_content_source: Tandem does not create volumes from snapshots or clones yet");
  }
  TANDEM_ASSIGN_OR_RETURN(VolumeParams params,
                          ParseCreateParams(req.parameters(), req.mutable_parameters()));
  int64_t required = req.capacity_range().required_bytes();
  int64_t limit = req.capacity_range().limit_bytes();
  TANDEM_ASSIGN_OR_RETURN(uint64_t size, VolumeSizeFor(required, limit));

  TANDEM_ASSIGN_OR_RETURN(auto guard, inflight_.TryAcquire("name:" + req.name()));
  TANDEM_RETURN_IF_ERROR(CheckLeader());

  TANDEM_ASSIGN_OR_RETURN(auto existing_id, records_->GetVolumeIdByName(req.name()));
  if (existing_id) {
    TANDEM_ASSIGN_OR_RETURN(auto v, records_->GetVolume(*existing_id));
    if (!v) {
      return Status::Aborted("volume name " + req.name() + " is being changed; retry");
    }
    const auto& r = v->record;
    if (!SameParams(params, r) || !SizeSatisfies(r.size_bytes(), required, limit)) {
      return Status::AlreadyExists("a volume named " + req.name() + " exists (" + r.volume_id() +
                                   ", " + std::to_string(r.size_bytes()) + " bytes, " +
                                   std::to_string(r.replica_count()) +
                                   " replicas now) and was created with other parameters or "
                                   "this size does not fit the request");
    }
    if (r.state() == rec::VolumeRecord::DELETING) {
      return Status::Aborted("volume " + r.volume_id() + " named " + req.name() +
                             " is being deleted; retry");
    }
    if (r.state() == rec::VolumeRecord::CREATING) {
      TLOG_INFO(kTag, "CreateVolume %s: resuming the creation of %s", req.name().c_str(),
                r.volume_id().c_str());
      TANDEM_RETURN_IF_ERROR(FinishCreate(std::move(*v)));
      TANDEM_ASSIGN_OR_RETURN(v, records_->GetVolume(*existing_id));
      if (!v) return Status::Aborted("volume " + *existing_id + " vanished; retry");
    }
    FillVolume(v->record, resp->mutable_volume());
    return Status::Ok();
  }

  // New volume: place it.
  PlacementRequest placement;
  placement.replicas = params.replicas;
  placement.size_bytes = size;
  placement.thin = params.thin;
  placement.overcommit = options_.overcommit;
  placement.requisite = ToSegments(req.accessibility_requirements().requisite());
  placement.preferred = ToSegments(req.accessibility_requirements().preferred());
  TANDEM_ASSIGN_OR_RETURN(auto candidates, Candidates());
  // Larger than any node could ever hold is OUT_OF_RANGE (no retry helps);
  // merely full is RESOURCE_EXHAUSTED (placement).
  uint64_t largest = 0;
  bool all_known = !candidates.empty();
  for (const auto& c : candidates) {
    largest = std::max(largest, c.total_bytes);
    if (c.total_bytes == 0) all_known = false;
  }
  if (all_known && size > largest) {
    return Status::OutOfRange("capacity_range: " + std::to_string(size) +
                              " bytes exceeds the storage of every node (largest " +
                              std::to_string(largest) + " bytes)");
  }
  TANDEM_ASSIGN_OR_RETURN(auto chosen, Place(placement, candidates));

  rec::VolumeRecord record;
  record.set_volume_id("tv-" + RandomHex(8));
  record.set_name(req.name());
  record.set_state(rec::VolumeRecord::CREATING);
  record.set_size_bytes(size);
  record.set_replica_count(params.replicas);
  record.set_fs_type(params.fs_type);
  record.set_thin(params.thin);
  record.set_rebuild_rate_bytes_per_sec(params.rebuild_rate_bytes_per_sec);
  *record.mutable_parameters() = req.parameters();
  *record.mutable_create_mutable_parameters() = req.mutable_parameters();
  for (const auto& node_id : chosen) {
    auto* r = record.add_replicas();
    r->set_replica_id(record.volume_id() + "-r" + std::to_string(record.next_replica_index()));
    r->set_node_id(node_id);
    record.set_next_replica_index(record.next_replica_index() + 1);
    record.add_in_sync_replica_ids(r->replica_id());
  }
  record.set_secret(RandomHex(32));
  // Replicas are reached over the network from any node, so the volume is
  // accessible wherever the CO asked for it.
  for (const auto& t : req.accessibility_requirements().requisite()) {
    *record.add_accessible_topology()->mutable_segments() = t.segments();
  }
  record.set_created_unix_ms(NowUnixMs());
  TANDEM_ASSIGN_OR_RETURN(int64_t rev, records_->CreateVolume(record));
  std::string nodes_text;
  for (const auto& n : chosen) nodes_text += (nodes_text.empty() ? "" : ",") + n;
  TLOG_INFO(kTag, "CreateVolume %s: %s, %llu bytes, %u replicas on %s", req.name().c_str(),
            record.volume_id().c_str(), static_cast<unsigned long long>(size), params.replicas,
            nodes_text.c_str());
  std::string id = record.volume_id();
  TANDEM_RETURN_IF_ERROR(FinishCreate({std::move(record), rev}));
  TANDEM_ASSIGN_OR_RETURN(auto v, records_->GetVolume(id));
  if (!v) return Status::Aborted("volume " + id + " vanished; retry");
  FillVolume(v->record, resp->mutable_volume());
  return Status::Ok();
}

Status ControllerService::FinishCreate(Versioned<rec::VolumeRecord> v) {
  const auto& record = v.record;
  std::vector<std::future<Status>> calls;
  for (const auto& r : record.replicas()) {
    std::string address = EngineAddress(r.node_id());
    epb::CreateReplicaRequest creq;
    creq.set_volume_id(record.volume_id());
    creq.set_replica_id(r.replica_id());
    creq.set_size_bytes(record.size_bytes());
    creq.set_block_size(kBlockSize);
    // The volume's data-port secret: a target must prove it (docs/protocol.md).
    creq.set_secret(record.secret());
    calls.push_back(std::async(std::launch::async, [this, address, creq, node = r.node_id()] {
      if (address.empty()) return Status::Unavailable("node " + node + " is not registered");
      auto res = engines_->CreateReplica(address, creq, options_.engine_timeout);
      return res.ok() ? Status::Ok() : res.status().WithContext("CreateReplica on node " + node);
    }));
  }
  Status first;
  for (auto& c : calls) {
    Status st = c.get();
    if (!st.ok() && first.ok()) first = std::move(st);
  }
  if (!first.ok()) {
    TLOG_WARN(kTag, "volume %s: %s", record.volume_id().c_str(), first.ToString().c_str());
    if (!IsPermanent(first.code())) {
      // Transient (an engine down or slow): keep the record CREATING, the
      // CO retries and we resume.
      return first;
    }
    // Permanent: undo, so a retry places again (maybe elsewhere).
    Status del = DeleteReplicas(record);
    if (del.ok()) {
      Status gone = records_->DeleteVolume(record, v.mod_revision);
      if (!gone.ok()) {
        TLOG_WARN(kTag, "volume %s: removing the record: %s", record.volume_id().c_str(),
                  gone.ToString().c_str());
      }
    }
    return first;
  }
  rec::VolumeRecord ready = record;
  ready.set_state(rec::VolumeRecord::READY);
  auto rev = records_->UpdateVolume(ready, v.mod_revision);
  return rev.ok() ? Status::Ok() : rev.status();
}

Status ControllerService::DeleteReplicas(const rec::VolumeRecord& record) {
  std::vector<std::future<Status>> calls;
  for (const auto& r : record.replicas()) {
    std::string address = EngineAddress(r.node_id());
    if (address.empty()) continue;  // node forgotten: nothing to delete there
    calls.push_back(std::async(std::launch::async, [this, address, &record, node = r.node_id()] {
      return engines_->DeleteReplica(address, record.volume_id(), options_.engine_timeout)
          .WithContext("DeleteReplica on node " + node);
    }));
  }
  Status first;
  for (auto& c : calls) {
    Status st = c.get();
    if (!st.ok() && first.ok()) first = std::move(st);
  }
  // Replicas replaced or removed whose deletion is still owed (their node was
  // down): tried too, but a node that stays down must not keep the volume
  // from going; its file is then left behind (logged).
  for (const auto& r : record.retired_replicas()) {
    std::string address = EngineAddress(r.node_id());
    Status st = address.empty()
                    ? Status::Ok()
                    : engines_->DeleteReplica(address, record.volume_id(), options_.engine_timeout);
    if (!st.ok()) {
      TLOG_WARN(kTag, "volume %s: retired replica %s left on node %s: %s",
                record.volume_id().c_str(), r.replica_id().c_str(), r.node_id().c_str(),
                st.ToString().c_str());
    }
  }
  return first;
}

Status ControllerService::DoDeleteVolume(const csipb::DeleteVolumeRequest& req) {
  TANDEM_RETURN_IF_ERROR(csi::RequireField("volume_id", req.volume_id()));
  TANDEM_ASSIGN_OR_RETURN(auto guard, inflight_.TryAcquire("vol:" + req.volume_id()));
  TANDEM_RETURN_IF_ERROR(CheckLeader());
  TANDEM_ASSIGN_OR_RETURN(auto v, records_->GetVolume(req.volume_id()));
  if (!v) return Status::Ok();  // already gone: DeleteVolume is idempotent
  if (v->record.has_attachment()) {
    return Status::FailedPrecondition("volume " + req.volume_id() + " is published on node " +
                                      v->record.attachment().node_id() +
                                      "; ControllerUnpublishVolume it first");
  }
  // The name's in-flight guard too: a CreateVolume of the same name must not
  // resume this volume while it is being deleted.
  TANDEM_ASSIGN_OR_RETURN(auto name_guard, inflight_.TryAcquire("name:" + v->record.name()));
  if (v->record.state() != rec::VolumeRecord::DELETING) {
    rec::VolumeRecord deleting = v->record;
    deleting.set_state(rec::VolumeRecord::DELETING);
    TANDEM_ASSIGN_OR_RETURN(v->mod_revision, records_->UpdateVolume(deleting, v->mod_revision));
    v->record = std::move(deleting);
  }
  // Replicas first, then the record: a failure leaves DELETING, and the CO's
  // retry (or a restarted controller) finishes it.
  TANDEM_RETURN_IF_ERROR(DeleteReplicas(v->record));
  TANDEM_RETURN_IF_ERROR(records_->DeleteVolume(v->record, v->mod_revision));
  TLOG_INFO(kTag, "DeleteVolume %s (%s): deleted", req.volume_id().c_str(),
            v->record.name().c_str());
  return Status::Ok();
}

}  // namespace tandem::controller
