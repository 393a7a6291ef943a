#include "replica-engine/api/target_health.h"

#include <cstdio>

namespace tandem::api {
namespace {

namespace pb = engine::v1;

const char* ReplicaStateName(pb::ReplicaState s) {
  switch (s) {
    case pb::REPLICA_STATE_CONNECTING:
      return "CONNECTING";
    case pb::REPLICA_STATE_HEALTHY:
      return "HEALTHY";
    case pb::REPLICA_STATE_STALE:
      return "STALE";
    case pb::REPLICA_STATE_FAULTED:
      return "FAULTED";
    case pb::REPLICA_STATE_REBUILDING:
      return "REBUILDING";
    default:
      return "UNKNOWN";
  }
}

// "replica r-1 (127.0.0.1:7001) FAULTED: connection reset" and, for the
// rebuild's destination, its progress instead of the bare state.
std::string DescribeReplica(const pb::ReplicaStatus& r, const pb::RebuildStatus& rebuild) {
  std::string s = "replica ";
  s += r.replica_id().empty() ? r.address() : r.replica_id() + " (" + r.address() + ")";
  s += " ";
  std::string progress = rebuild.replica() == r.address() ? RebuildProgress(rebuild) : "";
  s += progress.empty() ? ReplicaStateName(r.state()) : progress;
  if (r.state() != pb::REPLICA_STATE_HEALTHY && !r.last_error().empty()) {
    s += ": " + r.last_error();
  }
  return s;
}

}  // namespace

std::string RebuildProgress(const pb::RebuildStatus& rebuild) {
  if (rebuild.state() != pb::REBUILD_STATE_RUNNING || rebuild.bytes_total() == 0) return "";
  constexpr double kMiB = 1024.0 * 1024.0;
  char buf[160];
  double done = static_cast<double>(rebuild.bytes_done());
  double total = static_cast<double>(rebuild.bytes_total());
  if (rebuild.rate_bytes_per_sec() > 0) {
    snprintf(buf, sizeof buf, "REBUILDING %.1f%% (%.0f MiB of %.0f MiB), ETA %.0f s",
             100.0 * done / total, done / kMiB, total / kMiB, rebuild.eta_seconds());
  } else {
    // No rate measured yet: an ETA would be made up.
    snprintf(buf, sizeof buf, "REBUILDING %.1f%% (%.0f MiB of %.0f MiB), ETA unknown",
             100.0 * done / total, done / kMiB, total / kMiB);
  }
  return buf;
}

TargetHealth HealthOfTarget(const pb::Target& t) {
  TargetHealth h;
  int in_sync = 0;
  for (const auto& r : t.replicas()) in_sync += r.state() == pb::REPLICA_STATE_HEALTHY ? 1 : 0;
  const std::string count =
      std::to_string(in_sync) + " of " + std::to_string(t.replicas_size()) + " replicas in sync";
  switch (t.state()) {
    case pb::TARGET_STATE_READY:
      h.message = "HEALTHY: " + count;
      return h;
    case pb::TARGET_STATE_FENCED:
      h.message = "FENCED: a newer attach (epoch) took the volume over; I/O fails here";
      break;
    case pb::TARGET_STATE_FAILED:
      h.message = "INACCESSIBLE: no in-sync replica is reachable, I/O fails (" + count + ")";
      break;
    case pb::TARGET_STATE_STARTING:
      h.message = "STARTING: connecting to the replicas (" + count + ")";
      break;
    default:
      h.message = "DEGRADED: " + count + ", I/O continues";
      break;
  }
  h.abnormal = true;
  for (const auto& r : t.replicas()) h.message += "; " + DescribeReplica(r, t.rebuild());
  if (!t.last_error().empty()) h.message += "; target: " + t.last_error();
  return h;
}

}  // namespace tandem::api
