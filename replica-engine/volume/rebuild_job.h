#pragma once
// RebuildJob: the I/O driver of the online rebuild of one replica of a live
// VolumeTarget (docs/architecture.md "Rebuild"; what to copy is decided by
// RebuildPlan, rebuild_plan.h).
//
// One rebuild at a time per target. The destination is REBUILDING from the
// moment the job starts: every live write goes to it as well. The job then
// - waits for the writes dispatched before that to finish (drain),
// - reads the union of the HEALTHY replicas' dirty maps (and the activity
//   logs that join it) when the plan has dirty regions,
// - copies windows of at most kMaxIoSize, up to kWindows at once, each under
//   the target's RangeLock: a window is locked when planned, starts once no
//   live write overlapping it is in its data phase, READs from a HEALTHY
//   source (redone from another one if the source fails) and WRITEs (or
//   TRIMs a hole) to the destination, gated by the TokenBucket and by the
//   application's load;
// - for a full rebuild, persists a cursor on the destination every
//   rebuild_checkpoint_bytes, after a FLUSH of it;
// - finishes with FLUSH, SET_GENERATION(current) and the cursor cleared on
//   the destination, which becomes HEALTHY in the same loop turn.
// A failed destination stops the job (Abort); it is started again, resuming
// where possible, when the replica is back.
//
// The job is a part of the target: it reads the target's replica set, load
// and generation state and calls its Fault/Fence (VolumeTargetImpl befriends
// it). Threading: the target's loop thread only.

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "replica-engine/client/replica_channel.h"
#include "replica-engine/volume/range_lock.h"
#include "replica-engine/volume/rebuild_plan.h"
#include "replica-engine/volume/replica_set.h"
#include "replica-engine/volume/token_bucket.h"
#include "replica-engine/volume/volume_target.h"

namespace tandem::target {

class VolumeTargetImpl;

class RebuildJob {
 public:
  RebuildJob(VolumeTargetImpl* target, uint64_t rate_bytes_per_sec);
  RebuildJob(const RebuildJob&) = delete;
  RebuildJob& operator=(const RebuildJob&) = delete;

  // A rebuild is under way (its requests may outlive it: Busy()).
  bool running() const { return phase_ != Phase::kIdle; }
  // A request of the job (control or window) is still in flight.
  bool Busy() const;
  // The slot being rebuilt while running(); -1 before the first rebuild.
  int destination() const { return dest_; }

  // REQUIRES: !running() && !Busy(); `dest` is connected and not HEALTHY.
  void Start(ReplicaSlot* dest);
  // Goes as far as it can without waiting for a reply. Called after every
  // reply and every loop turn (range lock, rate limit, a generation bump).
  void Advance();
  // The destination faulted, the target is fenced or shutting down: the job
  // stops (no-op when none runs). Held writes are released.
  void Abort(const std::string& why);
  // The target is being destroyed: late replies find no job.
  void Abandon() { phase_ = Phase::kIdle; }

  // A live write to [offset, offset + length) went to the replicas of `mask`.
  void NoteLiveWrite(uint32_t mask, uint64_t offset, uint64_t length) {
    if (phase_ != Phase::kIdle && dest_ >= 0 && (mask & (1u << dest_))) {
      plan_.MarkTouched(offset, length);
    }
  }
  void SetRate(uint64_t bytes_per_sec, uint64_t now_ns);
  // The current (or last) rebuild, with its rate and ETA at `now_ns`.
  RebuildStatus Progress(uint64_t now_ns) const;

 private:
  enum class Phase : uint8_t {
    kIdle,
    kDrain,     // writes dispatched before the destination joined finish
    kDirtyMap,  // GET_DIRTY_MAP pages from the HEALTHY replicas
    kCopy,      // windows: allocation lookups, TRIM of holes, READ + WRITE
    kFinish,    // FLUSH, SET_GENERATION and clearing the cursor on the destination
  };
  // What a request of the job is doing (the control request, or a window).
  enum class Request : uint8_t {
    kNone,
    kMap,
    kAllocation,
    kLockWait,  // a window: planned, its range locked, not yet copying
    kRead,
    kWrite,
    kTrim,
    kCursorFlush,  // FLUSH on the destination before its checkpoint moves
    kCursor,
    kFlush,
    kSetGeneration,
    kClearCursor
  };
  // One copy window: planned (kLockWait), then READ from the source and
  // WRITE to the destination (or TRIM for a hole). kNone: free.
  struct Window {
    Request request = Request::kNone;
    RebuildPlan::Window plan;
    LockedRange range;
    client::ClientRequest req;
    int req_target = -1;
    std::unique_ptr<uint8_t, void (*)(void*)> buf{nullptr, &free};
  };
  // Windows in flight at once: the copy overlaps the source read of one
  // window with the destination write of another.
  static constexpr int kWindows = 8;
  static constexpr int kWindowsUnderLoad = 2;

  bool PickSource();
  void AdvanceDrain();
  void AdvanceDirtyMap();
  bool NextMapHolder();
  void AdvanceCopy();
  bool PlanWindows(bool* planned_all);
  void StartWindows();
  bool MaybeCheckpoint();
  void AdvanceFinish();
  uint64_t Checkpoint() const;
  void IssueControl(Request request, protocol::Opcode op, ReplicaSlot* r, uint64_t offset,
                    uint32_t length, void* buf, uint16_t flags = 0);
  void IssueWindow(Window* w, Request request, protocol::Opcode op, ReplicaSlot* r);
  static void OnDone(client::ClientRequest* req);
  void OnControlReply(client::ClientRequest* req);
  void OnControlFailed(client::ClientRequest* req);
  bool OnMapReply(const client::ClientRequest& req);
  bool OnAllocationReply(const client::ClientRequest& req);
  void OnWindowReply(Window* w);
  void OnWindowFailed(Window* w);
  void UpdateRate(uint64_t now_ns);
  void EncodeCursor(uint64_t cursor, uint64_t generation);
  void Failed(const std::string& why);
  void Finished();
  void UnlockWindows();

  VolumeTargetImpl* t_;
  Phase phase_ = Phase::kIdle;
  Request request_ = Request::kNone;  // the control request in flight
  int dest_ = -1;
  int source_ = -1;
  uint64_t drain_seq_ = 0;
  int map_replica_ = -1;  // dirty-map union: replica and page being read
  uint64_t map_offset_ = 0;
  // The destination's own activity log joins the union (what it held
  // unflushed, or in flight from a dead target, may differ from the source).
  bool map_activity_ = false;  // the page being read is the destination's log
  bool dest_activity_done_ = false;
  RebuildPlan plan_;
  Window windows_[kWindows];
  std::vector<uint8_t> reply_;  // GET_DIRTY_MAP / GET_ALLOCATION replies
  // The control request (maps, allocation, cursor, finish): one at a time.
  client::ClientRequest req_;
  int req_target_ = -1;
  uint8_t cursor_payload_[protocol::kRebuildCursorSize] = {};
  std::string generation_payload_;    // GenerationRecord of the finishing SET_GENERATION
  uint64_t last_cursor_persist_ = 0;  // cursor value last persisted
  uint64_t finish_generation_ = 0;
  // Rate limit and progress.
  TokenBucket bucket_;
  uint64_t started_ns_ = 0;
  uint64_t rate_mark_ns_ = 0;
  uint64_t rate_mark_done_ = 0;
  double rate_ = 0;
  RebuildStatus status_;
};

}  // namespace tandem::target
