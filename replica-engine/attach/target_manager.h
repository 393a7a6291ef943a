#pragma once
// TargetManager: the volumes attached on this node. An attached volume is a
// VolumeTarget (the mirror, target/) plus the Export that makes it reachable
// (frontend/export.h: an NBD socket today, a file on a FUSE mount for
// `losetup`). A target, its replica channels and its export run on one event
// loop, one of the manager's TargetLoops (target_loops.h, tandem-engine
// --target-threads): loop 0 is the loop it is given (the engine's
// ReplicaServer's, so the targets there and the replicas this engine serves
// share one thread: docs/performance.md) or a thread of its own; loops
// 1..N-1 are threads of its own. A new volume goes to the loop with the
// fewest targets and stays there until destroyed. The manager is the only
// place that knows both sides, so target/ and frontend/ never include each
// other.
//
// Thread-safety: every method may be called from any thread but the loops'
// (the gRPC management threads); work is posted to the volume's loop and the
// call waits for it.
// Create/Destroy are idempotent. Calls on different volumes run concurrently
// (a slow attach never holds up another volume: no node-wide lock is held
// while a Create waits for replicas); a Create or Destroy while another
// Create or Destroy of the same volume runs gets ABORTED (as the CSI spec
// expects of concurrent calls on one volume) and may be retried.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/event_loop.h"
#include "common/result.h"
#include "replica-engine/attach/target_loops.h"
#include "replica-engine/frontend/export.h"
#include "replica-engine/volume/volume_target.h"

namespace tandem::attach {

struct TargetSpec {
  // Volume id, epoch, token, replicas, size, timeouts, reconnect interval and
  // rebuild rate limit.
  target::TargetOptions options;
  // How the volume is exported (see TargetManager for the paths).
  frontend::ExportKind export_kind = frontend::ExportKind::kNbd;
  // NBD over TCP as well as the unix socket ("host:port", port 0 = any;
  // empty = unix socket only).
  std::string nbd_tcp_address;
  // How long Create waits for the target to leave kStarting.
  uint32_t ready_timeout_ms = 10000;
};

struct TargetInfo {
  std::string volume_id;
  // Where clients find the volume: kind, path (NBD unix socket or the FUSE
  // file), TCP address, counters.
  frontend::ExportDescription export_description;
  std::string nbd_socket;  // NBD: the unix socket path; empty otherwise
  uint16_t nbd_tcp_port = 0;
  uint64_t epoch = 0;
  // The manager's loop the target runs on (0..loop_count()-1; 0 is the given
  // loop, when there is one).
  size_t loop_index = 0;
  target::TargetStatus status;
};

class TargetManager {
 public:
  // `export_dir` holds the exports' endpoints (created if missing): the NBD
  // unix socket <export_dir>/<volume_id>.sock, and for a FUSE file export the
  // mount point <export_dir>/<volume_id>.fuse with the file `volume` in it.
  //
  // `loop`: loop 0 of the targets instead of a thread of our own. REQUIRES
  // then: it runs (its thread started) from Start() until Shutdown() has
  // returned, and no method of the manager is called from its thread (the
  // calls wait for the loop). Null: loop 0 is a thread of our own too.
  // `loop_count`: the loops the targets are spread over, 1..TargetLoops::
  // kMaxLoops (clamped); loops 1.. are always threads of our own.
  explicit TargetManager(std::string export_dir, EventLoop* loop = nullptr, size_t loop_count = 1);
  ~TargetManager();  // destroys every target

  // Starts the loop threads (none for a given loop). Non-OK if a loop cannot
  // be created.
  Status Start();
  size_t loop_count() const { return loops_.size(); }
  // Loop `index` (< loop_count()), where the targets with that loop_index run.
  EventLoop* loop(size_t index) const { return loops_.loop(index); }
  // The membership authority of every target created from now on on loop
  // `index` whose spec names none (the controller's, tandem-engine
  // --controller); null: the majority rule alone. The authority must post
  // its answers to loop(index) (membership_authority.h: the calling target's
  // loop), so each loop has its own. REQUIRES: outlives the targets.
  void set_authority(size_t index, target::MembershipAuthority* authority);
  // The engine's persistent identity (service/engine_identity.h). Non-zero:
  // every target created from now on whose spec names no target id gets
  // TargetIdFor(identity, volume, epoch), so this engine may attach an epoch
  // again after a detach or restart; 0: a random id per target.
  void set_identity(uint64_t identity) { identity_ = identity; }
  // Opens the replica channels of every target created from now on whose
  // spec names no factory (TargetOptions::channel_factory; the engine's
  // serves its own replicas in-process); empty: all over TCP. It is called on
  // the target's loop with that loop, whichever it is: a factory whose
  // channel is bound to one loop must return null for the others (then that
  // replica goes over TCP). local::MaybeLocalChannel does: the local replica
  // is served in-process only to targets on the replica server's loop (loop
  // 0 with --target-loop=server); a target on any other loop reaches it over
  // TCP like a remote one. REQUIRES: called before Start().
  void set_channel_factory(target::ReplicaChannelFactory factory) {
    channel_factory_ = std::move(factory);
  }
  // frontend::NbdServerOptions::write_payload_spin_us of every NBD export
  // created from now on (tandem-engine --nbd-write-spin-us). REQUIRES: called
  // before Start().
  void set_nbd_write_spin_us(uint32_t us) { nbd_write_spin_us_ = us; }

  // Creates a target and its export and waits until it is ready (at least
  // one HEALTHY replica) or `ready_timeout_ms` passes. What may block in
  // making the export (resolving the NBD TCP address, binding, the FUSE
  // mount and fusectl: Export::Prepare) runs on the calling thread; the loop
  // only registers the export (Export::Start), so a slow mount never stalls
  // the loop's other volumes or, on the server's loop, its replica I/O.
  // - Same volume, same epoch, replicas and export: returns the existing
  //   target (idempotent). "Replicas" is the live set (after AddReplica and
  //   RemoveReplica), compared regardless of order.
  // - Same volume, different spec: ALREADY_EXISTS.
  // - No replica reachable in time: UNAVAILABLE, nothing left behind.
  Result<TargetInfo> Create(const TargetSpec& spec);
  // Shuts the export down, then flushes and shuts down the target. OK if
  // absent. A FUSE export unmounts on a thread of its own, off the loop.
  Status Destroy(const std::string& volume_id);
  Result<TargetInfo> Get(const std::string& volume_id);
  std::vector<TargetInfo> List();

  // Live changes to an attached target, run on the loop (VolumeTarget's calls
  // of the same names). NOT_FOUND when the volume has no target here; else the
  // target's answer, except where noted.
  //
  // AddReplica: OK if the identical endpoint is already in the target (a
  // retried call); ALREADY_EXISTS if its host:port is there with another
  // `local` flag.
  Status AddReplica(const std::string& volume_id, const target::ReplicaEndpoint& endpoint);
  // RemoveReplica: OK if `address` ("host:port") is not in the target (a
  // retried call); FAILED_PRECONDITION if it is the last HEALTHY replica.
  Status RemoveReplica(const std::string& volume_id, const std::string& address);
  // RebuildReplica: NOT_FOUND also for an `address` not in the target.
  Status RebuildReplica(const std::string& volume_id, const std::string& address);
  // Rebuild copy rate limit in bytes/s; 0: unlimited.
  Status SetRebuildRate(const std::string& volume_id, uint64_t bytes_per_sec);
  // Grows the live volume (VolumeTarget::Resize), then tells its export
  // (Export::SizeChanged: the FUSE file takes the new size; NBD clients see
  // it at their next connection). ABORTED while a Create/Destroy of the
  // volume runs.
  Status Resize(const std::string& volume_id, uint64_t size_bytes);
  // Destroys every target (engine shutdown), each on its loop. With a given
  // loop, call it before that loop stops (the replica server's Stop()); a
  // loop already stopped gets its targets destroyed off it, with an error
  // logged.
  void Shutdown();

 private:
  struct Entry;
  class VolumeGuard;
  using EntryMap = std::map<std::string, std::unique_ptr<Entry>>;
  TargetInfo InfoOf(const Entry& e) const;
  // The loop index of `volume_id`'s target, if it has one.
  std::optional<size_t> PlacementOf(const std::string& volume_id);
  // Create's parts: the existing target's answer (NOT_FOUND: none), a new
  // target's entry, its steps (the target until it serves, then its export).
  Result<TargetInfo> Existing(const TargetSpec& spec);
  std::unique_ptr<Entry> NewEntry(const TargetSpec& spec, size_t index);
  Status StartTarget(Entry* e);
  Status StartExport(Entry* e);
  void DestroyEntry(std::unique_ptr<Entry> entry);
  // Runs `fn` on the volume's loop with its entry; NOT_FOUND if it has none.
  Status WithEntry(const std::string& volume_id, const std::function<Status(Entry*)>& fn);
  // Shutdown of a given loop that stopped under its targets.
  void DropTargetsOfStoppedLoop(size_t index);

  std::string export_dir_;
  TargetLoops loops_;
  std::mutex mu_;                            // guards the three below and Start; held only briefly
  std::set<std::string> busy_;               // volumes with a Create/Destroy running
  std::map<std::string, size_t> placement_;  // volume -> loop index
  std::vector<target::MembershipAuthority*> authorities_;  // per loop
  std::vector<EntryMap> targets_;  // per loop; targets_[i] on loop i's thread only
  std::atomic<bool> started_{false};
  std::atomic<uint64_t> identity_{0};
  target::ReplicaChannelFactory channel_factory_;  // set before Start()
  uint32_t nbd_write_spin_us_ = 0;                 // set before Start()
};

// The HELLO owner id of `volume_id`'s target at `epoch` on the engine with
// `identity`: stable, never 0, and different for different engines (identities
// are random 64-bit values) with overwhelming probability.
uint64_t TargetIdFor(uint64_t identity, const std::string& volume_id, uint64_t epoch);

}  // namespace tandem::attach
