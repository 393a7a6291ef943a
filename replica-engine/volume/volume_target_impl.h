#pragma once
// Private to replica-engine/volume: the state of one VolumeTarget, all on the
// target's EventLoop. The target is made of
// - ReplicaSet (replica_set.h): the replicas, their states and masks, the
//   generation and its ids, AckAllowed();
// - RangeLock (range_lock.h): live writes against each other and against
//   the rebuild's windows;
// - RebuildJob (rebuild_job.h) with its RebuildPlan and TokenBucket;
// and this class, which ties them together. Its methods are split by verb:
//   volume_target.cc          public API, lifecycle, status, live replica changes
//   volume_target_startup.cc  attach: connecting, choosing the serving replicas
//   volume_target_io.cc       the I/O path (the counting fan-out)
//   volume_target_faults.cc   faults, generation bumps, quorum, fencing
//   dirty_tracking.cc         which replica rebuilds next; ending dirty tracking
//   activity_resync.cc        the activity-log resync at attach

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common/event_loop.h"
#include "common/intrusive_list.h"
#include "replica-engine/client/replica_channel.h"
#include "replica-engine/volume/io_context.h"
#include "replica-engine/volume/range_lock.h"
#include "replica-engine/volume/rebuild_job.h"
#include "replica-engine/volume/replica_set.h"
#include "replica-engine/volume/volume_target.h"

namespace tandem::target {

using client::ClientRequest;

class VolumeTargetImpl final : private EventLoop::Idler,
                               private EventLoop::Ticker,
                               private ReplicaSlot::Events {
 public:
  VolumeTargetImpl(EventLoop* loop, TargetOptions options);
  ~VolumeTargetImpl();

  Status Start();
  void Shutdown(void (*done)(void*), void* arg);
  void Submit(BlockRequest* req);
  TargetStatus GetStatus() const;
  Status AddReplica(const ReplicaEndpoint& endpoint);
  Status RemoveReplica(const std::string& address);
  Status RebuildReplica(const std::string& address);
  void SetRebuildRate(uint64_t bytes_per_sec);
  Status Resize(uint64_t new_size);

  TargetState state_ = TargetState::kStarting;
  uint64_t size_ = 0;
  uint32_t block_size_ = 4096;

 private:
  friend class RebuildJob;
  static constexpr size_t kMaxReplicas = VolumeTarget::kMaxReplicas;

  void BeforeWait() override;
  void OnTick(uint64_t now_ns) override;
  void Reconnect(uint64_t now_ns);
  void RunShutdown();
  // The slot's channel: TargetOptions::channel_factory's, or a ReplicaClient.
  std::unique_ptr<client::ReplicaChannel> NewChannel(ReplicaSlot* r);

  // Start-up (volume_target_startup.cc).
  void OnReplicaConnected(ReplicaSlot* r, const protocol::ReplicaInfo& info) override;
  void OnReplicaDisconnected(ReplicaSlot* r, const Status& why) override;
  void MaybeFinishStart();
  // The rest of the attach once the serving replicas are chosen (and their
  // activity logs resynced): the in-sync record, tracking, the first bump.
  void FinishStart();
  bool start_chosen_ = false;

  // Faults, generation bumps, fencing (volume_target_faults.cc).
  void Fault(ReplicaSlot* r, const Status& why);
  void Fence(const std::string& why);
  void StartBump();
  static void OnBumpDone(ClientRequest* sub);
  void ReleaseBumpWaiters();
  void UpdateState();
  // The membership authority (membership_authority.h): what to ask it.
  enum class AuthorityAsk { kShrink, kGrow, kClear };
  void AskAuthority(AuthorityAsk ask, uint32_t serving);
  // May the due bump run: acknowledging on the healthy replicas is allowed,
  // and an in-sync record the authority holds covers it (or is cleared first).
  bool BumpAllowed(uint32_t healthy) const;
  // A rebuild finished while a record exists: grow (or clear) it.
  void MaybeGrowInSync();
  // Writes waited longer than quorum_wait_ms for a majority: fail them.
  void FailQuorumWaiters();
  // A bump is running, or due and allowed: the generation is about to move.
  bool GenerationAboutToMove() const {
    return bump_running_ || (need_bump_ && BumpAllowed(replicas_.HealthyMask()));
  }

  // Which replica rebuilds next; the end of dirty tracking (dirty_tracking.cc).
  void StartNextRebuild();
  void StartUntrack();
  void IssueClearRound();
  static void OnUntrackDone(ClientRequest* sub);

  // The I/O path (volume_target_io.cc).
  Status Validate(const BlockRequest* req) const;
  void Dispatch(BlockRequest* req);
  void StartWriteLike(IoCtx* c);
  void StartRead(IoCtx* c);
  void StartMarkDirty(IoCtx* c);
  void SendControl(IoCtx* c, uint32_t mask, protocol::Opcode op, uint64_t offset, uint32_t length);
  static void OnSubDone(ClientRequest* sub);
  void OnDataPhaseDone(IoCtx* c);
  void AwaitBump(IoCtx* c);
  void UnlinkWrite(IoCtx* c);
  // Requests held by the range lock go back to the head of the queue (in
  // their order); those still overlapping a holder are held again.
  void ReleaseRangeLock();
  void Finish(IoCtx* c, StatusCode code);
  // Finish(OK) for a write-like request, after a FLUSH of the replicas that
  // hold it when it is a TRIM/WRITE_ZEROES with FUA (the protocol has FUA on
  // WRITE only; NBD requires the reply after durability).
  void FinishWrite(IoCtx* c);
  // Completes `req` now, or at the next BeforeWait when inside Submit().
  void Complete(BlockRequest* req, StatusCode code);
  void FailLater(BlockRequest* req, StatusCode code);
  void DrainWaiting();
  // A write-like request dispatched before `seq` is still in flight.
  bool WritesDispatchedBefore(uint64_t seq) const;
  // The application has requests in flight or queued.
  bool ApplicationBusy() const { return inflight_ > 0 || !waiting_.empty(); }
  // Queued requests wait for a free IoCtx.
  bool RequestsWaitForSlot() const { return !waiting_.empty() && free_ctx_.empty(); }
  StatusCode DownCode() const {
    return state_ == TargetState::kFenced ? StatusCode::kFailedPrecondition
                                          : StatusCode::kUnavailable;
  }
  static bool NeedsBump(BlockOp op) { return op != BlockOp::kRead; }
  // The latency histogram of `stage` for the class of `req` (reads, or
  // everything else), in counters_ so GetStatus copies it.
  StageHistogram& StageOf(const BlockRequest* req, Stage stage);

  EventLoop* loop_;
  TargetOptions options_;
  ReplicaSet replicas_;
  RangeLock range_lock_;
  RebuildJob rebuild_;
  std::vector<IoCtx> ctx_pool_;
  IoCtxQueue free_ctx_;    // a stack
  uint32_t inflight_ = 0;  // IoCtx in use
  uint64_t dispatch_seq_ = 0;
  bool idler_added_ = false;
  bool in_submit_ = false;
  bool destroying_ = false;

  // Requests waiting for an IoCtx, for start-up, or for a generation bump.
  BlockRequestQueue waiting_;
  // Requests completed at the next BeforeWait (never inside Submit).
  BlockRequestQueue failed_;
  // Writes that reached only some replicas, waiting for the bump (a stack).
  IoCtxQueue bump_waiters_;

  bool need_bump_ = false;  // a replica left since the last bump
  bool bump_running_ = false;
  uint32_t bump_remaining_ = 0;
  uint64_t bump_generation_ = 0;
  bool bump_track_ = false;
  ClientRequest bump_sub_[kMaxReplicas];
  std::string bump_payload_;  // the GenerationRecord of the bump in flight

  // Ending dirty tracking (CLEAR_DIRTY rounds, then SET_GENERATION without
  // TRACK_DIRTY); writes wait meanwhile, as for a bump.
  bool untrack_running_ = false;
  uint32_t untrack_remaining_ = 0;
  ClientRequest untrack_sub_[kMaxReplicas];
  bool untrack_clear_done_ = false;
  std::string untrack_payload_;
  uint64_t untrack_clear_offset_ = 0;

  bool shutting_down_ = false;
  bool shutdown_flush_sent_ = false;
  BlockRequest shutdown_flush_;
  bool shutdown_finished_ = false;
  void (*shutdown_done_)(void*) = nullptr;
  void* shutdown_arg_ = nullptr;

  TargetStatus counters_;
  std::string last_error_;

  // The in-sync record through the authority (AckAllowed): a call is out;
  // the authority may hold a record for this volume (given at attach, or
  // recorded since); a finished rebuild wants it grown.
  bool shrink_pending_ = false;
  // Whether the authority may hold a record for this volume: one given at
  // attach, recorded since, or a call whose outcome is unknown.
  bool record_known_ = false;
  // Numbers this target's calls to the authority (InSyncUpdate::seq).
  uint64_t authority_seq_ = 0;
  bool grow_due_ = false;
  uint64_t shrink_retry_ns_ = 0;
  uint64_t quorum_lost_ns_ = 0;  // since when a bump waits for a majority
  // Cleared by the destructor: callbacks of the authority check it before
  // touching us.
  std::shared_ptr<VolumeTargetImpl*> self_ref_ = std::make_shared<VolumeTargetImpl*>(this);

  // ------------------------------------------------ activity-log resync
  // (activity_resync.cc) After an unclean end of the last target, the
  // extents in the HEALTHY replicas' activity logs are copied from one of
  // them to the others before the attach finishes.
  struct ResyncWindow {
    enum Step : uint8_t { kFree, kRead, kWrite };
    Step step = kFree;
    uint64_t off = 0;
    uint32_t len = 0;
    int read_from = -1;
    uint32_t remaining = 0;  // writes outstanding
    ClientRequest read;
    ClientRequest write[kMaxReplicas];
    std::unique_ptr<uint8_t, void (*)(void*)> buf{nullptr, &free};
  };
  enum class ResyncPhase : uint8_t { kMap, kCopy, kFlush };
  static constexpr int kResyncWindows = 4;
  struct Resync {
    bool active = false;
    ResyncPhase phase = ResyncPhase::kMap;
    int source = -1;
    int map_replica = -1;
    uint64_t map_offset = 0;
    uint32_t extent = 0;       // bytes per bit of `map`
    std::vector<uint8_t> map;  // union of the logs
    std::vector<uint8_t> reply;
    ClientRequest req;  // GET_DIRTY_MAP (activity)
    bool req_busy = false;
    uint64_t cursor = 0;
    uint32_t flush_remaining = 0;
    ClientRequest flush[kMaxReplicas];
    ResyncWindow win[kResyncWindows];
  } resync_;
  // The union of the HEALTHY replicas' activity logs at attach (extent
  // granularity `start_al_extent_`), kept for the rebuilds of the replicas
  // that were STALE then: the extents the last target had in flight may differ
  // between the chosen replicas and them, and the dirty maps do not say so.
  std::vector<uint8_t> start_al_;
  uint32_t start_al_extent_ = 0;
  void StartResync();
  void ResyncStep();
  bool ResyncMapStep();
  void ResyncCopyStep();
  void ResyncMark(uint64_t off, uint64_t len);
  bool ResyncMarked(uint64_t extent) const;
  bool PickResyncSource();
  void IssueResyncRead(ResyncWindow* w);
  static void OnResyncDone(ClientRequest* req);
  void OnResyncReply(ClientRequest* req);
  void OnResyncMapReply(ClientRequest* req);
  void OnResyncReadReply(ResyncWindow* w);
  void ResyncLost(ReplicaSlot* r, const Status& why);
};

}  // namespace tandem::target
