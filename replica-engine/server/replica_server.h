#pragma once
// ReplicaServer: serves the replicas of one ReplicaManager over the data
// protocol (docs/protocol.md) on TCP.
//
// Threading: one event-loop thread owns the listening socket, every session and
// the StorageBackend's I/O (Queue/Submit/Reap). A request is parsed, submitted,
// completed and answered on that thread; nothing is allocated or locked per
// I/O: request slots are preallocated per session and data buffers come from a
// bounded AlignedBufferPool. When the pool or a session's slots run out, the
// server stops reading that socket (backpressure) instead of growing.
//
// Fencing: per volume the server keeps the highest epoch accepted and the
// target that holds it (target_id from its HELLO), both persisted in the
// replica metadata before the HELLO is answered. A HELLO with a lower epoch is
// refused with kStaleEpoch, and so is one at the same epoch from another
// target; a higher one supersedes every session of that volume with a lower
// epoch: each request on them (new, or in flight when it completes) is
// answered kStaleEpoch, parked writes never reach the disk, and such a session
// closes once those replies are sent. The epoch-raising HELLO is answered only
// after the superseded sessions' backend I/O has completed.
//
// Bad input: a framing error (bad magic/version/crc, oversized frame, unknown
// flags) closes only that connection, with a WARNING naming the peer and reason.
//
// Generations and dirty maps (docs/protocol.md): SET_GENERATION, GET_DIRTY_MAP
// and SET_REBUILD_CURSOR run synchronously on the loop thread (each persisting
// the metadata with one pwrite + fdatasync when it changes it); so does
// GET_ALLOCATION (lseek SEEK_DATA/SEEK_HOLE on the data file, two syscalls per
// extent). MARK_DIRTY and CLEAR_DIRTY change the map in memory and are parked
// like first-touch writes (below) until a persist covers them, then answered
// through a backend kNop: a storm of them shares a few slot writes.
// While a replica tracks dirty regions, a WRITE/TRIM/WRITE_ZEROES whose
// regions are already durably dirty goes straight to the backend; one that
// dirties a clean region is parked. BeforeWait starts one asynchronous
// persist of the replica's metadata for every write parked in that loop
// iteration (Replica::StartPersist: an O_DIRECT FUA write of the next slot,
// through the same StorageBackend, so the loop keeps serving every other
// request meanwhile); its completion releases the writes it covers to the
// backend. Writes parked while a persist is in flight wait for the next one,
// started as soon as it completes (group commit). A failed persist fails the
// writes it covered with IO_ERROR; nothing reaches the disk before its dirty
// bit does. While a replica's persist is in flight, the requests that update
// its metadata synchronously (SET_GENERATION, SET_REBUILD_CURSOR, a HELLO
// raising the epoch) wait: the session stops
// parsing (in order) until the persist completes. A replica whose meta file
// cannot be opened O_DIRECT persists synchronously, as those requests do.
//
// Activity log (docs/replica_metadata.md): every WRITE/TRIM/WRITE_ZEROES marks
// the extents it touches through the same first-touch path (a write to
// extents already durably marked costs nothing), and FLUSH completions let
// extents retire: a once-per-second tick clears the retirable
// bits of the volumes with sessions and, when bits were cleared and no
// persist is in flight, starts one to write them (lazily: a set bit too many
// only costs a resync).

#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/event_loop.h"
#include "common/result.h"
#include "common/thread_annotations.h"
#include "replica-engine/backend/aligned_buffer_pool.h"
#include "replica-engine/backend/storage_backend.h"
#include "replica-engine/protocol/frame_codec.h"
#include "replica-engine/replica/replica_manager.h"

namespace tandem::server {

struct ServerOptions {
  std::string listen_address = "127.0.0.1";
  uint16_t port = 0;  // 0: an ephemeral port, see ReplicaServer::port()
  // Shared secret every HELLO must present; empty accepts any token.
  std::string auth_token;
  // Requests in flight per connection (advertised in the HELLO reply).
  uint32_t max_inflight_per_session = 256;
  // Bytes of aligned buffers for all sessions together.
  size_t buffer_pool_bytes = 128ull << 20;
  // Per-session quota: one session holds at most 1/session_pool_share of
  // each buffer size class (at least one buffer), so at most
  // buffer_pool_bytes / session_pool_share in all, counting reads and writes
  // on the disk and READ replies waiting for the socket. A peer that stops
  // reading its socket pins only that share and stalls only itself; the
  // others keep flowing until session_pool_share such peers hold the pool.
  // 1: no quota (one session may take everything).
  uint32_t session_pool_share = 4;
  // Data-port limits (docs/security.md). Connections open at once, HELLO
  // done or not; beyond it a new connection is closed as soon as accepted.
  uint32_t max_connections = 1024;
  // Connections that have not completed HELLO; a new one beyond it evicts
  // the oldest (a peer that floods connections cannot keep a real target
  // out for longer than one handshake round trip).
  uint32_t max_handshaking = 256;
  // A connection that has not completed HELLO this long after it was
  // accepted is closed.
  uint32_t handshake_timeout_ms = 10000;
  // An authenticated session that sent nothing and had nothing in flight
  // for this long is closed (0: never). The ReplicaClient's keepalive
  // (ClientOptions::keepalive_ms, 30 s) keeps an idle target's connections
  // well inside it.
  uint32_t idle_timeout_ms = 600000;
  // EventLoop busy-poll before sleeping (see EventLoop::SetBusyPollMicros).
  uint32_t busy_poll_us = 0;
  // Pin the loop thread to this CPU (-1: no pinning).
  int cpu = -1;
  // Activity log: an extent retires only with a FLUSH that completed at
  // least this long ago (docs/replica_metadata.md: a replica cannot see
  // whether the target still has a write to that extent pending to another
  // replica; this leaves the target its request timeout to fault that
  // replica and record the write in the survivors' dirty maps). The retire
  // pass runs at most once per second.
  uint32_t activity_retire_delay_ms = 10000;
  // A WRITE whose payload is at least this many bytes is received straight
  // into its aligned buffer (no copy from the receive buffer); while such
  // writes arrive the session reads each frame's header on its own, so one
  // recv brings one payload and the next header (docs/performance.md,
  // "WRITE payloads received in place"). Smaller ones are copied from the
  // receive buffer, where one recv brings a batch of them. UINT32_MAX: never.
  // The environment variable TANDEM_DIRECT_RX_MIN_BYTES overrides it (A/B).
  uint32_t direct_rx_min_bytes = 16384;
};

struct ServerStats {
  uint64_t sessions_accepted = 0;
  // Data-port limits: connections closed at accept (max_connections), the
  // oldest handshaking ones closed for a newer one (max_handshaking), closed
  // without HELLO in time, and authenticated ones closed idle.
  uint64_t connections_refused = 0;
  // accept() failures for lack of fds or memory (EMFILE, ENFILE, ENOBUFS,
  // ENOMEM), and the episodes of them: the listening socket is left alone
  // for 100 ms to 1 s after each, and each episode is logged once.
  uint64_t accept_errors = 0;
  uint64_t accept_pauses = 0;
  uint64_t handshakes_evicted = 0;
  uint64_t handshakes_timed_out = 0;
  uint64_t sessions_idle_closed = 0;
  // Now: connections open (not closing), of which before HELLO, and the
  // bytes of their receive buffers (one control frame each before HELLO).
  uint64_t sessions_open = 0;
  uint64_t sessions_handshaking = 0;
  uint64_t rx_buffer_bytes = 0;
  uint64_t sessions_closed_bad_input = 0;
  uint64_t sessions_fenced = 0;
  uint64_t requests = 0;
  // Times a session stopped parsing because it held its quota of a buffer
  // class (ServerOptions::session_pool_share).
  uint64_t session_quota_stalls = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  // Bytes read from the sessions' sockets, and of them the WRITE payload
  // bytes copied from the receive buffer into an aligned buffer and those
  // received straight into it (ServerOptions::direct_rx_min_bytes); the
  // WRITEs that were received in place (part of their payload may have been
  // copied: the bytes already in the receive buffer).
  uint64_t bytes_received = 0;
  uint64_t write_bytes_copied = 0;
  uint64_t write_bytes_direct = 0;
  uint64_t writes_received_direct = 0;
  // Writes that dirtied a clean region and waited for a dirty-map persist,
  // and the persists done for them (fewer when batched), of which failed.
  uint64_t writes_parked_for_dirty_map = 0;
  uint64_t dirty_map_syncs = 0;
  uint64_t dirty_map_sync_failures = 0;
  // Times a metadata-changing request (or epoch-raising HELLO) found its
  // replica's metadata busy with an asynchronous persist and waited.
  uint64_t requests_waited_for_metadata = 0;
  // Times an epoch-raising HELLO waited for the backend I/O of the sessions
  // it superseded.
  uint64_t hellos_waited_for_fenced_io = 0;
  // Requests answered STALE_EPOCH on superseded sessions.
  uint64_t stale_epoch_replies = 0;
  // Activity-log extents retired (cleared in memory), and the persists
  // started only to write cleared bits.
  uint64_t activity_extents_retired = 0;
  uint64_t activity_lazy_persists = 0;
};

class ReplicaSession;
class ReplicaPort;

// DetachVolume's rendezvous: the loop thread counts the sessions still alive
// and signals when the last one is destroyed.
struct DetachWaiter {
  int pending = 0;  // loop thread only
  Mutex mu;
  std::condition_variable cv;
  bool done GUARDED_BY(mu) = false;
  void Signal() EXCLUDES(mu) {
    MutexLock lock(&mu);
    done = true;
    cv.notify_all();
  }
  void Wait() EXCLUDES(mu) {
    MutexLock lock(&mu);
    while (!done) lock.Wait(&cv);
  }
};

// Per-volume fencing state, shared by the ports (sessions) of one volume.
struct VolumeState {
  std::shared_ptr<replica::Replica> replica;
  uint64_t highest_epoch = 0;
  std::vector<ReplicaPort*> ports;  // bound and not closed
};

class ReplicaServer final : private EventLoop::Handler,
                            private EventLoop::Idler,
                            private EventLoop::Ticker {
 public:
  // REQUIRES: manager and backend outlive the server; the backend is used only
  // by the server's thread once Start() succeeded.
  ReplicaServer(replica::ReplicaManager* manager, backend::StorageBackend* backend,
                ServerOptions options);
  ~ReplicaServer();  // Stop()s
  ReplicaServer(const ReplicaServer&) = delete;
  ReplicaServer& operator=(const ReplicaServer&) = delete;

  // Binds, listens and starts the loop thread. UNAVAILABLE/INVALID_ARGUMENT
  // with the address on failure.
  Status Start();
  // Closes every session, waits for in-flight backend I/O, joins the thread.
  // Idempotent.
  void Stop();

  uint16_t port() const { return bound_port_; }
  // The loop that owns the replicas' state and the backend. A ReplicaPort
  // used in-process (without a session) is created, used and destroyed on
  // it, and must be destroyed (after its I/O completed) before Stop().
  EventLoop* loop() { return &loop_; }
  // The manager whose replicas the server serves (an in-process user checks
  // that it holds a volume before it opens a port). Thread-safe.
  replica::ReplicaManager* manager() const { return manager_; }
  // Loop thread, for in-process ports: work was just queued on a port
  // (Start). If this iteration's BeforeWait (which services the sessions and
  // starts persists for parked writes; the backend's batch goes out after
  // it, in the loop's last idler) has already run, the loop comes round once
  // more before it sleeps (a flag, no syscall).
  // Loop thread: inside backend_->Reap(), i.e. a port's `done` runs from a
  // real completion; else the port completed the request itself (a parked
  // write failed by Supersede, Close or a failed persist) from inside the
  // server's own loops over its ports and volumes.
  bool in_backend_completion() const { return reaping_; }
  void WakeForPortWork() {
    if (before_wait_count_ == loop_.wait_count()) loop_.Wake();
  }
  // Loop thread, for an in-process port whose user goes away: drops its
  // parked writes and reaps the backend until none of its I/O is in flight
  // (so the user's buffers are free when it returns). False if that took
  // longer than `timeout_ms`, or at once when this runs inside a backend
  // completion (a nested Reap reaps nothing).
  bool DrainPort(ReplicaPort* port, uint32_t timeout_ms);
  // A snapshot, taken on the loop thread (blocks until it answers).
  ServerStats GetStats();

  // The first half of deleting a replica. Marks the volume as being deleted
  // in the manager (ReplicaManager::BeginDelete: from now on a HELLO for it is
  // refused NOT_FOUND), closes every session of `volume_id` (their
  // outstanding requests get no reply; the targets see the connection drop),
  // waits until their in-flight backend I/O has completed and the sessions
  // are gone, and forgets the volume's state. After it returns nothing on the
  // server touches the replica's files, and nothing will until the caller's
  // ReplicaManager::Delete() (or EndDelete(), to give up) clears the mark.
  // OK also when the volume has no session. Thread-safe; blocks until the
  // loop has done it, so never call it from the server's own loop thread.
  // Must not race with Stop().
  Status DetachVolume(const std::string& volume_id);

  // Fencing without a target (the controller's unpublish and failover): if
  // the volume's persisted highest epoch is below `epoch`, raises it durably
  // (owner cleared: the first target at `epoch` claims it) before returning,
  // and supersedes every session of an older epoch as an epoch-raising HELLO
  // does (STALE_EPOCH from now on, parked writes dropped). Returns once none
  // of their backend I/O is still in flight. An epoch at or below the
  // persisted one changes nothing (OK: a retry gets the same answer).
  // NOT_FOUND without the replica (or while it is being deleted);
  // INVALID_ARGUMENT for epoch 0; the persist's error otherwise. Thread-safe,
  // blocks until the loop has done it (it waits for an asynchronous
  // metadata persist in flight first); not from the loop thread, not racing
  // Start()/Stop().
  Status FenceVolume(const std::string& volume_id, uint64_t epoch);
  // Grows the volume's replica (Replica::Resize) on the loop, and lets its
  // sessions address the new size. Same threading and NOT_FOUND as
  // FenceVolume; Replica::Resize's errors.
  Status ResizeVolume(const std::string& volume_id, uint64_t new_size);

 private:
  friend class ReplicaSession;
  friend class ReplicaPort;

  void OnEvents(uint32_t events) override;  // listening socket
  void BeforeWait() override;
  // The activity log's retire pass, the handshake and idle timeouts.
  void OnTick(uint64_t now_ns) override;
  // Closes sessions past the handshake or idle timeout.
  void ExpireSessions(uint64_t now_ns);
  // Applies max_connections / max_handshaking to a connection just accepted;
  // false when it must be closed instead.
  bool AdmitConnection(const std::string& peer);
  // accept() failed for lack of resources: stop polling the listening socket
  // for a backoff (the tick resumes it), logging once per episode.
  void PauseAccepting(int err);
  void MaybeResumeAccepting(uint64_t now_ns);
  void OnBackendEvents();

  // Port and session callbacks (loop thread).
  // Resolves the volume and applies fencing; returns the WireStatus for the
  // HELLO reply and, on kOk, the volume state the port is bound to.
  // *retry: the HELLO raises the epoch while the replica's metadata is busy
  // with an asynchronous persist; the session retries it later.
  protocol::WireStatus AcceptHello(ReplicaPort* port, const protocol::HelloRequest& hello,
                                   VolumeState** out, bool* retry);
  // AcceptHello's rules; AcceptHello drops a volume entry it leaves unbound.
  protocol::WireStatus BindHello(ReplicaPort* port, const protocol::HelloRequest& hello,
                                 VolumeState** out, bool* retry);
  // BindHello's epoch rules. A higher epoch is persisted and supersedes the
  // volume's older sessions; an equal one is admitted only for the target
  // that owns it (claimed and persisted when unowned). *retry as above.
  protocol::WireStatus RaiseEpoch(VolumeState* vol, const protocol::HelloRequest& hello,
                                  bool* retry);
  protocol::WireStatus ClaimEpoch(VolumeState* vol, const protocol::HelloRequest& hello,
                                  bool* retry);
  // Persists hello's epoch and target as the replica's highest (`what`
  // names it in the error log); kOk with *retry while a persist is in flight.
  protocol::WireStatus PersistEpoch(replica::Replica* r, const protocol::HelloRequest& hello,
                                    const char* what, bool* retry);
  void DetachSession(ReplicaSession* session);
  // A closed port leaves its volume (forgotten with its last port).
  void UnbindPort(ReplicaPort* port);
  // Lets every stalled session retry (a HELLO waiting for superseded I/O).
  void WakeStalled();
  // Queues the session for Service() in BeforeWait (once per iteration).
  void MarkTxPending(ReplicaSession* session);
  void OnBufferReleased();
  void ScheduleDelete(ReplicaSession* session);
  // A port parked a write until its dirty bits are persisted.
  void MarkDirtyWaiting(ReplicaPort* port);
  void RunDirtyWaiters();
  // The activity log's retire pass (at most once per second).
  void RetireActivity(uint64_t now_ns);
  // Starts an asynchronous persist of `replica`'s metadata and keeps the
  // replica alive until it completes.
  Status StartPersist(const std::shared_ptr<replica::Replica>& replica);
  static void OnPersistDone(backend::IoRequest* req);
  void StartDetach(const std::string& volume_id, DetachWaiter* waiter);
  // Management steps on one replica's metadata, run on the loop
  // (replica_server_control.cc). A step runs only while the replica has no
  // asynchronous persist in flight; nullopt: not done yet, retried at every
  // BeforeWait; a Status: done, handed to the waiting caller.
  using ReplicaTaskFn = std::function<std::optional<Status>(replica::Replica*, VolumeState*)>;
  struct ReplicaTask {
    std::string volume_id;
    ReplicaTaskFn step;
    std::promise<Status>* done = nullptr;
  };
  Status RunReplicaTask(const std::string& volume_id, ReplicaTaskFn fn);
  void RunReplicaTasks();

  class BackendHandler;
  class SubmitIdler;

  replica::ReplicaManager* manager_;
  backend::StorageBackend* backend_;
  ServerOptions options_;
  EventLoop loop_;
  std::unique_ptr<BackendHandler> backend_handler_;
  std::unique_ptr<SubmitIdler> submit_idler_;
  backend::AlignedBufferPool pool_;
  // Per size class of pool_: the most buffers one session may hold.
  std::vector<uint32_t> session_quota_;
  UniqueFd listen_fd_;
  uint16_t bound_port_ = 0;
  std::thread thread_;
  bool started_ = false;

  // Loop-thread state.
  std::unordered_map<std::string, VolumeState> volumes_;
  std::vector<std::unique_ptr<ReplicaSession>> sessions_;
  std::vector<ReplicaSession*> tx_pending_;
  std::vector<ReplicaPort*> dirty_waiting_;
  // Every port alive (bound or not, closed ones until their I/O is done).
  std::vector<ReplicaPort*> ports_;
  bool dirty_new_ = false;  // a write was parked since RunDirtyWaiters
  // Asynchronous metadata persists in flight: the replica is kept alive (and
  // a DetachVolume waits) until the write completes.
  struct PersistInFlight {
    std::shared_ptr<replica::Replica> replica;
    const backend::IoRequest* req = nullptr;
    std::vector<DetachWaiter*> waiters;  // DetachVolume calls waiting for it
  };
  std::vector<PersistInFlight> persists_;
  // Replicas whose persist completed, released in BeforeWait (not inside the
  // completion, which runs on the replica's own IoRequest).
  std::vector<std::shared_ptr<replica::Replica>> persists_done_;
  std::vector<ReplicaSession*> graveyard_;
  std::vector<ReplicaTask> replica_tasks_;  // FenceVolume/ResizeVolume waiting
  bool pool_starved_ = false;               // some session waits for a buffer
  uint64_t next_retire_ns_ = 0;             // next activity-log retire pass
  uint64_t rx_bytes_ = 0;                   // receive buffers of all sessions
  bool accept_paused_ = false;              // the listening fd is out of the epoll set
  uint64_t accept_resume_ns_ = 0;
  uint32_t accept_backoff_ms_ = 0;
  uint64_t accept_failures_ = 0;      // in the current episode
  uint64_t last_refusal_log_ns_ = 0;  // connections_refused is logged sparingly
  bool stopping_ = false;
  bool reaping_ = false;                     // inside backend_->Reap(): its completions run
  uint64_t before_wait_count_ = UINT64_MAX;  // loop_.wait_count() at the last BeforeWait
  ServerStats stats_;
};

}  // namespace tandem::server
