#pragma once
// ReplicaChannel: what a volume target needs from its connection to one
// replica (docs/architecture.md "Volume target"; docs/performance.md, the
// local replica served in-process). Two implementations: ReplicaClient
// (replica_client.h: the data protocol over TCP) and, for a replica on the
// target's own engine and loop, a channel submitting to that replica
// directly. The target's rules (fan-out, acknowledgement, faults, fencing)
// see only this interface, so they are the same for both.
//
// The contract every implementation keeps (the target relies on each point):
// - Threading: bound to one EventLoop; every method is called on that loop's
//   thread and every callback runs on it.
// - Connect() starts opening the replica (HELLO: volume, token, epoch,
//   target id). FAILED_PRECONDITION if already connecting or connected;
//   INVALID_ARGUMENT for a bad address. Success arrives through
//   Listener::OnConnected(info) with the replica's HELLO answer; any later
//   failure (refused, fenced at open, lost, timed out) fails every
//   outstanding request and then calls Listener::OnDisconnected(status)
//   once. The channel never reopens by itself: the target calls Connect()
//   again (from OnDisconnected or later).
// - Submit(req): the caller owns the request and its buffer until `done`
//   runs; `done` runs exactly once, on the loop, never inside Submit(). A
//   request submitted while not connected fails with UNAVAILABLE. A request
//   submitted after the channel's work for this loop iteration was done
//   (e.g. from a later idler) still starts without waiting for the next
//   wake-up. Nothing is allocated per request.
// - Request results: ClientRequest::status and wire_status as documented
//   there; a replica answering STALE_EPOCH (a newer target owns the volume)
//   sets wire_status kStaleEpoch, which is how the target fences itself.
// - Close() fails everything outstanding with CANCELLED (their `done` runs
//   inside Close) and leaves the channel kClosed; no listener call. The
//   destructor Close()s.
// - state() is kConnected only between OnConnected and the failure or
//   Close(); kIdle or kClosed means Connect() may be called.

#include <cstdint>
#include <string>

#include "common/status.h"
#include "replica-engine/protocol/frame_codec.h"

namespace tandem::client {

// How a target opens one replica: where it is and what its HELLO says. The
// timeouts and the keepalive are the TCP channel's (ReplicaClient); a channel
// without a wire may ignore them.
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

  // Private to the channel the request was submitted to (its queues).
  ClientRequest* next_ = nullptr;
};

enum class ClientState { kIdle, kConnecting, kHandshaking, kConnected, kClosed };

class ReplicaChannel {
 public:
  class Listener {
   public:
    virtual void OnConnected(const protocol::ReplicaInfo& info) = 0;
    virtual void OnDisconnected(const Status& why) = 0;

   protected:
    ~Listener() = default;
  };

  virtual ~ReplicaChannel() = default;

  virtual Status Connect() = 0;
  virtual void Submit(ClientRequest* req) = 0;
  virtual void Close() = 0;

  virtual ClientState state() const = 0;
  // The replica's HELLO answer (valid once connected).
  virtual const protocol::ReplicaInfo& info() const = 0;
  // Requests submitted and not yet completed (the read balancing counts them).
  virtual uint32_t inflight() const = 0;
};

}  // namespace tandem::client
