// NodeService: the context a stage builds its volume's target from
// (docs/node_plugin.md "The current replica set").
//
// kubelet's publish_context is the answer of the ControllerPublish; a later
// ModifyVolume `replicas` or a reconciler replacement changes the record and
// the live target, not that answer. A target built from it on a restage could
// count a replica that was removed (its deletion still owed because its node
// was down) and acknowledge writes the record's next attach cannot find, or
// miss a replica the volume gained. So, with a controller configured:
// - the target is built from the controller's current context of this
//   node's attachment (Attachments::Current), at the publish's epoch (the
//   engine's target id is derived from it: a restage under one publish is
//   the same owner to the replicas) and with kubelet's secret;
// - a target this engine already hosts at that epoch is kept when a previous
//   stage of this epoch built and checked it (the state file records its
//   export path only then): it is the live target the controller changes in
//   place (AddTargetReplica, RemoveTargetReplica) before it changes the
//   record, so it is current even when the controller cannot be reached
//   (tandem-node restarted under a running volume). One that no stage
//   confirmed (tandem-node died between building and checking it) is
//   destroyed and built again — nothing of this node uses it yet: the loop
//   device is attached only after the export path is recorded;
// - otherwise an unreachable controller fails the stage (UNAVAILABLE naming
//   it; kubelet retries): nothing proves kubelet's context current;
// - after creating a target the context is asked again: a change that ran
//   meanwhile found no target to change and changed only the record, so the
//   new target is destroyed and built again (the controller serializes the
//   question with such changes under the volume's in-flight guard).

#include <algorithm>
#include <chrono>
#include <thread>

#include "common/logging.h"
#include "node-plugin/node_service.h"

namespace tandem::node {
namespace {

constexpr const char* kTag = "node";
// A change of the volume running on the controller answers ABORTED: wait
// this long for it before handing ABORTED to kubelet.
constexpr auto kBusyWait = std::chrono::seconds(10);
constexpr auto kBusyPause = std::chrono::milliseconds(200);
constexpr int kBuildAttempts = 3;

bool SameReplicas(std::vector<csi::PublishedReplica> a, std::vector<csi::PublishedReplica> b) {
  auto by_id = [](const auto& x, const auto& y) { return x.replica_id < y.replica_id; };
  std::sort(a.begin(), a.end(), by_id);
  std::sort(b.begin(), b.end(), by_id);
  return a == b;
}

bool Unreached(const Status& st) {
  return st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kDeadlineExceeded;
}

std::string Ids(const csi::PublishContext& ctx) {
  std::string out;
  for (const auto& r : ctx.replicas) out += (out.empty() ? "" : ",") + r.replica_id;
  return out;
}

}  // namespace

Result<csi::PublishContext> NodeService::CurrentContext(const std::string& volume_id,
                                                        const csi::PublishContext& given) {
  if (!attachments_) return given;
  auto deadline = std::chrono::steady_clock::now() + kBusyWait;
  Result<csi::PublishContext> cur = attachments_->Current(volume_id);
  while (!cur.ok() && cur.status().code() == StatusCode::kAborted &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(kBusyPause);
    cur = attachments_->Current(volume_id);
  }
  if (!cur.ok()) {
    const Status& st = cur.status();
    std::string what = "volume " + volume_id + ": asking " + attachments_->where() +
                       " for the attachment's current replica set: ";
    if (Unreached(st)) {
      return Status::Unavailable(what + st.ToString() +
                                 " (a new target is built only from the controller's record: "
                                 "kubelet's publish_context may be stale after a replica "
                                 "change; retry once the controller answers)");
    }
    return Status(st.code(), what + st.message());
  }
  if (cur->epoch != given.epoch) {
    return Status::FailedPrecondition(
        "volume " + volume_id + ": the controller's attachment to this node is at epoch " +
        std::to_string(cur->epoch) + ", kubelet's publish_context at " +
        std::to_string(given.epoch) + ": the publish was superseded");
  }
  cur->volume_secret = given.volume_secret;  // never over the Registration API
  return cur;
}

Result<HostedVolume> NodeService::AttachCurrent(const std::string& volume_id,
                                                const csi::PublishContext& given, bool confirmed) {
  auto live = host_->Describe(volume_id);
  bool have_live = live.ok() && live->epoch == given.epoch;
  if (have_live && !confirmed && attachments_) {
    // Built by a stage that never got to check it: unknown replica set.
    Result<csi::PublishContext> cur = CurrentContext(volume_id, given);
    if (!cur.ok()) return cur.status();
    TLOG_WARN(kTag, "volume %s: a target at epoch %llu that no stage confirmed; building it again",
              volume_id.c_str(), static_cast<unsigned long long>(given.epoch));
    TANDEM_RETURN_IF_ERROR(host_->Detach(volume_id));
    have_live = false;
  }
  for (int attempt = 0; attempt < kBuildAttempts; ++attempt) {
    Result<csi::PublishContext> cur = CurrentContext(volume_id, given);
    if (!cur.ok()) {
      if (have_live && Unreached(cur.status())) {
        TLOG_WARN(kTag,
                  "%s; keeping the live target at epoch %llu (the controller changes it in "
                  "place)",
                  cur.status().ToString().c_str(), static_cast<unsigned long long>(given.epoch));
        return *live;
      }
      return cur.status();
    }
    TANDEM_ASSIGN_OR_RETURN(HostedVolume hosted, host_->Attach(volume_id, *cur));
    if (have_live || !attachments_) return hosted;
    Result<csi::PublishContext> again = CurrentContext(volume_id, given);
    if (again.ok() && SameReplicas(cur->replicas, again->replicas)) return hosted;
    // Built from a record that changed meanwhile, or unconfirmed: never keep it.
    TLOG_WARN(kTag,
              "volume %s: target built with replicas %s, but the controller now %s; "
              "building it again",
              volume_id.c_str(), Ids(*cur).c_str(),
              again.ok() ? ("lists " + Ids(*again)).c_str() : again.status().ToString().c_str());
    TANDEM_RETURN_IF_ERROR(host_->Detach(volume_id));
    if (!again.ok()) return again.status();
  }
  return Status::Aborted("volume " + volume_id + ": its replica set kept changing while the " +
                         "target was built; retry");
}

}  // namespace tandem::node
