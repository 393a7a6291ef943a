#pragma once
// ReplicaSession: one target connection to a ReplicaServer. Owned by the
// server and used only on its loop thread.
//
// Per connection: a receive buffer big enough for one maximal frame, and a
// fixed table of request slots (max_inflight). Every request takes a slot
// from parsing until its reply has been written to the socket; the slot
// carries the backend IoRequest and the reply header inline, so nothing is
// allocated per request. Copies: a WRITE payload is copied once from the
// receive buffer into an aligned buffer (O_DIRECT); READ data is sent straight
// from the aligned buffer it was read into.

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
  uint64_t epoch() const { return epoch_; }
  VolumeState* volume() const { return volume_; }
  bool closing() const { return closing_; }
  bool hello_done() const { return hello_done_; }
  bool stalled() const { return stalled_; }
  // Backend requests still in flight; the session may be deleted only at 0.
  uint32_t inflight() const { return inflight_; }

  void OnEvents(uint32_t events) override;
  // Called by the server from BeforeWait: resume parsing after backpressure and
  // write queued replies.
  void Service();
  // Stops reading, drops unsent replies, shuts the socket down. In-flight backend
  // I/O finishes first; then the server deletes the session.
  void Close(const char* reason, bool bad_input);
  // A HELLO with a higher epoch took the volume over: every later reply is
  // kStaleEpoch (new requests, and in-flight ones as they complete), parked
  // writes are dropped, and the session closes once those replies are sent.
  void Supersede();

 private:
  friend class ReplicaServer;
  struct Slot {
    backend::IoRequest req;
    ReplicaSession* session = nullptr;
    protocol::FrameHeader reply;
    uint8_t hdr[protocol::kHeaderSize];  // the encoded reply header
    void* buf = nullptr;                 // from the server's pool
    uint32_t buf_size = 0;
    const uint8_t* payload = nullptr;  // sent after the header
    uint32_t payload_len = 0;
    std::string control;     // HELLO / GET_INFO / GET_DIRTY_MAP / GET_ALLOCATION reply payload
    uint32_t sent = 0;       // bytes of header + payload already written (frame_tx.h)
    uint64_t dirty_seq = 0;  // parked write: the Replica::dirty_seq() it waits for
    uint64_t flush_seq = 0;  // FLUSH: Replica::NoteFlushReceived()
    Slot* next = nullptr;    // free list, tx queue or parked-write queue
  };
  using SlotQueue = IntrusiveQueue<Slot, &Slot::next>;

  void ReadMore();
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
  // SET_GENERATION (with its optional GenerationRecord payload) and
  // GET_DIRTY_MAP (synchronous).
  protocol::WireStatus HandleDirtyOp(Slot* slot, const protocol::FrameHeader& h,
                                     const uint8_t* payload);
  // MARK_DIRTY, CLEAR_DIRTY: changed in memory, then answered (kOk, through
  // a backend kNop) once a persist covers the change; parked like a write
  // meanwhile. Another status: answer it now (nothing changed).
  protocol::WireStatus StartDirtyUpdate(Slot* slot, const protocol::FrameHeader& h);
  // Parks a slot (counted in inflight_) until the replica's dirty_seq() now
  // is durable; ResumeDirtyWaiters() queues its request then.
  void ParkForPersist(Slot* slot);
  // GET_ALLOCATION (lseek on the loop thread) and SET_REBUILD_CURSOR
  // (persisted before the reply), synchronous.
  protocol::WireStatus HandleGetAllocation(Slot* slot, const protocol::FrameHeader& h);
  protocol::WireStatus HandleSetRebuildCursor(const protocol::FrameHeader& h,
                                              const uint8_t* payload);
  // The ReplicaInfo payload of a HELLO or GET_INFO reply into slot->control.
  void SetInfoReply(Slot* slot);
  // Submits the parked writes whose dirty bits are durable, fails those whose
  // persist failed, and starts a persist for the rest if none is in flight.
  // True while some stay parked (waiting for a persist in flight).
  bool ResumeDirtyWaiters();
  void FailDirtyWaiters(int result);
  // Metadata-changing requests wait (the session stalls) while the replica
  // has an asynchronous persist in flight: both would write the same slot.
  bool MetadataBusy() const { return replica_ != nullptr && replica_->persist_in_flight(); }
  bool StartIo(Slot* slot, const protocol::FrameHeader& h, const uint8_t* payload);
  protocol::WireStatus CheckRange(const protocol::FrameHeader& h, bool needs_length) const;
  static void OnIoDone(backend::IoRequest* req);

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

  std::vector<Slot> slots_;
  SlotQueue free_;  // used as a stack
  SlotQueue tx_;
  std::vector<iovec> iov_;

  uint32_t inflight_ = 0;
  // Pool buffers this session holds, per size class (bounded by the server's
  // session_quota_).
  std::vector<uint32_t> held_;
  bool stalled_ = false;
  bool tx_pending_ = false;  // queued in the server's service list
  bool closing_ = false;
  bool close_after_flush_ = false;
  bool writable_ = true;
  bool hello_done_ = false;
  bool dirty_waiting_ = false;  // queued in the server's dirty-waiter list
  bool superseded_ = false;     // see Supersede()
  bool stale_sent_ = false;     // a kStaleEpoch reply was queued: close when drained
  // Writes parked until the replica's dirty map is persisted (they count in
  // inflight_).
  SlotQueue dirty_;
  // Set by DetachVolume; signalled from the destructor.
  // Every DetachVolume waiting for this session to go (two may overlap).
  std::vector<DetachWaiter*> detach_waiters_;
  // Timeouts (ReplicaServer::ExpireSessions): when the connection was
  // accepted, whether bytes arrived since the last tick, and when it was last
  // seen busy.
  uint64_t accepted_ns_ = 0;
  uint64_t last_active_ns_ = 0;
  bool rx_activity_ = false;
  // The CHALLENGE nonce of this connection (empty until one was asked for):
  // a HELLO for a volume with a secret must prove it over this.
  std::string nonce_;
  uint64_t epoch_ = 0;
  uint64_t target_id_ = 0;  // from the HELLO
  // Bound at HELLO; valid while hello_done_ (owned by the server).
  VolumeState* volume_ = nullptr;
  // Held until the session is destroyed, so the replica (and its data fd)
  // outlives every I/O this session submitted, even after volume_ is gone.
  std::shared_ptr<replica::Replica> replica_;
  int data_fd_ = -1;
  uint64_t size_ = 0;
  uint32_t block_size_ = 0;
};

}  // namespace tandem::server
