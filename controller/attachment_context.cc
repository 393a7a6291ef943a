#include "controller/attachment_context.h"

namespace tandem::controller {

Result<csi::PublishContext> AttachmentContext(const rec::VolumeRecord& record,
                                              NodeRegistry* nodes) {
  csi::PublishContext ctx;
  ctx.epoch = record.attachment().epoch();
  for (const auto& r : record.replicas()) {
    auto rn = nodes->Get(r.node_id());
    if (rn && rn->info.data_address().empty()) {
      // Not heard from since this controller started: ask now.
      nodes->PollAll();
      rn = nodes->Get(r.node_id());
    }
    if (!rn || rn->info.data_address().empty()) {
      return Status::Unavailable("replica " + r.replica_id() + "'s node " + r.node_id() +
                                 " has not reported its data address (engine unreachable?)");
    }
    ctx.replicas.push_back({r.replica_id(), rn->info.data_address()});
  }
  ctx.in_sync_generation_id = record.in_sync_generation_id();
  ctx.in_sync_replica_ids.assign(record.in_sync_replica_ids().begin(),
                                 record.in_sync_replica_ids().end());
  ctx.size_bytes = record.size_bytes();
  ctx.rebuild_rate_bytes_per_sec = record.rebuild_rate_bytes_per_sec();
  ctx.volume_secret = record.secret();
  return ctx;
}

}  // namespace tandem::controller
