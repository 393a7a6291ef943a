// tandemctl target create|destroy|get|list.

#include <cstdio>
#include <string>
#include <vector>

#include "tools/tandemctl/commands.h"

namespace tandem::tandemctl {
namespace {

namespace pb = ::tandem::engine::v1;

void PrintTarget(const pb::Target& t) {
  PrintField("volume_id", t.volume_id());
  PrintField("nbd_socket", t.nbd_socket());
  PrintField("nbd_tcp_port", std::to_string(t.nbd_tcp_port()));
  PrintField("epoch", std::to_string(t.epoch()));
  PrintField("state", EnumSuffix(pb::TargetState_Name(t.state()), "TARGET_STATE_"));
  PrintField("generation", std::to_string(t.generation()));
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
    PrintField(p + "inflight", std::to_string(r.inflight()));
    PrintField(p + "reads", std::to_string(r.reads()));
    PrintField(p + "writes", std::to_string(r.writes()));
    PrintField(p + "errors", std::to_string(r.errors()));
    PrintField(p + "last_error", r.last_error());
  }
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

int Create(const Context& ctx, int argc, char** argv) {
  Flags flags;
  flags.Define("volume", "", "volume id");
  flags.Define("epoch", "", "attach epoch (> 0)");
  flags.Define("replica", "", "HOST:PORT[:local] (repeatable)");
  flags.Define("size", "0", "expected volume size (K/M/G suffixes); 0: the replicas'");
  flags.Define("token", "", "data-protocol token presented to the replicas");
  flags.Define("timeout-ms", "0", "per-request replica timeout; 0: the engine default");
  flags.Define("nbd-tcp", "", "extra NBD export on HOST:PORT");
  int exit = kExitOk;
  if (!ParseVerbFlags("target", &flags, argc, argv, {"volume", "epoch", "replica"}, &exit)) {
    return exit;
  }
  uint64_t epoch = 0;
  uint64_t size = 0;
  uint64_t timeout_ms = 0;
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

}  // namespace

int RunTargetCommand(const Context& ctx, int argc, char** argv) {
  const std::string verb = argv[0];
  if (verb == "create") return Create(ctx, argc, argv);
  if (verb == "destroy") return Destroy(ctx, argc, argv);
  if (verb == "get") return Get(ctx, argc, argv);
  if (verb == "list") return List(ctx, argc, argv);
  return UsageError("unknown target command \"" + verb + "\"");
}

}  // namespace tandem::tandemctl
