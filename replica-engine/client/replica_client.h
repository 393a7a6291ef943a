#pragma once
// ReplicaClient: the target side of one data-protocol connection to one
// replica (docs/protocol.md). Asynchronous and pipelined: many requests in
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
#include "replica-engine/protocol/frame_codec.h"

namespace tandem::client {

struct ClientOptions {
  std::string host = "127.0.0.1";  // IPv4 address
  uint16_t port = 0;
  std::string volume_id;
  std::string token;
  // The volume's secret (docs/protocol.md, CHALLENGE), or empty: none. When
  // set the client asks for the replica's nonce first and proves the secret
  // in HELLO; the secret itself is never sent nor logged.
  std::string secret;
  uint64_t epoch = 0;
  // Sent in HELLO: the random non-zero id of the target instance. At an
  // epoch equal to the replica's highest, only the target that owns it is
  // accepted (0: an older target; accepted only where the owner is 0 too).
  uint64_t target_id = 0;
  // Upper bound on requests in flight; the effective limit is the smaller of
  // this and the server's advertised max_inflight.
  uint32_t max_inflight = 256;
  // A request without a reply for this long fails the connection
  // (DEADLINE_EXCEEDED): a hung replica must not hang the volume.
  uint32_t request_timeout_ms = 5000;
  uint32_t connect_timeout_ms = 3000;
  // A connection with nothing sent for this long sends a GET_INFO, so the
  // replica's idle timeout (ServerOptions::idle_timeout_ms, 10 min by
  // default) never closes an idle volume's connection. 0: never.
  uint32_t keepalive_ms = 30000;
};

struct ClientRequest;
using ClientDoneFn = void (*)(ClientRequest* req);

// One request; the fields per operation (docs/protocol.md):
//   kRead, kWrite          offset, length (bytes), buf (length bytes; source
//                          or destination), flags kFlagFua on writes
//   kFlush                 nothing
//   kTrim, kWriteZeroes    offset, length
//   kGetInfo               buf = null (the reply is dropped; info() holds
//                          the HELLO's), or a destination with
//                          protocol::kMaxControlPayload bytes of capacity:
//                          the reply payload (a ReplicaInfo: decode it with
//                          protocol::DecodeReplicaInfo) is copied there and
//                          its size set in reply_length
//   kSetGeneration         offset = the new generation; flags kFlagTrackDirty
//                          to start recording dirty regions, 0 to stop;
//                          optionally buf = a GenerationRecord payload
//                          (protocol::EncodeGenerationRecord, at most
//                          kMaxGenerationRecordSize bytes) and length = its
//                          size, sent like WRITE data (keep it alive until
//                          `done`); buf null or length 0: no payload (the
//                          replica draws the id itself)
//   kMarkDirty,
//   kClearDirty            offset, length (bytes of the volume)
//   kGetDirtyMap           offset = first byte of the volume covered (a
//                          multiple of 8 regions, 0 for the start); buf =
//                          destination with `length` bytes of capacity
//                          (> 12; at most kMaxPayload is ever needed). The
//                          reply payload (a DirtyMapChunk: decode it with
//                          protocol::DecodeDirtyMap) is copied to buf and its
//                          size set in reply_length. The replica never sends
//                          more than `length`; if a reply does not fit, the
//                          request fails with RESOURCE_EXHAUSTED.
//   kGetAllocation         offset, length = the byte range asked about
//                          (block-aligned, length up to 4 GiB - block); buf =
//                          destination with protocol::kMaxAllocationReply
//                          bytes of capacity (the reply is never longer). The
//                          reply payload (an AllocationList: decode it with
//                          protocol::DecodeAllocation, then
//                          CheckAllocationAnswers) is copied to buf and its
//                          size set in reply_length; a null buf fails the
//                          request with RESOURCE_EXHAUSTED.
//   kSetRebuildCursor      buf = the payload, protocol::kRebuildCursorSize
//                          bytes (protocol::EncodeRebuildCursor); length =
//                          kRebuildCursorSize. Sent like WRITE data (straight
//                          from buf; keep it alive until `done`).
// Requests that carry a payload: kWrite, kSetRebuildCursor and kSetGeneration
// with a buf and a non-zero length (length bytes from buf). Every other
// request is sent without one.
struct ClientRequest {
  protocol::Opcode op = protocol::Opcode::kRead;
  uint16_t flags = 0;   // protocol::kFlagFua, protocol::kFlagTrackDirty
  uint64_t offset = 0;  // bytes (kSetGeneration: the generation)
  uint32_t length = 0;  // bytes
  // kWrite, kSetRebuildCursor: source (length bytes). kRead: destination
  // (length bytes). kGetDirtyMap: destination (length bytes of capacity).
  // kGetAllocation: destination (kMaxAllocationReply bytes of capacity).
  // kGetInfo: null or destination (kMaxControlPayload bytes of capacity).
  void* buf = nullptr;
  // Out. OK; or the replica's error mapped to a Status code (IO_ERROR ->
  // INTERNAL, NO_SPACE -> RESOURCE_EXHAUSTED, OUT_OF_RANGE, INVALID_ARGUMENT,
  // UNSUPPORTED -> UNIMPLEMENTED, STALE_EPOCH and NOT_READY ->
  // FAILED_PRECONDITION); or UNAVAILABLE / DEADLINE_EXCEEDED when the
  // connection failed before the reply. wire_status holds the replica's own
  // status when a reply arrived (kOk otherwise), so a caller tells a fenced
  // target (kStaleEpoch: stop, a newer target owns the volume) from other
  // FAILED_PRECONDITIONs, e.g. SET_GENERATION lower than the current one is
  // kInvalid -> INVALID_ARGUMENT.
  StatusCode status = StatusCode::kOk;
  protocol::WireStatus wire_status = protocol::WireStatus::kOk;
  // Out: bytes of reply payload copied to buf (kRead, kGetDirtyMap,
  // kGetAllocation, kGetInfo).
  uint32_t reply_length = 0;
  ClientDoneFn done = nullptr;
  void* ctx = nullptr;

  // Client-private.
  ClientRequest* next_ = nullptr;
};

enum class ClientState { kIdle, kConnecting, kHandshaking, kConnected, kClosed };

struct ClientStats {
  uint64_t requests_completed = 0;
  uint64_t requests_failed = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  // Requests handed over after this client's BeforeWait had run in that loop
  // iteration, and therefore sent at once (not at the next iteration).
  uint64_t late_submits_sent = 0;
};

class ReplicaClient final : private EventLoop::Handler,
                            private EventLoop::Idler,
                            private EventLoop::Ticker {
 public:
  class Listener {
   public:
    virtual void OnConnected(const protocol::ReplicaInfo& info) = 0;
    virtual void OnDisconnected(const Status& why) = 0;

   protected:
    ~Listener() = default;
  };

  // REQUIRES: loop (and listener, if not null) outlive the client.
  ReplicaClient(EventLoop* loop, ClientOptions options, Listener* listener);
  ~ReplicaClient();  // Close()s; in-flight requests fail with CANCELLED
  ReplicaClient(const ReplicaClient&) = delete;
  ReplicaClient& operator=(const ReplicaClient&) = delete;

  // Starts connecting. FAILED_PRECONDITION if already connecting/connected;
  // INVALID_ARGUMENT for a bad address. Later failures arrive through the
  // listener.
  Status Connect();
  // Queues a request (sent at the end of this loop iteration, batched with
  // others; or at once when handed over after this client's BeforeWait ran
  // in this iteration, e.g. by a later idler: it must not sit until the next
  // wakeup). When not connected the request fails with UNAVAILABLE (via done,
  // from the loop).
  void Submit(ClientRequest* req);
  // Fails everything outstanding with CANCELLED and closes the socket. No
  // listener call.
  void Close();

  ClientState state() const { return state_; }
  const protocol::ReplicaInfo& info() const { return info_; }
  uint32_t inflight() const { return inflight_; }
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
