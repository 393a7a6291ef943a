// ControllerService: the unsettled shrink (docs/controller.md "An unsettled
// shrink").
//
// A target records ShrinkInSync (the survivors and the id of the generation
// it is about to start) before it sends that SET_GENERATION to the
// survivors. If it dies in between, the record names a generation id no
// replica holds and every later attach is UNAVAILABLE, for ever. A new
// publish therefore checks an unsettled shrink (in_sync_settled false, the
// record it replaced kept in previous_in_sync) and falls back to the
// previous record when:
// - the volume's epoch is raised in the store and every replica of the
//   recorded in-sync set is fenced at it (so the old target can no longer
//   start that generation on any of them), and then
// - every one of them answers, none holds the recorded id (nor a generation
//   number at or past the one recorded), and each holds the previous
//   record's id when it had one.
// Why it is safe: a target acknowledges a write that skipped a replica only
// after the survivors persisted the new generation (SET_GENERATION). The
// survivors are exactly the in-sync set; none of them holds it, and fenced,
// none ever will; so no write acknowledged by that target skipped a replica
// since the previous record was in force, and that record still describes
// where every acknowledged write is. Any replica unreachable: no fallback
// (the volume stays UNAVAILABLE until it answers).

#include <future>
#include <thread>

#include "common/logging.h"
#include "controller/controller_service.h"

namespace tandem::controller {

namespace {
constexpr const char* kTag = "controller";
// How long a shrink of the replica count waits for the live target's
// recorded shrink to reach its survivors (normally the next write's
// SET_GENERATION, right after the record) before it asks for a retry.
constexpr auto kSettleWait = std::chrono::seconds(3);
constexpr auto kSettlePoll = std::chrono::milliseconds(50);

// The recorded shrink reached this replica: it holds the recorded id, or a
// generation number at or past the one recorded.
bool HoldsRecordedShrink(const epb::Replica& r, const rec::VolumeRecord& record) {
  return r.generation_id() == record.in_sync_generation_id() ||
         (record.in_sync_generation() != 0 && r.generation() >= record.in_sync_generation());
}
}  // namespace

bool ControllerService::UnsettledShrink(const rec::VolumeRecord& record) {
  return record.in_sync_generation_id() != 0 && !record.in_sync_settled() &&
         record.has_previous_in_sync() && record.in_sync_replica_ids_size() > 0;
}

// Reads only (no fence): the live target may be about to send the new
// generation; an in-sync replica that holds it settles the shrink for good.
Status ControllerService::WaitForShrinkToSettle(const rec::VolumeRecord& record) {
  if (!UnsettledShrink(record)) return Status::Ok();
  auto deadline = std::chrono::steady_clock::now() + kSettleWait;
  for (;;) {
    for (const std::string& id : record.in_sync_replica_ids()) {
      for (const auto& r : record.replicas()) {
        std::string engine = r.replica_id() == id ? EngineAddress(r.node_id()) : "";
        if (engine.empty()) continue;
        auto got = engines_->GetReplica(engine, record.volume_id(), options_.engine_timeout);
        if (got.ok() && HoldsRecordedShrink(*got, record)) return Status::Ok();
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(kSettlePoll);
  }
  char id[17];
  snprintf(id, sizeof id, "%016llx",
           static_cast<unsigned long long>(record.in_sync_generation_id()));
  return Status::Unavailable(
      "the live target's recorded shrink (generation id " + std::string(id) +
      ") has not reached its in-sync replicas yet: the record before it must stay for a "
      "fallback (retry)");
}

// Fences the in-sync replicas at `epoch` and reads what each holds.
std::vector<ControllerService::Held> ControllerService::FenceAndReadInSync(
    const rec::VolumeRecord& record, uint64_t epoch) {
  std::vector<std::future<Held>> calls;
  for (const std::string& id : record.in_sync_replica_ids()) {
    std::string node;
    for (const auto& r : record.replicas()) {
      if (r.replica_id() == id) node = r.node_id();
    }
    std::string engine = node.empty() ? "" : EngineAddress(node);
    calls.push_back(std::async(std::launch::async, [this, engine, id, epoch, &record] {
      Held h;
      h.replica_id = id;
      if (engine.empty()) {
        h.status = Status::Unavailable("no known node");
        return h;
      }
      auto fenced =
          engines_->FenceReplica(engine, record.volume_id(), epoch, options_.engine_timeout);
      if (!fenced.ok()) {
        h.status = fenced.status();
        return h;
      }
      auto got = engines_->GetReplica(engine, record.volume_id(), options_.engine_timeout);
      h.status = got.status();
      if (got.ok()) h.replica = *got;
      return h;
    }));
  }
  std::vector<Held> held;
  for (auto& c : calls) held.push_back(c.get());
  return held;
}

// Errors are the store's; a fallback that cannot be shown safe is logged
// and the publish goes on with the record as it is.
Status ControllerService::SettleUnsettledShrink(Versioned<rec::VolumeRecord>* v) {
  if (!UnsettledShrink(v->record)) return Status::Ok();
  Status st = FallBackFromUnsettledShrink(v);
  if (st.code() != StatusCode::kFailedPrecondition) return st;
  TLOG_WARN(kTag, "volume %s: the recorded in-sync shrink stays: %s", v->record.volume_id().c_str(),
            st.ToString().c_str());
  return Status::Ok();
}

// OK when the record got its fallback (or turned out settled);
// FAILED_PRECONDITION when it cannot be shown safe.
Status ControllerService::FallBackFromUnsettledShrink(Versioned<rec::VolumeRecord>* v) {
  rec::VolumeRecord record = v->record;
  const uint64_t recorded = record.in_sync_generation_id();
  const rec::InSyncSet previous = record.previous_in_sync();
  // 1. A new epoch in the store before the fence (as an unpublish does).
  record.set_epoch(record.epoch() + 1);
  TANDEM_ASSIGN_OR_RETURN(v->mod_revision, records_->UpdateVolume(record, v->mod_revision));
  v->record = record;
  // 2. Fenced, then asked.
  std::vector<Held> held = FenceAndReadInSync(record, record.epoch());
  for (const Held& h : held) {
    if (h.status.ok() && HoldsRecordedShrink(h.replica, record)) {
      // The shrink took effect: it is the record; nothing to fall back to.
      record.clear_previous_in_sync();
      TANDEM_ASSIGN_OR_RETURN(v->mod_revision, records_->UpdateVolume(record, v->mod_revision));
      v->record = record;
      return Status::Ok();
    }
  }
  for (const Held& h : held) {
    if (!h.status.ok()) {
      return Status::FailedPrecondition("in-sync replica " + h.replica_id +
                                        " did not answer: " + h.status.ToString());
    }
    const epb::Replica& r = h.replica;
    if (r.generation_id() == 0 ||
        (previous.generation_id() != 0 && r.generation_id() != previous.generation_id())) {
      return Status::FailedPrecondition("in-sync replica " + h.replica_id +
                                        " holds neither the recorded nor the previous generation");
    }
  }
  // 3. The previous record again (its replicas still in the volume).
  record.set_in_sync_generation_id(previous.generation_id());
  record.clear_in_sync_replica_ids();
  for (const std::string& id : previous.replica_ids()) {
    for (const auto& r : record.replicas()) {
      if (r.replica_id() == id) record.add_in_sync_replica_ids(id);
    }
  }
  if (record.in_sync_generation_id() != 0 && record.in_sync_replica_ids_size() == 0) {
    return Status::FailedPrecondition("the previous record's replicas are gone");
  }
  record.set_in_sync_settled(true);
  record.clear_previous_in_sync();
  TANDEM_ASSIGN_OR_RETURN(v->mod_revision, records_->UpdateVolume(record, v->mod_revision));
  v->record = record;
  TLOG_WARN(kTag,
            "volume %s: no in-sync replica holds the recorded generation %016llx (its target "
            "died before starting it): back to the record before it (%s)",
            record.volume_id().c_str(), static_cast<unsigned long long>(recorded),
            previous.generation_id() == 0 ? "the majority rule" : "the previous in-sync set");
  return Status::Ok();
}

}  // namespace tandem::controller
