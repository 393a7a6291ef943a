#pragma once
// Private to replica-engine/target: the state of one VolumeTarget, shared by
// volume_target.cc (start-up, faults, the I/O path) and rebuild.cc (online
// rebuild under a range lock). Everything runs on the target's EventLoop.

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/event_loop.h"
#include "replica-engine/client/replica_client.h"
#include "replica-engine/target/volume_target.h"

namespace tandem::target {

using client::ClientRequest;
using client::ReplicaClient;

// One frontend request in flight through the mirror. A fixed pool of these is
// allocated at construction (TargetOptions::max_inflight); a request that finds
// the pool empty waits in a FIFO, so nothing is allocated per I/O.
struct IoCtx {
  enum class Phase : uint8_t { kData, kAwaitBump, kMarkDirty, kFuaFlush };
  void* impl = nullptr;  // VolumeTarget::Impl
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
  // Writes in their data phase, for overlap checks (Impl::wlist_).
  IoCtx* wprev = nullptr;
  IoCtx* wnext = nullptr;
  bool in_wlist = false;
  ClientRequest sub[VolumeTarget::kMaxReplicas];
  IoCtx* next = nullptr;
};

class VolumeTarget::Impl final : private EventLoop::Idler, private EventLoop::Ticker {
 public:
  Impl(VolumeTarget* owner, EventLoop* loop, TargetOptions options)
      : owner_(owner), loop_(loop), options_(std::move(options)) {}
  ~Impl();

  Status Start();
  void Shutdown(void (*done)(void*), void* arg);
  void Submit(BlockRequest* req);
  TargetStatus GetStatus() const;
  Status AddReplica(const ReplicaEndpoint& endpoint);
  Status RemoveReplica(const std::string& address);
  Status RebuildReplica(const std::string& address);
  void SetRebuildRate(uint64_t bytes_per_sec);

  TargetState state_ = TargetState::kStarting;
  uint64_t size_ = 0;
  uint32_t block_size_ = 4096;

 private:
  // One replica connection: the ReplicaClient and what the mirror knows of it.
  struct Replica final : ReplicaClient::Listener {
    Impl* impl = nullptr;
    int index = 0;
    ReplicaEndpoint endpoint;
    std::unique_ptr<ReplicaClient> client;
    ReplicaState state = ReplicaState::kConnecting;
    bool settled = false;  // connected or failed during start-up
    bool removed = false;  // RemoveReplica(): slot unused
    // Counts toward the majority: listed at create, or added and since
    // rebuilt to HEALTHY (a replica that never held the volume cannot make a
    // quorum lose anything, so adding one does not stall writes).
    bool member = true;
    // This target saw it serve and faulted it itself: the fault handling
    // (dirty marking of every partial write) covers what it may differ in.
    // A replica STALE at attach, or added, was not: what the last target had
    // in flight is in the activity logs only.
    bool faulted_here = false;
    uint64_t generation = 0;
    protocol::ReplicaInfo info;  // from the last handshake
    uint64_t next_reconnect_ns = 0;
    std::string replica_id;
    uint64_t reads = 0, writes = 0, errors = 0;
    std::string last_error;
    void OnConnected(const protocol::ReplicaInfo& i) override { impl->OnReplicaConnected(this, i); }
    void OnDisconnected(const Status& why) override { impl->OnReplicaDisconnected(this, why); }
  };

  void BeforeWait() override;
  void OnTick(uint64_t now_ns) override;
  void Reconnect(uint64_t now_ns);
  std::string Address(const Replica& r) const {
    return r.endpoint.host + ":" + std::to_string(r.endpoint.port);
  }
  Replica* FindReplica(const std::string& address);
  std::unique_ptr<ReplicaClient> NewClient(Replica* r);

  // Start-up.
  void OnReplicaConnected(Replica* r, const protocol::ReplicaInfo& info);
  void OnReplicaDisconnected(Replica* r, const Status& why);
  void MaybeFinishStart();
  // The rest of the attach once the serving replicas are chosen (and their
  // activity logs resynced): the in-sync record, tracking, the first bump.
  void FinishStart();
  bool start_chosen_ = false;

  // Faults, generation bumps, fencing.
  void Fault(Replica* r, const Status& why);
  void Fence(const std::string& why);
  void StartBump();
  static void OnBumpDone(ClientRequest* sub);
  void ReleaseBumpWaiters();
  void UpdateState();
  // The one place the acknowledgement rule lives: may writes that are on the
  // replicas of `serving` be acknowledged (a majority of the configured
  // replicas, or a superset of the recorded in-sync set)?
  bool AckAllowed(uint32_t serving) const;
  void AskShrink(uint32_t serving);
  // Writes waited longer than quorum_wait_ms for a majority: fail them.
  void FailQuorumWaiters();
  uint64_t NewGenerationId();
  uint32_t HealthyMask() const;
  // HEALTHY and REBUILDING: the replicas every write goes to.
  uint32_t WriteMask() const;
  uint32_t AllMask() const;     // every slot not removed
  uint32_t MemberMask() const;  // the configured replicas the majority counts

  // The I/O path.
  Status Validate(const BlockRequest* req) const;
  void Dispatch(BlockRequest* req);
  void StartWriteLike(IoCtx* c);
  void StartRead(IoCtx* c);
  void StartMarkDirty(IoCtx* c);
  void SendControl(IoCtx* c, uint32_t mask, protocol::Opcode op, uint64_t offset, uint32_t length);
  static void OnSubDone(ClientRequest* sub);
  void OnDataPhaseDone(IoCtx* c);
  void AwaitBump(IoCtx* c);
  bool OverlapsInflightWrite(const BlockRequest* req) const;
  void UnlinkWrite(IoCtx* c);
  void Finish(IoCtx* c, StatusCode code);
  // Finish(OK) for a write-like request, after a FLUSH of the replicas that
  // hold it when it is a TRIM/WRITE_ZEROES with FUA (the protocol has FUA on
  // WRITE only; NBD requires the reply after durability).
  void FinishWrite(IoCtx* c);
  // Completes `req` now, or at the next BeforeWait when inside Submit().
  void Complete(BlockRequest* req, StatusCode code);
  void FailLater(BlockRequest* req, StatusCode code);
  void DrainWaiting();
  StatusCode DownCode() const {
    return state_ == TargetState::kFenced ? StatusCode::kFailedPrecondition
                                          : StatusCode::kUnavailable;
  }
  static bool NeedsBump(BlockOp op) { return op != BlockOp::kRead; }

  VolumeTarget* owner_;
  EventLoop* loop_;
  TargetOptions options_;
  std::vector<Replica> replicas_;
  std::vector<IoCtx> ctx_pool_;
  IoCtx* free_ctx_ = nullptr;
  uint32_t inflight_ = 0;  // IoCtx in use
  bool idler_added_ = false;
  bool in_submit_ = false;
  bool destroying_ = false;

  // Requests waiting for an IoCtx, for start-up, or for a generation bump.
  BlockRequest* wait_head_ = nullptr;
  BlockRequest* wait_tail_ = nullptr;
  // Requests completed at the next BeforeWait (never inside Submit).
  BlockRequest* failed_head_ = nullptr;
  BlockRequest* failed_tail_ = nullptr;
  // Writes that reached only some replicas, waiting for the bump.
  IoCtx* bump_wait_head_ = nullptr;

  uint64_t generation_ = 0;
  bool need_bump_ = false;  // a replica left since the last bump
  bool bump_running_ = false;
  uint32_t bump_remaining_ = 0;
  uint64_t bump_generation_ = 0;
  bool bump_track_ = false;
  ClientRequest bump_sub_[kMaxReplicas];
  std::string bump_payload_;  // the GenerationRecord of the bump in flight
  uint32_t close_mask_ = 0;   // clients to Close() at BeforeWait

  bool shutting_down_ = false;
  bool shutdown_flush_sent_ = false;
  BlockRequest shutdown_flush_;
  bool shutdown_finished_ = false;
  void (*shutdown_done_)(void*) = nullptr;
  void* shutdown_arg_ = nullptr;

  TargetStatus counters_;
  std::string last_error_;

  // Who may acknowledge (AckAllowed). insync_mask_: the replicas the
  // controller recorded as in sync (TargetOptions::in_sync, all HEALTHY at
  // start) or the authority accepted on a shrink; 0: majority rule only.
  uint32_t insync_mask_ = 0;
  bool shrink_pending_ = false;
  uint64_t shrink_retry_ns_ = 0;
  uint64_t quorum_lost_ns_ = 0;  // since when a bump waits for a majority
  // Cleared by ~Impl: callbacks of the authority check it before touching us.
  std::shared_ptr<Impl*> self_ref_ = std::make_shared<Impl*>(this);
  // Generation ids (DRBD's data-generation UUIDs): a random id per
  // generation, and the ids of the ones before it, newest first.
  std::mt19937_64 rng_{std::random_device{}()};
  uint64_t gen_id_ = 0;
  std::vector<uint64_t> gen_history_;
  uint64_t next_gen_id_ = 0;  // the id the next bump will use (promised to the authority)
  uint64_t target_id_ = 0;    // random, sent in HELLO: one owner per epoch
  // True when `id` is this target's generation id or in its history (a
  // replica at that id has a prefix of our history; 0 = unknown: true).
  bool InLineage(uint64_t id) const;
  // Encodes {gen_id_, gen_history_} into `out` for a SET_GENERATION that
  // keeps the current generation (rebuild finish, untrack).
  void EncodeCurrentRecord(std::string* out) const;
  // Start-up: picks the replicas holding the newest history among those
  // reached; false (last_error_ set) when none can serve.
  bool ChooseNewest();

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
  void MergeActivity(const std::vector<uint8_t>& map, uint32_t extent);
  void StartResync();
  void ResyncStep();
  void ResyncMark(uint64_t off, uint64_t len);
  bool ResyncMarked(uint64_t extent) const;
  bool PickResyncSource();
  void IssueResyncRead(ResyncWindow* w);
  static void OnResyncDone(ClientRequest* req);
  void OnResyncReply(ClientRequest* req);
  void ResyncLost(Replica* r, const Status& why);

  // ---------------------------------------------------------------- rebuild
  // (rebuild.cc) One rebuild at a time: the destination is REBUILDING and
  // gets every live write; windows of at most kMaxIoSize are copied from a
  // HEALTHY source while the range lock holds back live writes to them.
  enum class RbPhase : uint8_t {
    kIdle,
    kDrain,     // writes dispatched before the destination joined finish
    kDirtyMap,  // GET_DIRTY_MAP pages from the source
    kCopy,      // windows: allocation lookups, TRIM of holes, READ + WRITE
    kFinish,    // FLUSH, SET_GENERATION and clearing the cursor on the destination
    kUntrack,   // every replica HEALTHY: CLEAR_DIRTY + stop tracking
  };
  // The one rebuild request in flight (rb_.req), or kLockWait.
  enum class RbStep : uint8_t {
    kNone,
    kMap,
    kAlloc,
    kLockWait,
    kRead,
    kWrite,
    kTrim,
    kCursorFlush,  // FLUSH on the destination before its checkpoint moves
    kCursor,
    kFlush,
    kSetGen,
    kClearCursor
  };
  void StartNextRebuild();
  void StartRebuild(Replica* dest);
  void RebuildStep();
  bool PickRebuildSource();
  struct RbWindow;
  bool NextWindow(RbWindow* w);
  bool WindowLocked(const RbWindow& w) const;
  bool RangeLockedFor(const BlockRequest* req) const;
  void ReleaseRangeLock();
  bool RebuildBusy() const;
  void IssueWin(RbWindow* w, RbStep step, protocol::Opcode op, Replica* r);
  void OnWinReply(RbWindow* w);
  uint64_t Checkpoint() const;
  void IssueRb(RbStep step, protocol::Opcode op, Replica* r, uint64_t off, uint32_t len, void* buf,
               uint16_t flags = 0);
  static void OnRbDone(ClientRequest* req);
  void OnRbReply(ClientRequest* req);
  void RebuildFailed(const std::string& why);
  void RebuildAborted(const std::string& why);  // the destination faulted
  void FinishRebuild();
  void StartUntrack();
  void IssueClearRound();
  static void OnUntrackDone(ClientRequest* sub);
  void EncodeCursor(uint64_t cursor, uint64_t generation);
  bool IsDirty(uint64_t region) const;
  // Live writes that reached the destination since the rebuild began, per
  // kMaxIoSize chunk: a hole of the source's allocation listing that one of
  // them touched is copied (under the range lock), never TRIMmed.
  void MarkTouched(uint64_t off, uint64_t len);
  bool Touched(uint64_t chunk) const;
  uint64_t Tokens(uint64_t now_ns);

  // One copy window: planned (kLockWait), then READ from the source and
  // WRITE to the destination (or TRIM for a hole). kNone: free.
  struct RbWindow {
    RbStep step = RbStep::kNone;
    uint64_t off = 0;
    uint32_t len = 0;
    bool hole = false;
    ClientRequest req;
    int req_target = -1;
    std::unique_ptr<uint8_t, void (*)(void*)> buf{nullptr, &free};
  };
  // Windows in flight at once: the copy overlaps the source read of one
  // window with the destination write of another.
  static constexpr int kRbWindows = 8;
  static constexpr int kRbWindowsUnderLoad = 2;

  struct Rebuild {
    RbPhase phase = RbPhase::kIdle;
    RbStep step = RbStep::kNone;
    int dest = -1;
    int source = -1;
    RebuildMode mode = RebuildMode::kNone;
    uint64_t drain_seq = 0;
    int map_replica = -1;  // dirty-map union: replica and page being read
    uint64_t map_offset = 0;
    // The destination's own activity log joins the union (what it held
    // unflushed, or in flight from a dead target, may differ from the source).
    bool map_activity = false;  // the page being read is the destination's log
    bool dest_activity_done = false;
    uint8_t cursor_payload[protocol::kRebuildCursorSize] = {};
    std::string gen_payload;  // GenerationRecord of the finishing SET_GENERATION
    // Plan: dirty regions below `dirty_limit` are copied; from `full_from`
    // on, every allocated byte of the source is.
    std::vector<uint8_t> dirty;
    uint32_t region_size = 0;
    uint64_t dirty_limit = 0;
    uint64_t full_from = UINT64_MAX;
    uint64_t cursor = 0;  // next byte to visit
    // Allocated extents of the source from `cursor` on, valid below alloc_end.
    std::vector<std::pair<uint64_t, uint64_t>> extents;
    size_t extent_index = 0;
    uint64_t alloc_end = 0;
    std::vector<uint8_t> touched;  // MarkTouched(), one bit per kMaxIoSize
    RbWindow win[kRbWindows];
    std::vector<uint8_t> reply;  // GET_DIRTY_MAP / GET_ALLOCATION replies
    // The control request (maps, allocation, cursor, finish): one at a time.
    ClientRequest req;
    int req_target = -1;
    uint64_t last_cursor_persist = 0;  // cursor value last persisted
    uint64_t finish_generation = 0;
    uint32_t untrack_remaining = 0;
    ClientRequest untrack_sub[kMaxReplicas];
    bool untrack_clear_done = false;
    std::string untrack_payload;
    uint64_t untrack_clear_offset = 0;
    // Rate limit (token bucket) and progress.
    uint64_t tokens = 0;
    uint64_t tokens_ns = 0;
    uint64_t started_ns = 0;
    uint64_t rate_mark_ns = 0;
    uint64_t rate_mark_done = 0;
    double rate = 0;
  } rb_;
  RebuildStatus rb_status_;
  uint64_t dispatch_seq_ = 0;
  // Whether the replicas record dirty regions, and since which generation.
  bool tracking_ = false;
  uint64_t tracking_since_ = 0;
  IoCtx* wlist_ = nullptr;  // writes in their data phase
  // Writes held back by the rebuild's range lock or by an overlapping write.
  BlockRequest* range_wait_head_ = nullptr;
  BlockRequest* range_wait_tail_ = nullptr;
};

}  // namespace tandem::target
