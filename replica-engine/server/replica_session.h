#pragma once
// ReplicaSession: one target connection to a ReplicaServer: the transport
// (frames, receive buffer, CRCs, request slots, writev) in front of a
// ReplicaPort, which keeps the replica rules (replica_port.h). Owned by the
// server and used only on its loop thread.
//
// Per connection: a receive buffer big enough for one maximal frame, and a
// fixed table of request slots (max_inflight). Every request takes a slot
// from parsing until its reply has been written to the socket; the slot
// carries the PortRequest (with its backend IoRequest) and the reply header
// inline, so nothing is allocated per request.
//
// Copies: a large WRITE's payload (ServerOptions::direct_rx_min_bytes) is
// received from the socket straight into its aligned buffer (O_DIRECT) once
// its header is parsed; while such writes arrive each frame's header is read
// on its own, so one recv brings one payload and the next header. One that
// finds no slot or buffer stalls the session at its header (the payload
// stays in the socket) until one frees. A small WRITE's payload is copied
// once from the receive buffer, where one recv brings a batch of them. READ
// data is sent straight from the aligned buffer it was read into.

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/event_loop.h"
#include "common/intrusive_list.h"
#include "common/unique_fd.h"
#include "replica-engine/backend/storage_backend.h"
#include "replica-engine/protocol/frame_codec.h"
#include "replica-engine/replica/replica.h"
#include "replica-engine/server/replica_port.h"

namespace tandem::server {

class ReplicaServer;
struct VolumeState;
struct DetachWaiter;

class ReplicaSession final : public EventLoop::Handler {
 public:
  ReplicaSession(ReplicaServer* server, UniqueFd fd, std::string peer, uint32_t max_inflight);
  ~ReplicaSession();

  int fd() const { return fd_.get(); }
  const std::string& peer() const { return peer_; }
  uint64_t epoch() const { return port_.epoch(); }
  ReplicaPort& port() { return port_; }
  bool closing() const { return closing_; }
  bool hello_done() const { return hello_done_; }
  bool stalled() const { return stalled_; }
  // Backend requests still in flight; the session may be deleted only at 0.
  uint32_t inflight() const { return port_.inflight(); }

  void OnEvents(uint32_t events) override;
  // Called by the server from BeforeWait: resume parsing after backpressure and
  // write queued replies.
  void Service();
  // Stops reading, drops unsent replies, shuts the socket down. In-flight backend
  // I/O finishes first; then the server deletes the session.
  void Close(const char* reason, bool bad_input);

 private:
  friend class ReplicaServer;
  struct Slot {
    PortRequest req;  // req.ctx: the slot
    ReplicaSession* session = nullptr;
    protocol::FrameHeader reply;
    uint8_t hdr[protocol::kHeaderSize];  // the encoded reply header
    void* buf = nullptr;                 // from the server's pool
    uint32_t buf_size = 0;
    const uint8_t* payload = nullptr;  // sent after the header
    uint32_t payload_len = 0;
    // CHALLENGE, HELLO and the control replies' payloads are in req.control.
    uint32_t sent = 0;     // bytes of header + payload already written (frame_tx.h)
    Slot* next = nullptr;  // free list or tx queue
  };
  using SlotQueue = IntrusiveQueue<Slot, &Slot::next>;

  void ReadMore();
  // Bytes the next recv into the receive buffer may take: all of its room,
  // or only the rest of the next header while large WRITEs arrive
  // (header_first_).
  size_t RxWindow() const;
  // One readv while a WRITE payload is received in place: the rest of the
  // payload into its aligned buffer and the next header into the receive
  // buffer. False when ReadMore must return (EAGAIN, closed, stalled).
  bool ReadDirect();
  // Called by Parse for a WRITE header whose payload is not all in the
  // receive buffer. kStarted: it is large enough, passed the port's checks
  // and got a slot and a buffer; the part already received was copied into
  // the buffer and the socket fills the rest (direct_). kWait: the same, but
  // no slot or buffer is free: the session stalls at the header and stops
  // reading its socket until one is (the payload then goes in place).
  // kNo: it is read into the receive buffer as any frame.
  enum class Direct { kStarted, kWait, kNo };
  Direct StartDirect(const protocol::FrameHeader& h, const uint8_t* payload, size_t have);
  // The payload received in place is complete: CRC (a mismatch closes the
  // session; nothing was written), then the request's checks again (the port
  // may have been superseded meanwhile) and its start.
  void FinishDirect();
  // After HELLO: the receive buffer grows from one control frame to one
  // maximal frame (before HELLO nothing larger is accepted).
  void GrowRx();
  // Parses complete frames from the receive buffer. Stops (stalled_) when no
  // slot or buffer is free; Service() resumes it.
  void Parse();
  // False when the request could not start for lack of a buffer (retry later).
  bool HandleRequest(const protocol::FrameHeader& h, const uint8_t* payload);
  // False when the HELLO must be retried later (the replica's metadata is
  // busy and a higher epoch must be persisted); the slot is not used then.
  bool HandleHello(Slot* slot, const uint8_t* payload, uint32_t len);
  // CHALLENGE: before HELLO, once; answers a fresh random nonce.
  void HandleChallenge(Slot* slot, const protocol::FrameHeader& h);
  // Takes the slot's buffer (READ, WRITE: false when none is free), copies a
  // WRITE's payload into it and starts the request on the port.
  bool StartIo(Slot* slot, const uint8_t* payload);
  // Starts the slot's request (buffer ready) on the port; a refusal is
  // answered at once.
  void StartOnPort(Slot* slot);
  // The port's completion: the reply is queued (or the slot freed when the
  // session is closing).
  static void OnPortDone(PortRequest* req);
  // Points the reply payload at the slot's req.control.
  static void UseControlReply(Slot* slot);

  Slot* AllocSlot(const protocol::FrameHeader& h);
  void FreeSlot(Slot* slot);
  // Takes a pool buffer of `size` for the slot within this session's quota;
  // false (and the session stalls) when the quota or the pool is exhausted.
  bool TakeBuffer(Slot* slot, uint32_t size);
  // Returns the slot's buffer (if any) to the pool and lets this session, or
  // one starved by the pool, resume.
  void ReleaseBuffer(Slot* slot);
  // Finishes the reply header (and payload crc) and queues the slot for sending.
  void QueueReply(Slot* slot, protocol::WireStatus status);
  void Flush();

  ReplicaServer* server_;
  UniqueFd fd_;
  std::string peer_;

  std::unique_ptr<uint8_t[]> rx_;
  size_t rx_cap_;
  size_t rx_begin_ = 0;
  size_t rx_end_ = 0;

  // A WRITE whose payload is being received in place: its slot (buffer
  // taken, counted in no queue), its header and the payload bytes in the
  // buffer so far. While set, the receive buffer is empty.
  Slot* direct_ = nullptr;
  protocol::FrameHeader direct_hdr_;
  uint32_t direct_got_ = 0;
  // The last frame parsed was a WRITE of at least direct_rx_min_bytes: read
  // the next header on its own, so that its payload can go in place too.
  bool header_first_ = false;
  // Stalled at such a header (StartDirect: kWait): nothing is read until it
  // can start.
  bool stalled_at_header_ = false;
  // This session's WRITE payload bytes copied / received in place (logged
  // when it closes).
  uint64_t copied_bytes_ = 0;
  uint64_t direct_bytes_ = 0;

  std::vector<Slot> slots_;
  SlotQueue free_;  // used as a stack
  SlotQueue tx_;
  std::vector<iovec> iov_;

  // Pool buffers this session holds, per size class (bounded by the server's
  // session_quota_).
  std::vector<uint32_t> held_;
  bool stalled_ = false;
  bool tx_pending_ = false;  // queued in the server's service list
  bool closing_ = false;
  bool close_after_flush_ = false;
  bool writable_ = true;
  bool hello_done_ = false;
  bool stale_sent_ = false;  // a kStaleEpoch reply was queued: close when drained
  // Set by DetachVolume; signalled from the destructor.
  // Every DetachVolume waiting for this session to go (two may overlap).
  std::vector<DetachWaiter*> detach_waiters_;
  // Timeouts (ReplicaServer::ExpireSessions): when the connection was
  // accepted, whether bytes arrived since the last tick, and when it was last
  // seen busy.
  uint64_t accepted_ns_ = 0;
  uint64_t last_active_ns_ = 0;
  bool rx_activity_ = false;
  // The replica rules; its nonce is this connection's CHALLENGE nonce.
  ReplicaPort port_;
};

}  // namespace tandem::server
