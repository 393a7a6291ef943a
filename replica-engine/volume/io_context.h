#pragma once
// IoCtx: one frontend request in flight through the mirror. A fixed pool of
// these is allocated when the target starts (TargetOptions::max_inflight); a
// request that finds the pool empty waits in a FIFO, so nothing is allocated
// per I/O. Private to replica-engine/volume.

#include <cstdint>

#include "replica-engine/client/replica_channel.h"
#include "replica-engine/block_device/block_device.h"
#include "replica-engine/volume/range_lock.h"
#include "replica-engine/volume/volume_target.h"

namespace tandem::target {

class VolumeTargetImpl;

struct IoCtx {
  enum class Phase : uint8_t { kData, kAwaitBump, kMarkDirty, kFuaFlush };
  VolumeTargetImpl* target = nullptr;
  BlockRequest* req = nullptr;
  Phase phase = Phase::kData;
  uint32_t remaining = 0;    // sub-requests outstanding
  uint32_t sent_mask = 0;    // replicas the data phase went to
  uint32_t ok_mask = 0;      // replicas that acknowledged the data phase
  uint32_t tried_mask = 0;   // reads: replicas already tried
  bool marked = false;       // MARK_DIRTY done on the survivors
  bool fua_flushed = false;  // TRIM/WRITE_ZEROES with FUA: FLUSH sent after it
  StatusCode first_error = StatusCode::kOk;
  uint64_t seq = 0;  // dispatch order (the rebuild drains older writes)
  // Stage timestamps (MonotonicNanos) for the latency histograms: when the
  // request was handed to the replicas (the current phase's sub-requests)
  // and when its data phase ended (0: not yet).
  uint64_t sent_ns = 0;
  uint64_t data_done_ns = 0;
  // A write holds its range in the RangeLock during its data phase.
  LockedRange range;
  client::ClientRequest sub[VolumeTarget::kMaxReplicas];
  IoCtx* next = nullptr;  // the free list, or the writes waiting for a bump
};

using IoCtxQueue = IntrusiveQueue<IoCtx, &IoCtx::next>;

}  // namespace tandem::target
