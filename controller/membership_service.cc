#include "controller/membership_service.h"

#include <algorithm>
#include <set>

#include "common/grpc/grpc_status.h"
#include "common/grpc/handler_guard.h"
#include "common/logging.h"

namespace tandem::controller {

namespace {
constexpr const char* kTag = "membership";
// Compare-and-swap attempts against concurrent changes of the record
// (publish, the reconciler) before the caller is told ABORTED.
constexpr int kCasAttempts = 8;

Status Validate(const v1::InSyncRequest& req, bool shrink) {
  if (req.volume_id().empty()) return Status::InvalidArgument("volume_id is required");
  if (req.epoch() == 0) return Status::InvalidArgument("epoch is required");
  bool cleared = req.generation_id() == 0;
  if (cleared != req.replica_ids().empty()) {
    return Status::InvalidArgument(
        "generation_id and replica_ids go together (both empty: clear the record)");
  }
  if (shrink && cleared) return Status::InvalidArgument("ShrinkInSync needs replica_ids");
  std::set<std::string> seen(req.replica_ids().begin(), req.replica_ids().end());
  if (seen.size() != static_cast<size_t>(req.replica_ids_size())) {
    return Status::InvalidArgument("replica_ids repeats an id");
  }
  return Status::Ok();
}

bool SameRecord(const rec::VolumeRecord& r, const v1::InSyncRequest& req) {
  if (r.in_sync_generation_id() != req.generation_id()) return false;
  std::vector<std::string> a(r.in_sync_replica_ids().begin(), r.in_sync_replica_ids().end());
  std::vector<std::string> b(req.replica_ids().begin(), req.replica_ids().end());
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

// Within one epoch a late, older call must not undo a newer record. The
// target numbers its calls (seq): a call whose answer was lost is followed by
// another, possibly for a lower generation number (a clear once a majority is
// back after a shrink for the next one), and the first may still arrive after
// it. So with both numbered, seq alone orders them (ABORTED: superseded, the
// target asks again; never FAILED_PRECONDITION, which would fence it).
// Unnumbered (an older engine): by generation number, a shrink (for the next
// generation) before a grow or clear at that number.
Status CheckOrder(const rec::VolumeRecord& r, const v1::InSyncRequest& req, bool shrink) {
  if (r.in_sync_epoch() != req.epoch()) return Status::Ok();
  if (req.seq() != 0 && r.in_sync_seq() != 0) {
    bool repeat = req.seq() == r.in_sync_seq() && SameRecord(r, req) &&
                  r.in_sync_generation() == req.generation() && r.in_sync_settled() == !shrink;
    if (req.seq() > r.in_sync_seq() || repeat) return Status::Ok();
    return Status::Aborted("volume " + req.volume_id() + ": in-sync call " +
                           std::to_string(req.seq()) + " superseded by call " +
                           std::to_string(r.in_sync_seq()) + " at epoch " +
                           std::to_string(req.epoch()));
  }
  bool older = req.generation() < r.in_sync_generation() ||
               (req.generation() == r.in_sync_generation() && shrink && r.in_sync_settled() &&
                !SameRecord(r, req));
  bool conflict = req.generation() == r.in_sync_generation() && shrink && !r.in_sync_settled() &&
                  r.in_sync_generation_id() != 0 &&
                  r.in_sync_generation_id() != req.generation_id();
  if (older || conflict) {
    return Status::FailedPrecondition("volume " + req.volume_id() + ": a newer in-sync record (" +
                                      "generation " + std::to_string(r.in_sync_generation()) +
                                      ") exists at epoch " + std::to_string(req.epoch()));
  }
  return Status::Ok();
}

// A shrink is recorded before the target's SET_GENERATION for it reaches any
// replica. Until a grow or clear settles it, the record keeps the one it
// replaced (the record in force for the generation the replicas hold), so a
// publish can fall back to it if the target died before any in-sync replica
// got the new generation (controller_service_settle.cc). A shrink repeated or
// redone for the same pending generation keeps the record from before it.
void KeepPrevious(rec::VolumeRecord* r, const v1::InSyncRequest& req, bool shrink) {
  if (!shrink) {
    r->clear_previous_in_sync();
    return;
  }
  bool same_pending = !r->in_sync_settled() && r->in_sync_generation_id() != 0 &&
                      r->in_sync_epoch() == req.epoch() &&
                      r->in_sync_generation() == req.generation() && r->has_previous_in_sync();
  if (same_pending) return;
  rec::InSyncSet* prev = r->mutable_previous_in_sync();
  prev->set_generation_id(r->in_sync_generation_id());
  *prev->mutable_replica_ids() = r->in_sync_replica_ids();
}
}  // namespace

Status MembershipService::Record(const v1::InSyncRequest& req, bool shrink,
                                 v1::InSyncResponse* resp) {
  TANDEM_RETURN_IF_ERROR(Validate(req, shrink));
  if (!records_->store()->IsLeader()) {
    return Status::Unavailable("this tandem-controller does not lead; retry against the leader");
  }
  for (int attempt = 0; attempt < kCasAttempts; ++attempt) {
    TANDEM_ASSIGN_OR_RETURN(auto v, records_->GetVolume(req.volume_id()));
    if (!v) return Status::NotFound("volume " + req.volume_id() + " does not exist");
    rec::VolumeRecord r = std::move(v->record);
    // Only the current epoch's target, while published (an unpublish raises
    // the epoch in the store before it fences the replicas).
    if (!r.has_attachment() || r.attachment().epoch() != req.epoch() || r.epoch() != req.epoch()) {
      return Status::FailedPrecondition(
          "volume " + req.volume_id() + ": epoch " + std::to_string(req.epoch()) +
          " is not current (the volume is at epoch " + std::to_string(r.epoch()) +
          (r.has_attachment() ? ")" : ", unpublished)"));
    }
    for (const std::string& id : req.replica_ids()) {
      bool known = std::any_of(r.replicas().begin(), r.replicas().end(),
                               [&](const rec::ReplicaRecord& x) { return x.replica_id() == id; });
      if (!known) {
        return Status::InvalidArgument("replica " + id + " is not a replica of volume " +
                                       req.volume_id());
      }
    }
    TANDEM_RETURN_IF_ERROR(CheckOrder(r, req, shrink));
    bool same = SameRecord(r, req) && r.in_sync_epoch() == req.epoch() &&
                r.in_sync_generation() == req.generation() && r.in_sync_settled() == !shrink &&
                r.in_sync_seq() == req.seq();
    if (!same) {
      KeepPrevious(&r, req, shrink);
      r.set_in_sync_generation_id(req.generation_id());
      r.clear_in_sync_replica_ids();
      for (const std::string& id : req.replica_ids()) r.add_in_sync_replica_ids(id);
      r.set_in_sync_epoch(req.epoch());
      r.set_in_sync_generation(req.generation());
      r.set_in_sync_settled(!shrink);
      r.set_in_sync_seq(req.seq());
      auto updated = records_->UpdateVolume(r, v->mod_revision);
      if (!updated.ok() && updated.status().code() == StatusCode::kAborted) continue;
      TANDEM_RETURN_IF_ERROR(updated.status());
      std::string ids;
      for (const std::string& id : req.replica_ids()) ids += " " + id;
      TLOG_INFO(kTag, "volume %s epoch %llu: in-sync %s at generation %llu id %016llx:%s",
                req.volume_id().c_str(), static_cast<unsigned long long>(req.epoch()),
                shrink ? "shrunk" : (req.generation_id() == 0 ? "cleared" : "grown"),
                static_cast<unsigned long long>(req.generation()),
                static_cast<unsigned long long>(req.generation_id()),
                ids.empty() ? " (majority rule)" : ids.c_str());
    }
    resp->set_generation_id(r.in_sync_generation_id());
    *resp->mutable_replica_ids() = r.in_sync_replica_ids();
    return Status::Ok();
  }
  return Status::Aborted("volume " + req.volume_id() + " changed concurrently; retry");
}

grpc::Status MembershipService::ShrinkInSync(grpc::ServerContext*, const v1::InSyncRequest* req,
                                             v1::InSyncResponse* resp) {
  return rpc::GuardHandler("ShrinkInSync",
                           [&] { return rpc::ToGrpcStatus(Record(*req, true, resp)); });
}

grpc::Status MembershipService::GrowInSync(grpc::ServerContext*, const v1::InSyncRequest* req,
                                           v1::InSyncResponse* resp) {
  return rpc::GuardHandler("GrowInSync",
                           [&] { return rpc::ToGrpcStatus(Record(*req, false, resp)); });
}

}  // namespace tandem::controller
