#include "controller/reconciler.h"

#include <algorithm>

#include "common/logging.h"
#include "controller/candidates.h"
#include "controller/placement.h"
#include "controller/replica_changes.h"

namespace tandem::controller {

namespace {

constexpr const char* kTag = "reconciler";

const NodeView* Find(const std::vector<NodeView>& nodes, const std::string& id) {
  for (const auto& n : nodes) {
    if (n.record.node_id() == id) return &n;
  }
  return nullptr;
}

using Since = std::map<std::string, std::chrono::steady_clock::time_point>;

// The entries under `prefix` (one volume's) become exactly `seen`: what this
// pass no longer sees is forgotten.
void KeepOnly(Since* since, const std::string& prefix, const Since& seen) {
  for (auto it = since->lower_bound(prefix);
       it != since->end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
    it = since->erase(it);
  }
  since->insert(seen.begin(), seen.end());
}

}  // namespace

Reconciler::Reconciler(Records* records, NodeRegistry* nodes, EngineDirectory* engines,
                       csi::InFlight* inflight, ReconcilerOptions options)
    : records_(records), nodes_(nodes), engines_(engines), inflight_(inflight), options_(options) {}

Reconciler::~Reconciler() { Stop(); }

void Reconciler::Start() {
  std::lock_guard<std::mutex> guard(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, options_.interval, [this] { return stop_; });
      if (stop_) break;
      lock.unlock();
      RunOnce();
      lock.lock();
    }
  });
}

void Reconciler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Reconciler::Admit(const std::string& node_id) {
  auto now = std::chrono::steady_clock::now();
  auto& starts = admitted_[node_id];
  starts.erase(std::remove_if(starts.begin(), starts.end(),
                              [&](auto t) { return now - t >= options_.admission_window; }),
               starts.end());
  if (starts.size() >= options_.max_rebuilds_per_node) return false;
  starts.push_back(now);
  return true;
}

int Reconciler::RunOnce() {
  if (!records_->store()->IsLeader()) return 0;
  std::vector<NodeView> nodes = nodes_->Snapshot();
  auto since_start = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::steady_clock::now() - started_)
                         .count();
  auto dead = [&](const std::string& node_id) {
    const NodeView* n = Find(nodes, node_id);
    if (n == nullptr) return false;  // unregistered: nothing to compare
    if (n->up) return false;
    // Never seen since this controller started: down at least that long.
    int64_t down_for = n->last_seen_ms_ago >= 0 ? n->last_seen_ms_ago : since_start;
    return down_for >= options_.replace_after.count();
  };
  int replaced = 0;
  std::string after;
  for (int page = 0; page < 1000000; ++page) {
    bool more = false;
    auto volumes = records_->ListVolumes(after, 200, &more);
    if (!volumes.ok()) {
      TLOG_WARN(kTag, "listing volumes: %s", volumes.status().ToString().c_str());
      return replaced;
    }
    for (auto& v : *volumes) {
      if (v.record.state() != rec::VolumeRecord::READY) continue;
      if (!v.record.retired_replicas().empty()) DeleteRetired(v, nodes);
      std::optional<epb::Target> live = AttachmentTarget(v.record, nodes);
      const epb::Target* target = live ? &*live : nullptr;
      int faulted = FaultedOnLiveNode(v.record, nodes, target);
      bool missing = MissingForLong(v.record, target);
      for (int i = 0; i < v.record.replicas_size(); ++i) {
        if (i != faulted && !dead(v.record.replicas(i).node_id())) continue;
        // One replacement per volume per pass: the record changed.
        Status st = Replace(v, i, nodes);
        if (st.ok()) {
          ++replaced;
        } else {
          TLOG_WARN(kTag, "volume %s: replacing replica %s: %s", v.record.volume_id().c_str(),
                    v.record.replicas(i).replica_id().c_str(), st.ToString().c_str());
        }
        missing = false;  // the next pass looks again
        break;
      }
      if (missing) {
        Status st = Restore(v);
        if (!st.ok()) {
          TLOG_WARN(kTag, "volume %s: restoring the live target: %s", v.record.volume_id().c_str(),
                    st.ToString().c_str());
        }
      }
    }
    if (!more || volumes->empty()) break;
    after = volumes->back().record.volume_id();
  }
  return replaced;
}

Status Reconciler::Replace(Versioned<rec::VolumeRecord> v, int index,
                           const std::vector<NodeView>& nodes) {
  auto guard = inflight_->TryAcquire("vol:" + v.record.volume_id());
  if (!guard.ok()) return Status::Ok();  // a CSI call is busy with it: next pass
  // Re-read under the guard: the record may have changed since the listing.
  TANDEM_ASSIGN_OR_RETURN(auto fresh, records_->GetVolume(v.record.volume_id()));
  if (!fresh || fresh->mod_revision != v.mod_revision) return Status::Ok();
  rec::VolumeRecord record = fresh->record;
  const rec::ReplicaRecord old = record.replicas(index);

  TANDEM_ASSIGN_OR_RETURN(auto candidates, CollectCandidates(nodes_, records_));
  PlacementRequest req = MoreReplicas(record, 1, options_.overcommit);
  // Nodes whose admission window is full are not candidates this pass.
  for (auto& c : candidates) {
    auto it = admitted_.find(c.node_id);
    if (it != admitted_.end() && it->second.size() >= options_.max_rebuilds_per_node) {
      auto now = std::chrono::steady_clock::now();
      size_t recent =
          static_cast<size_t>(std::count_if(it->second.begin(), it->second.end(), [&](auto t) {
            return now - t < options_.admission_window;
          }));
      if (recent >= options_.max_rebuilds_per_node) c.up = false;
    }
  }
  TANDEM_ASSIGN_OR_RETURN(auto chosen, Place(req, candidates));
  const std::string& node_id = chosen[0];
  const NodeView* dest = Find(nodes, node_id);
  if (dest == nullptr || dest->info.data_address().empty()) {
    return Status::Unavailable("node " + node_id + " has no known data address");
  }
  if (!Admit(node_id)) return Status::Ok();

  TANDEM_ASSIGN_OR_RETURN(
      rec::ReplicaRecord fresh_replica,
      CreateNextReplica(engines_, record, node_id, dest->record.engine_address(),
                        options_.engine_timeout));

  // The live target first, the record only once the target has the new
  // replica. The target keeps the removed replica's place in its majority
  // until the new one is rebuilt (ReplicaSet::Vacate), so it never
  // acknowledges with less than a majority of the record's count meanwhile.
  if (record.has_attachment()) {
    const NodeView* attached = Find(nodes, record.attachment().node_id());
    const NodeView* gone = Find(nodes, old.node_id());
    if (attached != nullptr) {
      const std::string& engine = attached->record.engine_address();
      if (gone != nullptr && !gone->info.data_address().empty()) {
        Status st = engines_->RemoveTargetReplica(
            engine, record.volume_id(), gone->info.data_address(), options_.engine_timeout);
        if (!st.ok() && st.code() != StatusCode::kNotFound) {
          return st.WithContext("RemoveTargetReplica on " + record.attachment().node_id());
        }
      }
      Status st =
          AddToLiveTarget(engines_, engine, record.volume_id(), dest->info.data_address(),
                          node_id == record.attachment().node_id(), options_.engine_timeout);
      if (!st.ok()) return st.WithContext("AddTargetReplica on " + record.attachment().node_id());
    }
  }

  TANDEM_RETURN_IF_ERROR(SwapInRecord(record.volume_id(), old, fresh_replica));
  TLOG_INFO(kTag, "volume %s: replica %s on node %s replaced by %s on %s%s",
            record.volume_id().c_str(), old.replica_id().c_str(), old.node_id().c_str(),
            fresh_replica.replica_id().c_str(), node_id.c_str(),
            record.has_attachment() ? " (added to the live target: rebuilding online)" : "");
  return Status::Ok();
}

Status Reconciler::SwapInRecord(const std::string& volume_id, const rec::ReplicaRecord& old,
                                const rec::ReplicaRecord& fresh) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    TANDEM_ASSIGN_OR_RETURN(auto v, records_->GetVolume(volume_id));
    if (!v) return Status::NotFound("volume " + volume_id + " is gone");
    // Changed meanwhile only by others (the in-sync record; CSI calls wait
    // for our guard): the replica is still there to swap.
    rec::VolumeRecord record = v->record;
    int index = -1;
    for (int i = 0; i < record.replicas_size(); ++i) {
      if (record.replicas(i).replica_id() == old.replica_id()) index = i;
    }
    if (index < 0) return Status::Aborted("replica " + old.replica_id() + " left the record");
    *record.mutable_replicas(index) = fresh;
    record.set_next_replica_index(record.next_replica_index() + 1);
    *record.add_retired_replicas() = old;
    auto* ids = record.mutable_in_sync_replica_ids();
    ids->erase(std::remove(ids->begin(), ids->end(), old.replica_id()), ids->end());
    auto updated = records_->UpdateVolume(record, v->mod_revision);
    if (updated.ok()) return Status::Ok();
    if (updated.status().code() != StatusCode::kAborted) return updated.status();
  }
  return Status::Aborted("volume " + volume_id + " changed concurrently too often");
}

std::optional<epb::Target> Reconciler::AttachmentTarget(const rec::VolumeRecord& record,
                                                        const std::vector<NodeView>& nodes) {
  const NodeView* attached =
      record.has_attachment() ? Find(nodes, record.attachment().node_id()) : nullptr;
  if (attached == nullptr || !attached->up) return std::nullopt;
  auto target = engines_->GetTarget(attached->record.engine_address(), record.volume_id(),
                                    options_.engine_timeout);
  // Only the attachment's own target knows which replica faulted or is
  // missing: an older one left on the node is fenced and its view is stale.
  if (!target.ok() || !CheckAttachmentTarget(*target, record).ok()) return std::nullopt;
  return std::move(*target);
}

bool Reconciler::MissingForLong(const rec::VolumeRecord& record, const epb::Target* target) {
  auto now = std::chrono::steady_clock::now();
  const std::string prefix = record.volume_id() + "/";
  Since seen;
  bool found = false;
  if (target != nullptr) {
    for (const MissingReplica& m : MissingFromTarget(*target, record, nodes_)) {
      std::string key = prefix + m.replica_id;
      auto it = missing_since_.find(key);
      auto since = it != missing_since_.end() ? it->second : now;
      seen[key] = since;
      found |= now - since >= options_.replace_after;
    }
  }
  KeepOnly(&missing_since_, prefix, seen);
  return found;
}

Status Reconciler::Restore(const Versioned<rec::VolumeRecord>& v) {
  auto guard = inflight_->TryAcquire("vol:" + v.record.volume_id());
  if (!guard.ok()) return Status::Ok();  // a CSI call is busy with it: next pass
  // Re-read under the guard: only the record as it is now (a shrink moved
  // its victims to retired_replicas before it let the guard go) says which
  // replicas belong in the target.
  TANDEM_ASSIGN_OR_RETURN(auto fresh, records_->GetVolume(v.record.volume_id()));
  if (!fresh || fresh->mod_revision != v.mod_revision) return Status::Ok();
  std::vector<std::string> added;
  TANDEM_RETURN_IF_ERROR(
      RestoreLiveTarget(engines_, nodes_, fresh->record, options_.engine_timeout, &added));
  for (const auto& id : added) {
    TLOG_WARN(kTag,
              "volume %s: replica %s of the record was missing from the live target for %lld ms "
              "(a shrink abandoned after its first step?): added back, rebuilding online",
              v.record.volume_id().c_str(), id.c_str(),
              static_cast<long long>(options_.replace_after.count()));
  }
  return Status::Ok();
}

int Reconciler::FaultedOnLiveNode(const rec::VolumeRecord& record,
                                  const std::vector<NodeView>& nodes, const epb::Target* target) {
  auto now = std::chrono::steady_clock::now();
  const std::string prefix = record.volume_id() + "/";
  // Entries of this volume not seen FAULTED in this pass are dropped below.
  Since seen;
  int found = -1;
  for (int t = 0; target != nullptr && t < target->replicas_size(); ++t) {
    const auto& tr = target->replicas(t);
    if (tr.state() != epb::REPLICA_STATE_FAULTED) continue;
    for (int i = 0; i < record.replicas_size(); ++i) {
      const NodeView* n = Find(nodes, record.replicas(i).node_id());
      // A down node is the other path's (replace_after of being down).
      if (n == nullptr || !n->up || n->info.data_address() != tr.address()) continue;
      std::string key = prefix + tr.address();
      auto it = faulted_since_.find(key);
      auto since = it != faulted_since_.end() ? it->second : now;
      seen[key] = since;
      if (found < 0 && now - since >= options_.replace_after) {
        TLOG_WARN(kTag, "volume %s: replica %s on live node %s FAULTED for %lld ms: %s",
                  record.volume_id().c_str(), record.replicas(i).replica_id().c_str(),
                  n->record.node_id().c_str(),
                  static_cast<long long>(
                      std::chrono::duration_cast<std::chrono::milliseconds>(now - since).count()),
                  tr.last_error().c_str());
        found = i;
      }
    }
  }
  KeepOnly(&faulted_since_, prefix, seen);
  return found;
}

void Reconciler::DeleteRetired(Versioned<rec::VolumeRecord> v, const std::vector<NodeView>& nodes) {
  auto guard = inflight_->TryAcquire("vol:" + v.record.volume_id());
  if (!guard.ok()) return;
  rec::VolumeRecord record = v.record;
  bool changed = false;
  auto* retired = record.mutable_retired_replicas();
  for (int i = retired->size() - 1; i >= 0; --i) {
    const NodeView* n = Find(nodes, retired->Get(i).node_id());
    if (n == nullptr) {
      retired->DeleteSubrange(i, 1);  // node forgotten
      changed = true;
      continue;
    }
    if (!n->up) continue;
    // Only if the replica there is still the retired one (the volume may
    // have been placed back on that node since).
    bool still_in_use = false;
    for (const auto& r : record.replicas()) still_in_use |= r.node_id() == n->record.node_id();
    if (!still_in_use) {
      Status st = engines_->DeleteReplica(n->record.engine_address(), record.volume_id(),
                                          options_.engine_timeout);
      if (!st.ok()) continue;
      TLOG_INFO(kTag, "volume %s: retired replica %s deleted on %s", record.volume_id().c_str(),
                retired->Get(i).replica_id().c_str(), n->record.node_id().c_str());
    }
    retired->DeleteSubrange(i, 1);
    changed = true;
  }
  if (changed) (void)records_->UpdateVolume(record, v.mod_revision);
}

}  // namespace tandem::controller
