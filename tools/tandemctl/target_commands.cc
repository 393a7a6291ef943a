// tandemctl target create|destroy|get|list|add-replica|remove-replica|rebuild|
// set-rate|watch.

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "tools/tandemctl/commands.h"
#include "tools/tandemctl/progress_bar.h"

namespace tandem::tandemctl {
namespace {

namespace pb = ::tandem::engine::v1;

// Generation ids print as 16 hex digits (they are random 64-bit ids).
std::string HexId(uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

// latency.<class>.<stage>=count=N mean_us=.. p50_us=.. p99_us=.. p999_us=..
// and latency.<class>.<stage>.buckets=c0,c1,... (engine.proto's layout, for
// tools that subtract two snapshots, e.g. bench/nbd_bench.sh).
void PrintStageLatency(const pb::StageLatency& l) {
  auto us = [](double ns) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.1f", ns / 1000.0);
    return std::string(buf);
  };
  const double mean = l.count() == 0 ? 0 : static_cast<double>(l.sum_ns()) / l.count();
  PrintField("latency." + l.stage(), "count=" + std::to_string(l.count()) + " mean_us=" + us(mean) +
                                         " p50_us=" + us(static_cast<double>(l.p50_ns())) +
                                         " p99_us=" + us(static_cast<double>(l.p99_ns())) +
                                         " p999_us=" + us(static_cast<double>(l.p999_ns())));
  std::string buckets;
  for (uint64_t c : l.buckets()) buckets += (buckets.empty() ? "" : ",") + std::to_string(c);
  PrintField("latency." + l.stage() + ".buckets", buckets);
}

void PrintTarget(const pb::Target& t) {
  PrintField("volume_id", t.volume_id());
  PrintField("export_kind", EnumSuffix(pb::ExportKind_Name(t.export_kind()), "EXPORT_KIND_"));
  PrintField("export_path", t.export_path());
  PrintField("nbd_socket", t.nbd_socket());
  PrintField("nbd_tcp_port", std::to_string(t.nbd_tcp_port()));
  PrintField("epoch", std::to_string(t.epoch()));
  PrintField("loop_index", std::to_string(t.loop_index()));
  PrintField("state", EnumSuffix(pb::TargetState_Name(t.state()), "TARGET_STATE_"));
  PrintField("generation", std::to_string(t.generation()));
  PrintField("generation_id", HexId(t.generation_id()));
  PrintField("last_error", t.last_error());
  std::string in_sync;
  for (const std::string& id : t.in_sync_replica_ids())
    in_sync += (in_sync.empty() ? "" : ",") + id;
  PrintField("in_sync", in_sync);
  PrintField("size_bytes", std::to_string(t.size_bytes()));
  PrintField("reads", std::to_string(t.reads()));
  PrintField("writes", std::to_string(t.writes()));
  PrintField("flushes", std::to_string(t.flushes()));
  PrintField("errors", std::to_string(t.errors()));
  PrintField("bytes_read", std::to_string(t.bytes_read()));
  PrintField("bytes_written", std::to_string(t.bytes_written()));
  for (int i = 0; i < t.replicas_size(); ++i) {
    const pb::ReplicaStatus& r = t.replicas(i);
    const std::string p = "replica." + std::to_string(i) + ".";
    PrintField(p + "address", r.address());
    PrintField(p + "replica_id", r.replica_id());
    PrintField(p + "state", EnumSuffix(pb::ReplicaState_Name(r.state()), "REPLICA_STATE_"));
    PrintField(p + "generation", std::to_string(r.generation()));
    PrintField(p + "generation_id", HexId(r.generation_id()));
    PrintField(p + "inflight", std::to_string(r.inflight()));
    PrintField(p + "reads", std::to_string(r.reads()));
    PrintField(p + "writes", std::to_string(r.writes()));
    PrintField(p + "errors", std::to_string(r.errors()));
    PrintField(p + "last_error", r.last_error());
  }
  const pb::RebuildStatus& rb = t.rebuild();
  PrintField("rebuild.state", EnumSuffix(pb::RebuildState_Name(rb.state()), "REBUILD_STATE_"));
  PrintField("rebuild.mode", EnumSuffix(pb::RebuildMode_Name(rb.mode()), "REBUILD_MODE_"));
  PrintField("rebuild.replica", rb.replica());
  PrintField("rebuild.source", rb.source());
  PrintField("rebuild.bytes_total", std::to_string(rb.bytes_total()));
  PrintField("rebuild.bytes_done", std::to_string(rb.bytes_done()));
  PrintField("rebuild.bytes_copied", std::to_string(rb.bytes_copied()));
  PrintField("rebuild.resumed_from", std::to_string(rb.resumed_from()));
  char num[64];
  std::snprintf(num, sizeof(num), "%.0f", rb.rate_bytes_per_sec());
  PrintField("rebuild.rate_bytes_per_sec", num);
  std::snprintf(num, sizeof(num), "%.1f", rb.eta_seconds());
  PrintField("rebuild.eta_seconds", num);
  PrintField("rebuild.rate_limit_bytes_per_sec", std::to_string(rb.rate_limit_bytes_per_sec()));
  PrintField("rebuild.last_error", rb.last_error());
  PrintField("rebuilds_completed", std::to_string(t.rebuilds_completed()));
  PrintField("rebuild_bytes_copied", std::to_string(t.rebuild_bytes_copied()));
  for (const pb::StageLatency& l : t.stage_latency()) PrintStageLatency(l);
}

// "HOST:PORT[:local]". Only the shape is checked here; the engine validates
// the values (and names the bad field).
bool ParseEndpoint(const std::string& text, pb::ReplicaEndpoint* e) {
  std::string rest = text;
  const std::string kLocal = ":local";
  if (rest.size() > kLocal.size() &&
      rest.compare(rest.size() - kLocal.size(), kLocal.size(), kLocal) == 0) {
    e->set_local(true);
    rest.resize(rest.size() - kLocal.size());
  }
  size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  std::string port = rest.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  e->set_host(rest.substr(0, colon));
  e->set_port(static_cast<uint32_t>(std::stoul(port)));
  return true;
}

// size: `target create`'s flags and their translation into the request, one flag at a time.
int Create(const Context& ctx, int argc, char** argv) {
  Flags flags;
  flags.Define("volume", "", "volume id");
  flags.Define("epoch", "", "attach epoch (> 0)");
  flags.Define("replica", "", "HOST:PORT[:local] (repeatable)");
  flags.Define("size", "0", "expected volume size (K/M/G suffixes); 0: the replicas'");
  flags.Define("token", "", "data-protocol token presented to the replicas");
  flags.Define("timeout-ms", "0", "per-request replica timeout; 0: the engine default");
  flags.Define("nbd-tcp", "", "extra NBD export on HOST:PORT");
  flags.Define("export", "nbd", "how the volume is exposed: nbd or fuse-file");
  flags.Define("rebuild-rate", "0", "rebuild rate limit, bytes/s (K/M/G); 0: the engine default");
  flags.Define("reconnect-interval-ms", "0",
               "reconnect/rebuild interval of faulted replicas; 0: the engine default");
  flags.Define("in-sync-generation-id", "",
               "the controller's in-sync record: the generation id (16 hex digits, as "
               "`target get` prints it) the in-sync replicas hold");
  flags.Define("in-sync-replica", "",
               "replica id in the in-sync record (repeatable; needs --in-sync-generation-id)");
  flags.Define("quorum-wait-ms", "0",
               "how long writes wait for a majority before failing; 0: the request timeout");
  int exit = kExitOk;
  if (!ParseVerbFlags("target", &flags, argc, argv, {"volume", "epoch", "replica"}, &exit)) {
    return exit;
  }
  uint64_t epoch = 0;
  uint64_t size = 0;
  uint64_t timeout_ms = 0;
  uint64_t rate = 0;
  uint64_t reconnect_ms = 0;
  if (Status st = flags.GetUint("rebuild-rate", &rate, /*sizes=*/true); !st.ok()) {
    return UsageError(st.message());
  }
  if (Status st = flags.GetUint("reconnect-interval-ms", &reconnect_ms);
      !st.ok() || reconnect_ms > UINT32_MAX) {
    return UsageError("--reconnect-interval-ms must be a number of milliseconds below 2^32");
  }
  if (Status st = flags.GetUint("epoch", &epoch); !st.ok()) return UsageError(st.message());
  if (Status st = flags.GetUint("size", &size, /*sizes=*/true); !st.ok()) {
    return UsageError(st.message());
  }
  if (Status st = flags.GetUint("timeout-ms", &timeout_ms); !st.ok() || timeout_ms > UINT32_MAX) {
    return UsageError("--timeout-ms must be a number of milliseconds below 2^32");
  }
  pb::CreateTargetRequest req;
  req.set_volume_id(flags.Get("volume"));
  req.set_epoch(epoch);
  req.set_token(flags.Get("token"));
  req.set_size_bytes(size);
  req.set_request_timeout_ms(static_cast<uint32_t>(timeout_ms));
  req.set_nbd_tcp_address(flags.Get("nbd-tcp"));
  if (const std::string kind = flags.Get("export"); kind == "nbd") {
    req.set_export_kind(pb::EXPORT_KIND_NBD);
  } else if (kind == "fuse-file") {
    req.set_export_kind(pb::EXPORT_KIND_FUSE_FILE);
  } else {
    return UsageError("--export must be nbd or fuse-file, got \"" + kind + "\"");
  }
  req.set_rebuild_rate_bytes_per_sec(rate);
  req.set_reconnect_interval_ms(static_cast<uint32_t>(reconnect_ms));
  if (std::string g = flags.Get("in-sync-generation-id"); !g.empty()) {
    char* end = nullptr;
    errno = 0;
    unsigned long long id = std::strtoull(g.c_str(), &end, 16);
    if (errno != 0 || end == g.c_str() || *end != '\0' || g.size() > 16 || id == 0) {
      return UsageError(
          "--in-sync-generation-id must be a non-zero hex id of up to 16 digits, "
          "got \"" +
          g + "\"");
    }
    req.set_in_sync_generation_id(id);
  }
  for (const std::string& id : flags.GetAll("in-sync-replica")) {
    if (!id.empty()) req.add_in_sync_replica_ids(id);
  }
  uint64_t quorum_wait_ms = 0;
  if (Status st = flags.GetUint("quorum-wait-ms", &quorum_wait_ms);
      !st.ok() || quorum_wait_ms > UINT32_MAX) {
    return UsageError("--quorum-wait-ms must be a number of milliseconds below 2^32");
  }
  req.set_quorum_wait_ms(static_cast<uint32_t>(quorum_wait_ms));
  for (const std::string& spec : flags.GetAll("replica")) {
    if (!ParseEndpoint(spec, req.add_replicas())) {
      return UsageError("--replica must be HOST:PORT[:local], got \"" + spec + "\"");
    }
  }
  Result<pb::Target> t = ctx.client->CreateTarget(req, ctx.deadline);
  if (!t.ok()) return ReportError(t.status());
  PrintTarget(*t);
  return kExitOk;
}

int Destroy(const Context& ctx, int argc, char** argv) {
  Flags flags;
  flags.Define("volume", "", "volume id");
  int exit = kExitOk;
  if (!ParseVerbFlags("target", &flags, argc, argv, {"volume"}, &exit)) return exit;
  Status st = ctx.client->DestroyTarget(flags.Get("volume"), ctx.deadline);
  return st.ok() ? kExitOk : ReportError(st);
}

int Get(const Context& ctx, int argc, char** argv) {
  Flags flags;
  flags.Define("volume", "", "volume id");
  int exit = kExitOk;
  if (!ParseVerbFlags("target", &flags, argc, argv, {"volume"}, &exit)) return exit;
  Result<pb::Target> t = ctx.client->GetTarget(flags.Get("volume"), ctx.deadline);
  if (!t.ok()) return ReportError(t.status());
  PrintTarget(*t);
  return kExitOk;
}

int List(const Context& ctx, int argc, char** argv) {
  Flags flags;
  int exit = kExitOk;
  if (!ParseVerbFlags("target", &flags, argc, argv, {}, &exit)) return exit;
  Result<std::vector<pb::Target>> all = ctx.client->ListTargets(ctx.deadline);
  if (!all.ok()) return ReportError(all.status());
  for (size_t i = 0; i < all->size(); ++i) {
    if (i > 0) std::printf("\n");
    PrintTarget((*all)[i]);
  }
  return kExitOk;
}

int AddReplica(const Context& ctx, int argc, char** argv) {
  Flags flags;
  flags.Define("volume", "", "volume id");
  flags.Define("replica", "", "HOST:PORT[:local]");
  int exit = kExitOk;
  if (!ParseVerbFlags("target", &flags, argc, argv, {"volume", "replica"}, &exit)) return exit;
  pb::ReplicaEndpoint e;
  if (!ParseEndpoint(flags.Get("replica"), &e)) {
    return UsageError("--replica must be HOST:PORT[:local], got \"" + flags.Get("replica") + "\"");
  }
  Result<pb::Target> t = ctx.client->AddTargetReplica(flags.Get("volume"), e, ctx.deadline);
  if (!t.ok()) return ReportError(t.status());
  PrintTarget(*t);
  return kExitOk;
}

// remove-replica and rebuild: --volume and --replica=HOST:PORT.
int ReplicaVerb(const Context& ctx, int argc, char** argv, bool remove) {
  Flags flags;
  flags.Define("volume", "", "volume id");
  flags.Define("replica", "", "HOST:PORT");
  int exit = kExitOk;
  if (!ParseVerbFlags("target", &flags, argc, argv, {"volume", "replica"}, &exit)) return exit;
  const std::string volume = flags.Get("volume");
  const std::string address = flags.Get("replica");
  Result<pb::Target> t = remove ? ctx.client->RemoveTargetReplica(volume, address, ctx.deadline)
                                : ctx.client->RebuildTargetReplica(volume, address, ctx.deadline);
  if (!t.ok()) return ReportError(t.status());
  PrintTarget(*t);
  return kExitOk;
}

int SetRate(const Context& ctx, int argc, char** argv) {
  Flags flags;
  flags.Define("volume", "", "volume id");
  flags.Define("rate", "", "bytes/s (K/M/G suffixes); 0: unlimited");
  int exit = kExitOk;
  if (!ParseVerbFlags("target", &flags, argc, argv, {"volume", "rate"}, &exit)) return exit;
  uint64_t rate = 0;
  if (Status st = flags.GetUint("rate", &rate, /*sizes=*/true); !st.ok()) {
    return UsageError(st.message());
  }
  Result<pb::Target> t = ctx.client->SetRebuildRate(flags.Get("volume"), rate, ctx.deadline);
  if (!t.ok()) return ReportError(t.status());
  PrintTarget(*t);
  return kExitOk;
}

int Resize(const Context& ctx, int argc, char** argv) {
  Flags flags;
  flags.Define("volume", "", "volume id");
  flags.Define("size", "", "new size, bytes (K/M/G suffixes); grow only");
  int exit = kExitOk;
  if (!ParseVerbFlags("target", &flags, argc, argv, {"volume", "size"}, &exit)) return exit;
  uint64_t size = 0;
  if (Status st = flags.GetUint("size", &size, /*sizes=*/true); !st.ok()) {
    return UsageError(st.message());
  }
  Result<pb::Target> t = ctx.client->ResizeTarget(flags.Get("volume"), size, ctx.deadline);
  if (!t.ok()) return ReportError(t.status());
  PrintTarget(*t);
  return kExitOk;
}

// Polls GetTarget every --interval-ms and shows the rebuild: a bar redrawn in
// place on a terminal, a line per change otherwise (logs, pipes). Every wait,
// RPCs included, ends by --timeout-s.
int Watch(const Context& ctx, int argc, char** argv) {
  Flags flags;
  flags.Define("volume", "", "volume id");
  flags.Define("interval-ms", "500", "poll interval");
  flags.Define("until-done", "false", "exit 0 when the rebuild is done, 1 if it fails");
  flags.Define("timeout-s", "3600", "give up after this many seconds (exit 1 with --until-done)");
  int exit = kExitOk;
  if (!ParseVerbFlags("target", &flags, argc, argv, {"volume"}, &exit)) return exit;
  uint64_t interval_ms = 0;
  uint64_t timeout_s = 0;
  if (Status st = flags.GetUint("interval-ms", &interval_ms);
      !st.ok() || interval_ms < 10 || interval_ms > 3600 * 1000) {
    return UsageError("--interval-ms must be a number of milliseconds in 10..3600000");
  }
  if (Status st = flags.GetUint("timeout-s", &timeout_s);
      !st.ok() || timeout_s == 0 || timeout_s > 30 * 86400) {
    return UsageError("--timeout-s must be a number of seconds in 1..2592000");
  }
  const bool until_done = flags.GetBool("until-done");
  const std::string volume = flags.Get("volume");
  const bool tty = isatty(STDOUT_FILENO) == 1;
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(timeout_s);
  std::string last;
  // On a terminal the bar has no newline until the watch ends.
  auto end_line = [&] {
    if (tty && !last.empty()) std::printf("\n");
    std::fflush(stdout);
  };
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    // Every poll gets a fair deadline (a loaded engine may take a while to
    // answer): the watch ends at most that much after --timeout-s.
    auto call_timeout = std::min(std::max(left, std::chrono::milliseconds(2000)), ctx.deadline);
    Result<pb::Target> t = ctx.client->GetTarget(volume, call_timeout);
    if (!t.ok()) {
      end_line();
      return ReportError(t.status());
    }
    std::string line = RenderWatchLine(*t);
    if (tty) {
      // Carriage return, the line, erase what a longer previous line left.
      std::printf("\r%s\033[K", line.c_str());
      std::fflush(stdout);
    } else if (line != last) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
    last = line;
    if (until_done) {
      WatchVerdict v = JudgeWatch(*t);
      if (v == WatchVerdict::kDone) {
        end_line();
        return kExitOk;
      }
      if (v == WatchVerdict::kFailed) {
        end_line();
        std::fprintf(stderr, "error: rebuild of %s failed: %s\n", t->rebuild().replica().c_str(),
                     t->rebuild().last_error().c_str());
        return kExitError;
      }
    }
    left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      end_line();
      if (!until_done) return kExitOk;
      std::fprintf(stderr, "error: rebuild of volume %s not done after %llu s\n", volume.c_str(),
                   static_cast<unsigned long long>(timeout_s));
      return kExitError;
    }
    std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(interval_ms)));
  }
}

}  // namespace

int RunTargetCommand(const Context& ctx, int argc, char** argv) {
  const std::string verb = argv[0];
  if (verb == "create") return Create(ctx, argc, argv);
  if (verb == "destroy") return Destroy(ctx, argc, argv);
  if (verb == "get") return Get(ctx, argc, argv);
  if (verb == "list") return List(ctx, argc, argv);
  if (verb == "add-replica") return AddReplica(ctx, argc, argv);
  if (verb == "remove-replica") return ReplicaVerb(ctx, argc, argv, /*remove=*/true);
  if (verb == "rebuild") return ReplicaVerb(ctx, argc, argv, /*remove=*/false);
  if (verb == "set-rate") return SetRate(ctx, argc, argv);
  if (verb == "resize") return Resize(ctx, argc, argv);
  if (verb == "watch") return Watch(ctx, argc, argv);
  return UsageError("unknown target command \"" + verb + "\"");
}

}  // namespace tandem::tandemctl
