#pragma once
// LocalReplicaChannel: a volume target's channel to the replica held by its
// own engine, when the target runs on the replica server's loop
// (docs/performance.md, "the local replica served in-process"). Each
// ClientRequest becomes a server::PortRequest on a ReplicaPort of that
// server: the same replica rules as a remote session (HELLO fencing, range
// checks, activity log and dirty map before a write, FUA, FLUSH), but no TCP,
// no CRC and no second thread. READ and WRITE go to the disk straight from
// and into the request's buffer when it is 4 KiB aligned (the NBD arena's
// are); another buffer takes a bounce buffer (allocated for that request).
//
// It keeps ReplicaChannel's contract (replica_channel.h) with these
// specifics:
// - Connect() opens the port in the loop's next BeforeWait; OnConnected gets
//   the port's ReplicaInfo, a refused HELLO fails with OnDisconnected (the
//   same status codes as ReplicaClient's).
// - A backend error is that request's IO_ERROR (INTERNAL), as over TCP.
// - A newer target's HELLO (through a remote session on the same loop)
//   supersedes the port: requests are answered STALE_EPOCH, and once none is
//   in flight the channel disconnects (OnDisconnected, UNAVAILABLE), as the
//   server hangs up a superseded session. No request timeout, no keepalive.
// - Close() first waits (reaping the backend) until the port's I/O is done,
//   so the CANCELLED requests' buffers are no longer being read or written
//   when their `done` runs. If the disk does not finish in
//   kDrainTimeoutMs (set_drain_timeout_ms), or Close() is called inside one of the channel's own
//   completions with other I/O still on the disk (the target closes channels
//   outside their callbacks), the process aborts: handing back a buffer an
//   O_DIRECT READ may still fill is silent corruption, a crash is not.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/event_loop.h"
#include "common/intrusive_list.h"
#include "replica-engine/client/replica_channel.h"
#include "replica-engine/server/replica_port.h"

namespace tandem::server {
class ReplicaServer;
}

namespace tandem::local {

class LocalReplicaChannel final : public client::ReplicaChannel, private EventLoop::Idler {
 public:
  // REQUIRES: runs on server->loop()'s thread, and the channel is destroyed
  // before the server stops.
  LocalReplicaChannel(server::ReplicaServer* server, client::ClientOptions options,
                      Listener* listener);
  ~LocalReplicaChannel() override;
  LocalReplicaChannel(const LocalReplicaChannel&) = delete;
  LocalReplicaChannel& operator=(const LocalReplicaChannel&) = delete;

  Status Connect() override;
  void Submit(client::ClientRequest* req) override;
  void Close() override;
  client::ClientState state() const override { return state_; }
  const protocol::ReplicaInfo& info() const override { return info_; }
  uint32_t inflight() const override { return inflight_; }

  // Close(): how long the port's I/O may take to finish (the disk's worst
  // case, not a network's) before the process aborts. Tests shorten it.
  static constexpr uint32_t kDrainTimeoutMs = 30000;
  void set_drain_timeout_ms(uint32_t ms) { drain_timeout_ms_ = ms; }

 private:
  struct Slot {
    server::PortRequest port;  // port.ctx: the slot
    LocalReplicaChannel* channel = nullptr;
    client::ClientRequest* req = nullptr;
    void* bounce = nullptr;  // a misaligned READ/WRITE's aligned copy
    Slot* next = nullptr;
  };
  using SlotQueue = IntrusiveQueue<Slot, &Slot::next>;
  using RequestQueue = IntrusiveQueue<client::ClientRequest, &client::ClientRequest::next_>;

  void BeforeWait() override;
  void Open();
  // Starts waiting requests, in order, while slots are free and the first
  // need not wait for the replica's metadata.
  void StartQueued();
  bool MustWaitForMetadata(const client::ClientRequest* req) const;
  void Start(Slot* slot, client::ClientRequest* req);
  // Fills the slot's PortRequest from req (bounce buffer if needed).
  void Prepare(Slot* slot, client::ClientRequest* req);
  // A control request answered kOk: its reply payload goes to req->buf.
  StatusCode CopyControlReply(Slot* slot);
  static void OnPortDone(server::PortRequest* preq);
  // Completes req in the next BeforeWait (never inside Submit).
  void Defer(client::ClientRequest* req, StatusCode code, protocol::WireStatus ws);
  void FreeSlot(Slot* slot);
  // Fails everything outstanding (after the port's I/O drained) and drops
  // the port; `notify`: tell the listener.
  void Fail(const Status& why, bool notify);
  [[noreturn]] void AbortWithIoInFlight();
  // Loop thread: this iteration's BeforeWait already ran (work handed over
  // now must wake the loop once more).
  bool PastBeforeWait() const { return seen_wait_count_ == loop_->wait_count(); }

  server::ReplicaServer* server_;
  EventLoop* loop_;
  client::ClientOptions options_;
  Listener* listener_;
  client::ClientState state_ = client::ClientState::kIdle;
  protocol::ReplicaInfo info_;
  std::unique_ptr<server::ReplicaPort> port_;
  std::vector<Slot> slots_;
  SlotQueue free_;
  RequestQueue queued_;   // waiting for a slot
  RequestQueue done_;     // completed, `done` runs in BeforeWait
  RequestQueue drained_;  // completed while draining: failed by Fail()
  uint32_t inflight_ = 0;
  bool draining_ = false;
  bool in_done_ = false;  // inside a request's `done` called from a completion
  bool open_pending_ = false;
  bool stale_seen_ = false;  // a STALE_EPOCH was answered: disconnect when drained
  uint64_t seen_wait_count_ = UINT64_MAX;
  uint32_t drain_timeout_ms_ = kDrainTimeoutMs;
};

// The channel factory's choice: a LocalReplicaChannel when `options` name
// this engine's own data address (own_host:own_port), the server holds the
// volume's replica and `loop` is the server's; else null (the target then
// uses TCP). On `loop`'s thread.
std::unique_ptr<client::ReplicaChannel> MaybeLocalChannel(
    server::ReplicaServer* server, const std::string& own_host, uint16_t own_port, EventLoop* loop,
    const client::ClientOptions& options, client::ReplicaChannel::Listener* listener);

}  // namespace tandem::local
