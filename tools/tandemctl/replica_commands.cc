// tandemctl replica create|delete|get|list|resize|fence.

#include <cstdio>
#include <string>
#include <vector>

#include "common/flags.h"
#include "tools/tandemctl/commands.h"

namespace tandem::tandemctl {
namespace {

namespace pb = ::tandem::engine::v1;

void PrintReplica(const pb::Replica& r) {
  PrintField("volume_id", r.volume_id());
  PrintField("replica_id", r.replica_id());
  PrintField("size_bytes", std::to_string(r.size_bytes()));
  PrintField("block_size", std::to_string(r.block_size()));
  PrintField("generation", std::to_string(r.generation()));
  PrintField("highest_epoch", std::to_string(r.highest_epoch()));
  PrintField("clean_shutdown", r.clean_shutdown() ? "true" : "false");
  PrintField("data_path", r.data_path());
}

int Create(const Context& ctx, int argc, char** argv) {
  Flags flags;
  flags.Define("volume", "", "volume id");
  flags.Define("replica-id", "", "replica id");
  flags.Define("size", "", "bytes (K/M/G suffixes)");
  flags.Define("block-size", "0", "bytes; 0: the engine default (4096)");
  flags.Define("data-path", "", "block device or file (default: a sparse file)");
  int exit = kExitOk;
  if (!ParseVerbFlags("replica", &flags, argc, argv, {"volume", "replica-id", "size"}, &exit))
    return exit;
  uint64_t size = 0;
  uint64_t block_size = 0;
  if (Status st = flags.GetUint("size", &size, /*sizes=*/true); !st.ok()) {
    return UsageError(st.message());
  }
  if (Status st = flags.GetUint("block-size", &block_size, /*sizes=*/true);
      !st.ok() || block_size > UINT32_MAX) {
    return UsageError("--block-size must be a number below 4G");
  }
  pb::CreateReplicaRequest req;
  req.set_volume_id(flags.Get("volume"));
  req.set_replica_id(flags.Get("replica-id"));
  req.set_size_bytes(size);
  req.set_block_size(static_cast<uint32_t>(block_size));
  req.set_data_path(flags.Get("data-path"));
  Result<pb::Replica> r = ctx.client->CreateReplica(req, ctx.deadline);
  if (!r.ok()) return ReportError(r.status());
  PrintReplica(*r);
  return kExitOk;
}

int Delete(const Context& ctx, int argc, char** argv) {
  Flags flags;
  flags.Define("volume", "", "volume id");
  int exit = kExitOk;
  if (!ParseVerbFlags("replica", &flags, argc, argv, {"volume"}, &exit)) return exit;
  Status st = ctx.client->DeleteReplica(flags.Get("volume"), ctx.deadline);
  return st.ok() ? kExitOk : ReportError(st);
}

int Get(const Context& ctx, int argc, char** argv) {
  Flags flags;
  flags.Define("volume", "", "volume id");
  int exit = kExitOk;
  if (!ParseVerbFlags("replica", &flags, argc, argv, {"volume"}, &exit)) return exit;
  Result<pb::Replica> r = ctx.client->GetReplica(flags.Get("volume"), ctx.deadline);
  if (!r.ok()) return ReportError(r.status());
  PrintReplica(*r);
  return kExitOk;
}

int List(const Context& ctx, int argc, char** argv) {
  Flags flags;
  int exit = kExitOk;
  if (!ParseVerbFlags("replica", &flags, argc, argv, {}, &exit)) return exit;
  Result<std::vector<pb::Replica>> all = ctx.client->ListReplicas(ctx.deadline);
  if (!all.ok()) return ReportError(all.status());
  for (size_t i = 0; i < all->size(); ++i) {
    if (i > 0) std::printf("\n");
    PrintReplica((*all)[i]);
  }
  return kExitOk;
}

int Resize(const Context& ctx, int argc, char** argv) {
  Flags flags;
  flags.Define("volume", "", "volume id");
  flags.Define("size", "", "new size, bytes (K/M/G suffixes); grow only");
  int exit = kExitOk;
  if (!ParseVerbFlags("replica", &flags, argc, argv, {"volume", "size"}, &exit)) return exit;
  uint64_t size = 0;
  if (Status st = flags.GetUint("size", &size, /*sizes=*/true); !st.ok()) {
    return UsageError(st.message());
  }
  Result<pb::Replica> r = ctx.client->ResizeReplica(flags.Get("volume"), size, ctx.deadline);
  if (!r.ok()) return ReportError(r.status());
  PrintReplica(*r);
  return kExitOk;
}

// Raises the replica's epoch so every target of an older epoch is refused.
int Fence(const Context& ctx, int argc, char** argv) {
  Flags flags;
  flags.Define("volume", "", "volume id");
  flags.Define("epoch", "", "the epoch to raise the replica to (> 0)");
  int exit = kExitOk;
  if (!ParseVerbFlags("replica", &flags, argc, argv, {"volume", "epoch"}, &exit)) return exit;
  uint64_t epoch = 0;
  if (Status st = flags.GetUint("epoch", &epoch); !st.ok()) return UsageError(st.message());
  Result<pb::Replica> r = ctx.client->FenceReplica(flags.Get("volume"), epoch, ctx.deadline);
  if (!r.ok()) return ReportError(r.status());
  PrintReplica(*r);
  return kExitOk;
}

}  // namespace

int RunReplicaCommand(const Context& ctx, int argc, char** argv) {
  const std::string verb = argv[0];
  if (verb == "create") return Create(ctx, argc, argv);
  if (verb == "delete") return Delete(ctx, argc, argv);
  if (verb == "get") return Get(ctx, argc, argv);
  if (verb == "list") return List(ctx, argc, argv);
  if (verb == "resize") return Resize(ctx, argc, argv);
  if (verb == "fence") return Fence(ctx, argc, argv);
  return UsageError("unknown replica command \"" + verb + "\"");
}

}  // namespace tandem::tandemctl
