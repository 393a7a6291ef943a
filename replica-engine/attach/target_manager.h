#pragma once
// TargetManager: the volumes attached on this node. An attached volume is a
// VolumeTarget (the mirror, target/) plus the Export that makes it reachable
// (frontend/export.h: an NBD socket today, a file on a FUSE mount for
// `losetup`). Every target, its replica channels and its export run on one
// event loop: the manager's own loop thread, or a loop it is given (the
// engine's ReplicaServer's, so the targets and the replicas this engine
// serves share one thread: docs/performance.md). The manager is the only
// place that knows both sides, so target/ and frontend/ never include each
// other.
//
// Thread-safety: every method may be called from any thread but the loop's
// (the gRPC management threads); work is posted to the loop and the call
// waits for it.
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
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/event_loop.h"
#include "common/result.h"
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
  target::TargetStatus status;
};

class TargetManager {
 public:
  // `export_dir` holds the exports' endpoints (created if missing): the NBD
  // unix socket <export_dir>/<volume_id>.sock, and for a FUSE file export the
  // mount point <export_dir>/<volume_id>.fuse with the file `volume` in it.
  //
  // `loop`: run the targets on this loop instead of a thread of our own.
  // REQUIRES then: it runs (its thread started) from Start() until Shutdown()
  // has returned, and no method of the manager is called from its thread
  // (the calls wait for the loop). Null: the manager starts its own thread.
  explicit TargetManager(std::string export_dir, EventLoop* loop = nullptr);
  ~TargetManager();  // destroys every target

  // Starts the loop thread (none with a given loop). Non-OK if the loop
  // cannot be created.
  Status Start();
  // The loop every target runs on (a membership authority posts its answers
  // to it).
  EventLoop* loop() { return loop_; }
  // The membership authority of every target created from now on whose spec
  // names none (the controller's, tandem-engine --controller); null: the
  // majority rule alone. REQUIRES: outlives the targets.
  void set_authority(target::MembershipAuthority* authority) { authority_ = authority; }
  // The engine's persistent identity (service/engine_identity.h). Non-zero:
  // every target created from now on whose spec names no target id gets
  // TargetIdFor(identity, volume, epoch), so this engine may attach an epoch
  // again after a detach or restart; 0: a random id per target.
  void set_identity(uint64_t identity) { identity_ = identity; }
  // Opens the replica channels of every target created from now on whose
  // spec names no factory (TargetOptions::channel_factory; the engine's
  // serves its own replicas in-process); empty: all over TCP.
  // REQUIRES: called before Start().
  void set_channel_factory(target::ReplicaChannelFactory factory) {
    channel_factory_ = std::move(factory);
  }

  // Creates a target and its export and waits until it is ready (at least
  // one HEALTHY replica) or `ready_timeout_ms` passes.
  // - Same volume, same epoch, replicas and export: returns the existing
  //   target (idempotent). "Replicas" is the live set (after AddReplica and
  //   RemoveReplica), compared regardless of order.
  // - Same volume, different spec: ALREADY_EXISTS.
  // - No replica reachable in time: UNAVAILABLE, nothing left behind.
  Result<TargetInfo> Create(const TargetSpec& spec);
  // Shuts the export down, then flushes and shuts down the target. OK if absent.
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
  // Destroys every target (engine shutdown). With a given loop, call it
  // before that loop stops (the replica server's Stop()); a loop already
  // stopped gets its targets destroyed off it, with an error logged.
  void Shutdown();

 private:
  struct Entry;
  class VolumeGuard;
  TargetInfo InfoOf(const Entry& e) const;
  // Create's steps: the target until it serves, then its export.
  Status StartTarget(Entry* e);
  Status StartExport(Entry* e);
  void DestroyEntry(std::unique_ptr<Entry> entry);
  // Runs `fn` on the loop with the volume's entry; NOT_FOUND if it has none.
  Status WithEntry(const std::string& volume_id, const std::function<Status(Entry*)>& fn);

  std::string export_dir_;
  std::unique_ptr<EventLoop> own_loop_;  // null with a given loop
  EventLoop* loop_;
  std::thread thread_;
  std::mutex mu_;               // guards busy_ and Start; held only briefly
  std::set<std::string> busy_;  // volumes with a Create/Destroy running
  std::map<std::string, std::unique_ptr<Entry>> targets_;  // loop thread only
  std::atomic<bool> started_{false};
  std::atomic<target::MembershipAuthority*> authority_{nullptr};
  std::atomic<uint64_t> identity_{0};
  target::ReplicaChannelFactory channel_factory_;  // set before Start()
};

// The HELLO owner id of `volume_id`'s target at `epoch` on the engine with
// `identity`: stable, never 0, and different for different engines (identities
// are random 64-bit values) with overwhelming probability.
uint64_t TargetIdFor(uint64_t identity, const std::string& volume_id, uint64_t epoch);

}  // namespace tandem::attach
