#include "tools/tandemctl/progress_bar.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>

namespace tandem::tandemctl {
namespace {

namespace pb = ::tandem::engine::v1;

std::string Printf(const char* fmt, double v, const char* unit) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v, unit);
  return buf;
}

// "1.2 GiB" from a non-negative value; `suffix` follows the unit ("/s").
std::string Scaled(double v, const char* suffix) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (v < 1024) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.0f %s%s", std::floor(v), kUnits[0], suffix);
    return buf;
  }
  size_t unit = 0;
  // Move up while the value would print as 1024.0 or more in this unit.
  while (unit + 1 < sizeof(kUnits) / sizeof(kUnits[0]) && v >= 1023.95) {
    v /= 1024;
    ++unit;
  }
  return Printf("%.1f %s", v, kUnits[unit]) + suffix;
}

std::string ReplicaStateName(pb::ReplicaState s) {
  const std::string& name = pb::ReplicaState_Name(s);
  const std::string prefix = "REPLICA_STATE_";
  return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
}

}  // namespace

std::string FormatBytes(uint64_t bytes) { return Scaled(static_cast<double>(bytes), ""); }

std::string FormatRate(double bytes_per_sec) {
  if (!(bytes_per_sec > 0)) return "0 B/s";  // also NaN
  return Scaled(bytes_per_sec, "/s");
}

std::string FormatEta(double seconds) {
  if (!(seconds >= 0) || std::isinf(seconds)) return "--";
  if (seconds >= 1e12) return "--";  // nonsense from a near-zero rate
  const uint64_t s = static_cast<uint64_t>(std::llround(seconds));
  char buf[64];
  if (s < 60) {
    std::snprintf(buf, sizeof(buf), "%" PRIu64 "s", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof(buf), "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%" PRIu64 "h%02" PRIu64 "m", s / 3600, (s % 3600) / 60);
  }
  return buf;
}

std::string RenderProgressBar(const pb::RebuildStatus& rb, int width) {
  if (width < 1) width = 1;
  const bool done = rb.state() == pb::REBUILD_STATE_DONE;
  const uint64_t total = rb.bytes_total();
  const uint64_t visited = total == 0 ? 0 : std::min(rb.bytes_done(), total);
  uint64_t percent = 0;
  uint64_t filled = 0;
  if (done) {
    percent = 100;
    filled = static_cast<uint64_t>(width);
  } else if (total > 0) {
    // In long double: bytes * 100 overflows uint64 above 184 PB, and the
    // result must round down (99.99% is not 100%).
    percent = static_cast<uint64_t>(static_cast<long double>(visited) * 100 / total);
    filled = static_cast<uint64_t>(static_cast<long double>(visited) * width / total);
  }
  std::string line = "[";
  line.append(filled, '#');
  line.append(static_cast<uint64_t>(width) - filled, '.');
  char pct[16];
  std::snprintf(pct, sizeof(pct), "] %3" PRIu64 "%%  ", percent);
  line += pct;
  line += FormatBytes(done && total == 0 ? rb.bytes_done() : visited) + " / " + FormatBytes(total);
  line += "  " + FormatRate(rb.rate_bytes_per_sec());
  std::string eta = "--";
  if (done) {
    eta = "0s";
  } else if (rb.state() == pb::REBUILD_STATE_RUNNING && rb.rate_bytes_per_sec() > 0) {
    eta = FormatEta(rb.eta_seconds());
  }
  line += "  ETA " + eta;
  const std::string& mode = pb::RebuildMode_Name(rb.mode());
  const std::string prefix = "REBUILD_MODE_";
  line += "  " + (mode.rfind(prefix, 0) == 0 ? mode.substr(prefix.size()) : mode);
  line += " from " + (rb.source().empty() ? std::string("?") : rb.source()) + " -> " + rb.replica();
  if (done) line += "  DONE";
  if (rb.state() == pb::REBUILD_STATE_FAILED) line += "  FAILED: " + rb.last_error();
  return line;
}

namespace {
bool AllHealthy(const pb::Target& target) {
  for (const pb::ReplicaStatus& r : target.replicas()) {
    if (r.state() != pb::REPLICA_STATE_HEALTHY) return false;
  }
  return true;
}
}  // namespace

std::string RenderWatchLine(const pb::Target& target, int width) {
  const pb::RebuildState s = target.rebuild().state();
  if (s == pb::REBUILD_STATE_RUNNING || s == pb::REBUILD_STATE_FAILED ||
      (s == pb::REBUILD_STATE_DONE && AllHealthy(target))) {
    return RenderProgressBar(target.rebuild(), width);
  }
  // Nothing rebuilt yet, or the last rebuild is over and another replica
  // waits for its turn: the replicas say more than the old bar.
  const std::string& name = pb::TargetState_Name(target.state());
  const std::string prefix = "TARGET_STATE_";
  std::string line = name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
  line += "  no rebuild running ";
  for (const pb::ReplicaStatus& r : target.replicas()) {
    line += " " + r.address() + "=" + ReplicaStateName(r.state());
  }
  return line;
}

WatchVerdict JudgeWatch(const pb::Target& target) {
  // Every replica serving: whatever ran is over (or nothing had to run).
  if (AllHealthy(target)) return WatchVerdict::kDone;
  if (target.rebuild().state() == pb::REBUILD_STATE_FAILED) return WatchVerdict::kFailed;
  // RUNNING, or a replica not yet rebuilt: an added replica is FAULTED until
  // it connects, a faulted one is reconnected and rebuilt on the engine's
  // reconnect interval. A DONE of an earlier rebuild does not end the watch.
  return WatchVerdict::kContinue;
}

}  // namespace tandem::tandemctl
