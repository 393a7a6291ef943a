#pragma once
// ReplicaClient: the target side of one data-protocol connection to one
// replica (docs/protocol.md); the TCP ReplicaChannel (replica_channel.h, whose
// contract it keeps). Asynchronous and pipelined: many requests in
// flight on one TCP connection, replies matched by request id in any order.
//
// Threading: bound to one EventLoop; every method must be called on that
// loop's thread, and callbacks run on it. The layer above (the volume target)
// drives several clients from one loop.
//
// Lifecycle: Connect() starts a non-blocking connect and the HELLO handshake;
// Listener::OnConnected(info) reports success. Any failure (connect error,
// HELLO refused, protocol error, timeout, peer hang-up) fails every in-flight
// and queued request and then calls Listener::OnDisconnected(status) once. The
// client never reconnects by itself: the layer above decides (and may call
// Connect() again from OnDisconnected or later) — that is the reconnect hook.
//
// Requests: the caller owns each ClientRequest and its buffer until `done`
// runs; `done` runs exactly once, always from the loop (never inside
// Submit()). Requests beyond the server's max_inflight wait in a FIFO inside
// the client; nothing is allocated per request.
// Copies: WRITE data is sent straight from the caller's buffer (writev); READ
// data is copied once from the receive buffer into the caller's buffer.

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/event_loop.h"
#include "common/intrusive_list.h"
#include "common/status.h"
#include "common/unique_fd.h"
#include "replica-engine/client/replica_channel.h"
#include "replica-engine/protocol/frame_codec.h"

namespace tandem::client {

struct ClientStats {
  uint64_t requests_completed = 0;
  uint64_t requests_failed = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  // Requests handed over after this client's BeforeWait had run in that loop
  // iteration, and therefore sent at once (not at the next iteration).
  uint64_t late_submits_sent = 0;
};

class ReplicaClient final : public ReplicaChannel,
                            private EventLoop::Handler,
                            private EventLoop::Idler,
                            private EventLoop::Ticker {
 public:
  // REQUIRES: loop (and listener, if not null) outlive the client.
  ReplicaClient(EventLoop* loop, ClientOptions options, Listener* listener);
  ~ReplicaClient() override;  // Close()s; in-flight requests fail with CANCELLED
  ReplicaClient(const ReplicaClient&) = delete;
  ReplicaClient& operator=(const ReplicaClient&) = delete;

  // Starts connecting. FAILED_PRECONDITION if already connecting/connected;
  // INVALID_ARGUMENT for a bad address. Later failures arrive through the
  // listener.
  Status Connect() override;
  // Queues a request (sent at the end of this loop iteration, batched with
  // others; or at once when handed over after this client's BeforeWait ran
  // in this iteration, e.g. by a later idler: it must not sit until the next
  // wakeup). When not connected the request fails with UNAVAILABLE (via done,
  // from the loop).
  void Submit(ClientRequest* req) override;
  // Fails everything outstanding with CANCELLED and closes the socket. No
  // listener call.
  void Close() override;

  ClientState state() const override { return state_; }
  const protocol::ReplicaInfo& info() const override { return info_; }
  uint32_t inflight() const override { return inflight_; }
  const ClientStats& stats() const { return stats_; }

 private:
  struct Slot {
    ClientRequest* req = nullptr;  // null: free
    uint64_t sent_ns = 0;
    uint32_t seq = 0;  // bumped on reuse; part of the request id
    uint8_t hdr[protocol::kHeaderSize];
    uint32_t sent = 0;  // bytes of header + payload written
    uint32_t payload_len = 0;
    const uint8_t* payload = nullptr;
    Slot* next = nullptr;  // free list / tx queue
  };
  using SlotQueue = IntrusiveQueue<Slot, &Slot::next>;
  using RequestQueue = IntrusiveQueue<ClientRequest, &ClientRequest::next_>;

  void OnEvents(uint32_t events) override;
  void BeforeWait() override;
  void OnTick(uint64_t now_ns) override;

  void OnConnectDone();
  void SendHello();
  // Frames the HELLO (with its proof over `nonce` when a secret is set) into
  // hello_frame_.
  Status BuildHello(std::string_view nonce);
  // The CHALLENGE reply: build and send the HELLO.
  void OnChallengeReply(const protocol::FrameHeader& h, const uint8_t* payload);
  void ReadMore();
  void Parse();
  void HandleReply(const protocol::FrameHeader& h, const uint8_t* payload);
  void StartQueued();
  // Writes queued frames until EAGAIN. A send error fails the connection,
  // unless !may_fail (inside Submit, whose caller must not see `done` run):
  // then the loop is woken and the next BeforeWait's Flush fails it.
  void Flush(bool may_fail = true);
  void Fail(const Status& why, bool notify);
  void Complete(ClientRequest* req, StatusCode code);
  static void KeepaliveDone(ClientRequest* req);

  EventLoop* loop_;
  ClientOptions options_;
  Listener* listener_;
  ClientState state_ = ClientState::kIdle;
  UniqueFd fd_;
  protocol::ReplicaInfo info_;
  uint64_t connect_started_ns_ = 0;

  std::unique_ptr<uint8_t[]> rx_;
  size_t rx_cap_;
  size_t rx_begin_ = 0;
  size_t rx_end_ = 0;

  std::vector<Slot> slots_;
  uint32_t window_ = 0;  // effective max in flight
  SlotQueue free_;       // used as a stack
  SlotQueue tx_;
  std::string hello_frame_;      // CHALLENGE or HELLO frame while handshaking
  bool awaiting_nonce_ = false;  // a CHALLENGE was sent, its reply not in
  size_t hello_sent_ = 0;
  RequestQueue queued_;  // waiting for a slot
  RequestQueue failed_;  // completed at the next BeforeWait
  std::vector<iovec> iov_;
  uint32_t inflight_ = 0;
  uint64_t last_send_ns_ = 0;  // when the last request was started
  // EventLoop::wait_count() when BeforeWait last flushed: equal to the
  // current count means BeforeWait already ran in this iteration.
  uint64_t flushed_at_wait_ = UINT64_MAX;
  ClientRequest keepalive_;  // GET_INFO, reply dropped
  bool keepalive_busy_ = false;
  bool writable_ = false;
  ClientStats stats_;
};

}  // namespace tandem::client
