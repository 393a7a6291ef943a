#pragma once
// VolumeTarget: the mirror. Presents one volume as a BlockDevice and keeps N
// replicas (one ReplicaChannel each: client/replica_channel.h) in step.
//
// Rules (docs/product.md, docs/architecture.md "Volume target"
// and "Who may acknowledge"):
// - Writes (and TRIM, WRITE_ZEROES) fan out to every HEALTHY and REBUILDING
//   replica and complete when all of them answered. The frontend gets OK only
//   when the write is on every serving replica and those are a majority of
//   the configured replicas, or the in-sync set the controller recorded
//   (TargetOptions::in_sync, MembershipAuthority); otherwise it waits up to
//   quorum_wait_ms and fails with UNAVAILABLE. Every replica that missed an
//   acknowledged write is FAULTED with the generation already bumped on the
//   survivors.
// - Reads go to one HEALTHY replica (the local one first, then the one with
//   the fewest requests outstanding). A failed read faults that replica and is
//   retried on another.
// - A replica that errors, disconnects or times out becomes FAULTED. Before any
//   write that skipped it completes, the survivors move to a new generation
//   (a new random generation id, the old one pushed on their history, dirty
//   tracking on), and the regions of writes that reached only some replicas
//   are marked dirty there (MARK_DIRTY). Writes submitted meanwhile wait.
// - At start the target must reach a majority of its replicas (or be given
//   the in-sync record); only replicas holding the newest history (generation
//   number and id) become HEALTHY; the others are STALE (rebuilt before they
//   serve, never read). The activity logs of the HEALTHY replicas are resynced
//   among them before the first request, and the generation is bumped before
//   the first write.
// - Zero HEALTHY replicas: every request fails with UNAVAILABLE.
// - Fencing: a replica answering STALE_EPOCH means a newer target owns the
//   volume; this target stops: everything fails with FAILED_PRECONDITION.
//
// Threading: everything runs on the EventLoop given at construction; all
// methods must be called on that loop's thread.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/event_loop.h"
#include "common/status.h"
#include "replica-engine/block_device/block_device.h"
#include "replica-engine/client/replica_channel.h"
#include "replica-engine/volume/membership_authority.h"
#include "replica-engine/volume/stage_histogram.h"

namespace tandem::target {

class VolumeTargetImpl;

struct ReplicaEndpoint {
  std::string host;  // IPv4
  uint16_t port = 0;
  bool local = false;  // on this node: preferred for reads
};

// The controller's record of which replicas hold the volume's newest history
// (docs/architecture.md, "Who may acknowledge").
struct InSyncRequirement {
  // The generation id the in-sync replicas were recorded at; 0: none given,
  // the target then relies on reaching a majority of `replicas` alone.
  uint64_t generation_id = 0;
  std::vector<std::string> replica_ids;  // replica ids (HELLO), not addresses
};

// Opens the channel of one replica of a target: `options` name the replica
// (host, port) and the HELLO (volume, token, secret, epoch, target id) and
// bound the requests in flight; `listener` hears of its connection. Returning
// null means "over TCP": the target then makes a client::ReplicaClient. Runs
// on the target's loop (at Start, AddReplica, and when a slot is refilled).
using ReplicaChannelFactory = std::function<std::unique_ptr<client::ReplicaChannel>(
    EventLoop* loop, const client::ClientOptions& options,
    client::ReplicaChannel::Listener* listener)>;

struct TargetOptions {
  std::string volume_id;
  uint64_t epoch = 0;  // from the controller; must grow with every attach
  std::string token;
  std::string secret;  // the volume's data-protocol secret (ClientOptions::secret)
  // The owner id sent in HELLO. A replica gives each epoch to one owner, so a
  // target with another id at the epoch it holds is refused. 0: random (a
  // new owner each time). TargetManager derives a stable one from the engine's
  // identity, the volume and the epoch, so the same engine may attach the same
  // epoch again after a detach or a restart (kubelet's NodeStage after
  // NodeUnstage under one ControllerPublish) while any other engine still may not.
  uint64_t target_id = 0;
  // The volume's configured replicas: a write is acknowledged only when it is
  // on every serving replica and those are a majority of these (or the
  // authority / in-sync record below says they are the in-sync set).
  std::vector<ReplicaEndpoint> replicas;
  // With a generation id: serve only from replicas that prove they hold it
  // (their generation id is it, or it is in their history); none reachable:
  // the target does not start (UNAVAILABLE, naming what is missing).
  InSyncRequirement in_sync;
  // Consulted on a fault that leaves less than a majority serving; nullptr:
  // the majority rule stands alone. Must outlive the target.
  MembershipAuthority* authority = nullptr;
  // How long writes wait for a majority (or the authority) before they fail
  // with UNAVAILABLE (EIO at the frontend); 0: request_timeout_ms.
  uint32_t quorum_wait_ms = 0;
  // Volume size in bytes; every replica must have at least this size (a
  // smaller one is FAULTED; a larger one was grown for an expansion not yet
  // applied to the target, Resize()). 0: take the first replica's.
  uint64_t size = 0;
  uint32_t request_timeout_ms = 5000;
  uint32_t connect_timeout_ms = 3000;
  // Requests accepted at once from frontends; more wait in a FIFO.
  uint32_t max_inflight = 256;
  // Reconnect FAULTED and STALE replicas every this many ms and rebuild them
  // (incrementally when the survivors' dirty map covers what they missed).
  // 0: never (AddReplica / RebuildReplica only).
  uint32_t reconnect_interval_ms = 1000;
  // Rebuild copy rate limit in bytes per second; 0: unlimited.
  uint64_t rebuild_rate_bytes_per_sec = 0;
  // A full rebuild persists its progress on the destination every this many
  // bytes, so a later rebuild of the same replica can resume there.
  uint64_t rebuild_checkpoint_bytes = 64ull << 20;
  // Opens each replica's channel; empty: every replica over TCP
  // (client::ReplicaClient). TargetManager sets the engine's, which serves
  // a replica held by this engine in-process.
  ReplicaChannelFactory channel_factory;
};

enum class ReplicaState { kConnecting, kHealthy, kStale, kFaulted, kRebuilding };
const char* ReplicaStateName(ReplicaState s);

enum class TargetState {
  kStarting,  // connecting to replicas; requests wait
  kReady,     // all replicas HEALTHY
  kDegraded,  // at least one HEALTHY, some not
  kFailed,    // no HEALTHY replica: I/O fails
  kFenced,    // a newer epoch took over: I/O fails
};
const char* TargetStateName(TargetState s);

struct ReplicaStatus {
  std::string address;  // host:port
  std::string replica_id;
  ReplicaState state = ReplicaState::kConnecting;
  uint64_t generation = 0;
  uint64_t generation_id = 0;  // from its last handshake, or set by this target
  uint32_t inflight = 0;
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t errors = 0;
  std::string last_error;
};

enum class RebuildMode { kNone, kFull, kIncremental };
const char* RebuildModeName(RebuildMode m);
enum class RebuildState { kIdle, kRunning, kDone, kFailed };
const char* RebuildStateName(RebuildState s);

// The current (or last) rebuild of this target.
struct RebuildStatus {
  RebuildState state = RebuildState::kIdle;
  RebuildMode mode = RebuildMode::kNone;
  std::string replica;            // destination host:port
  std::string source;             // source host:port (may change if a source fails)
  uint64_t bytes_total = 0;       // bytes of the volume the rebuild has to visit
  uint64_t bytes_done = 0;        // of those, visited (copied, or found a hole)
  uint64_t bytes_copied = 0;      // bytes actually read from the source and written
  uint64_t resumed_from = 0;      // full rebuild resumed at this byte (0: from the start)
  double rate_bytes_per_sec = 0;  // recent copy rate
  double eta_seconds = 0;
  uint64_t rate_limit_bytes_per_sec = 0;  // 0: unlimited
  std::string last_error;
};

struct TargetStatus {
  std::string volume_id;
  TargetState state = TargetState::kStarting;
  uint64_t size = 0;
  uint64_t epoch = 0;
  uint64_t generation = 0;
  uint64_t generation_id = 0;  // the newest history this target serves
  // Why the target is FAILED or FENCED, or why writes wait (no majority).
  std::string last_error;
  // Replica ids of the set allowed to acknowledge below a majority (from
  // TargetOptions::in_sync or the authority); empty: majority rule.
  std::vector<std::string> in_sync;
  std::vector<ReplicaStatus> replicas;
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t flushes = 0;
  uint64_t errors = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  RebuildStatus rebuild;
  // Bytes the activity-log resync at attach wrote (0: the last target
  // stopped cleanly, or nothing was in flight).
  uint64_t activity_resync_bytes = 0;
  // Totals over every rebuild of this target.
  uint64_t rebuilds_completed = 0;
  uint64_t rebuild_bytes_copied = 0;
  // Per-stage latency of the I/O path since the target was created
  // (stage_histogram.h; docs/performance.md).
  StageLatencies latency;
};

class VolumeTarget final : public BlockDevice {
 public:
  // REQUIRES: loop outlives the target.
  VolumeTarget(EventLoop* loop, TargetOptions options);
  ~VolumeTarget() override;
  VolumeTarget(const VolumeTarget&) = delete;
  VolumeTarget& operator=(const VolumeTarget&) = delete;

  // Starts connecting to the replicas. INVALID_ARGUMENT for bad options (no
  // replicas, more than kMaxReplicas, a bad address). The target becomes
  // ready asynchronously (state() leaves kStarting).
  Status Start();
  // Fails new requests, waits for in-flight ones, closes the replica
  // connections and then runs `done` (on the loop). Idempotent.
  void Shutdown(void (*done)(void* arg), void* arg);

  TargetState state() const;
  TargetStatus GetStatus() const;

  // Adds a replica to the live target (at most kMaxReplicas): it connects,
  // receives every write from then on (REBUILDING) and is rebuilt from a
  // HEALTHY source; it becomes HEALTHY when the copy completes.
  // ALREADY_EXISTS if the endpoint is in the target, INVALID_ARGUMENT for a
  // bad endpoint, RESOURCE_EXHAUSTED when full, FAILED_PRECONDITION when the
  // target is not serving.
  Status AddReplica(const ReplicaEndpoint& endpoint);
  // Takes a replica out of the target (its connection is closed; it gets no
  // more writes). NOT_FOUND for an unknown "host:port"; FAILED_PRECONDITION
  // if it is the last HEALTHY replica.
  Status RemoveReplica(const std::string& address);
  // Reconnects a FAULTED/STALE replica now and rebuilds it (no-op if it is
  // HEALTHY or already rebuilding). NOT_FOUND for an unknown "host:port".
  Status RebuildReplica(const std::string& address);
  // Changes the rebuild rate limit (bytes/s, 0 = unlimited) at run time.
  void SetRebuildRate(uint64_t bytes_per_sec);
  // Grows the live volume to `new_size` bytes (online expansion). The caller
  // grew every replica first (ResizeReplica): writes past the old end then
  // reach replicas that hold them. Same size: OK; smaller: OUT_OF_RANGE;
  // not a multiple of the block size: INVALID_ARGUMENT; not serving:
  // FAILED_PRECONDITION. A rebuild running meanwhile goes on at the old
  // size: the new tail was zero on every replica and each write to it reaches
  // the destination; the next rebuild plans over the new size.
  Status Resize(uint64_t new_size);

  // BlockDevice. size() and block_size() are known once state() left kStarting.
  uint64_t size() const override;
  uint32_t block_size() const override;
  uint32_t max_io_size() const override;
  EventLoop* loop() override { return loop_; }
  void Submit(BlockRequest* req) override;

  static constexpr size_t kMaxReplicas = 5;

 private:
  EventLoop* loop_;
  std::unique_ptr<VolumeTargetImpl> impl_;
};

}  // namespace tandem::target
